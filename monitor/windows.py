"""Overlapping analysis windows over a stream of log-mel frames.

`WindowRing` keeps the last `window_frames` frames in a ring (stored twice, so every window is
one contiguous slice without copying the ring) and yields a window every `hop_frames` new
frames. `file_windows` is the same rule applied to a whole recording in one go; training
evaluation and `soundmon classify` use it, and the streaming pipeline produces identical
windows (tested).

Placement rule for recordings shorter than one window: the audio is padded at the end with
digital silence up to one window (the model bundle records this as placement "start").
"""

from __future__ import annotations

import numpy as np

from monitor.frontend import FrontendParams, LogMelFrontend

__all__ = ["WindowRing", "file_windows", "hop_frames_for", "pad_to_window"]


def hop_frames_for(hop_seconds: float, params: FrontendParams) -> int:
    """Frames per window hop (0.5 s -> 50 at a 10 ms frame hop); at least one."""
    return max(1, int(round(hop_seconds * params.sample_rate / params.hop_length)))


def pad_to_window(audio: np.ndarray, window_seconds: float, sample_rate: int) -> np.ndarray:
    """Zero-pad a short recording at its end to one full window (placement 'start')."""
    need = int(round(window_seconds * sample_rate))
    if len(audio) >= need:
        return audio
    return np.concatenate([audio, np.zeros(need - len(audio), dtype=np.float32)])


def file_windows(
    audio: np.ndarray,
    frontend: LogMelFrontend,
    window_seconds: float,
    hop_seconds: float,
) -> np.ndarray:
    """All analysis windows of a mono recording at the model rate: (n_windows, frames, n_mels)."""
    p = frontend.params
    logmel = frontend(pad_to_window(np.asarray(audio, dtype=np.float32), window_seconds, p.sample_rate))
    window_frames = p.frames_for(window_seconds)
    hop = hop_frames_for(hop_seconds, p)
    starts = range(0, len(logmel) - window_frames + 1, hop)
    return np.stack([logmel[s : s + window_frames] for s in starts]).astype(np.float32)


class WindowRing:
    """Collect frames; emit a (window_frames, n_mels) window every `hop_frames` new frames.

    The first window is emitted once `window_frames` frames have arrived. Each returned window
    is a copy (one push may complete several windows, and later frames overwrite the ring).

    The pipeline's main windows and the fast-start checks (`monitor.fast_start.StartChecks`) are
    both rings of this one rule. Parameters: `window_frames` and `hop_frames`, in frames (>= 1,
    else ValueError); `n_mels`, values per frame (the pipeline adds an energy column);
    `start_at`, below.
    """

    def __init__(self, window_frames: int, hop_frames: int, n_mels: int, start_at: int = 0) -> None:
        """`start_at`: frames the stream has already had (a ring added mid-stream counts in step
        with the rings that saw them; its first window still needs a full window of new frames)."""
        if hop_frames < 1 or window_frames < 1:
            raise ValueError("window_frames and hop_frames must be >= 1")
        self.window_frames = window_frames
        self.hop_frames = hop_frames
        self.n_mels = n_mels
        self._ring = np.zeros((2 * window_frames, n_mels), dtype=np.float32)
        self._pos = 0  # next write index in [0, window_frames)
        self.total_frames = int(start_at)
        self._full_at = self.total_frames + window_frames  # total_frames once a whole window is real
        self._next_emit = self._full_at  # total_frames at which the next window completes

    def set_hop(self, hop_frames: int) -> None:
        """Change the hop from the next window on (SIGHUP), without losing buffered frames."""
        if hop_frames < 1:
            raise ValueError("hop_frames must be >= 1")
        last = self._next_emit - self.hop_frames
        self.hop_frames = hop_frames
        # Never in the past: a shorter hop whose boundary has already gone by emits on the next frame.
        self._next_emit = max(self._full_at, last + hop_frames, self.total_frames + 1)

    def align(self, emit_at: int) -> None:
        """Emit in step with another ring: the next window ends at the first frame count on
        `emit_at`'s hop grid that this ring can fill (a full window, and not in the past)."""
        first = max(self._full_at, self.total_frames + 1)
        self._next_emit = emit_at + -(-(first - emit_at) // self.hop_frames) * self.hop_frames

    @property
    def frames_until_window(self) -> int:
        """Frames still needed before the next window is complete (>= 1)."""
        return self._next_emit - self.total_frames

    def reset(self) -> None:
        """Start over (after a gap in the audio): the next window needs a full window of new frames."""
        self._pos = 0
        self._full_at = self._next_emit = self.total_frames + self.window_frames

    def push(self, frames: np.ndarray) -> list[tuple[int, np.ndarray]]:
        """Add frames; return [(index of the window's last frame + 1, window), ...].

        Frames are written in slices up to each window boundary (not one by one): the ring is
        stored twice over so that a window is always one contiguous slice.
        """
        out: list[tuple[int, np.ndarray]] = []
        w, ring = self.window_frames, self._ring
        # The counters in locals while writing (speed), stored back once at the end.
        pos, total, next_emit = self._pos, self.total_frames, self._next_emit
        i, n = 0, len(frames)
        while i < n:
            # Up to the next window boundary or the ring's wrap point, whichever comes first.
            take = min(n - i, next_emit - total, w - pos)
            chunk = frames[i : i + take]
            ring[pos : pos + take] = chunk
            ring[pos + w : pos + w + take] = chunk
            pos = (pos + take) % w
            total += take
            i += take
            if total == next_emit:
                out.append((total, ring[pos : pos + w].copy()))
                next_emit += self.hop_frames
        self._pos, self.total_frames, self._next_emit = pos, total, next_emit
        return out
