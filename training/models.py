"""Keras models: the small int8-friendly CNN the daemon runs, the SB-CNN yardstick, the test
sizes, and the MFCC-statistics MLP baseline.

The CNN uses only ops that quantise to full-integer TFLite and run fast on a Raspberry Pi:
Conv2D with batch norm (folded at export), ReLU, max/average pooling, global pooling, Dense and
Softmax. The shipped body shrinks the 397 x 64 log-mel quickly (a patch stem strided 5 in time,
early pooling): a window costs ~32 million multiply-accumulates, a streamed 0.5 s hop ~4 million.
"""

from __future__ import annotations

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402
from keras import layers as L  # noqa: E402

from monitor.errors import BundleError  # noqa: E402

__all__ = [
    "ARCHS",
    "BODY_PREFIX",
    "arch_spec",
    "build_cnn",
    "build_mlp",
    "count_macs",
    "mfcc_stats",
    "transfer_body",
]

BODY_PREFIX = "body_"  # layers whose weights `--init-from` reuses
END_SECONDS = 1.0  # "avgmaxend" head: the newest part of the 4 s window pooled on its own

# The bodies `soundmon train --arch` builds: the shipped one, the yardstick and the test sizes.
# The experiments' other bodies are retired: models/urban10_experiments.md ("Retired
# architectures") describes each and names the commit that still builds it.
#
# name -> stem channels, [(channels, convs, pool after)], head pooling ("avgmaxend": the mean and
# max over the window and the mean over its newest second; "avg": the mean), and the options:
# stem_kernel / stem_strides / stem_pool (time, frequency); time_valid: no padding along time
# (the body can stream); align_newest: unpadded strided layers end on the newest frame;
# stage_time_kernels: each stage's kernel length along time.
ARCHS: dict[str, dict] = {
    # The shipped body (models/urban10.md): a 5 x 3 patch stem strided 5 in time, then 32, 2 x 64
    # and 2 x 128 channels whose last two stages mix only frequency (1 x 3). Never padded along time,
    # time strides 5 and 25 frames (they divide the daemon's 50-frame hop) and every strided layer
    # aligned to the newest frame: a streaming model computes only the rows a hop adds, with results
    # equal to running the whole window. 105k parameters, 32 M multiply-accumulates per window.
    "cnn_spn_s23t1": {
        "stem": 24,
        "stem_kernel": (5, 3),
        "stem_strides": (5, 1),
        "stem_pool": (1, 2),
        "stages": [(32, 1, (5, 2)), (64, 2, (1, 2)), (128, 2, False)],
        "stage_time_kernels": [3, 1, 1],
        "pool": "avgmaxend",
        "time_valid": True,
        "align_newest": True,
    },
    # the plain-CNN reference of the literature (Salamon & Bello 2017, "SB-CNN"): three 5x5
    # conv layers, a 64-unit dense layer; a yardstick measured on our folds, not a candidate
    "sbcnn": {"builder": "sbcnn"},
    # test sizes: a body padded along time (whole windows only) and a streaming-exact one
    "tiny": {"stem": 8, "stages": [(16, 1, True), (32, 1, False)], "pool": "avg"},
    "tiny_s": {
        "stem": 8,
        "stem_strides": (2, 1),
        "stem_pool": (5, 2),
        "stages": [(16, 1, (5, 2)), (32, 1, False)],
        "pool": "avgmaxend",
        "time_valid": True,
    },
}


def _pair(v) -> tuple[int, int]:
    """(time, frequency) of a Keras kernel or stride given as one int or a pair."""
    return (v, v) if isinstance(v, int) else (int(v[0]), int(v[1]))


