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
