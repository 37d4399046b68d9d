"""`soundmon train --backbone yamnet` (training/transfer.py): a head on YAMNet's embedding, exported
whole (backbone + head) as an int8 window model on the yamnet front-end.

Real clips only: the 20 UrbanSound8K clips in tests/data/clips, YAMNet's weights from
../shared/models/yamnet.tflite (skipped with a reason when absent).
"""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

from monitor.bundle import load_bundle
from monitor.frontend import YAMNET_FRONTEND, LogMelFrontend
from monitor.windows import file_windows
from tests.paths import CLIPS, REPO, bundled_clips

YAMNET = REPO.parent / "shared" / "models" / "yamnet.tflite"


def need_yamnet():
    if not YAMNET.is_file():
        pytest.skip("needs ../shared/models/yamnet.tflite (the YAMNet TFLite export), not beside this checkout")
    pytest.importorskip("tensorflow", reason="tensorflow is in the 'train' extra")
    return YAMNET


def _soundmon(*args, timeout=600):
    return subprocess.run([sys.executable, "-m", "monitor", *args], cwd=REPO, capture_output=True, text=True,
                          timeout=timeout)  # fmt: skip


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """One tiny --backbone yamnet run with CV on the bundled clips (2 folds of 10 clips)."""
    need_yamnet()
    out = tmp_path_factory.mktemp("transfer") / "tiny"
    cache = out.parent / "cache"
    r = _soundmon("train", "--dataset", str(CLIPS), "--backbone", "yamnet", "--backbone-weights", str(YAMNET),
                  "--cv", "--epochs", "5", "--aug-copies", "1", "--no-progress", "--cache", str(cache),
                  "--batch-size", "32", "--out", str(out))  # fmt: skip
    assert r.returncode == 0, r.stderr[-3000:]
    return out, r.stderr


def test_tiny_run_makes_a_bundle_classify_runs(tiny):
    out, log = tiny
    bundle = load_bundle(out)
    assert bundle.frontend == YAMNET_FRONTEND
    assert bundle.window_frames == 96 and bundle.window_seconds == 0.975
    assert sorted(bundle.labels) == sorted(json.loads(out.with_suffix(".json").read_text())["labels"])
    meta = json.loads(out.with_suffix(".json").read_text())
    assert meta["model"]["backbone"] == "yamnet" and meta["model"]["macs_per_window"] > 60e6
    assert meta["placement"]["clip_score"] in ("mean", "max")
    assert out.with_suffix(".md").is_file() and "YAMNet" in out.with_suffix(".md").read_text()
    for k in (1, 2):  # the CV fold bundles, for `soundmon evaluate --cv`
        fold = load_bundle(out.parent / "tiny_cv" / f"fold{k}")
        assert fold.meta["cv"]["held_out_fold"] == k
    assert "CV fold 1:" in log and "CV mean accuracy" in log
    clips = [str(p) for p in bundled_clips()[:2]]
    r = _soundmon("classify", "--model", str(out), "--json", *clips)
    assert r.returncode == 0, r.stderr
    rows = [json.loads(line) for line in r.stdout.splitlines()]
    assert len(rows) == 2
    for row in rows:
        assert row["label"] in bundle.labels
        assert abs(sum(row["scores"].values()) - 1.0) < 0.05  # softmax, dequantised


def test_tiny_bundle_evaluates_int8_and_float(tiny, tmp_path):
    out, _ = tiny
    r = subprocess.run([sys.executable, "-m", "training.cli", "evaluate", "--model", str(out), "--dataset",
                        str(CLIPS), "--no-progress", "--cache", str(out.parent / "cache"), "--out",
                        str(tmp_path)], cwd=REPO, capture_output=True, text=True, timeout=600)  # fmt: skip
    assert r.returncode == 0, r.stderr[-2000:]
    res = json.loads((tmp_path / "metrics.json").read_text())
    assert res["int8"]["n_clips"] == 20 and "float" in res
    # Trained on these clips: int8 and float agree on most of them.
    assert res["int8_float_agreement"] >= 0.8


