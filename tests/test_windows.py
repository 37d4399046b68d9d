"""Windows: the ring emits the same windows as the whole-file rule, at the configured hop."""

from __future__ import annotations

import numpy as np

from monitor.frontend import LogMelFrontend, StreamingLogMel
from monitor.windows import WindowRing, file_windows, hop_frames_for, pad_to_window
from tests.test_frontend import real_audio


def test_ring_windows_equal_file_windows():
    audio = real_audio(12.0)[: 12 * 16000]
    fe = LogMelFrontend()
    expected = file_windows(audio, fe, 4.0, 0.5)
    stream = StreamingLogMel()
    ring = WindowRing(397, hop_frames_for(0.5, fe.params), 64)
    got = []
    rng = np.random.default_rng(7)
    i = 0
    while i < len(audio):
        n = int(rng.integers(100, 20000))
        frames, _ = stream.process(audio[i : i + n])
        got.extend(w for _, w in ring.push(frames))
        i += n
    assert len(got) == len(expected) == 1 + (1197 - 397) // 50
    assert np.max(np.abs(np.stack(got) - expected)) < 1e-3


def test_short_clip_is_padded_to_one_window():
    clip = np.ones(8000, np.float32) * 0.1
    padded = pad_to_window(clip, 4.0, 16000)
    assert len(padded) == 64000 and np.all(padded[8000:] == 0)
    assert file_windows(clip, LogMelFrontend(), 4.0, 0.5).shape == (1, 397, 64)


def test_hop_change_applies_from_next_window():
    ring = WindowRing(10, 5, 1)
    ends = [end for end, _ in ring.push(np.zeros((20, 1), np.float32))]
    assert ends == [10, 15, 20]
    ring.set_hop(2)
    ends = [end for end, _ in ring.push(np.zeros((6, 1), np.float32))]
    assert ends == [22, 24, 26]


def test_reset_needs_a_full_window_again():
    ring = WindowRing(10, 5, 1)
    ring.push(np.zeros((12, 1), np.float32))
    ring.reset()
    assert [e for e, _ in ring.push(np.zeros((10, 1), np.float32))] == [22]


def test_shorter_hop_whose_boundary_passed_emits_on_the_next_frame():
    ring = WindowRing(10, 8, 1)
    assert [e for e, _ in ring.push(np.zeros((15, 1), np.float32))] == [10]
    ring.set_hop(2)  # 10 + 2 = 12 is already past (15 frames in)
    assert [e for e, _ in ring.push(np.zeros((4, 1), np.float32))] == [16, 18]


def test_block_push_equals_frame_by_frame_push():
    rng = np.random.default_rng(3)
    frames = rng.standard_normal((300, 4)).astype(np.float32)
    a, b = WindowRing(37, 11, 4), WindowRing(37, 11, 4)
    got_a = a.push(frames)
    got_b = [w for f in frames for w in b.push(f[None, :])]
    assert [e for e, _ in got_a] == [e for e, _ in got_b]
    assert all(np.array_equal(x, y) for (_, x), (_, y) in zip(got_a, got_b, strict=True))


def test_a_ring_aligned_to_another_emits_on_its_windows_and_half_way_between():
    """The start model's ring (fast start): a 3-frame window every 2 frames, in step with an
    8-frame window every 4, so every main window end is also a check and one falls between."""
    main, short = WindowRing(8, 4, 1), WindowRing(3, 2, 1)
    short.align(main.total_frames + main.frames_until_window)
    frames = np.arange(20, dtype=np.float32)[:, None]
    assert [end for end, _ in main.push(frames)] == [8, 12, 16, 20]
    checks = short.push(frames)
    assert [end for end, _ in checks] == [4, 6, 8, 10, 12, 14, 16, 18, 20]
    assert checks[-1][1][:, 0].tolist() == [17.0, 18.0, 19.0]  # the newest 3 frames


def test_a_ring_added_mid_stream_waits_for_a_full_window_of_its_own():
    short = WindowRing(3, 2, 1, start_at=20)  # the main ring has had 20 frames
    short.align(24)
    assert short.frames_until_window == 4  # 23 would be full, 24 is on the grid
    assert [end for end, _ in short.push(np.zeros((6, 1), np.float32))] == [24, 26]
    short.reset()  # after a gap too: a full window of new frames, then back on the grid
    short.align(28)
    assert short.frames_until_window == 4
