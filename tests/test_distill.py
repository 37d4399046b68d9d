"""`soundmon train --teacher` (training/distill.py): the distillation loss and targets on tiny arrays,
the waveform copies and recording stretches, and one small real end-to-end run on the bundled clips
with the shipped YAMNet-head teacher (models/urban10_yamnet)."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys

import numpy as np
import pytest
import soundfile as sf

from monitor.bundle import load_bundle
from tests.paths import CLIPS, REPO, bundled_clips
from training.distill import (
    BACKGROUND,
    DistillConfig,
    Source,
    distill_loss,
    distill_loss_np,
    make_copy,
    pack_targets,
    recording_sources,
    teacher_fold_path,
    teacher_target,
)

TEACHER = REPO / "models" / "urban10_yamnet"


def _softmax(z: np.ndarray) -> np.ndarray:
    e = np.exp(z - z.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


# -- the loss --------------------------------------------------------------------------------------


def test_loss_is_the_label_ce_at_alpha_one_and_zero_kl_when_the_student_agrees():
    rng = np.random.default_rng(0)
    p = _softmax(rng.normal(size=(5, 11)))  # student: 10 classes + background
    y = np.eye(11)[[0, 3, 10, 10, 7]].astype(np.float32)
    t = _softmax(rng.normal(size=(5, 10)))
    ce = -(y * np.log(p)).sum(-1)
    np.testing.assert_allclose(distill_loss_np(y, t, p, 1.0, 2.0), ce, rtol=1e-6)
    # A teacher equal to the student's distribution over the teacher's labels: KL 0 at any T.
    t_same = p[:, :10] / p[:, :10].sum(-1, keepdims=True)
    for temp in (1.0, 2.0, 4.0):
        np.testing.assert_allclose(distill_loss_np(y, t_same, p, 0.0, temp), 0.0, atol=1e-6)
    # The background output is outside the KL: scaling it (foreground ratios kept) leaves the KL unchanged.
    q = p.copy()
    q[:, 10] *= 3.0
    q /= q.sum(-1, keepdims=True)
    np.testing.assert_allclose(distill_loss_np(y, t, q, 0.0, 2.0), distill_loss_np(y, t, p, 0.0, 2.0), rtol=1e-5)


def test_keras_loss_equals_numpy_and_unlabelled_examples_have_no_label_term():
    pytest.importorskip("keras")
    rng = np.random.default_rng(1)
    p = _softmax(rng.normal(size=(4, 11))).astype(np.float32)
    y = np.eye(11, dtype=np.float32)[[1, 2, 10, 4]]
    y[3] = 0.0  # unlabelled (ESC-10 without a background output): the teacher's target only
    t = _softmax(rng.normal(size=(4, 10))).astype(np.float32)
    fn = distill_loss(11, 10, 0.3, 2.0, label_smoothing=0.0)
    got = np.asarray(fn(pack_targets(y, t), p))
    np.testing.assert_allclose(got, distill_loss_np(y, t, p, 0.3, 2.0), rtol=1e-4)
    # label smoothing keeps an all-zero label row at zero: only the KL remains
    smooth = np.asarray(distill_loss(11, 10, 0.3, 2.0, label_smoothing=0.1)(pack_targets(y, t), p))
    np.testing.assert_allclose(smooth[3], distill_loss_np(y[3:], t[3:], p[3:], 0.0, 2.0)[0] * 0.7, rtol=1e-4)


def test_teacher_target_weights_loud_windows_and_skips_gated_ones():
    scores = np.array([[1.0, 0.0], [0.0, 1.0], [0.5, 0.5]])
    levels = np.array([-20.0, -30.0, -90.0])  # the third is below the -70 dBFS gate
    t = teacher_target(scores, levels)
    np.testing.assert_allclose(t.sum(), 1.0, rtol=1e-6)
    np.testing.assert_allclose(t, [10 / 11, 1 / 11], rtol=1e-5)  # 10 dB louder: 10x the weight
    # every window gated: all of them count (plain power-weighted mean)
    t2 = teacher_target(scores[:2], np.array([-100.0, -100.0]))
    np.testing.assert_allclose(t2, [0.5, 0.5], rtol=1e-5)


# -- copies and sources ----------------------------------------------------------------------------


def _tone(seconds: float, freq: float, amp: float = 0.1) -> np.ndarray:
    t = np.arange(int(seconds * 16000)) / 16000
    return (amp * np.sin(2 * np.pi * freq * t)).astype(np.float32)


def test_copies_are_seeded_4s_waveforms_with_energy_weighted_mixed_labels():
    srcs = [Source(_tone(1.0, 440), 0, 1), Source(_tone(2.0, 1000), 2, 1), Source(_tone(5.0, 300), 10, 0, True)]
    partners = np.array([1])
    mix_only = DistillConfig(p_onset=0.0, p_start=1.0, gain_db=0.0, p_noise=0.0, p_speed=0.0, p_mix=1.0,
                             mix_snr_db=(6.0, 6.0))  # fmt: skip
    x, y = make_copy(srcs, 0, partners, 11, mix_only, np.random.default_rng(0))
    assert x.shape == (64000,) and x.dtype == np.float32
    lam = 1 / (1 + 10**0.6)  # the partner's energy share at 6 dB
    np.testing.assert_allclose(y[[0, 2]], [1 - lam, lam], rtol=1e-5)
    assert y.sum() == pytest.approx(1.0)
    x2, y2 = make_copy(srcs, 0, partners, 11, mix_only, np.random.default_rng(0))
    np.testing.assert_array_equal(x, x2)
    # onset placement: only the start of the source, at the window's end
    onset = DistillConfig(p_onset=1.0, gain_db=0.0, p_noise=0.0, p_speed=0.0, p_mix=0.0)
    x3, y3 = make_copy(srcs, 1, partners, 11, onset, np.random.default_rng(3))
    assert np.abs(x3[-160:]).max() > 0.05 and np.abs(x3[:32000]).max() == 0.0  # <= 2 s of a 2 s source
    assert y3[2] == 1.0
    # an unlabelled source (-1) gives all-zero labels: the teacher's target only
    x4, y4 = make_copy([Source(_tone(1.0, 440), -1, 0, True)], 0, np.array([], int), 11, onset, np.random.default_rng(0))
    assert not y4.any() and np.abs(x4).max() > 0


def test_a_lowpass_copy_keeps_the_lows_loses_the_highs_and_leaves_the_old_copies_alone():
    """--distill-lowpass: the copy is heard through a 0.8-5 kHz low-pass (a window, a wall); with it
    off, the copies and their cache key are those of the recipe before the option."""
    srcs = [Source(_tone(4.0, 300) + _tone(4.0, 7000), 0, 1)]
    plain = DistillConfig(p_onset=0.0, p_start=1.0, gain_db=0.0, p_noise=0.0, p_speed=0.0, p_mix=0.0)
    x, _ = make_copy(srcs, 0, np.array([], int), 11, plain, np.random.default_rng(0))
    lp = DistillConfig(**{**plain.to_dict(), "p_lowpass": 1.0})
    y, _ = make_copy(srcs, 0, np.array([], int), 11, lp, np.random.default_rng(0))

    def band_power(a, hz):
        spec = np.abs(np.fft.rfft(a[16000:])) ** 2  # past the filter's settling
        k = int(round(hz * len(a[16000:]) / 16000))
        return spec[k - 5 : k + 6].sum()

    assert band_power(y, 300) == pytest.approx(band_power(x, 300), rel=0.05)
    assert band_power(y, 7000) < band_power(x, 7000) * 10 ** (-12 / 10)  # 2nd order, 5 kHz cutoff at worst
    assert "p_lowpass" not in plain.augment_dict() and lp.augment_dict()["p_lowpass"] == 1.0


def test_recording_stretches_only_from_training_folds_background_away_from_labels(tmp_path):
    labels = ["air_conditioner", "car_horn", BACKGROUND]
    sf.write(tmp_path / "111.flac", _tone(20.0, 500), 16000)
    sf.write(tmp_path / "222.flac", _tone(20.0, 700), 16000)
    (tmp_path / "labels.csv").write_text("fsID,fold,class,classID,start,end\n"
                                         "111,1,car_horn,1,0.0,8.0\n222,7,car_horn,1,0.0,20.0\n")  # fmt: skip
    out = recording_sources(tmp_path, [1, 2, 3, 4], labels, 2)
    assert out and all(s.fold == 1 for s in out)  # fold 7 is an unseen recording: never a source
    assert all(len(s.audio) == 64000 for s in out)
    kinds = [s.label for s in out]
    assert kinds.count(1) == 3  # 0-4, 2-6, 4-8: wholly inside the occurrence
    assert kinds.count(2) == 4  # 10, 12, 14, 16: at least 0.5 s after the occurrence (6 and 8 are too near)
    assert set(kinds) == {1, 2}
    none = recording_sources(tmp_path, [1], labels, None)
    assert [s.label for s in none].count(-1) == kinds.count(2)  # no background output: unlabelled


def test_a_fold_teacher_that_heard_the_fold_is_refused(tmp_path):
    for suffix in (".json", ".tflite"):
        shutil.copy(TEACHER.with_suffix(suffix), tmp_path / f"fold1{suffix}")
    from monitor.errors import BundleError

    with pytest.raises(BundleError, match="trained on fold 1"):
        teacher_fold_path(str(TEACHER), str(tmp_path), 1)  # models/urban10_yamnet heard folds 1-4
    with pytest.raises(BundleError, match="never heard fold 2"):
        teacher_fold_path(str(TEACHER), str(tmp_path), 2)  # no fold2 bundle


# -- end to end ------------------------------------------------------------------------------------


def _soundmon(*args, timeout=900):
    return subprocess.run([sys.executable, "-m", "monitor", *args], cwd=REPO, capture_output=True, text=True,
                          timeout=timeout)  # fmt: skip


def test_tiny_distilled_run_makes_a_background_bundle_the_daemon_runs(tmp_path):
    pytest.importorskip("tensorflow", reason="tensorflow is in the 'train' extra")
    if not TEACHER.with_suffix(".tflite").is_file():
        pytest.skip("needs the teacher bundle models/urban10_yamnet")
    out = tmp_path / "student"
    # a labels.csv folder: one bundled clip as a "recording" of fold 1, half of it unlabelled
    rec = tmp_path / "rec"
    rec.mkdir()
    clip = bundled_clips()[0]
    audio, _ = sf.read(clip, dtype="float32")
    audio = np.resize(audio if audio.ndim == 1 else audio.mean(1), 16000 * 4)  # exactly 4 s
    sf.write(rec / "999.flac", np.concatenate([np.zeros(16000 * 10, np.float32) + 1e-3 * np.random.default_rng(0)
                                                .normal(size=16000 * 10).astype(np.float32), audio]), 16000)  # fmt: skip
    (rec / "labels.csv").write_text("fsID,fold,class,classID,start,end\n999,1,air_conditioner,0,10.0,14.0\n")
    r = _soundmon("train", "--dataset", str(CLIPS), "--teacher", str(TEACHER), "--epochs", "2",
                  "--distill-copies", "1", "--extra-recordings", str(rec), "--no-progress", "--student-masks", "0,0",
                  "--cache", str(tmp_path / "cache"), "--out", str(out))  # fmt: skip
    assert r.returncode == 0, r.stderr[-3000:]
    bundle = load_bundle(out)
    assert bundle.labels[-1] == BACKGROUND and len(bundle.labels) == 11
    assert bundle.watch == bundle.labels[:10]  # the daemon never reports background
    assert bundle.stream_tflite_path is not None and bundle.stream_tflite_path.is_file()
    meta = json.loads(out.with_suffix(".json").read_text())
    assert meta["distill"]["teachers"] == {"final": str(TEACHER)}
    assert (meta["distill"]["time_masks"], meta["distill"]["freq_masks"]) == (0, 0)  # the teacher's own view
    # 14 s recording: 0-4, 2-6, 4-8 s are background (>= 0.5 s before the label), 10-14 s is the label
    assert meta["distill"]["sources"] == 20 + 4
    assert "4 stretches of the seen recordings (3 background)" in r.stderr
    report = json.loads((tmp_path / "student_metrics.json").read_text())
    assert report["distill"]["train_copies"] == 24 and "cv" not in report
    assert report["outputs"][-1] == BACKGROUND and report["labels"] == bundle.labels[:10]
    card = (tmp_path / "student.md").read_text()  # the model card, as for a CNN trained without a teacher
    assert f"Distilled from the teacher `{TEACHER}`" in card and "`background`" in card
    r = _soundmon("classify", "--model", str(out), "--json", str(clip))
    assert r.returncode == 0, r.stderr
    row = json.loads(r.stdout.splitlines()[0])
    assert abs(sum(row["scores"].values()) - 1.0) < 0.05
    # --cv with a teacher whose fold bundle heard that fold: one line, before any training
    folds = tmp_path / "teacher_cv"
    folds.mkdir()
    for suffix in (".json", ".tflite"):
        shutil.copy(TEACHER.with_suffix(suffix), folds / f"fold1{suffix}")
    r = _soundmon("train", "--dataset", str(CLIPS), "--teacher", str(TEACHER), "--teacher-folds", str(folds),
                  "--cv", "1", "--epochs", "1", "--no-progress", "--cache", str(tmp_path / "cache"),
                  "--out", str(tmp_path / "x"))  # fmt: skip
    assert r.returncode != 0
    assert "trained on fold 1" in r.stderr.strip().splitlines()[-1]
    r = _soundmon("train", "--dataset", str(CLIPS), "--teacher", str(TEACHER), "--student-masks", "2",
                  "--no-progress", "--out", str(tmp_path / "y"))  # fmt: skip
    assert r.returncode != 0
    assert r.stderr.strip().splitlines()[-1] == ("soundmon train: --student-masks: expected TIME,FREQ counts such as "
                                                 "2,2 or 0,0, got '2'")  # fmt: skip
    r = _soundmon("train", "--dataset", str(CLIPS), "--teacher", str(TEACHER), "--distill-lowpass", "1.5",
                  "--no-progress", "--out", str(tmp_path / "z"))  # fmt: skip
    assert r.returncode != 0
    assert r.stderr.strip().splitlines()[-1] == "soundmon train: --distill-lowpass must be a probability in [0, 1], got 1.5"



def test_a_distilled_cv_run_reports_its_folds_as_soundmon_train_does(tmp_path):
    """A real (tiny) teacher with a fold bundle that never heard fold 1, then a distilled --cv 1
    run: the held-out fold's figures in the report, the plots, the bundle JSON and the card."""
    pytest.importorskip("tensorflow", reason="tensorflow is in the 'train' extra")
    if not (REPO.parent / "shared" / "models" / "yamnet.tflite").is_file():
        pytest.skip("needs ../shared/models/yamnet.tflite (the YAMNet TFLite export) to train the tiny teacher")
    teacher = tmp_path / "teacher"
    r = _soundmon("train", "--dataset", str(CLIPS), "--backbone", "yamnet", "--head-hidden", "0", "--epochs", "2",
                  "--cv", "1", "--no-progress", "--cache", str(tmp_path / "cache"), "--out", str(teacher))  # fmt: skip
    assert r.returncode == 0, r.stderr[-3000:]
    out = tmp_path / "student"
    stale = tmp_path / "student_cv" / "fold3.tflite"  # an earlier run's fold must not stay beside these
    stale.parent.mkdir()
    stale.write_bytes(b"an earlier run")
    r = _soundmon("train", "--dataset", str(CLIPS), "--teacher", str(teacher), "--cv", "1", "--epochs", "1",
                  "--distill-copies", "1", "--no-progress", "--cache", str(tmp_path / "cache"),
                  "--report-dir", str(tmp_path / "reports"), "--out", str(out))  # fmt: skip
    assert r.returncode == 0, r.stderr[-3000:]
    report = json.loads((tmp_path / "reports" / "student_metrics.json").read_text())
    fold = report["cv"]["per_fold"][0]
    assert fold["fold"] == 1 and fold["n_clips"] == 10 and len(fold["int8"]["per_class"]) == 10
    assert report["distill"]["teachers"]["fold1"] == str(tmp_path / "teacher_cv" / "fold1")
    assert (tmp_path / "reports" / "student_confusion.png").is_file()
    assert (tmp_path / "reports" / "student_learning_curve.png").is_file()
    meta = json.loads(out.with_suffix(".json").read_text())
    assert meta["metrics"]["per_fold"][0]["fold"] == 1 and meta["latency"]["median_ms"] > 0
    assert load_bundle(tmp_path / "student_cv" / "fold1").labels[-1] == BACKGROUND
    assert not stale.exists()
    card = out.with_suffix(".md").read_text()
    assert "each CV fold from the teacher's bundle that never heard it: fold1" in card
