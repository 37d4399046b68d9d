"""SIGHUP applies mqtt.* and storage.* too (it used to answer "configuration applied" without).

The real daemon as a child process, real Mosquitto brokers (two of them for a broker change),
the tiny real bundle, the demo recording at real time.
"""

from __future__ import annotations

import signal
import time

from monitor.spool import SPOOL_FILENAME, Spool
from tests.broker import Subscriber
from tests.daemon_helpers import DaemonProcess, all_thresholds, write_config
from tests.paths import DEMO

BASE = "soundmon/testnode"


def start(cfg, bundle, *extra: str) -> DaemonProcess:
    return DaemonProcess("--source", str(DEMO), "--pace", "realtime", "--config", str(cfg),
                         "--model", str(bundle), *extra)  # fmt: skip


def test_sighup_moves_to_another_broker(broker_factory, tiny_bundle, tmp_path):
    """mqtt.port changed + SIGHUP: the old broker sees the open events end and `offline`, the new
    one gets `online`, the states and the detections from then on."""
    first, second = broker_factory(), broker_factory()
    cfg = write_config(tmp_path / "c.yaml", first, detection=all_thresholds(0.0))
    with Subscriber(first, "soundmon/#") as old, Subscriber(second, "soundmon/#") as new:
        d = start(cfg, tiny_bundle)
        try:
            starts = old.wait_count(f"{BASE}/detection", 10, timeout=20)
            write_config(cfg, second, detection=all_thresholds(0.0))
            d.signal(signal.SIGHUP)
            line = d.wait_log("reload: configuration applied")
            assert "needs a restart" not in line
            # the old broker: every event it saw start has ended, all states OFF, node offline
            old.wait_for(f"{BASE}/status", lambda m: m.text == "offline", timeout=10)
            ends = [m.json() for m in old.get(f"{BASE}/detection") if m.json()["type"] == "end"]
            assert {e["id"] for e in ends} == {m.json()["id"] for m in starts}
            assert old.get(f"{BASE}/state/siren")[-1].text == "OFF"
            # the new broker: online, states, and new events (thresholds 0: they start again)
            new.wait_for(f"{BASE}/status", lambda m: m.text == "online", timeout=10)
            msg = new.wait_for(f"{BASE}/detection", lambda m: m.json()["type"] == "start", timeout=15)
            assert msg.json()["id"] not in {m.json()["id"] for m in starts}
            new.wait_for(f"{BASE}/state/{msg.json()['label']}", lambda m: m.text == "ON", timeout=5)
            d.signal(signal.SIGTERM)
            assert d.wait(10) == 0
        finally:
            d.kill()
        new.wait_for(f"{BASE}/status", lambda m: m.text == "offline", timeout=5)
    assert f"MQTT: connected to 127.0.0.1:{second.port}" in d.text()
    assert d.text().count("audio flowing") == 1  # audio was not restarted


def test_sighup_with_a_new_state_dir_moves_the_undelivered_detections(broker_factory, tiny_bundle, tmp_path):
    """Broker down, detections spooled in state A; SIGHUP with storage.state_dir B: the spool
    rows move to B (A's spool is empty), and once the broker is up they are delivered from B.
    A clip setting changed in the same reload is named as needing a restart."""
    broker = broker_factory(start=False)
    a, b = tmp_path / "state_a", tmp_path / "state_b"
    det = {"classes": {"siren": {"threshold": 0.0}}}
    cfg = write_config(tmp_path / "c.yaml", broker, state_dir=a, detection=det)
    d = start(cfg, tiny_bundle, "--print")
    try:
        d.wait_log("detected siren", timeout=20)
        spooled = [x for x in d.out if "START" in x]
        assert spooled
        write_config(cfg, broker, state_dir=b, detection=det, storage={"clips_max_mb": 50})
        d.signal(signal.SIGHUP)
        line = d.wait_log("reload: configuration applied")
        assert "storage.clips_max_mb" in line and "needs a restart" in line
        # the START, and the END of that event (open events end before the publisher restarts)
        assert "moved 2 undelivered detection(s)" in d.wait_log("reload: moved")
        assert (b / SPOOL_FILENAME).is_file()
        with Spool(a) as old:
            assert old.depth == 0
        broker.start()
        with Subscriber(broker, f"{BASE}/detection") as sub:
            msgs = sub.wait_count(f"{BASE}/detection", 2, timeout=15)
        first = [m.json() for m in msgs[:2]]
        assert [p["type"] for p in first] == ["start", "end"] and {p["label"] for p in first} == {"siren"}
        assert first[0]["id"] == first[1]["id"] and first[0]["id"] in spooled[0]
        d.signal(signal.SIGTERM)
        assert d.wait(10) == 0
    finally:
        d.kill()