def _conv_bn(x, ch: int, name: str, kernel=3, strides=1, time_valid=False):
    """Conv + batch norm + ReLU, "same" along frequency; along time "same" unless `time_valid`
    (no padding: what a streaming-exact body needs)."""
    if time_valid:
        kf = _pair(kernel)[1]
        x = L.ZeroPadding2D(((0, 0), (kf // 2, (kf - 1) // 2)), name=f"{name}_fpad")(x)
    x = L.Conv2D(
        ch,
        kernel,
        strides=strides,
        padding="valid" if time_valid else "same",
        use_bias=False,
        name=f"{name}_conv",
    )(x)
    x = L.BatchNormalization(name=f"{name}_bn")(x)
    return L.ReLU(name=f"{name}_relu")(x)


def arch_spec(arch: str) -> dict:
    """The layout of body `arch`; a BundleError (one line) names the ones this version builds when
    it is not one of them (a bundle with a retired body still runs in the daemon, but cannot be
    rebuilt here for `--init-from`)."""
    if arch not in ARCHS:
        raise BundleError(
            f"architecture {arch!r} is not built by this version (it builds {', '.join(ARCHS)}); the retired "
            "experiments' bodies are listed with the commit that has them in models/urban10_experiments.md"
        )
    return ARCHS[arch]


def build_cnn(
    n_classes: int,
    frames: int = 397,
    n_mels: int = 64,
    arch: str = "cnn_spn_s23t1",
    dropout: float = 0.3,
    weight_decay: float = 0.0,
) -> keras.Model:
    """The detector CNN: input normalised log-mel (frames, n_mels, 1), output softmax probabilities."""
    spec = arch_spec(arch)
    inp = keras.Input((frames, n_mels, 1), name="logmel")
    if spec.get("builder") == "sbcnn":
        return _build_sbcnn(inp, n_classes, arch)
    align, time_valid = spec.get("align_newest", False), spec.get("time_valid", False)
    stem_kernel, stem_strides = spec.get("stem_kernel", 3), spec.get("stem_strides", 2)
    x = _align_newest(inp, stem_kernel, stem_strides, f"{BODY_PREFIX}stem", align)
    x = _conv_bn(x, spec["stem"], f"{BODY_PREFIX}stem", kernel=stem_kernel, strides=stem_strides, time_valid=time_valid)
    stem_pool = spec.get("stem_pool", 2)
    x = _align_newest(x, stem_pool, stem_pool, f"{BODY_PREFIX}stem_pool", align)
    x = L.MaxPooling2D(stem_pool, name=f"{BODY_PREFIX}stem_pool")(x)
    time_kernels = spec.get("stage_time_kernels", [3] * len(spec["stages"]))
    for s, ((ch, n_conv, pool), kt) in enumerate(zip(spec["stages"], time_kernels, strict=True), start=1):
        for c in range(n_conv):
            x = _conv_bn(x, ch, f"{BODY_PREFIX}s{s}c{c}", kernel=(kt, 3), time_valid=time_valid)
        if pool:
            size = 2 if pool is True else pool
            x = _align_newest(x, size, size, f"{BODY_PREFIX}s{s}_pool", align)
            x = L.MaxPooling2D(size, name=f"{BODY_PREFIX}s{s}_pool")(x)
    if spec["pool"] == "avgmaxend":
        # Mean over frequency, then both the mean and the max over time: the max keeps short
        # events (a gun shot, a horn blip) from being averaged away in a 4 s window. Plus the mean
        # over the newest ~1 s: a sound that has just begun fills only the end of the daemon's
        # window, and this is the feature that can answer for it early.
        f = x.shape[2]
        x = L.AveragePooling2D((1, f), name="head_freqpool")(x)
        x = L.Concatenate(name="head_cat")([
            L.GlobalAveragePooling2D(name="head_avg")(x),
            L.GlobalMaxPooling2D(name="head_max")(x),
            L.GlobalAveragePooling2D(name="head_end")(_newest_second(x)),
        ])
    else:
        x = L.GlobalAveragePooling2D(name="head_avg")(x)
    if dropout:
        x = L.Dropout(dropout, name="head_dropout")(x)
    x = L.Dense(n_classes, name="head_dense")(x)
    out = L.Softmax(name="probs")(x)
    return keras.Model(inp, out, name=f"soundmon_{arch}")


def _align_newest(x, kernel, strides, name: str, on: bool):
    """Drop the oldest rows an unpadded, strided layer would leave over, so that its last step
    ends on the newest row: otherwise it drops them at the newest end, and the body never sees
    the newest frames of a window (up to 360 ms for a retired body), where a sound that has just begun is."""
    left = (x.shape[1] - _pair(kernel)[0]) % _pair(strides)[0]
    if not on or not left:
        return x
    return L.Cropping2D(((left, 0), (0, 0)), name=f"{name}_align")(x)


def _newest_second(x):
    """The time steps of the newest ~END_SECONDS of the 4 s window (at least one)."""
    t = x.shape[1]
    keep = max(1, round(t * END_SECONDS / 4.0))
    return L.Cropping2D(((t - keep, 0), (0, 0)), name="head_end_crop")(x)


def _build_sbcnn(inp, n_classes: int, arch: str) -> keras.Model:
    """Salamon & Bello's SB-CNN (IEEE SPL 2017) on our input, as the plain-CNN yardstick.

    Their input is 128 bands x 128 frames (3 s); ours is 64 bands x 397 frames (4 s), so frames
    are first averaged in threes (132 x 64) and both poolings are 2 x 2 (their 4 x 2 would leave
    too few of our 64 bands). Otherwise as published: unpadded 5x5 convs of 24, 48, 48 channels
    with ReLU, dropout 0.5, a dense layer of 64, softmax.
    """
    x = L.AveragePooling2D((3, 1), name=f"{BODY_PREFIX}sb_frames")(inp)  # 132 x 64
    x = L.Conv2D(24, 5, padding="valid", activation="relu", name=f"{BODY_PREFIX}sb_c1")(x)
    x = L.MaxPooling2D((2, 2), name=f"{BODY_PREFIX}sb_p1")(x)
    x = L.Conv2D(48, 5, padding="valid", activation="relu", name=f"{BODY_PREFIX}sb_c2")(x)
    x = L.MaxPooling2D((2, 2), name=f"{BODY_PREFIX}sb_p2")(x)
    x = L.Conv2D(48, 5, padding="valid", activation="relu", name=f"{BODY_PREFIX}sb_c3")(x)
    x = L.Flatten(name="head_flatten")(x)
    x = L.Dropout(0.5, name="head_dropout0")(x)
    x = L.Dense(64, activation="relu", name="head_hidden")(x)
    x = L.Dropout(0.5, name="head_dropout")(x)
    x = L.Dense(n_classes, name="head_dense")(x)
    out = L.Softmax(name="probs")(x)
    return keras.Model(inp, out, name=f"soundmon_{arch}")


def transfer_body(src: keras.Model | dict[str, list], dst: keras.Model) -> int:
    """Copy the convolutional body's weights from `src` (a model, or weights by layer name) to
    `dst` by layer name; returns layers copied."""
    if isinstance(src, dict):
        weights = src
    else:
        weights = {layer.name: layer.get_weights() for layer in src.layers}
    copied = 0
    for layer in dst.layers:
        if layer.name.startswith(BODY_PREFIX) and layer.name in weights and layer.weights:
            layer.set_weights(weights[layer.name])
            copied += 1
    return copied


def count_macs(model: keras.Model) -> int:
    """Multiply-accumulates of one forward pass (convolutions and dense layers)."""
    total = 0
    for layer in model.layers:
        if isinstance(layer, L.DepthwiseConv2D):
            o = layer.output.shape
            total += o[1] * o[2] * o[3] * layer.kernel_size[0] * layer.kernel_size[1]
        elif isinstance(layer, L.Conv2D):
            o = layer.output.shape
            cin = layer.input.shape[-1]
            total += o[1] * o[2] * o[3] * cin * layer.kernel_size[0] * layer.kernel_size[1]
        elif isinstance(layer, L.Dense):
            total += layer.input.shape[-1] * layer.units
    return int(total)


# -- the classic baseline -----------------------------------------------------------------------


def _dct_matrix(n_in: int, n_out: int) -> np.ndarray:
    """Orthonormal DCT-II (as librosa.feature.mfcc / scipy dct norm='ortho'), shape (n_out, n_in)."""
    k = np.arange(n_out)[:, None]
    n = np.arange(n_in)[None, :]
    m = np.cos(np.pi / n_in * (n + 0.5) * k) * np.sqrt(2.0 / n_in)
    m[0] /= np.sqrt(2.0)
    return m.astype(np.float32)


def mfcc_stats(logmel: np.ndarray, n_mfcc: int = 20) -> np.ndarray:
    """20 MFCCs (DCT of the front-end's log-mel) x 7 statistics over the clip's frames -> (140,)."""
    from scipy.stats import kurtosis, skew

    x = np.asarray(logmel, dtype=np.float64)
    if len(x) < 2:
        x = np.concatenate([x, x]) if len(x) else np.zeros((2, logmel.shape[1]))
    mfcc = x @ _dct_matrix(x.shape[1], n_mfcc).T.astype(np.float64)  # (frames, n_mfcc)
    stats = [
        mfcc.min(0), mfcc.max(0), np.median(mfcc, 0), mfcc.mean(0), mfcc.var(0),
        np.nan_to_num(skew(mfcc, axis=0)), np.nan_to_num(kurtosis(mfcc, axis=0)),
    ]  # fmt: skip
    return np.concatenate(stats).astype(np.float32)


def build_mlp(
    n_features: int, n_classes: int, hidden: int = 256, dropout: float = 0.5
) -> keras.Model:
    inp = keras.Input((n_features,), name="mfcc_stats")
    x = L.Dense(hidden, activation="relu", name="hidden")(inp)
    x = L.Dropout(dropout)(x)
    out = L.Dense(n_classes, activation="softmax", name="probs")(x)
    return keras.Model(inp, out, name="mfcc_mlp")
