"""Which short sounds the start model may open alone: measured on held-out onset streams, then
written into the bundle (and its CV folds), where `detection.classes.<label>.fast_start_alone`
finds it."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from monitor.bundle import load_bundle
from tests.fixtures_model import CLIPS
from tests.paths import need_shipped_model
from training.evaluation.fast_start_alone import choose, main


def _row(label: str, added: int, right: int) -> dict:
    return {"label": label, "onsets": 50, "answered_backed": 20, "answered_alone": 20 + added,
            "median_delay_backed_s": 0.7, "median_delay_alone_s": 0.6, "events_added": added,
            "added_right": right, "added_precision": right / added if added else None}  # fmt: skip


def test_a_label_qualifies_with_enough_added_events_right_often_enough():
    rows = [_row("gun_shot", 20, 19), _row("dog_bark", 16, 11), _row("car_horn", 4, 4), _row("siren", 0, 0)]
    # gun shot: 19 of 20 right (95 %); dog bark 69 %; car horn all right but only 4 events; siren adds none
    assert choose(rows, min_precision=0.95, min_events=10) == ["gun_shot"]
    assert choose(rows, min_precision=0.95, min_events=4) == ["gun_shot", "car_horn"]


def _copy_shipped(tmp_path: Path) -> Path:
    """The shipped bundle, its start model and both sets of CV folds, in a folder of their own."""
    models = need_shipped_model().parent
    for name in ("urban10", "urban10_start"):
        for suffix in (".tflite", ".stream.tflite", ".json"):
            if (models / f"{name}{suffix}").is_file():
                shutil.copy(models / f"{name}{suffix}", tmp_path / f"{name}{suffix}")
        shutil.copytree(models / f"{name}_cv", tmp_path / f"{name}_cv",
                        ignore=shutil.ignore_patterns("*.weights.h5"))  # fmt: skip
    return tmp_path / "urban10"


def test_the_measurement_is_written_into_the_bundle_and_its_folds(tmp_path, capsys):
    """On the 20 bundled clips (2 per class): one row per candidate, and `--write` stores the
    choice where the daemon reads it, in the main bundle and in each fold bundle."""
    model = _copy_shipped(tmp_path)
    args = ["--model", str(model), "--dataset", str(CLIPS), "--min-events", "1", "--min-precision", "0.5"]
    assert main([*args, "--write"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith("| label | onsets | answered: backed / alone |")
    assert [line.split("|")[1].strip() for line in out[2:5]] == ["gun_shot", "dog_bark", "car_horn"]
    data = json.loads(model.with_suffix(".json").read_text())
    chosen = data["fast_start_alone_measured"]["chosen"]
    assert out[-1].startswith(f"wrote detection.fast_start_alone = {chosen}")
    assert load_bundle(model).fast_start_alone == chosen
    for fold in sorted((tmp_path / "urban10_cv").glob("fold*.json")):
        assert load_bundle(fold.with_suffix("")).fast_start_alone == chosen
    # a label the model does not have, or a bundle without a start model: one line, non-zero
    assert main(["--model", str(model), "--dataset", str(CLIPS), "--labels", "thunder"]) != 0
    assert "fast_start_alone: " in capsys.readouterr().err
    assert main(["--model", str(tmp_path / "urban10_start"), "--dataset", str(CLIPS)]) != 0
    assert "names no start model" in capsys.readouterr().err
