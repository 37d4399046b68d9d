"""Home Assistant MQTT discovery: the config messages that make soundmon appear in HA.

Pure functions (no I/O): each returns `(topic, payload)` where payload is a dict to be sent
as JSON, retained, QoS 1 -- or None, meaning "send an empty retained payload", which is how
HA is told to remove an entity (used for vanished labels, and for the controls when
`mqtt.control` is off).

What HA gets (all under one device `soundmon_<node_id>`), per watched label:
- a `binary_sensor`, `device_class: sound`, reading `<base>/state/<label>` (`ON`/`OFF`,
  retained by the publisher);
- with `mqtt.control` (the default), two `config` entities that tune it from HA: a `number`
  "<name> threshold" (slider 0-1, step 0.01) commanding `<base>/set/<label>/threshold` and a
  `switch` "<name> detection" commanding `<base>/set/<label>/enabled`; both show the value in
  force from the daemon's retained echoes `<base>/config/<label>/threshold|enabled` (never
  optimistic: what HA shows is what the daemon uses);
and once per node:
- "Top sound" and "Top score" sensors reading `<base>/scores` (the newest window's top
  labels, every `detection.scores_interval` s, not retained: unknown in HA until the first one);
- one diagnostic `sensor` for the input level, reading `<base>/level` (`{"time", "dbfs"}`) in
  dBFS (no device_class: HA's `sound_pressure` and `signal_strength` would reject the unit);
- diagnostic `sensor`s for the daemon's health, each reading one field of the retained JSON
  `<base>/stats` (`STATS_SENSORS`): uptime, dropped samples, spool depth, inference time p95
  and the input state;
- availability from `<base>/status` (`online`/`offline`, the last will).

Which label entities exist, and why (see `discovery_messages`): with control on, all three
for every watched label, enabled or not. Turning a class off from HA must not delete its
binary sensor: an MQTT entity removed by discovery leaves HA's entity registry, taking the
user's name, area, dashboard cards and automation targets with it, only to come back as a new
entity when the class is turned on again -- and the switch must stay to turn it back on.
A disabled class's binary sensor is *unavailable* rather than `off`: `off` says "listened and
heard nothing", which is not true while nothing listens for it (its availability is
`<base>/status` online AND `<base>/config/<label>/enabled` ON). With control off nothing can
change the enabled set from HA, so a class disabled in config.yaml has no entity (as before)
and the number and switch are removed.

Entity names come from the bundle's display names when it has them (AudioSet: `Smoke
detector, smoke alarm`), else from the label (`dog_bark` -> `Dog bark`).

Discovery topics follow `<prefix>/<component>/<node_id>/<object_id>/config`. HA only allows
`[a-zA-Z0-9_-]` in the last two levels, so both are sanitised (`safe_id`). Entity ids
(`[a-z0-9_]`, `slug`) are given both as `object_id` (HA before 2025.10) and
`default_entity_id` (its replacement; `object_id` stops working in HA 2026.4).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from monitor.config import MqttConfig

__all__ = [
    "binary_sensor_config",
    "config_topic",
    "control_enabled",
    "detection_switch_config",
    "device_block",
    "discovery_messages",
    "entity_name",
    "label_topic_level",
    "level_sensor_config",
    "pretty_name",
    "safe_id",
    "set_topic",
    "slug",
    "state_topic",
    "stats_sensor_configs",
    "STATS_SENSORS",
    "threshold_number_config",
    "top_sensor_configs",
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


def set_topic(base: str, label: str, key: str) -> str:
    """`<base>/set/<label>/<key>` (`threshold` or `enabled`): where HA sends a command."""
    return f"{base}/set/{label_topic_level(label)}/{key}"


def config_topic(base: str, label: str, key: str) -> str:
    """`<base>/config/<label>/<key>`: the daemon's retained echo of the value in force."""
    return f"{base}/config/{label_topic_level(label)}/{key}"


def pretty_name(label: str) -> str:
    """`dog_bark` -> `Dog bark` (HA shows it after the device name)."""
    words = label.replace("_", " ").replace("-", " ").split()
    text = " ".join(words)
    return text[:1].upper() + text[1:] if text else label


def entity_name(label: str, display_names: Mapping[str, str] | None = None) -> str:
    """The name people see for a label: the bundle's display name if it has one, else `pretty_name`."""
    name = (display_names or {}).get(label)
    return name if name else pretty_name(label)


def control_enabled(cfg: MqttConfig) -> bool:
    """`mqtt.control`: the daemon takes commands from `<base>/set/...` (default true)."""
    return bool(cfg.control)


def device_block(node_id: str, model_name: str, sw_version: str) -> dict[str, Any]:
    """The HA device all soundmon entities of this node belong to."""
    return {
        "identifiers": [f"soundmon_{node_id}"],
        "name": f"soundmon {node_id}",
        "model": model_name,
        "manufacturer": "soundmon",
        "sw_version": sw_version,
    }


