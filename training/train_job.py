"""`soundmon train` for a CNN: features, optional cross-validation, the final model, its bundle
and report, in small steps (`run_training` reads as their list).

Everything a training process needs is imported at its start, none of it where used: editing
or updating the code during an hour-long run then cannot break its export at the end (a lazy
import in the export step once read a newer module than the process had loaded and lost 90
minutes of trained folds).
"""

from __future__ import annotations

import json
import os
import resource
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402

from monitor.bundle import ModelBundle, bundle_paths, load_bundle  # noqa: E402
from monitor.errors import BundleError  # noqa: E402
from monitor.frontend import FrontendParams  # noqa: E402
from training.bundle_export import export_bundle  # noqa: E402
from training.bundle_files import cv_dir_for, weights_path_for  # noqa: E402
from training.card import reused_body, write_card  # noqa: E402
from training.console import log  # noqa: E402
from training.datasets import Dataset, DatasetError  # noqa: E402
from training.evaluation.clip_accuracy import metrics  # noqa: E402
from training.evaluation.latency import measure_latency, measure_stream_latency  # noqa: E402
from training.evaluation.reports import plot_confusion, plot_learning_curve, write_metrics  # noqa: E402
from training.evaluation.window_accuracy import window_accuracy_on_recordings  # noqa: E402
from training.export import PLACEMENT  # noqa: E402
from training.features import ClipFeatures, compute_features  # noqa: E402
from training.float_model import load_float_model  # noqa: E402
from training.fold_tasks import FinalTask, FoldTask, fold_start, init_model_weights, rebuild_model  # noqa: E402
from training.models import ARCHS, count_macs  # noqa: E402
from training.train import TrainConfig  # noqa: E402
from training.worker_pool import run_tasks  # noqa: E402

__all__ = [
    "TrainJob",
    "bundle_meta",
    "check_recordings",
    "describe_run",
    "fresh_cv_dir",
    "measure_bundle",
    "peak_rss_mb",
    "plot_cv",
    "rewrite_bundle_json",
    "run_training",
    "summarise_folds",
    "write_report",
]


@dataclass
class TrainJob:
    """What `soundmon train` (CNN) was asked for: the data, where the bundle goes, the recipe.

    One object carries a run from the CLI to `run_training`. `out` is the bundle's path without
    a suffix; `init_from`, a bundle whose float weights start the body (`--init-from`);
    `cache_dir` and `workers`, the feature cache and its processes (None: defaults);
    `report_dir`, where the report and plots go (None: beside `out`); `progress`, show
    progress bars; `command`, the command line, and `experiments`, markdown, both for the model
    card; `latency_calls`, inference calls timed for the latency figure; the rest as commented.
    """

    dataset: Dataset
    out: Path
    cfg: TrainConfig
    cv_folds: list[int] | None = None  # leave-one-fold-out over these folds (None: no CV)
    baseline: bool = True  # train the MFCC-MLP baseline in each CV fold
    init_from: str | None = None
    cache_dir: str | None = None
    workers: int | None = None
    report_dir: Path | None = None
    progress: bool = True
    command: str = ""
    experiments: str = ""
    latency_calls: int = 300
    recordings: str | None = None  # streaming check on full recordings after export
    jobs: int = 1  # trainings at once (CV folds and the final model), one process each


@dataclass
class _InitModel:
    """What `--init-from` starts from: the float model, its bundle and its normalisation (all None without it)."""

    model: object | None = None
    bundle: ModelBundle | None = None
    norm: tuple[float, float] | None = None


def peak_rss_mb() -> float:
    """Peak resident memory of this process and its (finished) children, MB."""
    own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    kids = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    return max(own, kids) / 1024.0


