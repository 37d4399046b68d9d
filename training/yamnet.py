"""YAMNet rebuilt in Keras from the weights in its TF Hub TFLite export, fed by our own front-end.

The export (`../shared/models/yamnet.tflite`, see its README) computes its own log-mel patch
with graph ops; here the patch comes from `monitor.frontend` with `YAMNET_FRONTEND`, and only
the network is taken from the export:

    layer1   3x3 conv, stride 2, 32 filters                       (BatchNorm folded: conv + bias)
    layer2-14 depthwise 3x3 (+bias, ReLU) then pointwise 1x1 (+bias, ReLU), strides 1,2,1,2,1,2,1,1,1,1,1,2,1
    global average pooling -> 1024-d embedding -> dense 521 -> sigmoid

`read_weights` walks the export's operator list (CONV_2D / DEPTHWISE_CONV_2D / FULLY_CONNECTED
after the front-end's ops) and dequantises each weight tensor from its int8 values and
quantisation parameters (scale * (q - zero_point), per tensor or per channel), so no interpreter
run is needed. `build_yamnet` makes the float Keras model; `export_outputs` runs the export on a
15600-sample waveform through either interpreter path ("default": XNNPACK, the project's
reference; "builtin": BUILTIN_WITHOUT_DEFAULT_DELEGATES) for parity checks.

Why a float rebuild cannot equal the export to 1e-3: every int8-weight op of the export
(the STFT and mel matrix products, the pointwise convolutions, the dense layer) is a hybrid op
that quantises its float input to int8 on the fly (XNNPACK's dynamically quantised kernels and
the builtin hybrid kernels alike, with different rounding), so the export's own patch and scores
carry activation-quantisation noise that no float computation reproduces. Its int8 DFT and mel
matrices are exactly ours rounded to int8; `emulated_export_patch` adds the input rounding to our
front-end and gives the export's patch. The float path here (our patch, float network) is
YAMNet's float recipe; on labelled UrbanSound8K clips it scores as well as the export. Figures:
tests/test_yamnet.py.

For quantising the rebuild (training/audioset_bundle.py): `YamnetWeights.kernel_scales` keeps the
export's int8 scale of each kernel, so YAMNet's own int8 codes can be stored again exactly;
`build_yamnet(logit_floor=..., relu6=True)` with `capped_weights(weights, activation_caps(...))`
is the form a full-integer int8 export needs (logits and activations in bounded ranges).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402

from monitor.frontend import YAMNET_FRONTEND, FrontendParams, LogMelFrontend  # noqa: E402

__all__ = [
    "ACTIVATION_QUANT",
    "EXPORT_SAMPLES",
    "LOGIT_FLOOR",
    "PATCH_FRAMES",
    "PATCH_HOP_FRAMES",
    "STRIDES",
    "YamnetWeights",
    "activation_caps",
    "build_yamnet",
    "capped_weights",
    "conv_layer_names",
    "emulated_export_patch",
    "export_interpreter",
    "export_outputs",
    "logmel_patches",
    "quantise_rows",
    "read_weights",
]

# How each interpreter path rounds the float input of a hybrid (int8-weight) op to int8, found
# by emulation (figures in tests/test_yamnet.py): (mode, unit of one scale for the pointwise
# convolutions). Fully connected ops (the export's STFT and mel products, the dense layer) take
# one scale per row in both paths: emulated, our front-end reproduces either path's log-mel
# patch to ~1e-6 in all but ~0.02 % of its values. The builtin kernels quantise a convolution's
# input with one symmetric scale per image: emulated, the rebuild gives the builtin path's
# scores. For XNNPACK's convolutions one asymmetric scale per pixel is the closest emulation
# found (it halves the float rebuild's max difference, it does not close it: a diagnostic only).
ACTIVATION_QUANT = {"default": ("asymmetric", "pixel"), "builtin": ("symmetric", "image")}

EXPORT_SAMPLES = 15600  # the export's input: 0.975 s at 16 kHz = 96 frames of 400 at hop 160
PATCH_FRAMES = 96  # 0.96 s of frames
PATCH_HOP_FRAMES = 48  # YAMNet's usual patch hop, 0.48 s
N_CLASSES = 521
# Lowest logit an int8 export keeps: sigmoid(-8) = 3.4e-4, under the output's 1/256 step.
LOGIT_FLOOR = -8.0
EMBEDDING = 1024
# Strides of layer1 (full conv) and the depthwise convolutions of layers 2..14 (MobileNet v1 as
# YAMNet configures it); checked against the tensor shapes of the export in read_weights.
STRIDES = (2, 1, 2, 1, 2, 1, 2, 1, 1, 1, 1, 1, 2, 1)


@dataclass
class YamnetWeights:
    """Float weights in Keras layouts: conv1 (3,3,1,32), depthwise (3,3,C,1), pointwise
    (1,1,Cin,Cout), dense (1024,521).

    YAMNet's weights read from the TF Hub export (`read_weights`), so it can be rebuilt as a
    Keras model (`build_yamnet`), quantised our way and fine-tuned. Each entry is (kernel, bias);
    depthwise and pointwise hold layers 2-14 in order; the rest as commented.
    """

    conv1: tuple[np.ndarray, np.ndarray]
    depthwise: list[tuple[np.ndarray, np.ndarray]] = field(default_factory=list)
    pointwise: list[tuple[np.ndarray, np.ndarray]] = field(default_factory=list)
    dense: tuple[np.ndarray, np.ndarray] | None = None
    mel_matrix: np.ndarray | None = None  # the export's own mel matrix (64, 257), dequantised
    window: np.ndarray | None = None  # the export's analysis window (400,)
    # The export's int8 scale of each kernel per output channel (a per-tensor scale repeated), in
    # graph order: conv1, layer2 depthwise, layer2 pointwise, ..., layer14 pointwise, dense (28);
    # None for a kernel stored in float. With them the kernels' int8 codes are recovered exactly.
    kernel_scales: list[np.ndarray | None] = field(default_factory=list)

    @property
    def n_params(self) -> int:
        """Parameters of conv1, the depthwise and pointwise layers and the dense classifier."""
        arrays = [*self.conv1, *(a for pair in self.depthwise + self.pointwise for a in pair), *self.dense]
        return int(sum(a.size for a in arrays))


def _interpreter_cls():
    from ai_edge_litert.interpreter import Interpreter, OpResolverType

    return Interpreter, OpResolverType


def export_interpreter(path: str | Path, path_kind: str = "default", preserve: bool = False, num_threads: int = 1):
    """The export, allocated. path_kind "default" = Interpreter(path) with its XNNPACK delegate (the
    project's reference); "builtin" = OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES."""
    Interpreter, OpResolverType = _interpreter_cls()
    kwargs = {"model_path": str(path), "num_threads": num_threads}
    if path_kind == "builtin":
        kwargs["experimental_op_resolver_type"] = OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES
    elif path_kind != "default":
        raise ValueError(f"path_kind must be 'default' or 'builtin', not {path_kind!r}")
    if preserve:
        kwargs["experimental_preserve_all_tensors"] = True
    interp = Interpreter(**kwargs)
    interp.allocate_tensors()
    return interp


def export_outputs(interp, waveform: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(scores (521,), log-mel patch (96, 64)) of the export for one 15600-sample waveform."""
    wave = np.asarray(waveform, dtype=np.float32).reshape(1, -1)
    if wave.shape[1] != EXPORT_SAMPLES:
        raise ValueError(f"the export takes exactly {EXPORT_SAMPLES} samples, got {wave.shape[1]}")
    outs = {d["name"]: d["index"] for d in interp.get_output_details()}
    interp.set_tensor(interp.get_input_details()[0]["index"], wave)
    interp.invoke()
    return interp.get_tensor(outs["Identity"])[0].copy(), interp.get_tensor(outs["Identity_1"]).copy()


def _dequantised(details: dict, value: np.ndarray) -> np.ndarray:
    if value.dtype == np.float32:
        return value.copy()
    q = details["quantization_parameters"]
    scales, zeros, axis = q["scales"], q["zero_points"], q["quantized_dimension"]
    if len(scales) == 0:
        raise ValueError(f"tensor {details['name']} is {value.dtype} without quantisation parameters")
    shape = [1] * value.ndim
    if len(scales) > 1:
        shape[axis] = -1
    return ((value.astype(np.float32) - zeros.reshape(shape).astype(np.float32)) * scales.reshape(shape)).astype(
        np.float32
    )


def read_weights(path: str | Path) -> YamnetWeights:
    """Float weights of the export's network, dequantised from its int8 tensors, in Keras layouts."""
    interp = export_interpreter(path, "builtin")
    tensors = {t["index"]: t for t in interp.get_tensor_details()}
    producers = {}
    ops = interp._get_ops_details()
    for op in ops:
        for out in op["outputs"]:
            producers[int(out)] = op

    def value(index: int) -> np.ndarray:
        index = int(index)
        op = producers.get(index)
        if op is not None and op["op_name"] == "DEQUANTIZE":  # an int8 weight behind a DEQUANTIZE op
            index = int(op["inputs"][0])
        return _dequantised(tensors[index], interp.get_tensor(index))

    def channel_scales(index: int, axis: int, channels: int) -> np.ndarray | None:
        """The int8 kernel's scale per output channel (on `axis`), None if not symmetric int8."""
        index = int(index)
        op = producers.get(index)
        if op is not None and op["op_name"] == "DEQUANTIZE":
            index = int(op["inputs"][0])
        t = tensors[index]
        q = t["quantization_parameters"]
        if t["dtype"] != np.int8 or len(q["scales"]) == 0 or np.any(q["zero_points"] != 0):
            return None
        if len(q["scales"]) == 1:
            return np.full(channels, q["scales"][0], np.float32)
        if q["quantized_dimension"] != axis or len(q["scales"]) != channels:
            return None
        return q["scales"].astype(np.float32)

    convs = [op for op in ops if op["op_name"] in ("CONV_2D", "DEPTHWISE_CONV_2D")]
    fcs = [op for op in ops if op["op_name"] == "FULLY_CONNECTED"]
    if len(convs) != 27 or len(fcs) != 4:
        raise ValueError(f"not YAMNet's graph: {len(convs)} convolutions, {len(fcs)} fully connected ops")
    kernel, bias = value(convs[0]["inputs"][1]), value(convs[0]["inputs"][2])  # (32, 3, 3, 1)
    weights = YamnetWeights(conv1=(kernel.transpose(1, 2, 3, 0), bias))
    for op in convs[1:]:
        kernel, bias = value(op["inputs"][1]), value(op["inputs"][2])
        if op["op_name"] == "DEPTHWISE_CONV_2D":  # (1, 3, 3, C) -> (3, 3, C, 1)
            weights.depthwise.append((kernel[0][..., None], bias))
        else:  # (Cout, 1, 1, Cin) -> (1, 1, Cin, Cout)
            weights.pointwise.append((kernel.transpose(1, 2, 3, 0), bias))
    dense = fcs[-1]  # (521, 1024) -> (1024, 521)
    weights.dense = (value(dense["inputs"][1]).T.copy(), value(dense["inputs"][2]))
    for op in [*convs, dense]:  # TFLite layouts: output channels on axis 0, depthwise on axis 3
        axis = 3 if op["op_name"] == "DEPTHWISE_CONV_2D" else 0
        shape = tensors[int(op["outputs"][0])]["shape"]
        weights.kernel_scales.append(channel_scales(op["inputs"][1], axis, int(shape[-1])))
    mel = fcs[2]  # the front-end's third matrix product: magnitude (96, 257) x mel (64, 257)^T
    weights.mel_matrix = value(mel["inputs"][1])
    muls = [op for op in ops if op["op_name"] == "MUL"]
    weights.window = value(muls[0]["inputs"][1]).reshape(-1)
    # The layout must be YAMNet's: channel counts chain and each conv's output shape matches its stride.
    channels = [w.shape[2] for w, _ in weights.depthwise]
    if channels != [32, 64, 128, 128, 256, 256, 512, 512, 512, 512, 512, 512, 1024]:
        raise ValueError(f"unexpected depthwise channels {channels}")
    height = PATCH_FRAMES
    for op, stride in zip([convs[0]] + [o for o in convs if o["op_name"] == "DEPTHWISE_CONV_2D"], STRIDES, strict=True):
        height = -(-height // stride)
        got = int(tensors[int(op["outputs"][0])]["shape"][1])
        if got != height:
            raise ValueError(f"stride mismatch at {tensors[int(op['outputs'][0])]['name']}: {got} rows, expected {height}")
    return weights


def quantise_rows(x: np.ndarray, mode: str) -> np.ndarray:
    """`x` (float64, rows on the last axis) rounded to int8 per row as a hybrid op does, back in float."""
    if mode == "symmetric":
        scale = np.abs(x).max(axis=-1, keepdims=True) / 127.0
        scale[scale == 0] = 1.0
        return np.round(x / scale) * scale
    if mode == "asymmetric":
        low = np.minimum(x.min(axis=-1, keepdims=True), 0.0)
        high = np.maximum(x.max(axis=-1, keepdims=True), 0.0)
        scale = (high - low) / 255.0
        scale[scale == 0] = 1.0
        zero = np.round(-128.0 - low / scale)
        return (np.clip(np.round(x / scale) + zero, -128, 127) - zero) * scale
    raise ValueError(f"mode must be 'symmetric' or 'asymmetric', not {mode!r}")


def _int8_per_tensor(matrix: np.ndarray) -> np.ndarray:
    """A weight matrix rounded to int8 with one symmetric scale (max |w| / 127), back in float."""
    scale = np.abs(matrix).max() / 127.0
    return np.round(matrix / scale) * scale


def emulated_export_patch(audio: np.ndarray, path_kind: str = "default", params: FrontendParams = YAMNET_FRONTEND):
    """Our front-end with the export's int8 arithmetic: the log-mel patch(es) the export computes.

    Frames and window are our front-end's; the DFT (cos / sin rows) and our HTK mel filter bank
    rounded to int8 with one scale each, as in the export (its int8 matrices are exactly these:
    tests/test_yamnet.py); each frame and each magnitude row quantised to int8 (`quantise_rows`)
    before its matrix product, as interpreter path `path_kind` does (ACTIVATION_QUANT). Only to
    explain the export's `Identity_1`; never used to score.
    """
    mode = ACTIVATION_QUANT[path_kind][0]
    fe = LogMelFrontend(params)
    frames = fe.frames(np.asarray(audio, dtype=np.float32)).astype(np.float64) * fe._window64
    # Zero padding to the FFT size, centred as the export pads (56 + 400 + 56). In exact arithmetic
    # the magnitude does not depend on where the frame sits; with int8-rounded DFT rows it does.
    left = (params.n_fft - frames.shape[1]) // 2
    frames = np.pad(frames, ((0, 0), (left, params.n_fft - frames.shape[1] - left)))
    k = np.arange(params.n_fft // 2 + 1)[:, None] * np.arange(params.n_fft)[None, :]
    cos = _int8_per_tensor(np.cos(2 * np.pi * k / params.n_fft))
    sin = _int8_per_tensor(np.sin(2 * np.pi * k / params.n_fft))
    q = quantise_rows(frames, mode)
    magnitude = np.sqrt(np.square(q @ cos.T) + np.square(q @ sin.T))
    mel = quantise_rows(magnitude, mode) @ _int8_per_tensor(fe.mel_basis.astype(np.float64)).T
    return np.log(mel + params.log_offset).astype(np.float32)


def _fake_quant_rows(x, mode: str, axis=-1):
    """TF version of `quantise_rows`, one scale per slice over `axis` (-1: per pixel / row;
    (1, 2, 3): per image), with a straight-through gradient."""
    import tensorflow as tf

    if mode == "symmetric":
        scale = tf.reduce_max(tf.abs(x), axis=axis, keepdims=True) / 127.0
        scale = tf.where(scale == 0, tf.ones_like(scale), scale)
        y = tf.round(x / scale) * scale
    else:
        low = tf.minimum(tf.reduce_min(x, axis=axis, keepdims=True), 0.0)
        high = tf.maximum(tf.reduce_max(x, axis=axis, keepdims=True), 0.0)
        scale = (high - low) / 255.0
        scale = tf.where(scale == 0, tf.ones_like(scale), scale)
        zero = tf.round(-128.0 - low / scale)
        y = (tf.clip_by_value(tf.round(x / scale) + zero, -128.0, 127.0) - zero) * scale
    return x + tf.stop_gradient(y - x)


def build_yamnet(
    weights: YamnetWeights,
    with_embedding: bool = False,
    emulate: str | None = None,
    logit_floor: float | None = None,
    relu6: bool = False,
):
    """Float Keras YAMNet: input (batch, 96, 64) log-mel patches -> (batch, 521) sigmoid scores
    (and the (batch, 1024) embedding as a second output with `with_embedding`).

    `emulate` ("default" / "builtin": an interpreter path, see ACTIVATION_QUANT) rounds the input
    of each pointwise convolution and of the dense layer to int8 as that path's hybrid ops do: a
    diagnostic that says how much of the float rebuild's difference from the export is that
    rounding. None (the default) is the float network, the one to use.

    `logit_floor` (e.g. LOGIT_FLOOR) clamps the logits from below before the sigmoid, as a ReLU
    fused into the dense layer: the same scores wherever they exceed sigmoid(floor) (3.4e-4 at
    -8, below an int8 output's step of 1/256), and the form to quantise to full-integer int8.
    `relu6` uses ReLU6 for every convolution: for weights from `capped_weights`, which rescale each
    layer so that 6 is its activation cap (the network then computes min(relu(x), cap) per layer).
    """
    import tensorflow as tf

    layers = tf.keras.layers

    mode, unit = ACTIVATION_QUANT[emulate] if emulate is not None else (None, None)
    conv_axis = -1 if unit == "pixel" else (1, 2, 3)

    def maybe_quant(x, name, axis=-1):
        if mode is None:
            return x
        return layers.Lambda(lambda t: _fake_quant_rows(t, mode, axis), name=name)(x)

    inputs = tf.keras.Input(shape=(PATCH_FRAMES, YAMNET_FRONTEND.n_mels), name="logmel")
    x = layers.Reshape((PATCH_FRAMES, YAMNET_FRONTEND.n_mels, 1))(inputs)
    act = "relu6" if relu6 else "relu"
    conv1 = layers.Conv2D(32, 3, strides=STRIDES[0], padding="same", activation=act, name="layer1_conv")
    x = conv1(x)
    conv1.set_weights(list(weights.conv1))
    for i, ((dw_k, dw_b), (pw_k, pw_b), stride) in enumerate(
        zip(weights.depthwise, weights.pointwise, STRIDES[1:], strict=True), start=2
    ):
        dw = layers.DepthwiseConv2D(3, strides=stride, padding="same", activation=act, name=f"layer{i}_depthwise")
        x = dw(x)
        dw.set_weights([dw_k, dw_b])
        pw = layers.Conv2D(pw_k.shape[-1], 1, activation=act, name=f"layer{i}_pointwise")
        x = pw(maybe_quant(x, f"layer{i}_int8_input", conv_axis))
        pw.set_weights([pw_k, pw_b])
    embedding = layers.GlobalAveragePooling2D(name="embedding")(x)
    if logit_floor is None:
        dense = layers.Dense(N_CLASSES, activation="sigmoid", name="scores")
        scores = dense(maybe_quant(embedding, "dense_int8_input"))
        dense.set_weights(list(weights.dense))
    else:
        # sigmoid(max(logit, floor)) as relu(logit - floor) + floor: the ReLU fuses into the dense
        # layer, so an int8 export quantises the logits over [floor, max] instead of their whole
        # range (YAMNet's reach -94: one int8 scale of 2.9 left no step between scores 0.1 and 0.9).
        dense = layers.Dense(N_CLASSES, activation="relu", name="logits_above_floor")
        shifted = dense(maybe_quant(embedding, "dense_int8_input"))
        dense.set_weights([weights.dense[0], weights.dense[1] - np.float32(logit_floor)])
        logits = layers.Rescaling(1.0, offset=float(logit_floor), name="logits")(shifted)
        scores = layers.Activation("sigmoid", name="scores")(logits)
    outputs = [scores, embedding] if with_embedding else scores
    return tf.keras.Model(inputs, outputs, name="yamnet")


def conv_layer_names() -> list[str]:
    """The 27 convolutions in order (layer1_conv, layer2_depthwise, layer2_pointwise, ...)."""
    names = ["layer1_conv"]
    for i in range(2, 15):
        names += [f"layer{i}_depthwise", f"layer{i}_pointwise"]
    return names


def activation_caps(model, patches: np.ndarray, quantile: float = 0.9999, batch_size: int = 32) -> list[float]:
    """Per convolution of a float `build_yamnet` model, the `quantile` of its (ReLU) outputs over
    `patches`: the caps `capped_weights` builds in. A full-integer int8 export quantises each
    activation with one scale from the calibration data's min and max; YAMNet's activations have
    rare outliers 5-10x above their usual range (layer1: 15 where a patch's max is ~4), so one
    scale per tensor fitted to the max leaves the usual values a few steps, and the error grows
    layer by layer until the last layers' outputs are noise (top-1 agreement ~10 %)."""
    import tensorflow as tf

    names = conv_layer_names()
    probe = tf.keras.Model(model.input, [model.get_layer(n).output for n in names])
    values: list[list[np.ndarray]] = [[] for _ in names]
    for start in range(0, len(patches), batch_size):
        outs = probe(patches[start : start + batch_size], training=False)
        for k, out in enumerate(outs):
            values[k].append(np.asarray(out).reshape(-1))
    return [float(np.quantile(np.concatenate(v), quantile)) for v in values]


def capped_weights(weights: YamnetWeights, caps: list[float]) -> YamnetWeights:
    """Weights for `build_yamnet(..., relu6=True)` that compute YAMNet with each convolution's
    output capped at caps[k]: every layer's output is scaled by 6 / cap (its kernel by
    cap_in / cap_out, its bias by 6 / cap_out; the network input's 'cap' is 6, and the dense
    layer takes the last cap back), so ReLU6 = min(relu(x), cap) in YAMNet's units. ReLU6 fuses
    into the int8 convolutions, and each activation's int8 range is then its cap."""
    if len(caps) != 27:
        raise ValueError(f"need 27 caps (one per convolution), got {len(caps)}")
    pairs = [weights.conv1] + [p for pair in zip(weights.depthwise, weights.pointwise, strict=True) for p in pair]
    out, cap_in = [], 6.0
    for (kernel, bias), cap in zip(pairs, caps, strict=True):
        out.append(((kernel * np.float32(cap_in / cap)).astype(np.float32), (bias * np.float32(6.0 / cap)).astype(np.float32)))
        cap_in = cap
    dense = ((weights.dense[0] * np.float32(cap_in / 6.0)).astype(np.float32), weights.dense[1])
    return YamnetWeights(conv1=out[0], depthwise=out[1::2], pointwise=out[2::2], dense=dense,
                         mel_matrix=weights.mel_matrix, window=weights.window)  # fmt: skip


def logmel_patches(
    audio: np.ndarray,
    hop_frames: int = PATCH_HOP_FRAMES,
    params: FrontendParams = YAMNET_FRONTEND,
) -> np.ndarray:
    """(n_patches, 96, 64) patches of a mono 16 kHz recording through our front-end; a recording
    shorter than one patch (0.975 s) is padded with zeros at the end to one patch."""
    audio = np.asarray(audio, dtype=np.float32)
    need = (PATCH_FRAMES - 1) * params.hop_length + params.frame_span
    if len(audio) < need:
        audio = np.concatenate([audio, np.zeros(need - len(audio), np.float32)])
    logmel = LogMelFrontend(params)(audio)
    starts = range(0, len(logmel) - PATCH_FRAMES + 1, hop_frames)
    return np.stack([logmel[s : s + PATCH_FRAMES] for s in starts])
