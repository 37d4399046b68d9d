"""Live microphone input: PortAudio callback -> ring buffer -> worker (downmix, resample).

The callback only copies into an `AudioRing` (see audio_ring.py for why). Everything else
happens in the thread that calls `read()` (the daemon's worker): non-finite samples are
zeroed and counted, digital silence is measured, channels are averaged to mono and the
device rate is resampled to the model's rate with a streaming soxr resampler.

A microphone on a Pi that runs for months *will* fail: USB mics get unplugged or reset, ALSA
streams die, some mics return only zeros after a brown-out. A small supervisor thread watches
the stream and, on trouble, reopens the device itself with exponential backoff (1 s doubling
up to `audio.reopen_backoff_max`), so the daemon never needs a restart for it. Each reopen
rescans PortAudio's device list, because a re-plugged USB mic may come back with a new index.
It logs one line per change of state, e.g.
"audio: stalled (no callbacks for 3.0 s); reopening" and "audio: ok again after 2 reopen attempts".

Health states: "ok", "stalled" (no callbacks for `stall_seconds`), "silent" (only digital
zeros for `silence_seconds`; audio is still delivered), "error" (stream error or the reopen
failed), "reopening" (a new stream is open, no audio confirmed yet), "stopped".
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Callable
from typing import Any

import numpy as np

from monitor.audio_ring import AudioRing
from monitor.config import AudioConfig
from monitor.devices import import_sounddevice, rescan_devices, resolve_input_device
from monitor.errors import DeviceError
from monitor.resample import StreamResampler, device_frames_for, to_mono

__all__ = ["HEALTH_STATES", "MicSource"]

HEALTH_STATES = ("ok", "stalled", "silent", "error", "reopening", "stopped")
_DEGRADED = ("stalled", "silent", "error")
_EMPTY = np.zeros(0, dtype=np.float32)
_REPORT_INTERVAL_S = 60.0  # at most one log line per minute for recurring per-block problems


def _portaudio_input_stream(**kwargs: Any) -> Any:
    """The real stream factory: `sounddevice.InputStream(**kwargs)`."""
    sd = import_sounddevice()
    return sd.InputStream(**kwargs)


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return text or type(exc).__name__


def _make_callback(ring: AudioRing) -> Callable[..., None]:
    """The PortAudio callback for one stream: copy into the ring, note the overflow flag. Nothing else."""
    write = ring.write

    def callback(indata: np.ndarray, frames: int, time_info: Any, status: Any) -> None:
        write(indata, bool(status) and status.input_overflow)

    return callback


class MicSource:
    """Mono float32 audio at `target_rate` from the input device named by `cfg.device`.

    It exists so the daemon reads a microphone like a file (`monitor.source.Source`) while the
    device's failures are repaired here, in the background. Parameters: `cfg`, the `audio`
    section (device, rate, channels, block and ring sizes, the stall/silence limits and the
    reopen back-off); `target_rate`, the rate delivered, Hz
    (the model's); `logger`, where its one-line state changes go (default "soundmon.audio");
    `rescan_on_reopen`, refresh PortAudio's device list before each reopen (a re-plugged USB mic
    may have a new index).
    `stream_factory` (tests only) replaces `sounddevice.InputStream`: it is called with the
    same keyword arguments and returns an object with start/stop/abort/close/active. If it also
    has `resolve(spec) -> device dict` and `rescan()`, those replace the PortAudio device lookup
    (this is how a test fakes a USB unplug, the one thing that cannot be done for real here).
    """

    def __init__(
        self,
        cfg: AudioConfig,
        target_rate: int,
        logger: logging.Logger | None = None,
        *,
        stream_factory: Callable[..., Any] | None = None,
        rescan_on_reopen: bool = True,
    ) -> None:
        self.cfg = cfg
        self.target_rate = int(target_rate)
        self.log = logger or logging.getLogger("soundmon.audio")
        self._factory: Callable[..., Any] = stream_factory or _portaudio_input_stream
        self._rescan_on_reopen = rescan_on_reopen
        self._lock = threading.RLock()  # guards the stream, the state and the ring swap
        self._stop_evt = threading.Event()
        self._watcher: threading.Thread | None = None
        self._state = "stopped"
        # The current stream and what it was opened with.
        self._stream: Any = None
        self._stream_gen = 0
        self._closing = False
        self._stream_error: str | None = None
        self._ring: AudioRing | None = None
        self._device: dict[str, Any] | None = None
        self._rate = 0
        self._blocksize = 0
        self._opened_at = 0.0
        self._callbacks_at_open = 0
        # Counters of rings already replaced (totals = these + the current ring's).
        # (ring, dropped, callbacks, overflows of the rings before it): replaced as one tuple at a
        # reopen, so `stats` (another thread) never adds a ring's counts twice or not at all
        self._counts_base: tuple[AudioRing | None, int, int, int] = (None, 0, 0, 0)
        # Supervision.
        self._attempts = 0  # reopen attempts since the source was last "ok"
        self.reopen_count = 0  # reopen attempts in total
        self._next_attempt_at = 0.0
        self._fail_reason = ""
        self._last_open_error: str | None = None
        # Reader (worker thread) state.
        self._reader_ring: AudioRing | None = None
        self._resampler: StreamResampler | None = None
        self._seen_dropped = 0
        self._seen_overflows = 0
        self._gap_count = 0
        self._zero_run = 0  # trailing frames of exact zeros read from `_zero_ring`
        self._zero_ring: AudioRing | None = None
        self._nonzero_ring: AudioRing | None = None  # last ring that delivered a non-zero sample
        self._nonfinite = 0
        self._last_audio_end: float | None = None  # monotonic time of the newest audio read
        self.last_gap_samples = 0  # audio lost at the latest gap, in samples at target_rate
        self._last_drop_log = -_REPORT_INTERVAL_S
        self._last_nonfinite_log = -_REPORT_INTERVAL_S
        self._last_overflow_log = -_REPORT_INTERVAL_S
        self._dropped_unreported = 0
        self._nonfinite_unreported = 0

    # ---- public interface -------------------------------------------------------------
    def start(self, retry: bool = False) -> None:
        """Open the device and start capturing. DeviceError (one line) if it cannot be opened,
        unless `retry`: then the failure is logged and the device is retried in the background
        with the reopen backoff, as after an unplug (a reload must not stop the daemon)."""
        with self._lock:
            if self._state != "stopped":
                return
            self._stop_evt.clear()
            try:
                try:
                    self._open()
                except DeviceError:
                    raise
                except Exception as exc:  # PortAudioError, ValueError from sounddevice, OSError
                    raise DeviceError(f"audio: cannot open input device: {_one_line(exc)}") from None
            except DeviceError as exc:
                if not retry:
                    raise
                msg = _one_line(exc)
                self.log.warning("audio: %s; retrying with backoff up to %g s", msg, self.cfg.reopen_backoff_max)
                self._state = self._fail_reason = "error"
                self._attempts = 1
                self._last_open_error = msg
                self._next_attempt_at = time.monotonic() + self._backoff()
                self._start_watcher()
                return
            self._state = "ok"
            self._attempts = 0
            dev = self._device or {}
            resampling = (
                f"; resampling to {self.target_rate} Hz" if self._rate != self.target_rate else ""
            )
            self.log.info(
                "audio: capturing from [%s] %s at %d Hz, %d ch, blocks of %d frames%s",
                dev.get("index"), dev.get("name"), self._rate, self.cfg.channels, self._blocksize, resampling,
            )
            self._start_watcher()

    def _start_watcher(self) -> None:
        """The thread that supervises the stream (stalls, errors, silence) and reopens it."""
        self._watcher = threading.Thread(target=self._watch, name="soundmon-audio-watch", daemon=True)
        self._watcher.start()

    def stop(self) -> None:
        """Stop capturing and close the device (idempotent)."""
        self._stop_evt.set()
        watcher = self._watcher
        if watcher is not None and watcher is not threading.current_thread():
            watcher.join(timeout=10.0)
        with self._lock:
            self._watcher = None
            if self._state != "stopped":
                self._close_stream()
                self._state = "stopped"
                self.log.debug("audio: stopped")

    def read(self, timeout: float, want: int = 1) -> np.ndarray:
        """Mono float32 audio at `target_rate` that has arrived since the last call (may be empty).

        Waits up to `timeout` seconds until about `want` samples (at `target_rate`) have arrived
        (`device_frames_for`: never more than `want` needs, so the caller gets its audio at the
        same callback as it would by reading every block), then returns all that is there; at
        the timeout, whatever has arrived. Never raises for device trouble: that shows in
        `health` and is repaired in the background. If `gap_count` changed during this call,
        the returned audio starts after a break in continuity.
        """
        ring = self._ring
        if ring is None:
            self._stop_evt.wait(max(0.0, timeout))
            return _EMPTY
        ring.wait(timeout, device_frames_for(want, ring.sample_rate, self.target_rate))
        if ring.available <= 0:
            return _EMPTY
        got = ring.read()
        return self._process(ring, got.data, got.dropped_total)

    @property
    def finished(self) -> bool:
        """A microphone never finishes (`monitor.source.Source`); `stop` ends it."""
        return False

    @property
    def health(self) -> str:
        """"ok" | "stalled" | "silent" | "error" | "reopening" | "stopped"."""
        return self._state

    @property
    def gap_count(self) -> int:
        """Number of breaks in audio continuity so far (dropped samples, reopened stream).

        It changes inside `read()`, and then the block that read() returns starts after the
        break; `last_gap_samples` says how much audio (at `target_rate`) was lost there
        (estimated from the wall clock for a reopen), so stream offsets can stay true.
        """
        return self._gap_count

    @property
    def stats(self) -> dict[str, Any]:
        """Counters for the stats message and the logs."""
        ring, old_dropped, old_callbacks, old_overflows = self._counts_base
        dev = self._device or {}
        last = ring.last_write_time if ring is not None else None
        return {
            "health": self._state,
            "device": dev.get("name"),
            "device_index": dev.get("index"),
            "device_rate": self._rate or None,
            "channels": self.cfg.channels,
            "target_rate": self.target_rate,
            "dropped_samples": old_dropped + (ring.dropped_samples if ring else 0),
            "overflows": old_overflows + (ring.overflows if ring else 0),
            "callbacks": old_callbacks + (ring.callbacks if ring else 0),
            "reopen_count": self.reopen_count,
            "nonfinite_samples": self._nonfinite,
            "gap_count": self._gap_count,
            "last_callback_age_s": None if last is None else round(time.monotonic() - last, 3),
        }

    def __enter__(self) -> MicSource:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # ---- opening and closing (called with the lock held) ------------------------------
    def _resolve(self) -> dict[str, Any]:
        resolve = getattr(self._factory, "resolve", None)
        if resolve is not None:
            return dict(resolve(self.cfg.device))
        return resolve_input_device(self.cfg.device)

    def _rescan(self) -> None:
        rescan = getattr(self._factory, "rescan", None)
        if rescan is not None:
            rescan()
        elif getattr(self._factory, "resolve", None) is None:  # devices come from PortAudio
            rescan_devices()

    def _open(self) -> None:
        dev = self._resolve()
        channels = int(self.cfg.channels)
        if channels > int(dev["max_input_channels"]):
            raise DeviceError(
                f"audio.channels {channels}: input device [{dev['index']}] {dev['name']} has only "
                f"{dev['max_input_channels']} input channel(s)"
            )
        rate = int(self.cfg.sample_rate or round(float(dev["default_samplerate"])))
        blocksize = max(1, round(rate * self.cfg.block_seconds))
        ring = AudioRing(max(round(rate * self.cfg.ring_seconds), 2 * blocksize), channels, rate)
        gen = self._stream_gen + 1
        self._stream_gen = gen  # before the stream exists: its finished_callback checks it
        self._closing = False
        self._stream_error = None
        try:
            stream = self._factory(
                device=dev["index"],
                samplerate=rate,
                channels=channels,
                dtype="float32",
                blocksize=blocksize,
                callback=_make_callback(ring),
                finished_callback=lambda: self._on_finished(gen),
            )
        except Exception as exc:
            raise DeviceError(
                f"audio: cannot open input device [{dev['index']}] {dev['name']} at {rate} Hz, "
                f"{channels} ch: {_one_line(exc)}"
            ) from None
        try:
            stream.start()
        except Exception as exc:
            self._closing = True
            _quietly(stream.close)
            raise DeviceError(
                f"audio: cannot start input device [{dev['index']}] {dev['name']}: {_one_line(exc)}"
            ) from None
        old, dropped, callbacks, overflows = self._counts_base
        if old is not None:
            dropped, callbacks, overflows = dropped + old.dropped_samples, callbacks + old.callbacks, overflows + old.overflows
        self._stream = stream
        self._ring = ring
        self._counts_base = (ring, dropped, callbacks, overflows)
        self._device = dev
        self._rate = rate
        self._blocksize = blocksize
        self._opened_at = time.monotonic()
        self._callbacks_at_open = 0

    def _on_finished(self, gen: int) -> None:
        """PortAudio's finished callback: unexpected unless we are closing this very stream."""
        if gen == self._stream_gen and not self._closing:
            self._stream_error = "the stream finished unexpectedly"

    def _close_stream(self) -> None:
        stream, self._stream = self._stream, None
        self._closing = True
        if stream is not None:
            _quietly(stream.abort)  # abort, not stop: the pending audio is not wanted
            _quietly(stream.close)

    # ---- supervision (the watcher thread) -----------------------------------------------
    def _watch(self) -> None:
        # Every 0.5 s with the default 3 s stall (a sixth of it when shorter): each tick wakes
        # this thread, and at 0.1 s the ticks cost about 1 ms of CPU per second of audio on
        # the real input path (`python -m tools.realtime_cpu`); a stall or stream error
        # is still seen within half a second, and reopening backs off by 1 s at least.
        tick = max(0.01, min(0.5, self.cfg.stall_seconds / 6.0))
        failed_before = False
        while not self._stop_evt.wait(tick):
            try:
                with self._lock:
                    if self._stop_evt.is_set() or self._state == "stopped":
                        return
                    self._check(time.monotonic())
                failed_before = False
            except Exception:  # keep watching; a bug here must not silently end supervision
                if not failed_before:
                    self.log.exception("audio: internal error in the stream watcher")
                failed_before = True

    def _backoff(self) -> float:
        if self._attempts == 0:
            return 0.0
        return float(min(2.0 ** (self._attempts - 1), self.cfg.reopen_backoff_max))

    def _problem(self, now: float) -> tuple[str, str] | None:
        if self._stream_error is not None:
            return "error", f"stream error ({self._stream_error})"
        stream, ring = self._stream, self._ring
        if stream is None or ring is None:
            return "error", "no stream"
        try:
            active = bool(stream.active)
        except Exception as exc:
            return "error", f"stream error ({_one_line(exc)})"
        if not active:
            return "error", "stream error (the stream is no longer active)"
        last = ring.last_write_time
        if now - (last if last is not None else self._opened_at) >= self.cfg.stall_seconds:
            return "stalled", f"stalled (no callbacks for {self.cfg.stall_seconds:.1f} s)"
        if self._zero_ring is ring and self._zero_run >= self.cfg.silence_seconds * self._rate:
            return "silent", f"only digital zeros for {self.cfg.silence_seconds:.1f} s"
        return None

    def _recovered(self) -> bool:
        ring = self._ring
        if ring is None or ring.callbacks == 0:
            return False
        if self._fail_reason == "silent":  # a reopened zero-mic is fine only once it says something
            return self._nonzero_ring is ring
        return True

    def _check(self, now: float) -> None:
        state = self._state
        if state in ("ok", "reopening"):
            problem = self._problem(now)
            if problem is None:
                if state == "reopening" and self._recovered():
                    self._ok_again()
                return
            new_state, reason = problem
            self._state = new_state
            self._fail_reason = new_state
            if state == "ok":
                self.log.warning("audio: %s; reopening", reason)
            else:
                self.log.debug("audio: %s after reopen attempt %d", reason, self._attempts)
            self._next_attempt_at = now + self._backoff()
        elif state in ("stalled", "silent") and self._problem(now) is None:
            # the stream came back by itself while waiting for the next attempt (callbacks again,
            # or sound after digital zeros): keep it, a reopen now would only cut live audio
            self._ok_again()
            return
        if self._state in _DEGRADED and now >= self._next_attempt_at:
            self._reopen()

    def _ok_again(self) -> None:
        """The stream works again: say so once, and start counting attempts afresh."""
        n = self._attempts
        self.log.info("audio: ok again after %d reopen attempt%s", n, "" if n == 1 else "s")
        self._state = "ok"
        self._attempts = 0
        self._last_open_error = None

    def _reopen(self) -> None:
        self._attempts += 1
        self.reopen_count += 1
        self._state = "reopening"
        self._close_stream()
        old_dev = self._device
        try:
            if self._rescan_on_reopen:
                self._rescan()
            self._open()
        except Exception as exc:
            msg = _one_line(exc)
            self._state = "error"
            if msg != self._last_open_error:
                self.log.warning(
                    "audio: reopen failed (%s); retrying with backoff up to %g s", msg, self.cfg.reopen_backoff_max
                )
            else:
                self.log.debug("audio: reopen attempt %d failed again (%s)", self._attempts, msg)
            self._last_open_error = msg
            self._next_attempt_at = time.monotonic() + self._backoff()
            return
        dev = self._device or {}
        if old_dev is None or (old_dev.get("index"), old_dev.get("name")) != (dev.get("index"), dev.get("name")):
            self.log.info("audio: reopened as [%s] %s at %d Hz", dev.get("index"), dev.get("name"), self._rate)
        else:
            self.log.debug("audio: reopen attempt %d opened the device", self._attempts)

    # ---- the worker side: called from read() ------------------------------------------
    def _process(self, ring: AudioRing, data: np.ndarray, dropped_total: int) -> np.ndarray:
        gap = False
        missing_s = 0.0  # audio lost at this gap, in seconds
        if ring is not self._reader_ring:
            old = self._reader_ring
            if old is not None:
                gap = True  # a new stream: whatever came before is not continuous with this
                # Lost: the wall-clock time between the end of the audio read last and the
                # start of the new stream's audio (covers what the old ring still held).
                last = ring.last_write_time
                if last is not None and self._last_audio_end is not None:
                    start = last - ring.total_written / max(1, ring.sample_rate)
                    missing_s += max(0.0, start - self._last_audio_end)
                if self._resampler is not None:  # the old stream's filter delay never comes out
                    missing_s += self._resampler.held_back / self.target_rate
            self._reader_ring = ring
            self._resampler = StreamResampler(ring.sample_rate, self.target_rate)
            self._seen_dropped = 0
            self._seen_overflows = 0
            self._zero_run = 0
            self._zero_ring = ring
        now = time.monotonic()
        if ring.last_write_time is not None:
            self._last_audio_end = ring.last_write_time
        if dropped_total > self._seen_dropped:
            lost = dropped_total - self._seen_dropped
            self._dropped_unreported += lost
            self._seen_dropped = dropped_total
            missing_s += lost / max(1, ring.sample_rate)
            gap = True
            if now - self._last_drop_log >= _REPORT_INTERVAL_S:
                self.log.warning(
                    "audio: processing fell behind; %d samples dropped (%d in total)",
                    self._dropped_unreported, self.stats["dropped_samples"],
                )
                self._dropped_unreported = 0
                self._last_drop_log = now
        if ring.overflows > self._seen_overflows:
            self._seen_overflows = ring.overflows
            if now - self._last_overflow_log >= _REPORT_INTERVAL_S:
                self.log.warning("audio: PortAudio reported input overflow (%d in total)", self.stats["overflows"])
                self._last_overflow_log = now
        if gap:
            self.last_gap_samples = round(missing_s * self.target_rate)
            self._gap_count += 1
        if data.shape[0] == 0:
            return _EMPTY
        finite = np.isfinite(data)
        if not finite.all():
            bad = int(data.size - np.count_nonzero(finite))
            data[~finite] = 0.0
            self._nonfinite += bad
            self._nonfinite_unreported += bad
            if now - self._last_nonfinite_log >= _REPORT_INTERVAL_S:
                self.log.warning(
                    "audio: the driver delivered %d NaN/inf samples; replaced with 0 (%d in total)",
                    self._nonfinite_unreported, self._nonfinite,
                )
                self._nonfinite_unreported = 0
                self._last_nonfinite_log = now
        nz = np.flatnonzero(data.reshape(-1))
        if nz.size:
            self._zero_run = data.shape[0] - 1 - int(nz[-1]) // data.shape[1]
            self._nonzero_ring = ring
        else:
            self._zero_run += data.shape[0]
        assert self._resampler is not None
        return self._resampler.process(to_mono(data))


def _quietly(fn: Callable[[], Any]) -> None:
    """Call fn, ignoring errors: closing a broken stream may fail and nothing more can be done."""
    with contextlib.suppress(Exception):
        fn()
