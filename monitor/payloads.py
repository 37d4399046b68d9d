"""The JSON payloads soundmon publishes over MQTT, built from plain values (no I/O, no clock).

The MQTT contract (DESIGN.md, README's MQTT section) fixes their shapes; `monitor.discovery`
next to this module builds the Home Assistant side (discovery configs, topic levels). The
daemon gathers the values and hands the dicts to `monitor.publisher.Publisher`, which encodes
and sends them:

- `detection_payload`: `<base>/detection`, one per event start and one per event end
- `scores_payload`: `<base>/scores`, the newest window's top watched labels (`ScoresText`: the
  same message as its JSON text, built directly: it is sent every second of audio)
- `level_payload`: `<base>/level`, the mean level over the last `level_interval` seconds
- `stats_payload`: `<base>/stats`, the retained health message
- `config_values`: the values in force behind the `<base>/config/<label>/...` echoes

`event_line` is the `--print` line of a detection payload.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime, timezone
from typing import Any

import numpy as np

from monitor.detector import DetectionEvent
from monitor.pipeline import level_dbfs

__all__ = [
    "SCORES_TOP",
    "ScoresText",
    "config_values",
    "detection_payload",
    "event_line",
    "iso_utc",
    "level_payload",
    "scores_payload",
    "stats_payload",
]

SCORES_TOP = 5  # labels in a <base>/scores message


def iso_utc(ts: float) -> str:
    """ISO 8601 UTC with milliseconds and a Z, e.g. 2026-11-21T16:25:00.123Z.

    Parameters: `ts`, seconds since the epoch. Returns the text."""
    return datetime.fromtimestamp(ts, tz=timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def detection_payload(
    ev: DetectionEvent, stream_start: float, node: str, model: str, start_time: float | None = None
) -> dict[str, Any]:
    """The `<base>/detection` message of one event start or end.

    Parameters: `ev`, the detector's event; `stream_start`, the wall-clock time (epoch seconds)
    of stream offset 0, so that offset `x` happened at `stream_start + x`; `node`, the node id;
    `model`, the bundle's name; `start_time`, the event's start time (epoch seconds) when it is
    already known (an end whose start was published before the clock was re-anchored), else
    `stream_start + ev.start_offset_s`.

    Returns `{"id", "type", "label", "score", "peak_score", "time", "stream_offset_s", "node",
    "model"}`, plus `"opened_by"` (`model`, or `start_model` for an event fast start opened) on
    a start and `"end_time"`, `"duration_s"`, `"end_offset_s"` on an end. Scores are rounded to 4
    decimals, offsets and durations to 3; times are ISO UTC (`iso_utc`).
    """
    payload: dict[str, Any] = {
        "id": ev.id,
        "type": ev.type,
        "label": ev.label,
        "score": round(float(ev.score), 4),
        "peak_score": round(float(ev.peak_score), 4),
        "time": iso_utc(stream_start + ev.start_offset_s if start_time is None else start_time),
        "stream_offset_s": round(ev.start_offset_s, 3),
        "node": node,
        "model": model,
    }
    if ev.type == "start":
        payload["opened_by"] = ev.opened_by  # "model", or "start_model" (fast start: its score)
    if ev.type == "end":
        end = ev.end_offset_s if ev.end_offset_s is not None else ev.start_offset_s
        payload["end_time"] = iso_utc(stream_start + end)
        payload["duration_s"] = round(max(0.0, end - ev.start_offset_s), 3)
        payload["end_offset_s"] = round(end, 3)
    return payload


def scores_payload(
    labels: Sequence[str],
    names: Sequence[str],
    watched_idx: np.ndarray,
    smoothed: np.ndarray,
    raw: np.ndarray | None,
    end_offset_s: float,
    window_dbfs: float,
    stream_start: float,
    top: int = SCORES_TOP,
) -> dict[str, Any]:
    """The `<base>/scores` message: the newest window's top watched labels, for tuning
    thresholds by eye. Its definition as a dict; the daemon sends `ScoresText`'s rendering of
    it, which tests/test_payloads.py checks against this function's JSON, character for character.

    Parameters: `labels` and `names` (display names), one per model output; `watched_idx`, the
    indices of the watched labels; `smoothed`, the detector's smoothed scores (what the
    thresholds are compared with); `raw`, this window's own scores (None for a window the level
    gate skipped); `end_offset_s`, the window's end in stream seconds; `window_dbfs`, its level;
    `stream_start`, the wall-clock time of stream offset 0; `top`, how many labels.

    Returns `{"time": ISO UTC of the window's end, "stream_offset_s", "dbfs", "top": [{"label",
    "name", "score", "raw"}, ...]}`, at most `top` entries sorted by `score` (ties in label
    order); `raw` is 0 for a gated window.
    """
    order = _top_order(watched_idx, smoothed, top)
    entries = [{
        "label": labels[i],
        "name": names[i],
        "score": round(float(smoothed[i]), 4),
        "raw": round(float(raw[i]), 4) if raw is not None else 0.0,
    } for i in order]  # fmt: skip
    return {
        "time": iso_utc(stream_start + end_offset_s),
        "stream_offset_s": round(end_offset_s, 3),
        "dbfs": round(window_dbfs, 1),
        "top": entries,
    }


def _top_order(watched_idx: np.ndarray, smoothed: np.ndarray, top: int) -> list[int]:
    """The indices of the `top` watched labels by smoothed score, ties in label order."""
    return watched_idx[np.argsort(-smoothed[watched_idx], kind="stable")[:top]].tolist()


def _json_number(value: Any) -> str:
    """A number as `monitor.publisher`'s JSON encoding writes it: a float by its repr, NaN and
    infinity as null (the publisher's `_plain`), anything else by `json.dumps`."""
    if isinstance(value, float):
        return float.__repr__(value) if math.isfinite(value) else "null"
    return json.dumps(value)


class ScoresText:
    """`<base>/scores` as the JSON text the publisher would send for `scores_payload`'s dict,
    character for character, built without the dict.

    Why: the message goes out every `detection.scores_interval` s of audio, and encoding the
    dict (the publisher's NaN-safe copy, then `json.dumps`) cost more CPU than the detector's
    whole window step; the label and name fragments are encoded once here instead.
    Parameters: `labels` and `names` (display names), one per model output."""

    def __init__(self, labels: Sequence[str], names: Sequence[str]) -> None:
        def text(x: str) -> str:
            return json.dumps(x, ensure_ascii=False)

        self._heads = [f'{{"label":{text(label)},"name":{text(name)},"score":'
                       for label, name in zip(labels, names, strict=True)]  # fmt: skip

    def __call__(
        self,
        watched_idx: np.ndarray,
        smoothed: np.ndarray,
        raw: np.ndarray | None,
        end_offset_s: float,
        window_dbfs: float,
        stream_start: float,
        top: int = SCORES_TOP,
    ) -> str:
        """The text of `scores_payload(labels, names, watched_idx, ...)` (the same parameters)."""
        heads, num = self._heads, _json_number
        entries = ",".join(
            f'{heads[i]}{num(round(float(smoothed[i]), 4))},"raw":'
            f"{num(round(float(raw[i]), 4) if raw is not None else 0.0)}}}"
            for i in _top_order(watched_idx, smoothed, top)
        )
        return (f'{{"time":{json.dumps(iso_utc(stream_start + end_offset_s))},'
                f'"stream_offset_s":{num(round(end_offset_s, 3))},"dbfs":{num(round(window_dbfs, 1))},'
                f'"top":[{entries}]}}')  # fmt: skip


def level_payload(now: float, mean_power: float) -> dict[str, Any]:
    """The `<base>/level` message.

    Parameters: `now`, the wall-clock time (epoch seconds); `mean_power`, the mean power (mean
    square, full scale 1) of the windows since the last message. Returns `{"time", "dbfs"}`,
    dBFS rounded to 0.1."""
    return {"time": iso_utc(now), "dbfs": round(level_dbfs(mean_power), 1)}


def stats_payload(
    *,
    now: float,
    uptime_s: float,
    stats: Any,
    audio_seconds: float,
    audio_state: str,
    source_stats: Mapping[str, Any],
    publisher: Any,
    events: int,
    active: Iterable[str],
    model: str,
    version: str,
    host: str,
) -> dict[str, Any]:
    """The retained `<base>/stats` health message (its keys are the HA diagnostic sensors'
    `value_template`s, `monitor.discovery.STATS_SENSORS`).

    Parameters: `now`, the wall-clock time; `uptime_s`, seconds since the daemon started;
    `stats`, the pipeline's `PipelineStats`; `audio_seconds`, the stream offset; `audio_state`
    and `source_stats`, the source's `health` and `stats`; `publisher`, for its state and spool
    counters; `events`, the events started; `active`, the labels with an open event; `model`,
    the bundle's name; `version`, soundmon's; `host`, the host name.

    Returns a flat dict; `status` is `ok` when the audio is `ok` and MQTT is connected (or off),
    else `degraded`.
    """
    p50, p95 = stats.inference_percentiles()
    return {
        "time": iso_utc(now),
        "uptime_s": round(uptime_s, 1),
        "status": "ok" if audio_state == "ok" and publisher.state in ("connected", "disabled") else "degraded",
        "audio": audio_state,
        "mqtt": publisher.state,
        "audio_seconds": round(audio_seconds, 1),
        "windows": stats.windows,
        "gated_windows": stats.gated_windows,
        "inference_ms_p50": round(p50, 3),
        "inference_ms_p95": round(p95, 3),
        "frontend_ms_per_hop": round(1000 * stats.frontend_s / max(stats.windows, 1), 3),
        "dropped_samples": int(source_stats.get("dropped_samples", 0)),
        "overflows": int(source_stats.get("overflows", 0)),
        "nonfinite_samples": stats.nonfinite_samples,
        "device_reopens": int(source_stats.get("reopen_count", 0)),
        "events": events,
        "active": sorted(active),
        "spool_depth": publisher.spool_depth,
        "spool_dropped": publisher.spool_dropped,
        "spool_memory": publisher.spool_memory,
        "undelivered_lost": publisher.undelivered_lost,
        "commands_dropped": publisher.commands_dropped,
        "model": model,
        "version": version,
        "host": host,
    }


def config_values(
    detection: Any, default_thresholds: Mapping[str, float] | None, labels: Sequence[str], watched: Iterable[str]
) -> dict[str, tuple[float, bool]]:
    """The values in force behind the `<base>/config/<label>/threshold|enabled` echoes.

    Parameters: `detection`, the detection settings in force (`DetectionConfig`, the values
    set over MQTT applied); `default_thresholds`, the bundle's; `labels`, the bundle's labels;
    `watched`, the watched labels. Returns label -> (threshold, enabled) for each watched label.
    """
    thresholds, enabled = detection.thresholds(default_thresholds, labels), detection.enabled_labels(labels)
    return {label: (thresholds[label], label in enabled) for label in watched}


def event_line(payload: Mapping[str, Any]) -> str:
    """The `--print` line of a detection payload (`detection_payload`), e.g.
    `   12.50 s  START siren              score 0.81  [<id>]`."""
    if payload["type"] == "start":
        text = f"{payload['stream_offset_s']:8.2f} s  START {payload['label']:<18} score {payload['score']:.2f}"
    else:
        text = (f"{payload['end_offset_s']:8.2f} s  END   {payload['label']:<18} peak  {payload['peak_score']:.2f}"
                f"  ({payload['duration_s']:.1f} s)")  # fmt: skip
    return f"{text}  [{payload['id']}]"
