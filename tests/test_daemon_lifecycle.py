"""How `soundmon run` ends: open events are ended on every way out, and a second stop signal
cannot kill the shutdown; MQTT credentials from systemd's credentials directory.

The real daemon as a child process, a real Mosquitto, the tiny real bundle with every threshold
at 0 (so every label has an open event from the first window on), real audio: the demo
recording and a FLAC made from it that fails to decode part-way (tests/corrupt_audio.py).
"""

from __future__ import annotations

import signal
import time

from tests.broker import Subscriber
from tests.corrupt_audio import corrupt_flac
from tests.daemon_helpers import LABELS, DaemonProcess, all_thresholds, run_to_end, write_config
from tests.paths import DEMO

BASE = "soundmon/testnode"


def assert_every_event_ended(sub: Subscriber) -> None:
    """Every START has its END, and every label's last (retained) state is OFF."""
    detections = [m.json() for m in sub.get(f"{BASE}/detection")]
    starts = {p["id"] for p in detections if p["type"] == "start"}
    ends = {p["id"] for p in detections if p["type"] == "end"}
    assert starts and starts == ends, f"{len(starts)} started, {len(starts - ends)} never ended"
    for label in LABELS:
        states = [m.text for m in sub.get(f"{BASE}/state/{label}")]
        assert states and states[-1] == "OFF", (label, states)


def test_decode_error_part_way_ends_open_events_and_exits_1(broker, tiny_bundle, tmp_path):
    """Before: exit 1 with every event started and never ended (state/<label> stuck ON)."""
    bad, decodable_s = corrupt_flac(tmp_path)
    cfg = write_config(tmp_path / "c.yaml", broker, detection=all_thresholds(0.0))
    with Subscriber(broker, "soundmon/#") as sub:
        d = run_to_end("--source", str(bad), "--pace", "fast", "--config", str(cfg), "--model", str(tiny_bundle))
        assert d.proc.returncode == 1, d.text()
        sub.wait_for(f"{BASE}/status", lambda m: m.text == "offline", timeout=10)
        assert_every_event_ended(sub)
        ends = [m.json() for m in sub.get(f"{BASE}/detection") if m.json()["type"] == "end"]
        assert len(ends) == len(LABELS)
        # they end where the decodable audio ends (the audio up to the error was processed)
        assert all(decodable_s - 1.0 <= e["end_offset_s"] <= decodable_s + 0.5 for e in ends), ends
    errors = [x for x in d.log if x.startswith("soundmon run:")]
    assert len(errors) == 1 and "cannot decode" in errors[0] and str(bad) in errors[0]
    assert "Traceback" not in d.text()


def test_sigterm_during_shutdown_is_ignored_and_the_exit_status_stays_0(broker, tiny_bundle, tmp_path):
    """Before: a second SIGTERM while stopping killed the process (status -15, i.e. 143)."""
    cfg = write_config(tmp_path / "c.yaml", broker, detection=all_thresholds(0.0))
    with Subscriber(broker, "soundmon/#") as sub:
        d = DaemonProcess("--source", str(DEMO), "--pace", "realtime", "--config", str(cfg),
                          "--model", str(tiny_bundle))  # fmt: skip
        try:
            sub.wait_count(f"{BASE}/detection", len(LABELS), timeout=20)
            d.signal(signal.SIGTERM)
            # keep sending, like an impatient operator, until the process is gone: this hits the
            # shutdown itself and the interpreter's exit after it
            deadline = time.monotonic() + 10
            while d.proc.poll() is None and time.monotonic() < deadline:
                time.sleep(0.005)
                if d.proc.poll() is None:
                    d.signal(signal.SIGTERM)
            assert d.wait(10) == 0, d.text()
        finally:
            d.kill()
        sub.wait_for(f"{BASE}/status", lambda m: m.text == "offline", timeout=5)
        assert_every_event_ended(sub)
    assert "received while stopping: ignored" in d.text()
    assert "Traceback" not in d.text()


def test_mqtt_password_from_the_systemd_credentials_directory(broker_factory, tiny_bundle, tmp_path, monkeypatch):
    """`password_file: ${CREDENTIALS_DIRECTORY}/mqtt-password`, as with LoadCredential= in the unit."""
    broker = broker_factory(users={"soundmon": "s3cret"})
    creds = tmp_path / "credentials"
    creds.mkdir()
    (creds / "mqtt-password").write_text("s3cret\n")
    cfg = write_config(tmp_path / "c.yaml", broker, detection={"classes": {"siren": {"threshold": 0.0}}},
                       mqtt={"username": "soundmon", "password_file": "${CREDENTIALS_DIRECTORY}/mqtt-password"})  # fmt: skip
    args = ("--source", str(DEMO), "--pace", "fast", "--config", str(cfg), "--model", str(tiny_bundle))
    with Subscriber(broker, f"{BASE}/detection", username="soundmon", password="s3cret") as sub:
        d = run_to_end(*args, env={"CREDENTIALS_DIRECTORY": str(creds)})
        assert d.proc.returncode == 0, d.text()
        msgs = sub.wait_count(f"{BASE}/detection", 2, timeout=10)
    assert {m.json()["label"] for m in msgs} == {"siren"}
    assert "not authorised" not in d.text() and "s3cret" not in d.text()
    # Without the variable (not started by systemd with LoadCredential=): one line, exit 2.
    monkeypatch.delenv("CREDENTIALS_DIRECTORY", raising=False)
    d = run_to_end(*args)
    assert d.proc.returncode == 2, d.text()
    assert len(d.log) == 1 and d.log[0].startswith("soundmon run: "), d.text()
    assert "mqtt.password_file: environment variable CREDENTIALS_DIRECTORY is not set" in d.log[0]
