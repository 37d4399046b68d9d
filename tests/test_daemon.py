"""`soundmon run` end to end: real broker, real subscriber, the real daemon in a child process.

These use the tiny real int8 model from tests/fixtures_model.py with thresholds pinned (0 =
always on, 1 = never), so the MQTT contract is checked independently of model accuracy. The
shipped model's detections on real recordings are checked in test_daemon_detections.py.
"""

from __future__ import annotations

import json
import signal
import time
from datetime import datetime

import numpy as np
import pytest
import soundfile as sf

from tests.broker import Subscriber
from tests.daemon_helpers import LABELS, DaemonProcess, all_thresholds, run_to_end, write_config
from tests.paths import DEMO, need_shipped_model

DETECTION_FIELDS = {"id", "type", "label", "score", "peak_score", "time", "stream_offset_s", "node", "model"}
START_FIELDS = DETECTION_FIELDS | {"opened_by"}
END_FIELDS = DETECTION_FIELDS | {"end_time", "duration_s", "end_offset_s"}
STATS_FIELDS = {
    "uptime_s", "windows", "inference_ms_p50", "inference_ms_p95", "dropped_samples", "spool_depth",
    "spool_dropped", "spool_memory", "undelivered_lost", "commands_dropped", "model", "audio", "mqtt",
    "status",
}  # fmt: skip


def iso(text: str) -> datetime:
    assert text.endswith("Z")
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def test_file_run_publishes_every_topic_of_the_contract(broker, tiny_bundle, tmp_path):
    cfg = write_config(tmp_path / "c.yaml", broker, detection=all_thresholds(0.0, level_interval=0.05))
    with Subscriber(broker, "#") as sub:
        d = run_to_end("--source", str(DEMO), "--pace", "fast", "--config", str(cfg), "--model", str(tiny_bundle))
        assert d.proc.returncode == 0, d.text()
        sub.wait_for("soundmon/testnode/status", lambda m: m.text == "offline", timeout=10)
        base = "soundmon/testnode"
        detections = [m.json() for m in sub.get(f"{base}/detection")]
        assert {m.qos for m in sub.get(f"{base}/detection")} == {1}
        starts = {p["id"]: p for p in detections if p["type"] == "start"}
        ends = {p["id"]: p for p in detections if p["type"] == "end"}
        assert set(starts) == set(ends) and {p["label"] for p in starts.values()} == set(LABELS)
        for eid, start in starts.items():
            end = ends[eid]
            assert set(start) == START_FIELDS and set(end) >= END_FIELDS and "opened_by" not in end
            assert start["opened_by"] == "model"  # the tiny bundle has no start model
            assert start["node"] == "testnode" and start["model"] == "tiny"
            assert start["time"] == end["time"] and iso(end["end_time"]) >= iso(start["time"])
            assert 0 <= start["stream_offset_s"] <= 33.1
            assert end["duration_s"] == pytest.approx(end["end_offset_s"] - end["stream_offset_s"], abs=1e-3)
            assert 0.0 <= start["score"] <= 1.0 and end["peak_score"] >= start["score"] - 1e-6
        states = [m.text for m in sub.get(f"{base}/state/siren")]
        # (an OFF first when the publisher connected before the first window: every label has
        # a retained state from the connection on)
        assert states in (["ON", "OFF"], ["OFF", "ON", "OFF"]), states
        levels = [m.json() for m in sub.get(f"{base}/level")]
        assert levels and all(set(x) == {"time", "dbfs"} and -200 <= x["dbfs"] <= 0 for x in levels)
        assert {m.qos for m in sub.get(f"{base}/level")} == {0}
        stats = sub.get(f"{base}/stats")[-1].json()
        assert set(stats) >= STATS_FIELDS and stats["windows"] == 66 and stats["model"] == "tiny"
        assert stats["spool_memory"] == stats["undelivered_lost"] == stats["commands_dropped"] == 0
        configs = {m.topic: m.json() for m in sub.get() if m.topic.startswith("homeassistant/") and m.text}
        siren = configs["homeassistant/binary_sensor/testnode/siren/config"]
        assert siren["device_class"] == "sound" and siren["state_topic"] == f"{base}/state/siren"
        assert any(t.startswith("homeassistant/sensor/") for t in configs)
    # Retained: a subscriber that arrives later still sees status, states and stats.
    with Subscriber(broker, "soundmon/#") as late:
        late.wait_for("soundmon/testnode/status", lambda m: m.text == "offline" and m.retain, timeout=5)
        late.wait_for("soundmon/testnode/state/siren", lambda m: m.text == "OFF" and m.retain, timeout=5)
        late.wait_for("soundmon/testnode/stats", lambda m: m.retain, timeout=5)


