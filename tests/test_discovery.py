"""Home Assistant discovery payloads (monitor/discovery.py): pure functions, no broker.

The same payloads are checked against a real Home Assistant core in test_homeassistant.py
and test_homeassistant_control.py; these are the cheap checks of their shape, plus their
agreement with the command parser (monitor/control.py) and the config's topic list, and the
Top sensors' templates rendered by Home Assistant's own template engine (when its venv exists).
"""

from __future__ import annotations

import ast
import json
import re
import subprocess

import pytest

from monitor import control, discovery
from monitor.config import MqttConfig
from tests import homeassistant as hass
from tests.daemon_helpers import LABELS
from tests.paths import REPO

CFG = MqttConfig(node_id="pi-kitchen", base_topic="house/sound")
STATS_KEYS = {"uptime", "dropped_samples", "spool_depth", "inference_ms_p95", "input_state"}
TOP_KEYS = {"top_sound", "top_score"}
NODE_SENSORS = 1 + len(STATS_KEYS) + len(TOP_KEYS)  # level, stats, top


def with_control(cfg: MqttConfig, on: bool) -> MqttConfig:
    return cfg.model_copy(update={"control": on})


def by_component(msgs: list[tuple[str, dict | None]], component: str) -> dict[str, dict | None]:
    """{object id level of the topic: payload} of one component's messages."""
    return {t.split("/")[3]: p for t, p in msgs if t.split("/")[1] == component}


def daemon_stats_fields() -> set[str]:
    """The keys of the dict `monitor.payloads.stats_payload` returns (read from the source, no daemon)."""
    tree = ast.parse((REPO / "monitor" / "payloads.py").read_text())
    for node in ast.walk(tree):
        if isinstance(node, ast.FunctionDef) and node.name == "stats_payload":
            for sub in ast.walk(node):
                if isinstance(sub, ast.Return) and isinstance(sub.value, ast.Dict):
                    return {k.value for k in sub.value.keys if isinstance(k, ast.Constant)}
    raise AssertionError("payloads.stats_payload returns no dict literal")


def messages() -> dict[str, dict | None]:
    return dict(discovery.discovery_messages(CFG, LABELS, None, "urban10", "1.2.3"))


def test_level_sensor_is_a_diagnostic_in_dbfs_without_a_device_class_that_rejects_it() -> None:
    topic, c = discovery.level_sensor_config(CFG, "urban10", "1.2.3")
    assert topic == "homeassistant/sensor/pi-kitchen/level/config"
    assert c["name"] == "Sound level" and c["unit_of_measurement"] == "dBFS"
    assert c["entity_category"] == "diagnostic" and c["state_class"] == "measurement"
    # HA's sound_pressure (dB, dBA) and signal_strength (dB, dBm) would refuse dBFS
    assert "device_class" not in c
    assert c["state_topic"] == "house/sound/level" and c["value_template"] == "{{ value_json.dbfs }}"
    assert c["unique_id"] == "soundmon_pi_kitchen_level" == c["object_id"]
    assert c["default_entity_id"] == "sensor.soundmon_pi_kitchen_level"
    assert messages()[topic] == c


