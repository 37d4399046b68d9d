"""Helpers for running the real daemon (`python -m monitor run`) as a child process in tests, and a
stand-in publisher for driving a `Daemon` in process."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any


class StandIn:
    """A publisher or notifier stand-in for a `Daemon` driven in process (no broker, no systemd):
    it keeps the detection payloads it is given (`payloads`); every other method does nothing."""

    connected = False
    spool_depth = 0
    state = "disabled"

    def __init__(self) -> None:
        self.payloads: list[dict] = []

    def publish_detection(self, payload: dict) -> None:
        self.payloads.append(payload)

    def __getattr__(self, name: str):
        return lambda *args, **kwargs: None


LABELS = [
    "air_conditioner", "car_horn", "children_playing", "dog_bark", "drilling",
    "engine_idling", "gun_shot", "jackhammer", "siren", "street_music",
]  # fmt: skip


def write_config(path: Path, broker=None, state_dir: Path | None = None, **sections: dict) -> Path:
    """A YAML config (written as JSON, which YAML reads) pointing at `broker` and a state dir."""
    cfg: dict[str, Any] = {
        "mqtt": {"enabled": False} if broker is None else {
            "host": broker.host, "port": broker.port, "node_id": "testnode",
            "reconnect_max_seconds": 1, "stats_interval": 1,
        },
        "storage": {"state_dir": str(state_dir or path.parent / "state")},
        "detection": {"level_interval": 0.2},
        "audio": {"block_seconds": 0.05},
    }  # fmt: skip
    for section, values in sections.items():
        cfg.setdefault(section, {}).update(values)
    path.write_text(json.dumps(cfg))
    return path


def all_thresholds(value: float, **extra: Any) -> dict:
    """detection section setting every label's threshold (for models whose scores we don't control)."""
    return {"classes": {label: {"threshold": value} for label in LABELS}, **extra}


class DaemonProcess:
    """`soundmon run` in a child process; its stderr log is collected line by line."""

    def __init__(self, *args: str, env: dict[str, str] | None = None) -> None:
        self.args = [sys.executable, "-m", "monitor", "run", *args]
        self.proc = subprocess.Popen(
            self.args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
            env={**os.environ, **(env or {})},
        )  # fmt: skip
        self.log: list[str] = []
        self.out: list[str] = []
        self._threads = [
            threading.Thread(target=self._pump, args=(self.proc.stderr, self.log), daemon=True),
            threading.Thread(target=self._pump, args=(self.proc.stdout, self.out), daemon=True),
        ]
        for t in self._threads:
            t.start()

    @staticmethod
    def _pump(stream, sink: list[str]) -> None:
        for line in stream:
            sink.append(line.rstrip("\n"))

    def wait_log(self, needle: str, timeout: float = 20.0) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for line in list(self.log):
                if needle in line:
                    return line
            if self.proc.poll() is not None and not any(needle in x for x in self.log):
                time.sleep(0.2)
                break
            time.sleep(0.05)
        raise AssertionError(f"log line {needle!r} not seen; log:\n" + "\n".join(self.log[-30:]))

    def signal(self, sig: int = signal.SIGTERM) -> None:
        self.proc.send_signal(sig)

    def wait(self, timeout: float = 60.0) -> int:
        rc = self.proc.wait(timeout=timeout)
        for t in self._threads:
            t.join(2)
        return rc

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(5)

    def text(self) -> str:
        return "\n".join(self.log)


def run_to_end(*args: str, timeout: float = 120.0, env: dict[str, str] | None = None) -> DaemonProcess:
    d = DaemonProcess(*args, env=env)
    try:
        d.wait(timeout)
    finally:
        d.kill()
    return d
