"""Fast start: a start model that hears only the newest second opens events sooner.

The detector rule is driven with plain score rows (windows 0.5 s apart, the defaults of
tests/test_detector.py); the bundle, pipeline and daemon parts use the shipped model and its
shipped start model (`models/urban10_start`, trained by `soundmon train --window-seconds 1`).
"""

from __future__ import annotations

import json
import shutil
import signal
from pathlib import Path

import numpy as np
import pytest

from monitor.bundle import load_bundle
from monitor.classify import classify_file
from monitor.config import Config, DetectionConfig, load_config, parse_config
from monitor.errors import BundleError, ConfigError
from monitor.fast_start import fast_start_on, open_start_model, start_runner_for
from monitor.pipeline import Pipeline
from monitor.runner import open_model
from monitor.stream_runner import StreamingRunner
from tests.daemon_helpers import DaemonProcess, run_to_end, write_config
from tests.paths import DEMO, need_shipped_model
from tests.test_detector import HOP, LABELS, feed, make, row
from training.attach_start import attach_start
from training.datasets import load_audio

# -- the detector rule ----------------------------------------------------------------------------


def test_start_model_sure_of_a_label_opens_its_event_at_once():
    det = make(fast_start_threshold=0.8)
    # the main model backs it (0.45 is at the release level 0.4) but its smoothed score is below 0.5
    events = det.update(0.5, row(siren=0.45), start_scores=row(siren=0.9, dog_bark=0.1))
    assert [(e.type, e.label) for e in events] == [("start", "siren")]
    # the START says which model opened it and carries the score that crossed: never one below
    # the threshold that opened the event (the smoothed main score is only 0.45 here)
    assert (events[0].opened_by, events[0].score, events[0].peak_score) == ("start_model", pytest.approx(0.9), pytest.approx(0.9))
    # a window whose own smoothed score crosses opens the event as the main model's
    (main,) = make(fast_start_threshold=0.8).update(0.5, row(siren=0.6), start_scores=row(siren=0.9))
    assert (main.opened_by, main.score) == ("model", pytest.approx(0.6))
    # without fast start the same window opens nothing
    assert make().update(0.5, row(siren=0.3), start_scores=row(siren=0.9)) == []


def test_only_the_start_models_top_label_at_the_threshold_fires():
    det = make(fast_start_threshold=0.4)
    events = det.update(0.5, row(siren=0.45, dog_bark=0.45), start_scores=row(siren=0.45, dog_bark=0.5))
    assert [e.label for e in events] == ["dog_bark"]
    det = make(fast_start_threshold=0.8)
    assert det.update(0.5, row(), start_scores=row(siren=0.79)) == []
    assert det.update(1.0, row(), start_scores=None) == []  # a gated window or no start model


def test_fast_start_keeps_disabled_labels_open_events_and_cooldown():
    det = make(fast_start_threshold=0.8, enabled={"dog_bark", "car_horn"})
    assert det.update(0.5, row(siren=0.45), start_scores=row(siren=1.0)) == []  # siren is disabled
    det = make(fast_start_threshold=0.8, hold_seconds=0.0)
    (start,) = det.update(0.5, row(siren=0.9), start_scores=row(siren=0.9))
    assert det.update(1.0, row(siren=0.9), start_scores=row(siren=0.9)) == []  # already open
    ends = feed(det, [row(), row(), row()], first_offset=1.5)
    # smoothed 0.6 at 1.5 s, then (0.9 + 0 + 0) / 3 = 0.3 < 0.4 at 2.0 s: ends there (no hold)
    assert [(t, e.type) for t, e in ends] == [(2.0, "end")]
    assert det.update(3.0, row(siren=0.45), start_scores=row(siren=1.0)) == []  # cooldown until 4.0
    assert [e.type for e in det.update(4.0, row(siren=0.45), start_scores=row(siren=1.0))] == ["start"]
    assert start.id != det.active["siren"].id


def test_with_a_start_weight_a_windows_score_is_both_models():
    # w = 0.3: 0.7 x 0.4 + 0.3 x 0.9 = 0.55 reaches 0.5 where the main model's 0.4 alone does not
    det = make(fast_start_threshold=0.95, start_weight=0.3)
    (start,) = det.update(0.5, row(siren=0.4), start_scores=row(siren=0.9))
    assert (start.label, start.opened_by, start.score) == ("siren", "model", pytest.approx(0.55))
    assert det.latest == pytest.approx(row(siren=0.55))
    # a window without start-model scores (fast start off, or gated) counts the main model alone
    det.update(1.0, row(siren=0.2), start_scores=None)
    assert det.latest == pytest.approx(row(siren=0.2))
    # and when the start model hears the sound stop, the window's score falls sooner: below the
    # release level 0.4 (0.7 x 0.5 + 0.3 x 0.0 = 0.35) where the main model alone still holds
    det = make(start_weight=0.3)
    det.update(0.5, row(siren=0.5), start_scores=row())
    assert det.latest[0] == pytest.approx(0.35)
    # weight 0 (the default): the start model's scores only open fast starts
    det = make(fast_start_threshold=0.95)
    assert det.update(0.5, row(siren=0.4), start_scores=row(siren=0.9)) == []
    assert det.latest == pytest.approx(row(siren=0.4))
    with pytest.raises(ValueError, match=r"start_weight must be in \[0, 1\)"):
        make(start_weight=1.0)


