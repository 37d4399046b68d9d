"""Clip accuracy of a bundle on a labelled dataset: `soundmon evaluate --dataset`.

Int8 through the daemon's runner (`training.evaluation.clip_accuracy`); float too when the bundle
keeps its `.weights.h5`, the only part that imports TensorFlow.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from training.bundle_files import weights_path_for
from training.console import log
from training.datasets import Dataset
from training.evaluation.clip_accuracy import check_labels, metrics, predict_int8
from training.evaluation.reports import per_class_table, plot_confusion, write_metrics
from training.features import ClipFeatures, compute_features
from training.float_model import load_float_model

__all__ = ["clip_accuracy_on_dataset"]


def clip_accuracy_on_dataset(
    model_path: str,
    dataset: Dataset,
    out_dir: Path,
    cache_dir: str | None = None,
    workers: int | None = None,
    progress: bool = True,
    hop_seconds: float = 0.5,
    tf_threads: int | None = None,
) -> dict:
    """Clip accuracy of a bundle on a dataset: int8 (ModelRunner) and, if `<model>.weights.h5`
    exists, float (Keras, with `tf_threads` TensorFlow threads; default all cores); writes
    metrics.json, per_class.md and confusion.png to `out_dir` and returns the metrics."""
    if weights_path_for(model_path).is_file():
        from training.train import set_threads  # TensorFlow, for the float column only

        set_threads(tf_threads or os.cpu_count())
    model, bundle = load_float_model(model_path)
    check_labels(dataset, bundle, model_path)
    trained = bundle.meta.get("data") or {}
    try:
        same_root = (
            trained.get("root") and Path(trained["root"]).resolve() == Path(dataset.root).resolve()
        )
    except OSError:
        same_root = False
    overlap = sorted(set(trained.get("folds") or []) & set(dataset.folds)) if same_root else []
    if overlap:
        log(
            f"note: fold(s) {overlap} of this dataset were training data of {model_path}: scores are optimistic"
        )
    feats: list[ClipFeatures] = compute_features(
        dataset.clips, bundle.frontend, bundle.window_seconds, cache_dir, workers, progress
    )
    y = np.array([bundle.labels.index(c.label) for c in dataset.clips])
    out_dir.mkdir(parents=True, exist_ok=True)
    sq = predict_int8(bundle, feats, hop_seconds, progress=progress)
    result = {
        "model": str(model_path),
        "dataset": str(dataset.root),
        "folds": dataset.folds,
        "missing": len(dataset.missing),
        "int8": metrics(y, sq, bundle.labels),
    }
    columns = {"int8": result["int8"]}
    if model is not None:
        from training.train import predict_float  # TensorFlow

        sf = predict_float(
            model,
            feats,
            (bundle.norm_mean, bundle.norm_std),
            bundle.frontend,
            bundle.window_seconds,
            hop_seconds,
        )
        result["float"] = metrics(y, sf, bundle.labels)
        result["int8_float_agreement"] = float(np.mean(sf.argmax(1) == sq.argmax(1)))
        columns = {"float": result["float"], "int8": result["int8"]}
    result["float_source"] = str(weights_path_for(model_path)) if model is not None else None
    table = per_class_table(columns, bundle.labels)
    (out_dir / "per_class.md").write_text(table + "\n")
    plot_confusion(np.array(result["int8"]["confusion"]), bundle.labels, out_dir / "confusion.png",
                   f"{bundle.name} int8 on {dataset.name} folds {dataset.folds} "
                   f"(acc {100 * result['int8']['accuracy']:.1f}%)")  # fmt: skip
    write_metrics(out_dir / "metrics.json", result)
    return result
