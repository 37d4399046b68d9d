"""The MQTT publisher against a real mosquitto: the contract topics, HA discovery, and delivery
of detections through outages, restarts and refused logins (nothing mocked)."""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from monitor import discovery
from monitor.config import MqttConfig, StorageConfig
from monitor.errors import ConfigError
from monitor.publisher import Publisher
from tests.broker import Broker, Subscriber, make_tls_files

REPO = Path(__file__).resolve().parent.parent
LABELS = ["dog_bark", "siren", "car_horn"]
LOGGER = "test.soundmon.mqtt"


def wait_until(cond: Callable[[], bool], timeout: float = 5.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.01)


def detection(i: int, **extra: Any) -> dict[str, Any]:
    return {
        "id": f"evt-{i}",
        "type": "start",
        "label": "siren",
        "score": 0.87,
        "peak_score": 0.93,
        "time": "2024-05-01T12:00:00.250Z",
        "stream_offset_s": 12.5 + i,
        "node": "n",
        "model": "urban10",
        **extra,
    }


def settled(broker: Broker, topic: str, predicate: Callable[[Any], bool] | None = None) -> None:
    """Wait until the broker has `topic` (live or retained): a subscriber joining afterwards is
    then sure to get the retained copy with its retain flag set (live deliveries have it clear)."""
    with Subscriber(broker, topic) as probe:
        probe.wait_for(topic, predicate, timeout=10)


def ids(msgs: list[Any]) -> list[str]:
    return [m.json()["id"] for m in msgs]


@pytest.fixture
def make_pub(tmp_path: Path) -> Iterator[Callable[..., Publisher]]:
    """Build publishers (state_dir under tmp_path unless given); all stopped at teardown."""
    made: list[Publisher] = []

    def make(
        cfg: MqttConfig,
        *,
        state_dir: Path | None = None,
        labels: list[str] | None = None,
        start: bool = True,
        spool_max: int = 1000,
        **kw: Any,
    ) -> Publisher:
        storage = StorageConfig(
            state_dir=state_dir or tmp_path / "state", spool_max_messages=spool_max
        )
        pub = Publisher(cfg, storage, LABELS if labels is None else labels, "urban10",
                        logger=logging.getLogger(LOGGER), **kw)  # fmt: skip
        made.append(pub)
        if start:
            pub.start()
        return pub

    yield make
    for pub in made:
        pub.stop(timeout=1.0)


def mqtt_logs(caplog: pytest.LogCaptureFixture, text: str) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == LOGGER and text in r.getMessage()]


# ---------------------------------------------------------------- status, will, detections


def test_status_online_retained_then_offline_on_stop(
    broker: Broker, make_pub: Callable[..., Publisher]
) -> None:
    pub = make_pub(broker.mqtt_config(node_id="st"))
    wait_until(lambda: pub.connected, what="connected")
    assert pub.state == "connected"
    settled(broker, "soundmon/st/status")
    with Subscriber(broker, "soundmon/st/status") as late:  # joins after: gets the retained one
        m = late.wait_for("soundmon/st/status")
        assert m.text == "online" and m.retain and m.qos == 1
        pub.stop()
        assert late.wait_for("soundmon/st/status", lambda m: m.text == "offline").text == "offline"
    assert pub.state == "stopped"
    with Subscriber(broker, "soundmon/st/status") as after:
        m = after.wait_for("soundmon/st/status")
        assert m.text == "offline" and m.retain


_CHILD = textwrap.dedent(
    """
    import sys, time
    from monitor.config import MqttConfig, StorageConfig
    from monitor.publisher import Publisher
    cfg = MqttConfig(host="127.0.0.1", port=int(sys.argv[1]), node_id="will", reconnect_max_seconds=0.5)
    pub = Publisher(cfg, StorageConfig(state_dir=sys.argv[2]), ["siren"], "urban10")
    pub.start()
    while not pub.connected:
        time.sleep(0.01)
    print("connected", flush=True)
    time.sleep(120)
    """
)


