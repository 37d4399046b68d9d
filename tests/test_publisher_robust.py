"""The publisher against what a hostile tester found: a full disk during an outage, a memory-only
spool at exit, callbacks that raise, a slow subscriber behind a small broker queue, two devices
with one client id, and brokers that do not speak MQTT (or not without TLS).

Real parts throughout: mosquitto, a real tmpfs that fills up, real sockets and TLS. The only
stand-in is `_SilentServer`, a TCP server that accepts and never answers: it stands for "some
other service on the MQTT port", which is exactly a program that says nothing.
"""

from __future__ import annotations

import hashlib
import json
import logging
import socket
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import pytest

from monitor.config import MqttConfig, StorageConfig
from monitor.publisher import Publisher
from monitor.spool import Spool
from tests.broker import Broker, Subscriber, make_tls_files
from tests.test_spool import SmallDisk, small_disk_fixture  # noqa: F401 (fixture)

LABELS = ["dog_bark", "siren", "car_horn"]
LOGGER = "test.soundmon.mqtt.robust"


def wait_until(cond: Callable[[], bool], timeout: float = 10.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.01)


def detection(i: int) -> dict[str, Any]:
    return {"id": f"evt-{i}", "type": "start", "label": "siren", "score": 0.9, "node": "n"}


def ids(msgs: list[Any]) -> list[str]:
    return [m.json()["id"] for m in msgs]


def evts(a: int, b: int) -> list[str]:
    return [f"evt-{i}" for i in range(a, b)]


def logs(caplog: pytest.LogCaptureFixture, text: str, logger: str = LOGGER) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == logger and text in r.getMessage()]


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
        logger: str = LOGGER,
        **kw: Any,
    ) -> Publisher:
        storage = StorageConfig(
            state_dir=state_dir or tmp_path / "state", spool_max_messages=spool_max
        )
        pub = Publisher(cfg, storage, LABELS if labels is None else labels, "urban10",
                        logger=logging.getLogger(logger), **kw)  # fmt: skip
        if pub.spool is not None:
            pub.spool.retry_seconds = 0.2
        made.append(pub)
        if start:
            pub.start()
        return pub

    yield make
    for pub in made:
        pub.stop(timeout=1.0)


# ---------------------------------------------------------------- 1. disk full, broker down


def test_disk_full_while_broker_down_keeps_detections_in_memory_then_on_disk(
    broker_factory: Callable[..., Broker],
    make_pub: Callable[..., Publisher],
    small_disk: SmallDisk,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO)
    b = broker_factory(persistence=True)
    with Subscriber(b, "soundmon/full1/detection", persistent=True) as sub:
        b.stop()
        pub = make_pub(b.mqtt_config(node_id="full1"), state_dir=small_disk.path, spool_max=100)
        for i in range(5):
            pub.publish_detection(detection(i))  # on disk
        small_disk.fill()
        for i in range(5, 155):
            pub.publish_detection(detection(i))  # memory; the bound drops the 55 oldest
        assert (pub.spool_depth, pub.spool_dropped) == (100, 55)
        assert pub.spool_memory == 100
        assert pub.health()["spool_dropped"] == 55
        assert len(logs(caplog, "keeping detections in memory")) == 1
        assert not logs(caplog, "without the disk spool")
        b.start()  # delivered from memory, in order, while the disk is still full
        sub.wait_count("soundmon/full1/detection", 100, timeout=20)
        wait_until(lambda: pub.spool_depth == 0, what="memory queue delivered")
        sub.wait_quiet(0.3)
        assert ids(sub.get("soundmon/full1/detection")) == evts(55, 155)
        # the broker goes again; the disk comes back: memory rows move to disk by themselves
        b.stop()
        wait_until(lambda: not pub.connected, what="disconnect noticed")
        for i in range(155, 165):
            pub.publish_detection(detection(i))
        assert pub.spool_memory == 10
        small_disk.free()
        wait_until(lambda: pub.spool_memory == 0, what="memory rows moved to disk")
        assert len(logs(caplog, "moved 10 detection(s) from memory to disk")) == 1
        with Spool(small_disk.path, 100) as probe:  # a second reader: the rows really are there
            assert [json.loads(r.payload)["id"] for r in probe.pending()] == evts(155, 165)
        b.start()
        sub.wait_count("soundmon/full1/detection", 110, timeout=20)
        wait_until(lambda: pub.spool_depth == 0, what="spool drained")
        sub.wait_quiet(0.3)
        assert ids(sub.get("soundmon/full1/detection")) == evts(55, 165)
        assert pub.spool_dropped == 55


