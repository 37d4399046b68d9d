"""Tuning over MQTT (issue #22) with the real parts: a real Mosquitto, the real daemon as a child
process, the demo street recording, the shipped model (or the tiny real one where the scores
must be pinned).

The contract these tests use, as a user or Home Assistant would:
- `<base>/set/<label>/threshold` <- a number in [0, 1]; an empty payload = back to the configured value
- `<base>/set/<label>/enabled`   <- `ON` / `OFF`; an empty payload = back to the configured value
- `<base>/config/<label>/threshold|enabled` -> the value in force (retained, QoS 1), at every
  connect and after every change
- `<base>/scores` -> the newest window's top labels every `detection.scores_interval` s of audio
A value set over MQTT wins over config.yaml (which wins over the bundle's default), survives a
restart (`<state_dir>/overrides.json`) and is re-applied over the file at SIGHUP.
"""

from __future__ import annotations

import json
import signal
import time
from datetime import datetime
from pathlib import Path

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from tests.broker import Broker, Subscriber
from tests.daemon_helpers import LABELS, DaemonProcess, all_thresholds, run_to_end, write_config
from tests.paths import DEMO, need_shipped_model

BASE = "soundmon/testnode"
DETECTION = f"{BASE}/detection"


def start(cfg: Path, model: Path, pace: str = "realtime") -> DaemonProcess:
    return DaemonProcess("--source", str(DEMO), "--pace", pace, "--config", str(cfg), "--model", str(model))


def send(sub: Subscriber, topic: str, payload: str | bytes, retain: bool = False) -> None:
    """Publish a command (QoS 1, as Home Assistant does) and wait until the broker has it."""
    sub.client.publish(topic, payload, qos=1, retain=retain).wait_for_publish(5)


def echo(sub: Subscriber, label: str, key: str, value: str, timeout: float = 10.0):
    return sub.wait_for(f"{BASE}/config/{label}/{key}", lambda m: m.text == value, timeout=timeout)


def starts(sub: Subscriber, label: str | None = None) -> list[dict]:
    return [p for p in (m.json() for m in sub.get(DETECTION)) if p["type"] == "start" and label in (None, p["label"])]


def test_a_class_disabled_over_mqtt_ends_its_open_event_and_enabled_again_starts_anew(broker, tmp_path):
    """The demo's siren (2-13 s) is detected; `set/siren/enabled OFF` ends that event at once
    (END, state OFF), no siren START follows while it is off although the siren still sounds,
    and `ON` lets it start again."""
    model = need_shipped_model()
    cfg = write_config(tmp_path / "c.yaml", broker)
    with Subscriber(broker, f"{BASE}/#") as sub:
        d = start(cfg, model)
        try:
            echo(sub, "siren", "enabled", "ON", timeout=20)  # the value in force, from the connect on
            first = sub.wait_for(DETECTION, lambda m: m.json()["label"] == "siren", timeout=20).json()
            assert first["type"] == "start"
            sent = time.monotonic()
            send(sub, f"{BASE}/set/siren/enabled", "OFF")
            end = sub.wait_for(DETECTION, lambda m: m.json()["type"] == "end" and m.json()["id"] == first["id"])
            assert end.json()["label"] == "siren"
            # (the state is published at once, the END through the spool: either may come first)
            sub.wait_for(f"{BASE}/state/siren", lambda m: m.text == "OFF" and m.time >= sent)
            echo(sub, "siren", "enabled", "OFF")
            d.wait_log("control: siren disabled (set over MQTT; config: enabled)")
            time.sleep(2.5)  # the siren goes on until 13 s of the recording
            assert [p["id"] for p in starts(sub, "siren")] == [first["id"]]
            send(sub, f"{BASE}/set/siren/enabled", "ON")
            again = sub.wait_for(DETECTION, lambda m: m.json()["label"] == "siren" and m.json()["id"] != first["id"])
            assert again.json()["type"] == "start"
            echo(sub, "siren", "enabled", "ON")
            d.signal(signal.SIGTERM)
            assert d.wait(10) == 0
        finally:
            d.kill()
    assert "control: siren enabled (set over MQTT; config: enabled)" in d.text()
    assert json.loads((tmp_path / "state" / "overrides.json").read_text())["enabled"] == {"siren": True}