def test_stats_sensors_read_fields_the_daemon_publishes_as_diagnostics_of_the_same_device() -> None:
    published = daemon_stats_fields() | {"spool_depth", "spool_dropped"}  # the publisher adds these
    configs = discovery.stats_sensor_configs(CFG, "urban10", "1.2.3")
    assert {t.split("/")[3] for t, _ in configs} == STATS_KEYS
    level = discovery.level_sensor_config(CFG, "urban10", "1.2.3")[1]
    fields = {}
    for topic, c in configs:
        key = topic.split("/")[3]
        assert topic == f"homeassistant/sensor/pi-kitchen/{key}/config"
        assert c["state_topic"] == "house/sound/stats"
        m = re.fullmatch(r"\{\{ value_json\.([a-z0-9_]+) \}\}", c["value_template"])
        assert m, c["value_template"]
        assert m[1] in published, f"{key}: the daemon's stats have no field {m[1]!r}"
        fields[key] = m[1]
        assert c["entity_category"] == "diagnostic"
        assert c["unique_id"] == f"soundmon_pi_kitchen_{key}" == c["object_id"]
        assert c["default_entity_id"] == f"sensor.soundmon_pi_kitchen_{key}"
        assert c["name"] and c["name"] != key
        for same in ("device", "availability_topic", "payload_available", "payload_not_available", "origin"):
            assert c[same] == level[same], same
        json.dumps(c)
    assert fields == {"uptime": "uptime_s", "dropped_samples": "dropped_samples",
                      "spool_depth": "spool_depth", "inference_ms_p95": "inference_ms_p95",
                      "input_state": "audio"}  # fmt: skip
    by_key = {t.split("/")[3]: c for t, c in configs}
    assert (by_key["uptime"]["device_class"], by_key["uptime"]["unit_of_measurement"]) == ("duration", "s")
    p95 = by_key["inference_ms_p95"]
    assert (p95["device_class"], p95["unit_of_measurement"], p95["state_class"]) == ("duration", "ms", "measurement")
    assert by_key["dropped_samples"]["state_class"] == "total_increasing"
    assert by_key["spool_depth"]["state_class"] == "measurement"
    # free text: no unit, no state class, no enum whose options a new state would break
    assert not {"unit_of_measurement", "state_class", "device_class"} & set(by_key["input_state"])


def test_discovery_messages_cover_labels_level_and_stats_with_unique_ids() -> None:
    msgs = discovery.discovery_messages(CFG, LABELS, {"siren"}, "urban10", "1.2.3")
    topics = [t for t, _ in msgs]
    # per label: binary sensor, threshold number, detection switch; per node: level, stats, top
    assert len(topics) == len(set(topics)) == 3 * len(LABELS) + NODE_SENSORS
    assert all(p is not None for _, p in msgs)  # control on (the default): nothing removed
    live = [p for _, p in msgs if p is not None]
    assert len({p["unique_id"] for p in live}) == len(live)
    assert len({p["default_entity_id"] for p in live}) == len(live)
    assert all(p["device"]["identifiers"] == ["soundmon_pi-kitchen"] for p in live)
    assert all(p["device"] == live[0]["device"] and p["origin"] == live[0]["origin"] for p in live)
    # the binary sensors are the primary entities: not diagnostics
    assert all("entity_category" not in p for t, p in msgs if p is not None and "/binary_sensor/" in t)


