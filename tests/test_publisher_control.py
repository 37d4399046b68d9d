"""The publisher's half of control over MQTT, against a real mosquitto: it subscribes to the
`<base>/set/...` commands and queues them for the daemon (bounded, never parsed in paho's
thread), and publishes the values in force, retained, on `<base>/config/<label>/...`."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from monitor.config import StorageConfig
from monitor.control import MAX_PAYLOAD_BYTES
from monitor.publisher import COMMAND_QUEUE, Publisher, threshold_text
from tests.broker import Broker, Subscriber

LABELS = ["dog_bark", "siren", "car_horn"]
BASE = "soundmon/ctl"


@pytest.fixture
def make_pub(tmp_path: Path) -> Iterator[Callable[..., Publisher]]:
    made: list[Publisher] = []

    def make(broker: Broker, start: bool = True, **mqtt: Any) -> Publisher:
        cfg = broker.mqtt_config(node_id="ctl", **mqtt)
        pub = Publisher(cfg, StorageConfig(state_dir=tmp_path / "state"), LABELS, "urban10",
                        logger=logging.getLogger("test.control"))  # fmt: skip
        made.append(pub)
        if start:
            pub.start()
        return pub

    yield make
    for pub in made:
        pub.stop(timeout=1.0)


def wait_commands(pub: Publisher, n: int, timeout: float = 5.0) -> list[tuple[str, bytes, bool]]:
    got: list[tuple[str, bytes, bool]] = []
    deadline = time.monotonic() + timeout
    while len(got) < n and time.monotonic() < deadline:
        got += pub.take_commands()
        time.sleep(0.01)
    return got


def test_commands_are_queued_for_the_daemon_as_topic_and_payload(broker: Broker, make_pub) -> None:
    pub = make_pub(broker)
    with Subscriber(broker, f"{BASE}/status") as sub:
        sub.wait_for(f"{BASE}/status", lambda m: m.text == "online")
        sub.client.publish(f"{BASE}/set/siren/threshold", "0.35", qos=1).wait_for_publish(5)
        sub.client.publish(f"{BASE}/set/dog_bark/enabled", "OFF", qos=0)
        sub.client.publish(f"{BASE}/set/siren/colour", "red", qos=1)  # not subscribed: never queued
        sub.client.publish(f"{BASE}/set/siren/threshold", b"9" * 100_000, qos=1)
        got = wait_commands(pub, 3)
    assert got[:2] == [(f"{BASE}/set/siren/threshold", b"0.35", False), (f"{BASE}/set/dog_bark/enabled", b"OFF", False)]
    # a large payload is cut to one byte more than any valid command (still refused as too long)
    assert got[2] == (f"{BASE}/set/siren/threshold", b"9" * (MAX_PAYLOAD_BYTES + 1), False)
    assert pub.take_commands() == []


def test_a_flood_is_dropped_beyond_the_queue_and_counted_once_in_the_log(
    broker: Broker, make_pub, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="test.control")
    pub = make_pub(broker)
    with Subscriber(broker, f"{BASE}/status") as sub:
        sub.wait_for(f"{BASE}/status", lambda m: m.text == "online")
        for i in range(2000):
            sub.client.publish(f"{BASE}/set/siren/threshold", str(i), qos=0)
        sub.client.publish(f"{BASE}/set/siren/enabled", "ON", qos=1).wait_for_publish(5)
        deadline = time.monotonic() + 10
        while pub.commands_waiting + pub.commands_dropped < 2001 and time.monotonic() < deadline:
            time.sleep(0.05)
    assert pub.commands_dropped == 2001 - COMMAND_QUEUE
    assert len(pub.take_commands(limit=10_000)) == COMMAND_QUEUE
    assert len([r for r in caplog.records if "commands_dropped" in r.getMessage()]) == 1


def test_a_retained_command_is_flagged_so_the_daemon_can_ignore_it(broker: Broker, make_pub) -> None:
    with Subscriber(broker, "none") as old:
        old.client.publish(f"{BASE}/set/siren/threshold", "0.1", qos=1, retain=True).wait_for_publish(5)
    pub = make_pub(broker)
    assert wait_commands(pub, 1) == [(f"{BASE}/set/siren/threshold", b"0.1", True)]


def test_control_off_subscribes_to_nothing(broker: Broker, make_pub) -> None:
    pub = make_pub(broker, control=False)
    with Subscriber(broker, f"{BASE}/status") as sub:
        sub.wait_for(f"{BASE}/status", lambda m: m.text == "online")
        sub.client.publish(f"{BASE}/set/siren/threshold", "0.35", qos=1).wait_for_publish(5)
        assert wait_commands(pub, 1, timeout=1.0) == []


def test_values_in_force_are_retained_echoes_sent_before_online_and_after_each_change(
    broker: Broker, make_pub
) -> None:
    with Subscriber(broker, f"{BASE}/#") as sub:
        # as the daemon does: the values in force first, then connect (set after start, they
        # could race the connection and follow `online`)
        pub = make_pub(broker, start=False)
        pub.set_config({"siren": (0.5, True), "dog_bark": (0.25, False), "car_horn": (1.0, True)})
        pub.start()
        sub.wait_for(f"{BASE}/status", lambda m: m.text == "online")
        seen = [(m.topic, m.text) for m in sub.get()]
        online = seen.index((f"{BASE}/status", "online"))
        assert {(f"{BASE}/config/dog_bark/threshold", "0.25"), (f"{BASE}/config/dog_bark/enabled", "OFF"),
                (f"{BASE}/config/car_horn/threshold", "1")} <= set(seen[:online])  # fmt: skip
        sub.clear()
        pub.set_config({"siren": (0.35, True), "dog_bark": (0.25, False), "car_horn": (1.0, True)})
        sub.wait_for(f"{BASE}/config/siren/threshold", lambda m: m.text == "0.35")
        sub.wait_quiet(0.3)
        assert {m.topic for m in sub.get()} == {f"{BASE}/config/siren/threshold", f"{BASE}/config/siren/enabled"}
        assert all(m.qos == 1 for m in sub.get())
    with Subscriber(broker, f"{BASE}/config/#") as late:  # retained for whoever comes later
        late.wait_for(f"{BASE}/config/siren/threshold", lambda m: m.retain and m.text == "0.35")
        late.wait_for(f"{BASE}/config/dog_bark/enabled", lambda m: m.retain and m.text == "OFF")


def test_threshold_text() -> None:
    assert [threshold_text(x) for x in (0.35, 0.5, 1.0, 0.0, -0.0, 0.123456789)] == [
        "0.35", "0.5", "1", "0", "0", "0.123457"]  # fmt: skip


def test_commands_are_subscribed_again_after_the_broker_comes_back(broker: Broker, make_pub) -> None:
    pub = make_pub(broker)
    with Subscriber(broker, f"{BASE}/status") as sub:
        sub.wait_for(f"{BASE}/status", lambda m: m.text == "online")
    broker.restart()  # a clean session: the broker forgot our subscriptions
    with Subscriber(broker, f"{BASE}/status") as sub:
        sub.wait_for(f"{BASE}/status", lambda m: m.text == "online", timeout=10)
        sub.client.publish(f"{BASE}/set/car_horn/enabled", "OFF", qos=1).wait_for_publish(5)
        assert wait_commands(pub, 1) == [(f"{BASE}/set/car_horn/enabled", b"OFF", False)]
