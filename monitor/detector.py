"""Turn per-window model scores into detection events (start/end), as pure logic.

No I/O and no clocks: the detector only sees *stream offsets*, the seconds since the audio
stream began, so a file run and a live run make the same decisions and tests can drive it
with plain score sequences. The pipeline calls `update(offset_s, scores)` once per analysis
window (every `detection.hop_seconds`), where `offset_s` is the stream offset of the **end**
of the window just scored; it publishes whatever events come back.

Rules (per label; labels are independent, so overlapping sounds can all be active):

1. **Smoothing.** The smoothed score is the mean of the last N window scores
   (N = `smoothing_windows`, or the label's own N in `class_smoothing`: a steady sound such as
   an air conditioner can be asked for more evidence than a dog bark); before N windows exist,
   the mean of those available. A window
   the level gate skipped (`scores=None`) counts as all-zero scores, so events still end in
   silence. Non-finite scores (NaN) count as 0. A one-window spike is divided by N, which is
   what keeps a single click from firing a 0.5 threshold at N = 3.
   **Two views of a window** (`start_weight` w > 0, with fast start on): a window's score is
   (1 - w) x the main model's + w x the start model's on the window's newest second, so a sound
   that has just begun or just stopped counts sooner, and two models must agree for a steady
   high score (`models/urban10`'s bundle sets w = 0.5, its start model's calibration: on held-out
   clips the events were more often right and came sooner than on the 4 s model's scores alone).
   Every rule below sees this score, except rule 4's backing.
2. **Start.** An event starts when the label is enabled, has no open event, is not in
   cooldown, and its smoothed score >= its threshold. `start_offset_s` is the offset (window
   end) of that window; `score` and `peak_score` are the smoothed score there.
3. **Hysteresis.** An open event stays active while smoothed >= threshold x `release_ratio`
   (the *release level*), or while the latest window's own score is (the mean of 7 windows lags
   a steady sound that has just begun; the window that backed a fast start keeps its event on,
   where the smoothed score alone had ended it as a 0-second event); it does not need to stay
   above the threshold itself. A window "at the release level" below means either.
4. **Hold.** Once both drop below the release level, the event ends only when
   no window has been at or above the release level for `hold_seconds`, measured from the
   last such window (so a dip shorter than the hold does not split one siren into many
   events; a window back above the release level cancels the pending end). With
   `hold_seconds = 0` the first window below the release level ends the event.
   **Fast start** (optional, `fast_start_threshold`): the pipeline may also pass the scores of
   a *start model*, a second classifier that hears only the newest second, so it is sure of a
   sound one or two hops before the 4 s model's smoothed score gets there. An event then also
   starts when the label is the start model's top label with a score >= `fast_start_threshold`
   (same conditions otherwise: enabled, no open event, not in cooldown), that score also
   reaches the class's own threshold (a threshold of 1.0 set from Home Assistant silences the
   class for both models), and the main model *backs* it: its own latest window score or the
   mean of its own last N (between windows: as of the last window) is at the release level, or
   its own latest window score is *rising* into it (at least `RISING_BACKING` x the release level,
   and up by as much since the window before: a sound that has just begun fills only the newest
   half second of a 4 s window, while the tail of one that has stopped falls), unless the start
   model is sure alone (score >= `FAST_START_SURE`, 0.95), or the label is one of
   `fast_start_alone`: a sound that short that the main model may never back, whose start-model
   openings were measured right (a gun shot, say; the shipped bundle names none). Its own
   scores: rule 1's blend holds the start model's, and a start model sure of the wrong label would
   back itself (card step 64: a dog's first bark after a siren). An opening none of these backs is not
   published: on unseen street recordings every event shorter than a hop had been a start-model
   opening the main model never confirmed, and a false alarm (issue 21). Both tests use what is
   known when the start model fires, so no opening waits: one that passes opens where it did
   before; one that does not may open later, on a later check or window that passes, or by the
   main model's own threshold. Its start event says
   so (`opened_by="start_model"`) and carries the score that crossed: the start model's
   (never one below the threshold that opened the event; `peak_score` starts there too). It
   ends by rules 3-5 on the main model's scores.
   The pipeline also checks the start model half a hop after each window
   (`fast_start(offset_s, start_scores)`): the same rule, at that offset, and nothing else moves
   (no window score is added, no event ends), so a sound is answered a quarter hop sooner on average.
   (Which start model, when it is checked and what it hears: `monitor.fast_start`.)
5. **End.** The `end` event carries the same `id` as its `start`; `end_offset_s` is the
   offset of the last window still at or above the release level (the hold does not inflate
   `duration_s = end_offset_s - start_offset_s`; 0 means one window), `score` is the
   smoothed score at the end decision and `peak_score` the highest smoothed score seen
   while the event was open.
6. **Cooldown.** After an end, the label cannot start again until the window offset reaches
   end-decision offset + `cooldown_seconds`.
7. **Thresholds 0 and 1.** Comparisons allow 1e-6 of floating-point slack: a float32 model
   score of 0.7 is 0.69999999 and the mean of three float64 0.7 scores is 0.6999999999999998,
   and both must reach a 0.7 threshold. A threshold of 0 means
   "always on": the label starts on the first window after it is enabled (even a gated one)
   and, since nothing is below 0, ends only when disabled, at `close()` or at `reset()`.
   A threshold of 1.0 fires only on a perfect smoothed score (every one of the last N windows
   scored 1.0); an int8 softmax output tops out at 255/256, so in practice 1.0 means never.
8. **Ordering.** Within one call, `end` events come before `start` events, each in label
   order.

Lifecycle: `reconfigure()` (SIGHUP) swaps settings from the next window on, keeping the score
history (a larger N uses older windows at once) and open events; a label that becomes
disabled ends its open event immediately. `reset()` (after an audio gap) clears the score
history and cooldowns and ends open events; offsets may restart after it. `close(offset_s)`
(shutdown, end of file) ends every open event: one still above its release level ends at
`offset_s` (the stream ended while the sound was present), one in its hold ends at its last
window above the release level.
"""

