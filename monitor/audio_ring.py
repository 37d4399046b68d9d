"""Preallocated float32 ring buffer between the PortAudio callback (writer) and the worker (reader).

Why a ring and not a queue of blocks: the callback must do nothing but copy (no allocation,
no DSP, no waiting; see python-sounddevice issues #155 and #17, where work in the callback is
the classic cause of "input overflow"). A queue allocates per block and, when bounded, either
blocks the writer or silently loses whole blocks. This ring is allocated once; the writer copies
into it under a lock that is held only for that copy, and when the reader falls behind the
oldest audio is overwritten and the lost sample frames are **counted**, never waited for.

Counters (all read without the lock; they are plain ints updated by one writer):
`dropped_samples` (sample frames overwritten before being read), `callbacks`, `overflows`
(callbacks that carried PortAudio's input-overflow flag), `last_write_time` (monotonic seconds
of the last write, None before the first), `epoch` (bumped by `reset()`, so the reader can tell
that what follows is a different stream).
"""

from __future__ import annotations

import threading
import time
from typing import NamedTuple

import numpy as np

__all__ = ["AudioRing", "RingRead"]


class RingRead(NamedTuple):
    """One `AudioRing.read()`: the frames, and the epoch and drop total they were read at.

    The reader compares `epoch` and `dropped_total` with its previous read's to tell a reopened
    stream (new epoch) or lost audio (a larger total) from continuous audio."""

    data: np.ndarray  # (frames, channels) float32, oldest first; a copy the caller owns
    epoch: int  # `AudioRing.epoch` at the read (bumped by `reset()`)
    dropped_total: int  # `AudioRing.dropped_samples` at the read (cumulative sample frames)


class AudioRing:
    """Single-writer, single-reader ring of `capacity` frames x `channels` float32 samples.

    Writer: `write(block, overflow)` from the audio callback. Reader: `wait(timeout, min_frames)` then
    `read()`. "Samples" in `dropped_samples` are sample frames (one per channel) at the
    stream's own rate.

    Parameters: `capacity`, the ring's length in sample frames (> 0; the audio it can hold
    before the oldest is overwritten); `channels` (> 0); `sample_rate`, the writing stream's rate
    in Hz, kept for information only (0 = not given). ValueError when `capacity` or `channels` is
    not positive.
    """

    def __init__(self, capacity: int, channels: int = 1, sample_rate: int = 0) -> None:
        if capacity <= 0 or channels <= 0:
            raise ValueError("capacity and channels must be positive")
        self.capacity = int(capacity)
        self.channels = int(channels)
        self.sample_rate = int(sample_rate)  # informational: the rate of the stream that writes here
        self._buf = np.zeros((self.capacity, self.channels), dtype=np.float32)
        self._lock = threading.Lock()
        self._data_ready = threading.Event()
        # Frames the waiting reader wants before it is woken (`wait`'s `min_frames`): the writer
        # sets `_data_ready` only once that many are unread, so a reader that needs a hop of audio
        # sleeps through the callbacks before it instead of waking at each one.
        self._wake_at = 1
        # Positions are running totals of frames (never wrapped), so available = written - read.
        self._written = 0
        self._read = 0
        self.epoch = 0
        self.dropped_samples = 0
        self.callbacks = 0
        self.overflows = 0
        self.last_write_time: float | None = None

    # ---- writer side (the PortAudio callback thread) ------------------------------------
    def write(self, block: np.ndarray, overflow: bool = False) -> None:
        """Copy a (frames, channels) block in; never blocks on the reader, never allocates a buffer.

        `overflow` is PortAudio's input-overflow flag for this block (counted in `overflows`).
        If the block does not fit, the oldest unread frames are overwritten and counted in
        `dropped_samples`. A block longer than the whole ring keeps only its newest frames.
        """
        n = block.shape[0]
        cap = self.capacity
        with self._lock:
            self.callbacks += 1
            if overflow:
                self.overflows += 1
            self.last_write_time = time.monotonic()
            if n > cap:  # keep only the newest `cap` frames of an oversized block
                self._written += n - cap
                block = block[n - cap :]
                n = cap
            start = self._written % cap
            first = min(n, cap - start)
            np.copyto(self._buf[start : start + first], block[:first])
            if first < n:
                np.copyto(self._buf[: n - first], block[first:])
            self._written += n
            lost = self._written - self._read - cap
            if lost > 0:
                self.dropped_samples += lost
                self._read += lost
            ready = self._written - self._read >= self._wake_at
        if ready:
            self._data_ready.set()

    # ---- reader side (the worker thread) ------------------------------------------------
    @property
    def total_written(self) -> int:
        """Frames written since this ring was created (including overwritten ones)."""
        return self._written

    @property
    def available(self) -> int:
        """Frames written and not yet read (at most `capacity`)."""
        return self._written - self._read

    def wait(self, timeout: float, min_frames: int = 1) -> bool:
        """Wait up to `timeout` s until at least `min_frames` (>= 1) frames are unread; True if
        they are. At the timeout, False even when fewer are there (`available` says how many).

        Why `min_frames`: the daemon needs audio only when it completes its next window or
        start check (4 times per audio second with the defaults), while the callback writes 20
        blocks per second; waking once per block cost about as much CPU as the whole pipeline
        (`python -m tools.realtime_cpu`). The writer wakes the reader only when
        `min_frames` are there, so the callbacks in between cost the reader nothing."""
        want = min(max(1, int(min_frames)), self.capacity)  # more than the ring holds never comes
        self._wake_at = want
        deadline = time.monotonic() + max(0.0, timeout)
        try:
            while self.available < want:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return False
                self._data_ready.wait(remaining)
                if self.available < want:
                    # A set() for audio that read() already took, or one from before `_wake_at`
                    # was raised: clear it and re-check at the top of the loop, so no wake-up is
                    # lost (the writer sets it again once `want` frames are unread).
                    self._data_ready.clear()
            return True
        finally:
            self._wake_at = 1

    def read(self, max_frames: int | None = None) -> RingRead:
        """Take up to `max_frames` (default: all) unread frames, oldest first, as a new array.

        Returns a `RingRead` (its `data` may have 0 frames); never waits (see `wait`)."""
        self._data_ready.clear()  # cleared before reading, so a write after this sets it again
        with self._lock:
            avail = self._written - self._read
            n = avail if max_frames is None else max(0, min(avail, int(max_frames)))
            out = np.empty((n, self.channels), dtype=np.float32)
            if n:
                cap = self.capacity
                start = self._read % cap
                first = min(n, cap - start)
                out[:first] = self._buf[start : start + first]
                if first < n:
                    out[first:] = self._buf[: n - first]
                self._read += n
            if self._written - self._read > 0:
                self._data_ready.set()
            return RingRead(out, self.epoch, self.dropped_samples)

    def reset(self) -> None:
        """Discard unread audio and start a new epoch (used when the stream is reopened).

        The counters (`dropped_samples`, `callbacks`, `overflows`) are cumulative and kept.
        """
        with self._lock:
            self._read = self._written
            self.epoch += 1
            self.last_write_time = None
