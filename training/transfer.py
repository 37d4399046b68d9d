"""Transfer learning: `soundmon train --backbone yamnet` trains a head on YAMNet's 1024-d embedding.

The fast path from a folder of a few dozen clips per class to a running daemon. The network is
YAMNet (rebuilt in Keras from the TF Hub export, `training.yamnet`) fed by our own front-end
with `YAMNET_FRONTEND` (0.975 s window = 96 frames x 64 bands), plus a small head (dropout,
dense `head_hidden` ReLU, dropout, dense softmax) on its global-average-pooled embedding. The
exported bundle is the whole network (backbone + head), full-integer int8, on YAMNet-variant
windows: the daemon runs it as a window model with the yamnet front-end, a window every hop.

Training, head only (the backbone frozen): every clip's windows as the daemon cuts them
(`monitor.windows.file_windows`: padded at the end to one window, a window every 0.5 s) go
through the float backbone once; windows the daemon's level gate would skip
(`detection.min_level_dbfs`, -70 dBFS: the digital silence ESC-50 pads with) are left out.
Augmentation happens before the backbone, so it is cached as `aug_copies` augmented windows per
clip, made by `training.augment.Augmenter` (the CNN recipe's placement, onset, gain, mixing,
noise floor, stretch, pitch; no SpecAugment masks) on the log-mel converted to dB and back;
mixing partners come from the clip's own fold, so no held-out clip leaks into a CV fold's
training. The head then trains on the cached embeddings in seconds.

`fine_tune_layers` N > 0 then unfreezes YAMNet's top N layers (of 14: layer14 is the last) and
trains them with the head end to end, augmentation on the fly (plain and augmented windows).

A clip's score is the mean (or the max, `clip_score`) over its un-gated windows' scores, as
`soundmon classify` takes the mean of the windows the gate lets through; "auto" picks the
better of the two by the pooled CV int8 accuracy and records it in the bundle's placement.
"""

from __future__ import annotations

import hashlib
import json
import multiprocessing as mp
import os
import time
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

# Imported at the start (see training/train_job.py): an edit during a long run cannot break its export.
import numpy as np  # noqa: E402
from tqdm import tqdm  # noqa: E402

from monitor.bundle import bundle_paths, load_bundle  # noqa: E402
from monitor.errors import BundleError  # noqa: E402
from monitor.frontend import YAMNET_FRONTEND, LogMelFrontend, frame_count  # noqa: E402
from monitor.runner import ModelRunner  # noqa: E402
from monitor.windows import hop_frames_for, pad_to_window  # noqa: E402
from training.augment import AugmentConfig, Augmenter  # noqa: E402
from training.bundle_files import cv_dir_for  # noqa: E402
from training.datasets import Clip, Dataset, DatasetError, load_audio  # noqa: E402
from training.evaluation.clip_accuracy import metrics  # noqa: E402
from training.evaluation.latency import measure_latency  # noqa: E402
from training.evaluation.reports import per_class_table, plot_confusion, write_metrics  # noqa: E402
from training.export import PLACEMENT, int8_tflite, write_bundle  # noqa: E402
from training.features import ClipFeatures, cache_key, default_cache_dir  # noqa: E402
from training.yamnet import PATCH_FRAMES, read_weights  # noqa: E402

__all__ = [
    "BACKBONES",
    "TransferConfig",
    "TransferJob",
    "build_full_model",
    "default_backbone_weights",
    "run_transfer",
    "yamnet_features",
]

BACKBONES = ("yamnet",)
WINDOW_SECONDS = 0.975  # YAMNet's input: 96 frames of 400 samples at a 160-sample hop
N_LAYERS = 14  # YAMNet's layers: layer1 (full conv), layer2..14 (depthwise + pointwise)
GATE_DBFS = -70.0  # the daemon's default detection.min_level_dbfs
DB_FLOOR = -200.0  # the dB value the ln -> dB conversion gives digital silence
HEAD_PREFIX = "head_"
FEATURES_VERSION = 1


def default_backbone_weights() -> Path | None:
    """YAMNet's TF Hub TFLite export: $SOUNDMON_YAMNET, else ../shared/models/yamnet.tflite beside
    the checkout, else models/yamnet.tflite; None when none exists."""
    env = os.environ.get("SOUNDMON_YAMNET")
    repo = Path(__file__).resolve().parents[1]
    for cand in ([Path(env)] if env else []) + [repo.parent / "shared" / "models" / "yamnet.tflite",
                                                 repo / "models" / "yamnet.tflite"]:  # fmt: skip
        if cand.is_file():
            return cand
    return None


@dataclass
class TransferConfig:
    """The transfer recipe of one `soundmon train --backbone` run (recorded in the bundle:
    `to_dict`); see the module docstring for what each stage does. `lr`, `weight_decay`,
    `label_smoothing`, `epochs` and `batch_size` are the head's training; `gate_dbfs`, the level
    below which a window is left out (the daemon's gate); the rest as commented.
    """

    backbone: str = "yamnet"
    weights_path: str = ""  # the YAMNet TFLite export the backbone's weights come from
    # 0: a linear softmax head (the default: on UrbanSound8K CV folds 1-3 it beat a 256-unit hidden
    # layer on every fold, 68.7 % against 65.8 % int8, and trains 3x faster)
    head_hidden: int = 0
    dropout: float = 0.3
    epochs: int = 60  # head epochs over the cached embeddings
    batch_size: int = 64
    lr: float = 1e-3
    weight_decay: float = 1e-4
    label_smoothing: float = 0.05
    seed: int = 0
    augment: AugmentConfig = field(
        default_factory=lambda: AugmentConfig().with_(time_masks=0, freq_masks=0)
    )
    aug_copies: int = 4  # cached augmented windows per clip (head-only training)
    fine_tune_layers: int = 0  # YAMNet layers unfrozen from the top (0: head only)
    fine_tune_epochs: int = 4
    fine_tune_lr: float = 1e-4
    hop_seconds: float = 0.5  # the daemon's default hop: windows of a clip
    gate_dbfs: float = GATE_DBFS
    clip_score: str = "auto"  # "mean", "max" or "auto" (chosen by CV)
    window_seconds: float = WINDOW_SECONDS

    def to_dict(self) -> dict:
        """Every field as plain values, `augment` as its own dict."""
        d = asdict(self)
        d["augment"] = self.augment.to_dict()
        return d