from __future__ import annotations

import math
import uuid
from collections import deque
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace
from typing import Literal

import numpy as np

__all__ = ["DetectionEvent", "Detector"]

EPS = 1e-6
"""Slack for score/threshold and offset comparisons: float32 scores (0.7 -> 0.69999999),
floating-point means and offset sums (0.1 + 0.2). Far below any meaningful score difference."""

FAST_START_SURE = 0.95
"""Rule 4: the start-model score at which a fast start opens without the main model's backing.
On the candidate urban10's onset streams (3 held-out CV folds, fast start 0.9) the 98 unbacked
openings at or above it were all right; the 18 wrong unbacked ones were all below 0.944. Backing
alone (no such level) had also held back the 284 right unbacked openings there: median delay
2.09 / 1.98 / 1.82 s per fold against 2.01 / 1.76 / 1.61 s with it (1.74 / 1.47 / 1.17 s before the rule).
With the start model of card step 49, against no such level: 40 more onsets answered for 2 more wrong
events over the three folds, median delays 1.51 / 1.59 / 1.40 s against 1.80 / 1.85 / 1.75 s; 0.92
would answer 18 more for 9 more wrong events (1.36 / 1.42 / 1.15 s). With the start model of card
step 64 (fast start 0.75): 0.9 answers 22 more onsets, 0.2-0.35 s sooner, for one wrong event less,
the unseen street recordings unchanged; but step 63's wrong siren scored 0.89 (0.88 opens it). With
step 66's rising backing as well, 0.9 answers 20 more, 0.04-0.15 s sooner, for one wrong event less."""

RISING_BACKING = 0.5
"""Rule 4: the main model also backs a fast start when its own latest window score is at least this
fraction of the release level and rose by at least as much since the window before (at the
default threshold 0.5 and release ratio 0.8: at least 0.2, and up by 0.2). Card step 66, on the
onset streams of 3 held-out folds: median delays 1.03 / 1.12 / 1.02 s against 1.31 / 1.46 / 1.15 s
with the level alone, 13 more onsets answered for 2 more wrong events (69 of 885); with 1-4 s of
silence before every clip 0.91 / 0.94 / 0.80 s against 1.00 / 1.03 / 0.89 s, 12 more answered for
4 more wrong (111 of 1,034); the street recordings unchanged. Lower levels or rises answer more,
sooner, for more wrong and more sub-hop events (0.2 and a rise of 0.1 over two windows: 817
answered, 79 wrong). A falling score never backs: the dog's first bark after a siren (step 64)
stays unopened."""