def test_a_start_says_which_model_opened_it_and_never_scores_below_that_models_threshold(broker, tmp_path):
    """The shipped bundle has a start model. With fast start at 0.7 the demo's STARTs come from it
    (its sounds are sharp enough) and carry the start model's score that crossed 0.7; with fast
    start off every START is the main model's, with its smoothed score that crossed the class
    threshold. Never a score below the threshold that opened it."""
    from monitor.bundle import load_bundle
    from monitor.config import DetectionConfig

    model = need_shipped_model()
    bundle = load_bundle(model)
    thresholds = DetectionConfig().thresholds(bundle.thresholds, bundle.labels)
    kinds = set()
    for fast in (0.7, None):
        cfg = write_config(tmp_path / "c.yaml", broker, detection={"fast_start_threshold": fast})
        with Subscriber(broker, "soundmon/testnode/detection") as sub:
            d = run_to_end("--source", str(DEMO), "--pace", "fast", "--config", str(cfg), "--model", str(model))
            assert d.proc.returncode == 0, d.text()
            sub.wait_quiet(0.5)
            starts = [m.json() for m in sub.get() if m.json()["type"] == "start"]
        assert len(starts) >= 3 and all(set(p) == START_FIELDS for p in starts)
        if fast is None:
            assert {p["opened_by"] for p in starts} == {"model"}, starts
        kinds |= {p["opened_by"] for p in starts}
        for p in starts:
            opened_at = fast if p["opened_by"] == "start_model" else thresholds[p["label"]]
            assert p["score"] >= opened_at - 1e-4, p
            assert p["peak_score"] >= p["score"]
    assert kinds == {"model", "start_model"}


def test_the_demo_with_the_defaults_has_no_zero_second_event_and_no_start_below_its_threshold(broker, tmp_path):
    """`make demo`'s recording with the shipped model and the defaults (fast start at the bundle's
    0.75): every event lasts at least one hop and every START's score reaches the threshold that
    opened it."""
    from monitor.bundle import load_bundle
    from monitor.config import DetectionConfig

    model = need_shipped_model()
    bundle = load_bundle(model)
    thresholds = DetectionConfig().thresholds(bundle.thresholds, bundle.labels)
    detection = DetectionConfig()
    detection.apply_bundle_defaults(bundle.detection_defaults)
    fast = detection.fast_start_threshold
    assert fast == 0.75
    cfg = write_config(tmp_path / "c.yaml", broker)
    with Subscriber(broker, "soundmon/testnode/detection") as sub:
        d = run_to_end("--source", str(DEMO), "--pace", "fast", "--config", str(cfg), "--model", str(model))
        assert d.proc.returncode == 0, d.text()
        sub.wait_quiet(0.5)
        events = [m.json() for m in sub.get()]
    starts = [p for p in events if p["type"] == "start"]
    ends = [p for p in events if p["type"] == "end"]
    assert {p["label"] for p in starts} >= {"siren", "dog_bark", "gun_shot"}, starts
    assert len(ends) == len(starts)
    assert all(p["duration_s"] >= 0.5 for p in ends), ends
    for p in starts:
        assert p["score"] >= (fast if p["opened_by"] == "start_model" else thresholds[p["label"]]) - 1e-4, p


def test_mqtt_flush_rate_and_max_inflight_reach_the_publisher(broker, tiny_bundle, tmp_path):
    from monitor.config import load_config
    from monitor.daemon import Daemon
    from monitor.runner import open_model

    cfg = load_config(write_config(tmp_path / "c.yaml", broker, mqtt={"flush_rate": 7.5, "max_inflight": 3}))
    bundle, runner = open_model(tiny_bundle, 1)
    daemon = Daemon(cfg, bundle, runner, source=str(DEMO))
    try:
        assert (daemon.publisher.flush_rate, daemon.publisher.window) == (7.5, 3)
    finally:
        daemon.publisher.stop(timeout=0.5)
    cfg.mqtt.flush_rate = 0  # 0 = no cap
    daemon = Daemon(cfg, bundle, runner, source=str(DEMO))
    try:
        assert daemon.publisher.flush_rate is None
    finally:
        daemon.publisher.stop(timeout=0.5)


def test_print_shows_each_detection_and_mqtt_can_be_off(tiny_bundle, tmp_path):
    cfg = write_config(tmp_path / "c.yaml", None, detection={"classes": {"siren": {"threshold": 0.0}}})
    d = run_to_end("--source", str(DEMO), "--pace", "fast", "--print", "--config", str(cfg),
                   "--model", str(tiny_bundle))  # fmt: skip
    assert d.proc.returncode == 0, d.text()
    lines = [x for x in d.out if "siren" in x]
    assert len(lines) == 2 and "START" in lines[0] and "END" in lines[1]