def test_last_will_offline_when_the_process_dies(broker: Broker, tmp_path: Path) -> None:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    child = subprocess.Popen(
        [sys.executable, "-c", _CHILD, str(broker.port), str(tmp_path / "state")],
        stdout=subprocess.PIPE, cwd=REPO, env=env, text=True,
    )  # fmt: skip
    try:
        with Subscriber(broker, "soundmon/will/status") as sub:
            assert child.stdout is not None and child.stdout.readline().strip() == "connected"
            sub.wait_for("soundmon/will/status", lambda m: m.text == "online")
            child.send_signal(signal.SIGKILL)  # no chance to say goodbye: the broker sends the will
            child.wait(10)
            sub.wait_for("soundmon/will/status", lambda m: m.text == "offline")
        with Subscriber(broker, "soundmon/will/status") as after:
            m = after.wait_for("soundmon/will/status")
            assert m.text == "offline" and m.retain  # the will is retained too
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()


def test_detection_arrives_with_every_field_intact(
    broker: Broker, make_pub: Callable[..., Publisher]
) -> None:
    with Subscriber(broker, "soundmon/det/#") as sub:
        pub = make_pub(broker.mqtt_config(node_id="det"))
        wait_until(lambda: pub.connected)
        start = detection(1, label="dog_bark", note="ünïcødé ✓")
        end = {**start, "type": "end", "end_time": "2024-05-01T12:00:03.750Z", "duration_s": 3.5}
        pub.publish_detection(start)
        pub.publish_detection(end)
        got = sub.wait_count("soundmon/det/detection", 2)
        assert [m.json() for m in got] == [start, end]
        assert all(m.qos == 1 and not m.retain for m in got)
        wait_until(lambda: pub.spool_depth == 0 and pub.published == 2, what="PUBACKs")
        sub.wait_quiet(0.3)
        assert len(sub.get("soundmon/det/detection")) == 2  # exactly once while connected


def test_stop_waits_for_outstanding_pubacks(
    broker: Broker, make_pub: Callable[..., Publisher], tmp_path: Path
) -> None:
    with Subscriber(broker, "soundmon/sw/detection") as sub:
        pub = make_pub(broker.mqtt_config(node_id="sw"))
        wait_until(lambda: pub.connected)
        for i in range(50):
            pub.publish_detection(detection(i))
        pub.stop(timeout=5.0)  # right away: the daemon shuts down after a burst
        assert pub.spool_depth == 0 and pub.published == 50
        assert len(sub.wait_count("soundmon/sw/detection", 50)) == 50
    with Publisher(
        broker.mqtt_config(node_id="sw"), StorageConfig(state_dir=tmp_path / "state"), LABELS, "m"
    ) as again:
        assert again.spool_depth == 0  # nothing left to re-send after a clean stop


def test_puback_before_mid_is_recorded_still_acks(
    broker: Broker, make_pub: Callable[..., Publisher]
) -> None:
    """Force the race between paho's thread (PUBACK) and ours (recording the mid)."""
    pub = make_pub(broker.mqtt_config(node_id="race"))
    wait_until(lambda: pub.connected)
    client = pub._client
    assert client is not None
    real_publish = client.publish

    def slow_publish(*args: Any, **kwargs: Any) -> Any:
        info = real_publish(*args, **kwargs)
        if kwargs.get("qos") == 1 and args[0].endswith("/detection"):
            deadline = time.monotonic() + 5
            while not info.is_published() and time.monotonic() < deadline:
                time.sleep(0.001)  # return only after on_publish ran for this mid
        return info

    client.publish = slow_publish  # type: ignore[method-assign]
    for i in range(5):
        pub.publish_detection(detection(i))
    wait_until(lambda: pub.spool_depth == 0, what="early PUBACKs matched")
    assert pub.published == 5


def test_numpy_and_nan_values_are_sent_as_plain_json(
    broker: Broker, make_pub: Callable[..., Publisher]
) -> None:
    np = pytest.importorskip("numpy")
    with Subscriber(broker, "soundmon/np/detection") as sub:
        pub = make_pub(broker.mqtt_config(node_id="np"))
        wait_until(lambda: pub.connected)
        pub.publish_detection(
            {"id": "x", "score": np.float32(0.5), "peak_score": float("nan"), "n": np.int64(3)}
        )
        assert sub.wait_for("soundmon/np/detection").json() == {
            "id": "x",
            "score": 0.5,
            "peak_score": None,
            "n": 3,
        }


