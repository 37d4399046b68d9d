"""The train and evaluate workflows behind `soundmon train` / `soundmon evaluate`."""

from __future__ import annotations

import json
import os
import resource
import shlex
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, replace
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

# Everything a training process needs is imported at its start, none of it where used: editing
# or updating the code during an hour-long run then cannot break its export at the end (a lazy
# import in `_export` once read a newer module than the process had loaded and lost 90 minutes
# of trained folds).
import numpy as np  # noqa: E402

from monitor.bundle import bundle_paths, load_bundle  # noqa: E402
from monitor.config import shipped_models_dir  # noqa: E402
from monitor.errors import BundleError  # noqa: E402
from monitor.frontend import FrontendParams  # noqa: E402
from monitor.windows import hop_frames_for  # noqa: E402
from training.card import reused_body, write_card  # noqa: E402
from training.datasets import Dataset, DatasetError  # noqa: E402
from training.evaluate import (  # noqa: E402
    measure_latency,
    measure_stream_latency,
    metrics,
    per_class_table,
    plot_confusion,
    plot_learning_curve,
    predict_int8,
    write_metrics,
)
from training.export import PLACEMENT, convert_int8, representative_windows, write_bundle  # noqa: E402
from training.features import ClipFeatures, compute_features  # noqa: E402
from training.models import ARCHS, BODY_PREFIX, build_cnn, count_macs  # noqa: E402
from training.stream_export import state_quant_mismatch, stream_part  # noqa: E402
from training.streaming import evaluate_recordings  # noqa: E402
from training.train import TrainConfig, predict_float, train_cnn, train_mlp  # noqa: E402

__all__ = ["TrainJob", "evaluate_bundle", "find_init_bundle", "fold_start", "load_float_model", "run_training", "weights_path_for"]


STREAM_HOP_SECONDS = 0.5  # the daemon's default hop: the streaming model steps by it
START_MODEL_MAX_SECONDS = 1.5  # a window this short or shorter is a start model (fast start)
STREAM_CALIBRATION_WINDOWS = 100  # windows whose hops calibrate the streaming model's int8


def stream_hop_seconds(window_seconds: float) -> float:
    """The hop a streaming export steps by: the daemon's default hop, or half of it for a start
    model, which the pipeline checks half a hop after each window as well as at it."""
    return STREAM_HOP_SECONDS / 2 if window_seconds <= START_MODEL_MAX_SECONDS else STREAM_HOP_SECONDS


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def peak_rss_mb() -> float:
    """Peak resident memory of this process and its (finished) children, MB."""
    own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    kids = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    return max(own, kids) / 1024.0


def weights_path_for(base: str | Path) -> Path:
    """The float weights kept next to a bundle (for `--init-from` and float evaluation)."""
    tflite, _ = bundle_paths(base)
    return tflite.with_name(tflite.stem + ".weights.h5")


def load_float_model(base: str | Path):
    """(Keras model, bundle) rebuilt from the bundle's meta and its `.weights.h5`, or (None, bundle)."""
    bundle = load_bundle(base)
    wpath = weights_path_for(base)
    arch = (bundle.meta.get("model") or {}).get("arch")
    if not wpath.is_file() or not arch:
        return None, bundle
    if (bundle.meta.get("model") or {}).get("backbone"):  # `soundmon train --backbone`: training/transfer.py
        from training.transfer import full_model_from_meta

        try:
            model = full_model_from_meta(len(bundle.labels), bundle.meta)
        except BundleError as exc:
            log(f"note: no float model for {base}: {exc}")
            return None, bundle
        model.load_weights(wpath)
        return model, bundle
    model = build_cnn(len(bundle.labels), bundle.window_frames, bundle.frontend.n_mels, arch,
                      (bundle.meta.get("training") or {}).get("dropout", 0.3))  # fmt: skip
    model.load_weights(wpath)
    return model, bundle