def test_sigterm_ends_open_events_publishes_offline_and_exits_0_within_5s(broker, tiny_bundle, tmp_path):
    cfg = write_config(tmp_path / "c.yaml", broker, detection=all_thresholds(0.0))
    with Subscriber(broker, "soundmon/#") as sub:
        d = DaemonProcess("--source", str(DEMO), "--pace", "realtime", "--config", str(cfg),
                          "--model", str(tiny_bundle))  # fmt: skip
        try:
            starts = sub.wait_count("soundmon/testnode/detection", 10, timeout=20)
            assert all(m.json()["type"] == "start" for m in starts)
            t0 = time.monotonic()
            d.signal(signal.SIGTERM)
            assert d.wait(10) == 0
            assert time.monotonic() - t0 < 5.0
        finally:
            d.kill()
        ends = sub.wait_count("soundmon/testnode/detection", 20, timeout=5)[10:]
        assert {m.json()["id"] for m in ends} == {m.json()["id"] for m in starts}
        assert all(m.json()["type"] == "end" for m in ends)
        sub.wait_for("soundmon/testnode/status", lambda m: m.text == "offline", timeout=5)
    assert "SIGTERM received" in d.text()


def test_sighup_applies_new_thresholds_without_restart(broker, tiny_bundle, tmp_path):
    cfg = write_config(tmp_path / "c.yaml", broker, detection=all_thresholds(1.0))
    with Subscriber(broker, "soundmon/testnode/detection") as sub:
        d = DaemonProcess("--source", str(DEMO), "--pace", "realtime", "--config", str(cfg),
                          "--model", str(tiny_bundle))  # fmt: skip
        try:
            d.wait_log("first window result", timeout=20)
            assert sub.get() == []
            write_config(cfg, broker, detection={"classes": {"siren": {"threshold": 0.0}}})
            d.signal(signal.SIGHUP)
            d.wait_log("reload: configuration applied")
            msg = sub.wait_for("soundmon/testnode/detection", lambda m: m.json()["label"] == "siren", timeout=10)
            assert msg.json()["type"] == "start"
            d.signal(signal.SIGTERM)
            assert d.wait(10) == 0
        finally:
            d.kill()
    assert "audio flowing" in d.text() and d.text().count("audio flowing") == 1  # no restart of audio


def test_sighup_with_a_broken_config_keeps_the_running_one(broker, tiny_bundle, tmp_path):
    cfg = write_config(tmp_path / "c.yaml", broker, detection={"classes": {"siren": {"threshold": 0.0}}})
    with Subscriber(broker, "soundmon/testnode/#") as sub:
        d = DaemonProcess("--source", str(DEMO), "--pace", "realtime", "--config", str(cfg),
                          "--model", str(tiny_bundle))  # fmt: skip
        try:
            d.wait_log("first window result", timeout=20)
            cfg.write_text("detection:\n  hop_seconds: fast\n")
            d.signal(signal.SIGHUP)
            line = d.wait_log("reload refused")
            assert "detection.hop_seconds" in line
            sub.clear()
            sub.wait_for("soundmon/testnode/level", lambda m: True, timeout=5)  # still processing
            assert d.proc.poll() is None
            d.signal(signal.SIGTERM)
            assert d.wait(10) == 0
        finally:
            d.kill()


def test_broker_down_at_start_delivers_once_it_is_up(broker_factory, tiny_bundle, tmp_path):
    broker = broker_factory(start=False, persistence=True)
    cfg = write_config(tmp_path / "c.yaml", broker, detection={"classes": {"siren": {"threshold": 0.0}}})
    d = DaemonProcess("--source", str(DEMO), "--pace", "realtime", "--config", str(cfg),
                      "--model", str(tiny_bundle))  # fmt: skip
    try:
        d.wait_log("detected siren", timeout=20)
        broker.start()
        with Subscriber(broker, "soundmon/testnode/detection") as sub:
            msg = sub.wait_for("soundmon/testnode/detection", lambda m: m.json()["label"] == "siren", timeout=15)
            assert msg.json()["type"] == "start"
        d.signal(signal.SIGTERM)
        assert d.wait(10) == 0
    finally:
        d.kill()


