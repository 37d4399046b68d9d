"""`soundmon run` refuses, at start, what would otherwise fail later or forever (exit 2, one line).

The real daemon as a child process (tests/daemon_helpers.py), the real tiny bundle. Exit status
2 is what systemd's RestartPreventExitStatus=2 in systemd/soundmon.service keys on: these are
configuration errors a restart cannot fix, so they must never come out as a traceback (exit 1).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from tests.daemon_helpers import run_to_end, write_config
from tests.paths import DEMO


def assert_one_line_exit_2(d, *words: str) -> str:
    """The run ended with status 2 and exactly one stderr line, `soundmon run: ...`, naming `words`."""
    text = d.text()
    assert d.proc.returncode == 2, text
    assert "Traceback" not in text
    assert len(d.log) == 1 and d.log[0].startswith("soundmon run: "), text
    for word in words:
        assert word in d.log[0], d.log[0]
    return d.log[0]


def run_file(cfg: Path, bundle: Path):
    return run_to_end("--source", str(DEMO), "--pace", "fast", "--config", str(cfg), "--model", str(bundle))


@pytest.mark.parametrize(
    ("mqtt", "words"),
    [
        ({"node_id": "kitchen\u0000pi"}, ("mqtt.node_id", "U+0000")),
        ({"node_id": "kitchen\u0007pi"}, ("mqtt.node_id", "U+0007")),
        ({"node_id": "n" * 70_000}, ("mqtt.node_id is too long", "65,535")),
        ({"base_topic": "home/\u001bsound"}, ("mqtt.base_topic", "U+001B")),
        ({"base_topic": "$soundmon/kitchen"}, ("mqtt.base_topic", "'$'")),
        ({"discovery_prefix": "ha/#"}, ("mqtt.discovery_prefix", "wildcard")),
    ],
    ids=["nul", "control", "70000-chars", "base-control", "base-dollar", "discovery-wildcard"],
)
def test_topics_the_broker_would_reject_are_refused_at_start(broker, tiny_bundle, tmp_path, mqtt, words):
    cfg = write_config(tmp_path / "c.yaml", broker, mqtt=mqtt)
    line = assert_one_line_exit_2(run_file(cfg, tiny_bundle), *words)
    assert len(line) < 500  # a 70,000-character value is shortened in the message
    assert not (tmp_path / "state").exists()  # refused before anything was set up


def test_a_bundle_whose_label_makes_an_invalid_topic_is_refused(broker, tiny_bundle, tmp_path):
    bad = tmp_path / "bell"
    shutil.copy(tiny_bundle.with_suffix(".tflite"), bad.with_suffix(".tflite"))
    meta = tiny_bundle.with_suffix(".json").read_text()
    assert '"siren"' in meta
    bad.with_suffix(".json").write_text(meta.replace('"siren"', json.dumps("siren\u0007bell")))
    cfg = write_config(tmp_path / "c.yaml", broker)
    assert_one_line_exit_2(run_file(cfg, bad), f"model {bad}", "siren\\x07bell", "U+0007")
    # The same bundle is fine without MQTT (no topic is built from the label).
    off = write_config(tmp_path / "off.yaml", None)
    assert run_file(off, bad).proc.returncode == 0


@pytest.mark.parametrize("kind", ["file", "under-a-file", "not-creatable"])
def test_unusable_state_dir_is_one_line_exit_2(tiny_bundle, tmp_path, kind):
    (tmp_path / "afile").write_text("x")
    state = {"file": tmp_path / "afile", "under-a-file": tmp_path / "afile" / "state",
             "not-creatable": Path("/proc/soundmon-test/state")}[kind]  # fmt: skip
    cfg = write_config(tmp_path / "c.yaml", None, state_dir=state)
    line = assert_one_line_exit_2(run_file(cfg, tiny_bundle), "storage.state_dir", str(state))
    assert {"file": "not a directory", "under-a-file": "is a file", "not-creatable": "cannot create"}[kind] in line