def test_sighup_with_an_unusable_state_dir_keeps_the_running_config(broker, tiny_bundle, tmp_path):
    cfg = write_config(tmp_path / "c.yaml", broker)
    (tmp_path / "afile").write_text("x")
    d = start(cfg, tiny_bundle)
    try:
        d.wait_log("MQTT: connected", timeout=20)
        write_config(cfg, broker, state_dir=tmp_path / "afile" / "state")
        d.signal(signal.SIGHUP)
        line = d.wait_log("reload refused")
        assert "storage.state_dir" in line
        d.signal(signal.SIGTERM)
        assert d.wait(10) == 0
    finally:
        d.kill()
    assert d.text().count("MQTT: connected") == 1


def test_sighup_keeps_the_values_set_over_mqtt_over_a_new_file_and_a_new_state_dir(broker, tiny_bundle, tmp_path):
    """A threshold set over MQTT stays in force through a SIGHUP that changes the file and the
    state dir: overrides.json moves with the state dir, and the echo is unchanged."""
    a, b = tmp_path / "state_a", tmp_path / "state_b"
    cfg = write_config(tmp_path / "c.yaml", broker, state_dir=a, detection=all_thresholds(1.0))
    with Subscriber(broker, f"{BASE}/#") as sub:
        d = start(cfg, tiny_bundle)
        try:
            sub.wait_for(f"{BASE}/config/siren/threshold", lambda m: m.text == "1", timeout=20)
            sub.client.publish(f"{BASE}/set/siren/threshold", "0", qos=1).wait_for_publish(5)
            sub.wait_for(f"{BASE}/detection", lambda m: m.json()["label"] == "siren", timeout=10)
            write_config(cfg, broker, state_dir=b, detection=all_thresholds(0.9))
            d.signal(signal.SIGHUP)
            d.wait_log("reload: configuration applied")
            assert f"values set over MQTT moved to {b / 'overrides.json'}" in d.text()
            # the new publisher's connect: siren still at the MQTT value, the rest at the new file's
            sub.wait_for(f"{BASE}/config/dog_bark/threshold", lambda m: m.text == "0.9", timeout=10)
            assert sub.get(f"{BASE}/config/siren/threshold")[-1].text == "0"
            d.signal(signal.SIGTERM)
            assert d.wait(10) == 0
        finally:
            d.kill()
    assert (b / "overrides.json").read_text() == (a / "overrides.json").read_text()
    assert '"siren": 0.0' in (b / "overrides.json").read_text()


