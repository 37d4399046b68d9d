"""The streaming CNN: a hop's scores from only the frames it added, equal to the window model's.

A body that never pads along time and whose strides divide the 50-frame hop (the shipped
`cnn_spn_s23t1`, the test size `tiny_s`) can run as a streaming model (`training.stream_export`);
the daemon runs it through `monitor.stream_runner.StreamingRunner` whenever its hop is the model's.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from monitor.frontend import FrontendParams, LogMelFrontend

DEMO = Path(__file__).resolve().parent.parent / "demo" / "street_demo.flac"
HOP = 50


def demo_logmel(seconds: float = 20.0) -> np.ndarray:
    audio, _ = sf.read(DEMO, dtype="float32", frames=int(seconds * 16000))
    return LogMelFrontend(FrontendParams())(audio)


def windows_of(logmel: np.ndarray, frames: int = 397) -> list[np.ndarray]:
    return [logmel[i : i + frames] for i in range(0, len(logmel) - frames + 1, HOP)]


@pytest.mark.integration  # builds Keras models (TensorFlow)
@pytest.mark.parametrize("arch", ["tiny_s", "cnn_spn_s23t1"])
def test_streaming_model_equals_the_window_model_in_float(arch):
    """Random weights, real audio: primed on the first window, then one hop at a time."""
    from monitor.stream_runner import prime_chunks
    from training.models import build_cnn
    from training.stream_export import streaming_model, zero_states

    model = build_cnn(10, arch=arch, dropout=0.0)
    sm = streaming_model(model, 397, HOP)
    lm = demo_logmel(12.0)
    wins = np.stack(windows_of((lm - lm.mean()) / lm.std()))[..., None].astype(np.float32)
    expected = model.predict(wins, verbose=0)

    states = zero_states(sm)
    got = []
    for w, window in enumerate(wins):
        chunks = prime_chunks(window, HOP) if w == 0 else [window[-HOP:]]
        for chunk in chunks:
            out = sm({"new_frames": chunk[None], **states}, training=False)
            states = {k: np.asarray(v) for k, v in out.items() if k != "probs"}
        got.append(np.asarray(out["probs"])[0])
    assert np.abs(np.array(got) - expected).max() < 1e-5


@pytest.mark.integration  # builds Keras models (TensorFlow)
@pytest.mark.parametrize(("arch", "blind_frames"), [("tiny_s", 26), ("cnn_spn_s23t1", 0)])
def test_how_many_of_a_windows_newest_frames_never_reach_the_output(arch, blind_frames):
    """Unpadded strided layers drop their leftover rows at the newest end unless aligned to it
    (`align_newest`): then a change to the window's newest frame changes the scores."""
    from training.models import build_cnn

    model = build_cnn(10, arch=arch, dropout=0.0)
    x = np.random.default_rng(0).standard_normal((1, 397, 64, 1)).astype(np.float32)
    base = model(x, training=False).numpy()

    def reaches(age: int) -> bool:
        y = x.copy()
        y[0, 396 - age] += 10.0
        return bool(np.abs(model(y, training=False).numpy() - base).max() > 0)

    assert not any(reaches(age) for age in range(blind_frames))
    assert reaches(blind_frames)


@pytest.mark.integration  # builds Keras models (TensorFlow)
def test_a_body_that_pads_along_time_cannot_stream():
    """A body padded along time (the `tiny` test size) is refused."""
    from training.models import build_cnn
    from training.stream_export import plan_stream

    with pytest.raises(ValueError, match="pads along time"):
        plan_stream(build_cnn(10, arch="tiny"), 397, HOP)


def test_streaming_runner_scores_like_the_window_runner(tiny_stream_bundle):
    """int8: both models are quantised on their own, so scores agree to quantisation steps."""
    from monitor.runner import ModelRunner, open_model
    from monitor.stream_runner import StreamingRunner

    bundle, runner = open_model(tiny_stream_bundle, hop_seconds=0.5)
    assert isinstance(runner, StreamingRunner)
    windowed = ModelRunner(bundle)
    wins = windows_of(demo_logmel())
    diffs, agree = [], 0
    for window in wins:
        a, b = runner.predict(window), windowed.predict(window)
        diffs.append(np.abs(a - b).max())
        agree += int(a.argmax() == b.argmax())
    assert runner.rebuilds == 1 and runner.steps == len(wins) - 1  # one hop per window after the first
    assert max(diffs) < 0.1 and agree >= 0.9 * len(wins)


def test_streaming_runner_rebuilds_after_a_gap(tiny_stream_bundle):
    """A window that is not the last one moved on by one hop rebuilds the state from itself."""
    from monitor.runner import ModelRunner, open_model

    bundle, runner = open_model(tiny_stream_bundle, hop_seconds=0.5)
    windowed = ModelRunner(bundle)
    wins = windows_of(demo_logmel())
    for window in (wins[0], wins[1], wins[5], wins[6], wins[0]):
        a, b = runner.predict(window), windowed.predict(window)
        assert np.abs(a - b).max() < 0.1
    assert (runner.rebuilds, runner.steps) == (3, 2)


