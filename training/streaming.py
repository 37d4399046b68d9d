"""Streaming check on full-length recordings with located labels (../shared/data/recordings).

Each recording goes through the daemon's window rule (`monitor.windows.file_windows`, 4 s windows
every 0.5 s; the streaming pipeline yields the same windows) and the int8 model via
`monitor.runner.ModelRunner`. A window counts as labelled when at least half of it lies inside a
labelled occurrence (or, for an occurrence shorter than the window, at least half of the occurrence
lies inside the window); we report how often its top label is that occurrence's class, per recording
and overall, separately for recordings whose clips were in the training folds and for those that
were not (folds 5-9: audio the model has never heard).
"""

from __future__ import annotations

import csv
from collections import defaultdict
from pathlib import Path

import numpy as np

from monitor.bundle import load_bundle
from monitor.frontend import LogMelFrontend
from monitor.runner import ModelRunner
from monitor.windows import file_windows
from training.datasets import DatasetError, load_audio

__all__ = ["evaluate_recordings", "read_occurrences"]


def read_occurrences(rec_dir: Path) -> tuple[dict[str, list[tuple[float, float, str]]], dict[str, int]]:
    """labels.csv of a recordings folder: fsID -> [(start, end, class)], and fsID -> fold."""
    labels_csv = Path(rec_dir) / "labels.csv"
    if not labels_csv.is_file():
        raise DatasetError(f"{rec_dir}: no labels.csv (fsID,fold,class,classID,start,end)")
    occ: dict[str, list[tuple[float, float, str]]] = defaultdict(list)
    folds: dict[str, int] = {}
    with labels_csv.open(newline="") as fh:
        for r in csv.DictReader(fh):
            occ[r["fsID"]].append((float(r["start"]), float(r["end"]), r["class"]))
            folds[r["fsID"]] = int(r["fold"])
    return occ, folds


def evaluate_recordings(
    model: str | Path, rec_dir: str | Path, train_folds=(1, 2, 3, 4), hop: float = 0.5
) -> dict:
    rec_dir = Path(rec_dir)
    occ, folds = read_occurrences(rec_dir)
    bundle = load_bundle(model)
    runner = ModelRunner(bundle, num_threads=1)
    fe = LogMelFrontend(bundle.frontend)
    per_rec = []
    for fsid, events in sorted(occ.items()):
        path = next((p for p in rec_dir.glob(f"{fsid}.*") if p.suffix != ".csv"), None)
        if path is None:
            continue
        wins = file_windows(
            load_audio(path, bundle.frontend.sample_rate), fe, bundle.window_seconds, hop
        )
        scores = np.stack([runner.predict(w) for w in wins])
        n_ok = n_all = 0
        for i, s in enumerate(scores):
            t0, t1 = i * hop, i * hop + bundle.window_seconds
            for a, b, cls in events:
                need = min(bundle.window_seconds, b - a) / 2
                if cls in bundle.labels and min(t1, b) - max(t0, a) >= need:
                    n_all += 1
                    n_ok += int(bundle.labels[int(s.argmax())] == cls)
                    break
        per_rec.append(
            {
                "fsID": fsid,
                "fold": folds[fsid],
                "class": events[0][2],
                "seen_in_training": folds[fsid] in set(train_folds),
                "labelled_windows": n_all,
                "correct": n_ok,
                "accuracy": n_ok / n_all if n_all else None,
            }
        )

    def agg(rows):
        n = sum(r["labelled_windows"] for r in rows)
        c = sum(r["correct"] for r in rows)
        recs = [r["accuracy"] for r in rows if r["accuracy"] is not None]
        return {
            "recordings": len(rows),
            "windows": n,
            "window_accuracy": c / n if n else None,
            "mean_recording_accuracy": float(np.mean(recs)) if recs else None,
        }

    return {
        "model": str(model),
        "recordings_dir": str(rec_dir),
        "hop_seconds": hop,
        "all": agg(per_rec),
        "unseen": agg([r for r in per_rec if not r["seen_in_training"]]),
        "seen": agg([r for r in per_rec if r["seen_in_training"]]),
        "per_recording": per_rec,
    }
