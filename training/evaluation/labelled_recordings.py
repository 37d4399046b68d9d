"""Recordings with located labels (a folder of `<fsID>.<ext>` and labels.csv): their labelled
occurrences, and which of them a bundle heard in training (seen) or not (unseen)."""

from __future__ import annotations

import csv
import json
from collections import defaultdict
from pathlib import Path

from training.datasets import DatasetError

__all__ = ["read_occurrences", "training_fsids"]


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
