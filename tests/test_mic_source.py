"""MicSource with real PortAudio: PulseAudio null sink (real time) and the ALSA file plugin (no clock).

Only a USB unplug cannot be produced here for real; for the precise state-machine checks a
FAKE stream (`FakeStream`, made by `FakeUsbMic`, both named as fakes) is injected through the
`stream_factory` constructor parameter. Losing the sound server, a suspended sink (a real
stall) and a device returning digital zeros are also exercised for real.
"""

from __future__ import annotations

import logging
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import soundfile as sf

from monitor.config import AudioConfig
from monitor.devices import format_devices, list_input_devices, resolve_input_device
from monitor.errors import DeviceError
from monitor.mic_source import MicSource
from tests.pulse import PulseSink, align, wait_for_audio

RATE = 16000
SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
LOGGER = "test.mic_source"


# ---- helpers ---------------------------------------------------------------------------------
def _noise(seconds: float, seed: int = 0) -> np.ndarray:
    """White noise quantised to 16 bits (so a 16-bit path can return it bit-exact)."""
    rng = np.random.default_rng(seed)
    x = np.clip(0.3 * rng.standard_normal(round(seconds * RATE)), -1, 1)
    return (np.round(x * 32767) / 32768).astype(np.float32)


def _tone(freq: float, seconds: float, rate: int = RATE, amp: float = 0.5) -> np.ndarray:
    t = np.arange(round(seconds * rate)) / rate
    return (amp * np.sin(2 * np.pi * freq * t)).astype(np.float32)


def _read_while(src: MicSource, cond: Callable[[], bool], timeout: float) -> np.ndarray:
    """Keep reading (the worker must run for some checks) while cond() holds, at most `timeout` s."""
    out = []
    deadline = time.monotonic() + timeout
    while cond() and time.monotonic() < deadline:
        out.append(src.read(0.05))
    return np.concatenate(out) if out else np.zeros(0, np.float32)


def _read_until(src: MicSource, cond: Callable[[], bool], timeout: float) -> np.ndarray:
    out = _read_while(src, lambda: not cond(), timeout)
    assert cond(), f"condition not reached within {timeout} s (health={src.health}, stats={src.stats})"
    return out


def _capture_playback(src: MicSource, sink: PulseSink, play: Callable[[], Any], tail_s: float = 0.4) -> np.ndarray:
    """Capture while `play()`'s paplay runs, plus a short tail; capture must already flow."""
    wait_for_audio(src.read)
    proc = play()
    got = _read_while(src, lambda: proc.poll() is None, timeout=120)
    end = time.monotonic() + tail_s
    tail = _read_while(src, lambda: time.monotonic() < end, timeout=tail_s + 1)
    assert proc.wait(timeout=10) == 0, proc.stderr.read() if proc.stderr else ""
    return np.concatenate([got, tail])


def _assert_bit_exact_in_pieces(got: np.ndarray, ref: np.ndarray, piece_s: float = 0.25) -> None:
    """The 0.25 s pieces of `ref` occur bit-exact, in order, in `got`.

    Piece by piece rather than in one go: on a busy machine paplay can under-run, which inserts
    silence into the capture (seen here with a load average of 4 on 2 CPUs) but never changes a
    sample. So: align the whole once, then look for each piece *exactly* within +-0.5 s of where
    it should be; a piece that straddles an under-run gap cannot match, most pieces must.
    """
    n = round(piece_s * RATE)
    base, ncc = align(got, ref)
    assert ncc > 0.95, f"the played audio is not in the capture (ncc {ncc:.3f})"
    window = RATE // 2
    last = -1
    candidates = exact = 0
    for start in range(0, len(ref) - n + 1, n):
        piece = ref[start : start + n]
        if np.count_nonzero(piece) < n // 2:
            continue  # (near) digital silence matches anywhere
        candidates += 1
        lo = max(0, base + start - window)
        region = got[lo : base + start + window + n]
        if len(region) < n:
            continue
        views = np.lib.stride_tricks.sliding_window_view(region, n)
        hits = np.flatnonzero(np.all(views == piece, axis=1))
        if hits.size == 0:
            continue  # straddles an under-run gap
        offset = lo + int(hits[0])
        assert offset > last, "pieces out of order"
        last = offset
        exact += 1
    print(f"{exact} of {candidates} pieces of 0.25 s found bit-exact")
    assert candidates > 0 and exact >= 0.7 * candidates, f"only {exact} of {candidates} pieces found bit-exact"