def run_training(job: TrainJob) -> dict:
    """Optional cross-validation, then the final model on all selected folds; writes the bundle and report."""
    t_start = time.perf_counter()
    ds, cfg = job.dataset, job.cfg
    params = FrontendParams()
    feats = _compute_features(job, params)
    y = ds.y()
    folds = np.array([c.fold for c in ds.clips])
    init = _load_init_model(job, params)
    report_dir = job.report_dir or job.out.parent
    report_dir.mkdir(parents=True, exist_ok=True)
    report = describe_run(job, params, y, folds, init)
    # Progress bars only in this process; parallel workers log a line every 10 epochs instead.
    bars = job.progress and (job.jobs <= 1 or not job.cv_folds)
    init_weights = init_model_weights(init.model)
    final_task = FinalTask(feats, y, len(ds.labels), cfg, params, init_weights, init.norm, bars)
    if job.cv_folds:
        final = _cross_validate(job, report, report_dir, feats, y, folds, params, init, init_weights, final_task, bars)
    else:
        final = final_task()
    weights, norm, hist, final_s = final
    model = rebuild_model(cfg, params, len(ds.labels), weights)
    _describe_final_model(report, job, model, norm, hist, final_s, len(feats))
    meta = bundle_meta(report)
    bundle, nbytes = export_bundle(model, feats, y, len(ds.labels), norm, params, job.out, ds.labels, meta, cfg,
                                   keep_weights=True)  # fmt: skip
    measure_bundle(report, job, bundle, nbytes, t_start)
    data = rewrite_bundle_json(job.out, meta, report)
    if job.recordings:
        check_recordings(report, job, data)
    write_report(report, job, report_dir, nbytes)
    return report


def _compute_features(job: TrainJob, params: FrontendParams) -> list[ClipFeatures]:
    """Log the dataset's summary and compute (or read from the cache) every clip's features."""
    ds, cfg = job.dataset, job.cfg
    log(ds.summary())
    for m in ds.missing[:5]:
        log(f"  missing: {m}")
    return compute_features(ds.clips, params, cfg.window_seconds, job.cache_dir, job.workers, job.progress)


def _load_init_model(job: TrainJob, params: FrontendParams) -> _InitModel:
    """The `--init-from` bundle's float model and normalisation; its architecture becomes the job's."""
    if not job.init_from:
        return _InitModel()
    init_model, init_bundle = load_float_model(job.init_from)
    if init_model is None:
        raise BundleError(
            f"--init-from {job.init_from}: no float weights ({weights_path_for(job.init_from).name}) next to the bundle"
        )
    if init_bundle.frontend != params:
        raise BundleError(f"--init-from {job.init_from}: its front-end differs from this soundmon's")
    job.cfg.arch = init_bundle.meta["model"]["arch"]
    return _InitModel(init_model, init_bundle, (init_bundle.norm_mean, init_bundle.norm_std))


def describe_run(job: TrainJob, params: FrontendParams, y: np.ndarray, folds: np.ndarray,
                 init: _InitModel | None = None) -> dict:  # fmt: skip
    """The report's head: what was trained, on what data, with which recipe."""
    ds, cfg = job.dataset, job.cfg
    init = init or _InitModel()
    labels = ds.labels
    return {
        "name": job.out.name,
        "labels": labels,
        "arch": cfg.arch,
        "command": job.command,
        "window_seconds": cfg.window_seconds,
        "window_frames": params.frames_for(cfg.window_seconds),
        "frontend": params.to_dict(),
        "placement": PLACEMENT,
        "training": cfg.to_dict(),
        "data": {
            "name": ds.name,
            "root": str(ds.root),
            "format": ds.format,
            "n_clips": len(ds.clips),
            "folds": ds.folds,
            "clips_per_fold": {
                str(k): v for k, v in sorted(Counter(int(f) for f in folds).items())
            },
            "clips_per_class": {lab: int(np.sum(y == i)) for i, lab in enumerate(labels)},
            "missing": len(ds.missing),
            "split": ds.split_info(),
        },
        "init_from": job.init_from,
        "init_body": reused_body(job.init_from, init.bundle) if init.bundle is not None else None,
        "experiments": job.experiments,
    }


def _cross_validate(job: TrainJob, report: dict, report_dir: Path, feats: list, y: np.ndarray, folds: np.ndarray,
                    params: FrontendParams, init: _InitModel, init_weights: dict | None, final_task: FinalTask,
                    bars: bool):  # fmt: skip
    """Train and score every CV fold (with the final model beside them when `--jobs` > 1); add the
    folds, their summary and plots to the report and return the final model's training result."""
    ds, cfg = job.dataset, job.cfg
    absent = sorted(set(job.cv_folds) - set(ds.folds))
    if absent:
        raise DatasetError(f"--cv folds {absent} are not in the dataset (folds: {ds.folds})")
    cv_dir = fresh_cv_dir(job.out)
    data_meta = {k: v for k, v in report["data"].items() if k in ("name", "root", "format")}
    starts = {k: fold_start(job.init_from, k, init.bundle, ds.name, params) if job.init_from else None
              for k in job.cv_folds}  # fmt: skip
    fold_tasks = [
        FoldTask(k, feats, y, folds, len(ds.labels), cfg, params, ds.labels, *(starts[k] or (init_weights, init.norm)),
                 job.baseline, bars, cv_dir, data_meta)
        for k in job.cv_folds
    ]  # fmt: skip
    results, final = run_tasks(fold_tasks, final_task, job.jobs)
    report["cv"] = summarise_folds(job.cv_folds, results, y, folds, ds.labels)
    plot_cv(report, report_dir, job.cv_folds, ds.labels)
    summary = report["cv"]["summary"]
    log(
        f"CV mean accuracy: float {100 * summary['float_accuracy_mean']:.1f}%, "
        f"int8 {100 * summary['int8_accuracy_mean']:.1f}%"
        + (f", MLP baseline {100 * summary['mlp_accuracy_mean']:.1f}%" if "mlp_pooled" in summary else "")
    )
    return final