def test_a_fast_started_event_ends_by_the_main_models_scores():
    det = make(fast_start_threshold=0.8)
    (start,) = det.update(0.5, row(siren=0.45), start_scores=row(siren=0.95))
    events = feed(det, [row(siren=0.1)] * 4, first_offset=1.0)
    # smoothed (0.45 + 0.1) / 2 < release level 0.4 from the next window on: ends one hold (1.0 s)
    # after its last window at or above the release level (the start window itself)
    assert [(t, e.type, e.end_offset_s) for t, e in events] == [(1.5, "end", 0.5)]


def test_a_fast_started_event_stays_on_while_the_main_models_windows_back_it():
    # a steady sound with 7 windows of smoothing: the main model's windows rise at once, its
    # 7-window mean only slowly; the event opened on the latest window's backing stays on by it
    # (rule 3 tests the latest window too), instead of ending as a 0-second event
    det = make(fast_start_threshold=0.8, class_smoothing={"siren": 7})
    events = feed(det, [row(), row(), row(), row(siren=0.45)], first_offset=0.5)
    assert [(t, e.type) for t, e in events] == []
    (start,) = det.update(2.5, row(siren=0.7), start_scores=row(siren=0.9))
    assert start.opened_by == "start_model"
    later = feed(det, [row(siren=0.7)] * 6, first_offset=3.0)
    assert later == []  # smoothed 0.16 ... 0.56: below the release level 0.4 until 4.5 s, still on
    assert det.active["siren"].id == start.id


def test_a_check_between_windows_opens_an_event_and_moves_nothing_else():
    det = make(fast_start_threshold=0.8, hold_seconds=0.0)
    det.update(0.5, row(siren=0.45))
    # half a hop later the start model is sure and the main model's last window backs it (0.45 is
    # at the release level): the event opens there with the start model's 0.9
    (start,) = det.fast_start(0.75, row(siren=0.9))
    assert (start.type, start.label, start.start_offset_s, start.score) == ("start", "siren", 0.75, pytest.approx(0.9))
    assert start.opened_by == "start_model"
    assert det.fast_start(0.75, row(siren=0.9)) == []  # already open
    assert det.smoothed[0] == pytest.approx(0.45)  # no window score was added
    assert det.fast_start(1.25, row(dog_bark=0.79)) == [] and det.fast_start(1.25, None) == []
    (end,) = det.update(1.5, row())  # the main model's scores end it, as any fast-started event
    assert (end.type, end.end_offset_s) == ("end", 0.75)
    assert det.update(2.0, row(siren=0.45)) == []  # backs a fast start again, but:
    assert det.fast_start(2.25, row(siren=1.0)) == []  # cooldown until 1.5 + 2.0
    with pytest.raises(ValueError, match="backwards"):
        det.fast_start(1.0, row(siren=1.0))
    assert make().fast_start(0.25, row(siren=1.0)) == []  # fast start off


def test_a_start_model_opening_the_main_model_does_not_back_is_not_published():
    """Issue 21: every event shorter than a hop on unseen street recordings was a start-model
    opening the main model never confirmed, and a false alarm. The main model must back it (its
    window or smoothed score at the release level 0.4), unless the start model is sure alone (0.95)."""
    det = make(fast_start_threshold=0.8)
    assert det.fast_start(0.25, row(siren=0.94)) == []  # no window scored yet: nothing backs it
    # the main model's window (0.39) and smoothed score are below the release level 0.4
    assert det.update(0.5, row(siren=0.39), start_scores=row(siren=0.9)) == []
    assert det.fast_start(0.75, row(siren=0.9)) == []  # between windows: the same rule
    # the latest window at the release level backs it, though the smoothed (0.39 + 0.4) / 2 is below
    (start,) = det.update(1.0, row(siren=0.4), start_scores=row(siren=0.9))
    assert (start.start_offset_s, start.opened_by) == (1.0, "start_model")
    # the smoothed score at the release level backs it too, though the latest window is below
    det = make(fast_start_threshold=0.8)
    feed(det, [row(dog_bark=0.45), row(dog_bark=0.45), row(dog_bark=0.3)])  # smoothed 0.4 < 0.5 at 1.5 s
    (start,) = det.fast_start(1.75, row(dog_bark=0.9))
    assert (start.start_offset_s, start.label) == (1.75, "dog_bark")
    # a start model sure alone needs no backing, at a window or between windows
    det = make(fast_start_threshold=0.8)
    (start,) = det.fast_start(0.25, row(car_horn=0.95))
    assert (start.start_offset_s, start.label, start.opened_by) == (0.25, "car_horn", "start_model")
    (start,) = det.update(0.5, row(), start_scores=row(siren=0.97))
    assert (start.start_offset_s, start.label) == (0.5, "siren")


