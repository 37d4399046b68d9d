"""Keras models: the small int8-friendly CNN the daemon runs, and the MFCC-statistics MLP baseline.

The CNN uses only ops that quantise to full-integer TFLite and run fast on a Raspberry Pi:
Conv2D / DepthwiseConv2D with batch norm (folded at export), ReLU, max/average pooling,
global pooling, Dense and Softmax. It shrinks the 397 x 64 log-mel quickly (strided stem and
early pooling) so a window costs ~55 million multiply-accumulates (~0.5 ms int8 on one x86 core).
"""

from __future__ import annotations

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402
from keras import layers as L  # noqa: E402

__all__ = [
    "ARCHS",
    "BODY_PREFIX",
    "build_cnn",
    "build_mlp",
    "count_macs",
    "mfcc_stats",
    "transfer_body",
]

BODY_PREFIX = "body_"  # layers whose weights `--init-from` reuses
END_SECONDS = 1.0  # "avgmaxend" head: the newest part of the 4 s window pooled on its own

# name -> (stem channels, [(channels, convs, pool after)], head pooling)
ARCHS: dict[str, dict] = {
    # 3 stages of full 3x3 convs after a strided stem: 288k params, 55 M MAC,
    # ~0.5 ms per window int8 on one core of the training machine (x86-64)
    "cnn": {
        "stem": 24,
        "stages": [(32, 1, True), (64, 2, True), (128, 2, False)],
        "pool": "avgmax",
    },
    # the same cost with the frequency detail kept longer (stem strides time only, 4x time
    # pooling): 49 x 32 after the stem instead of 99 x 16, 12 x 8 at the head instead of 24 x 4
    "cnn_f": {
        "stem": 24,
        "stem_strides": (2, 1),
        "stem_pool": (4, 2),
        "stages": [(32, 1, True), (64, 2, True), (128, 2, False)],
        "pool": "avgmaxend",
    },
    # the shipped body with the onset-aware head
    "cnn_e": {
        "stem": 24,
        "stages": [(32, 1, True), (64, 2, True), (128, 2, False)],
        "pool": "avgmaxend",
    },
    # the same with a level-blind stem (zero-mean kernels)
    "cnn_gi": {
        "stem": 24,
        "stages": [(32, 1, True), (64, 2, True), (128, 2, False)],
        "pool": "avgmax",
        "zero_mean": True,
    },
    # the plain-CNN reference of the literature (Salamon & Bello 2017, "SB-CNN"): three 5x5
    # conv layers, a 64-unit dense layer; a yardstick measured on our folds, not a candidate
    "sbcnn": {"builder": "sbcnn"},
    # for tests and quick experiments
    "tiny": {"stem": 8, "stages": [(16, 1, True), (32, 1, False)], "pool": "avg"},
    "small": {"stem": 16, "stages": [(32, 1, True), (64, 1, True), (128, 1, False)], "pool": "avg"},
}
# Candidates tried against cnn_f (model card steps 16-17, neither adopted):
# - a frequency-aware head: the time pooling keeps the 8 bands apart instead of averaging them,
#   so where in the spectrum a texture sits (an air conditioner's hum) reaches the classifier;
# - a stem that looks 110 ms along time (11 x 3 kernels): a 3 x 3 kernel on 10 ms frames cannot
#   see the 50-70 ms period of a jackhammer's blows before the 4x time pooling.
ARCHS["cnn_fq"] = {**ARCHS["cnn_f"], "keep_bands": True}
ARCHS["cnn_ft"] = {**ARCHS["cnn_f"], "stem_kernel": (11, 3)}
# A streaming-exact candidate (model card step 23): no padding along time and every time stride
# (2, 10, 50 frames) divides the daemon's 50-frame hop, so each layer's outputs for one window
# are those of the previous window shifted by whole rows. A streaming runner can then keep each
# layer's last rows and compute only the rows a hop adds (~1/8 of the window's MACs), with
# results equal to running the whole window.
ARCHS["cnn_s"] = {
    "stem": 24,
    "stem_strides": (2, 1),
    "stem_pool": (5, 2),
    "stages": [(32, 1, (1, 2)), (64, 2, (5, 2)), (128, 2, False)],
    "pool": "avgmaxend",
    "time_valid": True,
}
# The streaming-exact body with a patch stem (model card step 24): a 5 x 3 convolution with a
# time stride of 5 reads each 50 ms of frames once (no overlap, no stem pooling along time), so
# the stem is 1/8 of cnn_s's training cost; stages 2-3 run at a 25-frame stride, so the head
# sees 7 time steps of a window (cnn_s: 2) and each hop adds 2 rows there. Strides 5, 25.
ARCHS["cnn_sp"] = {
    "stem": 24,
    "stem_kernel": (5, 3),
    "stem_strides": (5, 1),
    "stem_pool": (1, 2),
    "stages": [(32, 1, (5, 2)), (64, 2, (1, 2)), (128, 2, False)],
    "pool": "avgmaxend",
    "time_valid": True,
}
# cnn_sp with every unpadded strided layer aligned to the newest frame (model card step 25: the
# unaligned bodies never see a window's newest 120-360 ms); streams the same way.
ARCHS["cnn_spn"] = {**ARCHS["cnn_sp"], "align_newest": True}
# Which padding along time costs the streaming bodies their fit (model card step 26): the cnn_sp
# layout padded at both ends (as cnn_f is), at the newest end only, at the oldest end only. None
# of them streams exactly; they are experiments, kept so the card's step can be re-run.
ARCHS["cnn_spp"] = {**ARCHS["cnn_sp"], "time_valid": False}
ARCHS["cnn_spf"] = {**ARCHS["cnn_spn"], "time_valid": False, "time_pad": "newest"}
ARCHS["cnn_spo"] = {**ARCHS["cnn_spn"], "time_valid": False, "time_pad": "oldest"}
# Streaming-exact bodies with a shorter receptive field along time (1 x 3 convolutions in the last
# stage, or in the last two): does a padded body fit better because its edge rows see a part of the
# window on its own? (model card step 27)
ARCHS["cnn_spn_s3t1"] = {**ARCHS["cnn_spn"], "stage_time_kernels": [3, 3, 1]}
ARCHS["cnn_spn_s23t1"] = {**ARCHS["cnn_spn"], "stage_time_kernels": [3, 1, 1]}
ARCHS["tiny_sn"] = {**ARCHS["cnn_spn"], "stem": 8, "stages": [(16, 1, (5, 2)), (32, 1, False)]}  # at test size
ARCHS["tiny_s"] = {  # the streaming-exact layout at test size
    "stem": 8,
    "stem_strides": (2, 1),
    "stem_pool": (5, 2),
    "stages": [(16, 1, (5, 2)), (32, 1, False)],
    "pool": "avgmaxend",
    "time_valid": True,
}


