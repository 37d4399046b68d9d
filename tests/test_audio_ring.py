"""The ring between the audio callback and the worker: order, wrap-around, overwrite + drop count."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest

from monitor.audio_ring import AudioRing


def _ramp(start: int, n: int, channels: int = 1) -> np.ndarray:
    """Frames numbered start..start+n-1 (channel c holds -value for c > 0), as float32."""
    v = np.arange(start, start + n, dtype=np.float32)
    return np.stack([v if c == 0 else -v for c in range(channels)], axis=1)


def test_reads_in_order_across_the_wrap() -> None:
    ring = AudioRing(10, channels=2)
    ring.write(_ramp(0, 7, 2))
    assert ring.read(5).data[:, 0].tolist() == [0, 1, 2, 3, 4]
    ring.write(_ramp(7, 6, 2))  # wraps around the end of the buffer
    got = ring.read()
    assert got.data[:, 0].tolist() == list(range(5, 13))
    assert got.data[:, 1].tolist() == [-x for x in range(5, 13)]
    assert ring.dropped_samples == 0 and ring.available == 0
    assert ring.read().data.shape == (0, 2)


def test_overwrites_oldest_counts_dropped_samples_and_never_blocks() -> None:
    ring = AudioRing(100)
    t0 = time.perf_counter()
    for i in range(50):  # 1000 frames into a 100-frame ring, nobody reading
        ring.write(_ramp(i * 20, 20))
    elapsed = time.perf_counter() - t0
    assert ring.dropped_samples == 900
    assert ring.callbacks == 50
    got = ring.read()
    assert got.data[:, 0].tolist() == list(range(900, 1000))  # the newest audio survives
    assert got.dropped_total == 900
    assert elapsed < 5.0  # sanity only: writing never waited for a reader


def test_block_larger_than_the_ring_keeps_its_newest_frames() -> None:
    ring = AudioRing(8)
    ring.write(_ramp(0, 3))
    ring.write(_ramp(3, 20))
    assert ring.read().data[:, 0].tolist() == list(range(15, 23))
    assert ring.dropped_samples == 15


def test_writer_is_not_blocked_by_a_waiting_reader_and_counts_flags() -> None:
    ring = AudioRing(16000)
    got: list[np.ndarray] = []

    def reader() -> None:
        # Until all 1,600 samples are in: a slow reader may get two writes in one read.
        deadline = time.monotonic() + 10
        while sum(len(g) for g in got) < 1600 and time.monotonic() < deadline:
            if ring.wait(1.0):
                got.append(ring.read().data)

    t = threading.Thread(target=reader)
    t.start()
    for i in range(10):
        ring.write(_ramp(i * 160, 160), overflow=(i == 3))
        time.sleep(0.005)
    t.join(timeout=5)
    assert not t.is_alive()
    assert np.concatenate(got)[:, 0].tolist() == list(range(1600))
    assert ring.overflows == 1 and ring.callbacks == 10 and ring.dropped_samples == 0
    assert ring.last_write_time is not None and ring.last_write_time <= time.monotonic()


def test_wait_times_out_without_data_and_reset_starts_a_new_epoch() -> None:
    ring = AudioRing(10)
    t0 = time.monotonic()
    assert ring.wait(0.05) is False
    assert time.monotonic() - t0 >= 0.04
    ring.write(_ramp(0, 4))
    ring.reset()
    assert ring.available == 0 and ring.epoch == 1 and ring.last_write_time is None
    ring.write(_ramp(4, 2))
    got = ring.read()
    assert got.epoch == 1 and got.data[:, 0].tolist() == [4, 5]
    assert ring.callbacks == 2  # counters survive a reset


def test_rejects_empty_ring() -> None:
    with pytest.raises(ValueError):
        AudioRing(0)


def test_callback_cost_is_a_copy() -> None:
    """Not a speed assertion: prints what one write of a 0.1 s block costs, for the record."""
    ring = AudioRing(160000)
    block = np.random.default_rng(0).standard_normal((1600, 1)).astype(np.float32)
    n = 2000
    t0 = time.perf_counter()
    for _ in range(n):
        ring.write(block)
    per_call_us = (time.perf_counter() - t0) / n * 1e6
    print(f"AudioRing.write of 1600 mono frames: {per_call_us:.1f} us per call")
    assert ring.callbacks == n


def _short_waits(min_frames: int, waits: int, timeout: float, pause: float = 0.0) -> int:
    """Waits for `min_frames` (each read whole) while a writer adds 16-frame blocks, `pause` s
    apart: how many timed out or read fewer frames than asked for."""
    ring = AudioRing(1 << 16)
    stop = threading.Event()

    def writer() -> None:
        block = np.ones((16, 1), dtype=np.float32)
        while not stop.is_set():
            ring.write(block)
            if pause:
                time.sleep(pause)

    t = threading.Thread(target=writer)
    t.start()
    try:
        return sum(not ring.wait(timeout, min_frames) or len(ring.read().data) < min_frames for _ in range(waits))
    finally:
        stop.set()
        t.join()


def test_wait_never_reports_nothing_early_while_a_writer_is_busy() -> None:
    """Regression: the writer sets the event after unlocking, so a reader could wake for audio it
    had already taken and return empty long before its timeout."""
    assert _short_waits(1, 300, timeout=2.0) == 0


def test_a_reader_waiting_for_a_hop_sleeps_through_the_blocks_before_it() -> None:
    """`wait(timeout, min_frames)`: the reader that needs 4 blocks is woken once, when the 4th is
    written (not at each block), and at the timeout it says False with what has arrived unread."""
    ring = AudioRing(10_000)
    wakes: list[int] = []
    written = threading.Event()

    def reader() -> None:
        written.set()
        assert ring.wait(5.0, min_frames=400)
        wakes.append(ring.available)

    t = threading.Thread(target=reader)
    t.start()
    written.wait()
    time.sleep(0.05)  # let the reader block in wait (not needed for correctness)
    for i in range(3):
        ring.write(_ramp(i * 100, 100))
        time.sleep(0.01)
        assert not wakes  # 100, 200, 300 frames: still asleep
    ring.write(_ramp(300, 100))
    t.join(5.0)
    assert wakes == [400]
    assert ring.read().data[:, 0].tolist() == list(range(400))
    ring.write(_ramp(400, 50))
    assert not ring.wait(0.02, min_frames=100)  # timed out: 50 of the 100 arrived
    assert ring.available == 50


def test_waiting_for_many_frames_never_misses_the_write_that_completes_them() -> None:
    """No lost wake-up when the writer is busy: every wait for 64 frames returns True."""
    assert _short_waits(64, 200, timeout=5.0, pause=0.0001) == 0


def test_device_frames_for_a_number_of_samples_at_the_models_rate() -> None:
    from monitor.resample import device_frames_for

    assert device_frames_for(4000, 16000, 16000) == 4000  # the same rate: exact
    assert device_frames_for(0, 48000, 16000) == device_frames_for(1, 48000, 16000) == 1
    for rate in (44100, 48000, 8000, 22050):
        n = device_frames_for(4000, rate, 16000)
        assert 1 <= n <= 4000 * rate / 16000  # never more than the samples need: never a block late
        assert n >= 4000 * rate / 16000 - 2 * rate / 16000 - 1  # and only a frame or two short


def test_waiting_for_more_than_the_ring_holds_waits_for_a_full_ring() -> None:
    ring = AudioRing(100)
    ring.write(_ramp(0, 150))  # the oldest 50 overwritten
    assert ring.wait(0.01, min_frames=500)  # 100 unread: all a 100-frame ring can hold
