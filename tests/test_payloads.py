"""monitor.payloads: the MQTT payload shapes, from plain values (no model, broker or daemon).

The daemon tests check the same shapes end to end (START_FIELDS, END_FIELDS, the stats keys);
these pin the exact text of each field so that a change of rounding or time format shows here.
"""

from __future__ import annotations

import json
from types import SimpleNamespace

import numpy as np

from monitor.config import DetectionConfig
from monitor.detector import DetectionEvent
from monitor.payloads import (
    ScoresText,
    config_values,
    detection_payload,
    event_line,
    iso_utc,
    level_payload,
    scores_payload,
    stats_payload,
)
from monitor.pipeline import PipelineStats
from monitor.publisher import _dumps

T0 = 1_700_000_000.0  # 2023-11-14T22:13:20Z


def test_iso_utc_has_milliseconds_and_a_z() -> None:
    assert iso_utc(T0 + 0.1234) == "2023-11-14T22:13:20.123Z"


def test_detection_start_and_end_payloads() -> None:
    start = DetectionEvent("start", "abc", "siren", 0.812345, 0.812345, 12.5, opened_by="start_model")
    p = detection_payload(start, T0, "pi", "urban10")
    assert json.dumps(p) == json.dumps({
        "id": "abc", "type": "start", "label": "siren", "score": 0.8123, "peak_score": 0.8123,
        "time": "2023-11-14T22:13:32.500Z", "stream_offset_s": 12.5, "node": "pi", "model": "urban10",
        "opened_by": "start_model",
    })  # fmt: skip
    end = DetectionEvent("end", "abc", "siren", 0.3, 0.9, 12.5, end_offset_s=15.25)
    p = detection_payload(end, T0, "pi", "urban10")
    assert list(p)[-3:] == ["end_time", "duration_s", "end_offset_s"] and "opened_by" not in p
    assert (p["end_time"], p["duration_s"], p["end_offset_s"]) == ("2023-11-14T22:13:35.250Z", 2.75, 15.25)
    assert event_line(p) == "   15.25 s  END   siren              peak  0.90  (2.8 s)  [abc]"
    # an end without an end offset (closed at once) lasts 0 s
    p = detection_payload(DetectionEvent("end", "x", "dog", 0.1, 0.5, 3.0), T0, "pi", "m")
    assert (p["duration_s"], p["end_offset_s"]) == (0.0, 3.0)
    # an end whose start was published before the clock moved keeps the start's time; its end
    # time follows the clock in force
    p = detection_payload(end, T0 + 3600.0, "pi", "urban10", start_time=T0 + 12.5)
    assert (p["time"], p["end_time"]) == ("2023-11-14T22:13:32.500Z", "2023-11-14T23:13:35.250Z")


def test_scores_payload_top_watched_by_smoothed_score() -> None:
    labels = ["a", "b", "c", "d"]
    smoothed = np.array([0.1, 0.9, 0.5, 0.9], dtype=np.float32)
    raw = np.array([0.2, 0.8, 0.4, 0.7], dtype=np.float32)
    p = scores_payload(labels, ["A", "B", "C", "D"], np.array([0, 1, 3]), smoothed, raw, 4.0, -31.26, T0, top=2)
    assert [e["label"] for e in p["top"]] == ["b", "d"]  # ties in label order; c is not watched
    assert p["top"][0] == {"label": "b", "name": "B", "score": 0.9, "raw": 0.8}
    assert (p["time"], p["stream_offset_s"], p["dbfs"]) == ("2023-11-14T22:13:24.000Z", 4.0, -31.3)
    gated = scores_payload(labels, labels, np.array([0]), smoothed, None, 4.0, -90.0, T0)
    assert gated["top"] == [{"label": "a", "name": "a", "score": 0.1, "raw": 0.0}]


def test_scores_text_is_the_publishers_text_of_the_payload() -> None:
    """`ScoresText` (what the daemon sends) is, character for character, the JSON the publisher
    makes of `scores_payload`'s dict: random scores with ties, NaN, infinities and -0.0, gated
    windows, fewer watched labels than the top, and names that JSON must escape."""
    rng = np.random.default_rng(21)
    labels = ["siren", "dog_bark", "a\"b", "ü/ß", "tab\there", "x", "y", "z"]
    names = ["Siren", "Dog \"bark\"", "A\\B", "Ünïcode ☃", "ctl\u0001", "X", "Y", "Z"]
    encode = ScoresText(labels, names)
    special = [np.nan, np.inf, -np.inf, -0.0, 0.0, 1.0, 0.123449999, 0.5]
    for case in range(400):
        n_watched = int(rng.integers(0, len(labels) + 1))
        watched = np.sort(rng.choice(len(labels), n_watched, replace=False)).astype(np.intp)
        smoothed = rng.random(len(labels))
        if case % 3 == 0:
            smoothed = np.round(smoothed, 1)  # ties
        raw = rng.random(len(labels)).astype(np.float32)
        if case % 5 == 0:
            smoothed[rng.integers(len(labels))] = special[case % len(special)]
            raw[rng.integers(len(labels))] = special[(case // 5) % len(special)]
        raw_or_gated = None if case % 7 == 0 else raw
        offset = float(rng.integers(0, 10**6)) / 16000 if case % 2 else int(rng.integers(0, 100))
        dbfs = [-200.0, float(rng.uniform(-120, 0)), -0.04][case % 3]
        top = int(rng.integers(0, 8)) if case % 4 == 0 else 5
        args = (watched, smoothed, raw_or_gated, offset, dbfs, T0 + float(rng.random()))
        expected = _dumps(scores_payload(labels, names, *args, top=top))
        assert encode(*args, top=top) == expected, case


def test_level_payload() -> None:
    assert level_payload(T0, 1e-3) == {"time": "2023-11-14T22:13:20.000Z", "dbfs": -30.0}


def test_stats_payload_status_follows_audio_and_mqtt() -> None:
    pub = SimpleNamespace(state="disabled", spool_depth=0, spool_dropped=0, spool_memory=0,
                          undelivered_lost=0, commands_dropped=0)  # fmt: skip
    st = PipelineStats(windows=4, frontend_s=0.002)
    p = stats_payload(now=T0, uptime_s=3.21, stats=st, audio_seconds=2.04, audio_state="ok",
                      source_stats={"overflows": 2}, publisher=pub, events=1, active={"siren", "dog"},
                      model="m", version="0.1.0", host="h")  # fmt: skip
    assert (p["status"], p["uptime_s"], p["audio_seconds"], p["active"]) == ("ok", 3.2, 2.0, ["dog", "siren"])
    assert (p["frontend_ms_per_hop"], p["overflows"], p["dropped_samples"]) == (0.5, 2, 0)
    pub.state = "disconnected"
    assert stats_payload(**{**dict(now=T0, uptime_s=0, stats=st, audio_seconds=0, audio_state="ok",
                                   source_stats={}, publisher=pub, events=0, active=(), model="m",
                                   version="v", host="h")})["status"] == "degraded"  # fmt: skip


def test_config_values_for_the_watched_labels() -> None:
    det = DetectionConfig.model_validate({"classes": {"b": {"threshold": 0.3, "enabled": False}}})
    assert config_values(det, {"a": 0.5, "b": 0.5, "c": 0.5}, ["a", "b", "c"], ["a", "b"]) == {
        "a": (0.5, True), "b": (0.3, False)}  # fmt: skip