def test_other_hops_and_bundles_without_a_stream_use_the_window_runner(tiny_stream_bundle, tiny_bundle):
    from monitor.runner import ModelRunner, open_model

    assert isinstance(open_model(tiny_stream_bundle, hop_seconds=0.25)[1], ModelRunner)
    assert isinstance(open_model(tiny_stream_bundle)[1], ModelRunner)  # no hop given: windows
    assert isinstance(open_model(tiny_bundle, hop_seconds=0.5)[1], ModelRunner)


def test_a_bundle_whose_streaming_model_is_missing_is_refused_in_one_line(tiny_stream_bundle, tmp_path):
    import shutil

    from monitor.bundle import load_bundle
    from monitor.errors import BundleError

    for suffix in (".tflite", ".json"):
        shutil.copy(tiny_stream_bundle.with_suffix(suffix), tmp_path / f"m{suffix}")
    with pytest.raises(BundleError, match="streaming model .* not found"):
        load_bundle(tmp_path / "m")
    data = json.loads((tmp_path / "m.json").read_text())
    data["stream"]["hop_frames"] = "fifty"
    (tmp_path / "m.json").write_text(json.dumps(data))
    shutil.copy(tiny_stream_bundle.with_suffix(".stream.tflite"), tmp_path / "m.stream.tflite")
    with pytest.raises(BundleError, match="hop_frames"):
        load_bundle(tmp_path / "m")


@pytest.mark.integration  # builds and converts a Keras streaming model (TensorFlow)
def test_a_streaming_model_whose_state_changes_quantisation_is_refused(tiny_stream_bundle, tmp_path):
    """The runner feeds a state back as raw int8, so its output must share its input's scale."""
    import shutil

    import keras
    from keras import layers as L

    from monitor.bundle import load_bundle
    from monitor.errors import BundleError
    from monitor.stream_runner import StreamingRunner
    from training.export import int8_tflite

    bundle = load_bundle(tiny_stream_bundle)
    mels = bundle.frontend.n_mels
    new = keras.Input((bundle.stream_hop_frames, mels, 1), name="new_frames")
    state = keras.Input((2, mels, 1), name="state_00")
    probs = L.Dense(len(bundle.labels), activation="softmax")(L.Flatten()(new))
    sm = keras.Model({"new_frames": new, "state_00": state}, {"probs": probs, "state_00": L.Rescaling(4.0)(state)})
    rng = np.random.default_rng(0)
    rep = [{k: rng.standard_normal((1, *t.shape[1:])).astype(np.float32) for k, t in sm.input.items()}
           for _ in range(8)]  # fmt: skip
    for suffix in (".tflite", ".json"):
        shutil.copy(tiny_stream_bundle.with_suffix(suffix), tmp_path / f"m{suffix}")
    stream_file = tmp_path / json.loads((tmp_path / "m.json").read_text())["stream"]["tflite"]
    stream_file.write_bytes(int8_tflite(sm, lambda: iter(rep)))
    with pytest.raises(BundleError, match="state_00 is quantised differently as input and output"):
        StreamingRunner(load_bundle(tmp_path / "m"))
    # training checks each export the same way, and leaves such a streaming model out of the bundle
    from training.stream_export import state_quant_mismatch

    assert state_quant_mismatch(stream_file.read_bytes()) == "state_00"
    assert state_quant_mismatch(bundle.stream_tflite_path.read_bytes()) is None


def test_the_daemon_pipeline_gives_the_same_events_with_either_runner(tiny_stream_bundle):
    """`soundmon classify`'s path over the demo recording: the same clip label and events."""
    from monitor.classify import classify_file
    from monitor.config import load_config
    from monitor.runner import ModelRunner, open_model

    cfg = load_config(None)
    bundle, streaming = open_model(tiny_stream_bundle, hop_seconds=cfg.detection.hop_seconds)
    a = classify_file(DEMO, bundle, streaming, cfg)
    b = classify_file(DEMO, bundle, ModelRunner(bundle), cfg)
    assert streaming.steps > 10 * streaming.rebuilds
    assert a.label == b.label
    assert [e["label"] for e in a.events] == [e["label"] for e in b.events]


def test_a_model_card_claims_a_streaming_model_only_when_the_bundle_has_one():
    from training.card import ARCH_TEXT, stream_lines

    stream = {"macs_per_hop": 4.2e6, "median_ms": 0.1, "p95_ms": 0.2, "calls": 300}
    assert "Streaming model (`m.stream.tflite`" in stream_lines({"name": "m", "stream": stream})[0]
    assert "No streaming model" in stream_lines({"name": "m", "stream_left_out": True})[0]
    assert stream_lines({"name": "m"}) == []  # a body that cannot stream says nothing about it
    for arch in ARCH_TEXT:  # the body's text makes no claim about the bundle
        assert "carries" not in ARCH_TEXT[arch], arch
    start = {**stream, "hop_frames": 25}  # a start model's: checked at each window and half a hop after it
    assert "steps by 0.25 s" in stream_lines({"name": "s", "stream": start, "frontend": {"hop_length": 160}})[0]


@pytest.mark.integration  # imports training.bundle_export (TensorFlow)
def test_a_start_models_streaming_export_steps_a_quarter_second():
    from training.bundle_export import stream_hop_seconds

    assert [stream_hop_seconds(w) for w in (1.0, 1.5, 2.0, 4.0)] == [0.25, 0.25, 0.5, 0.5]