def _peak_hz(x: np.ndarray, rate: int) -> float:
    spec = np.abs(np.fft.rfft(x * np.hanning(len(x))))
    return float(np.argmax(spec) * rate / len(x))


def _messages(caplog: pytest.LogCaptureFixture, level: int = logging.INFO) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == LOGGER and r.levelno >= level]


@pytest.fixture()
def log(caplog: pytest.LogCaptureFixture) -> logging.Logger:
    caplog.set_level(logging.DEBUG, logger=LOGGER)
    return logging.getLogger(LOGGER)


# ---- the normal path, real PortAudio through PulseAudio --------------------------------------
def test_captures_played_noise_bit_exact_after_alignment(pulse_sink: PulseSink, log: logging.Logger) -> None:
    ref = _noise(1.5, seed=1)
    src = MicSource(AudioConfig(device=pulse_sink.device, sample_rate=RATE), RATE, logger=log)
    src.start()
    try:
        got = _capture_playback(src, pulse_sink, lambda: pulse_sink.play_array(ref, RATE))
    finally:
        src.stop()
    _assert_bit_exact_in_pieces(got, ref)
    assert src.stats["dropped_samples"] == 0 and src.gap_count == 0
    assert src.health == "stopped"


def test_capture_latency_is_measured(pulse_sink: PulseSink, log: logging.Logger) -> None:
    """Records (prints) the delay from paplay's start to the first played sample coming out of read()."""
    src = MicSource(AudioConfig(device=pulse_sink.device, sample_rate=RATE, block_seconds=0.02), RATE, logger=log)
    src.start()
    try:
        wait_for_audio(src.read)
        src.read(0)  # drop what is queued
        lat = []
        for _ in range(3):
            proc = pulse_sink.play_array(_tone(1000, 0.3), RATE, pad_s=0.1)
            t0 = time.monotonic()
            seen = None
            while time.monotonic() - t0 < 5 and seen is None:
                block = src.read(0.01)
                if len(block) and np.abs(block).max() > 0.05:
                    seen = time.monotonic() - t0
            proc.wait(timeout=10)
            assert seen is not None
            lat.append(seen - 0.1)  # minus the 100 ms of leading silence
            src.read(0)  # drop what is queued
        print(f"capture latency (paplay 50 ms + pulse + PortAudio, 20 ms blocks): {[round(x, 3) for x in lat]} s")
    finally:
        src.stop()


@pytest.mark.parametrize("device_rate", [RATE, 44100])
def test_a_read_asked_for_a_hop_returns_at_the_callback_that_completes_it(
    pulse_sink: PulseSink, log: logging.Logger, device_rate: int
) -> None:
    """`read(timeout, want)` on the real input path: the worker sleeps until `want` samples (at
    the model's rate) have arrived, then gets all of them at once: at most one callback's worth
    more, or (resampled) the filter's few ms less, never a block's worth less."""
    block_s = 0.05
    src = MicSource(AudioConfig(device=pulse_sink.device, sample_rate=device_rate, block_seconds=block_s),
                    RATE, logger=log)  # fmt: skip
    src.start()
    try:
        wait_for_audio(src.read)
        sizes = []
        for _ in range(4):
            src.read(0)  # drop what is queued
            sizes.append(len(src.read(2.0, want=4000)))
    finally:
        src.stop()
    slack = 0.02 * RATE if device_rate != RATE else 0  # soxr keeps about 14 ms back at 44.1 kHz
    assert all(4000 - slack <= n < 4000 + block_s * RATE for n in sizes), sizes


@pytest.mark.needs_shared
def test_captures_a_real_recording(pulse_sink: PulseSink, log: logging.Logger) -> None:
    path = SHARED_DATA / "recordings" / "118101.flac"  # dog barks, 16 kHz mono 16-bit
    if not path.is_file():
        pytest.skip("needs ../shared/data (recordings/118101.flac)")
    ref, rate = sf.read(str(path), dtype="float32", frames=6 * 16000)  # first 6 s keep the test short
    assert rate == RATE
    src = MicSource(AudioConfig(device=pulse_sink.device, sample_rate=RATE), RATE, logger=log)
    src.start()
    try:
        got = _capture_playback(src, pulse_sink, lambda: pulse_sink.play_array(ref, rate))
    finally:
        src.stop()
    _assert_bit_exact_in_pieces(got, ref)