# -- features: YAMNet-variant log-mel and per-frame energy, cached --------------------------------


@dataclass
class YamClip:
    """One clip's cached YAMNet-variant features: what the head's windows and the level gate are
    cut from. `hop` below is in frames."""

    logmel: np.ndarray  # (frames >= 96, 64) ln-mel of the clip padded at its end to one window
    energy: np.ndarray  # (frames,) mean square of each frame's samples (the daemon's level gate)
    n_valid: int  # frames wholly inside the real audio
    duration: float

    def window_starts(self, hop: int) -> np.ndarray:
        """The first frame of each 96-frame window, every `hop` frames."""
        return np.arange(0, len(self.logmel) - PATCH_FRAMES + 1, hop)

    def windows(self, hop: int) -> np.ndarray:
        """The windows, (n_windows, 96, 64) ln-mel."""
        return np.stack([self.logmel[s : s + PATCH_FRAMES] for s in self.window_starts(hop)])

    def levels(self, hop: int) -> np.ndarray:
        """Each window's level in dBFS, as `monitor.pipeline` computes it from its frames."""
        ms = np.array(
            [
                np.mean(self.energy[s : s + PATCH_FRAMES], dtype=np.float64)
                for s in self.window_starts(hop)
            ]
        )
        return np.where(ms > 1e-20, 10.0 * np.log10(np.maximum(ms, 1e-30)), -200.0)


def _yam_cache_file(cache: Path, path: Path) -> Path:
    key = hashlib.sha1(
        f"yamclip{FEATURES_VERSION}:{cache_key(path, YAMNET_FRONTEND, WINDOW_SECONDS)}".encode()
    ).hexdigest()
    return cache / "yamnet" / key[:2] / f"{key}.npy"


def _yam_compute(path: Path) -> YamClip:
    p = YAMNET_FRONTEND
    audio = load_audio(path, p.sample_rate)
    padded = pad_to_window(audio, WINDOW_SECONDS, p.sample_rate)
    fe = LogMelFrontend(p)
    return YamClip(fe(padded).astype(np.float32), fe.frame_energy(padded).astype(np.float32),
                   int(frame_count(len(audio), p)), len(audio) / p.sample_rate)  # fmt: skip


def _yam_load(file: Path) -> YamClip | None:
    try:
        arr = np.load(file, allow_pickle=False)
    except (OSError, ValueError, EOFError):
        return None
    if arr.ndim != 2 or arr.shape[1] != YAMNET_FRONTEND.n_mels + 1 or len(arr) < 2:
        return None
    return YamClip(arr[:-1, :-1], arr[:-1, -1].copy(), int(arr[-1, 0]), float(arr[-1, 1]))


def _yam_store(file: Path, c: YamClip) -> None:
    file.parent.mkdir(parents=True, exist_ok=True)
    body = np.concatenate([c.logmel, c.energy[:, None]], axis=1).astype(np.float32)
    trailer = np.zeros((1, body.shape[1]), dtype=np.float32)
    trailer[0, 0], trailer[0, 1] = c.n_valid, c.duration
    tmp = file.with_name(f"{file.stem}.{os.getpid()}.tmp.npy")
    np.save(tmp, np.concatenate([body, trailer]))
    os.replace(tmp, file)


def _yam_worker(job: tuple[str, str]) -> tuple[str, YamClip | str]:
    path, out = job
    try:
        clip = _yam_compute(Path(path))
    except Exception as exc:  # reported by the parent with the file name
        return path, f"{type(exc).__name__}: {exc}"
    _yam_store(Path(out), clip)
    return path, clip


def yamnet_features(
    clips: list[Clip], cache_dir=None, workers: int | None = None, progress: bool = True
) -> list[YamClip]:
    """YAMNet-variant log-mel and frame energies of every clip, in order (cached on disk)."""
    cache = Path(cache_dir) if cache_dir else default_cache_dir()
    out: list[YamClip | None] = [None] * len(clips)
    todo = []
    for i, clip in enumerate(clips):
        file = _yam_cache_file(cache, clip.path)
        hit = _yam_load(file)
        if hit is not None:
            out[i] = hit
        else:
            todo.append((i, str(clip.path), str(file)))
    if todo:
        index = {path: i for i, path, _ in todo}
        jobs = [(path, file) for _, path, file in todo]
        workers = max(1, min(workers or os.cpu_count() or 1, len(jobs)))
        errors = []
        bar = tqdm(total=len(jobs), desc="yamnet log-mel", unit="clip", disable=not progress)
        if workers == 1:
            results = map(_yam_worker, jobs)
        else:
            pool = mp.get_context("spawn").Pool(workers)
            results = pool.imap_unordered(_yam_worker, jobs, chunksize=8)
        for path, res in results:
            if isinstance(res, str):
                errors.append(f"{path}: {res}")
            else:
                out[index[path]] = res
            bar.update()
        bar.close()
        if workers > 1:
            pool.close()
            pool.join()
        if errors:
            from monitor.errors import AudioFileError

            raise AudioFileError(f"{len(errors)} file(s) could not be read; first: {errors[0]}")
    return out  # type: ignore[return-value]


# -- augmentation in the ln-mel domain, through the dB Augmenter ----------------------------------


def ln_to_db(x: np.ndarray) -> np.ndarray:
    """ln(mel magnitude + 0.001) -> 20 log10(mel magnitude) (power dB), digital silence at DB_FLOOR."""
    mag = np.exp(x.astype(np.float64)) - YAMNET_FRONTEND.log_offset
    return (20.0 * np.log10(np.maximum(mag, 10 ** (DB_FLOOR / 20)))).astype(np.float32)


def db_to_ln(x: np.ndarray) -> np.ndarray:
    return np.log(10.0 ** (x.astype(np.float64) / 20.0) + YAMNET_FRONTEND.log_offset).astype(
        np.float32
    )


