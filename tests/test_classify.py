"""`soundmon classify`: JSON lines contract, readable table, bad files reported, exit codes."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from monitor.config import Config
from monitor.frontend import LogMelFrontend
from monitor.runner import open_model
from monitor.windows import file_windows
from tests.paths import DEMO, bundled_clips


def soundmon(*args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "monitor", *args], capture_output=True, text=True,
                          timeout=timeout)  # fmt: skip


def test_json_lines_have_every_field(tiny_bundle):
    clips = bundled_clips()[:3]
    out = soundmon("classify", "--json", "--model", str(tiny_bundle), *map(str, clips))
    assert out.returncode == 0, out.stderr
    lines = out.stdout.strip().splitlines()
    assert len(lines) == 3
    for line, clip in zip(lines, clips, strict=True):
        obj = json.loads(line)
        assert set(obj) == {"file", "duration_s", "label", "score", "scores", "events"}
        assert obj["file"] == str(clip)
        assert obj["duration_s"] == pytest.approx(sf.info(clip).duration, abs=0.01)
        assert obj["label"] == max(obj["scores"], key=obj["scores"].get)
        assert obj["score"] == pytest.approx(obj["scores"][obj["label"]], abs=1e-3)
        for ev in obj["events"]:
            assert set(ev) == {"label", "start_s", "end_s", "score"}
            assert ev["end_s"] >= ev["start_s"]


def test_clip_scores_equal_the_training_evaluation_rule(tiny_bundle):
    """classify streams through the daemon pipeline; evaluation scores file_windows directly. Same numbers."""
    from monitor.classify import classify_file

    bundle, runner = open_model(tiny_bundle)
    cfg = Config()
    cfg.detection.min_level_dbfs = -200.0  # no gating, as in evaluation
    for clip in bundled_clips()[:4]:
        audio, _ = sf.read(clip, dtype="float32")
        windows = file_windows(audio, LogMelFrontend(bundle.frontend), bundle.window_seconds, 0.5)
        expected = np.mean([runner.predict(w) for w in windows], axis=0)
        got = classify_file(clip, bundle, runner, cfg)
        assert np.allclose([got.scores[k] for k in bundle.labels], expected, atol=1e-6)


def test_a_bundle_that_says_max_is_scored_by_the_max_over_windows(tiny_bundle, tmp_path):
    """`placement.clip_score: max` (what `train --backbone --clip-score auto` writes when the max
    won its CV): classify, and evaluate's clip scores, take the max of the window scores; a rule
    this soundmon does not know is one line, exit 2, before any file."""
    import shutil

    from monitor.classify import classify_file
    from training.datasets import Clip
    from training.evaluation.clip_accuracy import predict_int8
    from training.features import compute_features

    base = tmp_path / "maxrule"
    for suffix in (".tflite", ".json"):
        shutil.copy(tiny_bundle.with_suffix(suffix), base.with_suffix(suffix))
    meta = json.loads(base.with_suffix(".json").read_text())
    meta["placement"]["clip_score"] = "max"
    base.with_suffix(".json").write_text(json.dumps(meta))
    bundle, runner = open_model(base)
    cfg = Config()
    cfg.detection.min_level_dbfs = -200.0  # no gating, as in evaluation
    audio, _ = sf.read(DEMO, dtype="float32")  # 33 s of street sounds: 59 windows
    windows = file_windows(audio, LogMelFrontend(bundle.frontend), bundle.window_seconds, 0.5)
    per_window = np.array([runner.predict(w) for w in windows])
    assert not np.allclose(per_window.max(0), per_window.mean(0), atol=1e-2)
    got = classify_file(DEMO, bundle, runner, cfg)
    assert np.allclose([got.scores[k] for k in bundle.labels], per_window.max(0), atol=1e-6)
    assert got.label == bundle.labels[int(per_window.max(0).argmax())]
    demo = Clip(DEMO, bundle.labels[0], 1, "demo")
    feats = compute_features([demo], bundle.frontend, bundle.window_seconds, tmp_path / "cache", 1, False)
    assert np.allclose(predict_int8(bundle, feats, progress=False)[0], per_window.max(0), atol=1e-5)
    meta["placement"]["clip_score"] = "median"
    base.with_suffix(".json").write_text(json.dumps(meta))
    out = soundmon("classify", "--model", str(base), str(DEMO))
    assert out.returncode == 2 and out.stderr.count("\n") == 1
    assert "placement.clip_score is 'median'" in out.stderr


def test_any_rate_and_channel_count(tiny_bundle, tmp_path):
    audio, sr = sf.read(bundled_clips()[0], dtype="float32")
    import soxr

    stereo44 = np.stack([soxr.resample(audio, sr, 44100)] * 2, axis=1)
    wav = tmp_path / "stereo44.wav"
    ogg = tmp_path / "stereo44.ogg"
    sf.write(wav, stereo44, 44100)
    sf.write(ogg, stereo44, 44100)
    out = soundmon("classify", "--json", "--model", str(tiny_bundle), str(wav), str(ogg))
    assert out.returncode == 0, out.stderr
    assert [json.loads(x)["duration_s"] for x in out.stdout.splitlines()] == pytest.approx(
        [len(audio) / sr] * 2, abs=0.02
    )


def test_undecodable_file_is_reported_and_others_still_run(tiny_bundle, tmp_path):
    bad = tmp_path / "broken.flac"
    bad.write_bytes(b"fLaC but not really" * 50)
    missing = tmp_path / "nope.wav"
    good = bundled_clips()[0]
    out = soundmon("classify", "--json", "--model", str(tiny_bundle), str(bad), str(good), str(missing))
    assert out.returncode == 1
    assert len(out.stdout.strip().splitlines()) == 1
    errors = out.stderr.strip().splitlines()
    assert len(errors) == 2 and all(line.startswith("soundmon classify: ") for line in errors)
    assert "broken.flac" in errors[0] and "nope.wav" in errors[1]
    assert "Traceback" not in out.stderr


def test_table_output_is_readable(tiny_bundle):
    out = soundmon("classify", "--model", str(tiny_bundle), str(bundled_clips()[0]))
    assert out.returncode == 0, out.stderr
    assert "windows)" in out.stdout and "events" in out.stdout


def test_missing_model_is_one_line_exit_2(tmp_path):
    out = soundmon("classify", "--model", str(tmp_path / "none"), str(bundled_clips()[0]))
    assert out.returncode == 2
    assert out.stderr.count("\n") == 1 and "not found" in out.stderr


def test_bad_config_is_one_line_exit_2(tiny_bundle, tmp_path):
    cfg = tmp_path / "bad.yaml"
    cfg.write_text("detection:\n  classes:\n    unicorn: {threshold: 0.5}\n")
    out = soundmon("classify", "--config", str(cfg), "--model", str(tiny_bundle), str(bundled_clips()[0]))
    assert out.returncode == 2
    assert "detection.classes.unicorn" in out.stderr and out.stderr.count("\n") == 1


def test_short_clip_gets_one_window(tiny_bundle, tmp_path):
    from monitor.classify import classify_file

    short = tmp_path / "short.flac"
    audio, sr = sf.read(bundled_clips()[0], dtype="float32")
    sf.write(short, audio[: sr // 2], sr)
    bundle, runner = open_model(tiny_bundle)
    assert classify_file(Path(short), bundle, runner, Config()).windows == 1


def test_shipped_model_is_the_default_and_labels_real_clips():
    """Without --model, classify runs models/urban10; on the bundled clips (training data of the
    shipped model, two per class) it must name the right class for nearly all of them."""
    from tests.paths import need_shipped_model

    model = need_shipped_model()
    clips = bundled_clips()
    default = soundmon("classify", "--json", *map(str, clips))
    explicit = soundmon("classify", "--json", "--model", str(model), *map(str, clips))
    assert default.returncode == 0, default.stderr
    assert default.stdout == explicit.stdout
    import csv

    from tests.paths import CLIPS

    with open(CLIPS / "metadata.csv", newline="") as f:
        truth = {r["slice_file_name"]: r["class"] for r in csv.DictReader(f)}
    results = [json.loads(line) for line in default.stdout.splitlines()]
    right = sum(truth[Path(r["file"]).name] == r["label"] for r in results)
    assert right >= 16, f"{right}/20 bundled clips labelled right"


def test_shipped_model_on_shared_clips_by_default():
    """The large set: a few UrbanSound8K and ESC-10 clips through the default (shipped) model."""
    from tests.paths import need_shared, need_shipped_model

    need_shipped_model()
    shared = need_shared()
    clips = sorted((shared / "UrbanSound8K" / "audio" / "fold3").glob("*.flac"))[:5]
    clips += sorted((shared / "ESC-50" / "audio").glob("*.flac"))[:3]
    out = soundmon("classify", "--json", *map(str, clips))
    assert out.returncode == 0, out.stderr
    rows = [json.loads(line) for line in out.stdout.splitlines()]
    assert len(rows) == 8
    assert {r["label"] for r in rows} <= {
        "air_conditioner", "car_horn", "children_playing", "dog_bark", "drilling",
        "engine_idling", "gun_shot", "jackhammer", "siren", "street_music",
    }  # fmt: skip
    assert all(abs(sum(r["scores"].values()) - 1.0) < 0.05 for r in rows)


def test_decode_error_part_way_reports_the_decoded_part_with_a_warning(tiny_bundle, tmp_path):
    """A FLAC that fails at ~32 s of 33 s is not thrown away: its result (marked with `error`
    and `decoded_s`) is printed, one warning line goes to stderr, and the exit status is 1;
    a good file after it is still classified."""
    from tests.corrupt_audio import corrupt_flac
    from tests.daemon_helpers import all_thresholds, write_config

    bad, decodable_s = corrupt_flac(tmp_path)
    good = bundled_clips()[0]
    cfg = write_config(tmp_path / "c.yaml", None, detection=all_thresholds(0.0))  # every label fires
    out = soundmon("classify", "--json", "--config", str(cfg), "--model", str(tiny_bundle), str(bad), str(good))
    assert out.returncode == 1
    assert "Traceback" not in out.stderr
    errors = out.stderr.strip().splitlines()
    assert len(errors) == 1 and errors[0].startswith("soundmon classify: warning: cannot decode ")
    assert str(bad) in errors[0] and "covers the first" in errors[0]
    first, second = (json.loads(x) for x in out.stdout.strip().splitlines())
    assert first["file"] == str(bad) and "lost sync" in first["error"]
    assert first["decoded_s"] == pytest.approx(decodable_s, abs=0.15)
    assert first["duration_s"] == pytest.approx(33.0, abs=0.01)
    assert first["label"] in first["scores"] and len(first["events"]) == 10  # 32 s were scored
    # the events the decoded audio opened end where the audio ends, not never
    assert all(first["decoded_s"] - 1.0 <= ev["end_s"] <= first["decoded_s"] + 0.5 for ev in first["events"])
    assert second["file"] == str(good) and "error" not in second and "decoded_s" not in second
    table = soundmon("classify", "--model", str(tiny_bundle), str(bad))
    assert table.returncode == 1 and "could be decoded" in table.stdout