class ZeroMeanKernel(keras.constraints.Constraint):
    """Each output channel's kernel sums to zero: the filter ignores a constant dB offset.

    On the stem this makes the network (almost: padding at the edges) blind to the overall
    level of a recording, which otherwise lets it tell recordings apart by their loudness
    rather than by their sound. Exported as a plain Conv2D.
    """

    def __call__(self, w):
        return w - keras.ops.mean(w, axis=(0, 1, 2), keepdims=True)

    def get_config(self):
        return {}


def _pair(v) -> tuple[int, int]:
    """(time, frequency) of a Keras kernel or stride given as one int or a pair."""
    return (v, v) if isinstance(v, int) else (int(v[0]), int(v[1]))


def _conv_bn(x, ch: int, name: str, kernel=3, strides=1, zero_mean=False, time_valid=False, time_pad=None):
    """Conv + batch norm + ReLU, "same" along frequency; along time "same" unless `time_valid`
    (no padding), or padded at one end only (`time_pad` "newest" / "oldest": k - s zero rows there)."""
    explicit_pad = time_valid or time_pad is not None
    if explicit_pad:
        kt, kf = _pair(kernel)
        extra = max(kt - _pair(strides)[0], 0) if time_pad else 0
        rows = (extra, 0) if time_pad == "oldest" else (0, extra)
        x = L.ZeroPadding2D((rows, (kf // 2, (kf - 1) // 2)), name=f"{name}_fpad")(x)
    x = L.Conv2D(
        ch,
        kernel,
        strides=strides,
        padding="valid" if explicit_pad else "same",
        use_bias=False,
        kernel_constraint=ZeroMeanKernel() if zero_mean else None,
        name=f"{name}_conv",
    )(x)
    x = L.BatchNormalization(name=f"{name}_bn")(x)
    return L.ReLU(name=f"{name}_relu")(x)


def build_cnn(
    n_classes: int,
    frames: int = 397,
    n_mels: int = 64,
    arch: str = "cnn",
    dropout: float = 0.3,
    weight_decay: float = 0.0,
) -> keras.Model:
    """The detector CNN: input normalised log-mel (frames, n_mels, 1), output softmax probabilities."""
    spec = ARCHS[arch]
    inp = keras.Input((frames, n_mels, 1), name="logmel")
    if spec.get("builder") == "sbcnn":
        return _build_sbcnn(inp, n_classes, arch)
    align = spec.get("align_newest", False)
    stem_kernel, stem_strides = spec.get("stem_kernel", 3), spec.get("stem_strides", 2)
    x = _align_newest(inp, stem_kernel, stem_strides, f"{BODY_PREFIX}stem", align)
    x = _conv_bn(
        x,
        spec["stem"],
        f"{BODY_PREFIX}stem",
        kernel=stem_kernel,
        strides=stem_strides,
        zero_mean=spec.get("zero_mean", False),
        time_valid=spec.get("time_valid", False),
        time_pad=spec.get("time_pad"),
    )  # 199 x 32
    stem_pool = spec.get("stem_pool", 2)
    x = _align_newest(x, stem_pool, stem_pool, f"{BODY_PREFIX}stem_pool", align)
    x = L.MaxPooling2D(stem_pool, name=f"{BODY_PREFIX}stem_pool")(x)  # 99 x 16
    time_kernels = spec.get("stage_time_kernels", [3] * len(spec["stages"]))
    for s, ((ch, n_conv, pool), kt) in enumerate(zip(spec["stages"], time_kernels, strict=True), start=1):
        for c in range(n_conv):
            x = _conv_bn(
                x,
                ch,
                f"{BODY_PREFIX}s{s}c{c}",
                kernel=(kt, 3),
                time_valid=spec.get("time_valid", False),
                time_pad=spec.get("time_pad"),
            )
        if pool:
            size = 2 if pool is True else pool
            x = _align_newest(x, size, size, f"{BODY_PREFIX}s{s}_pool", align)
            x = L.MaxPooling2D(size, name=f"{BODY_PREFIX}s{s}_pool")(x)
    if spec["pool"] in ("avgmax", "avgmaxend") and spec.get("keep_bands"):
        x = _head_per_band(x, spec["pool"] == "avgmaxend")
    elif spec["pool"] in ("avgmax", "avgmaxend"):
        # Mean over frequency, then both the mean and the max over time: the max keeps short
        # events (a gun shot, a horn blip) from being averaged away in a 4 s window.
        f = x.shape[2]
        x = L.AveragePooling2D((1, f), name="head_freqpool")(x)
        pooled = [L.GlobalAveragePooling2D(name="head_avg")(x), L.GlobalMaxPooling2D(name="head_max")(x)]
        if spec["pool"] == "avgmaxend":
            # Plus the mean over the newest ~1 s: a sound that has just begun fills only the
            # end of the daemon's window, and this is the feature that can answer for it early.
            pooled.append(L.GlobalAveragePooling2D(name="head_end")(_newest_second(x)))
        x = L.Concatenate(name="head_cat")(pooled)
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
    the newest frames of a window (up to 360 ms for `cnn_s`), where a sound that has just begun is."""
    left = (x.shape[1] - _pair(kernel)[0]) % _pair(strides)[0]
    if not on or not left:
        return x
    return L.Cropping2D(((left, 0), (0, 0)), name=f"{name}_align")(x)


def _newest_second(x):
    """The time steps of the newest ~END_SECONDS of the 4 s window (at least one)."""
    t = x.shape[1]
    keep = max(1, round(t * END_SECONDS / 4.0))
    return L.Cropping2D(((t - keep, 0), (0, 0)), name="head_end_crop")(x)


def _head_per_band(x, with_end: bool):
    """Mean and max over time (and the mean over the newest second) for each frequency band
    separately, flattened: the head knows where in the spectrum a pattern sits."""
    t = x.shape[1]
    pooled = [
        L.Flatten(name="head_avg_flat")(L.AveragePooling2D((t, 1), name="head_avg")(x)),
        L.Flatten(name="head_max_flat")(L.MaxPooling2D((t, 1), name="head_max")(x)),
    ]
    if with_end:
        end = _newest_second(x)
        pooled.append(L.Flatten(name="head_end_flat")(L.AveragePooling2D((end.shape[1], 1), name="head_end")(end)))
    return L.Concatenate(name="head_cat")(pooled)


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
