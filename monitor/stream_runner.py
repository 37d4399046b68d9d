"""Run a bundle's streaming model: a window's scores from only the frames its hop added.

A bundle may carry, beside its window model, `<name>.stream.tflite` (see
`training.stream_export`): the same network cut so that each layer keeps the rows the next
hop still needs (its *state*) and computes only the rows a hop adds, about 1/8 of the window's
work at the default 0.5 s hop. `StreamingRunner.predict(window)` takes whole windows like
`ModelRunner.predict`: when a window is the last one moved on by exactly one hop it runs one
step; otherwise (the first window, after a gap or a level-gated stretch) it rebuilds the state
from the window alone (one step per hop of the window), which gives that window's scores too.
`predict_next(window)` skips the comparison for a caller that knows the window is the next one
(the pipeline, which counts the frames of its one stream, through `NextWindow`).
"""

from __future__ import annotations

import numpy as np

from monitor.bundle import ModelBundle
from monitor.errors import BundleError
from monitor.interpreter import load_interpreter_class, quiet_native_stderr

__all__ = ["NextWindow", "StreamingRunner", "first_requantised_state", "prime_chunks"]


def prime_chunks(window: np.ndarray, hop_frames: int) -> list[np.ndarray]:
    """A window as hop-sized chunks ending at its last frame, padded in front with its first
    frame: from zero state they leave exactly that window's state and scores, because no row
    of the window depends on a frame before it (the model never pads along time)."""
    n = -(-len(window) // hop_frames) * hop_frames
    padded = np.concatenate([np.repeat(window[:1], n - len(window), axis=0), window])
    return [padded[i : i + hop_frames] for i in range(0, n, hop_frames)]


def first_requantised_state(inputs: dict, outputs: dict) -> str | None:
    """The first state (`state_NN`, by name) whose output is quantised differently from its input,
    given a signature's input and output details; None when all match. A state goes back in as
    raw int8, so such a model cannot stream (training checks its exports with this too)."""
    for key in sorted(k for k in inputs if k.startswith("state_")):
        if key in outputs and tuple(inputs[key]["quantization"]) != tuple(outputs[key]["quantization"]):
            return key
    return None


class StreamingRunner:
    """One loaded streaming model; `predict(window)` as `ModelRunner.predict`, cheaper per hop.

    Parameters: `bundle`, a loaded bundle with a streaming model (`stream_tflite_path`,
    `stream_hop_frames`); `num_threads`, the interpreter's threads. BundleError (one line) when
    the bundle has none or it cannot run: not loadable, not a soundmon streaming model (inputs
    new_frames and state_NN, output probs), wrong shape or label count, a state quantised
    differently as input and output, or not full-integer int8. `steps` and `rebuilds` count the
    windows run as one step and those that rebuilt the state.
    """

    def __init__(self, bundle: ModelBundle, num_threads: int = 1) -> None:
        if bundle.stream_tflite_path is None or not bundle.stream_hop_frames:
            raise BundleError(f"model {bundle.name}: the bundle has no streaming model")
        self.bundle = bundle
        self.hop_frames = int(bundle.stream_hop_frames)
        interpreter_cls, self.runtime = load_interpreter_class()
        path = bundle.stream_tflite_path
        try:
            with quiet_native_stderr():
                self._interp = interpreter_cls(model_path=str(path), num_threads=int(num_threads))
                self._interp.allocate_tensors()
                sig = self._interp.get_signature_runner()
                ins, outs = sig.get_input_details(), sig.get_output_details()
        except Exception as exc:  # the runtimes raise ValueError/RuntimeError with long texts
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise BundleError(f"model {path}: cannot load the streaming TFLite model ({first})") from None
        states = sorted(k for k in ins if k.startswith("state_"))
        if "new_frames" not in ins or "probs" not in outs or any(k not in outs for k in states):
            raise BundleError(f"model {path}: not a soundmon streaming model (new_frames, probs, state_NN)")
        shape = tuple(int(x) for x in ins["new_frames"]["shape"])
        if shape[1:3] != (self.hop_frames, bundle.frontend.n_mels):
            raise BundleError(f"model {path}: input {list(shape)} is not {self.hop_frames} frames x "
                              f"{bundle.frontend.n_mels} mel bands")  # fmt: skip
        n_out = int(np.prod(outs["probs"]["shape"][1:]))
        if n_out != len(bundle.labels):
            raise BundleError(f"model {path}: {n_out} outputs but the bundle lists {len(bundle.labels)} labels")
        self._in = ins["new_frames"]
        self._out = outs["probs"]
        # (input detail, output detail) per state; an output fed back as the next input
        self._states = [(ins[k], outs[k]) for k in states]
        # The state goes back in as raw int8, so an output and its input must share one
        # quantisation (the converter usually gives them the same; a model that does not is refused).
        bad = first_requantised_state(ins, outs)
        if bad is not None:
            raise BundleError(f"model {path}: state {bad} is quantised differently as input and output")
        scale, zero = self._in["quantization"]
        self.quantized = bool(scale) and np.issubdtype(self._in["dtype"], np.integer)
        if not self.quantized:
            raise BundleError(f"model {path}: the streaming model must be full-integer int8")
        self._a = 1.0 / (bundle.norm_std * scale)  # normalise and quantise in one multiply-add
        self._b = zero - bundle.norm_mean * self._a
        self._out_scale, self._out_zero = self._out["quantization"]
        # Callables returning numpy views of the interpreter's own buffers: a state moves from
        # output to input with one copy, without the checks and copies of get/set_tensor. (A view
        # must not outlive the next invoke, so a fresh one is taken at every step.)
        self._new_view = self._interp.tensor(self._in["index"])
        self._out_view = self._interp.tensor(self._out["index"])
        self._state_views = [(self._interp.tensor(i["index"]), self._interp.tensor(o["index"])) for i, o in self._states]
        # Buffers reused at every call (speed: no allocation per hop): the quantised new frames,
        # the last window and the overlap comparison.
        n_mels = bundle.frontend.n_mels
        self._q = np.empty((self.hop_frames, n_mels), dtype=np.float32)
        self._last = np.empty((bundle.window_frames, n_mels), dtype=np.float32)
        self._have_last = False  # `_last` holds the last window scored
        self._have_state = False  # the state is that of the last window scored (`predict_next`)
        self._same = np.empty((max(bundle.window_frames - self.hop_frames, 0), n_mels), dtype=bool)
        # One-byte outputs dequantise through a table of all 256 codes, built with the same
        # float32 arithmetic as the formula in `predict` (so the scores are bit-identical).
        self._out_lut: np.ndarray | None = None
        out_dtype = np.dtype(self._out["dtype"])
        if out_dtype.kind in "iu" and out_dtype.itemsize == 1:
            codes = np.arange(256, dtype=np.uint8).view(out_dtype)
            self._out_lut = self._dequantise(codes)
        self.steps = 0  # hops run as one step
        self.rebuilds = 0  # windows that rebuilt the state

    def _zero_states(self) -> None:
        for inp, _ in self._states:
            _, zero = inp["quantization"]
            self._interp.set_tensor(inp["index"], np.full(inp["shape"], zero, dtype=inp["dtype"]))

    def _dequantise(self, y: np.ndarray) -> np.ndarray:
        return ((y.astype(np.float32) - self._out_zero) * self._out_scale).astype(np.float32)

    def _step(self, frames: np.ndarray) -> None:
        # As `np.clip(np.rint(frames * a + b), -128, 127)`, into one reused buffer; minimum and
        # maximum are clip's result without its Python wrapper (NaN propagates in both).
        q = self._q
        np.multiply(frames, self._a, out=q)
        np.add(q, self._b, out=q)
        np.rint(q, out=q)
        np.minimum(q, 127, out=q)
        np.maximum(q, -128, out=q)
        self._new_view()[0, ..., 0] = q
        self._interp.invoke()
        for view_in, view_out in self._state_views:
            np.copyto(view_in(), view_out())

    def predict(self, window: np.ndarray) -> np.ndarray:
        """Scores (n_labels,) float32 in [0, 1] for one (frames, n_mels) log-mel window (the
        bundle's front-end's values, before normalisation); ValueError for another shape."""
        x = np.asarray(window, dtype=np.float32)
        if x.shape != self._last.shape:
            raise ValueError(f"window shape {x.shape}, model wants {self._last.shape}")
        hop = self.hop_frames
        # One step only when the window is the last one moved on by exactly one hop (elementwise
        # equal overlap, as np.array_equal, into a reused buffer); anything else rebuilds.
        if self._have_last and np.equal(x[:-hop], self._last[hop:], out=self._same).all():
            self._step(x[-hop:])
            self.steps += 1
        else:
            self._have_state = False  # (until the rebuild is done)
            self._zero_states()
            for chunk in prime_chunks(x, hop):
                self._step(chunk)
            self.rebuilds += 1
        np.copyto(self._last, x)
        self._have_last = self._have_state = True
        return self._scores()

    @property
    def scored(self) -> int:
        """Windows scored so far (`steps` + `rebuilds`): a caller that noted it at its last
        window knows from it whether anyone else has run this runner since (`predict_next`)."""
        return self.steps + self.rebuilds

    def predict_next(self, window: np.ndarray) -> np.ndarray:
        """`predict(window)` for a caller that knows `window` is the last window this runner
        scored (no other call since: `scored`) moved on by exactly `hop_frames` frames of the
        same stream (the pipeline's next window): one step, without comparing the overlap or
        keeping a copy of the window (speed). A later `predict` has nothing to compare with and
        rebuilds. Without a last window, `predict`."""
        if not self._have_state:
            return self.predict(window)
        x = np.asarray(window, dtype=np.float32)
        if x.shape != self._last.shape:
            raise ValueError(f"window shape {x.shape}, model wants {self._last.shape}")
        self._have_last = False  # `_last` is not this window
        self._step(x[-self.hop_frames :])
        self.steps += 1
        return self._scores()

    def _scores(self) -> np.ndarray:
        """The scores of the step just run, dequantised."""
        y = self._out_view().reshape(-1)  # a view: it must not outlive this call
        if self._out_lut is not None:
            return self._out_lut[y.view(np.uint8)]
        return self._dequantise(y)


class NextWindow:
    """A caller's note of the last window it had a runner score, so that the next one, exactly one
    runner hop on in the caller's own stream (frame counts) with no other call to the runner
    between (`StreamingRunner.scored`), steps by `predict_next` (speed); anything else, and any
    runner without it, goes through `predict`. The caller vouches for the frame counts: one
    stream, counted without gaps; `forget()` after a gap or new settings."""

    def __init__(self) -> None:
        self._last: tuple[object, int, int] | None = None  # (runner, end frame count, runner.scored)

    def forget(self) -> None:
        """The next window is not the last one moved on by a hop (a gap, a new hop or runner)."""
        self._last = None

    def predict(self, runner, window: np.ndarray, end: int | None) -> np.ndarray:
        """`runner`'s scores on `window`, which ends at frame count `end` (None: not counted)."""
        last, self._last = self._last, None
        if (last is not None and end is not None and last[0] is runner and end - last[1] == runner.hop_frames
                and last[2] == runner.scored):  # fmt: skip
            scores = runner.predict_next(window)
        else:
            scores = runner.predict(window)
        if end is not None and hasattr(runner, "predict_next"):
            self._last = (runner, end, runner.scored)
        return scores
