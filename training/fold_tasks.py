"""One training each, picklable for `training.worker_pool`: a CV fold (train on the other folds,
export, score the held-out fold float and int8, and the MLP baseline) and the final model.

Imported at the start of a training process with everything it needs (see `training.train_job`).
"""

from __future__ import annotations

import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from monitor.frontend import FrontendParams
from training.bundle_export import export_bundle
from training.bundle_files import cv_dir_for, weights_path_for
from training.console import log
from training.evaluation.clip_accuracy import metrics, predict_int8
from training.float_model import load_float_model
from training.models import BODY_PREFIX, build_cnn
from training.train import TrainConfig, predict_float, train_cnn, train_mlp
from training.worker_pool import task_feats

__all__ = ["FinalTask", "FoldTask", "fold_start", "init_model_weights", "rebuild_model"]


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


def rebuild_model(cfg: TrainConfig, params: FrontendParams, n_classes: int, weights: list):
    """The CNN of `cfg` with the given weights (the final model, trained in a worker)."""
    model = build_cnn(n_classes, params.frames_for(cfg.window_seconds), params.n_mels, cfg.arch, cfg.dropout)
    model.set_weights(weights)
    return model


@dataclass
class FoldTask:
    """Train on every fold but `fold`, score it float and int8 (and the MLP baseline).

    A picklable call, so each fold can run in its own worker process. Fields: `feats` (cached
    clip features, as `task_feats` takes them), `y` (class indices) and `folds` (fold numbers),
    one per clip; `n_classes`, `labels`; `cfg`, the training recipe; `params`, the front-end;
    `init_weights` and `init_norm`, where `--init-from` starts it (`fold_start`; None: from
    scratch and the data's own normalisation); `baseline`, also train the MLP; `progress`, show
    progress. Calling it returns (the fold's report entry, its training history as a dict, the
    float, int8 and MLP (None without `baseline`) scores of the held-out clips).
    """

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
        feats = task_feats(self.feats)
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
            bundle, _ = export_bundle(model, trf, y[tr], self.n_classes, norm, params, base, self.labels,
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
class FinalTask:
    """The shipped model: every selected clip, no held-out evaluation.

    Fields as `FoldTask`'s. Calling it returns (the model's weights, its normalisation (mean,
    std), its `History`, training seconds); the parent rebuilds the model (`rebuild_model`).
    """

    feats: list
    y: np.ndarray
    n_classes: int
    cfg: TrainConfig
    params: FrontendParams
    init_weights: dict | None
    init_norm: tuple[float, float] | None
    progress: bool

    def __call__(self):
        feats = task_feats(self.feats)
        log(f"final model: {len(feats)} clips, {self.cfg.epochs} epochs")
        t0 = time.perf_counter()
        final_cfg = TrainConfig(**{**self.cfg.__dict__, "eval_every": 0})
        model, norm, hist = train_cnn(feats, self.y, self.n_classes, final_cfg, self.params,
                                      init_from=self.init_weights, norm=self.init_norm,
                                      progress=self.progress, log_label="final model")  # fmt: skip
        final_s = time.perf_counter() - t0
        log(f"final model trained ({final_s / 60:.1f} min)")
        return model.get_weights(), norm, hist, final_s
