"""Home Assistant discovery payloads (monitor/discovery.py): pure functions, no broker.

The same payloads are checked against a real Home Assistant core in test_homeassistant.py;
these are the cheap checks of their shape.
"""

from __future__ import annotations

import ast
import json
import re

from monitor import discovery
from monitor.config import MqttConfig
from tests.daemon_helpers import LABELS
from tests.paths import REPO

CFG = MqttConfig(node_id="pi-kitchen", base_topic="house/sound")
STATS_KEYS = {"uptime", "dropped_samples", "spool_depth", "inference_ms_p95", "input_state"}


def daemon_stats_fields() -> set[str]:
    """The keys of the dict `Daemon.stats_payload` returns (read from the source, no daemon)."""
    tree = ast.parse((REPO / "monitor" / "daemon.py").read_text())
    for node in ast.walk(tree):
        if isinstance(node, ast.FunctionDef) and node.name == "stats_payload":
            for sub in ast.walk(node):
                if isinstance(sub, ast.Return) and isinstance(sub.value, ast.Dict):
                    return {k.value for k in sub.value.keys if isinstance(k, ast.Constant)}
    raise AssertionError("Daemon.stats_payload returns no dict literal")


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
    assert len(topics) == len(set(topics)) == len(LABELS) + 1 + len(STATS_KEYS)
    assert [t for t, p in msgs if p is not None and "/binary_sensor/" in t] == [
        "homeassistant/binary_sensor/pi-kitchen/siren/config"
    ]
    live = [p for _, p in msgs if p is not None]
    assert len({p["unique_id"] for p in live}) == len(live)
    assert all(p["device"]["identifiers"] == ["soundmon_pi-kitchen"] for p in live)
    # the binary sensors are the primary entities: not diagnostics
    assert all("entity_category" not in p for t, p in msgs if p is not None and "/binary_sensor/" in t)