def test_values_set_over_mqtt_survive_a_restart_and_decide_the_detections_of_a_recording(broker, tmp_path):
    """Set over MQTT during one run, kept in overrides.json, in force for the next run from its
    start: of the demo's siren, dog bark and gun shot only the dog bark is detected then.

    (Fast start off: its brief children_playing events on the demo are not what this test is
    about. That a fast start respects a class threshold of 1 is tested in test_fast_start.py.)"""
    model = need_shipped_model()
    cfg = write_config(tmp_path / "c.yaml", broker, detection={"fast_start_threshold": None})
    with Subscriber(broker, f"{BASE}/#") as sub:
        d = start(cfg, model)
        try:
            echo(sub, "siren", "threshold", "0.5", timeout=20)  # the bundle's default
            send(sub, f"{BASE}/set/siren/threshold", "1")
            send(sub, f"{BASE}/set/gun_shot/enabled", "off")  # any case
            echo(sub, "siren", "threshold", "1")
            echo(sub, "gun_shot", "enabled", "OFF")
            d.wait_log("control: siren threshold 1 (set over MQTT; model default 0.5)")
            d.wait_log("control: gun_shot disabled (set over MQTT; config: enabled)")
            d.signal(signal.SIGTERM)
            assert d.wait(10) == 0
        finally:
            d.kill()
    saved = json.loads((tmp_path / "state" / "overrides.json").read_text())
    assert saved == {"enabled": {"gun_shot": False}, "thresholds": {"siren": 1.0}}

    with Subscriber(broker, f"{BASE}/#") as sub:
        sub.wait_quiet(0.3)
        sub.clear()  # the retained echoes of the first run
        d = run_to_end("--source", str(DEMO), "--pace", "fast", "--config", str(cfg), "--model", str(model))
        assert d.proc.returncode == 0, d.text()
        sub.wait_for(f"{BASE}/status", lambda m: m.text == "offline")
        seen = [(m.topic, m.text) for m in sub.get()]
    assert "control: values set over MQTT in force: siren threshold 1, gun_shot disabled" in d.text()
    online = seen.index((f"{BASE}/status", "online"))  # the echoes of this connect come before it
    assert {(f"{BASE}/config/siren/threshold", "1"), (f"{BASE}/config/gun_shot/enabled", "OFF"),
            (f"{BASE}/config/dog_bark/threshold", "0.5")} <= set(seen[:online])  # fmt: skip
    started = {json.loads(text)["label"] for topic, text in seen if topic == DETECTION}
    assert started == {"dog_bark"}  # without the overrides: siren, dog_bark, gun_shot


def test_an_empty_threshold_returns_to_the_configured_value_and_sighup_keeps_the_mqtt_value(
    broker, tiny_bundle, tmp_path
):
    """config.yaml says 1 (never); MQTT says 0 (always on): the siren starts. A SIGHUP with a new
    file keeps the MQTT value (it wins) and echoes what the file changed; an empty payload then
    returns the siren to the file's value."""
    cfg = write_config(tmp_path / "c.yaml", broker, detection=all_thresholds(1.0))
    with Subscriber(broker, f"{BASE}/#") as sub:
        d = start(cfg, tiny_bundle)
        try:
            echo(sub, "siren", "threshold", "1", timeout=20)
            d.wait_log("first window result", timeout=20)
            send(sub, f"{BASE}/set/siren/threshold", "0")
            echo(sub, "siren", "threshold", "0")
            sub.wait_for(DETECTION, lambda m: m.json()["label"] == "siren", timeout=10)
            d.wait_log("control: siren threshold 0 (set over MQTT; config 1)")

            write_config(cfg, broker, detection=all_thresholds(0.9))
            sub.clear()
            d.signal(signal.SIGHUP)
            d.wait_log("reload: configuration applied")
            echo(sub, "dog_bark", "threshold", "0.9")  # changed in the file: echoed after the reload
            sub.wait_quiet(0.5)
            assert not sub.get(f"{BASE}/config/siren/threshold")  # still 0: the MQTT value wins
            assert [p["type"] for p in (m.json() for m in sub.get(DETECTION))] == []  # siren stays on

            send(sub, f"{BASE}/set/siren/threshold", "")
            echo(sub, "siren", "threshold", "0.9")
            d.wait_log("control: siren threshold 0.9 (back to the config value)")
            send(sub, f"{BASE}/set/dog_bark/enabled", "OFF")  # and the same for enabled
            echo(sub, "dog_bark", "enabled", "OFF")
            send(sub, f"{BASE}/set/dog_bark/enabled", "")
            echo(sub, "dog_bark", "enabled", "ON")
            d.wait_log("control: dog_bark enabled (back to the default)")
            d.signal(signal.SIGTERM)
            assert d.wait(10) == 0
        finally:
            d.kill()
    assert json.loads((tmp_path / "state" / "overrides.json").read_text()) == {"enabled": {}, "thresholds": {}}