def fresh_cv_dir(out: Path) -> Path:
    """`<out>_cv/`, emptied of an earlier run's folds. Each fold's int8 bundle is kept there, so
    `soundmon evaluate --cv` re-scores the held-out folds without retraining."""
    cv_dir = cv_dir_for(out)
    cv_dir.mkdir(parents=True, exist_ok=True)
    for stale in cv_dir.glob("fold*.*"):  # an earlier run's folds must not mix with these
        stale.unlink()
    return cv_dir


def _pooled(parts: list[tuple[np.ndarray, np.ndarray]], labels) -> dict:
    y = np.concatenate([p[0] for p in parts])
    s = np.concatenate([p[1] for p in parts])
    return metrics(y, s, labels)


def summarise_folds(cv_folds: list[int], results: list, y: np.ndarray, folds: np.ndarray, labels: list[str]) -> dict:
    """The report's `cv` section: per fold, means over folds and all held-out clips pooled."""
    per_fold, histories = [], {}
    parts_f, parts_q, parts_m = [], [], []
    for k, (entry, hist, sf, sq, sm) in zip(cv_folds, results, strict=True):
        te = folds == k
        histories[f"fold {k}"] = hist
        parts_f.append((y[te], sf))
        parts_q.append((y[te], sq))
        if sm is not None:
            parts_m.append((y[te], sm))
        per_fold.append(entry)
    summary = {
        "n_clips": int(sum(e["n_clips"] for e in per_fold)),
        "float_accuracy_mean": float(np.mean([e["float"]["accuracy"] for e in per_fold])),
        "int8_accuracy_mean": float(np.mean([e["int8"]["accuracy"] for e in per_fold])),
        "float_macro_mean": float(np.mean([e["float"]["macro_accuracy"] for e in per_fold])),
        "int8_macro_mean": float(np.mean([e["int8"]["macro_accuracy"] for e in per_fold])),
        "float_pooled": _pooled(parts_f, labels),
        "int8_pooled": _pooled(parts_q, labels),
    }
    if parts_m:
        summary["mlp_accuracy_mean"] = float(np.mean([e["mlp"]["accuracy"] for e in per_fold]))
        summary["mlp_macro_mean"] = float(np.mean([e["mlp"]["macro_accuracy"] for e in per_fold]))
        summary["mlp_pooled"] = _pooled(parts_m, labels)
    return {"folds": list(cv_folds), "per_fold": per_fold, "summary": summary, "histories": histories}


def plot_cv(report: dict, report_dir: Path, cv_folds: list[int], labels: list[str]) -> None:
    """The pooled int8 confusion matrix and the folds' learning curves, named in the report."""
    stem = report["name"]
    summary = report["cv"]["summary"]
    cm_png = report_dir / f"{stem}_confusion.png"
    plot_confusion(np.array(summary["int8_pooled"]["confusion"]), labels, cm_png,
                   f"{stem}: int8, held-out folds {cv_folds} pooled "
                   f"(acc {100 * summary['int8_pooled']['accuracy']:.1f}%)")  # fmt: skip
    report["confusion_png"] = str(cm_png)
    lc_png = report_dir / f"{stem}_learning_curve.png"
    plot_learning_curve(report["cv"]["histories"], lc_png, f"{stem}: leave-one-fold-out learning curves")
    report["learning_curve_png"] = str(lc_png)