def test_retained_states_and_republish_after_broker_restart(
    broker: Broker, make_pub: Callable[..., Publisher]
) -> None:
    pub = make_pub(broker.mqtt_config(node_id="rs"))
    wait_until(lambda: pub.connected)
    with Subscriber(broker, "soundmon/rs/state/#") as sub:
        pub.set_state("siren", True)
        pub.set_state("dog_bark", True)
        pub.set_state("dog_bark", False)
        # the retained OFF of the connect comes first: every watched label has a state
        sub.wait_for("soundmon/rs/state/dog_bark", lambda m: m.text == "OFF" and not m.retain)
        live = [m.text for m in sub.get("soundmon/rs/state/dog_bark") if not m.retain]
        assert live == ["ON", "OFF"]
        assert sub.wait_for("soundmon/rs/state/siren").qos == 1
    # the broker forgets everything (no persistence): the publisher re-sends its states
    broker.restart()
    settled(broker, "soundmon/rs/state/siren")
    settled(broker, "soundmon/rs/state/dog_bark")
    assert pub.connected
    with Subscriber(broker, "soundmon/rs/#") as late:
        siren = late.wait_for("soundmon/rs/state/siren")
        bark = late.wait_for("soundmon/rs/state/dog_bark")
        assert (siren.text, siren.retain, bark.text, bark.retain) == ("ON", True, "OFF", True)
        assert late.wait_for("soundmon/rs/status").text == "online"


def test_level_qos0_and_stats_retained(broker: Broker, make_pub: Callable[..., Publisher]) -> None:
    pub = make_pub(broker.mqtt_config(node_id="lv"))
    wait_until(lambda: pub.connected)
    with Subscriber(broker, "soundmon/lv/#") as sub:
        pub.publish_level({"time": "2024-05-01T12:00:00Z", "dbfs": -42.5})
        m = sub.wait_for("soundmon/lv/level")
        assert m.json() == {"time": "2024-05-01T12:00:00Z", "dbfs": -42.5}
        assert m.qos == 0 and not m.retain
        pub.publish_stats({"uptime_s": 12.0, "windows": 3, "model": "urban10"})
        s = sub.wait_for("soundmon/lv/stats")
        assert s.qos == 0
        assert s.json() == {
            "uptime_s": 12.0,
            "windows": 3,
            "model": "urban10",
            "spool_depth": 0,
            "spool_dropped": 0,
        }
    with Subscriber(broker, "soundmon/lv/stats") as late:
        s = late.wait_for("soundmon/lv/stats")
        assert s.retain and s.json()["windows"] == 3


# ---------------------------------------------------------------- Home Assistant discovery


def test_discovery_configs(broker: Broker, make_pub: Callable[..., Publisher]) -> None:
    cfg = broker.mqtt_config(node_id="ha1", control=False)  # (with control: the next test)
    pub = make_pub(cfg, enabled={"dog_bark", "siren"})  # car_horn disabled
    wait_until(lambda: pub.connected)
    settled(broker, "homeassistant/sensor/ha1/level/config")  # the last config sent on connect
    with Subscriber(broker, "homeassistant/#") as sub:  # joins after: sees the retained configs
        for label in ("dog_bark", "siren"):
            m = sub.wait_for(f"homeassistant/binary_sensor/ha1/{label}/config")
            assert m.retain and m.qos == 1
            c = m.json()
            assert c["device_class"] == "sound"
            assert c["state_topic"] == f"soundmon/ha1/state/{label}"
            assert (c["payload_on"], c["payload_off"]) == ("ON", "OFF")
            assert c["availability_topic"] == "soundmon/ha1/status"
            assert (c["payload_available"], c["payload_not_available"]) == ("online", "offline")
            assert c["unique_id"] == f"soundmon_ha1_{label}" == c["object_id"]
            assert c["default_entity_id"] == f"binary_sensor.soundmon_ha1_{label}"
            assert c["name"] == discovery.pretty_name(label)
            dev = c["device"]
            assert dev["identifiers"] == ["soundmon_ha1"]
            assert dev["model"] == "urban10" and dev["manufacturer"] == "soundmon"
            assert dev["name"] and dev["sw_version"]
        lvl = sub.wait_for("homeassistant/sensor/ha1/level/config")
        assert lvl.retain
        lc = lvl.json()
        assert lc["state_topic"] == "soundmon/ha1/level"
        assert lc["value_template"] == "{{ value_json.dbfs }}"
        assert lc["unit_of_measurement"] == "dBFS" and lc["state_class"] == "measurement"
        assert lc["entity_category"] == "diagnostic"
        for key in ("uptime", "dropped_samples", "spool_depth", "inference_ms_p95", "input_state"):
            sc = sub.wait_for(f"homeassistant/sensor/ha1/{key}/config")
            assert sc.retain and sc.json()["state_topic"] == "soundmon/ha1/stats"
        assert lc["device"]["identifiers"] == ["soundmon_ha1"]
        sub.wait_quiet(0.2)
        # disabled: an empty retained payload removes the entity (and is not itself kept)
        assert "homeassistant/binary_sensor/ha1/car_horn/config" not in sub.topics_seen()