def find_init_bundle(spec: str) -> Path:
    """The bundle `--init-from SPEC` names, with its float weights, or one line saying what is missing.

    SPEC is a bundle path (`models/home`, with or without a suffix) or the name of a shipped
    bundle (`urban10`, `models/urban10`): a path that is not there is looked up by its name among
    the shipped bundles, where the daemon finds them (`monitor.config.shipped_models_dir`, the
    `soundmon_models` package data), so the README's command works from any directory. Checked
    before any audio is decoded, so a wrong name costs nothing."""
    given = bundle_paths(spec)[1].with_suffix("")
    base = given
    if not given.with_suffix(".json").is_file():
        shipped = shipped_models_dir() / given.name
        if not shipped.with_suffix(".json").is_file():
            names = sorted(p.stem for p in shipped_models_dir().glob("*.json") if (p.with_suffix(".tflite")).is_file())
            raise BundleError(f"--init-from {spec}: no bundle {given}.json here and no shipped bundle named "
                              f"{given.name!r} (shipped: {', '.join(names)})")  # fmt: skip
        base = shipped
    weights = weights_path_for(base)
    if not weights.is_file():
        raise BundleError(f"--init-from {spec}: {weights} not found: --init-from needs the bundle's float weights, "
                          "which installed packages do not carry (a source checkout's models/ has urban10's; "
                          "or train with --backbone yamnet)")  # fmt: skip
    try:
        backbone = (load_bundle(base).meta.get("model") or {}).get("backbone")
    except BundleError as exc:
        raise BundleError(f"--init-from {spec}: {exc}") from None
    if backbone:
        raise BundleError(f"--init-from {spec}: a --backbone {backbone} bundle has no CNN body to reuse; "
                          f"train with --backbone {backbone} instead")  # fmt: skip
    return base


def save_float_weights(model, path: Path) -> None:
    """Save the layer weights only (a compiled model would also save the optimizer state, 3x larger)."""
    import keras

    # from_config, not clone_model: Keras 3 compiles a clone of a compiled model, and its optimizer
    # would be saved too.
    clean = keras.Model.from_config(model.get_config())
    clean.set_weights(model.get_weights())
    clean.save_weights(path)


@dataclass
class TrainJob:
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


def _export(
    model, feats, labels_idx, n_classes, norm, params, base, labels, meta, cfg, keep_weights=False
):
    rep = representative_windows(
        feats, labels_idx, n_classes, norm, params, cfg.window_seconds, seed=cfg.seed
    )
    tfl = convert_int8(model, rep)
    stream = None
    if ARCHS.get(cfg.arch, {}).get("time_valid"):  # a streaming-exact body: ship its streaming model too
        hop = hop_frames_for(stream_hop_seconds(cfg.window_seconds), params)
        frames = params.frames_for(cfg.window_seconds)
        stream = stream_part(model, rep[:STREAM_CALIBRATION_WINDOWS], frames, hop)
        bad = state_quant_mismatch(stream[0])
        if bad is not None:
            log(f"{Path(base).name}: streaming model left out ({bad} is quantised differently as input and "
                "output, which the streaming runner refuses); the daemon will run whole windows")  # fmt: skip
            stream = None
    bundle = write_bundle(base, tfl, labels, norm, params, cfg.window_seconds, meta=meta, stream=stream)
    if keep_weights:
        save_float_weights(model, weights_path_for(base))
    return bundle, len(tfl)


# -- one training per process ---------------------------------------------------------------------
# TensorFlow on 2 cores gains little from a second intra-op thread at this model size (measured:
# two 1-thread trainings side by side finish ~2x sooner than the same two one after the other
# with 2 threads), so `--jobs` runs the CV folds and the final model as separate processes.


def init_model_weights(model) -> dict[str, list] | None:
    """The convolutional body's weights by layer name (picklable, for `--init-from` in a worker)."""
    if model is None:
        return None
    return {
        layer.name: layer.get_weights()
        for layer in model.layers
        if layer.name.startswith(BODY_PREFIX) and layer.weights
    }