def test_with_a_start_weight_the_start_model_does_not_back_itself():
    """Rule 4 backs on the main model's own scores, not on rule 1's blend, which holds the start
    model's. The case (card step 64): a siren, 3 s of silence, then a dog's first
    bark, which the start model scored 0.89 `siren`; the main model's window, still holding the
    siren's end, 0.28. Blended (w 0.4) 0.53 reached the release level 0.4: the start model had
    backed its own wrong siren."""
    det = make(fast_start_threshold=0.8, start_weight=0.4)
    feed(det, [row(siren=0.1), row(siren=0.1)])
    assert det.update(1.5, row(siren=0.28), start_scores=row(siren=0.89)) == []
    assert det.latest[0] == pytest.approx(0.6 * 0.28 + 0.4 * 0.89)  # at the release level, but the blend
    assert det.fast_start(1.75, row(siren=0.89)) == []  # between windows: the same rule
    # the main model's own window at the release level backs it
    (start,) = det.update(2.0, row(siren=0.4), start_scores=row(siren=0.89))
    assert (start.start_offset_s, start.opened_by, start.score) == (2.0, "start_model", pytest.approx(0.89))
    # nor through the smoothed score: dog-bark recording 118101's first window (w 0.5), where the
    # blend's mean 0.415 is at the release level and the main model's own 0.22 is not
    det = make(fast_start_threshold=0.75, start_weight=0.5)
    assert det.update(0.5, row(siren=0.22), start_scores=row(siren=0.61)) == []
    assert det.smoothed[0] == pytest.approx(0.415)
    assert det.fast_start(0.75, row(siren=0.83)) == []


def test_a_main_model_score_rising_into_the_release_level_backs_a_fast_start():
    """A sound that has just begun fills only the newest half second of the main model's 4 s
    window: its own score there is low but rising. Rising at least half the release level (0.2 of
    0.4) to at least that level backs the start model; the same score on its way down (the tail of
    a sound that has stopped) does not (card step 66)."""
    det = make(fast_start_threshold=0.8)
    feed(det, [row(siren=0.05)])
    (start,) = det.update(1.0, row(siren=0.3), start_scores=row(siren=0.9))  # 0.05 -> 0.3: rising
    assert (start.start_offset_s, start.opened_by, start.score) == (1.0, "start_model", pytest.approx(0.9))
    # the same 0.3 falling (smoothed 0.325, under the release level): not backed, nor between windows
    det = make(fast_start_threshold=0.8)
    feed(det, [row(siren=0.35)])
    assert det.update(1.0, row(siren=0.3), start_scores=row(siren=0.9)) == []
    assert det.fast_start(1.25, row(siren=0.9)) == []
    # rising by less than 0.2, or to less than 0.2: not backed
    det = make(fast_start_threshold=0.8)
    feed(det, [row(siren=0.15)])
    assert det.update(1.0, row(siren=0.34), start_scores=row(siren=0.9)) == []
    det = make(fast_start_threshold=0.8)
    feed(det, [row()])
    assert det.update(1.0, row(siren=0.19), start_scores=row(siren=0.9)) == []
    # between windows, the rise of the last two windows backs the check half a hop later
    det = make(fast_start_threshold=0.8)
    feed(det, [row(), row(siren=0.25)])
    (start,) = det.fast_start(1.25, row(siren=0.85))
    assert (start.start_offset_s, start.label) == (1.25, "siren")
    # a class with a higher threshold asks for a higher rise: 0.8 -> release 0.64, steps of 0.32
    det = make(fast_start_threshold=0.8, thresholds={"siren": 0.8, "dog_bark": 0.5, "car_horn": 0.5})
    feed(det, [row()])
    assert det.update(1.0, row(siren=0.3), start_scores=row(siren=0.9)) == []
    assert det.update(1.5, row(siren=0.63), start_scores=row(siren=0.9))[0].opened_by == "start_model"