def test_wrong_password_is_logged_once_and_nothing_is_lost(broker_factory, tiny_bundle, tmp_path):
    broker = broker_factory(users={"soundmon": "right"})
    (tmp_path / "pw").write_text("wrong\n")
    cfg = write_config(tmp_path / "c.yaml", broker, detection={"classes": {"siren": {"threshold": 0.0}}},
                       mqtt={"username": "soundmon", "password_file": str(tmp_path / "pw")})  # fmt: skip
    d = run_to_end("--source", str(DEMO), "--pace", "fast", "--config", str(cfg), "--model", str(tiny_bundle))
    assert d.proc.returncode == 0, d.text()
    assert d.text().count("not authorised") == 1
    assert "wrong" not in d.text()
    # The detections wait in the spool; with the right password they go out.
    (tmp_path / "pw").write_text("right\n")
    with Subscriber(broker, "soundmon/testnode/detection", username="soundmon", password="right") as sub:
        run_to_end("--source", str(DEMO), "--pace", "fast", "--config", str(cfg), "--model", str(tiny_bundle))
        msgs = sub.wait_count("soundmon/testnode/detection", 4, timeout=15)
    # one siren event per run (start + end each): the first run's pair came out of the spool
    assert len({m.json()["id"] for m in msgs}) == 2
    assert sorted(m.json()["type"] for m in msgs) == ["end", "end", "start", "start"]


def test_corrupt_model_file_is_one_line_exit_2(tiny_bundle, tmp_path):
    import shutil

    bad = tmp_path / "bad"
    shutil.copy(tiny_bundle.with_suffix(".json"), bad.with_suffix(".json"))
    bad.with_suffix(".tflite").write_bytes(b"\x00garbage" * 100)
    cfg = write_config(tmp_path / "c.yaml", None)
    d = run_to_end("--source", str(DEMO), "--pace", "fast", "--config", str(cfg), "--model", str(bad))
    assert d.proc.returncode == 2
    assert len(d.log) == 1 and "cannot load TFLite model" in d.log[0]


def test_unreadable_config_is_one_line_exit_2(tiny_bundle, tmp_path):
    cfg = tmp_path / "c.yaml"
    cfg.write_bytes(b"\xff\xfe\x00binary")
    d = run_to_end("--source", str(DEMO), "--config", str(cfg), "--model", str(tiny_bundle))
    assert d.proc.returncode == 2 and len(d.log) == 1 and str(cfg) in d.log[0]
    d = run_to_end("--source", str(DEMO), "--config", str(tmp_path / "missing.yaml"), "--model", str(tiny_bundle))
    assert d.proc.returncode == 2 and len(d.log) == 1 and "not found" in d.log[0]


def test_no_input_device_at_start_is_one_line(tiny_bundle, tmp_path):
    cfg = write_config(tmp_path / "c.yaml", None, audio={"device": "no-such-microphone-xyz"})
    d = run_to_end("--source", "mic", "--config", str(cfg), "--model", str(tiny_bundle), timeout=60)
    assert d.proc.returncode != 0
    errors = [x for x in d.log if x.startswith("soundmon run:")]
    assert len(errors) == 1 and "no-such-microphone-xyz" in errors[0]
    assert "Traceback" not in d.text()


def test_nan_inf_clipped_and_silent_audio_do_not_break_the_daemon(broker, tiny_bundle, tmp_path):
    rng = np.random.default_rng(0)
    noise = (0.1 * rng.standard_normal(16000 * 6)).astype(np.float32)
    noise[1000:1100] = np.nan
    noise[5000:5010] = np.inf
    noise[9000:9010] = -np.inf
    noise[20000:40000] *= 40  # heavily clipped beyond full scale
    silent = np.zeros(16000 * 6, np.float32)
    bad_path, silent_path = tmp_path / "bad.wav", tmp_path / "silent.wav"
    sf.write(bad_path, noise, 16000, subtype="FLOAT")
    sf.write(silent_path, silent, 16000, subtype="FLOAT")
    cfg = write_config(tmp_path / "c.yaml", broker, detection={"classes": {"siren": {"threshold": 0.0}}})
    with Subscriber(broker, "soundmon/testnode/stats") as sub:
        d = run_to_end("--source", str(bad_path), "--pace", "fast", "--config", str(cfg), "--model", str(tiny_bundle))
        assert d.proc.returncode == 0, d.text()
        # the last stats (at exit): 6 s, warm start: one window per 0.5 s hop
        stats = sub.wait_for("soundmon/testnode/stats", lambda m: m.json()["windows"] == 12).json()
        assert stats["nonfinite_samples"] == 120
    with Subscriber(broker, "soundmon/testnode/#") as sub:
        d = run_to_end("--source", str(silent_path), "--pace", "fast", "--config", str(cfg),
                       "--model", str(tiny_bundle))  # fmt: skip
        assert d.proc.returncode == 0, d.text()
        # (the first run's stats are retained: wait for this run's, not retained, message)
        stats = sub.wait_for("soundmon/testnode/stats", lambda m: not m.retain and m.json()["windows"] == 12).json()
        assert stats["gated_windows"] == 12
        # Gated windows count as zero scores: the always-on siren still starts (threshold 0) but
        # nothing is inferred on digital silence.
        assert stats["inference_ms_p50"] == 0