def fold_start(init_from: str, fold: int, init_bundle, dataset_name: str, params: FrontendParams):
    """What CV fold `fold` starts from with `--init-from`: (body weights, norm) of the init bundle's
    own fold-`fold` model when it kept one (`<init>_cv/fold<k>.weights.h5`, which never heard fold
    k), else None (the init bundle itself), with a warning when that bundle trained on fold k of
    this dataset: the fold's held-out figures are then optimistic."""
    base = cv_dir_for(init_from) / f"fold{fold}"
    if weights_path_for(base).is_file():
        model, bundle = load_float_model(base)
        if model is not None and bundle.frontend == params:
            log(f"CV fold {fold}: starting from {base} (never heard fold {fold})")
            return init_model_weights(model), (bundle.norm_mean, bundle.norm_std)
    data = init_bundle.meta.get("data") or {}
    if data.get("name") == dataset_name and fold in (data.get("folds") or []):
        log(f"CV fold {fold}: warning: --init-from {init_from} trained on this fold and keeps no "
            f"{base.name}.weights.h5 beside it, so this fold's held-out figures are optimistic")  # fmt: skip
    return None


def _rebuild(cfg: TrainConfig, params: FrontendParams, n_classes: int, weights: list):
    model = build_cnn(n_classes, params.frames_for(cfg.window_seconds), params.n_mels, cfg.arch, cfg.dropout)
    model.set_weights(weights)
    return model


@dataclass
class _FoldTask:
    """Train on every fold but `fold`, score it float and int8 (and the MLP baseline)."""

    fold: int
    feats: list
    y: np.ndarray
    folds: np.ndarray
    n_classes: int
    cfg: TrainConfig
    params: FrontendParams
    labels: list[str]
    init_weights: dict | None
    init_norm: tuple[float, float] | None
    baseline: bool
    progress: bool
    cv_dir: Path | None = None  # keep this fold's int8 bundle here as fold<k> (for `evaluate --cv`)
    data: dict | None = None  # the dataset description for the fold bundle's metadata

    def __call__(self):
        k, y, cfg, params = self.fold, self.y, self.cfg, self.params
        feats = _task_feats(self.feats)
        tr = np.where(self.folds != k)[0]
        te = np.where(self.folds == k)[0]
        trf, tef = [feats[i] for i in tr], [feats[i] for i in te]
        log(f"CV fold {k}: train {len(tr)} clips, test {len(te)} clips")
        t0 = time.perf_counter()
        model, norm, hist = train_cnn(trf, y[tr], self.n_classes, cfg, params, val=(tef, y[te]),
                                      init_from=self.init_weights, norm=self.init_norm,
                                      progress=self.progress, log_label=f"CV fold {k}")  # fmt: skip
        train_s = time.perf_counter() - t0
        sf = predict_float(model, tef, norm, params, cfg.window_seconds, cfg.hop_seconds)
        with tempfile.TemporaryDirectory() as tmp:
            base = (self.cv_dir or Path(tmp)) / f"fold{k}"
            trained = sorted({int(f) for f in self.folds[tr]})
            meta = {"cv": {"held_out_fold": k, "trained_on_folds": trained}, "model": {"arch": cfg.arch},
                    "data": {**(self.data or {}), "folds": trained}, "training": cfg.to_dict()}  # fmt: skip
            # Kept float weights let a later `--init-from <this bundle>` start fold k from this fold's
            # model, which never heard fold k.
            bundle, _ = _export(model, trf, y[tr], self.n_classes, norm, params, base, self.labels,
                                meta, cfg, keep_weights=self.cv_dir is not None)  # fmt: skip
            sq = predict_int8(bundle, tef, cfg.hop_seconds, progress=self.progress)
        entry = {
            "fold": k,
            "n_clips": len(te),
            "train_clips": len(tr),
            "train_seconds": train_s,
            "float": metrics(y[te], sf, self.labels),
            "int8": metrics(y[te], sq, self.labels),
            "int8_float_agreement": float(np.mean(sf.argmax(1) == sq.argmax(1))),
        }
        sm = None
        if self.baseline:
            mlp = train_mlp(trf, y[tr], self.n_classes, seed=cfg.seed)
            sm = mlp(tef)
            entry["mlp"] = metrics(y[te], sm, self.labels)
        log(
            f"CV fold {k}: float {100 * entry['float']['accuracy']:.1f}%, int8 {100 * entry['int8']['accuracy']:.1f}%"
            + (f", MLP {100 * entry['mlp']['accuracy']:.1f}%" if "mlp" in entry else "")
            + f" ({train_s / 60:.1f} min)"
        )
        return entry, hist.to_dict(), sf, sq, sm