HISTORY_KEEP = 100
"""Window scores kept regardless of N, so a SIGHUP that raises `smoothing_windows` (config
maximum: 100) smooths over real history at once instead of starting from scratch."""


@dataclass
class DetectionEvent:
    """One event start or end, as published on `<base>/detection` (the MQTT contract's fields)."""

    type: Literal["start", "end"]
    id: str  # stable per event (uuid4 hex), the same in its start and its end
    label: str
    score: float  # the score that crossed (start) or the smoothed score at the end decision
    peak_score: float  # highest score so far in the event
    start_offset_s: float  # stream offset (window end) at which the event started
    end_offset_s: float | None = None  # on "end": last window at or above the release level
    opened_by: Literal["model", "start_model"] = "model"  # which model's score opened the event

    @property
    def duration_s(self) -> float | None:
        """Seconds from the start window to the last window above the release level (on "end")."""
        if self.end_offset_s is None:
            return None
        return max(0.0, self.end_offset_s - self.start_offset_s)


@dataclass
class _Open:
    """Book-keeping for one label's open event."""

    start: DetectionEvent
    peak: float
    last_above_s: float  # offset of the last window at or above the release level


def _check_settings(
    labels: list[str],
    thresholds: Mapping[str, float],
    enabled: Iterable[str],
    smoothing_windows: int,
    release_ratio: float,
    hold_seconds: float,
    cooldown_seconds: float,
    fast_start_threshold: float | None = None,
    class_smoothing: Mapping[str, int] | None = None,
    fast_start_alone: Iterable[str] | None = None,
    start_weight: float = 0.0,
) -> tuple[dict[str, float], set[str]]:
    """Validate detector settings; ValueError names the offending one (a programming error:
    the config schema already enforces these ranges for users)."""
    known = set(labels)
    enabled_set = set(enabled)
    unknown = sorted((set(thresholds) | enabled_set | set(class_smoothing or {}) | set(fast_start_alone or ())) - known)
    if unknown:
        raise ValueError(f"detector: unknown label(s) {unknown}; labels are {labels}")
    missing = sorted(x for x in enabled_set if x not in thresholds)
    if missing:
        raise ValueError(f"detector: no threshold for enabled label(s) {missing}")
    for label, thr in thresholds.items():
        if not (0.0 <= float(thr) <= 1.0):
            raise ValueError(f"detector: threshold for {label} must be in [0, 1], got {thr}")
    for name, n in (("smoothing_windows", smoothing_windows), *((f"class_smoothing[{k}]", v) for k, v in (class_smoothing or {}).items())):
        if isinstance(n, bool) or int(n) != n or not 1 <= n <= HISTORY_KEEP:
            raise ValueError(f"detector: {name} must be an integer in [1, {HISTORY_KEEP}], got {n}")
    if not (0.0 < release_ratio <= 1.0):
        raise ValueError(f"detector: release_ratio must be in (0, 1], got {release_ratio}")
    if fast_start_threshold is not None and not (0.0 < float(fast_start_threshold) <= 1.0):
        raise ValueError(f"detector: fast_start_threshold must be in (0, 1] or None, got {fast_start_threshold}")
    if not (0.0 <= start_weight < 1.0):
        raise ValueError(f"detector: start_weight must be in [0, 1), got {start_weight}")
    for name, value in (("hold_seconds", hold_seconds), ("cooldown_seconds", cooldown_seconds)):
        if not (value >= 0.0 and math.isfinite(value)):
            raise ValueError(f"detector: {name} must be a finite number >= 0, got {value}")
    return {k: float(v) for k, v in thresholds.items()}, enabled_set


