"""Detector metrics on recordings with timed labels: segment F1 and other-class alarms.

Pure functions over events and labelled occurrences (no audio, no model), so the rules are
tested with plain numbers and every caller counts the same way:

- **Segment F1** (per whole second): for each recording, each class labelled in it and each
  second k, truth = an occurrence of that class overlaps [k, k+1), predicted = an event of
  that class overlaps [k, k+1). TP/FP/FN are summed over all recordings. An event is the
  closed interval [start_s, end_s] (a zero-length event still marks the second it sits in);
  an occurrence is [start, end).
- **Other-class alarms**: events whose label is not labelled anywhere in their recording, per
  minute of audio. The unlabelled parts of UrbanSound recordings are not guaranteed to be
  background, so this is an upper bound on false alarms, the one a home user feels first.
- **Short events**: events shorter than one hop (`end_s - start_s < hop`): an entity that
  flicks on and off in Home Assistant.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

__all__ = ["Event", "Occurrence", "RecordingTally", "shorter_than_hop", "tally_recording"]

Event = tuple[str, float, float]
"""(label, start_s, end_s) of one detector event."""
Occurrence = tuple[str, float, float]
"""(class, start_s, end_s) of one labelled occurrence."""


def shorter_than_hop(start: float, end: float, hop_s: float) -> bool:
    """An event shorter than one hop (module docstring: a flick on and off in Home Assistant)."""
    return end - start < hop_s - 1e-9


def _event_in_second(start: float, end: float, k: int) -> bool:
    return start < k + 1 and end >= k


def _occurrence_in_second(start: float, end: float, k: int) -> bool:
    return start < k + 1 and end > k


@dataclass
class RecordingTally:
    """Counts of one or many recordings; `+` adds them up.

    Made by `tally_recording` (the rules are the module docstring's): `tp`, `fp`, `fn`, seconds
    summed over labelled classes; `other_class_alarms`, events of a class not labelled in their
    recording; `events`, all events; `short_events`, those shorter than one hop; `seconds`, audio
    length; `per_class`, label -> [tp, fp, fn]. Each rate is None when its denominator is 0.
    """

    tp: int = 0
    fp: int = 0
    fn: int = 0
    other_class_alarms: int = 0
    events: int = 0
    short_events: int = 0
    seconds: float = 0.0
    per_class: dict[str, list[int]] = field(default_factory=dict)  # class -> [tp, fp, fn]

    def __add__(self, other: RecordingTally) -> RecordingTally:
        per_class = {k: list(v) for k, v in self.per_class.items()}
        for label, counts in other.per_class.items():
            mine = per_class.setdefault(label, [0, 0, 0])
            for i in range(3):
                mine[i] += counts[i]
        return RecordingTally(
            self.tp + other.tp, self.fp + other.fp, self.fn + other.fn,
            self.other_class_alarms + other.other_class_alarms, self.events + other.events,
            self.short_events + other.short_events, self.seconds + other.seconds, per_class,
        )  # fmt: skip

    @property
    def precision(self) -> float | None:
        """tp / (tp + fp), or None."""
        return self.tp / (self.tp + self.fp) if self.tp + self.fp else None

    @property
    def recall(self) -> float | None:
        """tp / (tp + fn), or None."""
        return self.tp / (self.tp + self.fn) if self.tp + self.fn else None

    @property
    def f1(self) -> float | None:
        """Segment F1: 2 tp / (2 tp + fp + fn), or None."""
        denom = 2 * self.tp + self.fp + self.fn
        return 2 * self.tp / denom if denom else None

    @property
    def alarms_per_minute(self) -> float | None:
        """Other-class alarms per minute of audio, or None for no audio."""
        return 60.0 * self.other_class_alarms / self.seconds if self.seconds else None

    def summary(self) -> dict[str, float | int | None]:
        """The figures as a JSON-ready dict (rates rounded for reports)."""

        def r(x: float | None, n: int = 3) -> float | None:
            return None if x is None else round(x, n)

        return {
            "segment_f1": r(self.f1), "segment_precision": r(self.precision),
            "segment_recall": r(self.recall), "tp": self.tp, "fp": self.fp, "fn": self.fn,
            "other_class_alarms": self.other_class_alarms,
            "other_class_alarms_per_minute": r(self.alarms_per_minute, 2),
            "events": self.events, "short_events": self.short_events,
            "minutes": round(self.seconds / 60.0, 2),
        }  # fmt: skip


def tally_recording(
    events: Iterable[Event], occurrences: Sequence[Occurrence], duration_s: float, hop_s: float
) -> RecordingTally:
    """Segment counts, other-class alarms and short events of one recording."""
    events = list(events)
    labelled = sorted({cls for cls, _, _ in occurrences})
    tally = RecordingTally(seconds=float(duration_s), events=len(events))
    seconds = max(1, math.ceil(duration_s))
    for cls in labelled:
        occ = [(a, b) for c, a, b in occurrences if c == cls]
        evs = [(a, b) for c, a, b in events if c == cls]
        counts = [0, 0, 0]
        for k in range(seconds):
            truth = any(_occurrence_in_second(a, b, k) for a, b in occ)
            predicted = any(_event_in_second(a, b, k) for a, b in evs)
            if truth and predicted:
                counts[0] += 1
            elif predicted:
                counts[1] += 1
            elif truth:
                counts[2] += 1
        tally.per_class[cls] = counts
        tally.tp, tally.fp, tally.fn = tally.tp + counts[0], tally.fp + counts[1], tally.fn + counts[2]
    tally.other_class_alarms = sum(1 for label, _, _ in events if label not in labelled)
    tally.short_events = sum(1 for _, a, b in events if shorter_than_hop(a, b, hop_s))
    return tally