def test_a_label_the_start_model_may_open_alone_needs_no_backing(tmp_path, tiny_bundle):
    """Issue 21's exception for short sounds: a gun shot is over before the 4 s model can back it;
    a label in `fast_start_alone` (the bundle's list, or classes.<label>.fast_start_alone) opens on
    the start model's score alone (car_horn stands in for it here). Its event may be shorter than a hop."""
    det = make(fast_start_threshold=0.8, fast_start_alone={"car_horn"})
    (horn,) = det.update(0.5, row(), start_scores=row(car_horn=0.9))  # the main model scores 0
    assert (horn.label, horn.opened_by, horn.score) == ("car_horn", "start_model", pytest.approx(0.9))
    (end,) = det.update(1.5, row())  # no window backed it: it ends at its own start, one hold later
    assert (end.label, end.duration_s) == ("car_horn", 0.0)
    assert det.update(0.5 + 4.0, row(), start_scores=row(siren=0.9)) == []  # other labels still need backing
    with pytest.raises(ValueError, match="unknown label"):
        make(fast_start_alone={"thunder"})
    # where it comes from: the config's per-label key wins over the bundle's list
    bundle = tmp_path / "alone"
    for suffix in (".tflite", ".json"):
        shutil.copy(tiny_bundle.with_suffix(suffix), bundle.with_suffix(suffix))
    meta = json.loads(bundle.with_suffix(".json").read_text())
    labels = meta["labels"]
    meta["detection"] = {"fast_start_alone": [labels[0]]}
    bundle.with_suffix(".json").write_text(json.dumps(meta))
    listed = load_bundle(bundle).fast_start_alone
    assert listed == [labels[0]]
    cfg = tmp_path / "c.yaml"
    cfg.write_text(f"detection:\n  classes:\n    {labels[0]}: {{fast_start_alone: false}}\n"
                   f"    {labels[1]}: {{fast_start_alone: true}}\n")  # fmt: skip
    assert load_config(None).detection.fast_start_alone(listed, labels) == {labels[0]}
    assert load_config(cfg).detection.fast_start_alone(listed, labels) == {labels[1]}
    meta["detection"] = {"fast_start_alone": ["thunder"]}
    bundle.with_suffix(".json").write_text(json.dumps(meta))
    with pytest.raises(BundleError, match="fast_start_alone' names labels the model does not have"):
        load_bundle(bundle)


def test_a_backed_start_model_opening_opens_where_it_did_without_the_rule(monkeypatch):
    """The rule delays no opening it lets through: the same offsets as with the rule switched off
    (every start-model score sure alone)."""
    main = {0.5: 0.45, 1.0: 0.6, 8.0: 0.42}  # window end -> the main model's siren score (else 0.1)
    sure = {0.75, 1.0, 4.25, 4.5, 8.0}  # where the start model is sure of the siren (0.9, else 0.1)

    def starts() -> list[tuple[float, str]]:
        det, out = make(fast_start_threshold=0.8), []
        for k in range(1, 17):
            check, window = HOP * k - HOP / 2, HOP * k
            out += det.fast_start(check, row(siren=0.9 if check in sure else 0.1))
            out += det.update(window, row(siren=main.get(window, 0.1)), row(siren=0.9 if window in sure else 0.1))
        return [(e.start_offset_s, e.opened_by) for e in out if e.type == "start"]

    with_rule = starts()
    monkeypatch.setattr("monitor.detector.FAST_START_SURE", 0.0)
    without = starts()
    # without the rule the start model also opened the siren at 4.25 s with the main model at 0.1
    # (a short false alarm: it ended with its start window); the backed openings are where they were
    assert without == [(0.75, "start_model"), (4.25, "start_model"), (8.0, "start_model")]
    assert with_rule == [(0.75, "start_model"), (8.0, "start_model")]


@pytest.mark.parametrize("value", [0.0, -0.1, 1.5])
def test_fast_start_threshold_out_of_range_is_refused(value, tmp_path):
    with pytest.raises(ValueError, match="fast_start_threshold"):
        make(fast_start_threshold=value)
    cfg = tmp_path / "c.yaml"
    cfg.write_text(f"detection:\n  fast_start_threshold: {value}\n")
    with pytest.raises(ConfigError, match="detection.fast_start_threshold"):
        load_config(cfg)


def test_fast_start_is_on_by_default_where_the_bundle_has_a_start_model(tiny_bundle):
    default = Config().detection
    assert default.fast_start_threshold == 0.9
    assert fast_start_on(load_bundle(need_shipped_model()), default)
    # a bundle trained without a start model runs without fast start, quietly...
    assert not fast_start_on(load_bundle(tiny_bundle), default)
    assert start_runner_for(load_bundle(tiny_bundle), default) is None
    # ...unless the config asks for it: then open_start_model refuses it (below)
    assert fast_start_on(load_bundle(tiny_bundle), _fast().detection)
    off = Config()
    off.detection.fast_start_threshold = None
    assert not fast_start_on(load_bundle(need_shipped_model()), off.detection)


# -- the start model in a bundle ------------------------------------------------------------------


def _fast(threshold: float | None = 0.8) -> Config:
    cfg = Config()
    cfg.detection.fast_start_threshold = threshold
    return cfg


