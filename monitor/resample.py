"""Resampling to the model's rate with soxr: whole signals (files) and streams (live input)."""

from __future__ import annotations

import numpy as np
import soxr


def to_mono(audio: np.ndarray) -> np.ndarray:
    """Downmix (frames, channels) to mono float32 by averaging; 1-D input is returned as is."""
    audio = np.asarray(audio, dtype=np.float32)
    if audio.ndim == 2:
        audio = audio.mean(axis=1, dtype=np.float32) if audio.shape[1] > 1 else audio[:, 0]
    return np.ascontiguousarray(audio, dtype=np.float32)


def device_frames_for(samples: int, device_rate: int, target_rate: int) -> int:
    """Device frames after which `samples` more at `target_rate` are (nearly) due: a frame or two
    short of the exact count, never over it, so a reader that waits for them wakes at the same
    callback as one that reads every block, or one early (and waits again), never one late.
    At least 1; `samples` itself when the rates agree (or one is unknown)."""
    if samples <= 1:
        return 1
    if device_rate <= 0 or target_rate <= 0 or device_rate == target_rate:
        return int(samples)
    return max(1, int((samples - 1) * device_rate // target_rate) - 1)


def resample(audio: np.ndarray, in_rate: int, out_rate: int) -> np.ndarray:
    """Resample a whole mono signal (no-op when the rates agree)."""
    if in_rate == out_rate:
        return np.asarray(audio, dtype=np.float32)
    return soxr.resample(np.asarray(audio, dtype=np.float32), in_rate, out_rate, quality="HQ")


class StreamResampler:
    """Block-by-block resampling that keeps filter state between blocks (soxr.ResampleStream).

    With equal rates it passes blocks through untouched, so the common 16 kHz case costs nothing.
    Why not `resample` per block: each call would start a new filter, with an edge at every
    block boundary. Parameters: `in_rate` and `out_rate`, Hz.
    """

    def __init__(self, in_rate: int, out_rate: int) -> None:
        self.in_rate = int(in_rate)
        self.out_rate = int(out_rate)
        self._stream = (
            None
            if self.in_rate == self.out_rate
            else soxr.ResampleStream(self.in_rate, self.out_rate, 1, dtype="float32", quality="HQ")
        )
        self._in = 0  # samples given
        self._out = 0  # samples returned

    @property
    def held_back(self) -> int:
        """Output samples the blocks so far are worth and have not come out yet (the filter's
        delay): lost, and to be counted as lost, if this stream ends without `last=True`."""
        return max(0, round(self._in * self.out_rate / self.in_rate) - self._out)

    def process(self, block: np.ndarray, last: bool = False) -> np.ndarray:
        """Resample one mono block; `last=True` flushes the filter's tail at the end of a stream.

        Returns float32 audio at `out_rate`; soxr keeps some samples back as its filter's delay,
        so a block's output may be shorter than its share (the tail comes with `last`)."""
        block = np.asarray(block, dtype=np.float32)
        if self._stream is None:
            return block
        out = self._stream.resample_chunk(block, last=last)
        self._in += len(block)
        self._out += len(out)
        return out