def test_threshold_number_and_detection_switch_command_what_the_daemon_parses() -> None:
    topic, n = discovery.threshold_number_config(CFG, "dog_bark", "urban10", "1.2.3")
    assert topic == "homeassistant/number/pi-kitchen/dog_bark_threshold/config"
    assert n["name"] == "Dog bark threshold"
    assert (n["min"], n["max"], n["step"], n["mode"]) == (0, 1, 0.01, "slider")
    assert n["entity_category"] == "config"
    assert n["command_topic"] == "house/sound/set/dog_bark/threshold"
    assert n["state_topic"] == "house/sound/config/dog_bark/threshold"
    assert n["unique_id"] == n["object_id"] == "soundmon_pi_kitchen_dog_bark_threshold"
    assert n["default_entity_id"] == "number.soundmon_pi_kitchen_dog_bark_threshold"
    # never optimistic (HA shows the daemon's echo), commands not retained (a retained one would
    # be applied again at every reconnect, over later changes)
    assert (n["optimistic"], n["retain"], n["qos"]) == (False, False, 1)

    topic, w = discovery.detection_switch_config(CFG, "dog_bark", "urban10", "1.2.3")
    assert topic == "homeassistant/switch/pi-kitchen/dog_bark_detection/config"
    assert w["name"] == "Dog bark detection"
    assert w["entity_category"] == "config"
    assert w["command_topic"] == "house/sound/set/dog_bark/enabled"
    assert w["state_topic"] == "house/sound/config/dog_bark/enabled"
    assert (w["payload_on"], w["payload_off"], w["state_on"], w["state_off"]) == ("ON", "OFF", "ON", "OFF")
    assert w["unique_id"] == w["object_id"] == "soundmon_pi_kitchen_dog_bark_detection"
    assert w["default_entity_id"] == "switch.soundmon_pi_kitchen_dog_bark_detection"
    assert (w["optimistic"], w["retain"], w["qos"]) == (False, False, 1)

    level = discovery.level_sensor_config(CFG, "urban10", "1.2.3")[1]
    for c in (n, w):
        for same in ("device", "availability_topic", "payload_available", "payload_not_available", "origin"):
            assert c[same] == level[same], same
        json.dumps(c)

    # What HA sends is a command the daemon's parser takes: HA formats a whole number without
    # ".0" (1.0 -> "1"), a fraction as is (0.35); the switch sends its payload_on/payload_off.
    base = CFG.base
    parse = control.parse_command
    assert parse(base, n["command_topic"], b"0.35", LABELS) == control.Command("dog_bark", "threshold", 0.35)
    assert parse(base, n["command_topic"], b"1", LABELS).value == 1.0
    assert parse(base, n["command_topic"], b"0", LABELS).value == 0.0
    assert parse(base, w["command_topic"], w["payload_on"].encode(), LABELS).value is True
    assert parse(base, w["command_topic"], w["payload_off"].encode(), LABELS).value is False
    # and the topics are the config's own list of what soundmon uses (monitor.topics checks those)
    used = set(CFG.topics("dog_bark"))
    assert {n["command_topic"], n["state_topic"], w["command_topic"], w["state_topic"]} <= used


def test_a_disabled_class_keeps_its_entities_and_its_binary_sensor_is_unavailable_while_off() -> None:
    """Control on: a class switched off in HA must be switchable on again from HA, and nothing
    the user attached to its entities may be lost: its switch, number and binary sensor stay;
    the binary sensor is unavailable (not `off`: nothing is listening) while the class is off."""
    msgs = discovery.discovery_messages(CFG, LABELS, set(LABELS) - {"siren"}, "urban10", "1.2.3")
    everything = discovery.discovery_messages(CFG, LABELS, None, "urban10", "1.2.3")
    assert msgs == everything  # switching a class changes no discovery config: no entity churn
    binary = by_component(msgs, "binary_sensor")
    assert set(binary) == set(LABELS)
    assert set(by_component(msgs, "number")) == {f"{x}_threshold" for x in LABELS}
    assert set(by_component(msgs, "switch")) == {f"{x}_detection" for x in LABELS}
    siren = binary["siren"]
    assert siren is not None
    # HA refuses availability_topic together with an availability list
    assert not {"availability_topic", "payload_available", "payload_not_available"} & set(siren)
    assert siren["availability_mode"] == "all"
    assert siren["availability"] == [
        {"topic": "house/sound/status", "payload_available": "online", "payload_not_available": "offline"},
        {"topic": "house/sound/config/siren/enabled", "payload_available": "ON", "payload_not_available": "OFF"},
    ]
    # ... the same echo the switch shows
    switch = by_component(msgs, "switch")["siren_detection"]
    assert switch is not None
    assert siren["availability"][1]["topic"] == switch["state_topic"]
    assert siren["availability"][1]["payload_available"] == switch["state_on"]


