"""Training loops: the CNN (on augmented log-mel windows) and the MFCC-statistics MLP baseline."""

from __future__ import annotations

import math
import os
import sys
import time
from dataclasses import asdict, dataclass, field

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402
from tqdm import tqdm  # noqa: E402

from training.augment import AugmentConfig, Augmenter  # noqa: E402
from training.features import ClipFeatures, clip_windows  # noqa: E402
from training.models import build_cnn, build_mlp, mfcc_stats, transfer_body  # noqa: E402

__all__ = [
    "History",
    "TrainConfig",
    "norm_stats",
    "predict_float",
    "set_threads",
    "train_cnn",
    "train_mlp",
]


def set_threads(n: int | None) -> None:
    import tensorflow as tf

    if n:
        try:
            tf.config.threading.set_intra_op_parallelism_threads(n)
            tf.config.threading.set_inter_op_parallelism_threads(max(1, min(2, n)))
        except RuntimeError:  # already initialised
            pass


@dataclass
class TrainConfig:
    """The CNN recipe of one `soundmon train` run (recorded in the bundle: `to_dict`).

    `arch` names the body (`training.models`); `lr` is the peak learning rate after
    `warmup_epochs`; `window_seconds` and `hop_seconds` are the model's window and the
    evaluation's window hop; the rest as commented.
    """

    arch: str = "cnn_spn_s23t1"  # the shipped body; `training.cli.DEFAULT_ARCH` names it too
    epochs: int = 60
    batch_size: int = 32
    lr: float = 3e-3
    weight_decay: float = 1e-2  # AdamW (decoupled)
    warmup_epochs: int = 2
    label_smoothing: float = 0.05
    dropout: float = 0.3
    seed: int = 0
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    window_seconds: float = 4.0
    hop_seconds: float = 0.5
    eval_every: int = 5  # epochs between learning-curve points (0: never)
    freeze_body_epochs: int = 0  # fine-tuning: train only the head for this many epochs first
    ema: float = 0.998  # momentum of the weight average the model ends with (0: last weights)
    # Detector calibration written into every bundle of the run (its JSON's "detection":
    # {"class_smoothing_windows": ...}): label -> windows averaged, where it is not the config's N
    class_smoothing: dict[str, int] = field(default_factory=dict)

    def to_dict(self) -> dict:
        """Every field as plain values, `augment` as its own dict."""
        d = asdict(self)
        d["augment"] = self.augment.to_dict()
        return d


@dataclass
class History:
    """The learning curve of one training: per epoch its number, training loss and seconds; per
    evaluation point (every `eval_every` epochs and the last) its epoch and the validation
    accuracy and macro accuracy (mean of per-class accuracies; empty without a validation set)."""

    epochs: list[int] = field(default_factory=list)
    train_loss: list[float] = field(default_factory=list)
    val_epochs: list[int] = field(default_factory=list)
    val_acc: list[float] = field(default_factory=list)
    val_macro: list[float] = field(default_factory=list)
    epoch_seconds: list[float] = field(default_factory=list)

    def to_dict(self) -> dict:
        """The lists as a plain dict (for reports)."""
        return asdict(self)


def norm_stats(feats: list[ClipFeatures]) -> tuple[float, float]:
    """Mean and std (dB) over the real frames of the training clips."""
    total, total_sq, n = 0.0, 0.0, 0
    for f in feats:
        x = f.logmel[: max(f.n_valid, 1)].astype(np.float64)
        total += x.sum()
        total_sq += np.square(x).sum()
        n += x.size
    mean = total / n
    std = math.sqrt(max(total_sq / n - mean * mean, 1e-6))
    return float(mean), float(std)