def _entity_ids(component: str, object_id: str) -> dict[str, str]:
    """The ids of one entity: `unique_id`, and its entity id as both `object_id` (HA before
    2025.10) and `default_entity_id` (its replacement), as the module docstring says."""
    return {"unique_id": object_id, "object_id": object_id, "default_entity_id": f"{component}.{object_id}"}


def _common(cfg: MqttConfig, model_name: str, sw_version: str) -> dict[str, Any]:
    return {
        "availability_topic": f"{cfg.base}/status",
        "payload_available": "online",
        "payload_not_available": "offline",
        "device": device_block(cfg.node_id, model_name, sw_version),
        "origin": {"name": "soundmon", "sw_version": sw_version},
    }


def _available_while_enabled(cfg: MqttConfig, label: str) -> dict[str, Any]:
    """Availability of a label's binary sensor when classes can be switched from HA: the daemon
    online AND the class enabled (its retained echo `ON`). Replaces `availability_topic`, which
    HA does not accept together with an `availability` list."""
    return {
        "availability": [
            {"topic": f"{cfg.base}/status", "payload_available": "online", "payload_not_available": "offline"},
            {"topic": config_topic(cfg.base, label, "enabled"), "payload_available": "ON",
             "payload_not_available": "OFF"},
        ],
        "availability_mode": "all",
    }  # fmt: skip


def _topic(cfg: MqttConfig, component: str, object_id: str) -> str:
    return f"{cfg.discovery_prefix}/{component}/{safe_id(cfg.node_id)}/{object_id}/config"


def binary_sensor_config(
    cfg: MqttConfig,
    label: str,
    model_name: str,
    sw_version: str,
    *,
    name: str | None = None,
    control: bool = False,
) -> tuple[str, dict[str, Any]]:
    """Discovery config of the `binary_sensor` (device_class sound) for one label.

    With `control` (classes switched from HA) it is unavailable while the class is disabled.
    """
    object_id = slug(f"soundmon_{cfg.node_id}_{label}")
    common = _common(cfg, model_name, sw_version)
    if control:
        for key in ("availability_topic", "payload_available", "payload_not_available"):
            del common[key]
        common.update(_available_while_enabled(cfg, label))
    payload = {
        "name": name or pretty_name(label),
        **_entity_ids("binary_sensor", object_id),
        "device_class": "sound",
        "state_topic": state_topic(cfg.base, label),
        "payload_on": "ON",
        "payload_off": "OFF",
        "qos": 1,
        **common,
    }
    return _topic(cfg, "binary_sensor", safe_id(label)), payload


def threshold_number_config(
    cfg: MqttConfig, label: str, model_name: str, sw_version: str, *, name: str | None = None
) -> tuple[str, dict[str, Any]]:
    """Discovery config of the `number` (slider 0-1) that sets one label's threshold.

    HA sends the value to `<base>/set/<label>/threshold` (QoS 1, not retained: a retained
    command would be applied again at every reconnect, over later changes) and shows the
    daemon's retained echo, so the slider goes back if the daemon refuses a value.
    """
    object_id = slug(f"soundmon_{cfg.node_id}_{label}_threshold")
    payload = {
        "name": f"{name or pretty_name(label)} threshold",
        **_entity_ids("number", object_id),
        "command_topic": set_topic(cfg.base, label, "threshold"),
        "state_topic": config_topic(cfg.base, label, "threshold"),
        "min": 0,
        "max": 1,
        "step": 0.01,
        "mode": "slider",
        "optimistic": False,
        "retain": False,
        "qos": 1,
        "entity_category": "config",
        "icon": "mdi:tune-vertical",
        **_common(cfg, model_name, sw_version),
    }
    return _topic(cfg, "number", f"{safe_id(label)}_threshold"), payload


def detection_switch_config(
    cfg: MqttConfig, label: str, model_name: str, sw_version: str, *, name: str | None = None
) -> tuple[str, dict[str, Any]]:
    """Discovery config of the `switch` that turns one label's detection on and off
    (`<base>/set/<label>/enabled` <- `ON`/`OFF`; state from the retained echo)."""
    object_id = slug(f"soundmon_{cfg.node_id}_{label}_detection")
    payload = {
        "name": f"{name or pretty_name(label)} detection",
        **_entity_ids("switch", object_id),
        "command_topic": set_topic(cfg.base, label, "enabled"),
        "state_topic": config_topic(cfg.base, label, "enabled"),
        "payload_on": "ON",
        "payload_off": "OFF",
        "state_on": "ON",
        "state_off": "OFF",
        "optimistic": False,
        "retain": False,
        "qos": 1,
        "entity_category": "config",
        "icon": "mdi:ear-hearing",
        **_common(cfg, model_name, sw_version),
    }
    return _topic(cfg, "switch", f"{safe_id(label)}_detection"), payload