def test_shipped_bundle_names_its_start_model():
    bundle = load_bundle(need_shipped_model())
    assert bundle.start_model == "urban10_start"
    runner = open_start_model(bundle, 1, 0.5)
    assert runner.bundle.labels == bundle.labels
    assert runner.bundle.window_seconds == 1.0
    scores = runner.predict(np.full((runner.bundle.window_frames, 64), -60.0, dtype=np.float32))
    assert scores.shape == (len(bundle.labels),) and 0.99 < scores.sum() < 1.01
    # nothing is opened while fast start is off
    assert start_runner_for(bundle, _fast(None).detection) is None


def _copy_bundle(src: Path, dst_dir: Path) -> Path:
    for f in src.parent.glob(src.name + ".*"):
        if f.suffix in (".json", ".tflite"):
            shutil.copy(f, dst_dir / f.name)
    return dst_dir / src.name


def test_a_start_model_that_does_not_fit_is_refused(tmp_path):
    shipped = need_shipped_model()
    main = _copy_bundle(shipped, tmp_path)
    start = _copy_bundle(shipped.parent / "urban10_start", tmp_path)
    assert open_start_model(load_bundle(main)) is not None
    data = json.loads(start.with_suffix(".json").read_text())
    data["labels"] = list(reversed(data["labels"]))
    start.with_suffix(".json").write_text(json.dumps(data))
    with pytest.raises(BundleError, match="labels differ"):
        open_start_model(load_bundle(main))
    start.with_suffix(".tflite").unlink()
    with pytest.raises(BundleError, match="not found"):
        open_start_model(load_bundle(main))
    data = json.loads(main.with_suffix(".json").read_text())
    del data["start_model"]
    main.with_suffix(".json").write_text(json.dumps(data))
    with pytest.raises(BundleError, match="fast_start_threshold is set but the bundle names no start model"):
        start_runner_for(load_bundle(main), _fast().detection)


def _pair_with_a_fold(models: Path) -> tuple[Path, Path, Path]:
    """Copies of the shipped bundle, its start model and each one's fold 1 in `models`:
    (main, start, main's fold 1)."""
    shipped = need_shipped_model()
    (models / "urban10_cv").mkdir(parents=True)
    (models / "urban10_start_cv").mkdir()
    main = _copy_bundle(shipped, models)
    start = _copy_bundle(shipped.parent / "urban10_start", models)
    fold_main = _copy_bundle(shipped.parent / "urban10_cv" / "fold1", models / "urban10_cv")
    _copy_bundle(shipped.parent / "urban10_start_cv" / "fold1", models / "urban10_start_cv")
    return main, start, fold_main


def test_attach_start_names_it_in_the_bundle_and_its_folds(tmp_path):
    main, start, fold_main = _pair_with_a_fold(tmp_path / "models")
    for b in (main, fold_main):
        data = json.loads(b.with_suffix(".json").read_text())
        data.pop("start_model", None)
        b.with_suffix(".json").write_text(json.dumps(data))
    done = attach_start(main, start)
    assert [(p.name, ref) for p, ref in done] == [
        ("urban10.json", "urban10_start"),
        ("fold1.json", "../urban10_start_cv/fold1"),
    ]
    assert open_start_model(load_bundle(fold_main)).bundle.name == "fold1"


def test_attach_start_writes_the_start_models_weight_into_the_bundle_and_its_folds(tmp_path):
    main, start, fold_main = _pair_with_a_fold(tmp_path)
    attach_start(main, start, start_weight=0.25)
    for b in (main, fold_main):
        assert load_bundle(b).detection_defaults["start_model_weight"] == 0.25
    attach_start(main, start)  # 0: none, and the key is gone
    for b in (main, fold_main):
        assert "start_model_weight" not in load_bundle(b).detection_defaults
    before = main.with_suffix(".json").read_text()
    with pytest.raises(ValueError, match=r"--start-weight must be in \[0, 0.9\], got 1"):
        attach_start(main, start, start_weight=1.0)
    assert main.with_suffix(".json").read_text() == before  # nothing written


def test_attach_start_writes_the_threshold_its_start_model_was_calibrated_for(tmp_path):
    """How sure a start model must be to open an event is a calibration of that model: the bundle
    carries it, and a config that is silent takes it (one that writes its own keeps its own)."""
    main, start, fold_main = _pair_with_a_fold(tmp_path)
    attach_start(main, start, start_weight=0.5, fast_start_threshold=0.8)
    for b in (main, fold_main):
        assert load_bundle(b).detection_defaults == {"start_model_weight": 0.5, "fast_start_threshold": 0.8}
    silent = DetectionConfig()
    silent.apply_bundle_defaults(load_bundle(main).detection_defaults)
    assert silent.fast_start_threshold == 0.8
    written = parse_config({"detection": {"fast_start_threshold": 0.9}}).detection
    written.apply_bundle_defaults(load_bundle(main).detection_defaults)
    assert written.fast_start_threshold == 0.9
    attach_start(main, start, start_weight=0.5)  # none given: the key is gone, the daemon's 0.9 applies
    assert "fast_start_threshold" not in load_bundle(main).detection_defaults
    with pytest.raises(ValueError, match=r"--fast-start-threshold must be in \[0.01, 1\], got 0"):
        attach_start(main, start, fast_start_threshold=0.0)


