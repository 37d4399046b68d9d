"""The committed test bundles (tests/data/bundles) and the script that makes them
(`python -m tools.make_test_bundles`): the files are what the script describes, and a fresh run
of the script still gives bundles that load and score like the committed ones."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
import soundfile as sf

from monitor.bundle import load_bundle
from monitor.frontend import LogMelFrontend
from monitor.runner import ModelRunner
from monitor.windows import file_windows
from tests.fixtures_model import BUNDLES, committed_bundle
from tests.paths import REPO, bundled_clips
from tools.make_test_bundles import LAYOUTS


def clip_scores(base) -> np.ndarray:
    """Each test clip's int8 scores (mean over its windows), as `soundmon classify` scores a file."""
    bundle = load_bundle(base)
    runner, frontend = ModelRunner(bundle, num_threads=1), LogMelFrontend(bundle.frontend)
    rows = []
    for clip in bundled_clips():
        audio, _ = sf.read(clip, dtype="float32")
        rows.append(np.mean([runner.predict(w) for w in file_windows(audio, frontend, bundle.window_seconds, 0.5)], 0))
    return np.array(rows)


@pytest.mark.parametrize("name", sorted(LAYOUTS))
def test_the_committed_bundles_are_the_scripts_and_small(name):
    base = committed_bundle(name)
    bundle = load_bundle(base)
    assert bundle.meta["model"]["arch"] == LAYOUTS[name]
    assert bundle.meta["training"]["dataset"] == "tests/data/clips"  # no path of the machine that made it
    assert (bundle.stream_tflite_path is not None) == (name == "tiny_stream")
    assert base.with_suffix(".weights.h5").is_file()  # for --init-from and the float/int8 tests
    assert sorted(p.name for p in BUNDLES.iterdir()) == sorted(LAYOUTS)
    assert sum(f.stat().st_size for f in base.parent.iterdir()) < 200_000


@pytest.mark.integration  # trains with TensorFlow (about a minute)
def test_the_script_makes_bundles_that_score_like_the_committed_ones(tmp_path):
    out = subprocess.run([sys.executable, "-m", "tools.make_test_bundles", "--out", str(tmp_path)], cwd=REPO,
                         capture_output=True, text=True, timeout=900)  # fmt: skip
    assert out.returncode == 0, out.stderr
    for name in LAYOUTS:
        fresh, committed = tmp_path / name / "tiny", committed_bundle(name)
        meta = [json.loads(b.with_suffix(".json").read_text()) for b in (fresh, committed)]
        norms = [[n["mean"], n["std"]] for n in (m.pop("normalisation") for m in meta)]
        assert np.allclose(*norms, rtol=1e-4)
        assert [{k: v for k, v in m.items() if k != "created"} for m in meta] == [
            {k: v for k, v in meta[1].items() if k != "created"}
        ] * 2  # labels, front-end, window, placement, body, streaming hop: all as committed
        a, b = clip_scores(fresh), clip_scores(committed)
        # Identical on the machine that made them; TensorFlow on another CPU may round differently
        # in training, so ask only that the two models answer alike.
        assert np.mean(a.argmax(1) == b.argmax(1)) >= 0.8, (a.argmax(1), b.argmax(1))
        assert np.abs(a - b).mean() < 0.05