def test_discovery_with_control_keeps_a_disabled_class_switchable_from_home_assistant(
    broker: Broker, make_pub: Callable[..., Publisher]
) -> None:
    """mqtt.control (the default): every label keeps its binary sensor, available only while its
    class is enabled (the retained echo), plus a threshold number and a detection switch that
    command <base>/set/<label>/... and show the echoes <base>/config/<label>/..."""
    pub = make_pub(broker.mqtt_config(node_id="ha3"), enabled={"dog_bark", "siren"}, start=False)
    pub.set_config({"dog_bark": (0.5, True), "siren": (0.35, True), "car_horn": (0.5, False)})
    pub.start()
    wait_until(lambda: pub.connected)
    settled(broker, "soundmon/ha3/status", lambda m: m.text == "online")
    with Subscriber(broker, ["homeassistant/#", "soundmon/ha3/config/#"]) as sub:
        car_horn = sub.wait_for("homeassistant/binary_sensor/ha3/car_horn/config").json()
        assert {"topic": "soundmon/ha3/config/car_horn/enabled", "payload_available": "ON",
                "payload_not_available": "OFF"} in car_horn["availability"]  # fmt: skip
        assert sub.wait_for("soundmon/ha3/config/car_horn/enabled").text == "OFF"
        number = sub.wait_for("homeassistant/number/ha3/siren_threshold/config").json()
        assert number["command_topic"] == "soundmon/ha3/set/siren/threshold"
        assert number["state_topic"] == "soundmon/ha3/config/siren/threshold"
        assert sub.wait_for(number["state_topic"]).text == "0.35"
        switch = sub.wait_for("homeassistant/switch/ha3/car_horn_detection/config").json()
        assert switch["command_topic"] == "soundmon/ha3/set/car_horn/enabled"


def test_disabled_label_config_is_removed(
    broker: Broker, make_pub: Callable[..., Publisher]
) -> None:
    with Subscriber(broker, "homeassistant/binary_sensor/ha0/#") as sub:
        pub = make_pub(broker.mqtt_config(node_id="ha0", control=False), enabled={"siren"})
        wait_until(lambda: pub.connected)
        removed = sub.wait_for("homeassistant/binary_sensor/ha0/car_horn/config")
        assert removed.payload == b"" and removed.qos == 1
        assert (
            sub.wait_for("homeassistant/binary_sensor/ha0/siren/config").json()["device_class"]
            == "sound"
        )


