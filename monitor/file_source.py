"""Audio from a file, delivered through the same `read(timeout)` interface as the microphone.

Anything libsndfile decodes (wav, flac, ogg/vorbis, mp3, ...), any rate and channel count.
The file is streamed block by block (an hour-long recording is never loaded whole),
downmixed to mono and resampled with the same streaming resampler as live input, whose tail
is flushed at the end. `pace="realtime"` releases each block when it "would have been
recorded", scheduled against a monotonic start time so the pacing does not drift;
`pace="fast"` delivers as fast as the consumer reads.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any, Literal

import numpy as np
import soundfile as sf

from monitor.errors import AudioFileError
from monitor.resample import StreamResampler, device_frames_for, to_mono

__all__ = ["FileSource"]

_EMPTY = np.zeros(0, dtype=np.float32)
READ_AHEAD_S = 0.5
"""Seconds of the file decoded per libsndfile call; blocks are then cut from it. Each call has a
fixed cost (a read syscall, cffi and numpy set-up): at 0.05 s blocks, one call per block was
half of what reading a 16-bit WAV cost `soundmon run --pace fast` (`soundmon bench`)."""

try:  # soundfile's cffi handles, for _read_frames (see there); absent -> the public read()
    from soundfile import _ffi as _sf_ffi
    from soundfile import _snd as _sf_lib
except ImportError:  # pragma: no cover - other soundfile builds
    _sf_ffi = _sf_lib = None


def _read_frames(f: sf.SoundFile, frames: int, pcm16: bool = False) -> np.ndarray:
    """The next `frames` frames as (n, channels) float32, continuing exactly where the last read ended.

    `pcm16` (a 16-bit PCM file): read as int16 and scaled by 1/32768 here, the very float32 values
    libsndfile's float read gives (both exact: an int16 times a power of two), for a third of its
    cost (`soundmon bench` streams a 16-bit WAV; see `_read_pcm16`).

    Why not `f.read(frames)`: python-soundfile follows every read with a seek to the position
    it just reached (`_cdata_io`: "Update read & write position"). For MP3 that seek restarts
    mpg123 at a frame boundary without its bit reservoir and overlap state, so block-by-block
    reads of an MP3 come out partly as near-silence (measured with libsndfile 1.2.0 and 1.2.2:
    a 1 kHz tone read in 0.1 s blocks decays to RMS 0.00 from 0.35 in some blocks, while one
    whole-file read is correct). Calling libsndfile's sf_readf_float directly reads sequentially
    with no seek, and equals a whole-file read bit for bit for every format.

    A decode error raises `_PartialRead`, which carries the frames decoded before it in the same
    call (libFLAC, for one, returns them together with the error), so none of them is lost.
    """
    handle = getattr(f, "_file", None)
    if _sf_lib is None or _sf_ffi is None or handle is None:
        return f.read(frames, dtype="float32", always_2d=True)
    if pcm16:
        return _read_pcm16(f, handle, frames)
    out = np.empty((frames, f.channels), dtype=np.float32)
    got = _sf_lib.sf_readf_float(handle, _sf_ffi.from_buffer("float[]", out), frames)
    return _checked(handle, out[: max(0, int(got))])


def _checked(handle: object, out: np.ndarray) -> np.ndarray:
    """`out`, the frames one read call decoded, unless libsndfile reports an error for that call:
    then `_PartialRead` with them."""
    err = _sf_lib.sf_error(handle)
    if err:
        text = _sf_ffi.string(_sf_lib.sf_error_number(err)).decode("utf-8", "replace")
        raise _PartialRead(text, out)
    return out


_PCM16_SCALE = np.float32(1.0 / 0x8000)  # libsndfile's normalisation of a 16-bit sample to float


def _read_pcm16(f: sf.SoundFile, handle: object, frames: int) -> np.ndarray:
    """`_read_frames` of a 16-bit PCM file: its int16 samples (sf_readf_short, a copy for a WAV)
    times 1/32768 in float32, as libsndfile's float read computes them, without its per-sample loop."""
    raw = np.empty((frames, f.channels), dtype=np.int16)
    got = max(0, int(_sf_lib.sf_readf_short(handle, _sf_ffi.from_buffer("short[]", raw), frames)))
    out = raw[:got].astype(np.float32)
    out *= _PCM16_SCALE
    return _checked(handle, out)


class _PartialRead(RuntimeError):
    """A decode error in `_read_frames`; `data` holds the frames decoded before it in that call."""

    def __init__(self, message: str, data: np.ndarray) -> None:
        super().__init__(message)
        self.data = data


