"""The streaming pipeline's warm start: a window from the first hop on, and the same windows as a
cold start once a full window of audio has arrived."""

from __future__ import annotations

import numpy as np
import pytest

from monitor.bundle import load_bundle
from monitor.config import DetectionConfig
from monitor.frontend import frame_count
from monitor.pipeline import Pipeline, expected_windows
from tests.fixtures_model import tiny_bundle  # noqa: F401
from tests.test_frontend import real_audio


class RecordingRunner:
    """Scores every window 0 and keeps a copy of it: lets a test see what the model was given."""

    def __init__(self, n_labels: int) -> None:
        self.n_labels = n_labels
        self.windows: list[np.ndarray] = []

    def predict(self, window: np.ndarray) -> np.ndarray:
        self.windows.append(window.copy())
        return np.zeros(self.n_labels, dtype=np.float32)


def run(bundle, audio: np.ndarray, warm: bool, block: int = 1000):
    runner = RecordingRunner(len(bundle.labels))
    pipe = Pipeline(bundle, runner, DetectionConfig(min_level_dbfs=-200.0), warm_start=warm)
    results = []
    for i in range(0, len(audio), block):
        results += pipe.process(audio[i : i + block])
    return pipe, runner, results


def test_warm_start_answers_after_one_hop_then_matches_a_cold_start(tiny_bundle):  # noqa: F811
    bundle = load_bundle(tiny_bundle)
    audio = real_audio(12.0)[: 12 * 16000]
    _, cold_runner, cold = run(bundle, audio, warm=False)
    warm_pipe, warm_runner, warm = run(bundle, audio, warm=True)

    # Cold: the first window needs 4 s of audio. Warm: it comes within one hop (0.5 s).
    assert cold[0].end_offset_s > 3.9
    assert 0.0 < warm[0].end_offset_s <= 0.5
    assert np.allclose(np.diff([r.end_offset_s for r in warm]), 0.5)

    # The warm-up windows hold digital silence ahead of the audio, as training pads short clips.
    first = warm_runner.windows[0]
    assert np.all(first[:300] == first[0, 0]) and first[-1].max() > first[0, 0]

    # From the first full window on, warm and cold windows are the same windows, to float32
    # rounding: BLAS may round a frame's mel projection differently when the frames come in
    # batches of another size (seen on a 2-core AMD EPYC: 4e-6 dB; bit for bit on an Intel Xeon).
    k = next(i for i, r in enumerate(warm) if abs(r.end_offset_s - cold[0].end_offset_s) < 1e-9)
    assert len(warm) - k == len(cold)
    for w, c in zip(warm_runner.windows[k:], cold_runner.windows, strict=True):
        np.testing.assert_allclose(w, c, rtol=0, atol=1e-4)

    # The window level counts real audio only, not the padding.
    assert warm[0].level_dbfs > -60.0
    n = len(audio)
    p, hop = bundle.frontend, warm_pipe.ring.hop_frames
    assert len(warm) == expected_windows(n, p, bundle.window_frames, hop, warm_start=True)
    assert len(cold) == expected_windows(n, p, bundle.window_frames, hop, warm_start=False)
    assert frame_count(n, p) >= bundle.window_frames


def test_warm_start_again_after_a_gap(tiny_bundle):  # noqa: F811
    bundle = load_bundle(tiny_bundle)
    audio = real_audio(6.0)[: 6 * 16000]
    pipe, _, results = run(bundle, audio, warm=True)
    pipe.gap(16000)  # the device was gone for a second
    after = pipe.process(audio[:8000])
    assert len(after) == 1
    assert after[0].end_offset_s - results[-1].end_offset_s > 1.0  # the clock counts the gap
    assert after[0].end_offset_s <= 6.0 + 1.0 + 0.5 + 1e-9


def test_a_pipeline_taking_over_a_stream_goes_on_counting_its_offsets(tiny_bundle):  # noqa: F811
    """`start_offset_s` (the daemon's model reload): the same windows and scores, their offsets
    counted from where the stream had got to, so offsets (and the wall-clock times made from
    them) do not start again at 0."""
    bundle = load_bundle(tiny_bundle)
    audio = real_audio(6.0)[: 6 * 16000]
    fresh_pipe, fresh_runner, fresh = run(bundle, audio, warm=True)
    runner = RecordingRunner(len(bundle.labels))
    later = Pipeline(bundle, runner, DetectionConfig(min_level_dbfs=-200.0), warm_start=True, start_offset_s=3600.0)
    taken = [r for i in range(0, len(audio), 1000) for r in later.process(audio[i : i + 1000])]
    assert [r.end_offset_s - 3600.0 for r in taken] == pytest.approx([r.end_offset_s for r in fresh], abs=1e-9)
    assert all(np.array_equal(a, b) for a, b in zip(runner.windows, fresh_runner.windows, strict=True))
    assert later.offset_s == pytest.approx(fresh_pipe.offset_s + 3600.0, abs=1e-9)


@pytest.mark.parametrize("before", [6 * 16000, 6 * 16000 + 77, 5 * 16000 + 3333])
def test_after_a_gap_windows_end_where_the_stream_has_got_to(tiny_bundle, before):  # noqa: F811
    """A gap restarts the framing like a pipeline taking over the stream at that offset: the
    windows after it end exactly where those of such a pipeline do. The audio the front-end held
    for its next frame counts as lost with the gap; it once did not, and every later window and
    event ended up to a frame (32 ms) early, more so after each gap."""
    bundle = load_bundle(tiny_bundle)
    audio = real_audio(9.0)[: 9 * 16000]
    pipe, _, _ = run(bundle, audio[:before], warm=True)
    pipe.gap(16000)
    after = [r for i in range(0, 3 * 16000, 1000) for r in pipe.process(audio[6 * 16000 :][i : i + 1000])]
    runner = RecordingRunner(len(bundle.labels))
    fresh = Pipeline(bundle, runner, DetectionConfig(min_level_dbfs=-200.0), warm_start=True,
                     start_offset_s=(before + 16000) / 16000)  # fmt: skip
    expected = [r for i in range(0, 3 * 16000, 1000) for r in fresh.process(audio[6 * 16000 :][i : i + 1000])]
    assert [r.end_offset_s for r in after] == pytest.approx([r.end_offset_s for r in expected], abs=1e-9)
    assert pipe.offset_s == pytest.approx(fresh.offset_s, abs=1e-9)
