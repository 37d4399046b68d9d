"""Training, int8 export, evaluation CLI and fine-tuning, on tiny real models (no mocks)."""

from __future__ import annotations

import argparse
import itertools
import json
import re
from pathlib import Path

import numpy as np
import pytest

from monitor.bundle import load_bundle
from monitor.runner import ModelRunner
from tests.fixtures_model import CLIPS
from tests.paths import SHIPPED_MODEL
from training.datasets import read_dataset, read_urbansound8k
from training.features import clip_windows, compute_features

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"


def test_tiny_bundle_is_a_real_int8_bundle(tiny_bundle):  # noqa: F811
    bundle = load_bundle(tiny_bundle)
    assert bundle.window_frames == 397 and bundle.frontend.n_mels == 64
    assert bundle.placement == {
        "rule": "start",
        "pad": "zeros",
        "clip_score": "mean",
        "hop_seconds": 0.5,
    }
    assert bundle.labels[0] == "air_conditioner" and len(bundle.labels) == 10
    runner = ModelRunner(bundle, num_threads=1)
    assert runner.quantized
    ds = read_urbansound8k(CLIPS)
    feats = compute_features(
        ds.clips, workers=1, progress=False, cache_dir=Path(tiny_bundle).parent / "cache"
    )
    scores = runner.predict(clip_windows(feats[0], bundle.frontend, 4.0, 0.5)[0])
    assert scores.shape == (10,) and abs(float(scores.sum()) - 1.0) < 0.05


def test_int8_agrees_with_float(tiny_bundle):  # noqa: F811
    from training.evaluation.clip_accuracy import predict_int8
    from training.float_model import load_float_model
    from training.train import predict_float

    model, bundle = load_float_model(tiny_bundle)
    assert model is not None
    ds = read_urbansound8k(CLIPS)
    feats = compute_features(
        ds.clips, workers=1, progress=False, cache_dir=Path(tiny_bundle).parent / "cache"
    )
    sf = predict_float(model, feats, (bundle.norm_mean, bundle.norm_std), bundle.frontend)
    sq = predict_int8(bundle, feats, progress=False)
    assert np.mean(sf.argmax(1) == sq.argmax(1)) >= 0.8
    assert np.max(np.abs(sf - sq)) < 0.15


def test_mlp_baseline_trains():
    from training.train import train_mlp

    ds = read_urbansound8k(CLIPS)
    feats = compute_features(ds.clips, workers=1, progress=False, use_cache=False)
    y = ds.y()
    predict = train_mlp(feats, y, 10, epochs=150)
    scores = predict(feats)
    assert scores.shape == (20, 10)
    assert np.mean(scores.argmax(1) == y) >= 0.8  # it can at least fit its training clips
    from training.models import mfcc_stats

    assert mfcc_stats(feats[0].logmel).shape == (140,)


def test_evaluate_cli(tiny_bundle, tmp_path, capsys):  # noqa: F811
    from training.cli import evaluate_main

    rc = evaluate_main(["--model", str(tiny_bundle), "--dataset", str(CLIPS), "--folds", "2",
                        "--out", str(tmp_path / "ev"), "--workers", "1", "--no-progress",
                        "--cache", str(tmp_path / "cache")])  # fmt: skip
    assert rc == 0
    m = json.loads((tmp_path / "ev" / "metrics.json").read_text())
    assert m["int8"]["n_clips"] == 10 and "float" in m and m["folds"] == [2]
    assert 0 <= m["int8"]["accuracy"] <= 1 and "macro_accuracy" in m["int8"]
    assert (tmp_path / "ev" / "confusion.png").stat().st_size > 1000
    assert "| siren |" in (tmp_path / "ev" / "per_class.md").read_text()
    assert "int8 accuracy" in capsys.readouterr().out


