"""A real Home Assistant core (2024.3.3) as the client of soundmon's MQTT discovery.

The real daemon (`python -m monitor run`, the shipped model, the demo recording at real-time
pace) and a real Home Assistant share one Mosquitto; everything is checked through HA's own
APIs: its REST API (`/api/states`), its websocket API (the entity registry, and every
`state_changed` event recorded while the daemon runs). See tests/homeassistant.py for how HA
is installed (a cached venv, built here if missing; the tests skip with the reason when it
cannot be built, e.g. without access to PyPI), configured, onboarded and kept off the network.
"""

from __future__ import annotations

import contextlib
import ipaddress
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import soundfile as sf

from tests import homeassistant as hass
from tests.broker import Broker, Subscriber
from tests.daemon_helpers import LABELS, DaemonProcess, write_config
from tests.paths import DEMO, need_shipped_model

pytestmark = [pytest.mark.slow, pytest.mark.timeout(1800)]  # a first run builds the HA venv

NODE = "testnode"
BASE = f"soundmon/{NODE}"
STATS_KEYS = ("uptime", "dropped_samples", "spool_depth", "inference_ms_p95", "input_state")
BINARY = {label: f"binary_sensor.soundmon_{NODE}_{label}" for label in LABELS}
SENSORS = {key: f"sensor.soundmon_{NODE}_{key}" for key in ("level", *STATS_KEYS)}
ALL = set(BINARY.values()) | set(SENSORS.values())
# what the shipped model hears in demo/street_demo.flac (`make demo`): siren ~0-2 s,
# dog bark ~12-13 s, gun shot ~24 s
DEMO_EVENTS = ("siren", "dog_bark", "gun_shot")


def wait_until(fn: Callable[[], Any], timeout: float, what: str) -> Any:
    """fn()'s first truthy value, polled every 0.2 s; AssertionError naming `what` after `timeout`."""
    deadline = time.monotonic() + timeout
    while True:
        value = fn()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(0.2)


@pytest.fixture(scope="module")
def ha_venv() -> Path:
    need_shipped_model()
    venv = hass.venv_dir()
    if not hass.venv_ready(venv):
        try:
            seconds = hass.build_venv(venv)
        except RuntimeError as exc:
            lines = str(exc).splitlines()
            pytest.skip(f"Home Assistant {hass.HA_VERSION} cannot be installed here: {lines[0]} ... {lines[-1]}")
        print(f"built the Home Assistant venv {venv} in {seconds:.0f} s")
    return venv


@pytest.fixture(scope="module")
def ha_broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Broker]:
    try:
        b = Broker(tmp_path_factory.mktemp("ha-mosquitto"))
    except RuntimeError as exc:
        pytest.fail(str(exc), pytrace=False)
    b.start()
    yield b
    b.stop()


@pytest.fixture(scope="module")
def ha(ha_venv: Path, ha_broker: Broker, tmp_path_factory: pytest.TempPathFactory) -> Iterator[hass.HomeAssistant]:
    instance = hass.HomeAssistant(tmp_path_factory.mktemp("ha-config"), ha_broker.host, ha_broker.port, ha_venv)
    try:
        instance.start()
        instance.onboard()
        entries = instance.config_entries()
        assert [(e["domain"], e["state"]) for e in entries] == [("mqtt", "loaded")], entries
        yield instance
    finally:
        instance.stop()
    print(instance.tail(10))


def assert_ha_clean(ha: hass.HomeAssistant) -> None:
    """HA set everything up, nothing of ours made it complain, and it sent nothing off loopback."""
    problems = [
        line for line in ha.log_text().splitlines()
        if " ERROR " in line or ("WARNING" in line and ("mqtt" in line.lower() or "soundmon" in line))
    ]  # fmt: skip
    assert not problems, "\n".join(problems[:20])
    # UDP "connects" (HA's source-IP guess: no packet leaves) are refused too, and allowed here;
    # a TCP connect, a datagram or a name lookup off loopback is not.
    attempts = [x for x in ha.guard_text().splitlines() if x and " udp-connect " not in x]
    assert not attempts, "\n".join(attempts)
    # and it listens on loopback only: its HTTP port, nothing else
    sockets = ha.sockets()
    assert ("tcp", "127.0.0.1", ha.port) in sockets, sockets
    assert all(ipaddress.ip_address(addr).is_loopback for _, addr, _ in sockets), sockets


