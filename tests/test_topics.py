"""monitor.topics (the MQTT topic rule) and the checks built on it: config keys and model labels.

Each refused case is one the broker really rejects or drops (measured with the Mosquitto of
tests/broker.py: it disconnects on control and non-characters, acknowledges and discards a
publish to a topic beginning with '$'), or one that kills paho (a topic over 65,535 bytes).
The end-to-end checks through `soundmon run` are in test_daemon_refusals.py.
"""

from __future__ import annotations

import time

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from monitor.config import parse_config
from monitor.errors import ConfigError
from monitor.topics import MAX_TOPIC_BYTES, level_problem, string_problem, topic_problem
from tests.broker import Subscriber

BAD_TOPICS = {
    "a/b\x00c": "NUL",
    "a/\x01": "control character U+0001",
    "a/\x1f": "U+001F",
    "a/\x7f": "U+007F",
    "a/\x85": "U+0085",
    "a/\x9f": "U+009F",
    "a/\ufdd0": "non-character",
    "a/\uffff": "non-character",
    "a/\U0001fffe": "non-character",
    "a/\ud800": "surrogate",
    "a/+/b": "wildcard",
    "a/#": "wildcard",
    "$SYS/x": "begins with '$'",
    "$x": "begins with '$'",
    "": "empty",
    "a" * (MAX_TOPIC_BYTES + 1): "65,536 bytes",
    "\u00e9" * (MAX_TOPIC_BYTES // 2 + 1): "65,536 bytes",  # 2 bytes each in UTF-8
}


@pytest.mark.parametrize("topic", list(BAD_TOPICS), ids=lambda t: repr(t[:12]))
def test_topic_rule_refuses(topic: str) -> None:
    why = topic_problem(topic)
    assert why is not None and BAD_TOPICS[topic] in why, why


@pytest.mark.parametrize("topic", ["soundmon/node", "a/$b", "x/\u00e9t\u00e9/\u2028/\U0001f50a",
                                   "a" * MAX_TOPIC_BYTES, "a/ b /c"])  # fmt: skip
def test_topic_rule_accepts(topic: str) -> None:
    assert topic_problem(topic) is None


def test_wildcards_are_fine_in_a_subscription_but_not_the_rest() -> None:
    assert topic_problem("a/+/#", wildcards=True) is None
    assert "control" in (topic_problem("a/\x02/#", wildcards=True) or "")


def test_level_rule() -> None:
    assert level_problem("dog_bark") is None and level_problem("$ok_inside") is None
    assert "'/'" in (level_problem("a/b") or "")
    assert "wildcard" in (level_problem("a+") or "")
    assert "U+0001" in (level_problem("a\x01") or "")
    assert level_problem("") == "is empty"


def test_string_rule_for_client_id_and_user() -> None:
    assert string_problem("soundmon-$#+") is None and string_problem("") is None
    assert "U+0000" in (string_problem("a\x00") or "")
    assert "65,536 bytes" in (string_problem("a" * 65_536) or "")


def test_the_refused_classes_are_what_mosquitto_refuses(broker) -> None:
    """The rule is not stricter than it needs to be, nor looser: publish each class to the real
    broker; the refused ones never arrive (disconnect, or silently dropped for '$'), an accepted
    one with unusual characters does."""
    topics = {"a/\x01": False, "a/\x7f": False, "a/\x85": False, "a/\ufffe": False, "$soundmon/x": False,
              "a/\u2028/\U0001f50a": True, "a/ b": True}  # fmt: skip
    for topic, arrives in topics.items():
        assert (topic_problem(topic) is None) == arrives, topic
        with Subscriber(broker, "#") as sub:
            client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="probe")
            client.connect(broker.host, broker.port)
            client.loop_start()
            try:
                client.publish(topic, "x", qos=1)
                deadline = time.monotonic() + (3.0 if arrives else 0.7)
                while time.monotonic() < deadline and not sub.get(topic):
                    time.sleep(0.05)
            finally:
                client.loop_stop()
                client.disconnect()
            assert bool(sub.get(topic)) == arrives, topic