def test_cli_errors_are_one_line(tmp_path, capsys):
    from training.cli import evaluate_main, train_main

    assert train_main(["--dataset", str(tmp_path / "nope"), "--out", str(tmp_path / "m")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "not found" in err[0]
    assert train_main(["--dataset", str(CLIPS), "--augment", "gain,echo", "--out", str(tmp_path / "m")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("soundmon train: --augment: unknown augmentation")
    assert train_main(["--dataset", str(CLIPS), "--class-smoothing", "owl=7", "--out", str(tmp_path / "m")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("soundmon train: --class-smoothing: ['owl'] not among")
    assert evaluate_main(["--model", str(tmp_path / "none"), "--dataset", str(CLIPS)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("soundmon evaluate:") and "Traceback" not in "".join(err)
    assert evaluate_main(["--model", str(tmp_path / "none"), "--dataset", str(CLIPS), "--cv"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("soundmon evaluate:") and "none_cv not found" in err[-1]


def test_init_from_finds_a_shipped_bundle_by_name_from_any_directory(tmp_path, monkeypatch, capsys):
    """The README's `--init-from models/urban10` outside the repository (issue #20): the shipped
    bundle is found by name where the daemon finds it (the `soundmon_models` package data); a name
    that is neither a bundle nor shipped, and a bundle without float weights (as a wheel installs
    them), are one line each that names --init-from, before any audio is decoded."""
    import shutil

    from monitor.config import shipped_models_dir
    from tests.paths import need_shipped_model
    from training.bundle_files import find_init_bundle
    from training.cli import train_main

    need_shipped_model()
    monkeypatch.chdir(tmp_path)  # nothing called models/ here
    assert find_init_bundle("models/urban10") == shipped_models_dir() / "urban10"
    assert find_init_bundle("urban10.json") == shipped_models_dir() / "urban10"
    assert train_main(["--dataset", str(CLIPS), "--init-from", "models/urbn10", "--out", "m"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("soundmon train: --init-from models/urbn10: no bundle")
    assert "urban10" in err[0].split("shipped:")[1]
    wheel = tmp_path / "site-packages" / "soundmon_models"  # a bundle as installed: no .weights.h5
    wheel.mkdir(parents=True)
    for suffix in (".json", ".tflite"):
        shutil.copy(shipped_models_dir() / f"urban10{suffix}", wheel)
    assert train_main(["--dataset", str(CLIPS), "--init-from", str(wheel / "urban10"), "--out", "m"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--init-from" in err[0] and "urban10.weights.h5 not found" in err[0]
    assert not (tmp_path / "m.tflite").exists()


def test_train_cli_with_cv_writes_bundle_card_and_metrics(tmp_path, capsys):
    from training.cli import evaluate_main, train_main

    out = tmp_path / "models" / "t"
    rc = train_main(["--dataset", str(CLIPS), "--arch", "tiny", "--epochs", "2", "--cv", "--batch-size", "8",
                     "--class-smoothing", "air_conditioner,engine_idling=7", "--class-smoothing", "jackhammer=5",
                     "--out", str(out), "--workers", "1", "--no-progress", "--cache", str(tmp_path / "cache")])  # fmt: skip
    assert rc == 0
    bundle = load_bundle(out)
    assert bundle.meta["metrics"]["cv_folds"] == [1, 2]
    # the detector calibration asked for is in the bundle and in every fold bundle
    steady = {"air_conditioner": 7, "engine_idling": 7, "jackhammer": 5}
    assert bundle.class_smoothing_windows == steady
    assert load_bundle(out.parent / "t_cv" / "fold1").class_smoothing_windows == steady
    assert "macs_per_window" in bundle.meta["model"] and bundle.meta["latency"]["median_ms"] > 0
    report = json.loads((out.parent / "t_metrics.json").read_text())
    assert len(report["cv"]["per_fold"]) == 2 and "mlp" in report["cv"]["per_fold"][0]
    card = (out.parent / "t.md").read_text()
    assert "CC BY-NC 3.0" in card and "t_confusion.png" in card
    assert (out.parent / "t_confusion.png").is_file() and (
        out.parent / "t_learning_curve.png"
    ).is_file()
    # The fold models are kept, so `soundmon evaluate --cv` reproduces the card's int8 CV table,
    # with their float weights, so a later `--init-from` can start each fold from its own.
    assert sorted(p.name for p in (out.parent / "t_cv").iterdir()) == [
        "fold1.json", "fold1.tflite", "fold1.weights.h5", "fold2.json", "fold2.tflite", "fold2.weights.h5"
    ]  # fmt: skip
    import h5py

    with h5py.File(out.parent / "t_cv" / "fold1.weights.h5") as h5:  # the layers only, no optimizer state
        assert "optimizer" not in h5
    rc = evaluate_main(["--model", str(out), "--dataset", str(CLIPS), "--cv", "--out", str(tmp_path / "ev"),
                        "--workers", "1", "--no-progress", "--cache", str(tmp_path / "cache")])  # fmt: skip
    assert rc == 0
    again = json.loads((tmp_path / "ev" / "cv_metrics.json").read_text())
    for trained, rescored in zip(report["cv"]["per_fold"], again["per_fold"], strict=True):
        assert rescored["fold"] == trained["fold"]
        assert rescored["int8"]["accuracy"] == trained["int8"]["accuracy"]
        assert rescored["int8"]["confusion"] == trained["int8"]["confusion"]
    table = (tmp_path / "ev" / "cv.md").read_text()
    assert "| **mean over folds** |" in table and "| **macro accuracy** |" in table
    # A class the fold models do not know is a one-line error, as for the plain evaluation.
    rc = evaluate_main(["--model", str(out), "--dataset", str(CLIPS), "--cv", "--rename", "dog_bark=woof",
                        "--out", str(tmp_path / "ev2"), "--workers", "1", "--no-progress",
                        "--cache", str(tmp_path / "cache")])  # fmt: skip
    assert rc == 2
    # Fine-tuning from it with CV: each fold starts from the fold model that never heard it ...
    fine = ["--dataset", str(CLIPS), "--init-from", str(out), "--epochs", "1", "--cv", "--batch-size", "8",
            "--workers", "1", "--no-progress", "--jobs", "1", "--no-baseline", "--cache", str(tmp_path / "cache")]  # fmt: skip
    capsys.readouterr()
    assert train_main([*fine, "--out", str(tmp_path / "f1" / "f")]) == 0
    log = capsys.readouterr().err
    assert f"CV fold 1: starting from {out.parent / 't_cv' / 'fold1'}" in log and "optimistic" not in log
    # ... and without them, from the final model, which heard every fold: said, not hidden
    for w in (out.parent / "t_cv").glob("*.weights.h5"):
        w.unlink()
    assert train_main([*fine, "--out", str(tmp_path / "f2" / "f")]) == 0
    log = capsys.readouterr().err
    assert "CV fold 2: warning: --init-from" in log and "optimistic" in log and "starting from" not in log


def test_the_library_and_the_command_default_to_the_shipped_body():
    from training.cli import DEFAULT_ARCH
    from training.train import TrainConfig

    assert TrainConfig().arch == DEFAULT_ARCH == load_bundle(SHIPPED_MODEL).meta["training"]["arch"]


def test_the_weight_average_of_a_short_training_reaches_back_a_fifth_of_it():
    from training.train import ema_momentum

    # The shipped recipe keeps its 0.998 (500-step horizon): the final model's 74 batches x 60
    # epochs and the smallest CV fold's 46 x 60.
    assert ema_momentum(0.998, 74 * 60) == 0.998 and ema_momentum(0.998, 46 * 60) == 0.998
    # A small set's fine-tune (3 batches x 125 epochs) averages its last ~75 steps, not 500:
    # Keras's average has no warm-up, and 0.998 kept mostly the untrained start.
    assert 1 / (1 - ema_momentum(0.998, 375)) == pytest.approx(75)
    # Too short to average (or averaging off): the last weights.
    assert ema_momentum(0.998, 4) == 0.0 and ema_momentum(0.0, 5000) == 0.0


def test_init_from_fine_tunes_on_folder_per_class_esc50(tiny_bundle, tmp_path):  # noqa: F811
    esc = SHARED / "ESC-50"
    if not esc.is_dir():
        pytest.skip("needs ../shared/data (the large dataset)")
    from training.cli import train_main
    from training.datasets import read_esc50, read_folders

    # A user's folder-per-class set built from ESC-50: <class>/<recording>.flac, no fold folders.
    src = read_esc50(esc, classes=["rooster", "crying_baby", "chainsaw"])
    root = tmp_path / "mine"
    for clip in src.clips:
        dst = root / clip.label / clip.path.name
        dst.parent.mkdir(parents=True, exist_ok=True)
        dst.symlink_to(clip.path)
    ds = read_folders(root)
    assert ds.labels == ["chainsaw", "crying_baby", "rooster"] and len(ds.folds) >= 2
    out = tmp_path / "ft"
    rc = train_main(["--dataset", str(root), "--init-from", str(tiny_bundle), "--epochs", "4",
                     "--batch-size", "8", "--out", str(out), "--workers", "2", "--no-progress",
                     "--cache", str(tmp_path / "cache")])  # fmt: skip
    assert rc == 0
    bundle = load_bundle(out)
    assert bundle.labels == ["chainsaw", "crying_baby", "rooster"]
    assert bundle.meta["init_from"] == str(tiny_bundle)
    src_b = load_bundle(tiny_bundle)
    assert (bundle.norm_mean, bundle.norm_std) == (src_b.norm_mean, src_b.norm_std)
    runner = ModelRunner(bundle)
    assert runner.predict(np.full((397, 64), -60.0, dtype=np.float32)).shape == (3,)
    # The card says what was done (issue #20): the reused body, its data and the licence it carries
    # (the tiny body learnt from UrbanSound8K clips: CC BY-NC), the freeze actually used, and limits
    # about this set's folds, not UrbanSound8K's.
    card = out.with_suffix(".md").read_text()
    limits = card.split("## Limits")[1]
    assert f"Started from the convolutional body of `{tiny_bundle}` (tiny, trained on UrbanSound8K folds [1, 2])" in card
    assert "The body stayed frozen for all 4 epochs" in card
    assert "inherits the non-commercial condition" in card.split("## How it was trained")[0]
    assert "Your own recordings" in card
    assert "clips of 3 classes" in limits and "Freesound IDs that the official metadata" not in limits
    assert f"assigned per source recording ({len({c.group for c in ds.clips})} recordings among {len(ds.clips)} clips)" in limits
    assert "A small set" in limits


def test_streaming_check_on_full_recordings(tiny_bundle, tmp_path, capsys):  # noqa: F811
    rec = SHARED / "recordings"
    if not rec.is_dir():
        pytest.skip("needs ../shared/data (the large dataset)")
    from training.cli import evaluate_main

    rc = evaluate_main(
        ["--model", str(tiny_bundle), "--recordings", str(rec), "--out", str(tmp_path)]
    )
    assert rc == 0
    st = json.loads((tmp_path / "streaming.json").read_text())
    assert st["all"]["recordings"] == 20 and st["all"]["windows"] > 500
    assert st["unseen"]["recordings"] > 0
    assert "streaming: labelled-window accuracy" in capsys.readouterr().out


@pytest.mark.parametrize("jobs", ["1", "2"])
def test_cv_one_at_a_time_or_side_by_side_with_a_reused_body(tiny_bundle, tmp_path, jobs):  # noqa: F811
    """`--jobs 2` trains the CV folds and the final model in parallel processes; `--jobs 1` in
    this one. A reused body goes to the worker processes as weights by layer name."""
    from training.cli import train_main

    out = tmp_path / "models" / "ft"
    rc = train_main(["--dataset", str(CLIPS), "--init-from", str(tiny_bundle), "--epochs", "2", "--cv",
                     "--batch-size", "8", "--out", str(out), "--workers", "1", "--no-progress",
                     "--jobs", jobs, "--no-baseline", "--cache", str(tmp_path / "cache")])  # fmt: skip
    assert rc == 0
    report = json.loads((out.parent / "ft_metrics.json").read_text())
    assert [e["fold"] for e in report["cv"]["per_fold"]] == [1, 2]
    assert report["cost"]["parallel_jobs"] == int(jobs) and report["init_from"] == str(tiny_bundle)
    assert load_bundle(out).meta["metrics"]["cv_folds"] == [1, 2]


@pytest.mark.parametrize("arch", ["cnn_spn_s23t1", "sbcnn"])
def test_every_body_converts_to_full_int8(arch):
    """The shipped body and the SB-CNN yardstick quantise to full-integer TFLite with int8 input
    and output, and MACs are counted."""
    from ai_edge_litert.interpreter import Interpreter

    from training.export import convert_int8
    from training.models import build_cnn, count_macs

    model = build_cnn(10, arch=arch)
    assert 30e6 < count_macs(model) < 80e6  # the ~1 ms-per-window class of the daemon's budget
    rep = np.random.default_rng(0).normal(size=(8, 397, 64, 1)).astype(np.float32)
    interp = Interpreter(model_content=convert_int8(model, rep), num_threads=1)
    interp.allocate_tensors()
    inp, out = interp.get_input_details()[0], interp.get_output_details()[0]
    assert inp["dtype"] == np.int8 and out["dtype"] == np.int8
    interp.set_tensor(inp["index"], np.zeros(inp["shape"], np.int8))
    interp.invoke()
    assert interp.get_tensor(out["index"]).shape == (1, 10)


def _children(pid: int) -> list[int]:
    """Live (not zombie) child processes of `pid`, from /proc."""
    kids = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid and fields[0] != "Z":
            kids.append(int(stat.parent.name))
    return kids


def _alive(pid: int) -> bool:
    try:
        return (Path("/proc") / str(pid) / "stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def test_training_workers_exit_when_the_command_is_killed(tmp_path):
    """`kill -9` of `soundmon train --cv --jobs 2` must not leave its two training processes
    running for nobody (they watch their parent and exit)."""
    import signal
    import subprocess
    import sys
    import time

    cmd = [sys.executable, "-m", "training.cli", "train", "--dataset", str(CLIPS), "--arch", "tiny",
           "--epochs", "500", "--cv", "--jobs", "2", "--batch-size", "8", "--out", str(tmp_path / "m"),
           "--workers", "1", "--no-progress", "--no-baseline", "--cache", str(tmp_path / "cache")]  # fmt: skip
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 120
        workers: list[int] = []
        while time.monotonic() < deadline and len(workers) < 2:
            time.sleep(0.5)
            workers = [p for p in _children(proc.pid)
                       if b"spawn_main" in (Path("/proc") / str(p) / "cmdline").read_bytes()]  # fmt: skip
        assert len(workers) >= 2, "the pool's workers never started"
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and any(_alive(p) for p in workers):
            time.sleep(0.5)
        assert not any(_alive(p) for p in workers), "training workers outlived the killed command"
    finally:
        proc.kill()


def test_onset_probe_asks_every_clip_for_its_first_half_second(tiny_bundle, capsys):
    """The large-n view of detection latency: each clip's first 0.1-0.5 s at a window's end, after
    silence and over another clip; rates are shares of the clips, and the same seed repeats them."""
    from training.evaluation.onset_probe import first_window_rates, main

    r = first_window_rates(tiny_bundle, CLIPS, fold=1)
    assert r["clips"] == 10
    for condition in ("after_silence", "over_another_sound"):
        assert set(r[condition]) == {"confident", "top_class"}
        assert all(0.0 <= v <= 1.0 for v in r[condition].values())
    assert list(r["confident_after_silence_by_seconds"]) == [0.25, 0.5, 1.0, 2.0]
    assert first_window_rates(tiny_bundle, CLIPS, fold=1) == r
    assert main(["--model", str(tiny_bundle), "--dataset", str(CLIPS), "--fold", "1"]) == 0
    out = capsys.readouterr().out
    assert "after silence" in out and "over another sound" in out and "2 s:" in out
    with pytest.raises(SystemExit, match="no clips in fold 9"):
        first_window_rates(tiny_bundle, CLIPS, fold=9)


def test_onset_streams_count_onsets_at_class_changes_and_answers_of_that_class():
    from training.evaluation.onset_streams import Segment, onset_answers

    segments = [Segment(0.0, 4.0, "siren"), Segment(4.0, 8.0, "siren"), Segment(8.0, 9.0, "dog_bark"),
                Segment(9.0, 13.0, "siren")]  # fmt: skip
    starts = [("siren", 1.0), ("dog_bark", 8.5), ("siren", 7.0), ("siren", 10.5)]
    # Three onsets (the second siren clip continues the first); the first siren is answered at
    # 1.0 s, the bark at +0.5 s, the last siren at +1.5 s (the start at 7.0 s was before it).
    assert onset_answers(segments, starts, hop=0.5) == [("siren", 1.0), ("dog_bark", 0.5), ("siren", 1.5)]
    # A start after the clip's end + one hop answers nothing.
    assert onset_answers([Segment(0.0, 1.0, "gun_shot")], [("gun_shot", 1.6)], hop=0.5) == [("gun_shot", None)]


def test_onset_streams_with_gaps_put_a_silence_before_every_clip_in_the_same_order():
    """`--gaps 1,4`: each onset also follows an event that has just closed (card step 64)."""
    from training.evaluation.onset_streams import fold_stream, gap_range, main

    ds = read_dataset(CLIPS)
    joined, plain = fold_stream(ds, 1, 16000)
    gapped, spaced = fold_stream(ds, 1, 16000, gaps=(1.0, 4.0))
    assert [s.label for s in spaced] == [s.label for s in plain] and spaced[0].start_s == 0.0
    silences = [b.start_s - a.end_s for a, b in itertools.pairwise(spaced)]
    assert all(1.0 <= g <= 4.0 for g in silences)
    assert len(gapped) == len(joined) + round(sum(silences) * 16000)
    assert [s.end_s - s.start_s for s in spaced] == pytest.approx([s.end_s - s.start_s for s in plain])
    assert gap_range("0,0") == (0.0, 0.0)
    for bad in ("4,1", "-1,2", "1", "a,b"):
        with pytest.raises(argparse.ArgumentTypeError):
            gap_range(bad)
    with pytest.raises(SystemExit):  # argparse: one line on stderr, exit 2
        main(["--model", str(SHIPPED_MODEL), "--dataset", str(CLIPS), "--gaps", "4,1"])


def test_onset_streams_run_the_shipped_fold_models_on_the_bundled_clips(capsys):
    """The large-n latency yardstick, here on the 20 bundled clips: one stream per held-out fold,
    through the daemon's pipeline and detector with the fold model that never heard it."""
    from training.evaluation.onset_streams import main

    assert main(["--model", str(SHIPPED_MODEL), "--dataset", str(CLIPS)]) == 0
    table = capsys.readouterr().out.splitlines()
    assert table[0].startswith("| fold | audio (min) | onsets | answered | median delay (s) | within 0.8 s")
    assert [row.split("|")[1].strip() for row in table[2:]] == ["1", "2"]  # no fold 3 in the clips
    # --by-class: the same onsets and events, one row per class over both folds
    assert main(["--model", str(SHIPPED_MODEL), "--dataset", str(CLIPS), "--by-class"]) == 0
    by_class = capsys.readouterr().out.splitlines()
    assert by_class[0].startswith("| class | onsets | answered | median delay (s) | within 0.8 s")
    cells = [[c.strip() for c in row.split("|")[1:-1]] for row in by_class[2:]]
    per_fold = [[c.strip() for c in row.split("|")[1:-1]] for row in table[2:]]
    assert sum(int(c[1]) for c in cells) == sum(int(c[2]) for c in per_fold)  # onsets
    assert sum(int(c[5]) for c in cells) == sum(int(c[6]) for c in per_fold)  # events
    # issue 21's metric on the streams too: segment F1 per second against the clips' exact times
    assert table[0].endswith("| segment F1 (P / R) | shorter than a hop |")
    for row in per_fold:
        assert row[8] == "-" or re.fullmatch(r"\d\.\d\d \((\d\.\d\d|-) / (\d\.\d\d|-)\)", row[8])
    assert sum(int(c[8]) for c in cells) == sum(int(c[9]) for c in per_fold)  # short events
    # --sure-at: how soon each model is sure of an onset at all, whatever the detector does
    assert main(["--model", str(SHIPPED_MODEL), "--dataset", str(CLIPS), "--sure-at", "0.5,0.9"]) == 0
    sure = capsys.readouterr().out.split("\n\n")[1].splitlines()
    assert sure[0] == "| model | top at >= | onsets reached | median delay (s) | within 0.8 s |"
    reached = {(c[0], c[1]): c[2] for c in ([x.strip() for x in row.split("|")[1:-1]] for row in sure[2:])}
    assert set(reached) == {("start model", "0.5"), ("start model", "0.9"), ("4 s model", "0.5"), ("4 s model", "0.9")}
    onsets = sum(int(c[2]) for c in per_fold)
    for key, cell in reached.items():
        assert re.fullmatch(rf"\d+ of {onsets}", cell), (key, cell)
    # a higher bar is reached by no more onsets
    assert int(reached[("start model", "0.9")].split()[0]) <= int(reached[("start model", "0.5")].split()[0])
    with pytest.raises(SystemExit):  # argparse: one line on stderr, exit 2
        main(["--model", str(SHIPPED_MODEL), "--dataset", str(CLIPS), "--sure-at", "0,1.5"])
    assert main(["--model", "no/such/model", "--dataset", str(CLIPS)]) != 0
    assert "onset_streams:" in capsys.readouterr().err


def test_first_sure_finds_the_first_result_that_ranks_the_class_top_after_the_onset():
    """The floor under any detection rule's delay: when a model first ranks the onset's class
    top at the threshold, in (onset, end]; results the model did not score (None) are skipped."""
    from training.evaluation.labelled_onsets import first_sure

    scored = [(1.0, np.array([0.9, 0.1])), (1.25, None), (1.5, np.array([0.4, 0.6])),
              (1.75, np.array([0.2, 0.8])), (2.0, np.array([0.1, 0.9]))]  # fmt: skip
    assert first_sure(scored, 1, onset=1.0, end=3.0, threshold=0.6) == 1.5  # not the result at the onset itself
    assert first_sure(scored, 1, onset=1.0, end=3.0, threshold=0.75) == 1.75
    assert first_sure(scored, 1, onset=1.0, end=1.7, threshold=0.75) is None  # sure only after the end
    assert first_sure(scored, 0, onset=0.5, end=3.0, threshold=0.5) == 1.0
    assert first_sure(scored, 0, onset=1.0, end=3.0, threshold=0.3) is None  # never top again