def augmented_windows(feats: list[YamClip], y: np.ndarray, folds: np.ndarray, n_classes: int,
                      cfg: TransferConfig, copies: int, seed) -> tuple[np.ndarray, np.ndarray, np.ndarray]:  # fmt: skip
    """`copies` augmented windows per clip: (ln windows (N, 96, 64), soft labels (N, C), clip index (N,)).
    Mixing partners come from the clip's own fold."""
    if copies <= 0 or not cfg.augment.enabled:
        return (
            np.zeros((0, PATCH_FRAMES, 64), np.float32),
            np.zeros((0, n_classes), np.float32),
            np.zeros(0, int),
        )
    db = [ClipFeatures(ln_to_db(f.logmel), f.n_valid, f.duration) for f in feats]
    xs, ys, owners = [], [], []
    for k in sorted(set(int(f) for f in folds)):
        members = np.where(folds == k)[0]
        sub = [db[i] for i in members]
        aug = Augmenter(
            cfg.augment,
            PATCH_FRAMES,
            n_classes,
            0.0,
            1.0,
            DB_FLOOR,
            seed=[cfg.seed, int(k), 11, *seed],
        )
        idx = np.repeat(np.arange(len(members)), copies)
        x, yy = aug.batch(sub, y[members], idx)
        xs.append(db_to_ln(x[..., 0]))
        ys.append(yy)
        owners.append(members[idx])
    return np.concatenate(xs), np.concatenate(ys), np.concatenate(owners)


# -- the network --------------------------------------------------------------------------------


def _keras():
    import keras

    return keras


def build_head(n_classes: int, hidden: int, dropout: float, embedding: int = 1024):
    keras = _keras()
    L = keras.layers
    inp = keras.Input(shape=(embedding,), name=f"{HEAD_PREFIX}input")
    x = L.Dropout(dropout, name=f"{HEAD_PREFIX}dropout0")(inp)
    if hidden:
        x = L.Dense(hidden, activation="relu", name=f"{HEAD_PREFIX}hidden")(x)
        x = L.Dropout(dropout, name=f"{HEAD_PREFIX}dropout1")(x)
    out = L.Dense(n_classes, activation="softmax", name=f"{HEAD_PREFIX}out")(x)
    return keras.Model(inp, out, name="head")


def build_backbone(weights_path: str | Path):
    """Float YAMNet up to its 1024-d embedding: (batch, 96, 64) ln-mel -> (batch, 1024)."""
    from training.yamnet import build_yamnet

    keras = _keras()
    yam = build_yamnet(read_weights(weights_path), with_embedding=True)
    return keras.Model(yam.input, yam.get_layer("embedding").output, name="yamnet_embedding")


def build_full_model(backbone, head):
    """One Keras model: ln-mel window -> backbone -> head softmax (what the bundle's int8 runs)."""
    keras = _keras()
    return keras.Model(backbone.input, head(backbone.output), name="yamnet_head")


def full_model_from_meta(n_classes: int, meta: dict, weights_path: str | Path | None = None):
    """The float model of a `--backbone yamnet` bundle (for `soundmon evaluate`'s float column)."""
    t = meta.get("training") or {}
    src = weights_path or t.get("weights_path") or default_backbone_weights()
    if not src or not Path(src).is_file():
        raise BundleError(
            "the float model of a yamnet bundle needs YAMNet's yamnet.tflite (set SOUNDMON_YAMNET)"
        )
    return build_full_model(build_backbone(src), build_head(n_classes, int(t.get("head_hidden", 0)),
                                                            float(t.get("dropout", 0.3))))  # fmt: skip


def _set_trainable(full, top_layers: int) -> None:
    """Freeze the backbone but its top `top_layers` layers (layer15-N .. layer14); the head trains."""
    first = N_LAYERS - top_layers + 1
    for layer in full.layers:
        name = layer.name
        if name.startswith("layer"):
            num = int(name[5:].split("_")[0])
            layer.trainable = num >= first and top_layers > 0
        elif name == "head":
            layer.trainable = True
        else:
            layer.trainable = False


def _optimizer(lr: float, wd: float, steps: int):
    keras = _keras()
    sched = keras.optimizers.schedules.CosineDecay(lr, decay_steps=max(1, steps), alpha=0.05)
    return keras.optimizers.AdamW(sched, weight_decay=wd)


def activation_layers() -> list[str]:
    """YAMNet's layers in order, each followed by a ReLU: layer1_conv, layer2_depthwise, layer2_pointwise, ..."""
    return ["layer1_conv"] + [
        f"layer{i}_{kind}" for i in range(2, N_LAYERS + 1) for kind in ("depthwise", "pointwise")
    ]


def equalise_backbone(
    backbone, cal: np.ndarray, alpha_dw: float = 0.5, alpha_pw: float = 1.0, clamp: float = 64.0
):
    """The same float function with its channels rescaled so that per-tensor int8 activations lose less.

    ReLU(s z) = s ReLU(z) for s > 0, so multiplying output channel c of a layer (kernel and bias) by
    t_c and dividing the next layer's input channel c by t_c changes nothing in float. With t_c =
    (largest channel range / channel c's range) ** alpha, measured on `cal`, every channel uses
    more of the one int8 scale its tensor gets. After a pointwise layer the next (depthwise) layer
    absorbs 1/t_c in its per-channel weight scale for free (alpha 1); after a depthwise layer the
    pointwise weights of channel c shrink by t_c within one per-output-channel scale, so alpha 0.5
    is the compromise (data-free cross-layer equalisation's square root). The embedding is left
    unscaled. Measured on ESC-10 windows, the int8 embedding's error (median ||e_int8 - e|| / ||e||)
    is 1.39 without this and 0.34 with it; weights alone in int8 give 0.06."""
    keras = _keras()
    names = activation_layers()
    probe = keras.Model(backbone.input, [backbone.get_layer(n).output for n in names])
    ranges = None
    for s in range(0, len(cal), 64):  # called, not predict(): no retracing per new probe model
        outs = [o.numpy() for o in probe(cal[s : s + 64], training=False)]
        batch = [o.reshape(-1, o.shape[-1]).max(axis=0) for o in outs]
        ranges = (
            batch
            if ranges is None
            else [np.maximum(a, b) for a, b in zip(ranges, batch, strict=True)]
        )
    clone = keras.Model.from_config(backbone.get_config())
    clone.set_weights(backbone.get_weights())
    prev = None
    for j, name in enumerate(names):
        layer = clone.get_layer(name)
        kernel, bias = layer.get_weights()
        r = ranges[j]
        if j == len(names) - 1:
            t = np.ones_like(r)
        else:
            alpha = alpha_dw if "depthwise" in name else alpha_pw
            t = np.where(r > 1e-6, (r.max() / np.maximum(r, 1e-6)) ** alpha, 1.0)
            t = np.clip(t, 1.0 / clamp, clamp)
        if "depthwise" in name:  # (3, 3, C, 1): input channel = output channel
            kernel = kernel * (t / (prev if prev is not None else 1.0))[None, None, :, None]
        else:  # (kh, kw, Cin, Cout)
            if prev is not None:
                kernel = kernel / prev[None, None, :, None]
            kernel = kernel * t[None, None, None, :]
        layer.set_weights([kernel.astype(np.float32), (bias * t).astype(np.float32)])
        prev = t
    return clone