def test_device_by_index_and_by_name_substring(pulse_sink: PulseSink, log: logging.Logger) -> None:
    for spec in (pulse_sink.device_index, "PULS"):
        src = MicSource(AudioConfig(device=spec, sample_rate=RATE), RATE, logger=log)
        src.start()
        try:
            assert len(wait_for_audio(src.read)) > 0
            assert src.stats["device"] == "pulse"
            assert src.stats["device_index"] == pulse_sink.device_index
        finally:
            src.stop()


def test_unknown_device_name_is_a_one_line_device_error_listing_inputs(pulse_sink: PulseSink) -> None:
    src = MicSource(AudioConfig(device="no-such-usb-mic"), RATE)
    with pytest.raises(DeviceError) as err:
        src.start()
    msg = str(err.value)
    assert "no such input device" in msg and "no-such-usb-mic" in msg
    assert f"[{pulse_sink.device_index}] pulse" in msg and "\n" not in msg
    with pytest.raises(DeviceError, match="no such input device"):
        MicSource(AudioConfig(device=999), RATE).start()
    assert src.health == "stopped"


@pytest.mark.parametrize("device_rate", [44100, 48000, None])
def test_device_rate_is_resampled_to_16k(pulse_sink: PulseSink, log: logging.Logger, device_rate: int | None) -> None:
    src = MicSource(AudioConfig(device=pulse_sink.device, sample_rate=device_rate), RATE, logger=log)
    src.start()
    try:
        got = _capture_playback(src, pulse_sink, lambda: pulse_sink.play_array(_tone(3000, 1.0), RATE))
        stats = src.stats
    finally:
        src.stop()
    expected_rate = device_rate or 44100  # PulseAudio's default rate is the device default
    assert stats["device_rate"] == expected_rate
    loud = np.flatnonzero(np.abs(got) > 0.2)
    span = loud[-1] - loud[0]
    # 1 s of tone lasts 1 s at 16 kHz; an underrun of paplay on a busy machine can only add gaps
    assert 0.98 * RATE < span < 1.25 * RATE
    seg = got[loud[0] + 1600 : loud[0] + 1600 + 8192]
    assert abs(_peak_hz(seg, RATE) - 3000) < 5


def test_two_channels_are_downmixed_in_the_worker(pulse_sink: PulseSink, log: logging.Logger) -> None:
    ref = _noise(0.8, seed=3)
    src = MicSource(AudioConfig(device=pulse_sink.device, sample_rate=RATE, channels=2), RATE, logger=log)
    src.start()
    try:
        got = _capture_playback(src, pulse_sink, lambda: pulse_sink.play_array(ref, RATE))
    finally:
        src.stop()
    assert got.ndim == 1 and got.dtype == np.float32
    _assert_bit_exact_in_pieces(got, ref)  # mono sink upmixed to both channels, averaged back exactly



# ---- devices ---------------------------------------------------------------------------------
def test_list_input_devices_reports_rates_and_formats_a_table(pulse_sink: PulseSink) -> None:
    devices = list_input_devices()
    pulse = next(d for d in devices if d["name"] == "pulse")
    assert pulse["index"] == pulse_sink.device_index and pulse["hostapi"] == "ALSA"
    assert pulse["max_input_channels"] >= 1 and pulse["default_samplerate"] == 44100.0
    assert {8000, 16000, 22050, 32000, 44100, 48000} <= set(pulse["rates"])
    table = format_devices(devices)
    assert "accepted rates (Hz)" in table and "pulse" in table and "8000, 16000, 22050" in table
    print(table)


def test_format_devices_without_devices_is_a_sentence() -> None:
    text = format_devices([])
    assert text.startswith("No audio input devices found.") and "audio" in text


def test_ambiguous_name_is_an_error_exact_name_wins(pulse_sink: PulseSink) -> None:
    assert resolve_input_device("pulse")["index"] == pulse_sink.device_index
    with pytest.raises(DeviceError, match="matches several input devices"):
        resolve_input_device("u")  # "pulse", "default", "soundmon_file" all contain a "u"