class Detector:
    """Per-label smoothing, threshold with hysteresis, hold and cooldown; see the module docstring.

    Pure logic (no audio, no clock, no I/O): it turns window scores into start/end events, so the
    rules can be tested on score sequences alone. Parameters: `labels`, the model's labels in its
    output order (non-empty, unique); `thresholds`, label -> start threshold in [0, 1] (every
    enabled label needs one); `enabled`, the labels that may start events; `smoothing_windows`,
    how many recent window scores are averaged (>= 1); `release_ratio`, in (0, 1]: an open event
    stays on while its smoothed score is at or above threshold x ratio; `hold_seconds` (>= 0), how
    long below that level ends it; `cooldown_seconds` (>= 0), how long after an end the label may
    not start again; `fast_start_threshold`, in (0, 1], the start model's score that may open its
    top label's event (which must also reach the label's threshold and be backed: rule 4), or None (no fast
    start); `class_smoothing`, label -> its own N where it is not `smoothing_windows`;
    `fast_start_alone`, labels whose start-model openings need no backing (rule 4);
    `start_weight`, in [0, 1), the start model's share of a window's score (rule 1; 0 = the main
    model's scores alone).
    Invalid settings raise ValueError (the config
    schema already enforces these ranges for users).
    """

    def __init__(
        self,
        labels: list[str],
        thresholds: dict[str, float],
        enabled: set[str],
        smoothing_windows: int = 3,
        release_ratio: float = 0.8,
        hold_seconds: float = 1.0,
        cooldown_seconds: float = 2.0,
        fast_start_threshold: float | None = None,
        class_smoothing: Mapping[str, int] | None = None,
        fast_start_alone: Iterable[str] | None = None,
        start_weight: float = 0.0,
    ) -> None:
        if not labels or len(set(labels)) != len(labels):
            raise ValueError(f"detector: labels must be a non-empty list of unique names, got {labels}")
        self.labels: list[str] = list(labels)
        self._index = {label: i for i, label in enumerate(self.labels)}
        self._history: deque[np.ndarray] = deque(maxlen=HISTORY_KEEP)
        # the main model's own rows, without rule 1's blend: what backs a fast start (rule 4);
        # the same as _history while start_weight is 0
        self._main_history: deque[np.ndarray] = deque(maxlen=HISTORY_KEEP)
        self._smoothed = np.zeros(len(self.labels), dtype=np.float64)
        self._open: dict[str, _Open] = {}
        self._cooldown_until: dict[str, float] = {}
        self._last_offset: float | None = None
        self._apply(
            thresholds, enabled, smoothing_windows, release_ratio, hold_seconds, cooldown_seconds, fast_start_threshold,
            class_smoothing, fast_start_alone, start_weight,
        )  # fmt: skip

    # -- settings ------------------------------------------------------------------------------

    def _apply(
        self,
        thresholds: Mapping[str, float],
        enabled: Iterable[str],
        smoothing_windows: int,
        release_ratio: float,
        hold_seconds: float,
        cooldown_seconds: float,
        fast_start_threshold: float | None = None,
        class_smoothing: Mapping[str, int] | None = None,
        fast_start_alone: Iterable[str] | None = None,
        start_weight: float = 0.0,
    ) -> None:
        thr, en = _check_settings(
            self.labels, thresholds, enabled, smoothing_windows, release_ratio, hold_seconds, cooldown_seconds,
            fast_start_threshold, class_smoothing, fast_start_alone, start_weight,
        )  # fmt: skip
        self.start_weight = float(start_weight)
        self.fast_start_threshold: float | None = (
            None if fast_start_threshold is None else float(fast_start_threshold)
        )
        self.thresholds: dict[str, float] = thr
        self.enabled: set[str] = en
        self.fast_start_alone: frozenset[str] = frozenset(fast_start_alone or ())
        # The labels `update` looks at, in label order: the enabled ones (an open event's label is
        # always enabled: `reconfigure` ends the others). With AudioSet's 521 labels and a dozen
        # watched, the Python loop over all of them was most of the detector's time per window.
        self._scan: list[tuple[int, str]] = [(i, x) for i, x in enumerate(self.labels) if x in en]
        self.smoothing_windows = int(smoothing_windows)
        self.class_smoothing: dict[str, int] = {
            k: int(v) for k, v in (class_smoothing or {}).items() if int(v) != self.smoothing_windows
        }
        # N per label in label order, or None when every label uses `smoothing_windows` (the fast path).
        self._n_by_label: np.ndarray | None = (
            np.array([self.class_smoothing.get(x, self.smoothing_windows) for x in self.labels])
            if self.class_smoothing else None
        )  # fmt: skip
        self.release_ratio = float(release_ratio)
        self.hold_seconds = float(hold_seconds)
        self.cooldown_seconds = float(cooldown_seconds)

    def reconfigure(
        self,
        thresholds: dict[str, float],
        enabled: set[str],
        smoothing_windows: int,
        release_ratio: float,
        hold_seconds: float,
        cooldown_seconds: float,
        fast_start_threshold: float | None = None,
        class_smoothing: Mapping[str, int] | None = None,
        fast_start_alone: Iterable[str] | None = None,
        start_weight: float = 0.0,
    ) -> list[DetectionEvent]:
        """New settings from the next window on, keeping score history and open events.

        A label that is no longer enabled ends its open event now (returned as "end" events);
        an open event whose threshold changed is judged against the new release level at the
        next window. Invalid settings raise ValueError and leave the detector unchanged.
        """
        self._apply(
            thresholds, enabled, smoothing_windows, release_ratio, hold_seconds, cooldown_seconds, fast_start_threshold,
            class_smoothing, fast_start_alone, start_weight,
        )  # fmt: skip
        ended: list[DetectionEvent] = []
        for label in self.labels:
            if label in self._open and label not in self.enabled:
                ended.append(self._end(label, self._open[label].last_above_s, self._decision_offset()))
        return ended

    # -- state ---------------------------------------------------------------------------------

    @property
    def active(self) -> dict[str, DetectionEvent]:
        """Open events by label (their "start" event, with `peak_score` so far)."""
        return {label: replace(o.start, peak_score=o.peak) for label, o in self._open.items()}

    @property
    def latest(self) -> np.ndarray:
        """The newest window's scores as the rules count them (rule 1: with `start_weight`, both
        models'; zeros for a gated window and before the first)."""
        return self._history[-1].copy() if self._history else np.zeros(len(self.labels))

    @property
    def smoothed(self) -> np.ndarray:
        """The latest smoothed scores in `labels` order (zeros before the first window)."""
        return self._smoothed.copy()

    def _decision_offset(self) -> float:
        return self._last_offset if self._last_offset is not None else 0.0

    def _release_level(self, label: str) -> float:
        return self.thresholds[label] * self.release_ratio

    # -- the per-window step -------------------------------------------------------------------

    def update(
        self, offset_s: float, scores: np.ndarray | None, start_scores: np.ndarray | None = None
    ) -> list[DetectionEvent]:
        """Add one window's scores (None = gated, i.e. all zero); return events it decided.

        `start_scores`: the start model's scores for the same window end (None: no start model
        or a gated window); used with `fast_start_threshold` set, and weighted into the window's
        score by `start_weight` (rule 1). `offset_s` is the stream
        offset of the window's end; ValueError when it is not finite or goes backwards (call
        `reset` first) or when a score row's length is not `len(labels)`.
        """
        offset_s = self._advance(offset_s)
        row = np.zeros(len(self.labels), dtype=np.float64) if scores is None else self._score_row(scores, "scores")
        self._main_history.append(row)
        if scores is not None and self.start_weight and start_scores is not None:
            # rule 1: (1 - w) x the main model's row + w x the start model's
            row = (1.0 - self.start_weight) * row + self.start_weight * self._score_row(start_scores, "start-model scores")
        history = self._history
        history.append(row)
        self._smoothed = self._smooth(history)
        fast_label, fast_score = self._fast_label(start_scores)

        ends: list[DetectionEvent] = []
        starts: list[DetectionEvent] = []
        smoothed = self._smoothed.tolist()  # Python floats, as float() of each element
        for i, label in self._scan:
            s = smoothed[i]
            opened = self._open.get(label)
            if opened is not None:
                opened.peak = max(opened.peak, s)
                if self._at_release(i, label):
                    opened.last_above_s = offset_s
                elif offset_s - opened.last_above_s >= self.hold_seconds - EPS:
                    ends.append(self._end(label, opened.last_above_s, offset_s))
                continue
            # The score test first: it is cheaper and usually false (both tests are pure).
            if s >= self.thresholds[label] - EPS and self._may_start(label, offset_s):
                starts.append(self._start(label, offset_s))
            elif label == fast_label and fast_score >= self.thresholds[label] - EPS and self._backed(i, label, fast_score) and self._may_start(label, offset_s):
                starts.append(self._start(label, offset_s, fast_start_score=fast_score))
        return ends + starts

    def _smooth(self, history: deque[np.ndarray]) -> np.ndarray:
        """Per label, the mean of its last N window scores (fewer while fewer exist)."""
        n_by_label = self._n_by_label
        if n_by_label is None:
            n = min(self.smoothing_windows, len(history))
            if n == 1:
                return history[-1] / 1
            # np.mean(axis=0)'s arithmetic: np.add.reduce over the stacked rows adds them one after
            # another, oldest first, then divides by the count; here without the stack (speed).
            total = history[-n] + history[-n + 1]
            for i in range(len(history) - n + 2, len(history)):
                total += history[i]
            return total / n
        # Running sums from the newest window back: sums[k - 1] is the sum of the newest k.
        k_max = min(int(n_by_label.max()), len(history))
        sums = np.cumsum(np.stack([history[-1 - i] for i in range(k_max)]), axis=0)
        k = np.minimum(n_by_label, len(history))
        return sums[k - 1, np.arange(len(self.labels))] / k

    def fast_start(self, offset_s: float, start_scores: np.ndarray | None) -> list[DetectionEvent]:
        """A start-model check between two windows (half a hop after the last one): the start
        model's top label may open its event here, by the fast-start rule of `update`. Nothing
        else moves: no window score is added, no event ends. Returns the start, if any."""
        offset_s = self._advance(offset_s)
        label, score = self._fast_label(start_scores)
        if label is None or label in self._open or score < self.thresholds[label] - EPS:
            return []
        if not self._backed(self._index[label], label, score) or not self._may_start(label, offset_s):
            return []
        return [self._start(label, offset_s, fast_start_score=score)]

    def _backed(self, i: int, label: str, score: float) -> bool:
        """A fast start of `label` (index `i`) at start-model `score` may open (rule 4): the main
        model backs it (its own latest window score or the mean of its own last N, without rule
        1's blend, is at the release level, or its latest is rising into it: `RISING_BACKING`),
        the start model is sure enough alone (`FAST_START_SURE`), or the label is one the start
        model may open alone (`fast_start_alone`)."""
        if score >= FAST_START_SURE - EPS or label in self.fast_start_alone:
            return True
        main = self._main_history
        if not main:
            return False
        level = self._release_level(label)
        latest = float(main[-1][i])
        # Rare (a start-model score at the threshold), so the main model's own smoothed scores are
        # computed here, not at every window.
        if max(latest, float(self._smooth(main)[i])) >= level - EPS:
            return True
        step = RISING_BACKING * level
        return len(main) >= 2 and latest >= step - EPS and latest - float(main[-2][i]) >= step - EPS

    def _at_release(self, i: int, label: str) -> bool:
        """`label` (index `i`) is at its release level: its latest window score or its smoothed
        score is. What keeps an open event on (rule 3)."""
        latest = float(self._history[-1][i]) if self._history else 0.0
        return max(latest, float(self._smoothed[i])) >= self._release_level(label) - EPS

    def _advance(self, offset_s: float) -> float:
        """Check and record the offset of the next window or check (finite, never backwards)."""
        offset_s = float(offset_s)
        if not math.isfinite(offset_s):
            raise ValueError(f"detector: offset must be finite, got {offset_s}")
        if self._last_offset is not None and offset_s < self._last_offset - EPS:
            raise ValueError(
                f"detector: offset went backwards ({offset_s} after {self._last_offset}); "
                "call reset() before restarting offsets"
            )
        self._last_offset = offset_s
        return offset_s

    def _may_start(self, label: str, offset_s: float) -> bool:
        """An event of `label` may start at `offset_s`: enabled and out of its cooldown."""
        return label in self.enabled and offset_s >= self._cooldown_until.get(label, -math.inf) - EPS

    def _start(self, label: str, offset_s: float, fast_start_score: float | None = None) -> DetectionEvent:
        """Open `label`'s event at `offset_s`. Its score is the one that crossed: the smoothed main
        score, or at a fast start the start model's (the main score may still be low there)."""
        s = float(self._smoothed[self._index[label]])
        if fast_start_score is None:
            start = DetectionEvent("start", uuid.uuid4().hex, label, s, s, offset_s)
        else:
            fs = float(fast_start_score)
            start = DetectionEvent("start", uuid.uuid4().hex, label, fs, max(fs, s), offset_s, opened_by="start_model")
        self._open[label] = _Open(start=start, peak=start.peak_score, last_above_s=offset_s)
        self._cooldown_until.pop(label, None)
        return start

    def _score_row(self, scores: np.ndarray, what: str) -> np.ndarray:
        """One model's scores for a window as a float64 row of `len(labels)`, non-finite values as 0
        (inf as 1); a copy, so the history never shares the caller's array. ValueError naming
        `what` for another length."""
        row = np.array(scores, dtype=np.float64).reshape(-1)
        if row.shape[0] != len(self.labels):
            raise ValueError(f"detector: got {row.shape[0]} {what} for {len(self.labels)} labels")
        if not np.isfinite(row).all():  # speed: nan_to_num costs ~7 us even on finite rows
            row = np.nan_to_num(row, nan=0.0, posinf=1.0, neginf=0.0)
        return row

    def _fast_label(self, start_scores: np.ndarray | None) -> tuple[str | None, float]:
        """The label a fast start may open on this window and its score: the start model's top
        label, when its score reaches `fast_start_threshold` (None without a start model or setting)."""
        if self.fast_start_threshold is None or start_scores is None:
            return None, 0.0
        floor = self.fast_start_threshold - EPS
        # Nearly always no score reaches it: one max answers that (speed). float() of a float32
        # is exact, so the test is the one below; a NaN max fails it and takes the full path.
        if getattr(start_scores, "shape", None) == (len(self.labels),) and float(start_scores.max()) < floor:
            return None, 0.0
        row = np.asarray(start_scores, dtype=np.float64).reshape(-1)
        if row.shape[0] != len(self.labels):
            raise ValueError(f"detector: got {row.shape[0]} start scores for {len(self.labels)} labels")
        if not np.isfinite(row).all():  # speed: nan_to_num costs ~7 us even on finite rows
            row = np.nan_to_num(row, nan=0.0)
        top = int(row.argmax())
        score = float(row[top])
        return (self.labels[top], score) if score >= floor else (None, 0.0)

    def _end(self, label: str, end_offset_s: float, decision_offset_s: float) -> DetectionEvent:
        """Close `label`'s open event: build its "end" event and start its cooldown."""
        opened = self._open.pop(label)
        score = float(self._smoothed[self._index[label]])
        self._cooldown_until[label] = decision_offset_s + self.cooldown_seconds
        return DetectionEvent(
            type="end",
            id=opened.start.id,
            label=label,
            score=score,
            peak_score=max(opened.peak, score),
            start_offset_s=opened.start.start_offset_s,
            end_offset_s=max(end_offset_s, opened.start.start_offset_s),
        )

    # -- endings outside the window rhythm -----------------------------------------------------

    def close(self, offset_s: float) -> list[DetectionEvent]:
        """End every open event (shutdown, end of file).

        An event still at or above its release level ends at `offset_s` (never before its last
        window); one in its hold ends at its last window above the release level. Returns the
        "end" events, in label order.
        """
        offset_s = float(offset_s)
        ended = []
        for label in self.labels:
            opened = self._open.get(label)
            if opened is None:
                continue
            in_hold = not self._at_release(self._index[label], label)
            end = opened.last_above_s if in_hold else max(offset_s, opened.last_above_s)
            ended.append(self._end(label, end, max(offset_s, self._decision_offset())))
        return ended

    def reset(self) -> list[DetectionEvent]:
        """After an audio gap: end open events, clear score history and cooldowns.

        Open events end at their last window above the release level (the last offset for an
        event that was still above). The next window starts smoothing from scratch, and its
        offset may be smaller than before (a source that restarts its clock). Returns the "end"
        events, in label order.
        """
        ended = [
            self._end(label, self._open[label].last_above_s, self._decision_offset())
            for label in self.labels
            if label in self._open
        ]
        self._history.clear()
        self._smoothed = np.zeros(len(self.labels), dtype=np.float64)
        self._main_history.clear()
        self._cooldown_until.clear()
        self._last_offset = None
        return ended