def transitions(events: list[dict[str, Any]], entity: str, since: float = 0.0) -> list[str]:
    """The states `entity` went through (consecutive repeats folded), from `since` on."""
    out: list[str] = []
    for e in events:
        if e["entity_id"] == entity and e["t"] >= since and (not out or out[-1] != e["state"]):
            out.append(e["state"])
    return out


def first_on(events: list[dict[str, Any]], entity: str) -> float:
    return next(e["t"] for e in events if e["entity_id"] == entity and e["state"] == "on")


@contextlib.contextmanager
def recording(ha: hass.HomeAssistant, path: Path) -> Iterator[Callable[[], list[dict[str, Any]]]]:
    proc = ha.record_events(path)
    try:
        yield lambda: hass.read_events(path)
    finally:
        proc.terminate()
        proc.wait(10)


def test_home_assistant_discovers_every_entity_and_shows_the_demo_run(ha, ha_broker, tmp_path):
    cfg = write_config(tmp_path / "c.yaml", ha_broker)
    with recording(ha, tmp_path / "events.jsonl") as events, Subscriber(ha_broker, f"{BASE}/detection") as sub:
        d = DaemonProcess("--source", str(DEMO), "--pace", "realtime", "--config", str(cfg))
        try:
            # Every entity appears by discovery and none stays unknown: the binary sensors of
            # labels that have not fired are `off`, the level and stats sensors have values.
            def settled() -> dict[str, Any]:
                states = ha.states()
                ready = set(states) >= ALL and all(
                    states[e]["state"] not in ("unknown", "unavailable", "") for e in ALL
                )
                return states if ready else {}

            states = wait_until(settled, 120, "every soundmon entity in HA with a known state")
            for label, entity in BINARY.items():
                s = states[entity]
                assert s["state"] in ("on", "off"), (entity, s)
                assert s["attributes"]["device_class"] == "sound"
                assert s["attributes"]["friendly_name"] == f"soundmon {NODE} {label.replace('_', ' ').capitalize()}"
            level = states[SENSORS["level"]]
            assert level["attributes"]["unit_of_measurement"] == "dBFS"
            assert level["attributes"]["friendly_name"] == f"soundmon {NODE} Sound level"
            assert -200 <= float(level["state"]) <= 0
            assert float(states[SENSORS["uptime"]]["state"]) >= 0
            assert states[SENSORS["uptime"]]["attributes"]["unit_of_measurement"] == "s"
            assert int(states[SENSORS["dropped_samples"]]["state"]) == 0
            assert int(states[SENSORS["spool_depth"]]["state"]) >= 0
            assert float(states[SENSORS["inference_ms_p95"]]["state"]) > 0
            assert states[SENSORS["inference_ms_p95"]]["attributes"]["unit_of_measurement"] == "ms"
            assert states[SENSORS["input_state"]]["state"] == "ok"
            # HA's entity registry: one device, the sensors are diagnostics, unique ids kept
            (registry,) = ha.ws({"type": "config/entity_registry/list"})
            ours = {r["entity_id"]: r for r in registry if r["platform"] == "mqtt"}
            assert set(ours) == ALL
            assert len({r["device_id"] for r in ours.values()}) == 1
            for entity, r in ours.items():
                assert r["unique_id"] == entity.split(".", 1)[1]
                assert r["entity_category"] == ("diagnostic" if entity in SENSORS.values() else None)
            assert d.wait(120) == 0, d.text()  # the end of the recording: a clean exit
        finally:
            d.kill()
        # At the daemon's exit (status `offline`) every entity is unavailable.
        wait_until(lambda: all(s["state"] == "unavailable" for e, s in ha.states().items() if e in ALL),
                   30, "every soundmon entity unavailable after the daemon's exit")  # fmt: skip
        detections = [m.json() for m in sub.get()]
    seen = events()
    # Each binary sensor went through exactly the daemon's events: one on/off pair per event
    # start/end the daemon published, and labels that never fired were only ever `off`.
    for label, entity in BINARY.items():
        starts = sum(1 for p in detections if p["label"] == label and p["type"] == "start")
        ends = sum(1 for p in detections if p["label"] == label and p["type"] == "end")
        assert starts == ends, (label, detections)
        history = [s for s in transitions(seen, entity) if s != "unavailable"]
        assert "unknown" not in history[1:], (entity, transitions(seen, entity))
        history = [s for s in history if s != "unknown"]
        assert history == ["off"] + ["on", "off"] * starts, (entity, transitions(seen, entity))
        assert transitions(seen, entity)[-1] == "unavailable"
    # The shipped model hears the three sounds of the recording, in their order.
    assert all(any(p["label"] == x for p in detections) for x in DEMO_EVENTS), detections
    assert first_on(seen, BINARY["siren"]) < first_on(seen, BINARY["dog_bark"]) < first_on(seen, BINARY["gun_shot"])
    # the level followed the recording (several distinct values), and the stats were updated
    assert len({e["state"] for e in seen if e["entity_id"] == SENSORS["level"]}) > 5
    assert len({e["state"] for e in seen if e["entity_id"] == SENSORS["uptime"]}) > 5
    assert_ha_clean(ha)


