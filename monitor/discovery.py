"""Home Assistant MQTT discovery: the config messages that make soundmon appear in HA.

Pure functions (no I/O): each returns `(topic, payload)` where payload is a dict to be sent
as JSON, retained, QoS 1 -- or None, meaning "send an empty retained payload", which is how
HA is told to remove an entity (used for disabled or vanished labels).

What HA gets (all under one device `soundmon_<node_id>`):
- one `binary_sensor` per enabled label, `device_class: sound`, reading `<base>/state/<label>`
  (`ON`/`OFF`, retained by the publisher);
- one diagnostic `sensor` for the input level, reading `<base>/level` (`{"time", "dbfs"}`) in
  dBFS (no device_class: HA's `sound_pressure` and `signal_strength` would reject the unit);
- diagnostic `sensor`s for the daemon's health, each reading one field of the retained JSON
  `<base>/stats` (`STATS_SENSORS`): uptime, dropped samples, spool depth, inference time p95
  and the input state;
- availability from `<base>/status` (`online`/`offline`, the last will).

Discovery topics follow `<prefix>/<component>/<node_id>/<object_id>/config`. HA only allows
`[a-zA-Z0-9_-]` in the last two levels, so both are sanitised (`safe_id`). Entity ids
(`[a-z0-9_]`, `slug`) are given both as `object_id` (HA before 2025.10) and
`default_entity_id` (its replacement; `object_id` stops working in HA 2026.4).
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from monitor.config import MqttConfig

__all__ = [
    "binary_sensor_config",
    "device_block",
    "discovery_messages",
    "label_topic_level",
    "level_sensor_config",
    "pretty_name",
    "safe_id",
    "slug",
    "state_topic",
    "stats_sensor_configs",
    "STATS_SENSORS",
]

_UNSAFE_ID = re.compile(r"[^a-z0-9_-]+")
_UNSAFE_SLUG = re.compile(r"[^a-z0-9_]+")
_UNSAFE_LEVEL = re.compile(r"[/#+\s\x00]+")


def safe_id(text: str) -> str:
    """Lower-case `[a-z0-9_-]` only (the node/object levels of a discovery topic); other runs become `_`."""
    cleaned = _UNSAFE_ID.sub("_", text.lower()).strip("_")
    return cleaned or "x"


def slug(text: str) -> str:
    """Lower-case `[a-z0-9_]` only: what HA accepts in an entity id (`binary_sensor.<slug>`)."""
    cleaned = _UNSAFE_SLUG.sub("_", text.lower()).strip("_")
    return cleaned or "x"


def label_topic_level(label: str) -> str:
    """A label as one MQTT topic level: `/`, `+`, `#`, NUL and blanks become `_`.

    The usual labels (`dog_bark`, `siren`, ...) pass unchanged; this only guards against a
    bundle whose label would otherwise split or wildcard the topic.
    """
    cleaned = _UNSAFE_LEVEL.sub("_", label)
    return cleaned or "_"


def state_topic(base: str, label: str) -> str:
    """`<base>/state/<label>`: the retained ON/OFF topic of one label."""
    return f"{base}/state/{label_topic_level(label)}"


def pretty_name(label: str) -> str:
    """`dog_bark` -> `Dog bark` (HA shows it after the device name)."""
    words = label.replace("_", " ").replace("-", " ").split()
    text = " ".join(words)
    return text[:1].upper() + text[1:] if text else label


def device_block(node_id: str, model_name: str, sw_version: str) -> dict[str, Any]:
    """The HA device all soundmon entities of this node belong to."""
    return {
        "identifiers": [f"soundmon_{node_id}"],
        "name": f"soundmon {node_id}",
        "model": model_name,
        "manufacturer": "soundmon",
        "sw_version": sw_version,
    }


def _common(cfg: MqttConfig, model_name: str, sw_version: str) -> dict[str, Any]:
    return {
        "availability_topic": f"{cfg.base}/status",
        "payload_available": "online",
        "payload_not_available": "offline",
        "device": device_block(cfg.node_id, model_name, sw_version),
        "origin": {"name": "soundmon", "sw_version": sw_version},
    }


def _topic(cfg: MqttConfig, component: str, object_id: str) -> str:
    return f"{cfg.discovery_prefix}/{component}/{safe_id(cfg.node_id)}/{object_id}/config"


def binary_sensor_config(
    cfg: MqttConfig, label: str, model_name: str, sw_version: str
) -> tuple[str, dict[str, Any]]:
    """Discovery config of the `binary_sensor` (device_class sound) for one label."""
    object_id = slug(f"soundmon_{cfg.node_id}_{label}")
    payload = {
        "name": pretty_name(label),
        "unique_id": object_id,
        "object_id": object_id,
        "default_entity_id": f"binary_sensor.{object_id}",
        "device_class": "sound",
        "state_topic": state_topic(cfg.base, label),
        "payload_on": "ON",
        "payload_off": "OFF",
        "qos": 1,
        **_common(cfg, model_name, sw_version),
    }
    return _topic(cfg, "binary_sensor", safe_id(label)), payload


def level_sensor_config(
    cfg: MqttConfig, model_name: str, sw_version: str
) -> tuple[str, dict[str, Any]]:
    """Discovery config of the `sensor` showing the input level (dBFS) from `<base>/level`."""
    object_id = slug(f"soundmon_{cfg.node_id}_level")
    payload = {
        "name": "Sound level",
        "unique_id": object_id,
        "object_id": object_id,
        "default_entity_id": f"sensor.{object_id}",
        "state_topic": f"{cfg.base}/level",
        "value_template": "{{ value_json.dbfs }}",
        "unit_of_measurement": "dBFS",
        "state_class": "measurement",
        "entity_category": "diagnostic",
        "suggested_display_precision": 1,
        "icon": "mdi:waveform",
        **_common(cfg, model_name, sw_version),
    }
    return _topic(cfg, "sensor", "level"), payload


# One diagnostic sensor per `<base>/stats` field shown in HA:
# object id -> (name, stats field, extra discovery keys).
STATS_SENSORS: dict[str, tuple[str, str, dict[str, Any]]] = {
    "uptime": (
        "Uptime",
        "uptime_s",
        # a duration, not a statistic worth keeping: no state_class
        {"device_class": "duration", "unit_of_measurement": "s",
         "suggested_display_precision": 0},
    ),
    "dropped_samples": (
        "Dropped samples",
        "dropped_samples",
        # a counter since start (restarts at 0: what total_increasing means)
        {"state_class": "total_increasing", "icon": "mdi:waveform"},
    ),
    "spool_depth": (
        "Spool depth",
        "spool_depth",
        {"state_class": "measurement", "icon": "mdi:tray-full"},
    ),
    "inference_ms_p95": (
        "Inference time p95",
        "inference_ms_p95",
        {"device_class": "duration", "unit_of_measurement": "ms", "state_class": "measurement",
         "suggested_display_precision": 2},
    ),
    "input_state": (
        "Input state",
        "audio",
        # free text ("ok", "stalled", "silent", "error", "reopening", "stopped"): no enum
        # device_class, whose fixed options would reject a state added later
        {"icon": "mdi:microphone"},
    ),
}  # fmt: skip


def stats_sensor_configs(
    cfg: MqttConfig, model_name: str, sw_version: str
) -> list[tuple[str, dict[str, Any]]]:
    """Discovery configs of the diagnostic sensors that read `<base>/stats` (retained JSON)."""
    out = []
    for key, (name, field, extra) in STATS_SENSORS.items():
        object_id = slug(f"soundmon_{cfg.node_id}_{key}")
        payload = {
            "name": name,
            "unique_id": object_id,
            "object_id": object_id,
            "default_entity_id": f"sensor.{object_id}",
            "state_topic": f"{cfg.base}/stats",
            "value_template": f"{{{{ value_json.{field} }}}}",
            "entity_category": "diagnostic",
            **extra,
            **_common(cfg, model_name, sw_version),
        }
        out.append((_topic(cfg, "sensor", key), payload))
    return out


def discovery_messages(
    cfg: MqttConfig,
    labels: Iterable[str],
    enabled: Iterable[str] | None,
    model_name: str,
    sw_version: str,
    removed: Iterable[str] = (),
) -> list[tuple[str, dict[str, Any] | None]]:
    """Every discovery message to send now: configs for enabled labels, the level sensor and
    the stats sensors, None (= empty retained payload, removes the entity) for disabled labels and for `removed`
    labels (ones the previous model had but the current one does not).

    `enabled=None` means every label is enabled.
    """
    labels = list(labels)
    on = set(labels) if enabled is None else set(enabled)
    out: list[tuple[str, dict[str, Any] | None]] = []
    for label in labels:
        topic, payload = binary_sensor_config(cfg, label, model_name, sw_version)
        out.append((topic, payload if label in on else None))
    for label in removed:
        if label not in labels:
            topic, _ = binary_sensor_config(cfg, label, model_name, sw_version)
            out.append((topic, None))
    out.append(level_sensor_config(cfg, model_name, sw_version))
    out.extend(stats_sensor_configs(cfg, model_name, sw_version))
    return out
