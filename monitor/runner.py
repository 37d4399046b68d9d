"""Run an int8 TFLite bundle on log-mel windows: normalise, quantise, invoke, dequantise.

Interpreter: `ai_edge_litert` (x86-64 and 64-bit Pi OS), falling back to `tflite_runtime`
(32-bit Pi OS). Never TensorFlow: the daemon installs only the runtime set.
"""

from __future__ import annotations

import ctypes
import os
import tempfile
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np

from monitor.bundle import ModelBundle, load_bundle
from monitor.errors import BundleError
from monitor.interpreter import load_interpreter_class, quiet_native_stderr

__all__ = [
    "ModelRunner",
    "load_interpreter_class",
    "open_model",
    "fold_weight_dequantize",
    "quiet_native_stderr",
    "release_mapped_file",
    "streams_at",
]


_MADV_DONTNEED = 4  # Linux


def release_mapped_file(path: str | Path) -> int:
    """Drop this process's resident pages of every read-only mapping of `path`; bytes released.

    The runtime maps the model file and reads its weights once, while the interpreter is built:
    XNNPACK packs them into buffers of its own, so the mapped copy is dead weight in RSS from then
    on. MADV_DONTNEED on a private file mapping only discards pages the kernel could reclaim any
    time: a later read faults them in again from the file, so nothing can read wrong data (the
    file must stay as it is, as for any mapping). Linux only; elsewhere 0.
    """
    try:
        real = os.path.realpath(path)
        libc = ctypes.CDLL(None, use_errno=True)
        madvise = libc.madvise
        with open("/proc/self/maps") as fh:
            lines = fh.readlines()
    except (OSError, AttributeError):
        return 0
    madvise.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
    released = 0
    for line in lines:
        parts = line.split(maxsplit=5)
        if len(parts) < 6 or parts[5].rstrip("\n") != real or "w" in parts[1]:
            continue
        start, end = (int(x, 16) for x in parts[0].split("-"))
        if madvise(start, end - start, _MADV_DONTNEED) == 0:
            released += end - start
    return released


def fold_weight_dequantize(model: bytes, out: BinaryIO) -> int:
    """Write to `out` a weight-only int8 model (`precision: weight_int8`: int8 constant weights
    behind DEQUANTIZE ops, float arithmetic) with every such DEQUANTIZE done once here: its output
    becomes a float32 constant, computed as the runtime dequantises, (q - zero_point) * scale per
    channel. Returns the number of DEQUANTIZE ops folded; 0 (and nothing written) when there is
    none or the flatbuffer schema is not installed (`tflite_runtime`). The network and its scores
    stay the same (`tests/test_bundle_runner.py` checks them bit for bit); the file is 4x larger.

    Why: XNNPACK dequantises each such weight into a float32 buffer that it keeps for the
    interpreter's lifetime, and packs a second float32 copy for its kernels; float constants it
    packs straight from the mapped file, whose pages `release_mapped_file` then drops
    (models/audioset: the interpreter adds 29 MB instead of 43.5 MB, 39.5 MB at most while
    loading). The float weights go after the flatbuffer, which points at them by file offset
    (TFLite's layout for large models), one at a time: the fold itself needs about one layer's
    weights of memory.
    """
    try:
        import flatbuffers  # type: ignore[import-untyped]
        from ai_edge_litert import schema_py_generated as fb  # type: ignore[import-untyped]
    except ImportError:
        return 0
    m = fb.ModelT.InitFromPackedBuf(model, 0)
    deq = {
        i
        for i, code in enumerate(m.operatorCodes or [])
        if max(code.builtinCode, code.deprecatedBuiltinCode) == fb.BuiltinOperator.DEQUANTIZE
    }
    weights: list[tuple[Any, Any]] = []  # (its new buffer, a function computing its float32 data)
    for sg in m.subgraphs or []:
        keep = []
        for op in sg.operators or []:
            make = _dequantizer(m, sg, op, fb) if op.opcodeIndex in deq else None
            if make is None:
                keep.append(op)
                continue
            buf = fb.BufferT()
            buf.offset, buf.size = 1 << 40, int(np.prod(sg.tensors[int(op.inputs[0])].shape)) * 4
            m.buffers.append(buf)
            sg.tensors[int(op.outputs[0])].buffer = len(m.buffers) - 1
            weights.append((buf, make))
        sg.operators = keep
    if not weights:
        return 0
    referenced = {int(t.buffer) for sg in m.subgraphs or [] for t in sg.tensors or []}
    for i, buf in enumerate(m.buffers):
        if i not in referenced:
            buf.data = None  # int8 codes that only the folded ops read

    def packed() -> bytearray:
        builder = flatbuffers.Builder(1 << 16)
        builder.Finish(m.Pack(builder), file_identifier=b"TFL3")
        return builder.Output()

    size = len(packed())  # with placeholder offsets of the same width as the real ones
    pos = _align16(size)
    for buf, _ in weights:
        buf.offset, pos = pos, _align16(pos + buf.size)
    head = packed()
    if len(head) != size:  # cannot happen: offsets are fixed-width fields
        raise ValueError("flatbuffer size changed between passes")
    out.write(head)
    written = len(head)
    for buf, make in weights:
        out.write(b"\0" * (buf.offset - written))
        data = make()
        out.write(memoryview(data).cast("B"))
        written = buf.offset + data.nbytes
    return len(weights)


def _align16(n: int) -> int:
    return (n + 15) // 16 * 16


