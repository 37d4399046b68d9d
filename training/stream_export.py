"""Export a streaming CNN: the model a 0.5 s hop runs, computing only the rows the hop adds.

A window model whose body never pads along time and whose time strides all divide the hop
(the shipped `ARCHS["cnn_spn_s23t1"]`) gives, for window m + 1, each layer's rows of window m
shifted by whole rows plus a few new ones. The streaming model takes the hop's new log-mel frames and, for each layer
that mixes rows (a convolution or a pooling), the rows it kept from the last hop (its *state*);
it returns the window's scores and the states for the next hop. Its scores equal the window
model's (float: to rounding; int8: both quantised, so to a few quantisation steps), at about
1/8 of the multiply-accumulates per hop. `monitor.stream_runner` runs it.

Row bookkeeping, per layer with kernel k and stride s along time over a window of n rows:
o = (n - k) // s + 1 output rows use the first s (o - 1) + k rows; the state is the rows the
next hop still needs: k - s plus the window's unused tail. The hop must be a multiple of every
layer's accumulated stride, so each layer gets a whole number of new rows.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

from monitor.stream_runner import prime_chunks
from monitor.windows import hop_frames_for

__all__ = [
    "StreamPlan",
    "add_stream",
    "convert_stream_int8",
    "plan_stream",
    "state_quant_mismatch",
    "stream_part",
    "stream_representative",
    "streaming_model",
]


class StreamPlan:
    """Which body layers mix rows, how many rows each keeps, and where the head starts.

    Made by `plan_stream` from a window model; `streaming_model` builds the model that keeps
    those rows as state. The parameters are the attributes commented below (rows are frames
    along time after each layer's striding).
    """

    def __init__(self, layers: list, keep: list[int], head_rows: int, head_keep: int, body_out,
                 macs_per_hop: int) -> None:  # fmt: skip
        self.macs_per_hop = macs_per_hop  # of the convolutions, for the rows one hop adds
        self.layers = layers  # the body layers in order (a chain)
        self.keep = keep  # rows kept before each layer (0 for a layer that works row by row)
        self.head_rows = head_rows  # rows of the body's output over one window
        self.head_keep = head_keep  # of which kept from earlier hops
        self.body_out = body_out  # the window model's body output tensor (where the head starts)


def _time_kernel_stride(layer) -> tuple[int, int] | None:
    """(kernel, stride) along time for a layer that mixes rows; None for a row-wise layer."""
    from keras import layers as L

    if isinstance(layer, L.Conv2D):
        if layer.padding != "valid":
            raise ValueError(f"{layer.name}: pads along time ('{layer.padding}'), so it cannot stream")
        return int(layer.kernel_size[0]), int(layer.strides[0])
    if isinstance(layer, (L.MaxPooling2D, L.AveragePooling2D)):
        if layer.padding != "valid":
            raise ValueError(f"{layer.name}: pads along time, so it cannot stream")
        return int(layer.pool_size[0]), int(layer.strides[0])
    if isinstance(layer, L.ZeroPadding2D) and tuple(layer.padding[0]) != (0, 0):
        raise ValueError(f"{layer.name}: pads along time, so it cannot stream")
    return None


def plan_stream(model, window_frames: int, hop_frames: int) -> StreamPlan:
    """The streaming plan of a window model built by `training.models.build_cnn` (body = chain)."""
    body = []
    n, new, keep, macs = window_frames, hop_frames, [], 0
    for layer in model.layers[1:]:
        if layer.name.startswith("head_") or layer.name == "probs":
            break
        if isinstance(layer, keras_layers().Cropping2D):  # drops a window's oldest rows: nothing to do per hop
            oldest, newest = (int(c) for c in layer.cropping[0])
            if newest:
                raise ValueError(f"{layer.name}: crops the newest rows, so it cannot stream")
            n -= oldest
            continue
        body.append(layer)
        ks = _time_kernel_stride(layer)
        if ks is None:
            keep.append(0)
            continue
        k, s = ks
        o = (n - k) // s + 1
        left = n - (s * (o - 1) + k)
        kept = k - s + left
        if new % s or (kept + new - k) // s + 1 != new // s:
            raise ValueError(f"{layer.name}: a hop of {hop_frames} frames is not a whole number of its rows")
        keep.append(kept)
        n, new = o, new // s
        if isinstance(layer, keras_layers().Conv2D):
            _, rows, cols, ch = layer.output.shape
            macs += new * cols * ch * layer.input.shape[-1] * layer.kernel_size[0] * layer.kernel_size[1]
    if new > n:
        raise ValueError(f"a hop of {hop_frames} frames adds more rows than a window has")
    return StreamPlan(body, keep, head_rows=n, head_keep=n - new, body_out=body[-1].output, macs_per_hop=int(macs))


def keras_layers():
    from keras import layers

    return layers


def streaming_model(model, window_frames: int, hop_frames: int):
    """The Keras streaming model sharing `model`'s weights.

    Inputs {"new_frames": (hop, mels, 1), "state_00": ...}; outputs {"probs": ..., "state_00": ...}:
    feed each output state back as the same-named input at the next hop."""
    import keras
    from keras import layers as L

    plan = plan_stream(model, window_frames, hop_frames)
    head = keras.Model(plan.body_out, model.output)
    new = keras.Input((hop_frames, *model.input.shape[2:]), name="new_frames")
    inputs, outputs, x, i = {"new_frames": new}, {}, new, 0
    for layer, kept in zip(plan.layers, plan.keep, strict=True):
        if kept:
            key = f"state_{i:02d}"
            st = keras.Input((kept, *x.shape[2:]), name=key)
            inputs[key] = st
            x = L.Concatenate(axis=1, name=f"stream_cat_{i:02d}")([st, x])
            outputs[key] = x[:, x.shape[1] - kept :]
            i += 1
        x = layer(x)
    key = f"state_{i:02d}"
    ring = keras.Input((plan.head_keep, *x.shape[2:]), name=key)
    inputs[key] = ring
    h = L.Concatenate(axis=1, name=f"stream_cat_{i:02d}")([ring, x]) if plan.head_keep else x
    outputs[key] = h[:, h.shape[1] - plan.head_keep :]
    outputs = {"probs": head(h), **outputs}
    return keras.Model(inputs, outputs, name=f"{model.name}_stream")


def zero_states(sm) -> dict[str, np.ndarray]:
    return {k: np.zeros((1, *t.shape[1:]), np.float32) for k, t in _named_inputs(sm).items() if k != "new_frames"}


def _named_inputs(sm) -> dict:
    return {t.name.split(":")[0]: t for t in sm.inputs} if isinstance(sm.inputs, list) else dict(sm.inputs)


def stream_representative(sm, windows: np.ndarray, hop_frames: int) -> list[dict[str, np.ndarray]]:
    """Calibration inputs for the int8 converter: every hop of priming each (normalised) window,
    with the states the float streaming model carries between them."""
    out = []
    for w in windows:
        states = zero_states(sm)
        for chunk in prime_chunks(w, hop_frames):
            feed = {"new_frames": chunk[None].astype(np.float32), **states}
            out.append(feed)
            res = sm(feed, training=False)
            states = {k: np.asarray(v) for k, v in res.items() if k != "probs"}
    return out


def convert_stream_int8(model, windows: np.ndarray, window_frames: int, hop_frames: int) -> bytes:
    """Full-integer int8 TFLite of the streaming model, calibrated on real windows' hops."""
    from training.export import int8_tflite

    sm = streaming_model(model, window_frames, hop_frames)
    rep = stream_representative(sm, windows, hop_frames)
    return int8_tflite(sm, lambda: iter(rep))


def state_quant_mismatch(tflite: bytes) -> str | None:
    """The first state an int8 streaming model quantises differently as input and as output, or
    None. The runner feeds a state back as raw int8, so it refuses such a model; the converter
    usually gives both the same parameters, but not always (an 0.75 s window's export did not)."""
    from monitor.interpreter import load_interpreter_class
    from monitor.stream_runner import first_requantised_state

    interpreter_cls, _ = load_interpreter_class()
    sig = interpreter_cls(model_content=tflite).get_signature_runner()
    return first_requantised_state(sig.get_input_details(), sig.get_output_details())


def stream_part(model, windows: np.ndarray, window_frames: int, hop_frames: int) -> tuple[bytes, int, int]:
    """`write_bundle`'s `stream` argument: (int8 streaming TFLite, hop frames, MACs per hop)."""
    tfl = convert_stream_int8(model, windows, window_frames, hop_frames)
    return tfl, hop_frames, plan_stream(model, window_frames, hop_frames).macs_per_hop


def audio_windows(paths: list[Path], bundle, hop_frames: int, per_file: int = 40) -> np.ndarray:
    """Normalised (frames, mels, 1) windows at the daemon's hop from real recordings."""
    from monitor.frontend import LogMelFrontend
    from training.datasets import load_audio

    fe = LogMelFrontend(bundle.frontend)
    out = []
    for p in paths:
        lm = fe(load_audio(p, bundle.frontend.sample_rate))
        lm = (lm - bundle.norm_mean) / bundle.norm_std
        starts = range(0, len(lm) - bundle.window_frames + 1, hop_frames)
        pick = np.linspace(0, len(starts) - 1, min(per_file, len(starts))).astype(int) if len(starts) else []
        out += [lm[starts[i] : starts[i] + bundle.window_frames] for i in pick]
    if not out:
        raise SystemExit("stream_export: no audio as long as one window")
    return np.stack(out).astype(np.float32)[..., None]


def add_stream(base: str | Path, audio: list[Path], hop_seconds: float = 0.5) -> Path:
    """Give an existing bundle (with its `.weights.h5`) its streaming model; return its path."""
    from monitor.bundle import bundle_paths
    from training.float_model import load_float_model

    model, bundle = load_float_model(base)
    if model is None:
        raise SystemExit(f"stream_export: {base} has no .weights.h5 or no model.arch in its JSON")
    hop = hop_frames_for(hop_seconds, bundle.frontend)
    tfl, hop, macs = stream_part(model, audio_windows(audio, bundle, hop), bundle.window_frames, hop)
    tflite, json_path = bundle_paths(base)
    out = tflite.with_suffix(".stream.tflite")
    out.write_bytes(tfl)
    data = json.loads(json_path.read_text())
    data["stream"] = {"tflite": out.name, "hop_frames": hop, "macs_per_hop": macs}
    json_path.write_text(json.dumps(data, indent=2) + "\n")
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m training.stream_export", description=__doc__.splitlines()[0])
    ap.add_argument("--model", type=Path, required=True, help="bundle path without suffix (needs .weights.h5)")
    ap.add_argument("--audio", type=Path, nargs="+", required=True, help="recordings for int8 calibration")
    args = ap.parse_args(argv)
    print(add_stream(args.model, args.audio))
    return 0


if __name__ == "__main__":
    sys.exit(main())