def test_attach_start_refuses_a_start_model_with_other_labels(tmp_path):
    shipped = need_shipped_model()
    main = _copy_bundle(shipped, tmp_path)
    start = _copy_bundle(shipped.parent / "urban10_start", tmp_path)
    data = json.loads(start.with_suffix(".json").read_text())
    data["labels"] = list(reversed(data["labels"]))
    start.with_suffix(".json").write_text(json.dumps(data))
    before = main.with_suffix(".json").read_text()
    with pytest.raises(BundleError, match="labels differ"):
        attach_start(main, start)
    assert main.with_suffix(".json").read_text() == before  # nothing written


# -- through the pipeline and the daemon ----------------------------------------------------------


class _Heard:
    """Wraps a runner and keeps every window it is given: what the start model heard, and when."""

    def __init__(self, runner) -> None:
        self.runner, self.bundle, self.windows = runner, runner.bundle, []

    def predict(self, window: np.ndarray) -> np.ndarray:
        self.windows.append(window.copy())
        return self.runner.predict(window)


def _through(pipe: Pipeline, audio: np.ndarray, block: int = 1600) -> list:
    return [r for i in range(0, len(audio), block) for r in pipe.process(audio[i : i + block])]


def test_the_start_model_is_also_checked_half_a_hop_after_each_window():
    bundle, runner = open_model(need_shipped_model(), 1, 0.5)
    cfg = Config()
    cfg.detection.apply_bundle_defaults(bundle.detection_defaults)  # as the daemon does: 0.75, weight 0.5
    start = start_runner_for(bundle, cfg.detection)
    assert isinstance(start, StreamingRunner)  # the shipped start model steps by a quarter second
    heard, heard_main = _Heard(start), _Heard(runner)
    pipe = Pipeline(bundle, heard_main, cfg.detection, start_runner=heard)
    results = _through(pipe, load_audio(DEMO))
    windows = [r for r in results if r.kind == "window"]
    checks = [r for r in results if r.kind == "start_check"]
    assert len(windows) == pipe.stats.windows == 66  # the windows of a run without fast start
    assert len(checks) == 66  # one a quarter second before each window
    offsets = [r.end_offset_s for r in results]
    assert np.allclose(np.diff(offsets), 0.25) and results[0].kind == "start_check"
    # at a window end the start model hears that window's newest second
    start_frames = start.bundle.window_frames
    heard_at = [r for r in results if r.start_scores is not None]  # not level-gated
    at_windows = [h for h, r in zip(heard.windows, heard_at, strict=True) if r.kind == "window"]
    assert all(np.array_equal(h, w[-start_frames:]) for h, w in zip(at_windows, heard_main.windows, strict=True))
    # the demo's gun shot is opened at a check, a quarter second before the next window, by the
    # start model (0.82, backed by the main model): a quarter second saved by the check
    (gun,) = [e for c in checks for e in c.events if e.label == "gun_shot"]
    assert (gun.type, gun.opened_by, round(gun.start_offset_s % 0.5, 2)) == ("start", "start_model", 0.24)
    assert not [e for w in windows for e in w.events if e.label == "gun_shot" and e.type == "start"]
    # after a gap the checks go on in step with the windows
    pipe.gap(8000)
    after = _through(pipe, load_audio(DEMO)[:32000])
    assert [r.kind for r in after[:3]] == ["start_check", "window", "start_check"]
    assert np.allclose(np.diff([r.end_offset_s for r in after]), 0.25)


def test_fast_start_turned_on_mid_stream_checks_once_the_start_window_has_filled():
    """What a SIGHUP does: the running pipeline gets the start model, no gap in the audio."""
    bundle, runner = open_model(need_shipped_model(), 1, 0.5)
    audio = load_audio(DEMO)
    pipe = Pipeline(bundle, runner, _fast(None).detection)
    before = _through(pipe, audio[: 5 * 16000])
    cfg = _fast(0.9)
    pipe.apply_detection_config(cfg.detection)
    pipe.set_start_runner(start_runner_for(bundle, cfg.detection))
    after = _through(pipe, audio[5 * 16000 : 8 * 16000])
    assert all(r.kind == "window" for r in before)
    kinds = [r.kind for r in after]
    # the first second has no start window of its own: windows only, the start model on their newest second
    assert kinds[:2] == ["window", "window"] and kinds[-2:] == ["start_check", "window"]
    assert all(r.start_scores is not None for r in after)
    assert np.allclose(np.diff([r.end_offset_s for r in after if r.kind == "start_check"]), 0.5)
    pipe.set_start_runner(None)  # and off again
    assert all(r.kind == "window" for r in _through(pipe, audio[8 * 16000 : 10 * 16000]))