BAD_COMMANDS: list[tuple[str, bytes]] = [
    (f"{BASE}/set/siren/threshold", b"0" * 1_000_000),  # huge
    (f"{BASE}/set/siren/threshold", b"nan"),
    (f"{BASE}/set/siren/threshold", b"inf"),
    (f"{BASE}/set/siren/threshold", b"-0.1"),
    (f"{BASE}/set/siren/threshold", b"1.5"),
    (f"{BASE}/set/siren/threshold", b'{"value": 0.3}'),  # JSON is not a number
    (f"{BASE}/set/siren/threshold", b"0x1p-2"),
    (f"{BASE}/set/siren/threshold", b"\xff\xfe\x00"),  # not UTF-8
    (f"{BASE}/set/siren/enabled", b"true"),
    (f"{BASE}/set/siren/enabled", b"1"),
    (f"{BASE}/set/cat/threshold", b"0.3"),  # not a label of the model
    (f"{BASE}/set/%2e%2e/threshold", b"0.3"),
    (f"{BASE}/set/..%2f..%2fetc/threshold", b"0.3"),
    (f"{BASE}/set/SIREN/threshold", b"0.3"),
    (f"{BASE}/set/siren /threshold", b"0.3"),
    (f"{BASE}/set/{'x' * 60_000}/threshold", b"0.3"),
]


def test_garbage_and_a_flood_of_commands_change_nothing_and_cannot_fill_the_journal(broker, tiny_bundle, tmp_path):
    """Bad payloads, wrong types, NaN, unknown labels, topic tricks, a retained command, a NUL in
    a topic (the broker itself drops that client) and 10,000 bad messages in a burst: the
    daemon keeps running and detecting, logs a bounded number of lines, writes nothing but its
    own files in its state dir, and a valid command afterwards still works."""
    state = tmp_path / "state"
    cfg = write_config(tmp_path / "c.yaml", broker, state_dir=state, detection=all_thresholds(1.0))
    with Subscriber(broker, "none") as early:  # a retained command waiting before the daemon starts
        send(early, f"{BASE}/set/siren/threshold", "0", retain=True)
    before = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*"))
    with Subscriber(broker, f"{BASE}/#") as sub:
        d = start(cfg, tiny_bundle)
        try:
            echo(sub, "siren", "threshold", "1", timeout=20)
            d.wait_log("control: ignored the retained command on soundmon/testnode/set/siren/threshold")
            for topic, payload in BAD_COMMANDS:
                send(sub, topic, payload)
            nul = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="nul-sender")
            nul.connect(broker.host, broker.port)
            nul.publish(f"{BASE}/set/sir\x00en/threshold", "0.3", qos=0)  # the broker disconnects it
            nul.loop(0.5)
            flood = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="flooder")
            flood.connect(broker.host, broker.port)
            flood.loop_start()
            for i in range(10_000):
                flood.publish(f"{BASE}/set/{LABELS[i % 10]}/threshold", f"{i + 1}.5", qos=0)  # all above 1
            flood.publish(f"{BASE}/set/siren/enabled", "maybe", qos=1).wait_for_publish(10)
            flood.disconnect()
            flood.loop_stop()
            time.sleep(2.0)  # the daemon drains what it got
            assert d.proc.poll() is None
            assert {m.text for m in sub.get(f"{BASE}/config/siren/threshold")} == {"1"}  # unchanged
            assert starts(sub) == []  # every threshold is still 1: nothing fired
            send(sub, f"{BASE}/set/siren/threshold", "0.25")  # still listening
            echo(sub, "siren", "threshold", "0.25")
            stats = sub.wait_for(f"{BASE}/stats", lambda m: m.json()["audio_seconds"] > 0, timeout=5).json()
            assert stats["status"] == "ok"
            d.signal(signal.SIGTERM)
            assert d.wait(10) == 0
        finally:
            d.kill()
    control_lines = [x for x in d.log if "control:" in x or "commands" in x]
    assert 16 <= len(control_lines) <= 40, "\n".join(control_lines)
    assert "control: siren threshold 0.25 (set over MQTT; config 1)" in control_lines[-1]
    assert "Traceback" not in d.text()
    after = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*"))
    new = {p for p in after if p not in before}
    own = {"overrides.json", "announced.json", "spool.sqlite3", "spool.sqlite3-wal", "spool.sqlite3-shm"}
    assert new <= {Path("state")} | {Path("state") / name for name in own}, new
    assert json.loads((state / "overrides.json").read_text()) == {"enabled": {}, "thresholds": {"siren": 0.25}}


