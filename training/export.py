"""Export: full-integer int8 TFLite (representative data from the training set) and the bundle JSON."""

from __future__ import annotations

import contextlib
import io
import json
import os
import warnings
from datetime import datetime, timezone
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402

from monitor.bundle import ModelBundle, bundle_paths, load_bundle  # noqa: E402
from monitor.frontend import FrontendParams  # noqa: E402
from training.augment import AugmentConfig, Augmenter  # noqa: E402
from training.features import ClipFeatures, floor_db  # noqa: E402

__all__ = [
    "PLACEMENT",
    "convert_int8",
    "int8_tflite",
    "keras_path_for",
    "representative_windows",
    "write_bundle",
]

PLACEMENT = {"rule": "start", "pad": "zeros", "clip_score": "mean", "hop_seconds": 0.5}


def keras_path_for(bundle_base: str | Path) -> Path:
    """Where the float Keras model of a bundle is kept (next to it; not shipped to the Pi)."""
    tflite, _ = bundle_paths(bundle_base)
    return tflite.with_suffix(".keras")


def representative_windows(
    feats: list[ClipFeatures],
    labels: np.ndarray,
    n_classes: int,
    norm: tuple[float, float],
    params: FrontendParams,
    window_seconds: float = 4.0,
    n: int = 300,
    seed: int = 0,
) -> np.ndarray:
    """Normalised windows from the training data: half as the daemon places them, half augmented."""
    rng = np.random.default_rng(seed)
    idx = rng.choice(len(feats), size=min(n, len(feats)), replace=len(feats) < n)
    wf = params.frames_for(window_seconds)
    floor = floor_db(params)
    plain = Augmenter(AugmentConfig.off(), wf, n_classes, norm[0], norm[1], floor, seed)
    aug = Augmenter(
        AugmentConfig().with_(time_masks=0, freq_masks=0),
        wf,
        n_classes,
        norm[0],
        norm[1],
        floor,
        seed,
    )
    half = len(idx) // 2
    a, _ = plain.batch(feats, labels, idx[: max(half, 1)])
    b, _ = aug.batch(feats, labels, idx[half:]) if len(idx) > 1 else (a[:0], None)
    return np.concatenate([a, b]).astype(np.float32)


def convert_int8(model, rep: np.ndarray) -> bytes:
    """Full-integer int8 TFLite: int8 input, int8 output (softmax probabilities)."""

    def gen():
        for x in rep:
            yield [x[None].astype(np.float32)]

    return int8_tflite(model, gen)


def int8_tflite(model, representative) -> bytes:
    """Convert a Keras model to full-integer int8 TFLite, calibrated on `representative()`'s inputs
    (lists in input order, or dicts by input name); every input and output int8."""
    import tensorflow as tf

    conv = tf.lite.TFLiteConverter.from_keras_model(model)
    conv.optimizations = [tf.lite.Optimize.DEFAULT]
    conv.representative_dataset = representative
    conv.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    conv.inference_input_type = tf.int8
    conv.inference_output_type = tf.int8
    # The converter prints the saved model's signature to stdout: keep the command's output readable.
    with contextlib.redirect_stdout(io.StringIO()), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return conv.convert()


def _jsonable(obj):
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, (np.floating,)):
        return float(obj)
    if isinstance(obj, (np.integer,)):
        return int(obj)
    if isinstance(obj, Path):
        return str(obj)
    return obj


def write_bundle(
    base: str | Path,
    tflite_bytes: bytes,
    labels: list[str],
    norm: tuple[float, float],
    params: FrontendParams | None = None,
    window_seconds: float = 4.0,
    thresholds: dict[str, float] | None = None,
    meta: dict | None = None,
    keras_model=None,
    stream: tuple[bytes, int, int] | None = None,
) -> ModelBundle:
    """Write `<base>.tflite` and `<base>.json` (and `<base>.keras` if given, and
    `<base>.stream.tflite` from `stream` = (int8 streaming model, hop frames, MACs per hop));
    return the loaded bundle."""
    params = params or FrontendParams()
    tflite_path, json_path = bundle_paths(base)
    tflite_path.parent.mkdir(parents=True, exist_ok=True)
    tflite_path.write_bytes(tflite_bytes)
    stream_path = tflite_path.with_suffix(".stream.tflite")
    if stream is not None:
        stream_path.write_bytes(stream[0])
    else:
        stream_path.unlink(missing_ok=True)  # a stale one from an earlier model must not be run
    meta = dict(meta or {})
    meta.setdefault("created", datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"))
    bundle = ModelBundle(
        name=tflite_path.stem,
        tflite_path=tflite_path,
        labels=list(labels),
        frontend=params,
        window_seconds=float(window_seconds),
        window_frames=params.frames_for(window_seconds),
        norm_mean=float(norm[0]),
        norm_std=float(norm[1]),
        placement=dict(PLACEMENT),
        thresholds=thresholds if thresholds is not None else {lab: 0.5 for lab in labels},
        output_activation="softmax",
        meta=_jsonable(meta),
        stream_tflite_path=stream_path if stream is not None else None,
        stream_hop_frames=stream[1] if stream is not None else None,
        stream_meta={"macs_per_hop": stream[2]} if stream is not None else {},
    )
    json_path.write_text(json.dumps(_jsonable(bundle.to_json_dict()), indent=2) + "\n")
    if keras_model is not None:
        keras_model.save(keras_path_for(base))
    return load_bundle(base)