def _calibration(rep: np.ndarray):
    def gen():
        for x in rep:
            yield [x[None]]

    return gen


class Int8Embedder:
    """The int8 backbone (converted with the calibration windows the bundle's export uses, so its
    quantisation is the bundle's) run as the daemon's runner runs a model: the head is trained on
    the embeddings the deployed network computes, not on the float ones.

    Parameters: `tflite`, the int8 backbone's flatbuffer; `threads`, the interpreter's.
    Calling it with (n, 96, 64) windows returns their (n, embedding size) float32 embeddings.
    """

    def __init__(self, tflite: bytes, threads: int = 1) -> None:
        from monitor.interpreter import load_interpreter_class, quiet_native_stderr

        cls, _ = load_interpreter_class()
        with quiet_native_stderr():
            self.interp = cls(model_content=tflite, num_threads=threads)
            self.interp.allocate_tensors()
        self.inp, self.out = self.interp.get_input_details()[0], self.interp.get_output_details()[0]
        self.si, self.zi = self.inp["quantization"]
        self.so, self.zo = self.out["quantization"]

    def __call__(self, windows: np.ndarray, progress: bool = False) -> np.ndarray:
        out = np.empty((len(windows), int(self.out["shape"][-1])), np.float32)
        for i in tqdm(
            range(len(windows)), desc="int8 embeddings", unit="window", disable=not progress
        ):
            q = np.clip(np.rint(windows[i] / self.si + self.zi), -128, 127).astype(np.int8)
            self.interp.set_tensor(self.inp["index"], q[None])
            self.interp.invoke()
            out[i] = (
                self.interp.get_tensor(self.out["index"])[0].astype(np.float32) - self.zo
            ) * self.so
        return out


def int8_embeddings(
    backbone, rep: np.ndarray, windows: np.ndarray, progress: bool = False
) -> np.ndarray:
    return Int8Embedder(int8_tflite(backbone, _calibration(rep)), threads=os.cpu_count() or 1)(
        windows, progress
    )