def test_sighup_to_a_model_without_a_label_drops_its_value_set_over_mqtt(broker, tiny_bundle, tmp_path):
    """A model change: values set over MQTT for labels the new model has stay in force, the
    others no longer apply and their echoes are cleared (empty retained payloads)."""
    import json
    import shutil

    other = tmp_path / "other"  # the tiny model with "siren" renamed "alarm"
    shutil.copy(tiny_bundle.with_suffix(".tflite"), other.with_suffix(".tflite"))
    other.with_suffix(".json").write_text(tiny_bundle.with_suffix(".json").read_text().replace('"siren"', '"alarm"'))
    state = tmp_path / "state"
    state.mkdir()
    (state / "overrides.json").write_text(json.dumps({"thresholds": {"siren": 0.25, "dog_bark": 0.75}}))
    cfg = write_config(tmp_path / "c.yaml", broker, state_dir=state, model={"path": str(tiny_bundle)})
    with Subscriber(broker, f"{BASE}/config/#") as sub:
        d = DaemonProcess("--source", str(DEMO), "--pace", "realtime", "--config", str(cfg))
        try:
            sub.wait_for(f"{BASE}/config/siren/threshold", lambda m: m.text == "0.25", timeout=20)
            write_config(cfg, broker, state_dir=state, model={"path": str(other)})
            d.signal(signal.SIGHUP)
            d.wait_log("reload: configuration applied")
            sub.wait_for(f"{BASE}/config/siren/threshold", lambda m: m.payload == b"", timeout=10)
            sub.wait_for(f"{BASE}/config/alarm/threshold", timeout=10)
            assert sub.get(f"{BASE}/config/dog_bark/threshold")[-1].text == "0.75"
            d.signal(signal.SIGTERM)
            assert d.wait(10) == 0
        finally:
            d.kill()
    assert "in force: dog_bark threshold 0.75, siren threshold 0.25 (" in d.text()  # at start
    assert f"in force: dog_bark threshold 0.75 ({state / 'overrides.json'})" in d.text()  # after the reload


def retained(broker, pattern: str = "#") -> dict[str, bytes]:
    """The broker's retained messages now (a fresh subscriber gets those; an empty payload that
    arrives after one of them empties its topic)."""
    out: dict[str, bytes] = {}
    with Subscriber(broker, pattern) as sub:
        time.sleep(0.3)  # the retained copies follow the subscription's acknowledgement
        sub.wait_quiet(0.3)
        for m in sub.get():
            if m.payload:
                out[m.topic] = m.payload
            else:
                out.pop(m.topic, None)
    return out


def retained_once(broker, ready, timeout: float = 10.0) -> dict[str, bytes]:
    """`retained` once `ready(it)` holds (the daemon's publishes travel on their own connection:
    a log line can come before the broker has them), or the last look at the deadline."""
    deadline = time.monotonic() + timeout
    while True:
        left = retained(broker)
        if ready(left) or time.monotonic() > deadline:
            return left


def test_a_renamed_node_takes_its_old_topics_away(broker, tiny_bundle, tmp_path):
    """mqtt.node_id renamed, by SIGHUP and then across a restart: the old name's Home Assistant
    entities, states, echoes and status are emptied (HA kept a second, unavailable device for
    good), and the new name's are there."""
    cfg = write_config(tmp_path / "c.yaml", broker)
    d = start(cfg, tiny_bundle)
    try:
        d.wait_log("MQTT: connected")
        d.wait_log("audio flowing")
        left = retained_once(broker, lambda r: any(t.startswith("homeassistant/binary_sensor/testnode/") for t in r))
        assert any(t.startswith("homeassistant/binary_sensor/testnode/") for t in left), left
        write_config(cfg, broker, mqtt={"node_id": "garage"})
        d.signal(signal.SIGHUP)
        d.wait_log("removed")
        d.wait_log("reload: configuration applied")
        left = retained_once(broker, lambda r: not [t for t in r if "testnode" in t])
        assert not [t for t in left if "testnode" in t], left
        assert any(t.startswith("homeassistant/binary_sensor/garage/") for t in left)
        assert left["soundmon/garage/status"] == b"online"
        d.signal(signal.SIGTERM)
        assert d.wait(10) == 0
    finally:
        d.kill()
    write_config(cfg, broker, mqtt={"node_id": "cellar"})  # renamed while stopped
    d = start(cfg, tiny_bundle)
    try:
        d.wait_log("removed")
        left = retained_once(broker, lambda r: not [t for t in r if "garage" in t or "testnode" in t])
        assert not [t for t in left if "garage" in t or "testnode" in t], left
        assert any(t.startswith("homeassistant/binary_sensor/cellar/") for t in left)
        d.signal(signal.SIGTERM)
        assert d.wait(10) == 0
    finally:
        d.kill()
