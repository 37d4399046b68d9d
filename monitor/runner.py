"""Run an int8 TFLite bundle on log-mel windows: normalise, quantise, invoke, dequantise.

Interpreter: `ai_edge_litert` (x86-64 and 64-bit Pi OS), falling back to `tflite_runtime`
(32-bit Pi OS). Never TensorFlow: the daemon installs only the runtime set.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from typing import Any

import numpy as np

from monitor.bundle import ModelBundle, load_bundle
from monitor.errors import BundleError
from monitor.windows import hop_frames_for, start_check_frames

__all__ = [
    "ModelRunner",
    "fast_start_on",
    "load_interpreter_class",
    "open_model",
    "open_start_model",
    "quiet_native_stderr",
    "start_check_seconds",
    "start_runner_for",
    "streams_at",
]


def load_interpreter_class() -> tuple[type, str]:
    """(Interpreter class, package name) from the first TFLite runtime that imports."""
    try:
        from ai_edge_litert.interpreter import Interpreter

        return Interpreter, "ai_edge_litert"
    except ImportError:
        pass
    try:
        from tflite_runtime.interpreter import Interpreter  # type: ignore[import-not-found]

        return Interpreter, "tflite_runtime"
    except ImportError:
        raise BundleError(
            "no TFLite interpreter: install ai-edge-litert (64-bit) or tflite-runtime (32-bit Pi OS)"
        ) from None


@contextlib.contextmanager
def quiet_native_stderr() -> Iterator[None]:
    """Hide the runtime's C++ banner ("INFO: Created TensorFlow Lite XNNPACK delegate") on fd 2.

    It is printed once per interpreter and is noise in a one-line-per-event log; real load
    errors still arrive as Python exceptions.
    """
    try:
        saved = os.dup(2)
    except OSError:
        yield
        return
    try:
        with open(os.devnull, "wb") as null:
            os.dup2(null.fileno(), 2)
            yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


class ModelRunner:
    """One loaded int8 model. `predict(window)` maps a (frames, n_mels) dB window to label scores."""

    def __init__(self, bundle: ModelBundle, num_threads: int = 1) -> None:
        self.bundle = bundle
        interpreter_cls, self.runtime = load_interpreter_class()
        try:
            with quiet_native_stderr():
                self._interp = interpreter_cls(model_path=str(bundle.tflite_path), num_threads=int(num_threads))
                self._interp.allocate_tensors()
        except Exception as exc:  # the runtimes raise ValueError/RuntimeError with long texts
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise BundleError(f"model {bundle.tflite_path}: cannot load TFLite model ({first})") from None
        inp = self._interp.get_input_details()
        out = self._interp.get_output_details()
        if len(inp) != 1 or len(out) != 1:
            raise BundleError(f"model {bundle.tflite_path}: expected one input and one output tensor")
        self._in: dict[str, Any] = inp[0]
        self._out: dict[str, Any] = out[0]
        shape = tuple(int(x) for x in self._in["shape"])
        want = (bundle.window_frames, bundle.frontend.n_mels)
        if len(shape) not in (3, 4) or shape[1:3] != want or (len(shape) == 4 and shape[3] != 1):
            raise BundleError(
                f"model {bundle.tflite_path}: input shape {list(shape)} does not match the bundle's "
                f"window of {want[0]} frames x {want[1]} mel bands"
            )
        self._in_shape = shape
        n_out = int(np.prod(self._out["shape"][1:]))
        if n_out != len(bundle.labels):
            raise BundleError(
                f"model {bundle.tflite_path}: {n_out} outputs but the bundle lists {len(bundle.labels)} labels"
            )
        self._in_dtype = self._in["dtype"]
        self._in_scale, self._in_zero = self._quant(self._in)
        self._out_scale, self._out_zero = self._quant(self._out)
        # Fold normalisation and input quantisation into one affine map: q = x * a + b.
        if self._in_scale:
            self._a = 1.0 / (bundle.norm_std * self._in_scale)
            self._b = self._in_zero - bundle.norm_mean * self._a
        else:
            self._a = 1.0 / bundle.norm_std
            self._b = -bundle.norm_mean * self._a
        info = np.iinfo(self._in_dtype) if np.issubdtype(self._in_dtype, np.integer) else None
        self._clip = (info.min, info.max) if info else None
        self._buf = np.empty(shape, dtype=self._in_dtype)

    @staticmethod
    def _quant(detail: dict[str, Any]) -> tuple[float, int]:
        scale, zero = detail.get("quantization", (0.0, 0))
        return float(scale), int(zero)

    @property
    def quantized(self) -> bool:
        return bool(self._in_scale) and np.issubdtype(self._in_dtype, np.integer)

    def predict(self, window: np.ndarray) -> np.ndarray:
        """Scores (n_labels,) float32 in [0, 1] for one (frames, n_mels) log-mel window in dB."""
        x = np.asarray(window, dtype=np.float32)
        if x.shape != self._in_shape[1:3]:
            raise ValueError(f"window shape {x.shape}, model wants {self._in_shape[1:3]}")
        q = x * self._a + self._b
        if self._clip is not None:
            np.rint(q, out=q)
            np.clip(q, self._clip[0], self._clip[1], out=q)
        self._buf.reshape(x.shape)[...] = q
        self._interp.set_tensor(self._in["index"], self._buf)
        self._interp.invoke()
        y = self._interp.get_tensor(self._out["index"]).reshape(-1)
        if self._out_scale:
            return ((y.astype(np.float32) - self._out_zero) * self._out_scale).astype(np.float32)
        return y.astype(np.float32)


def open_model(path, num_threads: int = 1, hop_seconds: float | None = None) -> tuple[ModelBundle, Any]:
    """Load and check a bundle and its interpreter (one line of BundleError on any problem).

    With `hop_seconds` equal to the hop of the bundle's streaming model (if it has one), the
    runner is a `monitor.stream_runner.StreamingRunner`: the same scores per window, computed
    from only the frames each hop adds."""
    bundle = load_bundle(path)
    if streams_at(bundle, hop_seconds):
        from monitor.stream_runner import StreamingRunner

        return bundle, StreamingRunner(bundle, num_threads=num_threads)
    return bundle, ModelRunner(bundle, num_threads=num_threads)


def streams_at(bundle: ModelBundle, hop_seconds: float | None) -> bool:
    """The bundle has a streaming model that steps by exactly `hop_seconds` (what `open_model` runs)."""
    if hop_seconds is None or not bundle.stream_hop_frames:
        return False
    hop_samples = hop_seconds * bundle.frontend.sample_rate
    return abs(hop_samples - bundle.stream_hop_frames * bundle.frontend.hop_length) < 1e-6


def start_check_seconds(bundle: ModelBundle, hop_seconds: float) -> float:
    """Seconds between the start model's checks at this hop (`monitor.windows.start_check_frames`)."""
    p = bundle.frontend
    return start_check_frames(hop_frames_for(hop_seconds, p)) * p.hop_length / p.sample_rate