def test_control_off_ignores_commands_and_the_values_set_before(broker, tiny_bundle, tmp_path):
    """mqtt.control: false: nothing is subscribed, and what overrides.json holds from earlier is
    not applied (config.yaml alone decides); the echoes still say what is in force."""
    state = tmp_path / "state"
    state.mkdir()
    (state / "overrides.json").write_text(json.dumps({"thresholds": {"siren": 0.0}, "enabled": {}}))
    cfg = write_config(tmp_path / "c.yaml", broker, state_dir=state, detection=all_thresholds(1.0),
                       mqtt={"control": False})  # fmt: skip
    with Subscriber(broker, f"{BASE}/#") as sub:
        d = start(cfg, tiny_bundle)
        try:
            echo(sub, "siren", "threshold", "1", timeout=20)
            d.wait_log("first window result", timeout=20)
            send(sub, f"{BASE}/set/siren/threshold", "0")
            send(sub, f"{BASE}/set/dog_bark/threshold", "0")
            time.sleep(1.5)
            assert starts(sub) == []
            assert {m.text for m in sub.get(f"{BASE}/config/siren/threshold")} == {"1"}
            d.signal(signal.SIGTERM)
            assert d.wait(10) == 0
        finally:
            d.kill()
    assert "mqtt.control is false: the values set over MQTT" in d.text()
    assert "control: siren" not in d.text() and "control: ignored" not in d.text()


def iso(text: str) -> datetime:
    assert text.endswith("Z")
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def test_scores_show_the_top_labels_of_the_newest_window(broker: Broker, tmp_path):
    """`<base>/scores` once per second of audio (QoS 0, not retained): the 5 top labels by the
    smoothed score the threshold is compared with, each with its display name and the window's
    own (raw) score; the demo's siren leads while it sounds. scores_interval 0: none, and Home
    Assistant's Top sensors, which read them, are not announced."""
    model = need_shipped_model()
    cfg = write_config(tmp_path / "c.yaml", broker)
    with Subscriber(broker, f"{BASE}/scores") as sub:
        d = run_to_end("--source", str(DEMO), "--pace", "fast", "--config", str(cfg), "--model", str(model))
        assert d.proc.returncode == 0, d.text()
        sub.wait_quiet(0.5)
        msgs = sub.get()
    assert len(msgs) >= 25 and {(m.qos, m.retain) for m in msgs} == {(0, False)}
    with Subscriber(broker, "homeassistant/sensor/testnode/top_sound/config") as ha:
        assert ha.wait_for("homeassistant/sensor/testnode/top_sound/config").json()["state_topic"] == f"{BASE}/scores"
    payloads = [m.json() for m in msgs]
    for p in payloads:
        assert set(p) == {"time", "stream_offset_s", "dbfs", "top"}
        assert -200 <= p["dbfs"] <= 0 and iso(p["time"])
        assert len(p["top"]) == 5 and all(set(x) == {"label", "name", "score", "raw"} for x in p["top"])
        scores = [x["score"] for x in p["top"]]
        assert scores == sorted(scores, reverse=True) and all(0 <= x["raw"] <= 1 for x in p["top"])
        assert len({x["label"] for x in p["top"]}) == 5
    offsets = [p["stream_offset_s"] for p in payloads]
    assert all(b - a >= 0.99 for a, b in zip(offsets, offsets[1:], strict=False))  # one per second of audio
    assert all(iso(b["time"]) > iso(a["time"]) for a, b in zip(payloads, payloads[1:], strict=False))
    siren = [p["top"][0] for p in payloads if 4.0 <= p["stream_offset_s"] <= 11.0]
    assert siren and all(x["label"] == "siren" and x["name"] == "Siren" for x in siren)

    cfg = write_config(tmp_path / "c.yaml", broker, detection={"scores_interval": 0})
    with Subscriber(broker, [f"{BASE}/#", "homeassistant/#"]) as sub:
        d = run_to_end("--source", str(DEMO), "--pace", "fast", "--config", str(cfg), "--model", str(model))
        assert d.proc.returncode == 0, d.text()
        sub.wait_for(f"{BASE}/status", lambda m: m.text == "offline")
    assert not sub.get(f"{BASE}/scores")
    assert sub.get("homeassistant/sensor/testnode/top_sound/config")[-1].payload == b""  # removed


def test_a_broken_overrides_file_is_logged_and_the_daemon_runs_on_the_configured_values(broker, tiny_bundle, tmp_path):
    state = tmp_path / "state"
    state.mkdir()
    (state / "overrides.json").write_text('{"thresholds": {"siren": 0.0')  # cut short by a crash
    cfg = write_config(tmp_path / "c.yaml", broker, state_dir=state, detection=all_thresholds(1.0))
    with Subscriber(broker, f"{BASE}/#") as sub:
        d = run_to_end("--source", str(DEMO), "--pace", "fast", "--config", str(cfg), "--model", str(tiny_bundle))
        assert d.proc.returncode == 0, d.text()
        echo(sub, "siren", "threshold", "1")
    line = next(x for x in d.log if "overrides.json" in x)
    assert line.startswith("WARNING") and "unreadable" in line and "starting without values set over MQTT" in line
    assert starts(sub) == []
