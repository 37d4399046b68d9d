"""The model bundle and the int8 runner: a real model loads, a bundle it cannot honour is refused."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from monitor.bundle import load_bundle
from monitor.errors import BundleError
from monitor.frontend import FrontendParams, LogMelFrontend
from monitor.runner import ModelRunner, open_model
from monitor.windows import file_windows
from tests.test_frontend import real_audio


def copy_bundle(src: Path, dst_dir: Path, edit=None) -> Path:
    """Copy a bundle to dst_dir, optionally editing its JSON dict in place."""
    dst = dst_dir / "m"
    shutil.copy(src.with_suffix(".tflite"), dst.with_suffix(".tflite"))
    data = json.loads(src.with_suffix(".json").read_text())
    if edit:
        edit(data)
    dst.with_suffix(".json").write_text(json.dumps(data))
    return dst


def test_real_int8_model_scores_a_window(tiny_bundle):
    bundle, runner = open_model(tiny_bundle)
    assert runner.quantized and runner.runtime in ("ai_edge_litert", "tflite_runtime")
    window = file_windows(real_audio(4.0)[:64000], LogMelFrontend(bundle.frontend), 4.0, 0.5)[0]
    scores = runner.predict(window)
    assert scores.shape == (len(bundle.labels),)
    assert np.all(scores >= 0) and np.all(scores <= 1)
    if bundle.output_activation == "softmax":
        assert abs(float(scores.sum()) - 1.0) < 0.05


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda d: d["frontend"].update(n_mels=40), "front-end mismatch: n_mels=40"),
        (lambda d: d["frontend"].update(hop_length=256), "front-end mismatch"),
        (lambda d: d["frontend"].update(sample_rate=22050), "sample_rate=22050"),
        (lambda d: d["frontend"].update(colour="blue"), "unknown front-end parameter"),
        (lambda d: d.update(window_frames=400), "window_frames 400 does not match"),
        (lambda d: (d["thresholds"].pop(d["labels"][-1], None), d.update(labels=d["labels"][:-1])),
         "outputs but the bundle lists"),
        (lambda d: d.update(labels=[]), "'labels' must be a non-empty list"),
        (lambda d: d.update(format_version=99), "format_version 99"),
        (lambda d: d.update(format="something-else"), "not a soundmon bundle"),
        (lambda d: d.update(normalisation={"mean": 0, "std": 0}), "std must be > 0"),
        (lambda d: d.pop("window_seconds"), "missing key 'window_seconds'"),
    ],
)
def test_mismatched_bundle_is_refused_with_one_line(tiny_bundle, tmp_path, edit, message):
    path = copy_bundle(tiny_bundle, tmp_path, edit)
    with pytest.raises(BundleError) as err:
        bundle = load_bundle(path)
        ModelRunner(bundle)
    assert message in str(err.value)
    assert "\n" not in str(err.value)


def test_window_shape_mismatch_between_json_and_model_is_refused(tiny_bundle, tmp_path):
    def two_second_window(d):
        d["window_seconds"] = 2.0
        d["window_frames"] = FrontendParams().frames_for(2.0)

    bundle = load_bundle(copy_bundle(tiny_bundle, tmp_path, two_second_window))
    with pytest.raises(BundleError, match="does not match the bundle's window"):
        ModelRunner(bundle)


def test_corrupt_model_file_is_one_line(tiny_bundle, tmp_path):
    path = copy_bundle(tiny_bundle, tmp_path)
    path.with_suffix(".tflite").write_bytes(b"this is not a flatbuffer" * 10)
    with pytest.raises(BundleError, match="cannot load TFLite model") as err:
        open_model(path)
    assert "\n" not in str(err.value)


def test_bad_json_is_one_line(tiny_bundle, tmp_path):
    path = copy_bundle(tiny_bundle, tmp_path)
    path.with_suffix(".json").write_text("{ not json")
    with pytest.raises(BundleError, match="not valid JSON"):
        load_bundle(path)


def test_classify_does_not_import_tensorflow_or_librosa(tiny_bundle, tmp_path):
    """The runtime path stays light: run classify in a fresh interpreter and look at sys.modules."""
    from tests.paths import bundled_clips

    code = (
        "import sys; sys.argv = ['soundmon', 'classify', '--json', '--model', sys.argv[1], sys.argv[2]];"
        "from monitor.cli import main; rc = main();"
        "bad = [m for m in ('tensorflow', 'keras', 'librosa', 'numba', 'training') if m in sys.modules];"
        "print('HEAVY', bad); sys.exit(rc)"
    )
    out = subprocess.run([sys.executable, "-c", code, str(tiny_bundle), str(bundled_clips()[0])],
                         capture_output=True, text=True, timeout=120)  # fmt: skip
    assert out.returncode == 0, out.stderr
    assert "HEAVY []" in out.stdout


def _original_scores(path: Path, windows: np.ndarray, runner: ModelRunner) -> np.ndarray:
    """Scores of the bundle's own .tflite through a plain interpreter, quantised as the runner does."""
    from ai_edge_litert.interpreter import Interpreter

    interp = Interpreter(model_path=str(path), num_threads=1)
    interp.allocate_tensors()
    inp, out = interp.get_input_details()[0], interp.get_output_details()[0]
    rows = []
    for w in windows:
        interp.set_tensor(inp["index"], (w * runner._a + runner._b).astype(np.float32).reshape(inp["shape"]))
        interp.invoke()
        rows.append(interp.get_tensor(out["index"]).reshape(-1).copy())
    return np.stack(rows)