def _describe_final_model(report: dict, job: TrainJob, model, norm, hist, final_s: float, train_clips: int) -> None:
    """The final model's size, normalisation and training cost, into the report."""
    report["norm"] = list(norm)
    report["model"] = {
        "arch": job.cfg.arch,
        "params": int(model.count_params()),
        "macs_per_window": count_macs(model),
    }
    report["cost"] = {
        "train_clips": train_clips,
        "final_train_seconds": final_s,
        "seconds_per_epoch": float(np.median(hist.epoch_seconds)) if hist.epoch_seconds else None,
        "parallel_jobs": job.jobs,
    }


def bundle_meta(report: dict) -> dict:
    """The bundle JSON's training metadata: recipe, data, model, and the CV figures when there are."""
    meta = {k: report[k] for k in ("training", "data", "model", "init_from")}
    if "cv" in report:
        s = report["cv"]["summary"]
        meta["metrics"] = {
            "cv_folds": report["cv"]["folds"],
            "float_accuracy": s["float_accuracy_mean"],
            "int8_accuracy": s["int8_accuracy_mean"],
            "float_macro_accuracy": s["float_macro_mean"],
            "int8_macro_accuracy": s["int8_macro_mean"],
            "mlp_baseline_accuracy": s.get("mlp_accuracy_mean"),
            "per_fold": [
                {
                    "fold": e["fold"],
                    "float": e["float"]["accuracy"],
                    "int8": e["int8"]["accuracy"],
                    "mlp": e.get("mlp", {}).get("accuracy"),
                }  # fmt: skip
                for e in report["cv"]["per_fold"]
            ],
        }
    return meta


def measure_bundle(report: dict, job: TrainJob, bundle: ModelBundle, nbytes: int, t_start: float) -> None:
    """The exported bundle's size and runner latency (and its streaming model's), and the run's cost."""
    report["model"]["tflite_bytes"] = nbytes
    report["latency"] = measure_latency(bundle, job.latency_calls)
    if bundle.stream_tflite_path is not None:
        report["stream"] = measure_stream_latency(bundle, job.latency_calls)
    elif ARCHS.get(job.cfg.arch, {}).get("time_valid"):  # a streaming body whose export left it out
        report["stream_left_out"] = True
    report["cost"]["total_seconds"] = time.perf_counter() - t_start
    report["cost"]["peak_rss_mb"] = peak_rss_mb()
    if job.jobs > 1:
        report["cost"]["peak_rss_note"] = f"largest single process; up to {job.jobs} train at once"


def rewrite_bundle_json(out: Path, meta: dict, report: dict, keys: tuple[str, ...] = ("model", "latency", "cost")) -> dict:
    """Rewrite the bundle JSON with the measured cost and latency (`keys` of `meta`: a run that
    exported before its CV folds finished adds "metrics"); check it loads; return its data."""
    meta["model"] = report["model"]
    meta["latency"] = report["latency"]
    meta["cost"] = report["cost"]
    json_path = bundle_paths(out)[1]
    data = json.loads(json_path.read_text())
    data.update({k: v for k, v in meta.items() if k in keys})
    json_path.write_text(json.dumps(data, indent=2) + "\n")
    load_bundle(out)
    return data


def check_recordings(report: dict, job: TrainJob, data: dict) -> None:
    """`--recordings`: window accuracy on full recordings, into the report and the bundle JSON."""
    report["streaming"] = window_accuracy_on_recordings(job.out, job.recordings, train_folds=job.dataset.folds)
    st = report["streaming"]
    data["streaming"] = {k: st[k] for k in ("all", "seen", "unseen", "hop_seconds")}
    bundle_paths(job.out)[1].write_text(json.dumps(data, indent=2) + "\n")
    load_bundle(job.out)


def write_report(report: dict, job: TrainJob, report_dir: Path, nbytes: int) -> None:
    """`<name>_metrics.json` and the model card beside the bundle, and the closing log line."""
    tflite_path, json_path = bundle_paths(job.out)
    report["bundle"] = {"tflite": str(tflite_path), "json": str(json_path)}
    write_metrics(report_dir / f"{report['name']}_metrics.json", report)
    write_card(tflite_path.with_suffix(".md"), report)
    log(
        f"wrote {tflite_path} ({nbytes / 1024:.0f} KiB), {json_path}, {tflite_path.with_suffix('.md')}; "
        f"{report['model']['params']:,} params, {report['model']['macs_per_window'] / 1e6:.1f} M MAC/window, "
        f"int8 {report['latency']['median_ms']:.3f} ms/window; total {report['cost']['total_seconds'] / 60:.1f} min, "
        f"peak {report['cost']['peak_rss_mb']:.0f} MB"
    )