@dataclass
class _FinalTask:
    """The shipped model: every selected clip, no held-out evaluation."""

    feats: list
    y: np.ndarray
    n_classes: int
    cfg: TrainConfig
    params: FrontendParams
    init_weights: dict | None
    init_norm: tuple[float, float] | None
    progress: bool

    def __call__(self):
        feats = _task_feats(self.feats)
        log(f"final model: {len(feats)} clips, {self.cfg.epochs} epochs")
        t0 = time.perf_counter()
        final_cfg = TrainConfig(**{**self.cfg.__dict__, "eval_every": 0})
        model, norm, hist = train_cnn(feats, self.y, self.n_classes, final_cfg, self.params,
                                      init_from=self.init_weights, norm=self.init_norm,
                                      progress=self.progress, log_label="final model")  # fmt: skip
        final_s = time.perf_counter() - t0
        log(f"final model trained ({final_s / 60:.1f} min)")
        return model.get_weights(), norm, hist, final_s


def cv_dir_for(bundle_base: str | Path) -> Path:
    """Where `soundmon train --cv` keeps the cross-validation folds' int8 bundles."""
    base = Path(bundle_base)
    if base.suffix in (".tflite", ".json"):
        base = base.with_suffix("")
    return base.parent / f"{base.name}_cv"


_WORKER_FEATS: list | None = None  # a worker's copy of the clip features, sent once per worker


def _task_feats(feats: list | None) -> list:
    """A task's features: its own, or (in a worker) the copy the pool's initializer left."""
    if feats is not None:
        return feats
    assert _WORKER_FEATS is not None, "task without features outside a training worker"
    return _WORKER_FEATS


def _exit_with_parent(parent_pid: int, every_s: float = 2.0) -> None:
    """End this worker when the training command is gone (killed, not interrupted): a pool
    worker would otherwise finish its hour-long training for nobody."""
    import threading

    def watch() -> None:
        while os.getppid() == parent_pid:
            time.sleep(every_s)
        os._exit(1)

    threading.Thread(target=watch, name="exit-with-parent", daemon=True).start()


def _worker_init(threads: int, feats: list, parent_pid: int) -> None:
    global _WORKER_FEATS
    from training.train import set_threads

    _exit_with_parent(parent_pid)
    set_threads(threads)
    _WORKER_FEATS = feats