def test_without_control_no_number_or_switch_and_disabled_classes_have_no_entity() -> None:
    cfg = with_control(CFG, False)
    msgs = discovery.discovery_messages(cfg, LABELS, {"siren", "dog_bark"}, "urban10", "1.2.3")
    topics = [t for t, _ in msgs]
    assert len(topics) == len(set(topics)) == 3 * len(LABELS) + NODE_SENSORS
    # every number and switch removed (an empty retained config: gone from HA if it was there)
    assert set(by_component(msgs, "number").values()) == {None}
    assert set(by_component(msgs, "switch").values()) == {None}
    assert len(by_component(msgs, "number")) == len(by_component(msgs, "switch")) == len(LABELS)
    binary = by_component(msgs, "binary_sensor")
    assert {x for x, p in binary.items() if p is not None} == {"siren", "dog_bark"}
    # nothing to switch: available while the daemon is, as before
    assert binary["siren"]["availability_topic"] == "house/sound/status"
    assert "availability" not in binary["siren"]
    # the node's sensors are there whatever the control setting
    sensors = by_component(msgs, "sensor")
    assert set(sensors) == {"level"} | STATS_KEYS | TOP_KEYS and None not in sensors.values()
    # a publisher that does not subscribe to commands says so whatever the config says
    assert discovery.discovery_messages(CFG, LABELS, {"siren", "dog_bark"}, "urban10", "1.2.3", control=False) == msgs
    assert discovery.discovery_messages(cfg, LABELS, None, "urban10", "1.2.3", control=True) == (
        discovery.discovery_messages(CFG, LABELS, None, "urban10", "1.2.3")
    )


def test_removed_labels_lose_all_their_entities() -> None:
    for on in (True, False):
        msgs = discovery.discovery_messages(
            with_control(CFG, on), ["siren"], None, "urban10", "1.2.3", removed=["car_horn", "siren"]
        )
        gone = {t: p for t, p in msgs if "car_horn" in t}
        assert gone == {
            "homeassistant/binary_sensor/pi-kitchen/car_horn/config": None,
            "homeassistant/number/pi-kitchen/car_horn_threshold/config": None,
            "homeassistant/switch/pi-kitchen/car_horn_detection/config": None,
        }
        assert dict(msgs)["homeassistant/binary_sensor/pi-kitchen/siren/config"] is not None


def test_entity_names_come_from_the_bundles_display_names() -> None:
    labels = ["smoke_detector_smoke_alarm", "dog", "siren"]
    names = {"smoke_detector_smoke_alarm": "Smoke detector, smoke alarm", "dog": "Dog"}
    msgs = discovery.discovery_messages(CFG, labels, None, "audioset", "1.2.3", display_names=names)
    binary, number, switch = (by_component(msgs, c) for c in ("binary_sensor", "number", "switch"))
    smoke = "smoke_detector_smoke_alarm"
    assert binary[smoke]["name"] == "Smoke detector, smoke alarm"
    assert number[f"{smoke}_threshold"]["name"] == "Smoke detector, smoke alarm threshold"
    assert switch[f"{smoke}_detection"]["name"] == "Smoke detector, smoke alarm detection"
    assert binary["dog"]["name"] == "Dog"
    # a label without a display name (or a bundle without any) is named from the label
    assert binary["siren"]["name"] == "Siren" and switch["siren_detection"]["name"] == "Siren detection"
    plain = by_component(discovery.discovery_messages(CFG, labels, None, "m", "1"), "binary_sensor")
    assert plain[smoke]["name"] == "Smoke detector smoke alarm"
    # names change no id: renaming in a bundle keeps every entity
    ids = {p["unique_id"] for _, p in msgs if p}
    assert ids == {p["unique_id"] for _, p in discovery.discovery_messages(CFG, labels, None, "m", "1") if p}
    assert discovery.entity_name("x_y", {"x_y": ""}) == "X y"


