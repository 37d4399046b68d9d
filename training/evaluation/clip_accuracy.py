"""Clip accuracy: a bundle's int8 clip scores through the daemon's own window rule and runner.

Int8 scores always go through `monitor.runner.ModelRunner` (the daemon's runner) on the windows
of `monitor.windows.file_windows` (cached, identical); a clip's score is the mean of its window
scores, or their max for a bundle whose `placement.clip_score` says so, as `soundmon classify`
computes it.
"""

from __future__ import annotations

import numpy as np
from tqdm import tqdm

from monitor.bundle import ModelBundle
from monitor.classify import clip_score_rule
from monitor.runner import ModelRunner
from training.datasets import Dataset, DatasetError
from training.features import ClipFeatures, clip_windows

__all__ = ["check_labels", "confusion", "metrics", "predict_int8"]


def predict_int8(
    bundle: ModelBundle,
    feats: list[ClipFeatures],
    hop_seconds: float = 0.5,
    progress: bool = True,
    threads: int = 1,
    clip_score: str | None = None,
) -> np.ndarray:
    """Clip scores (n_clips, n_labels) of the int8 model via ModelRunner: the mean over a clip's
    windows, or their max, as `clip_score` says (default: the bundle's `placement.clip_score`,
    the rule `soundmon classify` applies, so the figures are what classify gives)."""
    rule = clip_score or clip_score_rule(bundle)
    reduce = np.max if rule == "max" else np.mean
    runner = ModelRunner(bundle, num_threads=threads)
    out = np.zeros((len(feats), len(bundle.labels)), dtype=np.float32)
    for i, f in enumerate(tqdm(feats, desc="int8 eval", unit="clip", disable=not progress)):
        wins = clip_windows(f, bundle.frontend, bundle.window_seconds, hop_seconds)
        out[i] = reduce([runner.predict(w) for w in wins], axis=0)
    return out


def confusion(y_true: np.ndarray, y_pred: np.ndarray, n: int) -> np.ndarray:
    cm = np.zeros((n, n), dtype=np.int64)
    np.add.at(cm, (y_true, y_pred), 1)
    return cm


def metrics(y_true: np.ndarray, scores: np.ndarray, labels: list[str]) -> dict:
    """Overall accuracy, macro accuracy (mean of per-class accuracies), per-class, confusion."""
    y_true = np.asarray(y_true)
    pred = scores.argmax(1)
    cm = confusion(y_true, pred, len(labels))
    per = {}
    for c, lab in enumerate(labels):
        n = int(cm[c].sum())
        if n:
            per[lab] = {"n": n, "correct": int(cm[c, c]), "accuracy": float(cm[c, c] / n)}
    return {
        "n_clips": int(len(y_true)),
        "accuracy": float(np.mean(pred == y_true)) if len(y_true) else float("nan"),
        "macro_accuracy": float(np.mean([v["accuracy"] for v in per.values()]))
        if per
        else float("nan"),
        "per_class": per,
        "confusion": cm.tolist(),
        "labels": list(labels),
    }


def check_labels(dataset: Dataset, bundle, model_path) -> None:
    """A one-line error when the dataset has classes the bundle cannot score."""
    missing_labels = [lab for lab in dataset.labels if lab not in bundle.labels]
    if missing_labels:
        raise DatasetError(
            f"dataset classes {missing_labels} are not labels of {model_path} ({bundle.labels}); "
            "use --classes/--rename to map them"
        )

