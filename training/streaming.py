"""Streaming check on full-length recordings with located labels (../shared/data/recordings).

Each recording goes through the daemon's window rule (`monitor.windows.file_windows`, 4 s windows
every 0.5 s; the streaming pipeline yields the same windows) and the int8 model via
`monitor.runner.ModelRunner`. A window counts as labelled when at least half of it lies inside a
labelled occurrence (or, for an occurrence shorter than the window, at least half of the occurrence
lies inside the window); we report how often its top label is that occurrence's class, per recording
and overall, separately for recordings whose clips were in the training folds and for those that
were not: a recording is seen when its fsID is the source of a clip the model was trained on
(`training_fsids`), not by its fold (../shared holds folds 1-9, some of them partly).
"""

from __future__ import annotations

import csv
import json
from collections import defaultdict
from pathlib import Path

import numpy as np

from monitor.bundle import bundle_paths, load_bundle
from monitor.frontend import LogMelFrontend
from monitor.runner import ModelRunner
from monitor.windows import file_windows
from training.datasets import DatasetError, load_audio

__all__ = ["evaluate_recordings", "read_occurrences", "training_fsids"]


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


def training_fsids(bundle_json: Path) -> set[str] | None:
    """fsIDs of the clips a bundle was trained on (its `data.root`, `data.folds`), or None if unknown.

    A clip counts when its fold is a training fold and its audio file is in the dataset folder
    (../shared holds some folds only partly). None when the bundle names no UrbanSound8K-style
    dataset or the dataset is not on this machine.
    """
    try:
        data = json.loads(bundle_json.read_text()).get("data") or {}
        root = Path(data["root"])
        folds = {int(f) for f in data["folds"]}
    except (OSError, ValueError, KeyError, TypeError):
        return None
    # A relative root was written relative to the working directory of the training run: try
    # that, then the checkout that holds models/<bundle>.
    candidates = [root] if root.is_absolute() else [root, bundle_json.parent.parent / root]
    root = next((c for c in candidates if (c / "metadata" / "UrbanSound8K.csv").is_file()), None)
    if root is None:
        return None
    meta = root / "metadata" / "UrbanSound8K.csv"
    audio = root / "audio"
    present = {p.stem for p in audio.rglob("*.*")} if audio.is_dir() else set()
    with meta.open(newline="") as fh:
        return {
            r["fsID"]
            for r in csv.DictReader(fh)
            if int(r["fold"]) in folds and Path(r["slice_file_name"]).stem in present
        }


def evaluate_recordings(
    model: str | Path, rec_dir: str | Path, train_folds=(1, 2, 3, 4), hop: float = 0.5
) -> dict:
    rec_dir = Path(rec_dir)
    occ, folds = read_occurrences(rec_dir)
    bundle = load_bundle(model)
    seen_ids = training_fsids(bundle_paths(model)[1])
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
                "seen_in_training": (folds[fsid] in set(train_folds)) if seen_ids is None else fsid in seen_ids,
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