# ---------------------------------------------------------------- 2. what is lost at exit


def test_exit_with_a_memory_only_spool_says_how_many_are_lost(
    broker: Broker,
    make_pub: Callable[..., Publisher],
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The state dir cannot be used at start; the daemon stops while the spool is still being
    sent (slow pace): the rest is lost, and says so, in the log and in the last stats."""
    caplog.set_level(logging.INFO)
    blocker = tmp_path / "file"
    blocker.write_text("a file where the state directory should be")
    with Subscriber(broker, "soundmon/lost/#") as sub:
        pub = make_pub(broker.mqtt_config(node_id="lost"), state_dir=blocker / "state", start=False)
        pub.flush_rate = 5.0  # slow: the daemon stops while the spool is still being sent
        pub.start()
        wait_until(lambda: pub.connected, what="connected")
        assert pub.spool is not None and not pub.spool.persistent
        for i in range(60):
            pub.publish_detection(detection(i))
        pub.publish_stats({"uptime_s": 1.0, "model": "urban10"})
        pub.stop(timeout=1.0)
        assert not logs(caplog, "stay spooled")  # nothing is on disk
        lost = pub.undelivered_lost
        assert 0 < lost < 60 and pub.published + lost == 60
        stats = sub.wait_for("soundmon/lost/stats", lambda m: "undelivered_lost" in m.json())
        assert stats.json()["undelivered_lost"] == lost and stats.json()["uptime_s"] == 1.0
        sub.wait_for("soundmon/lost/status", lambda m: m.text == "offline")
        seen = sub.get()
        last_stats = seen.index(stats)
        assert last_stats < next(i for i, m in enumerate(seen) if m.text == "offline")
    errors = [
        r.getMessage() for r in caplog.records if r.name == LOGGER and r.levelno >= logging.ERROR
    ]
    assert [e for e in errors if "lost" in e] == [
        f"MQTT: stopped; {lost} undelivered detection(s) are lost: they were kept only in memory "
        f"because the spool {blocker / 'state' / 'spool.sqlite3'} could not be written"
    ]
    assert not logs(caplog, "stay spooled")
    with Subscriber(broker, "soundmon/lost/stats") as late:  # retained: what a dashboard sees
        assert late.wait_for("soundmon/lost/stats").json()["undelivered_lost"] == lost


def test_exit_with_broker_down_and_memory_only_spool_claims_nothing_stays_spooled(
    broker_factory: Callable[..., Broker],
    make_pub: Callable[..., Publisher],
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO)
    blocker = tmp_path / "file"
    blocker.write_text("a file where the state directory should be")
    b = broker_factory(start=False)
    pub = make_pub(b.mqtt_config(node_id="lost0"), state_dir=blocker / "state")
    for i in range(5):
        pub.publish_detection(detection(i))
    pub.stop(timeout=0.3)
    assert not logs(caplog, "stay spooled")  # the old line claimed 5, with no file at all
    assert len(logs(caplog, "5 undelivered detection(s) are lost")) == 1
    assert pub.undelivered_lost == 5


def test_exit_with_disk_and_memory_rows_reports_each_truly(
    broker_factory: Callable[..., Broker],
    make_pub: Callable[..., Publisher],
    small_disk: SmallDisk,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO)
    b = broker_factory(start=False)
    pub = make_pub(b.mqtt_config(node_id="lost2"), state_dir=small_disk.path)
    for i in range(4):
        pub.publish_detection(detection(i))
    small_disk.fill()
    for i in range(4, 11):
        pub.publish_detection(detection(i))
    pub.stop(timeout=0.3)
    assert logs(caplog, "stay spooled") == [
        "MQTT: stopped; 4 detection(s) stay spooled for the next start"
    ]
    assert logs(caplog, "undelivered detection(s) are lost")[0].startswith("MQTT: stopped; 7 ")
    assert pub.undelivered_lost == 7
    small_disk.free()
    with Spool(small_disk.path, 100) as again:
        assert [json.loads(r.payload)["id"] for r in again.pending()] == evts(0, 4)


# ---------------------------------------------------------------- 3. callbacks that raise


def _bad_prefix(cfg: MqttConfig, prefix: str) -> MqttConfig:
    """A config the validator would refuse (another layer's job): the publisher must cope."""
    return MqttConfig.model_construct(**{**cfg.model_dump(), "discovery_prefix": prefix})


def test_wildcard_discovery_prefix_does_not_stall_delivery(
    broker: Broker, make_pub: Callable[..., Publisher], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    with Subscriber(broker, "soundmon/wild/#") as sub:
        pub = make_pub(_bad_prefix(broker.mqtt_config(node_id="wild"), "ha/#"))
        wait_until(lambda: pub.connected, what="connected")
        for i in range(3):
            pub.publish_detection(detection(i))
        assert ids(sub.wait_count("soundmon/wild/detection", 3)) == evts(0, 3)
        sub.wait_for("soundmon/wild/status", lambda m: m.text == "online")
        sub.wait_for("soundmon/wild/state/siren", lambda m: m.text == "OFF")
        wait_until(lambda: pub.spool_depth == 0, what="PUBACKs")
        broker.restart()  # the next connection works as well, without new error lines
        wait_until(lambda: pub.connected, what="reconnected")
        pub.publish_detection(detection(3))
        sub.wait_for("soundmon/wild/detection", lambda m: m.json()["id"] == "evt-3")
    errors = [
        r.getMessage() for r in caplog.records if r.name == LOGGER and r.levelno >= logging.ERROR
    ]
    assert len(errors) == 2, errors  # the subscription, the discovery configs: once each
    assert any("subscribe to ha/#/status" in e for e in errors)
    assert any("cannot publish the discovery configs" in e for e in errors)


def test_label_longer_than_a_topic_does_not_stall_delivery(
    broker: Broker, make_pub: Callable[..., Publisher], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    huge = "x" * 70_000  # a state/discovery topic over MQTT's 65535 bytes
    with Subscriber(broker, "soundmon/huge/#") as sub:
        pub = make_pub(broker.mqtt_config(node_id="huge"), labels=["siren", huge])
        wait_until(lambda: pub.connected, what="connected")
        pub.set_state(huge, True)  # from the daemon thread: must not raise either
        pub.publish_detection({**detection(0), "label": huge})
        pub.publish_detection(detection(1))
        got = sub.wait_count("soundmon/huge/detection", 2)
        assert ids(got) == evts(0, 2) and got[0].json()["label"] == huge
        sub.wait_for("soundmon/huge/state/siren", lambda m: m.text == "OFF")
    errors = [
        r.getMessage() for r in caplog.records if r.name == LOGGER and r.levelno >= logging.ERROR
    ]
    assert 1 <= len(errors) <= 2 and all("too long" in e for e in errors), errors


def test_states_and_discovery_come_before_online_at_connect(
    broker: Broker, make_pub: Callable[..., Publisher], tmp_path: Path
) -> None:
    """A state left ON by an unclean exit is reset before `online`: HA shows an entity's
    retained state as soon as it is available, so `online` first would flash the stale ON."""
    with Subscriber(broker, "none") as old:  # what a SIGKILLed run leaves on the broker
        old.client.publish("soundmon/seq/state/siren", "ON", qos=1, retain=True).wait_for_publish(5)
    with Subscriber(broker, ["soundmon/seq/#", "homeassistant/#"]) as sub:
        pub = make_pub(broker.mqtt_config(node_id="seq"))
        sub.wait_for("soundmon/seq/status", lambda m: m.text == "online")
        seen = [(m.topic, m.text) for m in sub.get() if not m.retain]
    online = seen.index(("soundmon/seq/status", "online"))
    before = {t for t, _ in seen[:online]}
    assert {f"soundmon/seq/state/{x}" for x in LABELS} <= before
    assert "homeassistant/binary_sensor/seq/siren/config" in before
    assert ("soundmon/seq/state/siren", "OFF") in seen[:online]
    assert pub.connected


# ---------------------------------------------------------------- 4. paced flush, slow reader


def test_backlog_reaches_a_slow_persistent_subscriber_behind_small_broker_limits(
    broker_factory: Callable[..., Broker], make_pub: Callable[..., Publisher]
) -> None:
    """mosquitto acknowledges a QoS 1 publish at once and then drops what does not fit in a
    subscriber's queue (max_inflight_messages + max_queued_messages): the backlog must not
    arrive as one burst. The subscriber is persistent (clean_session=False, QoS 1, fixed id)
    and handles about 200 messages/s at most; the flush is paced at 40/s."""
    n = 200
    b = broker_factory(
        persistence=True, extra_conf=["max_inflight_messages 2", "max_queued_messages 30"]
    )
    with Subscriber(b, "soundmon/slow/detection", persistent=True, client_id="slow-reader") as sub:
        record = sub.client.on_message
        assert record is not None

        def slow(client: mqtt.Client, userdata: Any, msg: mqtt.MQTTMessage) -> None:
            time.sleep(0.005)  # a busy consumer (paho sends the PUBACK after this returns)
            record(client, userdata, msg)

        sub.client.on_message = slow
        b.stop()
        pub = make_pub(b.mqtt_config(node_id="slow"), start=False)
        pub.flush_rate = 40.0  # the default is 100/s; 40/s leaves this reader a wide margin
        pub.start()
        for i in range(n):
            pub.publish_detection(detection(i))
        b.start()
        sub.wait_count("soundmon/slow/detection", n, timeout=60)
        wait_until(lambda: pub.spool_depth == 0, what="spool drained")
        sub.wait_quiet(0.3)
        assert ids(sub.get("soundmon/slow/detection")) == evts(0, n)
    assert "being dropped" not in b.log_text()


def test_live_detections_during_a_paced_flush_keep_their_place(
    broker_factory: Callable[..., Broker], make_pub: Callable[..., Publisher]
) -> None:
    """New detections join the spool behind the backlog: never sent ahead of it, never twice."""
    b = broker_factory(persistence=True)
    with Subscriber(b, "soundmon/order/detection", persistent=True) as sub:
        b.stop()
        pub = make_pub(b.mqtt_config(node_id="order"), start=False)
        pub.flush_rate = 50.0
        pub.start()
        for i in range(60):
            pub.publish_detection(detection(i))
        b.start()
        sub.wait_count("soundmon/order/detection", 1, timeout=10)  # the flush has begun
        for i in range(60, 90):
            pub.publish_detection(detection(i))
        sub.wait_count("soundmon/order/detection", 90, timeout=30)
        wait_until(lambda: pub.spool_depth == 0, what="spool drained")
        sub.wait_quiet(0.3)
        assert ids(sub.get("soundmon/order/detection")) == evts(0, 90)
        assert pub.published == 90


# ---------------------------------------------------------------- 5. one client id, two devices


def test_two_publishers_with_one_client_id_are_told_apart(
    broker: Broker,
    make_pub: Callable[..., Publisher],
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO)
    a = make_pub(broker.mqtt_config(node_id="pi1", client_id="same-id"), logger=LOGGER + ".a",
                 state_dir=tmp_path / "a")  # fmt: skip
    wait_until(lambda: a.connected, what="first connected")
    b = make_pub(broker.mqtt_config(node_id="pi2", client_id="same-id"), logger=LOGGER + ".b",
                 state_dir=tmp_path / "b")  # fmt: skip
    assert a.client_id == b.client_id == "same-id"  # an explicit id is kept as given

    def warned() -> list[str]:
        return logs(caplog, "same client id", LOGGER + ".a") + logs(
            caplog, "same client id", LOGGER + ".b"
        )

    wait_until(lambda: bool(warned()), timeout=30, what="the duplicate client id warning")
    time.sleep(3)  # the flapping goes on: no new warning, no line per loss
    lines = warned()
    assert 1 <= len(lines) <= 2, lines  # at most one per publisher
    assert "'same-id'" in lines[0] and "mqtt.client_id or mqtt.node_id" in lines[0]
    for name in (LOGGER + ".a", LOGGER + ".b"):
        assert len(logs(caplog, "lost (", name)) < 3


def test_default_client_id_is_unique_per_machine(tmp_path: Path) -> None:
    from monitor.publisher import default_client_id, machine_tag

    mid = Path("/etc/machine-id")
    if mid.exists() and mid.read_text().strip():
        want = hashlib.sha256(f"soundmon:{mid.read_text().strip()}".encode()).hexdigest()[:8]
        assert machine_tag() == want
    one, two, empty = tmp_path / "one", tmp_path / "two", tmp_path / "empty"
    one.write_text("0123456789abcdef0123456789abcdef\n")
    two.write_text("fedcba9876543210fedcba9876543210\n")
    empty.write_text("")
    assert machine_tag([one]) != machine_tag([two])
    assert machine_tag([empty, tmp_path / "missing", two]) == machine_tag([two])
    mac = hashlib.sha256(f"soundmon:{uuid.getnode():012x}".encode()).hexdigest()[:8]
    assert machine_tag([tmp_path / "missing"]) == mac
    storage = StorageConfig(state_dir=tmp_path / "s")
    pub = Publisher(MqttConfig(node_id="raspberrypi"), storage, LABELS, "m")
    assert (
        pub.client_id == default_client_id("raspberrypi") == f"soundmon-raspberrypi-{machine_tag()}"
    )
    pub.stop()
    pub = Publisher(MqttConfig(node_id="raspberrypi", client_id="mine"), storage, LABELS, "m")
    assert pub.client_id == "mine"
    pub.stop()


# ---------------------------------------------------------------- 6. not an MQTT broker


class _SilentServer:
    """Stand-in for another service on the MQTT port: accepts TCP, never says a word."""

    def __init__(self) -> None:
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.conns: list[socket.socket] = []
        self._thread = threading.Thread(target=self._accept, daemon=True)
        self._thread.start()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.conns.append(conn)

    def close(self) -> None:
        self.sock.close()
        for c in self.conns:
            c.close()


@pytest.mark.integration  # a TCP server and 5 s of the connection watchdog
def test_a_port_that_accepts_tcp_but_never_answers_is_reported(
    make_pub: Callable[..., Publisher], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    server = _SilentServer()
    try:
        cfg = MqttConfig(
            host="127.0.0.1", port=server.port, reconnect_max_seconds=0.5, keepalive=30
        )
        pub = make_pub(cfg)
        wait_until(lambda: bool(logs(caplog, "CONNACK")), timeout=15, what="the warning")
        line = logs(caplog, "CONNACK")
        assert line == [
            f"MQTT: 127.0.0.1:{server.port} accepts TCP but sent no MQTT CONNACK within 5 s: not "
            "an MQTT broker, or a TLS port reached without mqtt.tls; retrying, detections are "
            "spooled"
        ]
        assert pub.state == "unreachable" and not pub.connected
    finally:
        server.close()


def test_a_tls_port_reached_without_tls_is_reported(
    broker_factory: Callable[..., Broker],
    make_pub: Callable[..., Publisher],
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO)
    b = broker_factory(tls=make_tls_files(tmp_path / "tls"))
    pub = make_pub(MqttConfig(host=b.host, port=b.port, reconnect_max_seconds=0.5))
    wait_until(lambda: bool(logs(caplog, "CONNACK")), what="the warning")
    time.sleep(1.5)  # more attempts: still one line
    assert logs(caplog, "CONNACK") == [
        f"MQTT: {b.host}:{b.port} accepts TCP but closed the connection without an MQTT CONNACK: "
        "it is a TLS port: set mqtt.tls: true (and mqtt.ca_file); retrying, detections are spooled"
    ]
    assert not pub.connected


def test_wrong_ca_with_tls_insecure_reports_the_certificate_error(
    broker_factory: Callable[..., Broker],
    make_pub: Callable[..., Publisher],
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """paho's tls_insecure skips the host name check only: the chain is still verified, so the
    connection fails, and the reason given must be the real one (not "reachable now")."""
    caplog.set_level(logging.INFO)
    b = broker_factory(tls=make_tls_files(tmp_path / "tls"))
    other = make_tls_files(tmp_path / "other-ca")
    pub = make_pub(b.mqtt_config(node_id="ins", ca_file=other["cafile"], tls_insecure=True))
    wait_until(lambda: bool(logs(caplog, "cannot connect")), what="the TLS failure logged")
    (line,) = logs(caplog, "cannot connect")
    assert "CERTIFICATE_VERIFY_FAILED" in line and "reachable now" not in line
    assert not pub.connected
    # and tls_insecure really does skip the host name: the right CA, a name not in the cert
    ok = make_pub(
        b.mqtt_config(node_id="ins2", host="localhost", tls_insecure=True),
        state_dir=tmp_path / "s2",
    )
    wait_until(lambda: ok.connected, what="connected without the host name check")