def test_discovery_resent_on_ha_birth_and_after_label_update(
    broker: Broker, make_pub: Callable[..., Publisher]
) -> None:
    with Subscriber(broker, "homeassistant/#") as sub:
        pub = make_pub(broker.mqtt_config(node_id="ha2"))
        wait_until(lambda: pub.connected)
        pub.set_state("siren", True)
        sub.wait_for("homeassistant/sensor/ha2/level/config")
        sub.clear()
        with Subscriber(broker, "soundmon/ha2/state/#") as states:
            states.wait_for("soundmon/ha2/state/siren")  # retained copy
            states.clear()
            with Subscriber(broker, "none") as ha:  # Home Assistant (re)starts: its birth message
                ha.client.publish("homeassistant/status", "online", qos=1).wait_for_publish(5)
            for label in LABELS:
                assert (
                    sub.wait_for(f"homeassistant/binary_sensor/ha2/{label}/config").json()[
                        "device_class"
                    ]
                    == "sound"
                )
            sub.wait_for("homeassistant/sensor/ha2/level/config")
            # the states follow the birth message too
            assert states.wait_for("soundmon/ha2/state/siren").text == "ON"
        # SIGHUP: siren disabled, a new model without car_horn but with gun_shot, with names
        sub.clear()
        pub.update_labels(["dog_bark", "siren", "gun_shot"], enabled={"dog_bark", "gun_shot"},
                          display_names={"gun_shot": "Gunshot, gunfire"})  # fmt: skip
        assert (
            sub.wait_for("homeassistant/binary_sensor/ha2/gun_shot/config").json()["name"]
            == "Gunshot, gunfire"
        )
        # with mqtt.control (the default) a disabled class keeps its entity (switchable from HA)
        assert sub.wait_for("homeassistant/binary_sensor/ha2/siren/config").payload != b""
        assert sub.wait_for("homeassistant/binary_sensor/ha2/car_horn/config").payload == b""
        assert sub.wait_for("homeassistant/binary_sensor/ha2/dog_bark/config").payload != b""


def test_discovery_off_sends_no_configs(broker: Broker, make_pub: Callable[..., Publisher]) -> None:
    with Subscriber(broker, "#") as sub:
        pub = make_pub(broker.mqtt_config(node_id="noha", discovery=False))
        wait_until(lambda: pub.connected)
        sub.wait_for("soundmon/noha/status")
        sub.wait_quiet(0.2)
        assert not [t for t in sub.topics_seen() if t.startswith("homeassistant/")]


# ---------------------------------------------------------------- outages and restarts


def test_broker_down_at_start_then_up(
    broker_factory: Callable[..., Broker],
    make_pub: Callable[..., Publisher],
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO)
    b = broker_factory(persistence=True)
    # A persistent subscription made beforehand: the broker queues what arrives while this
    # test client is still reconnecting, so the check does not race the publisher.
    with Subscriber(b, "soundmon/down/detection", persistent=True) as sub:
        b.stop()
        t0 = time.monotonic()
        pub = make_pub(b.mqtt_config(node_id="down"))
        assert time.monotonic() - t0 < 0.5  # start() never blocks on the broker
        for i in range(5):
            pub.publish_detection(detection(i))
        wait_until(lambda: pub.state == "unreachable", what="unreachable")
        assert pub.spool_depth == 5 and not pub.connected
        time.sleep(1.2)  # several retries
        assert len(mqtt_logs(caplog, "cannot connect")) == 1  # one line, not one per retry
        assert "Connection refused" in mqtt_logs(caplog, "cannot connect")[0]
        b.start()
        got = sub.wait_count("soundmon/down/detection", 5, timeout=10)
        assert ids(got) == [f"evt-{i}" for i in range(5)]
        wait_until(lambda: pub.spool_depth == 0, what="spool drained")
        assert pub.published == 5 and pub.state == "connected"


def test_outage_everything_arrives_once_in_order(
    broker_factory: Callable[..., Broker],
    make_pub: Callable[..., Publisher],
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO)
    b = broker_factory(persistence=True)
    with Subscriber(b, "soundmon/out/detection", persistent=True) as sub:
        pub = make_pub(b.mqtt_config(node_id="out"))
        wait_until(lambda: pub.connected)
        pub.publish_detection(detection(0))
        sub.wait_for("soundmon/out/detection")
        b.stop()
        wait_until(lambda: not pub.connected, what="disconnect noticed")
        for i in range(1, 21):
            pub.publish_detection(detection(i))
        assert pub.spool_depth == 20
        time.sleep(0.8)
        b.start()
        sub.wait_count("soundmon/out/detection", 21, timeout=10)
        wait_until(lambda: pub.spool_depth == 0, what="spool drained")
        sub.wait_quiet(0.3)
        assert ids(sub.get("soundmon/out/detection")) == [f"evt-{i}" for i in range(21)]
    assert len(mqtt_logs(caplog, "lost")) == 1
    assert len(mqtt_logs(caplog, "connected to")) == 2  # first connect + reconnect