# ---- the ALSA file plugin: real PortAudio without a clock ------------------------------------
def test_worker_falling_behind_drops_oldest_and_counts(
    pulse_sink: PulseSink, log: logging.Logger, caplog: pytest.LogCaptureFixture
) -> None:
    """A clock-less device floods the 1 s ring while nobody reads: drops are counted, writes never wait."""
    pulse_sink.set_file_input(_noise(2.0, seed=5))
    cfg = AudioConfig(device=pulse_sink.file_device, sample_rate=RATE, ring_seconds=1.0)
    src = MicSource(cfg, RATE, logger=log)
    src.start()
    try:
        time.sleep(0.3)  # the callback keeps writing; the worker does not read
        before = src.stats
        block = src.read(1.0)
    finally:
        src.stop()
    assert before["callbacks"] > 20 and before["dropped_samples"] > RATE
    assert 0 < len(block) <= RATE  # at most the ring's 1 s of newest audio
    assert src.gap_count == 1 and src.last_gap_samples > 0
    drops = [m for m in _messages(caplog, logging.WARNING) if "samples dropped" in m]
    assert len(drops) == 1  # one line, not one per block


def test_digital_zeros_from_a_real_device_reopen_then_ok(
    pulse_sink: PulseSink, log: logging.Logger, caplog: pytest.LogCaptureFixture
) -> None:
    """The file device returns only zeros: "silent", a reopen, audio still delivered; then sound -> ok."""
    pulse_sink.set_file_input(np.zeros(RATE, dtype=np.int16))
    cfg = AudioConfig(device=pulse_sink.file_device, sample_rate=RATE, ring_seconds=1.0,
                      silence_seconds=1.0, reopen_backoff_max=0.5)  # fmt: skip
    src = MicSource(cfg, RATE, logger=log)
    src.start()
    try:
        zeros = _read_until(src, lambda: src.stats["reopen_count"] >= 1, timeout=20)
        assert len(zeros) > 0 and not np.any(zeros)  # kept reading through the silent state
        assert src.health in ("silent", "reopening", "error")
        pulse_sink.set_file_input(_tone(440, 1.0))  # the next reopen reads this
        _read_until(src, lambda: src.health == "ok", timeout=20)
        sound = wait_for_audio(src.read)
    finally:
        src.stop()
    assert np.abs(sound).max() > 0.1
    msgs = _messages(caplog)
    assert sum("only digital zeros for 1.0 s; reopening" in m for m in msgs) == 1
    assert sum(m.startswith("audio: ok again after") for m in msgs) == 1
    assert src.gap_count >= 1


# ---- real failures through PulseAudio ---------------------------------------------------------
@pytest.mark.slow
def test_real_stall_suspended_sink_reopens_and_recovers(
    pulse_sink: PulseSink, log: logging.Logger, caplog: pytest.LogCaptureFixture
) -> None:
    cfg = AudioConfig(device=pulse_sink.device, sample_rate=RATE, stall_seconds=3.0, reopen_backoff_max=2.0)
    src = MicSource(cfg, RATE, logger=log)
    src.start()
    try:
        wait_for_audio(src.read)
        pulse_sink.suspend(True)
        _read_until(src, lambda: src.stats["reopen_count"] >= 1, timeout=15)
        pulse_sink.suspend(False)
        _read_until(src, lambda: src.health == "ok", timeout=20)
        assert len(wait_for_audio(src.read)) > 0
    finally:
        pulse_sink.suspend(False)
        src.stop()
    msgs = _messages(caplog)
    assert "audio: stalled (no callbacks for 3.0 s); reopening" in msgs
    assert sum(m.startswith("audio: ok again after") for m in msgs) == 1
    assert src.gap_count >= 1


@pytest.mark.slow
def test_sound_server_lost_then_back_like_an_unplugged_mic(
    pulse_sink: PulseSink, log: logging.Logger, caplog: pytest.LogCaptureFixture
) -> None:
    """Killing PulseAudio kills the stream (PortAudio error); reopen fails until it is back."""
    cfg = AudioConfig(device=pulse_sink.device, sample_rate=RATE, reopen_backoff_max=1.0)
    src = MicSource(cfg, RATE, logger=log)
    src.start()
    try:
        wait_for_audio(src.read)
        pulse_sink.kill_server()
        _read_until(src, lambda: src.health == "error" and src.stats["reopen_count"] >= 1, timeout=15)
        time.sleep(1.5)  # a few failed attempts while the "device" is gone
        assert src.health in ("error", "reopening")
        pulse_sink.start_server()
        _read_until(src, lambda: src.health == "ok", timeout=20)
        ref = _noise(0.5, seed=9)
        got = _capture_playback(src, pulse_sink, lambda: pulse_sink.play_array(ref, RATE))
    finally:
        pulse_sink.ensure_running()
        src.stop()
    _assert_bit_exact_in_pieces(got, ref)  # the same MicSource captures again, no restart
    msgs = _messages(caplog)
    assert sum(m.startswith("audio: stream error") and m.endswith("; reopening") for m in msgs) == 1
    assert sum(m.startswith("audio: reopen failed") for m in msgs) == 1  # repeats go to DEBUG
    assert sum(m.startswith("audio: ok again after") for m in msgs) == 1
    assert src.gap_count >= 1