def _reason(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    # libsndfile messages repeat the path: "Error opening 'x.wav': Format not recognised."
    if ": " in text and text.startswith("Error opening"):
        text = text.split(": ", 1)[1]
    text = text.removeprefix("Error : ")  # sf_error_number's "Error : flac decoder lost sync."
    return text or type(exc).__name__


class FileSource:
    """Mono float32 audio at `target_rate` from `path`; `finished` becomes True after the last block.

    Raises AudioFileError("cannot decode <path>: <reason>") at construction if the file cannot
    be opened or its first block cannot be decoded. A decode error later in the file loses no
    audio: every block decoded before it (and the resampler's tail) is delivered first, and the
    read after that raises AudioFileError("cannot decode <path> after <s> s of <s> s: <reason>");
    `decoded_s` says how much of the file came out, `error` keeps the exception.

    Why: files run through the very pipeline the microphone feeds (`soundmon run --source`,
    `classify`, `bench`), so a file result is a live result. Parameters: `path`, any file
    libsndfile decodes; `target_rate`, the rate delivered, Hz (the model's); `pace`, "realtime"
    (blocks released as they would have been recorded) or "fast"; `block_seconds`, seconds of
    file per block read (> 0). ValueError for another `pace` or a non-positive block. `duration_s`,
    `sample_rate` and `channels` are the file's own.
    """

    def __init__(
        self,
        path: str | Path,
        target_rate: int,
        pace: Literal["realtime", "fast"] = "realtime",
        block_seconds: float = 0.1,
    ) -> None:
        if pace not in ("realtime", "fast"):
            raise ValueError(f"pace must be 'realtime' or 'fast', got {pace!r}")
        if block_seconds <= 0:
            raise ValueError("block_seconds must be positive")
        self.path = Path(path)
        self.target_rate = int(target_rate)
        self.pace = pace
        if self.path.is_dir():
            raise AudioFileError(f"cannot decode {self.path}: is a directory")
        if not self.path.exists():
            raise AudioFileError(f"cannot decode {self.path}: no such file")
        try:
            self._file = sf.SoundFile(str(self.path))
        except (sf.LibsndfileError, RuntimeError, OSError, TypeError, ValueError) as exc:
            raise AudioFileError(f"cannot decode {self.path}: {_reason(exc)}") from None
        self.sample_rate = int(self._file.samplerate)
        self.channels = int(self._file.channels)
        self.frames = int(self._file.frames)
        self.duration_s = self.frames / self.sample_rate if self.sample_rate else 0.0
        self._block = max(1, round(block_seconds * self.sample_rate))
        # decoded per call: whole blocks, so the blocks are the ones one call per block gave
        self._chunk = self._block * max(1, round(READ_AHEAD_S * self.sample_rate) // self._block)
        self._ahead: np.ndarray = _EMPTY  # decoded and downmixed, not yet cut into blocks
        self._ahead_pos = 0
        self._pcm16 = self._file.subtype == "PCM_16"  # read as int16 (`_read_frames`)
        self._resampler = StreamResampler(self.sample_rate, self.target_rate)
        self._lock = threading.Lock()
        self._frames_read = 0  # frames taken from the file so far
        self._eof = False
        self._failed = False  # a decode error happened and all audio before it is delivered
        self.finished = False
        self.error: AudioFileError | None = None  # a decode error after the first block
        self._t0: float | None = None
        # Decode the first block now, so a file whose header parses but whose data does not
        # fails here, at construction, with a clear message, and not in the middle of a run.
        self._pending = self._decode_block()
        if self.error is not None and self._pending is None:
            self._file.close()
            raise self.error

    # ---- interface shared with MicSource -------------------------------------------------
    def start(self) -> None:
        """Start the clock for realtime pacing (otherwise the first read() starts it)."""
        if self._t0 is None:
            self._t0 = time.monotonic()

    def stop(self) -> None:
        """Close the file; later reads return nothing and `finished` is True."""
        with self._lock:
            self.finished = True
            self._eof = True
            self._file.close()

    @property
    def decoded_s(self) -> float:
        """Seconds of the file delivered (or about to be) so far: all of it after a clean end."""
        return self._frames_read / self.sample_rate if self.sample_rate else 0.0

    @property
    def health(self) -> str:
        """"stopped" once finished (or stopped), else "ok"."""
        return "stopped" if self.finished else "ok"

    @property
    def gap_count(self) -> int:
        """A file has no gaps (`monitor.source.Source`)."""
        return 0

    @property
    def last_gap_samples(self) -> int:
        """A file has no gaps (`monitor.source.Source`)."""
        return 0

    @property
    def stats(self) -> dict[str, Any]:
        """The source's part of `<base>/stats` (the microphone's keys, with the file's position
        and duration; its counters are 0)."""
        return {
            "health": self.health,
            "device": str(self.path),
            "device_rate": self.sample_rate,
            "channels": self.channels,
            "target_rate": self.target_rate,
            "dropped_samples": 0,
            "overflows": 0,
            "callbacks": 0,
            "reopen_count": 0,
            "position_s": self._frames_read / self.sample_rate,
            "duration_s": self.duration_s,
        }

    def read(self, timeout: float, want: int = 1) -> np.ndarray:
        """The next audio at `target_rate` (may be empty); waits at most `timeout` s (realtime).

        Blocks are taken until about `want` samples at `target_rate` are (as `MicSource.read`:
        never more than `want` needs), one at least. fast: at once. realtime: each block when
        its last sample is due, and then every block already due; if none is due within
        `timeout`, sleeps `timeout` and returns nothing, and at the timeout returns what it has.
        After the last block (and the resampler's tail) `finished` is True and reads return
        empty arrays.
        """
        with self._lock:
            if self.finished:
                return _EMPTY
            if self._failed:  # everything before the decode error has been delivered
                self.finished = True
                self._file.close()
                assert self.error is not None
                raise self.error
            if self._t0 is None:
                self._t0 = time.monotonic()
            need = device_frames_for(want, self.sample_rate, self.target_rate)
            blocks: list[np.ndarray | None] = []
            got = 0
            if self.pace == "fast":
                while self._pending is not None and (not blocks or got < need):
                    got += len(self._pending)
                    blocks.append(self._take())
            else:
                deadline = time.monotonic() + max(0.0, timeout)
                while self._pending is not None:
                    due = self._t0 + (self._frames_read + len(self._pending)) / self.sample_rate
                    now = time.monotonic()
                    if due > now:
                        if (blocks and got >= need) or due > deadline:
                            break
                        # One sleep, until the block that completes `need` is due (blocks are
                        # `_block` frames from the file's start), not one per block: a wake per
                        # block cost a live daemon more CPU than the pipeline's own work.
                        last = -(-(self._frames_read + max(1, need - got)) // self._block) * self._block
                        last = min(last, self.frames) if self.frames > 0 else last  # not past the end
                        time.sleep(max(due, min(self._t0 + last / self.sample_rate, deadline)) - now)
                    got += len(self._pending)
                    blocks.append(self._take())
                if not blocks and self._pending is not None:
                    time.sleep(max(0.0, deadline - time.monotonic()))
                    return _EMPTY
            out = [self._resampler.process(b) for b in blocks if b is not None and len(b)]
            if self._pending is None:  # end of file (or a decode error): flush the resampler's tail
                out.append(self._resampler.process(np.zeros(0, dtype=np.float32), last=True))
                if self.error is None:
                    self.finished = True
                    self._file.close()
                else:
                    self._failed = True  # the next read raises
            if not out:
                return _EMPTY
            return out[0] if len(out) == 1 else np.concatenate(out).astype(np.float32, copy=False)

    def __enter__(self) -> FileSource:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # ---- internals ---------------------------------------------------------------------
    def _take(self) -> np.ndarray | None:
        """Hand out the pending block and decode the next one."""
        block = self._pending
        if block is not None:
            self._frames_read += len(block)
        self._pending = self._decode_block()
        return block

    def _decode_block(self) -> np.ndarray | None:
        """The next block of the file, mono (shorter at its end or before a decode error), or None."""
        ahead, pos = self._ahead, self._ahead_pos
        if pos >= len(ahead):
            chunk = self._decode_chunk()
            if chunk is None:
                return None
            # downmixed once per chunk: a frame's mean is its own, whatever block it falls in
            self._ahead = ahead = to_mono(chunk)
            pos = 0
        self._ahead_pos = pos + self._block
        return ahead[pos : pos + self._block]

    def _decode_chunk(self) -> np.ndarray | None:
        """The next `_chunk` frames decoded (fewer at the end or before a decode error), or None."""
        if self._eof:
            return None
        try:
            data = _read_frames(self._file, self._chunk, self._pcm16)
        except (sf.LibsndfileError, RuntimeError, OSError, ValueError) as exc:
            # Keep the blocks decoded so far; read() delivers them and raises this afterwards.
            self._eof = True
            partial = exc.data if isinstance(exc, _PartialRead) and len(exc.data) else None
            # (a chunk is decoded once the blocks of the last one are all handed out and counted)
            decoded = self._frames_read + (len(partial) if partial is not None else 0)
            where = f" after {decoded / self.sample_rate:.1f} s of {self.duration_s:.1f} s" if decoded else ""
            self.error = AudioFileError(f"cannot decode {self.path}{where}: {_reason(exc)}")
            return partial
        if len(data) == 0:
            self._eof = True
            return None
        if len(data) < self._chunk:
            self._eof = True  # a short read is the end (mp3 frame counts can be estimates)
        return data
