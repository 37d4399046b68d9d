"""A bundle's own detection defaults (its JSON's "detection": the hop and smoothing its thresholds
were calibrated with): used where the config does not set them, refused with one line when malformed."""

from __future__ import annotations

import pytest

from monitor.bundle import load_bundle
from monitor.config import DetectionConfig, parse_config
from monitor.errors import BundleError
from tests.daemon_helpers import run_to_end, write_config
from tests.paths import DEMO
from tests.test_bundle_runner import copy_bundle

ONE_WINDOW_A_SECOND = {"hop_seconds": 1.0, "smoothing_windows": 1}


def with_detection(section):
    def edit(data: dict) -> None:
        data["detection"] = section

    return edit


def test_a_bundle_declares_its_detection_defaults(tiny_bundle, tmp_path):
    bundle = load_bundle(copy_bundle(tiny_bundle, tmp_path, with_detection(ONE_WINDOW_A_SECOND)))
    assert bundle.detection_defaults == ONE_WINDOW_A_SECOND
    assert bundle.to_json_dict()["detection"] == ONE_WINDOW_A_SECOND
    assert load_bundle(tiny_bundle).detection_defaults == {}  # none declared: the config's defaults


@pytest.mark.parametrize(
    "section, message",
    [
        ({"hop": 1.0}, "may set only ['class_smoothing_windows', 'fast_start_alone', 'fast_start_threshold', "
                       "'hop_seconds', 'smoothing_windows', 'start_model_weight'], not 'hop'"),
        ({"fast_start_threshold": 0}, "'detection.fast_start_threshold' must be a float in [0.01, 1]"),
        ({"start_model_weight": 1.0}, "'detection.start_model_weight' must be a float in [0, 0.9]"),
        ({"class_smoothing_windows": {"siren": 0}}, "must give each label an integer in [1, 100]; bad: ['siren']"),
        ({"class_smoothing_windows": {"owl": 5}}, "names labels the model does not have: ['owl']"),
        ({"class_smoothing_windows": []}, "must be a non-empty object of label: windows"),
        ({"hop_seconds": 0}, "'detection.hop_seconds' must be a float in [0.01, 10]"),
        ({"smoothing_windows": 1.5}, "'detection.smoothing_windows' must be a int in [1, 100]"),
        ({"smoothing_windows": True}, "'detection.smoothing_windows' must be a int"),
        ({}, "'detection' must be a non-empty object"),
        ("fast", "'detection' must be a non-empty object"),
    ],
)
def test_a_malformed_detection_section_is_refused_with_one_line(tiny_bundle, tmp_path, section, message):
    with pytest.raises(BundleError) as err:
        load_bundle(copy_bundle(tiny_bundle, tmp_path, with_detection(section)))
    assert message in str(err.value) and "\n" not in str(err.value)


def test_the_bundles_defaults_apply_only_where_the_config_is_silent():
    silent = DetectionConfig()
    silent.apply_bundle_defaults(ONE_WINDOW_A_SECOND)
    assert (silent.hop_seconds, silent.smoothing_windows) == (1.0, 1)

    written = parse_config({"detection": {"hop_seconds": 0.5}}).detection
    written.apply_bundle_defaults(ONE_WINDOW_A_SECOND)
    assert (written.hop_seconds, written.smoothing_windows) == (0.5, 1)  # the file's hop wins

    plain = DetectionConfig()
    plain.apply_bundle_defaults({})
    assert (plain.hop_seconds, plain.smoothing_windows) == (0.5, 3)


def test_a_bundle_declares_its_start_models_weight_and_a_written_one_wins():
    silent = DetectionConfig()
    silent.apply_bundle_defaults({"start_model_weight": 0.3})
    assert silent.start_model_weight == 0.3
    written = parse_config({"detection": {"start_model_weight": 0}}).detection
    written.apply_bundle_defaults({"start_model_weight": 0.3})
    assert written.start_model_weight == 0.0  # 0 written: the main model's scores alone
    assert DetectionConfig().start_model_weight == 0.0  # a bundle that names none