def train_head(emb: np.ndarray, targets: np.ndarray, n_classes: int, cfg: TransferConfig):
    keras = _keras()
    keras.utils.set_random_seed(cfg.seed)
    head = build_head(n_classes, cfg.head_hidden, cfg.dropout)
    steps = cfg.epochs * max(1, -(-len(emb) // cfg.batch_size))
    head.compile(optimizer=_optimizer(cfg.lr, cfg.weight_decay, steps),
                 loss=keras.losses.CategoricalCrossentropy(label_smoothing=cfg.label_smoothing))  # fmt: skip
    head.fit(emb, targets, batch_size=cfg.batch_size, epochs=cfg.epochs, shuffle=True, verbose=0)
    return head


class _FineTuneBatches:
    """Batches for end-to-end fine-tuning: half plain un-gated windows (one-hot), half augmented."""

    def __init__(
        self, plain_x, plain_y, feats, y, folds, n_classes, cfg: TransferConfig, train_idx
    ):
        self.plain_x, self.plain_y = plain_x, plain_y
        self.feats, self.y, self.folds, self.n, self.cfg, self.train_idx = (
            feats,
            y,
            folds,
            n_classes,
            cfg,
            train_idx,
        )

    def steps(self) -> int:
        return max(1, len(self.plain_x) // self.cfg.batch_size)

    def epoch(self, e: int):
        cfg = self.cfg
        rng = np.random.default_rng([cfg.seed, e, 23])
        order = rng.permutation(len(self.plain_x))
        half = cfg.batch_size // 2
        ax, ay, _ = augmented_windows([self.feats[i] for i in self.train_idx], self.y[self.train_idx],
                                      self.folds[self.train_idx], self.n, cfg,
                                      copies=-(-self.steps() * (cfg.batch_size - half) // len(self.train_idx)),
                                      seed=[e])  # fmt: skip
        aorder = rng.permutation(len(ax))
        for s in range(self.steps()):
            pi = order[s * half : (s + 1) * half]
            ai = aorder[s * (cfg.batch_size - half) : (s + 1) * (cfg.batch_size - half)]
            yield (
                np.concatenate([self.plain_x[pi], ax[ai]]),
                np.concatenate([self.plain_y[pi], ay[ai]]),
            )


def fine_tune(full, batches: _FineTuneBatches, cfg: TransferConfig, log_label: str) -> None:
    import tensorflow as tf

    keras = _keras()
    _set_trainable(full, cfg.fine_tune_layers)
    opt = _optimizer(cfg.fine_tune_lr, cfg.weight_decay, cfg.fine_tune_epochs * batches.steps())
    loss_fn = keras.losses.CategoricalCrossentropy(label_smoothing=cfg.label_smoothing)
    variables = full.trainable_variables
    opt.build(variables)

    @tf.function(reduce_retracing=True)
    def step(x, t):
        with tf.GradientTape() as tape:
            loss = loss_fn(t, full(x, training=True))
        opt.apply_gradients(zip(tape.gradient(loss, variables), variables, strict=True))
        return loss

    for e in range(cfg.fine_tune_epochs):
        t0, losses = time.perf_counter(), []
        for x, t in batches.epoch(e):
            losses.append(float(step(tf.constant(x), tf.constant(t))))
        _log(f"{log_label}: fine-tune epoch {e + 1}/{cfg.fine_tune_epochs}, loss {np.mean(losses):.3f} "
             f"({time.perf_counter() - t0:.0f} s)")  # fmt: skip
    for layer in full.layers:
        layer.trainable = True


# -- clip scores --------------------------------------------------------------------------------


def _log(msg: str) -> None:
    import sys

    print(msg, file=sys.stderr, flush=True)


@dataclass
class _Windows:
    """Every clip's windows as the daemon cuts them, and which ones its level gate lets through."""

    x: np.ndarray  # (N, 96, 64)
    owner: np.ndarray  # (N,) clip index
    used: np.ndarray  # (N,) bool: scored (un-gated, or every window of a clip the gate silences)

    @classmethod
    def of(cls, feats: list[YamClip], hop: int, gate: float) -> _Windows:
        xs, owners, used = [], [], []
        for i, f in enumerate(feats):
            w = f.windows(hop)
            ok = f.levels(hop) >= gate
            if not ok.any():
                ok[:] = True
            xs.append(w)
            owners.append(np.full(len(w), i))
            used.append(ok)
        return cls(
            np.concatenate(xs).astype(np.float32), np.concatenate(owners), np.concatenate(used)
        )

    def select(self, clips: np.ndarray) -> np.ndarray:
        """Indices of the scored windows of these clips."""
        return np.where(self.used & np.isin(self.owner, clips))[0]


def clip_scores(
    window_scores: np.ndarray, owner: np.ndarray, clips: np.ndarray
) -> dict[str, np.ndarray]:
    """{"mean": ..., "max": ...} (len(clips), C) from the scored windows' scores."""
    pos = {int(c): j for j, c in enumerate(clips)}
    n, c = len(clips), window_scores.shape[1]
    mean = np.zeros((n, c), np.float64)
    mx = np.zeros((n, c), np.float64)
    cnt = np.zeros(n)
    for s, o in zip(window_scores, owner, strict=True):
        j = pos[int(o)]
        mean[j] += s
        mx[j] = np.maximum(mx[j], s)
        cnt[j] += 1
    return {
        "mean": (mean / np.maximum(cnt, 1)[:, None]).astype(np.float32),
        "max": mx.astype(np.float32),
    }


def int8_window_scores(bundle, windows: np.ndarray, progress: bool = False) -> np.ndarray:
    runner = ModelRunner(bundle, num_threads=1)
    return np.stack(
        [
            runner.predict(w)
            for w in tqdm(windows, desc="int8 eval", unit="window", disable=not progress)
        ]
    )


def float_window_scores(full, windows: np.ndarray, batch: int = 128) -> np.ndarray:
    return np.concatenate(
        [
            full(windows[s : s + batch], training=False).numpy()
            for s in range(0, len(windows), batch)
        ]
    )


# -- the job ------------------------------------------------------------------------------------


@dataclass
class TransferJob:
    """What `soundmon train --backbone` was asked for (as `training.train_job.TrainJob` for the
    CNN): the data, where the bundle goes (`out`, no suffix), the recipe, the CV folds (None:
    none), the feature cache and its processes, where the report goes (None: beside `out`),
    progress bars, the command line and measurements for the card, and the inference calls timed
    for the latency figure."""

    dataset: Dataset
    out: Path
    cfg: TransferConfig
    cv_folds: list[int] | None = None
    cache_dir: str | None = None
    workers: int | None = None
    report_dir: Path | None = None
    progress: bool = True
    command: str = ""
    latency_calls: int = 200
    experiments: str = ""  # markdown for the card's "Measurements" section


def _representative(full_windows: np.ndarray, aug_x: np.ndarray, n: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng([seed, 5])
    a = full_windows[
        rng.choice(len(full_windows), size=min(n // 2, len(full_windows)), replace=False)
    ]
    b = (
        aug_x[rng.choice(len(aug_x), size=min(n - len(a), len(aug_x)), replace=False)]
        if len(aug_x)
        else a[:0]
    )
    return np.concatenate([a, b]).astype(np.float32)


def _export(full, rep: np.ndarray, base: Path, labels, meta: dict, clip_score: str):
    t0 = time.perf_counter()
    tfl = int8_tflite(full, _calibration(rep))
    bundle = write_bundle(base, tfl, labels, (0.0, 1.0), YAMNET_FRONTEND, WINDOW_SECONDS, meta=meta)
    if clip_score != PLACEMENT["clip_score"]:
        _, json_path = bundle_paths(base)
        data = json.loads(json_path.read_text())
        data["placement"]["clip_score"] = clip_score
        json_path.write_text(json.dumps(data, indent=2) + "\n")
        bundle = load_bundle(base)
    return bundle, len(tfl), time.perf_counter() - t0


def count_macs_full(full) -> int:
    from training.models import count_macs

    total = count_macs(full)
    head = full.get_layer("head")
    return total + count_macs(head)


def run_transfer(job: TransferJob) -> dict:
    """Optional CV (leave one fold out), then the final model; writes the bundle, report and card."""
    keras = _keras()
    t_start = time.perf_counter()
    ds, cfg = job.dataset, job.cfg
    labels, n_classes = ds.labels, len(ds.labels)
    if cfg.backbone not in BACKBONES:
        raise DatasetError(f"--backbone {cfg.backbone!r}: choose one of {list(BACKBONES)}")
    if not cfg.weights_path or not Path(cfg.weights_path).is_file():
        raise BundleError(f"--backbone yamnet needs YAMNet's TFLite export (yamnet.tflite): {cfg.weights_path or 'not found'}; "
                          "give --backbone-weights PATH or set SOUNDMON_YAMNET")  # fmt: skip
    if not 0 <= cfg.fine_tune_layers <= N_LAYERS:
        raise DatasetError(f"--fine-tune-layers must be 0..{N_LAYERS}")
    _log(ds.summary())
    timings: dict[str, float] = {}
    t0 = time.perf_counter()
    feats = yamnet_features(ds.clips, job.cache_dir, job.workers, job.progress)
    timings["features_s"] = time.perf_counter() - t0
    y = ds.y()
    folds = np.array([c.fold for c in ds.clips])
    hop = hop_frames_for(cfg.hop_seconds, YAMNET_FRONTEND)
    wins = _Windows.of(feats, hop, cfg.gate_dbfs)
    backbone = build_backbone(cfg.weights_path)
    aug_x, aug_y, aug_owner = augmented_windows(
        feats, y, folds, n_classes, cfg, cfg.aug_copies, seed=[0]
    )
    _log(f"windows: {int(wins.used.sum())} of {len(wins.x)} scored (the rest below {cfg.gate_dbfs} dBFS), "
         f"{len(aug_x)} augmented")  # fmt: skip
    onehot = np.eye(n_classes, dtype=np.float32)
    timings["embeddings_s"] = 0.0

    def fit_head(bb, rep, wi, ai, label):
        """Equalise `bb`, convert it to int8 with `rep`, and train a head on its int8 embeddings."""
        t = time.perf_counter()
        eq = equalise_backbone(bb, rep)
        emb = int8_embeddings(eq, rep, np.concatenate([wins.x[wi], aug_x[ai]]), job.progress)
        timings["embeddings_s"] += time.perf_counter() - t
        _log(f"{label}: int8 embeddings of {len(emb)} windows ({time.perf_counter() - t:.0f} s)")
        head = train_head(
            emb, np.concatenate([onehot[y[wins.owner[wi]]], aug_y[ai]]), n_classes, cfg
        )
        return eq, head

    def train(train_clips: np.ndarray, label: str):
        t = time.perf_counter()
        wi = wins.select(train_clips)
        ai = np.where(np.isin(aug_owner, train_clips))[0]
        rep = _representative(wins.x[wi], aug_x[ai], 200, cfg.seed)
        eq, head = fit_head(backbone, rep, wi, ai, label)
        if cfg.fine_tune_layers:
            tuned = keras.Model.from_config(eq.get_config())
            tuned.set_weights(eq.get_weights())
            full = build_full_model(tuned, head)
            batches = _FineTuneBatches(wins.x[wi], onehot[y[wins.owner[wi]]], feats, y, folds, n_classes, cfg,
                                       train_clips)  # fmt: skip
            fine_tune(full, batches, cfg, label)
            tuned = keras.Model(full.input, full.get_layer("embedding").output)
            eq, head = fit_head(
                tuned, rep, wi, ai, f"{label} (head re-fit on the fine-tuned int8 backbone)"
            )
        full = build_full_model(eq, head)
        return full, time.perf_counter() - t, rep

    report: dict = {
        "name": job.out.name, "labels": labels, "arch": f"{cfg.backbone}_head", "command": job.command,
        "window_seconds": WINDOW_SECONDS, "window_frames": PATCH_FRAMES, "frontend": YAMNET_FRONTEND.to_dict(),
        "training": cfg.to_dict(), "experiments": job.experiments,
        "data": {"name": ds.name, "root": str(ds.root), "format": ds.format, "n_clips": len(ds.clips),
                 "folds": ds.folds,
                 "clips_per_fold": {str(k): v for k, v in sorted(Counter(int(f) for f in folds).items())},
                 "clips_per_class": {lab: int(np.sum(y == i)) for i, lab in enumerate(labels)},
                 "missing": len(ds.missing), "split": ds.split_info()},
    }  # fmt: skip
    report_dir = job.report_dir or job.out.parent
    report_dir.mkdir(parents=True, exist_ok=True)
    clip_score = cfg.clip_score if cfg.clip_score != "auto" else "mean"
    if job.cv_folds:
        absent = sorted(set(job.cv_folds) - set(ds.folds))
        if absent:
            raise DatasetError(f"--cv folds {absent} are not in the dataset (folds: {ds.folds})")
        cv_dir = cv_dir_for(job.out)
        cv_dir.mkdir(parents=True, exist_ok=True)
        for stale in cv_dir.glob("fold*.*"):
            stale.unlink()
        per_fold, pooled = [], {m: ([], [], []) for m in ("mean", "max")}
        for k in job.cv_folds:
            tr = np.where(folds != k)[0]
            te = np.where(folds == k)[0]
            _log(f"CV fold {k}: train {len(tr)} clips, test {len(te)} clips")
            full, train_s, rep = train(tr, f"CV fold {k}")
            tw = wins.select(te)
            sf = clip_scores(float_window_scores(full, wins.x[tw]), wins.owner[tw], te)
            trained = sorted({int(f) for f in folds[tr]})
            meta = {"cv": {"held_out_fold": int(k), "trained_on_folds": trained},
                    "model": {"arch": report["arch"], "backbone": cfg.backbone},
                    "data": {**{kk: report["data"][kk] for kk in ("name", "root", "format")}, "folds": trained},
                    "training": cfg.to_dict()}  # fmt: skip
            bundle, _, export_s = _export(full, rep, cv_dir / f"fold{k}", labels, meta, "mean")
            sq_w = int8_window_scores(bundle, wins.x[tw], job.progress)
            sq = clip_scores(sq_w, wins.owner[tw], te)
            entry = {"fold": int(k), "n_clips": len(te), "train_clips": len(tr), "train_seconds": train_s,
                     "export_seconds": export_s}  # fmt: skip
            for m in ("mean", "max"):
                entry[m] = {"float": metrics(y[te], sf[m], labels), "int8": metrics(y[te], sq[m], labels),
                            "int8_float_agreement": float(np.mean(sf[m].argmax(1) == sq[m].argmax(1)))}  # fmt: skip
                pooled[m][0].append(y[te])
                pooled[m][1].append(sf[m])
                pooled[m][2].append(sq[m])
            per_fold.append(entry)
            _log(f"CV fold {k}: int8 mean-rule {100 * entry['mean']['int8']['accuracy']:.1f}% "
                 f"(float {100 * entry['mean']['float']['accuracy']:.1f}%), max-rule "
                 f"{100 * entry['max']['int8']['accuracy']:.1f}%; train {train_s:.0f} s, export {export_s:.0f} s")  # fmt: skip
        summary = {"n_clips": int(sum(e["n_clips"] for e in per_fold))}
        for m in ("mean", "max"):
            yy = np.concatenate(pooled[m][0])
            summary[m] = {
                "float_accuracy_mean": float(
                    np.mean([e[m]["float"]["accuracy"] for e in per_fold])
                ),
                "int8_accuracy_mean": float(np.mean([e[m]["int8"]["accuracy"] for e in per_fold])),
                "int8_macro_mean": float(
                    np.mean([e[m]["int8"]["macro_accuracy"] for e in per_fold])
                ),
                "float_pooled": metrics(yy, np.concatenate(pooled[m][1]), labels),
                "int8_pooled": metrics(yy, np.concatenate(pooled[m][2]), labels),
            }
        if cfg.clip_score == "auto":
            # Ties go to the mean (the default rule of every other bundle); classify and evaluate
            # follow whichever the bundle's placement.clip_score names.
            clip_score = (
                "max"
                if summary["max"]["int8_pooled"]["accuracy"]
                > summary["mean"]["int8_pooled"]["accuracy"]
                else "mean"
            )
        summary["clip_score"] = clip_score
        report["cv"] = {"folds": list(job.cv_folds), "per_fold": per_fold, "summary": summary}
        s = summary[clip_score]
        cm_png = report_dir / f"{job.out.name}_confusion.png"
        plot_confusion(np.array(s["int8_pooled"]["confusion"]), labels, cm_png,
                       f"{job.out.name}: int8, held-out folds {job.cv_folds} pooled "
                       f"(acc {100 * s['int8_pooled']['accuracy']:.1f}%)")  # fmt: skip
        report["confusion_png"] = str(cm_png)
        _log(f"CV mean accuracy ({clip_score} over windows): float {100 * s['float_accuracy_mean']:.1f}%, "
             f"int8 {100 * s['int8_accuracy_mean']:.1f}% (the other rule: "
             f"{100 * summary['max' if clip_score == 'mean' else 'mean']['int8_accuracy_mean']:.1f}%)")  # fmt: skip

    # -- the final model on everything ------------------------------------------------------------
    everything = np.arange(len(ds.clips))
    _log(f"final model: {len(everything)} clips")
    full, final_s, rep = train(everything, "final model")
    meta = {"model": {"arch": report["arch"], "backbone": cfg.backbone, "params": int(full.count_params()),
                      "macs_per_window": count_macs_full(full)},
            "data": {**{k: report["data"][k] for k in ("name", "root", "format")}, "folds": ds.folds},
            "training": cfg.to_dict()}  # fmt: skip
    if "cv" in report:
        s = report["cv"]["summary"][clip_score]
        meta["metrics"] = {
            "cv_folds": report["cv"]["folds"], "clip_score": clip_score,
            "float_accuracy": s["float_accuracy_mean"], "int8_accuracy": s["int8_accuracy_mean"],
            "int8_macro_accuracy": s["int8_macro_mean"],
            "per_fold": [{"fold": e["fold"], "float": e[clip_score]["float"]["accuracy"],
                          "int8": e[clip_score]["int8"]["accuracy"]} for e in report["cv"]["per_fold"]],
        }  # fmt: skip
    bundle, nbytes, export_s = _export(full, rep, job.out, labels, meta, clip_score)
    full.save_weights(str(bundle_paths(job.out)[0].with_name(job.out.name + ".weights.h5")))
    report["model"] = {**meta["model"], "tflite_bytes": nbytes}
    report["norm"] = [0.0, 1.0]
    report["latency"] = measure_latency(bundle, job.latency_calls)
    hop_s = cfg.hop_seconds
    report["cost"] = {
        "train_clips": len(ds.clips), "final_train_seconds": final_s, "export_seconds": export_s, **timings,
        "total_seconds": time.perf_counter() - t_start,
        "macs_per_audio_second": report["model"]["macs_per_window"] / hop_s,
        "ms_per_audio_second": report["latency"]["median_ms"] / hop_s,
    }  # fmt: skip
    import resource

    report["cost"]["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0
    tflite_path, json_path = bundle_paths(job.out)
    data = json.loads(json_path.read_text())
    data["model"] = report["model"]
    data["latency"] = report["latency"]
    data["cost"] = report["cost"]
    json_path.write_text(json.dumps(data, indent=2) + "\n")
    load_bundle(job.out)
    report["bundle"] = {"tflite": str(tflite_path), "json": str(json_path)}
    write_metrics(report_dir / f"{job.out.name}_metrics.json", report)
    write_transfer_card(tflite_path.with_suffix(".md"), report)
    _log(f"wrote {tflite_path} ({nbytes / 1024:.0f} KiB), {json_path}, {tflite_path.with_suffix('.md')}; "
         f"{report['model']['params']:,} params, {report['model']['macs_per_window'] / 1e6:.1f} M MAC/window, "
         f"int8 {report['latency']['median_ms']:.2f} ms/window; total {report['cost']['total_seconds'] / 60:.1f} min")  # fmt: skip
    return report


# -- the model card -----------------------------------------------------------------------------

YAMNET_LICENCE = (
    "The backbone is Google's YAMNet (tensorflow/models, research/audioset/yamnet; code and weights Apache "
    "License 2.0), trained on AudioSet (labels CC BY 4.0, ontology CC BY-SA 4.0); its weights are read from the "
    "TF Hub TFLite export `yamnet.tflite` (sha256 469be6a3...04194)."
)


def _pct(x) -> str:
    return "-" if x is None else f"{100 * x:.1f}"


def write_transfer_card(path: Path, r: dict) -> None:
    from training.card import LICENCES, limits_lines

    t, d, m = r["training"], r["data"], r["model"]
    lat, cost = r["latency"], r["cost"]
    head = f"dense {t['head_hidden']} ReLU, dropout, " if t["head_hidden"] else ""
    ft = (f"then YAMNet's top {t['fine_tune_layers']} layers fine-tuned with the head for {t['fine_tune_epochs']} "
          f"epochs (AdamW, lr {t['fine_tune_lr']}), augmentation on the fly" if t["fine_tune_layers"]
          else "the backbone frozen (head only)")  # fmt: skip
    cs = (r.get("cv") or {}).get("summary", {}).get("clip_score") or t["clip_score"].replace(
        "auto", "mean"
    )
    lines = [
        f"# Model card: `{r['name']}`", "",
        f"YAMNet (AudioSet) with a new head for {len(r['labels'])} classes: `soundmon train --backbone yamnet`.", "",
        "## What it is", "",
        f"- Labels ({len(r['labels'])}): " + ", ".join(f"`{x}`" for x in r["labels"]),
        "- Input: a 0.975 s window = 96 frames x 64 mel bands of `monitor.frontend` with the `yamnet` variant "
        "(25 ms Hann in 400-sample frames, 512-point FFT magnitude, HTK mel 125-7500 Hz, ln(mel + 0.001)), "
        "quantised to int8; the daemon runs it as a window model, a window every hop (0.5 s by default).",
        f"- Network: YAMNet's 14 MobileNet-v1 layers to its 1024-d embedding (weights from the TF Hub export), "
        f"then dropout {t['dropout']}, {head}dense softmax: {m['params']:,} parameters, "
        f"{m['macs_per_window'] / 1e6:.1f} M multiply-accumulates per window "
        f"({cost['macs_per_audio_second'] / 1e6:.0f} M per audio second at a 0.5 s hop), int8 file "
        f"{m['tflite_bytes'] / 1024 / 1024:.1f} MiB.",
        f"- Clip score: the {cs} over the windows the daemon's level gate lets through "
        f"({t['gate_dbfs']} dBFS){' (chosen over the other rule by the pooled CV int8 accuracy)' if t['clip_score'] == 'auto' and 'cv' in r else ''}.",
        f"- Int8 latency: {lat['median_ms']:.2f} ms per window median ({lat['p95_ms']:.2f} ms p95), "
        f"`ModelRunner(bundle, num_threads=1).predict`, {lat['runtime']}, on the training machine (x86-64): "
        f"{cost['ms_per_audio_second']:.1f} ms of CPU per audio second at a 0.5 s hop.",
        "", "## Training data", "",
        f"- Dataset: {d['name']} at `{d['root']}` ({d['format']}), {d['n_clips']} clips, folds {d['folds']} "
        f"({', '.join(f'fold {k}: {v}' for k, v in d['clips_per_fold'].items())}); listed but missing: {d['missing']}.",
        "- " + LICENCES.get(d["format"], LICENCES["folders"]),
        "- " + YAMNET_LICENCE,
        "", "## How it was trained", "",
        f"- Command: `{r['command']}`",
        f"- Head: {t['epochs']} epochs on cached embeddings, batch {t['batch_size']}, AdamW (lr {t['lr']}, weight "
        f"decay {t['weight_decay']}, cosine decay), label smoothing {t['label_smoothing']}, seed {t['seed']}; {ft}.",
        "- Embeddings: every window of every clip as the daemon cuts them (a window every 0.5 s, the clip padded "
        "at its end to one window), except those below the level gate, plus "
        f"{t['aug_copies']} augmented windows per clip (the CNN recipe's augmentation on the log-mel before the "
        "backbone, without masks; mixing partners from the clip's own fold).",
        "- Int8: full-integer post-training quantisation of the whole network, 200 representative windows "
        "(half plain, half augmented) from the training clips, after cross-layer equalisation of the backbone "
        "(the same float function, its channels rescaled so that one int8 scale per tensor fits them all); "
        "the head is trained on the embeddings of that int8 backbone, calibrated as the export is.",
        f"- Cost: features {cost.get('features_s', 0):.0f} s, embeddings {cost.get('embeddings_s', 0):.0f} s, final "
        f"model {cost['final_train_seconds']:.0f} s, int8 export {cost['export_seconds']:.0f} s; whole command "
        f"{cost['total_seconds'] / 60:.1f} min, peak memory {cost['peak_rss_mb']:.0f} MB, 2 CPU cores, no GPU.",
    ]  # fmt: skip
    cv = r.get("cv")
    if cv:
        s = cv["summary"]
        other = "max" if cs == "mean" else "mean"
        lines += [
            "", f"## Accuracy: leave-one-fold-out cross-validation over folds {cv['folds']}", "",
            "Each fold is scored by a model trained on the other folds; int8 through the daemon's runner. Fold "
            f"bundles: `{r['name']}_cv/`.", "",
            f"| held-out fold | clips | float ({cs}) | int8 ({cs}) | int8 macro | int8 ({other}) |",
            "|---:|---:|---:|---:|---:|---:|",
        ]  # fmt: skip
        for f in cv["per_fold"]:
            lines.append(f"| {f['fold']} | {f['n_clips']} | {_pct(f[cs]['float']['accuracy'])} | "
                         f"{_pct(f[cs]['int8']['accuracy'])} | {_pct(f[cs]['int8']['macro_accuracy'])} | "
                         f"{_pct(f[other]['int8']['accuracy'])} |")  # fmt: skip
        lines += [
            f"| **mean** | | {_pct(s[cs]['float_accuracy_mean'])} | **{_pct(s[cs]['int8_accuracy_mean'])}** | "
            f"{_pct(s[cs]['int8_macro_mean'])} | {_pct(s[other]['int8_accuracy_mean'])} |",
            f"| pooled | {s['n_clips']} | {_pct(s[cs]['float_pooled']['accuracy'])} | "
            f"{_pct(s[cs]['int8_pooled']['accuracy'])} | {_pct(s[cs]['int8_pooled']['macro_accuracy'])} | "
            f"{_pct(s[other]['int8_pooled']['accuracy'])} |",
            "", "Per class (held-out clips pooled):", "",
            per_class_table({"float": s[cs]["float_pooled"], "int8": s[cs]["int8_pooled"]}, r["labels"]), "",
        ]  # fmt: skip
        if r.get("confusion_png"):
            lines += [
                f"![confusion matrix, int8, held-out folds]({Path(r['confusion_png']).name})",
                "",
            ]
    if r.get("experiments"):
        lines += ["## Measurements", "", r["experiments"], ""]
    lines += limits_lines(r)[:-1] + [
        f"- About {cost['macs_per_audio_second'] / 1e6:.0f} M multiply-accumulates per audio second: far more "
        "than the shipped from-scratch CNN's 8.4 M (about 2 % of a Pi 4 core, estimated).",
        "",
    ]  # fmt: skip
    Path(path).write_text("\n".join(lines))