# `<base>/scores` = {"time", "stream_offset_s", "dbfs", "top": [{"label", "name", "score",
# "raw"}, ...]} (best first). The attributes are {label: score} in that order, built as text:
# HA's `tojson` would sort the keys, and its templates have no `zip`.
TOP_SOUND_TEMPLATE = "{{ value_json.top[0].name if value_json.top else 'none' }}"
TOP_ATTRIBUTES_TEMPLATE = (
    "{ {%- for t in value_json.top %}{{ t.label | tojson }}: {{ t.score | round(3) }}"
    "{{ ', ' if not loop.last }}{% endfor %} }"
)
TOP_SCORE_TEMPLATE = "{{ value_json.top[0].score if value_json.top else 0 }}"


def top_sensor_configs(
    cfg: MqttConfig, model_name: str, sw_version: str
) -> list[tuple[str, dict[str, Any]]]:
    """Discovery configs of the "Top sound" (the best label's name, `none` when the list is
    empty; attributes: label -> score of the top list) and "Top score" sensors, both reading
    `<base>/scores`. Not retained: unknown in HA until the daemon's first scores message."""
    scores = f"{cfg.base}/scores"
    out = []
    for key, extra in (
        ("top_sound", {"name": "Top sound", "value_template": TOP_SOUND_TEMPLATE,
                       "json_attributes_topic": scores, "json_attributes_template": TOP_ATTRIBUTES_TEMPLATE,
                       "icon": "mdi:ear-hearing"}),
        ("top_score", {"name": "Top score", "value_template": TOP_SCORE_TEMPLATE,
                       "state_class": "measurement", "suggested_display_precision": 2,
                       "icon": "mdi:gauge"}),
    ):  # fmt: skip
        object_id = slug(f"soundmon_{cfg.node_id}_{key}")
        payload = {
            **_entity_ids("sensor", object_id),
            "state_topic": scores,
            **extra,
            **_common(cfg, model_name, sw_version),
        }
        out.append((_topic(cfg, "sensor", key), payload))
    return out


def level_sensor_config(
    cfg: MqttConfig, model_name: str, sw_version: str
) -> tuple[str, dict[str, Any]]:
    """Discovery config of the `sensor` showing the input level (dBFS) from `<base>/level`."""
    object_id = slug(f"soundmon_{cfg.node_id}_level")
    payload = {
        "name": "Sound level",
        **_entity_ids("sensor", object_id),
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
            **_entity_ids("sensor", object_id),
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
    *,
    display_names: Mapping[str, str] | None = None,
    control: bool | None = None,
    scores: bool = True,
) -> list[tuple[str, dict[str, Any] | None]]:
    """Every discovery message to send now; None = an empty retained payload (HA removes the entity).

    `labels` are the watched labels, `enabled` those whose detection is on (None = all),
    `removed` labels the previous model had but the current one does not (their entities are
    removed), `display_names` the bundle's names for people (label -> name; None: from the label),
    `control` whether the publisher takes commands (None: `mqtt.control`, see `control_enabled`),
    `scores` whether `<base>/scores` is published (`detection.scores_interval` > 0): without it
    the Top sensors are removed rather than left unknown forever.

    With `mqtt.control` on (`control_enabled`): for every watched label a binary sensor,
    unavailable while the class is disabled, a threshold number and a detection switch -- a
    class turned off from HA keeps its entities, so it can be turned on again from HA and
    nothing the user attached to them is lost (module docstring). With control off: the binary
    sensor of enabled labels only (a disabled one is removed) and every number and switch removed.
    Then the level, stats and top sensors.
    """
    labels = list(labels)
    on = set(labels) if enabled is None else set(enabled)
    control = control_enabled(cfg) if control is None else bool(control)
    names = display_names or {}
    out: list[tuple[str, dict[str, Any] | None]] = []
    for label in labels:
        topic, payload = binary_sensor_config(
            cfg, label, model_name, sw_version, name=entity_name(label, names), control=control
        )
        out.append((topic, payload if control or label in on else None))
    gone = [label for label in dict.fromkeys(removed) if label not in labels]
    for label in gone:
        out.append((binary_sensor_config(cfg, label, model_name, sw_version)[0], None))
    out.append(level_sensor_config(cfg, model_name, sw_version))
    out.extend(stats_sensor_configs(cfg, model_name, sw_version))
    out.extend((t, p if scores else None) for t, p in top_sensor_configs(cfg, model_name, sw_version))
    for make in (threshold_number_config, detection_switch_config):
        for label in labels:
            topic, payload = make(cfg, label, model_name, sw_version, name=entity_name(label, names))
            out.append((topic, payload if control else None))
        for label in gone:
            out.append((make(cfg, label, model_name, sw_version)[0], None))
    return out
