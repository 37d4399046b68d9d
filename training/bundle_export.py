"""A trained Keras model → a bundle: the int8 window model, the int8 streaming model when the
body streams (`ARCHS[arch]["time_valid"]`), and optionally the float weights beside them.

Used by `soundmon train` (each CV fold and the final model) and the distillation student.
"""

from __future__ import annotations

from pathlib import Path

from monitor.bundle import CLASS_SMOOTHING_KEY
from monitor.frontend import FrontendParams
from monitor.windows import hop_frames_for
from training.bundle_files import save_float_weights, weights_path_for
from training.console import log
from training.export import convert_int8, representative_windows, write_bundle
from training.models import ARCHS
from training.stream_export import state_quant_mismatch, stream_part

__all__ = ["export_bundle", "stream_hop_seconds"]

STREAM_HOP_SECONDS = 0.5  # the daemon's default hop: the streaming model steps by it
START_MODEL_MAX_SECONDS = 1.5  # a window this short or shorter is a start model (fast start)
STREAM_CALIBRATION_WINDOWS = 100  # windows whose hops calibrate the streaming model's int8


def stream_hop_seconds(window_seconds: float) -> float:
    """The hop a streaming export steps by: the daemon's default hop, or half of it for a start
    model, which the pipeline checks half a hop after each window as well as at it."""
    return STREAM_HOP_SECONDS / 2 if window_seconds <= START_MODEL_MAX_SECONDS else STREAM_HOP_SECONDS


def export_bundle(
    model, feats, labels_idx, n_classes, norm, params: FrontendParams, base, labels, meta, cfg, keep_weights=False
):
    """Write the bundle at `base` (int8, calibrated on `feats`; its streaming model when the body
    streams and quantises its states alike as input and output); return (bundle, int8 bytes)."""
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
    if cfg.class_smoothing:  # the detector calibration the run was asked for (`--class-smoothing`)
        meta = {**meta, "detection": {CLASS_SMOOTHING_KEY: dict(cfg.class_smoothing)}}
    bundle = write_bundle(base, tfl, labels, norm, params, cfg.window_seconds, meta=meta, stream=stream)
    if keep_weights:
        save_float_weights(model, weights_path_for(base))
    return bundle, len(tfl)