def test_no_checks_between_windows_when_fast_start_is_off_or_the_hop_is_odd():
    bundle, runner = open_model(need_shipped_model(), 1, 0.5)
    audio = load_audio(DEMO)[: 5 * 16000]
    off = Pipeline(bundle, runner, _fast(None).detection, start_runner=None)
    assert all(r.kind == "window" for r in _through(off, audio))
    cfg = _fast(0.9)
    cfg.detection.hop_seconds = 0.33  # 33 frames: no half-hop frame, the start model runs at windows only
    odd = Pipeline(bundle, runner, cfg.detection, start_runner=start_runner_for(bundle, cfg.detection))
    results = _through(odd, audio)
    assert all(r.kind == "window" for r in results)
    assert all(r.start_scores is not None for r in results)


def test_fast_start_answers_the_demo_recording_sooner():
    bundle, runner = open_model(need_shipped_model(), 1, 0.5)
    plain = classify_file(DEMO, bundle, runner, _fast(None), warm_start=True)
    cfg = _fast(0.8)
    fast = classify_file(DEMO, bundle, runner, cfg, warm_start=True,
                         start_runner=start_runner_for(bundle, cfg.detection))  # fmt: skip

    def first_starts(result) -> dict[str, float]:
        out: dict[str, float] = {}
        for e in result.events:
            out.setdefault(e["label"], e["start_s"])
        return out

    before, after = first_starts(plain), first_starts(fast)
    assert set(before) <= set(after)  # every sound found without it is found with it
    assert all(after[label] <= before[label] for label in before)
    assert any(after[label] < before[label] for label in before)


@pytest.mark.integration  # runs the daemon
@pytest.mark.parametrize("detection, shown", [
    ({}, "fast start 0.75 (weight 0.5), "),
    ({"fast_start_threshold": 0.9}, "fast start 0.9 (weight 0.5), "),
    ({"start_model_weight": 0}, "fast start 0.75, "),
    ({"classes": {"gun_shot": {"fast_start_alone": True}}}, "fast start 0.75 (weight 0.5; alone: gun_shot), "),
])  # fmt: skip
def test_run_with_fast_start_logs_it_and_detects(detection, shown, tmp_path):
    """The shipped bundle runs fast start by default at its own threshold (0.75, in its JSON), or
    at the threshold the config sets; the start line names the start model's weight in each
    window's score (the bundle's 0.5, or the config's) and the labels it may open alone: none by
    the shipped bundle's measurement (gun shots opened alone: 31 of 35 right, under 95 %),
    gun_shot when the config says so."""
    cfg = write_config(tmp_path / "c.yaml", detection=detection)
    d = run_to_end("--source", str(DEMO), "--pace", "fast", "--config", str(cfg), "--print",
                   "--model", str(need_shipped_model()))  # fmt: skip
    assert d.proc.returncode == 0, d.text()
    assert shown in d.text()
    printed = "\n".join(d.out)
    assert "START siren" in printed and "START dog_bark" in printed


@pytest.mark.integration  # runs the daemon
def test_a_bundle_without_start_model_runs_without_fast_start_by_default(tiny_bundle, tmp_path):
    d = run_to_end("--source", str(DEMO), "--pace", "fast", "--config", str(write_config(tmp_path / "c.yaml")),
                   "--model", str(tiny_bundle))  # fmt: skip
    assert d.proc.returncode == 0, d.text()
    assert "fast start" not in d.text() and "ERROR" not in d.text()


@pytest.mark.integration  # runs the daemon
def test_fast_start_with_a_bundle_without_start_model_is_one_line(tiny_bundle, tmp_path):
    cfg = write_config(tmp_path / "c.yaml", detection={"fast_start_threshold": 0.8})
    d = run_to_end("--source", str(DEMO), "--pace", "fast", "--config", str(cfg), "--model", str(tiny_bundle))
    assert d.proc.returncode != 0
    errors = [line for line in d.log if line.strip()]
    assert len(errors) == 1 and "fast_start_threshold is set but the bundle names no start model" in errors[0]


@pytest.mark.integration  # runs the daemon
def test_sighup_turns_fast_start_on(tmp_path):
    cfg = write_config(tmp_path / "c.yaml", detection={"fast_start_threshold": None})
    d = DaemonProcess("--source", str(DEMO), "--pace", "realtime", "--config", str(cfg),
                      "--model", str(need_shipped_model()))  # fmt: skip
    try:
        d.wait_log("first window result", timeout=20)
        write_config(cfg, detection={"fast_start_threshold": 0.8})
        d.signal(signal.SIGHUP)
        d.wait_log("reload: fast start on at 0.8")
        d.wait_log("reload: configuration applied")
        d.signal(signal.SIGTERM)
        assert d.wait(10) == 0
    finally:
        d.kill()


