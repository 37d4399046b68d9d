"""Cross-validation clip accuracy re-scored without retraining: `soundmon evaluate --cv`.

`soundmon train --cv` keeps each fold's int8 bundle in `<model>_cv/fold<k>` (its metadata names
the held-out fold and the folds it was trained on). This scores every such bundle on its
held-out fold through the daemon's runner and window rule, exactly as the training command
did, so the model card's int8 cross-validation tables (per fold, mean, pooled, per class) are
reproduced from the shipped files. The float columns need each fold's Keras weights, which are
not kept (1.2 MB each); the MLP column is a separate baseline (`soundmon train --arch mlp --cv`).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from monitor.bundle import ModelBundle, bundle_paths, load_bundle
from monitor.classify import clip_score_rule
from training.bundle_files import cv_dir_for
from training.datasets import Dataset, DatasetError
from training.evaluation.clip_accuracy import check_labels, metrics, predict_int8
from training.evaluation.reports import per_class_table, plot_confusion, write_metrics
from training.features import compute_features

__all__ = ["cv_clip_accuracy", "fold_bundles", "format_cv_table", "model_kind"]


def model_kind(bundle: ModelBundle) -> str:
    """What the network is, for a table header: `YAMNet + linear head`, `CNN cnn_spn_s23t1`, or the
    bundle's name when its metadata does not say (a bundle made outside `soundmon train`)."""
    model = bundle.meta.get("model") or {}
    backbone = model.get("backbone")
    if backbone:
        hidden = (bundle.meta.get("training") or {}).get("head_hidden")
        head = "linear head" if hidden == 0 else f"{hidden}-unit head" if hidden else "head"
        return f"{'YAMNet' if backbone == 'yamnet' else backbone} + {head}"
    arch = model.get("arch")
    if arch == "mlp":
        return "MFCC-MLP"
    return f"CNN {arch}" if arch else bundle.name


def fold_bundles(model_path: str | Path) -> dict[int, ModelBundle]:
    """Held-out fold -> fold bundle, from `<model>_cv/fold*.json`."""
    cv_dir = cv_dir_for(model_path)
    if not cv_dir.is_dir():
        raise DatasetError(
            f"{cv_dir} not found: this needs the fold models that `soundmon train --cv` keeps there"
        )
    found: dict[int, ModelBundle] = {}
    for meta_path in sorted(cv_dir.glob("fold*.json")):
        bundle = load_bundle(meta_path.with_suffix(""))
        fold = (bundle.meta.get("cv") or {}).get("held_out_fold")
        if fold is None:
            raise DatasetError(f"{meta_path}: not a cross-validation fold bundle (no cv.held_out_fold)")
        found[int(fold)] = bundle
    if not found:
        raise DatasetError(f"{cv_dir}: no fold bundles (fold<k>.tflite/.json) in it")
    return found


def cv_clip_accuracy(
    model_path: str | Path,
    dataset: Dataset,
    out_dir: Path,
    cache_dir: str | None = None,
    workers: int | None = None,
    progress: bool = True,
    hop_seconds: float = 0.5,
) -> dict:
    """Each fold bundle scored (int8) on its held-out fold of `dataset`; per fold, mean and pooled."""
    bundles = fold_bundles(model_path)
    folds = sorted(set(bundles) & set(dataset.folds))
    if not folds:
        raise DatasetError(
            f"the dataset has folds {dataset.folds}, the fold models were held out on {sorted(bundles)}"
        )
    first = bundles[folds[0]]
    check_labels(dataset, first, model_path)
    # The clip rule the model card's figures use: the final bundle's (`--backbone` training picks
    # mean or max by this very CV and writes it there; the fold bundles keep the default).
    main = bundle_paths(model_path)[1]
    rule = clip_score_rule(load_bundle(model_path) if main.is_file() else first)
    feats = compute_features(
        dataset.clips, first.frontend, first.window_seconds, cache_dir, workers, progress
    )
    clip_folds = np.array([c.fold for c in dataset.clips])
    y = np.array([first.labels.index(c.label) for c in dataset.clips])
    per_fold, ys, scores = [], [], []
    for k in folds:
        te = np.where(clip_folds == k)[0]
        sq = predict_int8(bundles[k], [feats[i] for i in te], hop_seconds, progress=progress, clip_score=rule)
        per_fold.append({"fold": k, "n_clips": len(te), "int8": metrics(y[te], sq, first.labels)})
        ys.append(y[te])
        scores.append(sq)
    pooled = metrics(np.concatenate(ys), np.concatenate(scores), first.labels)
    result = {
        "model": str(model_path),
        "dataset": str(dataset.root),
        "folds": folds,
        "model_kind": model_kind(first),
        "clip_score": rule,
        "per_fold": per_fold,
        "int8_accuracy_mean": float(np.mean([e["int8"]["accuracy"] for e in per_fold])),
        "int8_macro_mean": float(np.mean([e["int8"]["macro_accuracy"] for e in per_fold])),
        "int8_pooled": pooled,
    }
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "cv.md").write_text(format_cv_table(result) + "\n")
    plot_confusion(np.array(pooled["confusion"]), first.labels, out_dir / "cv_confusion.png",
                   f"{Path(model_path).name} CV folds {folds}, int8 pooled "
                   f"(acc {100 * pooled['accuracy']:.1f}%)")  # fmt: skip
    write_metrics(out_dir / "cv_metrics.json", result)
    return result


def format_cv_table(result: dict) -> str:
    """The model card's cross-validation tables, int8 columns: per fold, mean, pooled; per class.
    The columns name the network the fold bundles are (`model_kind`) and the clip rule."""
    kind = result.get("model_kind", "CNN")
    rule = result.get("clip_score", "mean")
    lines = [
        f"{kind}, int8 through the daemon's runner; a clip's score is the {rule} of its window scores.",
        "",
        f"| held-out fold | clips | {kind} int8 | {kind} int8 macro |",
        "|---:|---:|---:|---:|",
    ]
    for e in result["per_fold"]:
        m = e["int8"]
        lines.append(f"| {e['fold']} | {e['n_clips']} | {100 * m['accuracy']:.1f} | {100 * m['macro_accuracy']:.1f} |")
    lines.append(
        f"| **mean over folds** | | **{100 * result['int8_accuracy_mean']:.1f}** | "
        f"{100 * result['int8_macro_mean']:.1f} |"
    )
    p = result["int8_pooled"]
    lines.append(
        f"| all held-out clips pooled | {p['n_clips']} | {100 * p['accuracy']:.1f} | "
        f"{100 * p['macro_accuracy']:.1f} |"
    )
    return "\n".join(lines) + "\n\n" + per_class_table({f"{kind} int8": p}, p["labels"])