def test_restart_during_outage_delivers_spooled_rows(
    broker_factory: Callable[..., Broker], make_pub: Callable[..., Publisher], tmp_path: Path
) -> None:
    b = broker_factory(persistence=True)
    state = tmp_path / "shared-state"
    with Subscriber(b, "soundmon/rst/detection", persistent=True) as sub:
        first = make_pub(b.mqtt_config(node_id="rst"), state_dir=state)
        wait_until(lambda: first.connected)
        b.stop()
        wait_until(lambda: not first.connected)
        for i in range(4):
            first.publish_detection(detection(i))
        first.stop(timeout=0.5)  # the daemon restarts while the broker is still away
        assert first.state == "stopped"
        second = make_pub(b.mqtt_config(node_id="rst"), state_dir=state)
        assert second.spool_depth == 4
        second.publish_detection(detection(4))
        b.start()
        got = sub.wait_count("soundmon/rst/detection", 5, timeout=10)
        assert ids(got) == [f"evt-{i}" for i in range(5)]
        wait_until(lambda: second.spool_depth == 0)


def test_full_spool_drops_oldest_and_counts(
    broker_factory: Callable[..., Broker],
    make_pub: Callable[..., Publisher],
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO)
    b = broker_factory(persistence=True)
    with Subscriber(b, "soundmon/full/detection", persistent=True) as sub:
        b.stop()
        pub = make_pub(b.mqtt_config(node_id="full"), spool_max=10)
        for i in range(15):
            pub.publish_detection(detection(i))
        assert (pub.spool_depth, pub.spool_dropped) == (10, 5)
        assert len(mqtt_logs(caplog, "spool full")) == 1
        b.start()
        sub.wait_count("soundmon/full/detection", 10, timeout=10)
        wait_until(lambda: pub.spool_depth == 0)
        sub.wait_quiet(0.3)
        assert ids(sub.get("soundmon/full/detection")) == [f"evt-{i}" for i in range(5, 15)]
        assert pub.spool_dropped == 5  # kept, reported in stats


# ---------------------------------------------------------------- authentication and TLS


def test_wrong_password_auth_failed_nothing_lost(
    broker_factory: Callable[..., Broker],
    make_pub: Callable[..., Publisher],
    caplog: pytest.LogCaptureFixture,
    tmp_path: Path,
) -> None:
    caplog.set_level(logging.DEBUG)
    b = broker_factory(users={"soundmon": "right-horse-battery", "watcher": "w"}, persistence=True)
    pw = tmp_path / "mqtt-password"
    pw.write_text("wrong-staple\n")
    with Subscriber(
        b, "soundmon/auth/detection", persistent=True, username="watcher", password="w"
    ) as sub:
        pub = make_pub(b.mqtt_config(node_id="auth", username="soundmon", password_file=pw))
        wait_until(lambda: pub.state == "auth_failed", what="auth_failed")
        for i in range(3):
            pub.publish_detection(detection(i))
        time.sleep(2.0)
        attempts = b.log_text().count("disconnected, not authorised")
        assert 2 <= attempts <= 8, attempts  # keeps retrying, with backoff: no spinning
        assert pub.state == "auth_failed" and not pub.connected and pub.spool_depth == 3
        lines = mqtt_logs(caplog, "not authorised")
        assert len(lines) == 1 and "check mqtt.username / password" in lines[0]
        # the operator fixes the password file: picked up at the next attempt, no restart
        pw.write_text("right-horse-battery\n")
        got = sub.wait_count("soundmon/auth/detection", 3, timeout=10)
        assert ids(got) == ["evt-0", "evt-1", "evt-2"]
        assert pub.state == "connected"
    text = "\n".join(r.getMessage() for r in caplog.records) + caplog.text
    assert "wrong-staple" not in text and "right-horse-battery" not in text


