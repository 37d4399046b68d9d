"""`soundmon bench --compare-tflite PATH`: time another TFLite model's inference alone over the
bench's audio, so the pipeline's whole cost can be printed as a ratio of it.

The model must take a raw waveform (one float32 input `[1, N]` or `[N]`, 16 kHz mono in [-1, 1]),
as YAMNet's TF Hub export does (`[1, 15600]`, 0.975 s). It runs as `monitor.runner` runs a
bundle: the first TFLite runtime that imports, its default interpreter (XNNPACK delegate), the
bench's threads. One window every `hop` seconds of the audio; only `invoke()` is timed (CPU
time of the calling thread with one interpreter thread, of the whole process with more; after
warm-up), which is the model's inference alone: no audio reading, no front-end
of ours, no detector, no MQTT.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np
import soundfile as sf

from monitor.errors import AudioFileError, BundleError
from monitor.interpreter import load_interpreter_class, quiet_native_stderr
from monitor.resample import resample, to_mono

__all__ = ["COMPARE_HOP_S", "WaveformModel", "open_waveform_model", "read_compare_audio"]

COMPARE_HOP_S = 0.48
"""YAMNet's own patch hop (its `patch_hop_seconds`): how often YAMNet scores a stream."""

WARMUP_INVOKES = 3


class WaveformModel:
    """A loaded raw-waveform TFLite model; `cpu_ms_per_audio_second` times its inference, the
    yardstick the bench prints the pipeline's cost against. Built by `open_waveform_model`.

    Parameters: `path`, the model file (named in errors); `interpreter`, its TFLite interpreter
    with tensors allocated and one float32 input `[1, N]` or `[N]`; `threads`, the interpreter's
    threads. `window_samples` is N.
    """

    def __init__(self, path: Path, interpreter: Any, threads: int = 1) -> None:
        self.path = path
        self.threads = threads
        self._interp = interpreter
        inp = interpreter.get_input_details()[0]
        self._index = inp["index"]
        self._shape = tuple(int(x) for x in inp["shape"])
        self.window_samples = self._shape[-1]

    def cpu_ms_per_audio_second(self, audio: np.ndarray, hop: float = COMPARE_HOP_S,
                                sample_rate: int = 16000) -> tuple[float, int]:  # fmt: skip
        """(CPU ms of `invoke()` per audio second, windows run) over `audio` (float32 mono), one
        window every `hop` seconds; each window stands for `hop` seconds of the stream.

        `sample_rate` is the audio's (Hz). BundleError (one line) when the audio is shorter than
        one window."""
        step = int(round(hop * sample_rate))
        starts = range(0, len(audio) - self.window_samples + 1, step)
        if not starts:
            raise BundleError(
                f"--compare-tflite {self.path}: the audio ({len(audio) / sample_rate:.2f} s) is shorter than "
                f"the model's window of {self.window_samples} samples"
            )
        first = audio[: self.window_samples].reshape(self._shape)
        for _ in range(WARMUP_INVOKES):
            self._interp.set_tensor(self._index, first)
            self._interp.invoke()
        # One interpreter thread computes in this thread: count this thread's CPU only. The bench
        # process's other threads are not the model's cost: a thread the librosa comparison had
        # started kept spinning through this loop and read as half as much again
        # (2.44 against 1.59 ms per audio second for YAMNet, 2026-12-04). With more interpreter
        # threads their work is the model's, so the whole process counts.
        clock = time.thread_time if self.threads == 1 else time.process_time
        cpu = 0.0
        for s in starts:
            self._interp.set_tensor(self._index, audio[s : s + self.window_samples].reshape(self._shape))
            t0 = clock()
            self._interp.invoke()
            cpu += clock() - t0
        return 1000.0 * cpu / (len(starts) * hop), len(starts)


def open_waveform_model(path: Path, threads: int = 1) -> WaveformModel:
    """Load `path` as a raw-waveform model; a missing, corrupt or non-waveform file is a
    `BundleError` (one line, exit 2), raised before any measuring starts."""
    if not path.is_file():
        raise BundleError(f"--compare-tflite {path}: no such file")
    interpreter_cls, _ = load_interpreter_class()
    try:
        with quiet_native_stderr():
            interp = interpreter_cls(model_path=str(path), num_threads=int(threads))
            interp.allocate_tensors()
    except Exception as exc:  # the runtimes raise ValueError/RuntimeError with long texts
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise BundleError(f"--compare-tflite {path}: cannot load TFLite model ({first})") from None
    inp = interp.get_input_details()
    shape = [int(x) for x in inp[0]["shape"]] if len(inp) == 1 else []
    waveform = len(shape) in (1, 2) and shape[-1] > 0 and (len(shape) == 1 or shape[0] == 1)
    if not waveform or inp[0]["dtype"] != np.float32:
        raise BundleError(
            f"--compare-tflite {path}: not a raw-waveform model (want one float32 input [1, N]; "
            f"it has {[(list(d['shape']), np.dtype(d['dtype']).name) for d in inp]})"
        )
    return WaveformModel(path, interp, int(threads))


def read_compare_audio(audio: Path, seconds: float, sample_rate: int = 16000) -> np.ndarray:
    """The first `seconds` of `audio` (the file the daemon streamed) as float32 mono in [-1, 1],
    downmixed and resampled to `sample_rate` as the daemon's file source does."""
    try:
        with sf.SoundFile(audio) as f:
            block = f.read(frames=int(np.ceil(seconds * f.samplerate)), dtype="float32", always_2d=True)
            rate = int(f.samplerate)
    except (OSError, RuntimeError) as exc:  # soundfile.LibsndfileError is a RuntimeError
        raise AudioFileError(f"{audio}: cannot read audio ({str(exc).strip().splitlines()[0]})") from None
    return resample(to_mono(block), rate, sample_rate)