class _Batches(keras.utils.PyDataset):
    """Augmented batches; each batch has its own RNG seeded by (seed, epoch, index): reproducible."""

    def __init__(self, feats, labels, n_classes, cfg: TrainConfig, norm, floor, window_frames):
        # Two threads prepare batches while TensorFlow trains (numpy releases the GIL).
        super().__init__(workers=2, use_multiprocessing=False, max_queue_size=6)
        self.feats, self.labels, self.cfg = feats, labels, cfg
        self.aug_args = (cfg.augment, window_frames, n_classes, norm[0], norm[1], floor)
        self.epoch = 0
        self._order()

    def _order(self):
        rng = np.random.default_rng([self.cfg.seed, self.epoch, 7])
        self.perm = rng.permutation(len(self.feats))

    def __len__(self):
        return max(1, len(self.feats) // self.cfg.batch_size)

    def __getitem__(self, i):
        bs = self.cfg.batch_size
        idx = self.perm[i * bs : (i + 1) * bs]
        if len(idx) == 0:
            idx = self.perm[:bs]
        aug = Augmenter(*self.aug_args, seed=[self.cfg.seed, self.epoch, int(i)])
        return aug.batch(self.feats, self.labels, idx)

    def on_epoch_end(self):
        self.epoch += 1
        self._order()


class _Curve(keras.callbacks.Callback):
    def __init__(
        self, history: History, every: int, evaluate, total: int, progress: bool, label: str | None
    ):
        super().__init__()
        self.h, self.every, self.evaluate, self.total = history, every, evaluate, total
        self.label = label if not progress else None  # no bar: one log line every 10 epochs
        self.t0 = 0.0
        self.bar = tqdm(total=total, desc="epochs", unit="epoch", disable=not progress)

    def on_epoch_begin(self, epoch, logs=None):
        self.t0 = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        self.h.epoch_seconds.append(time.perf_counter() - self.t0)
        self.h.epochs.append(epoch + 1)
        self.h.train_loss.append(float((logs or {}).get("loss", float("nan"))))
        post = {"loss": f"{self.h.train_loss[-1]:.3f}"}
        if (
            self.evaluate
            and self.every
            and ((epoch + 1) % self.every == 0 or epoch + 1 == self.total)
        ):
            acc, macro = self.evaluate(self.model)
            self.h.val_epochs.append(epoch + 1)
            self.h.val_acc.append(acc)
            self.h.val_macro.append(macro)
            post["val_acc"] = f"{acc:.3f}"
        self.bar.set_postfix(post)
        self.bar.update()
        if self.label and ((epoch + 1) % 10 == 0 or epoch + 1 == self.total):
            shown = ", ".join(f"{k} {v}" for k, v in post.items())
            print(f"{self.label}: epoch {epoch + 1}/{self.total}, {shown}", file=sys.stderr, flush=True)

    def on_train_end(self, logs=None):
        self.bar.close()


EMA_HORIZON_SHARE = 0.2
"""The weight average may reach back at most this share of a training phase's steps."""


def ema_momentum(target: float, steps: int) -> float:
    """Momentum of the weight average for a phase of `steps` optimiser steps.

    Keras's average has no warm-up: it starts at the first step's weights and forgets them with
    `momentum ** step`. At 0.998 its horizon (1 / (1 - momentum)) is 500 steps, fine for the
    shipped recipe's 2,700-4,400 steps (returned unchanged) but longer than a small set's whole
    training (ESC-10's 80 clips per fold: 2 batches x 150 epochs kept mostly the untrained start,
    near-chance accuracy), so a shorter phase gets a horizon of `EMA_HORIZON_SHARE` of its steps."""
    if target <= 0:
        return 0.0
    return min(target, max(0.0, 1.0 - 1.0 / (EMA_HORIZON_SHARE * max(1, steps))))


def _schedule(cfg: TrainConfig, steps_per_epoch: int, epochs: int, lr: float):
    total = max(1, epochs * steps_per_epoch)
    warm = min(total - 1, cfg.warmup_epochs * steps_per_epoch)
    return keras.optimizers.schedules.CosineDecay(
        initial_learning_rate=lr * 0.1 if warm else lr,
        decay_steps=max(1, total - warm),
        alpha=0.01,
        warmup_target=lr if warm else None,
        warmup_steps=warm,
    )


def predict_float(
    model: keras.Model,
    feats: list[ClipFeatures],
    norm: tuple[float, float],
    params,
    window_seconds=4.0,
    hop_seconds=0.5,
) -> np.ndarray:
    """Clip scores of the float model: mean over the clip's windows (the daemon's file rule)."""
    wins, owner = [], []
    for i, f in enumerate(feats):
        w = clip_windows(f, params, window_seconds, hop_seconds)
        wins.append(w)
        owner.extend([i] * len(w))
    x = (np.concatenate(wins) - norm[0]) / norm[1]
    probs = model.predict(x[..., None], batch_size=64, verbose=0)
    owner = np.asarray(owner)
    out = np.zeros((len(feats), probs.shape[1]), dtype=np.float32)
    np.add.at(out, owner, probs)
    out /= np.bincount(owner, minlength=len(feats))[:, None]
    return out


def _accs(y_true: np.ndarray, pred: np.ndarray, n_classes: int) -> tuple[float, float]:
    acc = float(np.mean(y_true == pred))
    per = [np.mean(pred[y_true == c] == c) for c in range(n_classes) if np.any(y_true == c)]
    return acc, float(np.mean(per))


def train_cnn(
    feats: list[ClipFeatures],
    labels: np.ndarray,
    n_classes: int,
    cfg: TrainConfig,
    params,
    val: tuple[list[ClipFeatures], np.ndarray] | None = None,
    init_from: keras.Model | dict | None = None,
    norm: tuple[float, float] | None = None,
    progress: bool = True,
    log_label: str | None = None,
) -> tuple[keras.Model, tuple[float, float], History]:
    """Train the CNN; returns (model, (norm mean, norm std), history)."""
    keras.utils.set_random_seed(cfg.seed)
    norm = norm or norm_stats(feats)
    window_frames = params.frames_for(cfg.window_seconds)
    from training.features import floor_db

    data = _Batches(feats, labels, n_classes, cfg, norm, floor_db(params), window_frames)
    model = build_cnn(n_classes, window_frames, params.n_mels, cfg.arch, cfg.dropout)
    if init_from is not None:
        transfer_body(init_from, model)
    history = History()
    evaluate = None
    if val is not None and cfg.eval_every:
        vfeats, vy = val

        def evaluate(m):
            p = predict_float(m, vfeats, norm, params, cfg.window_seconds, cfg.hop_seconds).argmax(
                1
            )
            return _accs(vy, p, n_classes)

    loss = keras.losses.CategoricalCrossentropy(label_smoothing=cfg.label_smoothing)
    phases = []
    if init_from is not None and cfg.freeze_body_epochs:
        phases.append((min(cfg.freeze_body_epochs, cfg.epochs), True))
    if cfg.epochs - sum(p[0] for p in phases) > 0:
        phases.append((cfg.epochs - sum(p[0] for p in phases), False))
    done = 0
    curve = _Curve(history, cfg.eval_every, evaluate, cfg.epochs, progress, log_label)
    for n_epochs, frozen in phases:
        for layer in model.layers:
            if layer.name.startswith("body_"):
                layer.trainable = not frozen
        lr = cfg.lr if not (init_from is not None and not frozen and phases[0][1]) else cfg.lr * 0.3
        # An exponential moving average of the weights (swapped in by fit() at the end) damps
        # the epoch-to-epoch swing of held-out accuracy that single checkpoints show.
        momentum = ema_momentum(cfg.ema, len(data) * n_epochs)
        opt = keras.optimizers.AdamW(
            _schedule(cfg, len(data), n_epochs, lr),
            weight_decay=cfg.weight_decay,
            use_ema=momentum > 0,
            ema_momentum=momentum or 0.99,
        )
        model.compile(optimizer=opt, loss=loss)
        model.fit(
            data,
            epochs=done + n_epochs,
            initial_epoch=done,
            verbose=0,
            callbacks=[curve],
            shuffle=False,
        )
        done += n_epochs
    for layer in model.layers:
        layer.trainable = True
    return model, norm, history


def train_mlp(
    feats: list[ClipFeatures],
    labels: np.ndarray,
    n_classes: int,
    epochs: int = 150,
    seed: int = 0,
    hidden: int = 256,
):
    """The MFCC-statistics baseline; returns a predict(feats) -> probabilities function."""
    keras.utils.set_random_seed(seed)
    x = np.stack([mfcc_stats(f.logmel[: max(f.n_valid, 1)]) for f in feats])
    mu, sd = x.mean(0), x.std(0) + 1e-6
    model = build_mlp(x.shape[1], n_classes, hidden)
    model.compile(
        optimizer=keras.optimizers.Adam(1e-3),
        loss=keras.losses.CategoricalCrossentropy(label_smoothing=0.05),
    )
    y = keras.utils.to_categorical(labels, n_classes)
    model.fit((x - mu) / sd, y, epochs=epochs, batch_size=64, verbose=0, shuffle=True)

    def predict(test_feats: list[ClipFeatures]) -> np.ndarray:
        xt = np.stack([mfcc_stats(f.logmel[: max(f.n_valid, 1)]) for f in test_feats])
        return model.predict((xt - mu) / sd, batch_size=256, verbose=0)

    predict.model = model  # type: ignore[attr-defined]
    return predict