def test_batch_size_is_honoured_with_a_backbone(tiny):
    """`--batch-size 32` with `--backbone` was silently 64 (32 was taken for "not given"); now the
    value given is the value used, and the default (64) applies only when none is given."""
    out, _ = tiny
    assert json.loads(out.with_suffix(".json").read_text())["training"]["batch_size"] == 32
    card = out.with_suffix(".md").read_text()
    assert "batch 32" in card
    # Limits about this data (UrbanSound8K's official folds, 20 clips), the backbone's licence
    assert "A small set (20 clips)" in card.split("## Limits")[1] and "Apache License 2.0" in card


def test_evaluate_cv_says_what_the_model_is(tiny, tmp_path):
    """`soundmon evaluate --cv` on a --backbone bundle: the table names YAMNet and its head, not a
    CNN, and the clip rule the bundle's card used."""
    out, _ = tiny
    r = subprocess.run([sys.executable, "-m", "training.cli", "evaluate", "--model", str(out), "--dataset",
                        str(CLIPS), "--cv", "--no-progress", "--cache", str(out.parent / "cache"), "--out",
                        str(tmp_path)], cwd=REPO, capture_output=True, text=True, timeout=600)  # fmt: skip
    assert r.returncode == 0, r.stderr[-2000:]
    rule = load_bundle(out).placement["clip_score"]
    assert "CNN" not in r.stdout
    assert f"YAMNet + linear head, int8 through the daemon's runner; a clip's score is the {rule}" in r.stdout
    assert "| held-out fold | clips | YAMNet + linear head int8 | YAMNet + linear head int8 macro |" in r.stdout
    res = json.loads((tmp_path / "cv_metrics.json").read_text())
    card = json.loads(out.parent.joinpath("tiny_metrics.json").read_text())["cv"]
    for fold, mine in zip(card["per_fold"], res["per_fold"], strict=True):  # the card's figures again
        assert mine["int8"]["accuracy"] == pytest.approx(fold[rule]["int8"]["accuracy"], abs=0.11)  # one clip of 10: training gates near-silent windows


def test_training_windows_are_the_daemons(tmp_path):
    """The windows and levels training uses are the daemon's: file_windows on the clip with the
    yamnet front-end, and the pipeline's level rule (mean frame energy in dBFS)."""
    from training.datasets import load_audio
    from training.transfer import WINDOW_SECONDS, yamnet_features

    clips = bundled_clips()[:3]

    class C:  # the one attribute yamnet_features reads
        def __init__(self, path):
            self.path = path

    feats = yamnet_features([C(p) for p in clips], tmp_path, workers=1, progress=False)
    for path, f in zip(clips, feats, strict=True):
        audio = load_audio(path, 16000)
        want = file_windows(audio, LogMelFrontend(YAMNET_FRONTEND), WINDOW_SECONDS, 0.5)
        np.testing.assert_array_equal(f.windows(50), want)
        fe = LogMelFrontend(YAMNET_FRONTEND)
        energy = fe.frame_energy(np.pad(audio, (0, max(0, 15600 - len(audio)))))
        first = 10 * np.log10(np.mean(energy[:96]))
        assert abs(f.levels(50)[0] - first) < 1e-3
    again = yamnet_features([C(p) for p in clips], tmp_path, workers=1, progress=False)  # from the cache
    np.testing.assert_array_equal(again[0].logmel, feats[0].logmel)


def test_ln_db_round_trip_keeps_silence():
    from training.datasets import load_audio
    from training.transfer import db_to_ln, ln_to_db

    x = LogMelFrontend(YAMNET_FRONTEND)(np.pad(load_audio(bundled_clips()[0], 16000), (0, 8000)))
    back = db_to_ln(ln_to_db(x))
    np.testing.assert_allclose(back, x, atol=2e-4)
    silence = np.full((2, 64), np.log(YAMNET_FRONTEND.log_offset), np.float32)
    np.testing.assert_allclose(db_to_ln(ln_to_db(silence)), silence, atol=1e-6)