# ---- a FAKE stream for what cannot be done here for real: a USB unplug -----------------------
class FakePortAudioError(Exception):
    """What the FAKE raises where PortAudio would raise PortAudioError."""


class FakeStream:
    """FAKE stand-in for sounddevice.InputStream (created by FakeUsbMic); NOT real audio.

    A thread calls `callback(indata, frames, time, status)` every block at real-time pace with
    what the FakeUsbMic's `mode` says: "tone", "zeros", "nan" (some NaN/inf) or "stall" (no calls).
    """

    def __init__(self, mic: FakeUsbMic, **kw: Any) -> None:
        self.mic = mic
        self.kw = kw
        self.samplerate = int(kw["samplerate"])
        self.channels = int(kw["channels"])
        self.blocksize = int(kw["blocksize"])
        self.active = False
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._n = 0

    def start(self) -> None:
        self.active = True
        self._thread.start()

    def _run(self) -> None:
        period = self.blocksize / self.samplerate
        t_next = time.monotonic()
        while not self._stop.is_set():
            t_next += period
            self._stop.wait(max(0.0, t_next - time.monotonic()))
            if self._stop.is_set() or self.mic.mode == "stall":
                continue
            t = (self._n + np.arange(self.blocksize)) / self.samplerate
            self._n += self.blocksize
            block = np.repeat((0.3 * np.sin(2 * np.pi * 440 * t)).astype(np.float32)[:, None], self.channels, 1)
            if self.mic.mode == "zeros":
                block[:] = 0
            elif self.mic.mode == "nan":
                block[::100] = np.nan
                block[1::100] = np.inf
            self.kw["callback"](block, self.blocksize, None, None)

    def die(self) -> None:
        """What an unplug does to an open stream: it ends, and PortAudio calls finished_callback."""
        self.active = False
        self._stop.set()
        self.kw["finished_callback"]()

    def abort(self) -> None:
        if self.active:
            self.die()

    stop = abort

    def close(self) -> None:
        self.abort()


class FakeUsbMic:
    """FAKE device + stream factory for MicSource(stream_factory=...): a USB mic that can be unplugged."""

    def __init__(self, default_rate: int = 48000, max_channels: int = 2) -> None:
        self.mode = "tone"
        self.plugged = True
        self.default_rate = default_rate
        self.max_channels = max_channels
        self.streams: list[FakeStream] = []
        self.rescans: list[float] = []  # MicSource rescans the devices at every reopen attempt

    def resolve(self, spec: Any) -> dict[str, Any]:
        if not self.plugged:
            raise DeviceError(f"audio.device {spec!r}: no such input device; available inputs: none")
        return {"index": 7, "name": "FAKE USB mic", "max_input_channels": self.max_channels,
                "default_samplerate": float(self.default_rate)}  # fmt: skip

    def rescan(self) -> None:
        self.rescans.append(time.monotonic())

    def __call__(self, **kw: Any) -> FakeStream:
        if not self.plugged:
            raise FakePortAudioError("Error opening InputStream: Device unavailable [PaErrorCode -9985]")
        stream = FakeStream(self, **kw)
        self.streams.append(stream)
        return stream

    def unplug(self) -> None:
        self.plugged = False
        for s in self.streams:
            if s.active:
                s.die()

    def replug(self) -> None:
        self.plugged = True


def _replug_and_capture(src: MicSource, mic: FakeUsbMic) -> None:
    """The mic comes back: the source gets healthy by itself and delivers its tone."""
    mic.replug()
    _read_until(src, lambda: src.health == "ok", timeout=10)
    assert np.abs(wait_for_audio(src.read)).max() > 0.1