def _dequantizer(m: Any, sg: Any, op: Any, fb: Any) -> Any:
    """For a DEQUANTIZE op whose one input is an int8 constant: a function returning its float32
    output; else None."""
    if op.inputs is None or op.outputs is None or len(op.inputs) != 1 or len(op.outputs) != 1:
        return None
    src, dst = sg.tensors[int(op.inputs[0])], sg.tensors[int(op.outputs[0])]
    data = m.buffers[src.buffer].data if 0 < src.buffer < len(m.buffers) else None
    q = src.quantization
    if src.type != fb.TensorType.INT8 or dst.type != fb.TensorType.FLOAT32 or data is None or q is None:
        return None
    if q.scale is None or q.zeroPoint is None or src.shape is None or not len(data):
        return None
    shape = [int(x) for x in src.shape]
    if int(np.prod(shape)) != len(data) or not shape:
        return None
    scale = np.asarray(q.scale, dtype=np.float32)
    zero = np.asarray(q.zeroPoint, dtype=np.int32)
    axis_shape = [1] * len(shape)
    if scale.size > 1:
        if scale.size != shape[q.quantizedDimension] or zero.size not in (1, scale.size):
            return None
        axis_shape[q.quantizedDimension] = -1
        if zero.size > 1:
            zero = zero.reshape(axis_shape)

    def make() -> np.ndarray:
        codes = np.frombuffer(np.asarray(data, dtype=np.uint8).tobytes(), dtype=np.int8).reshape(shape)
        return ((codes.astype(np.int32) - zero).astype(np.float32) * scale.reshape(axis_shape)).astype(np.float32)

    return make


def _on_disk(directory: str) -> bool:
    """`directory` is writable and not on a RAM file system (tmpfs, ramfs): a file there costs no RAM
    once its pages are released."""
    if not os.access(directory, os.W_OK):
        return False
    try:
        with open("/proc/self/mounts") as fh:
            mounts = [line.split()[:3] for line in fh]
    except OSError:
        return False
    real = os.path.realpath(directory)
    best = max(
        (m for m in mounts if len(m) == 3 and (real == m[1] or real.startswith(m[1].rstrip("/") + "/"))),
        key=lambda m: len(m[1]),
        default=None,
    )
    return best is not None and best[2] not in ("tmpfs", "ramfs")


def _folded_model_file(bundle: ModelBundle) -> Path | None:
    """A temporary file on disk with `bundle`'s weight-only model folded to float32 weights
    (`fold_weight_dequantize`), or None (not such a bundle, nothing to fold, no disk directory).
    The caller deletes it once the interpreter has mapped it."""
    if (bundle.meta or {}).get("precision") != "weight_int8":
        return None
    cache = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    candidates = [tempfile.gettempdir(), os.environ.get("SOUNDMON_STATE_DIR") or "", cache]
    directory = next((d for d in candidates if d and os.path.isdir(d) and _on_disk(d)), None)
    if directory is None:
        return None
    fd, name = tempfile.mkstemp(prefix=f"soundmon-{bundle.name}-", suffix=".tflite", dir=directory)
    try:
        with os.fdopen(fd, "wb") as fh:
            folded = fold_weight_dequantize(Path(bundle.tflite_path).read_bytes(), fh)
    except BaseException:
        os.unlink(name)
        raise
    if not folded:
        os.unlink(name)
        return None
    return Path(name)


class ModelRunner:
    """One loaded int8 model. `predict(window)` maps a (frames, n_mels) log-mel window to label
    scores.

    It hides the TFLite runtime (whichever imports first, `runtime` names it) and folds the
    bundle's input normalisation and quantisation into one multiply-add per value. Parameters:
    `bundle`, a loaded bundle (`load_bundle`); `num_threads`, the interpreter's threads (>= 1).
    BundleError (one line) when the model cannot be loaded or does not match the bundle (input
    shape, number of outputs). `folded_weights` says a weight-only int8 model runs from a
    float-weight copy (`fold_weight_dequantize`).
    """

    def __init__(self, bundle: ModelBundle, num_threads: int = 1) -> None:
        self.bundle = bundle
        interpreter_cls, self.runtime = load_interpreter_class()
        # A weight-only int8 bundle runs from a float32-weight copy of its model (the same scores,
        # one float copy of the weights in memory instead of two: `fold_weight_dequantize`).
        try:
            folded = _folded_model_file(bundle)
        except Exception:  # noqa: BLE001 - an unusual file: run the bundle's own model as it is
            folded = None
        model_path = folded or Path(bundle.tflite_path)
        self.folded_weights = folded is not None
        try:
            with quiet_native_stderr():
                self._interp = interpreter_cls(model_path=str(model_path), num_threads=int(num_threads))
                self._interp.allocate_tensors()
        except Exception as exc:  # the runtimes raise ValueError/RuntimeError with long texts
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise BundleError(f"model {bundle.tflite_path}: cannot load TFLite model ({first})") from None
        finally:
            if folded is not None:
                # The interpreter holds its own mapping; the name is not needed (nothing left behind).
                self.released_bytes = release_mapped_file(folded)
                folded.unlink(missing_ok=True)
        if folded is None:
            self.released_bytes = release_mapped_file(model_path)
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
        """The model takes integer-quantised input (a full-integer model)."""
        return bool(self._in_scale) and np.issubdtype(self._in_dtype, np.integer)

    def predict(self, window: np.ndarray) -> np.ndarray:
        """Scores (n_labels,) float32 in [0, 1] for one (frames, n_mels) log-mel window (the
        bundle's front-end's values, before normalisation); ValueError for another shape."""
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
