"""Detection clips (`monitor.clips.ClipRecorder`): the audio around an event, on the pipeline's
timeline, which counts the audio a source lost (a gap) as time that passed."""

from __future__ import annotations

import numpy as np
import pytest
import soundfile as sf

from monitor.clips import ClipRecorder

SR = 1000


def _levels(seconds: float, level: float) -> np.ndarray:
    return np.full(int(seconds * SR), level, dtype=np.float32)


def test_a_clip_after_a_gap_holds_its_own_events_audio(tmp_path):
    clips = ClipRecorder(tmp_path, SR, pre_seconds=1.0, post_seconds=1.0, max_bytes=10**7)
    clips.add_audio(_levels(5.0, 0.1))  # stream 0-5 s
    clips.add_gap(3 * SR)  # the microphone was gone for 3 s: the pipeline's offsets go on at 8 s
    clips.event_started("e1", "siren", 9.0)
    clips.add_audio(np.concatenate([_levels(1.0, 0.2), _levels(1.0, 0.5), _levels(3.0, 0.2)]))  # 8-13 s, the siren 9-10 s
    name = clips.event_ended("e1", 10.0)
    clips.add_audio(_levels(1.0, 0.2))  # the post-roll is complete: written
    audio, sr = sf.read(tmp_path / name, dtype="float32")
    assert sr == SR and len(audio) == 3 * SR  # 8-11 s: one second either side
    assert audio[:: SR // 2] == pytest.approx([0.2, 0.2, 0.5, 0.5, 0.2, 0.2], abs=1e-3)  # the siren's second in the middle


def test_a_gap_longer_than_the_memory_leaves_silence_before_the_new_audio(tmp_path):
    clips = ClipRecorder(tmp_path, SR, pre_seconds=2.0, post_seconds=0.5, max_bytes=10**7, max_clip_seconds=2.0)
    clips.add_audio(_levels(3.0, 0.3))
    clips.add_gap(60 * SR)  # a minute unplugged: more than the recorder keeps
    clips.add_audio(_levels(0.5, 0.4))  # stream 63-63.5 s
    clips.event_started("e2", "dog_bark", 63.2)
    name = clips.event_ended("e2", 63.2)
    clips.add_audio(_levels(0.5, 0.4))
    audio, _ = sf.read(tmp_path / name, dtype="float32")
    assert len(audio) == 2 * SR  # 61.2-63.2 s: the pre-roll, capped at the longest clip
    assert np.all(audio[: int(1.8 * SR)] == 0.0)  # 61.2-63 s was lost: silence, not the old 0.3
    assert np.allclose(audio[int(1.8 * SR) :], 0.4, atol=1e-3)


def test_a_block_longer_than_the_memory_keeps_its_newest_audio_in_place(tmp_path):
    clips = ClipRecorder(tmp_path, SR, pre_seconds=1.0, post_seconds=1.0, max_bytes=10**7, max_clip_seconds=2.0)
    ramp = (np.arange(12 * SR, dtype=np.float32) / (12 * SR)) * 0.9  # its level says where it is
    clips.event_started("e3", "siren", 10.0)
    name = clips.event_ended("e3", 11.0)
    clips.add_audio(ramp)  # 12 s at once; the recorder keeps 9 s
    audio, _ = sf.read(tmp_path / name, dtype="float32")
    assert audio == pytest.approx(ramp[9 * SR : 11 * SR], abs=1e-4)  # 9-11 s (the longest clip), not older audio