def test_fake_unplug_error_backoff_then_replug_ok(log: logging.Logger, caplog: pytest.LogCaptureFixture) -> None:
    mic = FakeUsbMic()
    cfg = AudioConfig(device="usb", reopen_backoff_max=2.0, block_seconds=0.05)
    src = MicSource(cfg, RATE, logger=log, stream_factory=mic)
    src.start()
    try:
        first = wait_for_audio(src.read)
        assert src.stats["device_rate"] == 48000 and first.dtype == np.float32
        mic.unplug()
        _read_until(src, lambda: len(mic.rescans) >= 4, timeout=15)  # attempts at ~0, 1, 2, 2 s
        assert src.health == "error"
        assert src.read(0.05).size == 0  # read() never raises for device trouble
        _replug_and_capture(src, mic)
    finally:
        src.stop()
    gaps = np.diff(mic.rescans[:4])
    assert gaps[0] >= 0.9 and gaps[1] >= 1.9 and gaps[2] >= 1.9  # 1 s, 2 s, capped at 2 s
    msgs = _messages(caplog)
    assert sum(m == "audio: stream error (the stream finished unexpectedly); reopening" for m in msgs) == 1
    assert sum(m.startswith("audio: reopen failed") for m in msgs) == 1
    assert sum(m.startswith("audio: ok again after") and "reopen attempts" in m for m in msgs) == 1
    assert src.gap_count == 1 and src.stats["reopen_count"] >= 4


def test_fake_start_with_retry_waits_for_a_missing_mic_instead_of_raising(
    log: logging.Logger, caplog: pytest.LogCaptureFixture
) -> None:
    """`start(retry=True)`, as a reload reopens the previous input: a mic unplugged at that
    moment is retried in the background (as after an unplug) and captured once it is back."""
    mic = FakeUsbMic()
    mic.plugged = False
    src = MicSource(AudioConfig(device="usb", reopen_backoff_max=1.0), RATE, logger=log, stream_factory=mic)
    with pytest.raises(DeviceError):
        src.start()  # at start-up the daemon stops with one line
    src.start(retry=True)
    try:
        assert src.health == "error" and src.read(0.05).size == 0
        _replug_and_capture(src, mic)
    finally:
        src.stop()
    assert any("retrying with backoff" in m for m in _messages(caplog, logging.WARNING))


def test_fake_stall_is_detected_and_reopened(log: logging.Logger, caplog: pytest.LogCaptureFixture) -> None:
    mic = FakeUsbMic()
    src = MicSource(AudioConfig(stall_seconds=0.3), RATE, logger=log, stream_factory=mic)
    src.start()
    try:
        wait_for_audio(src.read)
        mic.mode = "stall"
        _read_until(src, lambda: src.health != "ok", timeout=5)
        mic.mode = "tone"
        _read_until(src, lambda: src.health == "ok", timeout=5)
        wait_for_audio(src.read)
    finally:
        src.stop()
    msgs = _messages(caplog)
    assert "audio: stalled (no callbacks for 0.3 s); reopening" in msgs
    assert sum(m.startswith("audio: ok again after") for m in msgs) == 1  # normally "after 1 reopen attempt"
    assert len(mic.streams) >= 2 and src.gap_count >= 1


def test_fake_nan_samples_are_zeroed_and_counted(log: logging.Logger, caplog: pytest.LogCaptureFixture) -> None:
    mic = FakeUsbMic()
    mic.mode = "nan"
    src = MicSource(AudioConfig(sample_rate=RATE, channels=2), RATE, logger=log, stream_factory=mic)
    src.start()
    try:
        got = _read_until(src, lambda: src.stats["nonfinite_samples"] >= 200, timeout=5)
    finally:
        src.stop()
    assert np.isfinite(got).all() and len(got) > 0
    assert sum("NaN/inf samples" in m for m in _messages(caplog, logging.WARNING)) == 1


def _silent_mic_reopened_twice(log: logging.Logger, backoff_max: float) -> tuple[FakeUsbMic, MicSource]:
    """A started source on a FAKE mic that delivers digital zeros, once it has reopened it twice."""
    mic = FakeUsbMic()
    mic.mode = "zeros"
    cfg = AudioConfig(silence_seconds=0.5, reopen_backoff_max=backoff_max, block_seconds=0.05)
    src = MicSource(cfg, RATE, logger=log, stream_factory=mic)
    src.start()
    try:
        _read_until(src, lambda: len(mic.streams) >= 3, timeout=10)
    except BaseException:
        src.stop()
        raise
    return mic, src