def test_spool_full_drops_oldest_and_counts(broker_factory, tiny_bundle, tmp_path):
    broker = broker_factory(start=False)
    cfg = write_config(tmp_path / "c.yaml", broker, detection=all_thresholds(0.0),
                       storage={"spool_max_messages": 10})  # fmt: skip
    d = run_to_end("--source", str(DEMO), "--pace", "fast", "--config", str(cfg), "--model", str(tiny_bundle))
    assert d.proc.returncode == 0, d.text()
    assert "spool" in d.text() and "dropped" in d.text()
    broker.start()
    with Subscriber(broker, "soundmon/testnode/#") as sub:
        run_to_end("--source", str(DEMO), "--pace", "fast", "--config", str(cfg), "--model", str(tiny_bundle))
        stats = sub.wait_for("soundmon/testnode/stats", lambda m: m.json().get("spool_dropped", 0) > 0, timeout=10)
    assert stats.json()["spool_dropped"] >= 10


def test_detection_clips_are_saved_and_named_in_the_end_message(broker, tiny_bundle, tmp_path):
    cfg = write_config(tmp_path / "c.yaml", broker, detection={"classes": {"siren": {"threshold": 0.0}}},
                       storage={"clips_enabled": True, "clip_pre_seconds": 1.0, "clip_post_seconds": 0.5})  # fmt: skip
    with Subscriber(broker, "soundmon/testnode/detection") as sub:
        d = run_to_end("--source", str(DEMO), "--pace", "fast", "--config", str(cfg), "--model", str(tiny_bundle))
        assert d.proc.returncode == 0, d.text()
        end = sub.wait_for("soundmon/testnode/detection", lambda m: m.json()["type"] == "end").json()
    clip = tmp_path / "state" / "clips" / end["clip"]
    info = sf.info(clip)
    assert info.samplerate == 16000 and info.duration > 4.0


def test_stats_and_payloads_are_json(broker, tiny_bundle, tmp_path):
    cfg = write_config(tmp_path / "c.yaml", broker)
    with Subscriber(broker, "soundmon/testnode/stats") as sub:
        run_to_end("--source", str(DEMO), "--pace", "fast", "--config", str(cfg), "--model", str(tiny_bundle))
        payload = sub.wait_for("soundmon/testnode/stats", lambda m: True).text
    json.loads(payload)


def printed_ids(lines: list[str], kind: str) -> set[str]:
    return {line.rsplit("[", 1)[1].rstrip("]") for line in lines if f" {kind} " in line}


@pytest.mark.slow
def test_outage_with_a_daemon_restart_loses_no_event(broker_factory, tiny_bundle, tmp_path):
    """Broker down 30 s while events happen, the daemon restarted meanwhile: every id arrives."""
    broker = broker_factory(persistence=True)
    cfg = write_config(tmp_path / "c.yaml", broker, detection=all_thresholds(0.0))
    args = ("--source", str(DEMO), "--pace", "realtime", "--print", "--config", str(cfg), "--model", str(tiny_bundle))
    with Subscriber(broker, "soundmon/testnode/detection", persistent=True) as sub:
        first = DaemonProcess(*args)
        second = None
        try:
            first.wait_log("MQTT: connected", timeout=20)
            broker.stop()
            t_down = time.monotonic()
            first.wait_log("detected", timeout=20)  # events while the broker is away
            first.signal(signal.SIGTERM)  # a restart during the outage
            assert first.wait(10) == 0
            second = DaemonProcess(*args)
            second.wait_log("detected", timeout=20)
            time.sleep(max(0.0, 30.0 - (time.monotonic() - t_down)))
            broker.start()
            produced = printed_ids(first.out, "START") | printed_ids(second.out, "START")
            assert len(produced) == 20
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline:
                got = {m.json()["id"] for m in sub.get()}
                if produced <= got:
                    break
                time.sleep(0.2)
            second.signal(signal.SIGTERM)
            assert second.wait(10) == 0
        finally:
            first.kill()
            if second is not None:
                second.kill()
        got = {(m.json()["id"], m.json()["type"]) for m in sub.get()}
    assert {(i, "start") for i in produced} <= got
    assert {(i, "end") for i in printed_ids(first.out, "END")} <= got
