"""Control commands over MQTT, as pure logic: what is accepted, what is refused, what wins."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from monitor.config import ClassConfig, DetectionConfig
from monitor.control import Command, CommandError, Overrides, parse_command

BASE = "soundmon/pi"
LABELS = ["dog_bark", "siren", "gun_shot"]


def test_threshold_and_enabled_commands() -> None:
    assert parse_command(BASE, f"{BASE}/set/siren/threshold", b"0.35", LABELS) == Command("siren", "threshold", 0.35)
    assert parse_command(BASE, f"{BASE}/set/siren/threshold", b" 1 ", LABELS) == Command("siren", "threshold", 1.0)
    assert parse_command(BASE, f"{BASE}/set/siren/threshold", b"", LABELS) == Command("siren", "threshold", None)
    assert parse_command(BASE, f"{BASE}/set/dog_bark/enabled", b"OFF", LABELS) == Command("dog_bark", "enabled", False)
    assert parse_command(BASE, f"{BASE}/set/dog_bark/enabled", b"on", LABELS) == Command("dog_bark", "enabled", True)
    assert parse_command(BASE, f"{BASE}/set/dog_bark/enabled", b"", LABELS) == Command("dog_bark", "enabled", None)


@pytest.mark.parametrize(
    ("topic", "payload", "why"),
    [
        (f"{BASE}/set/siren/threshold", b"1.5", r"outside \[0, 1\]"),
        (f"{BASE}/set/siren/threshold", b"-0", None),  # -0.0 is a valid 0
        (f"{BASE}/set/siren/threshold", b"nan", r"outside \[0, 1\]"),
        (f"{BASE}/set/siren/threshold", b"inf", r"outside \[0, 1\]"),
        (f"{BASE}/set/siren/threshold", b"high", "not a number"),
        (f"{BASE}/set/siren/threshold", b"\xff\xfe", "not UTF-8"),
        (f"{BASE}/set/siren/threshold", b"0" * 100_000, "payload longer than 64 bytes"),
        (f"{BASE}/set/siren/enabled", b"yes", "not ON or OFF"),
        (f"{BASE}/set/cat/enabled", b"ON", "no watched label"),
        (f"{BASE}/set/../../etc/passwd/threshold", b"0.5", "expected"),
        (f"{BASE}/set/siren/threshold/x", b"0.5", "expected"),
        (f"{BASE}/set/siren/colour", b"red", "expected"),
        ("other/set/siren/threshold", b"0.5", "not a control topic"),
    ],
)
def test_garbage_is_refused_with_one_line(topic: str, payload: bytes, why: str | None) -> None:
    if why is None:
        assert parse_command(BASE, topic, payload, LABELS).value == 0.0
        return
    with pytest.raises(CommandError, match=why) as info:
        parse_command(BASE, topic, payload, LABELS)
    assert "\n" not in str(info.value) and len(str(info.value)) < 200


def test_mqtt_value_beats_config_beats_bundle_default() -> None:
    detection = DetectionConfig(classes={"siren": ClassConfig(threshold=0.6)})
    overrides = Overrides(Path("unused"))
    bundle = {"siren": 0.5, "dog_bark": 0.5, "gun_shot": 0.5}
    assert detection.thresholds(bundle, LABELS)["siren"] == 0.6
    assert overrides.origin("siren", "threshold", detection) == "config"
    assert overrides.origin("dog_bark", "threshold", detection) == "model"

    overrides.set(Command("siren", "threshold", 0.3))
    overrides.set(Command("dog_bark", "enabled", False))
    applied = overrides.apply(detection)
    assert applied.thresholds(bundle, LABELS)["siren"] == 0.3
    assert applied.enabled_labels(LABELS) == {"siren", "gun_shot"}
    assert overrides.origin("siren", "threshold", detection) == "mqtt"
    assert detection.classes["siren"].threshold == 0.6  # the configured value is untouched

    # an empty threshold payload returns to the configured value
    assert overrides.set(Command("siren", "threshold", None)) is True
    assert overrides.apply(detection).thresholds(bundle, LABELS)["siren"] == 0.6
    assert overrides.set(Command("siren", "threshold", None)) is False  # nothing to change
    # so does an empty enabled payload
    detection = DetectionConfig(classes={"dog_bark": ClassConfig(enabled=False)})
    assert overrides.set(Command("dog_bark", "enabled", True)) is True
    assert overrides.apply(detection).enabled_labels(LABELS) == set(LABELS)
    assert overrides.set(Command("dog_bark", "enabled", None)) is True
    assert overrides.apply(detection).enabled_labels(LABELS) == {"siren", "gun_shot"}
    assert overrides.origin("dog_bark", "enabled", detection) == "config"


def test_values_persist_and_a_broken_file_is_no_reason_not_to_run(tmp_path: Path) -> None:
    store = Overrides.in_state_dir(tmp_path)
    store.set(Command("siren", "threshold", 0.25))
    store.set(Command("gun_shot", "enabled", False))
    store.save()
    assert not list(tmp_path.glob(".overrides-*"))  # the temporary file was renamed

    again = Overrides.in_state_dir(tmp_path)
    assert again.load(LABELS) is None
    assert (again.thresholds, again.enabled) == ({"siren": 0.25}, {"gun_shot": False})
    # a label the new model does not have, and values a hand edit broke, are dropped
    assert again.load(["siren"]) is None and again.enabled == {}
    store.path.write_text(json.dumps({"thresholds": {"siren": 7, "dog_bark": "x"}, "enabled": {"siren": 1}}))
    assert again.load(LABELS) is None and (again.thresholds, again.enabled) == ({}, {})
    store.path.write_text("{not json")
    problem = again.load(LABELS)
    assert problem is not None and "unreadable" in problem and (again.thresholds, again.enabled) == ({}, {})


@pytest.mark.parametrize("text", [
    '{"thresholds": ["siren"]}',  # a section that is not an object
    '{"enabled": 1}',
    '{"thresholds": {"siren": 1' + "0" * 400 + "}}",  # a number too large for a float
    '{"thresholds": {"siren": ' + "9" * 5000 + "}}",  # more digits than Python parses
])  # fmt: skip
def test_a_malformed_file_of_any_shape_is_reported_not_raised(tmp_path: Path, text: str) -> None:
    store = Overrides.in_state_dir(tmp_path)
    store.path.write_text(text)
    problem = store.load(LABELS)
    assert (store.thresholds, store.enabled) == ({}, {})
    assert problem is None or "starting without values set over MQTT" in problem


def test_values_of_another_models_labels_survive_a_switch_and_back(tmp_path: Path) -> None:
    """Switched OFF under model A, a class stays OFF after a while on model B (which lacks it)
    and a command there: the file keeps what B cannot apply."""
    store = Overrides.in_state_dir(tmp_path)
    store.set(Command("gun_shot", "enabled", False))
    store.set(Command("dog_bark", "threshold", 0.8))
    store.save()
    on_b = Overrides.in_state_dir(tmp_path)
    assert on_b.load(["siren", "car_horn"]) is None and (on_b.thresholds, on_b.enabled) == ({}, {})
    on_b.set(Command("siren", "threshold", 0.3))
    on_b.save()
    back = Overrides.in_state_dir(tmp_path)
    assert back.load(LABELS) is None
    assert (back.thresholds, back.enabled) == ({"siren": 0.3, "dog_bark": 0.8}, {"gun_shot": False})
    moved = back.moved_to(tmp_path / "elsewhere" / "overrides.json")
    moved.save()
    assert moved.load(["car_horn"]) is None and moved.save() is None
    assert json.loads(moved.path.read_text())["enabled"] == {"gun_shot": False}