def test_home_assistant_shows_nothing_on_after_a_sigkill_and_a_restart(ha, ha_broker, tmp_path):
    cfg = write_config(tmp_path / "c.yaml", ha_broker)
    silence = tmp_path / "silence.flac"
    sf.write(silence, np.zeros(16000 * 12, dtype=np.float32), 16000)  # gated: no events at all
    siren = BINARY["siren"]
    with recording(ha, tmp_path / "events.jsonl") as events:
        d = DaemonProcess("--source", str(DEMO), "--pace", "realtime", "--config", str(cfg))
        try:
            wait_until(lambda: ha.states().get(siren, {}).get("state") == "on", 120, "the siren on in HA")
            d.kill()  # SIGKILL while the siren is on: its retained state on the broker stays ON
        finally:
            d.kill()
        with Subscriber(ha_broker, f"{BASE}/state/siren") as retained:
            left = retained.wait_for(f"{BASE}/state/siren", timeout=10)
            assert (left.text, left.retain) == ("ON", True), "the siren ended before the SIGKILL"
        wait_until(lambda: all(s["state"] == "unavailable" for e, s in ha.states().items() if e in ALL),
                   30, "every soundmon entity unavailable after the SIGKILL (the last will)")  # fmt: skip
        restarted = time.time()
        d = DaemonProcess("--source", str(silence), "--pace", "realtime", "--config", str(cfg))
        try:
            # back, and telling the truth: the daemon hears silence, so every sound is off
            def back() -> dict[str, Any]:
                states = ha.states()
                return states if all(states[e]["state"] != "unavailable" for e in BINARY.values()) else {}

            states = wait_until(back, 60, "the binary sensors available again after the restart")
            assert {e: states[e]["state"] for e in BINARY.values()} == dict.fromkeys(BINARY.values(), "off")
            assert d.wait(60) == 0, d.text()
        finally:
            d.kill()
    seen = events()
    assert "on" in transitions(seen, siren)
    assert_ha_clean(ha)
    # ... and never `on` again, not even for a moment: the daemon must send its states before
    # it says `online` (HA shows an entity's last state as soon as it is available again).
    flashed = {e: after for e in BINARY.values() if "on" in (after := transitions(seen, e, since=restarted))}
    glitch = [(round(e["t"] - restarted, 3), e["state"]) for e in seen if e["entity_id"] == siren and e["t"] >= restarted]
    assert not flashed, f"after the restart HA showed a stale ON again: {flashed}; siren: {glitch}"