def _run_tasks(fold_tasks: list[_FoldTask], final_task: _FinalTask, jobs: int):
    """Run the CV folds and the final model: one after the other here, or side by side in
    `jobs` processes. Returns (fold results in fold order, final result)."""
    if jobs <= 1:
        return [t() for t in fold_tasks], final_task()
    import multiprocessing as mp
    from concurrent.futures import ProcessPoolExecutor

    threads = max(1, (os.cpu_count() or 1) // jobs)
    # The features (~240 MB for UrbanSound8K folds 1-4) go to each worker once, through the
    # initializer, instead of with every task.
    feats = final_task.feats
    final_task = replace(final_task, feats=None)
    fold_tasks = [replace(t, feats=None) for t in fold_tasks]
    # spawn, not fork: TensorFlow's runtime is not fork-safe
    with ProcessPoolExecutor(jobs, mp_context=mp.get_context("spawn"), initializer=_worker_init,
                             initargs=(threads, feats, os.getpid())) as pool:  # fmt: skip
        # Longest first (the final model, then folds by training-set size): the cores finish
        # together instead of one idling while the other trains the last fold.
        final = pool.submit(final_task)
        sizes = [int(np.sum(t.folds != t.fold)) for t in fold_tasks]
        futures: dict[int, object] = {}
        for i in sorted(range(len(fold_tasks)), key=lambda i: -sizes[i]):
            futures[i] = pool.submit(fold_tasks[i])
        return [futures[i].result() for i in range(len(fold_tasks))], final.result()


def _pooled(parts: list[tuple[np.ndarray, np.ndarray]], labels) -> dict:
    y = np.concatenate([p[0] for p in parts])
    s = np.concatenate([p[1] for p in parts])
    return metrics(y, s, labels)


def run_training(job: TrainJob) -> dict:
    """Optional cross-validation, then the final model on all selected folds; writes the bundle and report."""
    t_start = time.perf_counter()
    ds, cfg = job.dataset, job.cfg
    params = FrontendParams()
    labels = ds.labels
    n_classes = len(labels)
    log(ds.summary())
    for m in ds.missing[:5]:
        log(f"  missing: {m}")
    feats = compute_features(
        ds.clips, params, cfg.window_seconds, job.cache_dir, job.workers, job.progress
    )
    y = ds.y()
    folds = np.array([c.fold for c in ds.clips])

    init_model, init_bundle, init_norm = None, None, None
    if job.init_from:
        init_model, init_bundle = load_float_model(job.init_from)
        if init_model is None:
            raise BundleError(
                f"--init-from {job.init_from}: no float weights ({weights_path_for(job.init_from).name}) next to the bundle"
            )
        if init_bundle.frontend != params:
            raise BundleError(
                f"--init-from {job.init_from}: its front-end differs from this soundmon's"
            )
        init_norm = (init_bundle.norm_mean, init_bundle.norm_std)
        cfg.arch = init_bundle.meta["model"]["arch"]

    report_dir = job.report_dir or job.out.parent
    report_dir.mkdir(parents=True, exist_ok=True)
    stem = job.out.name
    report: dict = {
        "name": stem,
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
        "init_body": reused_body(job.init_from, init_bundle) if init_bundle is not None else None,
        "experiments": job.experiments,
    }
    histories: dict[str, dict] = {}
    # Progress bars only in this process; parallel workers log a line every 10 epochs instead.
    bars = job.progress and (job.jobs <= 1 or not job.cv_folds)
    init_weights = init_model_weights(init_model)
    final_task = _FinalTask(feats, y, n_classes, cfg, params, init_weights, init_norm, bars)

    # -- cross-validation -------------------------------------------------------------------
    if job.cv_folds:
        absent = sorted(set(job.cv_folds) - set(ds.folds))
        if absent:
            raise DatasetError(f"--cv folds {absent} are not in the dataset (folds: {ds.folds})")
        per_fold = []
        parts_f, parts_q, parts_m = [], [], []
        # Each fold's int8 bundle is kept next to the final one (`<out>_cv/fold<k>`), so
        # `soundmon evaluate --cv` re-scores the held-out folds without retraining.
        cv_dir = cv_dir_for(job.out)
        cv_dir.mkdir(parents=True, exist_ok=True)
        for stale in cv_dir.glob("fold*.*"):  # an earlier run's folds must not mix with these
            stale.unlink()
        data_meta = {k: v for k, v in report["data"].items() if k in ("name", "root", "format")}
        starts = {k: fold_start(job.init_from, k, init_bundle, ds.name, params) if job.init_from else None
                  for k in job.cv_folds}  # fmt: skip
        fold_tasks = [
            _FoldTask(k, feats, y, folds, n_classes, cfg, params, labels, *(starts[k] or (init_weights, init_norm)),
                      job.baseline, bars, cv_dir, data_meta)
            for k in job.cv_folds
        ]  # fmt: skip
        results, final = _run_tasks(fold_tasks, final_task, job.jobs)
        for k, (entry, hist, sf, sq, sm) in zip(job.cv_folds, results, strict=True):
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
            summary["mlp_macro_mean"] = float(
                np.mean([e["mlp"]["macro_accuracy"] for e in per_fold])
            )
            summary["mlp_pooled"] = _pooled(parts_m, labels)
        report["cv"] = {
            "folds": list(job.cv_folds),
            "per_fold": per_fold,
            "summary": summary,
            "histories": histories,
        }
        cm_png = report_dir / f"{stem}_confusion.png"
        plot_confusion(np.array(summary["int8_pooled"]["confusion"]), labels, cm_png,
                       f"{stem}: int8, held-out folds {job.cv_folds} pooled "
                       f"(acc {100 * summary['int8_pooled']['accuracy']:.1f}%)")  # fmt: skip
        report["confusion_png"] = str(cm_png)
        lc_png = report_dir / f"{stem}_learning_curve.png"
        plot_learning_curve(histories, lc_png, f"{stem}: leave-one-fold-out learning curves")
        report["learning_curve_png"] = str(lc_png)
        log(
            f"CV mean accuracy: float {100 * summary['float_accuracy_mean']:.1f}%, "
            f"int8 {100 * summary['int8_accuracy_mean']:.1f}%"
            + (f", MLP baseline {100 * summary['mlp_accuracy_mean']:.1f}%" if parts_m else "")
        )

    # -- final model on everything selected -----------------------------------------------------
    if not job.cv_folds:
        final = final_task()
    weights, norm, hist, final_s = final
    model = _rebuild(cfg, params, n_classes, weights)
    report["norm"] = list(norm)
    report["model"] = {
        "arch": cfg.arch,
        "params": int(model.count_params()),
        "macs_per_window": count_macs(model),
    }
    report["cost"] = {
        "train_clips": len(feats),
        "final_train_seconds": final_s,
        "seconds_per_epoch": float(np.median(hist.epoch_seconds)) if hist.epoch_seconds else None,
        "parallel_jobs": job.jobs,
    }
    meta_keys = ("training", "data", "model", "init_from")
    meta = {k: report[k] for k in meta_keys}
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
    bundle, nbytes = _export(
        model, feats, y, n_classes, norm, params, job.out, labels, meta, cfg, keep_weights=True
    )
    report["model"]["tflite_bytes"] = nbytes
    report["latency"] = measure_latency(bundle, job.latency_calls)
    if bundle.stream_tflite_path is not None:
        report["stream"] = measure_stream_latency(bundle, job.latency_calls)
    elif ARCHS.get(cfg.arch, {}).get("time_valid"):  # a streaming body whose export `_export` left out
        report["stream_left_out"] = True
    report["cost"]["total_seconds"] = time.perf_counter() - t_start
    report["cost"]["peak_rss_mb"] = peak_rss_mb()
    if job.jobs > 1:
        report["cost"]["peak_rss_note"] = f"largest single process; up to {job.jobs} train at once"
    # Rewrite the bundle JSON with the measured cost and latency.
    meta["model"] = report["model"]
    meta["latency"] = report["latency"]
    meta["cost"] = report["cost"]
    tflite_path, json_path = bundle_paths(job.out)
    data = json.loads(json_path.read_text())
    data.update({k: v for k, v in meta.items() if k in ("model", "latency", "cost")})
    json_path.write_text(json.dumps(data, indent=2) + "\n")
    load_bundle(job.out)
    if job.recordings:
        report["streaming"] = evaluate_recordings(job.out, job.recordings, train_folds=ds.folds)
        st = report["streaming"]
        data["streaming"] = {k: st[k] for k in ("all", "seen", "unseen", "hop_seconds")}
        json_path.write_text(json.dumps(data, indent=2) + "\n")
        load_bundle(job.out)
    report["bundle"] = {"tflite": str(tflite_path), "json": str(json_path)}
    write_metrics(report_dir / f"{stem}_metrics.json", report)
    write_card(bundle_paths(job.out)[0].with_suffix(".md"), report)
    log(
        f"wrote {tflite_path} ({nbytes / 1024:.0f} KiB), {json_path}, {tflite_path.with_suffix('.md')}; "
        f"{report['model']['params']:,} params, {report['model']['macs_per_window'] / 1e6:.1f} M MAC/window, "
        f"int8 {report['latency']['median_ms']:.3f} ms/window; total {report['cost']['total_seconds'] / 60:.1f} min, "
        f"peak {report['cost']['peak_rss_mb']:.0f} MB"
    )
    return report


def check_labels(dataset: Dataset, bundle, model_path) -> None:
    """A one-line error when the dataset has classes the bundle cannot score."""
    missing_labels = [lab for lab in dataset.labels if lab not in bundle.labels]
    if missing_labels:
        raise DatasetError(
            f"dataset classes {missing_labels} are not labels of {model_path} ({bundle.labels}); "
            "use --classes/--rename to map them"
        )


def evaluate_bundle(
    model_path: str,
    dataset: Dataset,
    out_dir: Path,
    cache_dir: str | None = None,
    workers: int | None = None,
    progress: bool = True,
    hop_seconds: float = 0.5,
) -> dict:
    """Int8 (ModelRunner) and, if `<model>.weights.h5` exists, float scores of a bundle on a dataset."""
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


def command_line(argv: list[str], prog: str) -> str:
    return " ".join([prog] + [shlex.quote(a) for a in argv])