def test_top_sound_and_top_score_read_the_scores_topic() -> None:
    configs = dict(discovery.top_sensor_configs(CFG, "urban10", "1.2.3"))
    sound = configs["homeassistant/sensor/pi-kitchen/top_sound/config"]
    score = configs["homeassistant/sensor/pi-kitchen/top_score/config"]
    level = discovery.level_sensor_config(CFG, "urban10", "1.2.3")[1]
    for c, key in ((sound, "top_sound"), (score, "top_score")):
        assert c["state_topic"] == "house/sound/scores"
        assert c["unique_id"] == c["object_id"] == f"soundmon_pi_kitchen_{key}"
        assert c["default_entity_id"] == f"sensor.soundmon_pi_kitchen_{key}"
        assert "entity_category" not in c  # what the node hears: a primary entity
        for same in ("device", "availability_topic", "payload_available", "payload_not_available"):
            assert c[same] == level[same], same
    assert sound["name"] == "Top sound" and sound["json_attributes_topic"] == "house/sound/scores"
    assert not {"state_class", "unit_of_measurement", "device_class"} & set(sound)  # free text
    assert score["name"] == "Top score"
    assert (score["state_class"], score["suggested_display_precision"]) == ("measurement", 2)
    assert "unit_of_measurement" not in score
    assert set(configs) <= {t for t, _ in messages().items()}
    # scores off (detection.scores_interval 0): removed, not unknown forever
    off = dict(discovery.discovery_messages(CFG, LABELS, None, "urban10", "1.2.3", scores=False))
    assert [off[t] for t in configs] == [None, None]
    assert sum(p is None for p in off.values()) == 2


SCORES = {"time": "2026-12-04T10:00:00+00:00", "stream_offset_s": 3.5, "dbfs": -23.4, "top": [
    {"label": "smoke_detector_smoke_alarm", "name": "Smoke detector, smoke alarm", "score": 0.83125, "raw": 0.9},
    {"label": "dog_bark", "name": "Dog bark", "score": 0.1, "raw": 0.2},
    {"label": "siren", "name": "Siren \"quoted\" <b>", "score": 0.05, "raw": 0.04},
]}  # fmt: skip

_RENDER = r"""
import asyncio, json, sys
from homeassistant.core import HomeAssistant
from homeassistant.helpers.template import Template
from homeassistant.util.json import json_loads_object

async def main():
    hass = HomeAssistant(sys.argv[1])
    templates, payloads = json.loads(sys.stdin.read())
    out = []
    for payload in payloads:
        row = {}
        for key, text in templates.items():
            row[key] = Template(text, hass).async_render_with_possible_json_value(payload, None)
        row["attributes"] = json_loads_object(row["attributes"])  # what HA does with the attributes
        out.append(row)
    print(json.dumps(out))

asyncio.run(main())
"""


@pytest.mark.integration  # Home Assistant's template engine
def test_top_templates_render_in_home_assistants_template_engine(tmp_path) -> None:
    """Home Assistant's own template engine (its venv's, no HA instance) on scores payloads."""
    venv = hass.venv_dir()
    if not hass.venv_ready(venv):  # built once, as tests/test_homeassistant.py builds it
        try:
            hass.build_venv(venv)
        except RuntimeError as exc:
            pytest.skip(f"Home Assistant cannot be installed here ({str(exc).splitlines()[0]}); make ha-venv")
    configs = dict(discovery.top_sensor_configs(CFG, "urban10", "1.2.3"))
    sound = configs["homeassistant/sensor/pi-kitchen/top_sound/config"]
    score = configs["homeassistant/sensor/pi-kitchen/top_score/config"]
    templates = {"sound": sound["value_template"], "attributes": sound["json_attributes_template"],
                 "score": score["value_template"]}  # fmt: skip
    empty = {**SCORES, "top": []}
    payloads = [json.dumps(SCORES), json.dumps(empty)]
    run = subprocess.run(
        [str(hass.venv_python(venv)), "-c", _RENDER, str(tmp_path)],
        input=json.dumps([templates, payloads]), capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert run.returncode == 0, run.stderr[-3000:]
    full, none = json.loads(run.stdout)
    assert full["sound"] == "Smoke detector, smoke alarm"
    assert float(full["score"]) == pytest.approx(0.83125)
    # label -> score, best first (the order of the top list), rounded for people
    assert list(full["attributes"].items()) == [
        ("smoke_detector_smoke_alarm", 0.831), ("dog_bark", 0.1), ("siren", 0.05)
    ]
    assert (none["sound"], float(none["score"]), none["attributes"]) == ("none", 0.0, {})