def test_fake_zeros_go_silent_keep_reading_and_recover(log: logging.Logger, caplog: pytest.LogCaptureFixture) -> None:
    mic, src = _silent_mic_reopened_twice(log, backoff_max=0.5)  # silent -> reopen, still zeros -> again
    try:
        states: set[str] = set()
        blocks = []
        end = time.monotonic() + 0.6
        while time.monotonic() < end:
            blocks.append(src.read(0.05))
            states.add(src.health)
        zeros = np.concatenate(blocks)
        assert len(zeros) > 0 and not np.any(zeros)  # audio keeps flowing while "silent"
        assert states <= {"silent", "reopening"}
        mic.mode = "tone"
        _read_until(src, lambda: src.health == "ok", timeout=5)
    finally:
        src.stop()
    msgs = _messages(caplog)
    assert sum(m == "audio: only digital zeros for 0.5 s; reopening" for m in msgs) == 1  # one line per change
    assert sum(m.startswith("audio: ok again after") for m in msgs) == 1


def test_fake_device_with_too_few_channels_is_a_device_error() -> None:
    src = MicSource(AudioConfig(channels=4), RATE, stream_factory=FakeUsbMic(max_channels=2))
    with pytest.raises(DeviceError, match=r"audio.channels 4: input device \[7\] FAKE USB mic has only 2"):
        src.start()
    assert src.health == "stopped"


def test_read_before_start_and_after_stop_returns_nothing() -> None:
    src = MicSource(AudioConfig(), RATE, stream_factory=FakeUsbMic())
    assert src.read(0.01).size == 0 and src.health == "stopped"
    src.start()
    src.stop()
    src.stop()  # idempotent
    assert src.health == "stopped"
    assert src.stats["dropped_samples"] == 0


def test_fake_silent_mic_that_starts_to_sound_is_kept_without_a_reopen(
    log: logging.Logger, caplog: pytest.LogCaptureFixture
) -> None:
    """Digital zeros (a noise-gated mic in a quiet room) make the state "silent"; when sound
    comes while the next reopen attempt is still backing off, the stream is fine: it goes back
    to "ok" at once, without the reopen that would cut the sound (and end its event)."""
    mic, src = _silent_mic_reopened_twice(log, backoff_max=30.0)  # the next attempt 2 s later
    try:
        _read_until(src, lambda: src.health == "silent", timeout=5)
        gaps, streams = src.gap_count, len(mic.streams)
        mic.mode = "tone"
        _read_until(src, lambda: src.health == "ok", timeout=1.5)  # well before the next attempt
        audio = wait_for_audio(src.read)
    finally:
        src.stop()
    assert np.abs(audio).max() > 0.1
    assert (src.gap_count, len(mic.streams)) == (gaps, streams)  # no reopen, no gap
    assert any(m.startswith("audio: ok again after") for m in _messages(caplog))


def test_fake_stats_never_go_backwards_while_the_watcher_reopens(log: logging.Logger) -> None:
    """`stats` runs on the daemon's thread while the watcher may be reopening the device: the
    all-time counters it reports never count a ring twice (a jump, then a fall) or not at all."""
    mic = FakeUsbMic()
    src = MicSource(AudioConfig(device="usb", block_seconds=0.05, stall_seconds=100.0), RATE, logger=log,
                    stream_factory=mic)  # fmt: skip
    src.start()
    stop = threading.Event()

    def reopen_forever() -> None:
        while not stop.is_set():
            with src._lock:
                src._reopen()
                ring = src._ring
            assert ring is not None
            with ring._lock:
                ring.dropped_samples += 1000  # each ring has lost audio: its count must be added once
            time.sleep(0.0005)

    old_interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)  # switch threads as often as possible: find the window if there is one
    reopener = threading.Thread(target=reopen_forever)
    reopener.start()
    try:
        seen, went_back = 0, []
        end = time.monotonic() + 2.0
        while time.monotonic() < end:
            now = src.stats["dropped_samples"]
            if now < seen:
                went_back.append((seen, now))
            seen = max(seen, now)
    finally:
        stop.set()
        reopener.join()
        sys.setswitchinterval(old_interval)
        src.stop()
    assert not went_back, went_back[:3]