def open_start_model(bundle: ModelBundle, num_threads: int = 1, hop_seconds: float | None = None) -> Any:
    """The runner of `bundle`'s start model (the short-window classifier behind
    `detection.fast_start_threshold`); BundleError when the bundle names none or one that does
    not fit it (other labels, a longer window)."""
    if bundle.start_model_path is None:
        raise BundleError(
            f"model {bundle.name}: detection.fast_start_threshold is set but the bundle names no start model"
        )
    start, runner = open_model(bundle.start_model_path, num_threads, hop_seconds)
    if start.labels != bundle.labels:
        raise BundleError(f"start model {start.name}: its labels differ from model {bundle.name}'s")
    if start.window_frames > bundle.window_frames:
        raise BundleError(
            f"start model {start.name}: its window ({start.window_seconds} s) is longer than "
            f"model {bundle.name}'s ({bundle.window_seconds} s)"
        )
    return runner


def fast_start_on(bundle: ModelBundle, detection: Any) -> bool:
    """Fast start runs with this bundle: `detection.fast_start_threshold` is not None, and the
    bundle names a start model or the config set the threshold itself. The default threshold
    stays quietly off for a bundle without a start model (one trained without `--window-seconds
    1`); a threshold the user wrote for such a bundle is refused by `open_start_model`."""
    if detection.fast_start_threshold is None:
        return False
    return bundle.start_model_path is not None or "fast_start_threshold" in detection.model_fields_set


def start_runner_for(bundle: ModelBundle, detection: Any, num_threads: int = 1) -> Any:
    """The start model's runner when fast start is on (`fast_start_on`), else None (nothing is
    loaded while fast start is off). It steps by the pipeline's check interval (half a hop,
    `monitor.windows.start_check_frames`), streaming when the start model's streaming hop is that."""
    if not fast_start_on(bundle, detection):
        return None
    return open_start_model(bundle, num_threads, start_check_seconds(bundle, detection.hop_seconds))