@pytest.mark.integration  # runs the daemon
def test_sighup_asking_fast_start_of_a_bundle_without_one_keeps_the_running_config(tiny_bundle, tmp_path):
    cfg = write_config(tmp_path / "c.yaml")
    d = DaemonProcess("--source", str(DEMO), "--pace", "realtime", "--config", str(cfg), "--model", str(tiny_bundle))
    try:
        d.wait_log("first window result", timeout=20)
        write_config(cfg, detection={"fast_start_threshold": 0.8})
        d.signal(signal.SIGHUP)
        assert "names no start model" in d.wait_log("reload refused")
        assert d.proc.poll() is None
        d.signal(signal.SIGTERM)
        assert d.wait(10) == 0
    finally:
        d.kill()


def test_a_class_threshold_above_the_start_models_score_keeps_the_class_quiet():
    """A threshold of 1.0 (set from Home Assistant, say) silences the class for the start model too."""
    det = make(fast_start_threshold=0.7, thresholds={**{label: 0.5 for label in LABELS}, "siren": 1.0})
    # the main model's 0.9 backs a siren (release level 0.8) without reaching its threshold 1.0
    assert det.update(0.5, row(siren=0.9, dog_bark=0.45), start_scores=row(siren=0.95)) == []
    assert det.fast_start(0.75, row(siren=0.99)) == []
    (start,) = det.fast_start(1.25, row(dog_bark=0.8))  # other classes keep their fast start
    assert (start.label, start.opened_by) == ("dog_bark", "start_model")


# -- a start check adds events only ---------------------------------------------------------------


def test_a_start_check_adds_events_only_clip_scores_and_windows_stay_the_main_models():
    """`soundmon classify` with fast start: the same windows and clip scores as without it (a start
    check is not a window), and the events the start model opened on top."""
    bundle, runner = open_model(need_shipped_model(), 1, 0.5)
    plain = classify_file(DEMO, bundle, runner, _fast(None))
    cfg = _fast(0.7)
    fast = classify_file(DEMO, bundle, runner, cfg, start_runner=start_runner_for(bundle, cfg.detection))
    assert (fast.windows, fast.label, fast.scores) == (plain.windows, plain.label, plain.scores)
    assert fast.events != plain.events


class _Kept:
    """A publisher stand-in that keeps the detection and scores messages the daemon publishes."""

    connected = True
    spool_depth = 0

    def __init__(self) -> None:
        self.messages: list[tuple[str, dict]] = []

    def publish_detection(self, payload: dict) -> None:
        self.messages.append(("detection", payload))

    def publish_scores(self, payload: dict) -> None:
        self.messages.append(("scores", payload))

    def set_state(self, label: str, on: bool) -> None:
        pass

    def set_config(self, values: dict) -> None:
        pass


def _daemon_on_demo(tmp_path: Path, threshold: float | None):
    """The daemon's own feeding of the demo recording (no source, no broker): what it publishes."""
    from monitor.daemon import Daemon

    detection = {"fast_start_threshold": threshold, "scores_interval": 0.1}  # less than a check apart
    cfg = load_config(write_config(tmp_path / f"{threshold}.yaml", None, tmp_path / f"{threshold}", detection=detection))
    bundle, runner = open_model(need_shipped_model(), 1, 0.5)
    daemon = Daemon(cfg, bundle, runner, source=str(DEMO), publisher=_Kept())
    daemon._stream_start_wall = 1000.0  # payload times from offsets alone
    audio = load_audio(DEMO)
    for i in range(0, len(audio), 1600):
        daemon._feed(audio[i : i + 1600])
    daemon._feed_pending()
    return daemon


def test_the_daemon_publishes_a_start_checks_events_only(tmp_path):
    """With fast start the daemon publishes each start check's START, if any; its scores
    messages, its level and its first window are the windows' alone, as without fast start."""
    plain, fast = _daemon_on_demo(tmp_path, None), _daemon_on_demo(tmp_path, 0.7)

    def scores(d):
        return [p for kind, p in d.publisher.messages if kind == "scores"]

    assert len(scores(fast)) == 66 and scores(fast) == scores(plain)
    assert (fast._level_sum, fast._level_n) == (plain._level_sum, plain._level_n)
    assert fast.timings.first_window_audio_s == plain.timings.first_window_audio_s
    opened = [p["opened_by"] for kind, p in fast.publisher.messages if kind == "detection" and p["type"] == "start"]
    assert "start_model" in opened