def test_a_bundle_declares_its_own_smoothing_for_some_labels(tiny_bundle, tmp_path):
    steady = {"smoothing_windows": 3, "class_smoothing_windows": {"air_conditioner": 7, "engine_idling": 7}}
    bundle = load_bundle(copy_bundle(tiny_bundle, tmp_path, with_detection(steady)))
    assert bundle.class_smoothing_windows == {"air_conditioner": 7, "engine_idling": 7}
    assert bundle.detection_defaults == {"smoothing_windows": 3}
    assert bundle.to_json_dict()["detection"] == steady


def test_a_labels_smoothing_comes_from_its_class_then_the_bundle_then_the_one_number():
    labels = ["air_conditioner", "dog_bark", "siren"]
    bundle_own = {"air_conditioner": 7}
    silent = DetectionConfig()
    assert silent.class_smoothing(bundle_own, labels) == {"air_conditioner": 7, "dog_bark": 3, "siren": 3}

    # a number written for every label is meant for every label: the bundle's own N steps back
    written = parse_config({"detection": {"smoothing_windows": 5, "classes": {"siren": {"smoothing_windows": 1}}}}).detection
    written.apply_bundle_defaults({"smoothing_windows": 3})
    assert written.class_smoothing(bundle_own, labels) == {"air_conditioner": 5, "dog_bark": 5, "siren": 1}

    # the bundle's global default does not count as written: its per-label values still apply
    calibrated = parse_config({"detection": {"classes": {"dog_bark": {"smoothing_windows": 2}}}}).detection
    calibrated.apply_bundle_defaults({"smoothing_windows": 3})
    assert calibrated.class_smoothing(bundle_own, labels) == {"air_conditioner": 7, "dog_bark": 2, "siren": 3}


def test_the_settings_a_file_overrides_are_named_for_the_start_log():
    """A config.yaml copied before 2026-12-05 wrote out the hop and the smoothing, overriding the
    bundle's calibration unseen: the daemon now names each override once at start."""
    bundle_defaults, steady = {"hop_seconds": 0.975, "smoothing_windows": 1}, {"air_conditioner": 7, "jackhammer": 7}
    copied = parse_config({"detection": {"hop_seconds": 0.5, "smoothing_windows": 3}}).detection
    copied.apply_bundle_defaults(bundle_defaults)
    assert copied.overridden_calibration(bundle_defaults, steady) == [
        "detection.hop_seconds 0.5 (the bundle's: 0.975)",
        "detection.smoothing_windows 3 (the bundle's: 1)",
        "detection.smoothing_windows 3 for every label (the bundle's: air_conditioner 7, jackhammer 7)",
    ]
    silent = DetectionConfig()
    silent.apply_bundle_defaults(bundle_defaults)
    assert silent.overridden_calibration(bundle_defaults, steady) == []
    # the same value as the bundle's, or a label's own N, overrides nothing
    same = parse_config({"detection": {"hop_seconds": 0.975, "smoothing_windows": 7,
                                       "classes": {"jackhammer": {"smoothing_windows": 3}}}}).detection  # fmt: skip
    assert same.overridden_calibration({"hop_seconds": 0.975}, steady) == []
    # fast start turned off in the file, against the bundle's calibrated threshold
    off = parse_config({"detection": {"fast_start_threshold": None}}).detection
    off.apply_bundle_defaults({"fast_start_threshold": 0.8})
    assert off.fast_start_threshold is None
    assert off.overridden_calibration({"fast_start_threshold": 0.8}, {}) == [
        "detection.fast_start_threshold null (the bundle's: 0.8)"]


@pytest.mark.integration  # runs the daemon
@pytest.mark.parametrize("detection, shown", [({}, "hop 1.00 s"), ({"hop_seconds": 0.5}, "hop 0.50 s")])
def test_the_daemon_runs_at_the_bundles_hop_unless_the_config_sets_one(tiny_bundle, tmp_path, detection, shown):
    model = copy_bundle(tiny_bundle, tmp_path, with_detection(ONE_WINDOW_A_SECOND))
    cfg = write_config(tmp_path / "c.yaml", detection=detection)
    d = run_to_end("--source", str(DEMO), "--pace", "fast", "--config", str(cfg), "--model", str(model))
    assert d.proc.returncode == 0, d.text()
    assert shown in d.text()
    overrides = "config overrides model" in d.text()
    assert overrides == bool(detection)
    if overrides:
        assert "detection.hop_seconds 0.5 (the bundle's: 1); leave the key out to use the bundle's" in d.text()