def test_equalised_backbone_is_the_same_function_and_quantises_better(tmp_path):
    """Cross-layer equalisation changes nothing in float and shrinks the int8 embedding's error
    (measured on ESC-10 windows: median relative error 1.39 -> 0.34)."""
    need_yamnet()
    from training.transfer import (
        build_backbone,
        equalise_backbone,
        int8_embeddings,
        yamnet_features,
    )

    class C:
        def __init__(self, path):
            self.path = path

    feats = yamnet_features([C(p) for p in bundled_clips()], tmp_path, workers=1, progress=False)
    x = np.concatenate([f.windows(50) for f in feats]).astype(np.float32)
    backbone = build_backbone(YAMNET)
    eq = equalise_backbone(backbone, x)
    ref = backbone(x, training=False).numpy()
    np.testing.assert_allclose(eq(x, training=False).numpy(), ref, rtol=1e-3, atol=1e-3)

    def err(model):
        e = int8_embeddings(model, x, x)
        return float(np.median(np.linalg.norm(e - ref, axis=1) / np.linalg.norm(ref, axis=1)))

    plain, equalised = err(backbone), err(eq)
    assert equalised < 0.6 * plain, (plain, equalised)


def test_backbone_refuses_init_from_in_one_line():
    r = subprocess.run([sys.executable, "-m", "training.cli", "train", "--dataset", str(CLIPS), "--backbone",
                        "yamnet", "--init-from", "models/urban10"], cwd=REPO, capture_output=True, text=True,
                       timeout=300)  # fmt: skip
    assert r.returncode == 2
    assert r.stderr.strip() == "soundmon train: --backbone takes neither --init-from, --arch nor --window-seconds " \
        "(its window is the backbone's)"


def test_missing_backbone_weights_is_one_line(tmp_path):
    r = subprocess.run([sys.executable, "-m", "training.cli", "train", "--dataset", str(CLIPS), "--backbone",
                        "yamnet", "--backbone-weights", str(tmp_path / "nope.tflite"), "--out",
                        str(tmp_path / "m"), "--no-progress"], cwd=REPO, capture_output=True, text=True,
                       timeout=300)  # fmt: skip
    assert r.returncode != 0
    last = [line for line in r.stderr.splitlines() if line.startswith("soundmon train:")]
    assert last and "yamnet.tflite" in last[0], r.stderr[-1000:]


def test_fine_tune_unfreezes_exactly_the_top_layers():
    need_yamnet()
    from training.transfer import _set_trainable, build_backbone, build_full_model, build_head

    full = build_full_model(build_backbone(YAMNET), build_head(3, 0, 0.3))
    _set_trainable(full, 2)
    trainable = sorted(layer.name for layer in full.layers if layer.trainable and layer.weights)
    assert trainable == ["head", "layer13_depthwise", "layer13_pointwise", "layer14_depthwise", "layer14_pointwise"]
    _set_trainable(full, 0)
    assert [layer.name for layer in full.layers if layer.trainable and layer.weights] == ["head"]


def test_clip_scores_mean_and_max_over_a_clips_windows():
    from training.transfer import clip_scores

    w = np.array([[0.9, 0.1], [0.2, 0.8], [0.4, 0.6], [0.7, 0.3]], np.float32)
    owner = np.array([5, 5, 5, 9])
    out = clip_scores(w[:3], owner[:3], np.array([5]))
    np.testing.assert_allclose(out["mean"], [[0.5, 0.5]], atol=1e-6)
    np.testing.assert_allclose(out["max"], [[0.9, 0.8]], atol=1e-6)
    both = clip_scores(w, owner, np.array([9, 5]))  # rows in the order of the clips asked for
    np.testing.assert_allclose(both["mean"][0], [0.7, 0.3], atol=1e-6)