def test_a_weight_only_int8_bundle_runs_with_its_weights_folded_and_the_same_scores(tmp_path, monkeypatch):
    """models/audioset (precision weight_int8) runs from a float32-weight copy of its model: one
    float copy of the weights in memory instead of two (monitor.runner.fold_weight_dequantize),
    scores bit for bit those of the bundle's own file, no temporary file left behind."""
    pytest.importorskip("ai_edge_litert")
    path = Path(__file__).resolve().parents[1] / "models" / "audioset"
    if not path.with_suffix(".tflite").is_file():
        pytest.skip("needs models/audioset")
    from monitor.runner import _on_disk

    if not _on_disk(str(tmp_path)):
        pytest.skip("the temporary directory is on a RAM file system here")
    monkeypatch.setattr("tempfile.tempdir", str(tmp_path))
    bundle = load_bundle(path)
    runner = ModelRunner(bundle)
    assert runner.folded_weights and runner.released_bytes > 10 * 2**20
    assert list(tmp_path.iterdir()) == []
    rng = np.random.default_rng(0)
    windows = rng.normal(-3.0, 2.0, (6, bundle.window_frames, bundle.frontend.n_mels)).astype(np.float32)
    ours = np.stack([runner.predict(w) for w in windows])
    assert np.array_equal(ours, _original_scores(bundle.tflite_path, windows, runner))
    # No disk directory for the copy (only RAM file systems): the bundle's own model, same scores.
    monkeypatch.setattr("monitor.runner._on_disk", lambda directory: False)
    plain = ModelRunner(bundle)
    assert not plain.folded_weights
    assert np.array_equal(np.stack([plain.predict(w) for w in windows]), ours)


def test_fold_leaves_other_models_alone(tiny_bundle):
    """A full-int8 bundle has no DEQUANTIZE of constant weights: nothing is folded or written."""
    import io

    from monitor.runner import fold_weight_dequantize

    out = io.BytesIO()
    assert fold_weight_dequantize(tiny_bundle.with_suffix(".tflite").read_bytes(), out) == 0
    assert out.getvalue() == b""
    bundle, runner = open_model(tiny_bundle)
    assert not runner.folded_weights


def test_releasing_the_model_files_pages_keeps_the_model_working(tiny_bundle):
    """The runner drops its resident pages of the mapped model file after loading (the weights are
    packed by then); the kernel reads any page needed later again from the file."""
    from monitor.runner import release_mapped_file

    bundle, runner = open_model(tiny_bundle)
    window = np.full((bundle.window_frames, bundle.frontend.n_mels), -40.0, dtype=np.float32)
    before = runner.predict(window)
    assert release_mapped_file(bundle.tflite_path) >= 0
    assert np.array_equal(runner.predict(window), before)
    assert release_mapped_file(bundle.tflite_path.parent / "not-mapped.tflite") == 0
