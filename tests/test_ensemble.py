"""`python -m training.ensemble`: two trainings of one recipe as one int8 bundle (tiny real models)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from monitor.bundle import load_bundle
from monitor.runner import ModelRunner
from monitor.stream_runner import StreamingRunner
from tests.fixtures_model import CLIPS
from training.ensemble import main as ensemble_main

RECIPE = ["--dataset", str(CLIPS), "--arch", "tiny_s", "--epochs", "2", "--cv", "--batch-size", "8", "--workers", "1",
          "--no-progress", "--no-baseline", "--jobs", "1", "--class-smoothing", "engine_idling=7"]  # fmt: skip


@pytest.fixture(scope="module")
def members(tmp_path_factory):
    """Two trainings of one recipe, seeds 0 and 1, each with its CV folds and float weights."""
    from training.cli import train_main

    root = tmp_path_factory.mktemp("members")
    out = []
    for seed in (0, 1):
        base = root / f"seed{seed}" / "m"
        cache = ["--cache", str(root / "cache")]
        assert train_main([*RECIPE, *cache, "--seed", str(seed), "--out", str(base)]) == 0
        out.append(base)
    return out


def _windows(bundle, n: int = 6) -> np.ndarray:
    """Log-mel windows one hop apart (as the daemon's ring gives them), from a real clip."""
    from monitor.frontend import LogMelFrontend
    from training.datasets import load_audio

    clip = sorted(CLIPS.rglob("*.flac"))[0]
    lm = LogMelFrontend(bundle.frontend)(np.tile(load_audio(clip), 3))
    hop = bundle.stream_hop_frames
    return np.stack([lm[k * hop : k * hop + bundle.window_frames] for k in range(n)])


def test_two_trainings_become_one_bundle_whose_scores_are_their_mean(members, tmp_path, capsys):
    from training.ensemble import load_members, mean_scores
    from training.float_model import load_float_model

    out = tmp_path / "models" / "ens"
    assert ensemble_main(["--members", *map(str, members), "--dataset", str(CLIPS), "--out", str(out)]) == 0
    bundle = load_bundle(out)
    # one model for the daemon: a window model, a streaming model, the members' detector calibration
    assert bundle.stream_tflite_path is not None and bundle.class_smoothing_windows == {"engine_idling": 7}
    assert bundle.meta["model"]["members"] == 2
    assert bundle.stream_meta["macs_per_hop"] == 2 * load_bundle(members[0]).stream_meta["macs_per_hop"]
    # its int8 scores are the members' mean float scores, to int8 rounding
    models, _ = load_members(members)
    wins = _windows(bundle)
    ref = mean_scores(models, ((wins - bundle.norm_mean) / bundle.norm_std)[..., None])
    got = np.stack([ModelRunner(bundle).predict(w) for w in wins])
    assert np.abs(got - ref).max() < 0.05
    # streamed one hop at a time, it gives the window model's scores
    streamer = StreamingRunner(bundle)
    streamed = np.stack([streamer.predict(w) for w in wins])
    assert streamer.rebuilds == 1 and np.abs(streamed - got).max() < 0.05
    # its float model is rebuilt from the kept weights, as `--init-from` and `evaluate` do
    ens, _ = load_float_model(out)
    assert np.allclose(ens.predict(((wins - bundle.norm_mean) / bundle.norm_std)[..., None], verbose=0), ref, atol=1e-5)
    # the CV is the ensemble's own: each fold merged from the members' fold models, re-scored
    report = json.loads((out.parent / "ens_metrics.json").read_text())
    assert [e["fold"] for e in report["cv"]["per_fold"]] == [1, 2]
    assert load_bundle(out.parent / "ens_cv" / "fold1").meta["cv"]["held_out_fold"] == 1
    assert [m["seed"] for m in report["ensemble"]["members"]] == [0, 1]
    # `--init-from` an ensemble starts from its first member's body
    from training.fold_tasks import init_model_weights

    body, first = init_model_weights(ens), init_model_weights(models[0])
    assert body.keys() == first.keys() and all(
        np.array_equal(a, b) for k in body for a, b in zip(body[k], first[k], strict=True)
    )
    card = (out.parent / "ens.md").read_text()
    assert "The mean of 2 trainings of one recipe" in card and "seed 1:" in card


def test_members_of_different_recipes_are_refused_in_one_line(members, tmp_path, capsys):
    from tests.paths import SHIPPED_MODEL

    rc = ensemble_main(["--members", str(members[0]), str(SHIPPED_MODEL), "--dataset", str(CLIPS),
                        "--out", str(tmp_path / "x")])  # fmt: skip
    err = capsys.readouterr().err.strip()
    assert rc == 1 and "\n" not in err and "not the same recipe" in err
    assert not (tmp_path / "x.tflite").exists()
