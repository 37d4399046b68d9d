"""The unit's system-call filter (@system-service minus @privileged and @resources, EPERM) does
not break soundmon: the real daemon runs under it, with a real broker, from a real file and
from a real (PulseAudio) microphone through PortAudio.

No systemd runs here, so tests/seccomp_exec.py builds the same filter from the unit file with
libseccomp (what systemd uses) and execs the daemon under it. A control test shows the filter
is really in force (calls of the denied groups fail with EPERM).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading

import pytest

from tests.broker import Subscriber
from tests.daemon_helpers import DaemonProcess, write_config
from tests.paths import DEMO, REPO
from tests.seccomp_exec import allowed_syscalls, available

UNIT = REPO / "systemd" / "soundmon.service"
BASE = "soundmon/testnode"

pytestmark = pytest.mark.skipif(available() is not None, reason=str(available()))


class FilteredDaemon(DaemonProcess):
    """`soundmon run` started through tests/seccomp_exec.py, i.e. under the unit's filter."""

    def __init__(self, *args: str, env: dict[str, str] | None = None) -> None:
        self.args = [sys.executable, "-m", "tests.seccomp_exec", str(UNIT), "--",
                     sys.executable, "-m", "monitor", "run", *args]  # fmt: skip
        self.proc = subprocess.Popen(self.args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                     env={**os.environ, **(env or {})}, cwd=REPO)  # fmt: skip
        self.log, self.out = [], []
        self._threads = [threading.Thread(target=self._pump, args=(self.proc.stderr, self.log), daemon=True),
                         threading.Thread(target=self._pump, args=(self.proc.stdout, self.out), daemon=True)]  # fmt: skip
        for t in self._threads:
            t.start()


def test_the_filter_is_in_force_and_follows_the_unit() -> None:
    allowed = allowed_syscalls(UNIT.read_text())
    assert {"read", "write", "execve", "socket", "connect", "ioctl", "mmap", "prlimit64"} <= allowed
    assert not {"chown", "setuid", "setpriority", "sched_setaffinity", "sched_setscheduler"} & allowed
    probe = ("import os\n"
             "for call in (lambda: os.setpriority(os.PRIO_PROCESS, 0, 1), lambda: os.sched_setaffinity(0, {0})):\n"
             "    try:\n        call()\n        print('allowed')\n"
             "    except PermissionError:\n        print('EPERM')\n")  # fmt: skip
    out = subprocess.run([sys.executable, "-m", "tests.seccomp_exec", str(UNIT), "--", sys.executable, "-c", probe],
                         capture_output=True, text=True, cwd=REPO, timeout=60)  # fmt: skip
    assert out.stdout.split() == ["EPERM", "EPERM"], out.stdout + out.stderr


def test_file_run_with_mqtt_under_the_filter(broker, tiny_bundle, tmp_path) -> None:
    cfg = write_config(tmp_path / "c.yaml", broker, detection={"classes": {"siren": {"threshold": 0.0}}})
    with Subscriber(broker, "soundmon/#") as sub:
        d = FilteredDaemon("--source", str(DEMO), "--pace", "fast", "--config", str(cfg), "--model", str(tiny_bundle))
        try:
            assert d.wait(120) == 0, d.text()
        finally:
            d.kill()
        sub.wait_for(f"{BASE}/status", lambda m: m.text == "offline", timeout=10)
        kinds = [m.json()["type"] for m in sub.get(f"{BASE}/detection")]
        assert kinds == ["start", "end"]
        assert sub.get(f"{BASE}/stats") and (tmp_path / "state" / "spool.sqlite3").is_file()
    assert "Operation not permitted" not in d.text() and "Traceback" not in d.text()


def test_microphone_run_under_the_filter(pulse_sink, broker, tiny_bundle, tmp_path) -> None:
    cfg = write_config(tmp_path / "c.yaml", broker, detection={"classes": {"siren": {"threshold": 0.0}}},
                       audio={"device": pulse_sink.device, "block_seconds": 0.1})  # fmt: skip
    with Subscriber(broker, f"{BASE}/#") as sub:
        d = FilteredDaemon("--source", "mic", "--config", str(cfg), "--model", str(tiny_bundle), env=pulse_sink.env)
        try:
            d.wait_log("audio flowing", timeout=30)
            player = pulse_sink.play(DEMO)
            sub.wait_for(f"{BASE}/detection", lambda m: m.json()["type"] == "start", timeout=20)
            sub.wait_for(f"{BASE}/level", lambda m: m.json()["dbfs"] > -60, timeout=10)  # real sound arrives
            player.kill()
            player.wait(5)
            d.signal(signal.SIGTERM)
            assert d.wait(15) == 0, d.text()
        finally:
            d.kill()
        sub.wait_for(f"{BASE}/detection", lambda m: m.json()["type"] == "end", timeout=5)
    assert "Traceback" not in d.text()