# ---- the config keys ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("mqtt", "key", "words"),
    [
        ({"node_id": "pi\x00kitchen"}, "mqtt.node_id", "NUL"),
        ({"node_id": "pi\x1bkitchen"}, "mqtt.node_id", "U+001B"),
        ({"node_id": "pi\x85"}, "mqtt.node_id", "U+0085"),
        ({"node_id": "n" * 70_000}, "mqtt.node_id is too long", "65,535"),
        ({"base_topic": "home/\x07bell"}, "mqtt.base_topic", "U+0007"),
        ({"base_topic": "$SYS/soundmon"}, "mqtt.base_topic", "'$'"),
        ({"base_topic": "$soundmon"}, "mqtt.base_topic", "'$'"),
        ({"base_topic": "b" * 65_530}, "mqtt.base_topic is too long", "65,535"),
        ({"discovery_prefix": "ha/#"}, "mqtt.discovery_prefix", "wildcard"),
        ({"discovery_prefix": "ha/+/x"}, "mqtt.discovery_prefix", "wildcard"),
        ({"discovery_prefix": "$ha"}, "mqtt.discovery_prefix", "'$'"),
        ({"discovery_prefix": "ha\x00"}, "mqtt.discovery_prefix", "NUL"),
        ({"discovery_prefix": "h" * 65_520}, "mqtt.discovery_prefix is too long", "65,535"),
        ({"client_id": "id\x00"}, "mqtt.client_id", "NUL"),
        ({"username": "u\x7f"}, "mqtt.username", "U+007F"),
    ],
)
def test_config_refuses_what_the_broker_would_drop(mqtt: dict, key: str, words: str) -> None:
    with pytest.raises(ConfigError) as err:
        parse_config({"mqtt": mqtt}, source="config c.yaml")
    msg = str(err.value)
    assert msg.startswith(f"config c.yaml: {key}") and words in msg and "\n" not in msg, msg
    assert len(msg) < 400  # the 70,000-character value is shortened, not echoed


def test_config_accepts_the_usual_and_the_unusual_but_valid() -> None:
    cfg = parse_config({"mqtt": {"node_id": "pi-k\u00fcche", "base_topic": "home/sound/$x",
                                 "discovery_prefix": "homeassistant"}})  # fmt: skip
    assert cfg.mqtt.base == "home/sound/$x"
    # off = nothing is built from them: a long prefix is then no problem
    assert parse_config({"mqtt": {"discovery": False, "discovery_prefix": "h" * 65_520}})


# ---- the model's labels ---------------------------------------------------------------------


def test_labels_that_make_an_invalid_topic_are_refused() -> None:
    mqtt = parse_config({"mqtt": {"node_id": "n"}}).mqtt
    mqtt.check_label_topics(["siren", "dog_bark", "with space", "a/b"], source="model m")  # levels made safe
    for label, words in [("bell\x07", "U+0007"), ("x\x80", "U+0080"), ("x\ufffe", "non-character"),
                         ("l" * 65_520, "65,535")]:  # fmt: skip
        with pytest.raises(ConfigError) as err:
            mqtt.check_label_topics(["siren", label], source="model m")
        msg = str(err.value)
        assert msg.startswith("model m: label ") and words in msg and "\n" not in msg and len(msg) < 400, msg


def test_label_length_counts_the_base_topic() -> None:
    """The longest topic is what counts: a label that fits under a short base does not under a long one."""
    label = "l" * 65_000
    parse_config({"mqtt": {"node_id": "n", "discovery": False}}).mqtt.check_label_topics([label])
    long_base = parse_config({"mqtt": {"base_topic": "b" * 600, "discovery": False}}).mqtt
    with pytest.raises(ConfigError, match="65,535"):
        long_base.check_label_topics([label])


def test_labels_are_not_checked_with_mqtt_off() -> None:
    parse_config({"mqtt": {"enabled": False}}).mqtt.check_label_topics(["bell\x07"])