@pytest.mark.parametrize("source", ["env", "file"])
def test_password_from_env_or_file(
    source: str,
    broker_factory: Callable[..., Broker],
    make_pub: Callable[..., Publisher],
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    b = broker_factory(users={"soundmon": "pa55-w0rd"})
    if source == "env":
        monkeypatch.setenv("SOUNDMON_TEST_MQTT_PW", "pa55-w0rd")
        cfg = b.mqtt_config(node_id="pw", username="soundmon", password_env="SOUNDMON_TEST_MQTT_PW")
    else:
        f = tmp_path / "pw"
        f.write_text("pa55-w0rd\n")  # trailing newline as editors write it
        cfg = b.mqtt_config(node_id="pw", username="soundmon", password_file=f)
    with Subscriber(b, "soundmon/pw/detection", username="soundmon", password="pa55-w0rd") as sub:
        pub = make_pub(cfg)
        wait_until(lambda: pub.connected, what="connected with the password")
        pub.publish_detection(detection(1))
        assert sub.wait_for("soundmon/pw/detection").json()["id"] == "evt-1"
    assert "pa55-w0rd" not in caplog.text


def test_config_errors_are_one_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    storage = StorageConfig(state_dir=tmp_path)
    monkeypatch.delenv("SOUNDMON_NO_SUCH_VAR", raising=False)
    with pytest.raises(ConfigError, match="SOUNDMON_NO_SUCH_VAR"):
        Publisher(
            MqttConfig(username="u", password_env="SOUNDMON_NO_SUCH_VAR"), storage, LABELS, "m"
        )
    with pytest.raises(ConfigError, match="password_file"):
        Publisher(
            MqttConfig(username="u", password_file=tmp_path / "missing"), storage, LABELS, "m"
        )
    (tmp_path / "pw").write_text("x")
    with pytest.raises(ConfigError, match="no username"):
        Publisher(MqttConfig(password_file=tmp_path / "pw"), storage, LABELS, "m")
    with pytest.raises(ConfigError, match="TLS"):
        Publisher(MqttConfig(tls=True, ca_file=tmp_path / "missing-ca.pem"), storage, LABELS, "m")


def test_tls_connects_with_ca_and_explains_a_bad_certificate(
    broker_factory: Callable[..., Broker],
    make_pub: Callable[..., Publisher],
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO)
    b = broker_factory(tls=make_tls_files(tmp_path / "tls"))
    with Subscriber(b, "soundmon/tls/detection") as sub:
        pub = make_pub(b.mqtt_config(node_id="tls"), state_dir=tmp_path / "s1")
        wait_until(lambda: pub.connected, what="TLS connect")
        pub.publish_detection(detection(1))
        assert sub.wait_for("soundmon/tls/detection").json()["id"] == "evt-1"
    other = make_tls_files(tmp_path / "other-ca")  # a CA that did not sign the broker's cert
    bad = make_pub(
        b.mqtt_config(node_id="tlsbad", ca_file=other["cafile"]), state_dir=tmp_path / "s2"
    )
    wait_until(lambda: bool(mqtt_logs(caplog, "cannot connect")), what="the TLS failure logged")
    assert bad.state == "unreachable" and not bad.connected
    line = mqtt_logs(caplog, "cannot connect")
    assert len(line) == 1 and "CERTIFICATE_VERIFY_FAILED" in line[0]


def test_disabled_mqtt_is_a_no_op(tmp_path: Path) -> None:
    pub = Publisher(MqttConfig(enabled=False), StorageConfig(state_dir=tmp_path / "s"), LABELS, "m")
    pub.start()
    pub.publish_detection(detection(1))
    pub.set_state("siren", True)
    pub.publish_stats({})
    pub.stop()
    assert pub.state == "disabled" and pub.spool_depth == 0
    assert not (tmp_path / "s").exists()


def test_disabled_mqtt_answers_everything_the_daemon_asks(tmp_path: Path) -> None:
    """With `mqtt.enabled: false` the daemon runs this publisher (no stand-in class): every call
    it makes is a no-op and the counters its stats message reads are zero."""
    pub = Publisher(MqttConfig(enabled=False), StorageConfig(state_dir=tmp_path / "s"), LABELS, "m")
    pub.set_config({"siren": (0.5, True)})
    pub.start()
    pub.publish_level({"time": "t", "dbfs": -40.0})
    pub.publish_scores('{"top":[]}')
    pub.update_labels(LABELS[:1], LABELS[:1], None, scores=False)
    pub.forget_labels(["gone"])
    assert pub.take_commands(256) == [] and not pub.connected and pub.spool is None
    counters = (pub.spool_depth, pub.spool_dropped, pub.spool_memory, pub.undelivered_lost,
                pub.commands_dropped, pub.published)  # fmt: skip
    assert counters == (0, 0, 0, 0, 0, 0)
    pub.stop(timeout=1.0)
    assert pub.state == "disabled" and not (tmp_path / "s").exists()


_DISABLED_CHILD = textwrap.dedent(
    """
    import sys
    from monitor.config import MqttConfig, StorageConfig
    from monitor.daemon import Daemon  # everything the daemon imports
    from monitor.publisher import Publisher
    pub = Publisher(MqttConfig(enabled=False), StorageConfig(state_dir=sys.argv[1]), ["siren"], "m")
    pub.start()
    pub.publish_detection({"label": "siren"})
    pub.stop()
    print(sorted(m for m in ("paho", "ssl", "sqlite3", "monitor.spool") if m in sys.modules))
    """
)


def test_disabled_mqtt_loads_neither_paho_ssl_nor_the_spool(tmp_path: Path) -> None:
    """A daemon with `mqtt.enabled: false` imports none of them (about 4 MB of RSS on a Pi;
    `soundmon bench --no-mqtt` measures it): the publisher imports them only when MQTT is on."""
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    out = subprocess.run([sys.executable, "-c", _DISABLED_CHILD, str(tmp_path / "s")], capture_output=True,
                         text=True, cwd=REPO, env=env, timeout=60)  # fmt: skip
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"


def test_discovery_payloads_are_pure_and_json() -> None:
    cfg = MqttConfig(node_id="pi-kitchen", base_topic="house/sound", control=False)
    msgs = discovery.discovery_messages(
        cfg, ["dog_bark", "Street Music"], {"dog_bark"}, "urban10", "1.2.3"
    )
    topics = [t for t, _ in msgs]
    assert topics[:8] == [
        "homeassistant/binary_sensor/pi-kitchen/dog_bark/config",
        "homeassistant/binary_sensor/pi-kitchen/street_music/config",
        "homeassistant/sensor/pi-kitchen/level/config",
        *(f"homeassistant/sensor/pi-kitchen/{key}/config"
          for key in ("uptime", "dropped_samples", "spool_depth", "inference_ms_p95", "input_state")),
    ]  # fmt: skip
    assert msgs[1][1] is None
    on = msgs[0][1]
    assert on is not None and on["state_topic"] == "house/sound/state/dog_bark"
    assert on["default_entity_id"] == "binary_sensor.soundmon_pi_kitchen_dog_bark"
    json.dumps(msgs[2][1])
    assert discovery.state_topic("b", "a/b+c#") == "b/state/a_b_c_"


def test_a_state_left_on_is_reset_at_connect_for_a_disabled_label_too(
    broker: Broker, make_pub: Callable[..., Publisher]
) -> None:
    """An unclean exit left `siren` ON, and the restart disables it in the config: its retained
    state is reset all the same (it once stayed ON for anything reading the topic directly)."""
    with Subscriber(broker, "none") as other:  # what the previous run left behind
        other.client.publish("soundmon/dis/state/siren", "ON", qos=1, retain=True).wait_for_publish(5)
    pub = make_pub(broker.mqtt_config(node_id="dis"), enabled=[x for x in LABELS if x != "siren"])
    wait_until(lambda: pub.connected)
    with Subscriber(broker, "soundmon/dis/state/siren") as states:  # the retained copy now
        states.wait_for("soundmon/dis/state/siren", lambda m: m.payload == b"OFF")
    with Subscriber(broker, "soundmon/dis/state/siren") as later:  # and it stays so
        assert later.wait_for("soundmon/dis/state/siren").payload == b"OFF"
