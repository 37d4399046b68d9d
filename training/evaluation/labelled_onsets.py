"""Labelled onsets of the street recordings and the rule that counts an event as answering one.

The recordings folder (`../shared/data/recordings`) has a `labels.csv` of UrbanSound8K slices
kept per recording, and perhaps a `slices.csv`; `labelled_onsets` takes each row back to where its
sound began (UrbanSound8K's slice timing). `first_new_event` is how the latency harness
(`tools/latency.py`), `training.evaluation.detector_metrics` and `training.evaluation.onset_streams` decide which event
answers an occurrence, so the three count alike; `first_sure` is when a model is first sure of the
onset's class at all, whatever a detector then does (their `--sure-at`).
"""

from __future__ import annotations

import argparse
import csv
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["SLICE_STEP_S", "first_new_event", "first_sure", "labelled_onsets", "sure_at_arg", "sure_row"]


SLICE_STEP_S = 2.0
"""UrbanSound8K cut an annotated occurrence into 4 s slices every 2 s from its start (slice k at
start + 2k; the recordings' README shows it on 565 independent copies)."""


def labelled_onsets(rec_dir: Path) -> list[dict[str, Any]]:
    """The annotated sound occurrences of a recordings folder: fsID, class, onset, end.

    A row of labels.csv is a run of *kept* UrbanSound8K slices, and UrbanSound8K kept only some
    slices of an occurrence: a row whose first slice is slice k > 0 starts 2k s after the sound
    did (the recording 72539 barks at 6.8 s; its row starts at 8.8 s), and two rows can be parts
    of one occurrence. With slices.csv beside labels.csv each row is taken back to its
    occurrence's start (first slice's located start - 2 s x sliceID, not before 0) and rows of
    one occurrence are merged; `row_start_s` keeps the first row's start. Without slices.csv
    the rows are the occurrences."""
    with open(Path(rec_dir) / "labels.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    slices_csv = Path(rec_dir) / "slices.csv"
    slices: list[dict[str, str]] = []
    if slices_csv.is_file():
        with open(slices_csv, newline="") as f:
            slices = list(csv.DictReader(f))
    merged: dict[tuple[str, str, float], dict[str, Any]] = {}
    for r in rows:
        start, end = float(r["start"]), float(r["end"])
        inside = [
            s for s in slices
            if s["fsID"] == r["fsID"] and s["class"] == r["class"]
            and float(s["start"]) >= start - 0.02 and float(s["end"]) <= end + 0.02
        ]  # fmt: skip
        onset = min((float(s["start"]) - SLICE_STEP_S * int(s["sliceID"]) for s in inside), default=start)
        onset = round(max(0.0, min(onset, start)), 3)
        key = (r["fsID"], r["class"], onset)
        if key in merged:
            merged[key]["end_s"] = max(merged[key]["end_s"], end)
        else:
            merged[key] = {"recording": r["fsID"], "class": r["class"], "onset_s": onset, "end_s": end,
                           "row_start_s": start}  # fmt: skip
    return sorted(merged.values(), key=lambda o: (o["recording"], o["onset_s"], o["class"]))


def first_new_event(start_offsets: list[float], onset: float, end: float, hop: float) -> float | None:
    """The stream offset of the first event start that answers a labelled occurrence: decided
    between its onset and its end (+ one hop); None if every start of the class is outside (an
    event still running from earlier does not count). `training.evaluation.detector_metrics` counts the same."""
    new = [s for s in start_offsets if onset <= s <= end + hop]
    return min(new) if new else None


def first_sure(scored: Iterable[tuple[float, np.ndarray | None]], index: int, onset: float, end: float,
               threshold: float) -> float | None:  # fmt: skip
    """The offset of the first result in (onset, end] whose scores rank label `index` top at
    >= `threshold` (None scores: not run there), or None."""
    for offset, scores in scored:
        if offset <= onset:
            continue
        if offset > end:
            return None
        if scores is not None and int(np.argmax(scores)) == index and scores[index] >= threshold - 1e-6:
            return offset
    return None


def sure_row(threshold: float, delays: list[float | None]) -> dict:
    """`threshold`, the onsets counted, how many a model was sure of (`first_sure`; None: never)
    and their median delay in seconds."""
    reached = [d for d in delays if d is not None]
    return {"threshold": threshold, "onsets": len(delays), "reached": len(reached),
            "median_delay_s": round(float(np.median(reached)), 2) if reached else None}  # fmt: skip


def sure_at_arg(text: str) -> list[float]:
    """`--sure-at 0.5,0.75`: scores in (0, 1] (the thresholds `first_sure` is asked about)."""
    try:
        values = [float(x) for x in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected scores such as 0.5,0.75; got {text!r}") from None
    if not all(0.0 < v <= 1.0 for v in values):
        raise argparse.ArgumentTypeError(f"expected scores in (0, 1]; got {text!r}")
    return values
