"""Detection clips: the audio around each event saved as FLAC, under a disk budget.

Keeps the last pre + post + max clip + 5 seconds of model-rate audio in memory as int16. When an
event ends, its clip name is fixed at once (so the `end` message can carry it); the file is written
when `post_seconds` more audio has arrived (or at shutdown). Oldest clips are deleted first when
the directory exceeds its budget.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile as sf

__all__ = ["ClipRecorder"]

log = logging.getLogger("soundmon.clips")


@dataclass
class _Pending:
    event_id: str
    label: str
    start_s: float
    end_s: float | None = None
    name: str | None = None


class ClipRecorder:
    """Save [event start - pre, event end + post] (capped at `max_clip_seconds`) as FLAC files.

    So that a detection can be listened to afterwards (the `end` message names its clip). Offsets
    are stream seconds, counted from the audio given to `add_audio` and the gaps given to `add_gap`
    (the pipeline's own timeline). Parameters: `directory`, where clips go (created if missing);
    `sample_rate`, the audio's rate in Hz; `pre_seconds` and `post_seconds`, audio kept before the
    start and after the end; `max_bytes`, the directory's budget for `*.flac` (oldest deleted
    first); `max_clip_seconds`, the longest clip. `saved` and `deleted` count clips written and
    removed. A clip that cannot be written is logged, not raised.
    """

    def __init__(self, directory: Path, sample_rate: int, pre_seconds: float, post_seconds: float,
                 max_bytes: int, max_clip_seconds: float = 60.0) -> None:  # fmt: skip
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        self.sr = sample_rate
        self.pre = pre_seconds
        self.post = post_seconds
        self.max_bytes = max_bytes
        self.max_clip = max_clip_seconds
        self._hist = np.zeros(int((pre_seconds + post_seconds + max_clip_seconds + 5) * sample_rate), np.int16)
        self._total = 0  # samples ever added
        self._open: dict[str, _Pending] = {}
        self._done: list[_Pending] = []
        self.saved = 0
        self.deleted = 0

    def add_audio(self, block: np.ndarray) -> None:
        """Append model-rate float audio; write clips whose post-roll is complete."""
        pcm = (np.clip(np.nan_to_num(block), -1.0, 1.0) * 32767).astype(np.int16)
        n = len(self._hist)
        if len(pcm) >= n:
            pcm = pcm[-n:]
        idx = (self._total + len(block) - len(pcm) + np.arange(len(pcm))) % n
        self._hist[idx] = pcm
        self._total += len(block)
        self._write_ready()

    def add_gap(self, samples: int) -> None:
        """Audio the source lost (a device reopened, samples dropped): the timeline moves on by
        `samples` of silence, as the pipeline's offsets count the gap, so later clips still hold
        their own events' audio."""
        samples = max(0, int(samples))
        n = len(self._hist)
        k = min(samples, n)
        self._hist[(self._total + samples - k + np.arange(k)) % n] = 0
        self._total += samples
        self._write_ready()

    def _write_ready(self) -> None:
        """Write the ended events' clips whose post-roll has arrived."""
        now = self._total / self.sr
        for clip in [c for c in self._done if c.end_s is not None and now >= c.end_s + self.post]:
            self._write(clip)

    def event_started(self, event_id: str, label: str, start_s: float) -> None:
        """Remember an event that started at stream offset `start_s` (its clip begins pre-roll
        before it)."""
        self._open[event_id] = _Pending(event_id, label, start_s)

    def event_ended(self, event_id: str, end_s: float) -> str | None:
        """Fix the clip's file name (returned for the `end` message); it is written after post-roll.

        Returns None for an event `event_started` did not see."""
        clip = self._open.pop(event_id, None)
        if clip is None:
            return None
        clip.end_s = end_s
        clip.name = f"{clip.label}_{event_id[:12]}_{clip.start_s:.1f}s.flac"
        self._done.append(clip)
        return clip.name

    def flush_all(self) -> None:
        """At shutdown: write every ended event's clip still waiting for its post-roll, with the
        audio there is (events still open have no clip)."""
        for clip in list(self._done):
            self._write(clip)

    def _write(self, clip: _Pending) -> None:
        self._done.remove(clip)
        start = max(0.0, clip.start_s - self.pre)
        end = min((clip.end_s or clip.start_s) + self.post, start + self.max_clip, self._total / self.sr)
        oldest = max(0.0, (self._total - len(self._hist)) / self.sr)
        start = max(start, oldest)
        a, b = int(start * self.sr), int(end * self.sr)
        if b <= a:
            return
        audio = self._hist[np.arange(a, b) % len(self._hist)]
        path = self.directory / (clip.name or f"{clip.event_id}.flac")
        try:
            sf.write(path, audio, self.sr, subtype="PCM_16", format="FLAC")
        except OSError as exc:
            log.error("clip %s not saved: %s", path.name, exc)
            return
        self.saved += 1
        self._enforce_budget()

    def _enforce_budget(self) -> None:
        files = sorted(self.directory.glob("*.flac"), key=lambda p: p.stat().st_mtime)
        total = sum(p.stat().st_size for p in files)
        while files and total > self.max_bytes:
            victim = files.pop(0)
            total -= victim.stat().st_size
            victim.unlink(missing_ok=True)
            self.deleted += 1
