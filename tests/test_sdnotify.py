"""sd_notify against a real AF_UNIX datagram socket, as systemd's NOTIFY_SOCKET would be."""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from monitor.sdnotify import Notifier


class NotifySocket:
    """A bound SOCK_DGRAM socket standing in for systemd's notify socket (a real one)."""

    def __init__(self, address: str) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(address)
        self.sock.settimeout(2.0)

    def receive(self) -> dict[str, str]:
        data = self.sock.recv(4096).decode()
        return dict(line.split("=", 1) for line in data.split("\n"))

    def nothing_pending(self) -> bool:
        self.sock.settimeout(0.05)
        try:
            self.sock.recv(4096)
        except TimeoutError:
            return True
        finally:
            self.sock.settimeout(2.0)
        return False


@pytest.fixture(params=["path", "abstract"])
def notify_socket(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[NotifySocket, str]]:
    if request.param == "path":
        addr = str(tmp_path / "notify.sock")
        sock = NotifySocket(addr)
        env_value = addr
    else:
        name = f"soundmon-test-notify-{os.getpid()}-{time.monotonic_ns()}"
        sock = NotifySocket("\0" + name)
        env_value = "@" + name
    yield sock, env_value
    sock.sock.close()


def test_ready_status_watchdog_stopping(notify_socket: tuple[NotifySocket, str]) -> None:
    sock, addr = notify_socket
    n = Notifier({"NOTIFY_SOCKET": addr})
    assert n.enabled
    assert n.ready("listening on pulse\n16 kHz")
    assert sock.receive() == {"READY": "1", "STATUS": "listening on pulse 16 kHz"}
    assert n.status("3 windows")
    assert sock.receive() == {"STATUS": "3 windows"}
    assert n.watchdog()
    assert sock.receive() == {"WATCHDOG": "1"}
    assert n.stopping()
    assert sock.receive() == {"STOPPING": "1"}
    n.close()


def test_reloading_carries_monotonic_usec(notify_socket: tuple[NotifySocket, str]) -> None:
    sock, addr = notify_socket
    n = Notifier({"NOTIFY_SOCKET": addr})
    before = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
    assert n.reloading()
    msg = sock.receive()
    after = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
    assert msg["RELOADING"] == "1"
    assert before <= int(msg["MONOTONIC_USEC"]) <= after


def test_no_socket_means_no_op() -> None:
    n = Notifier({})
    assert not n.enabled
    assert n.ready() is False and n.watchdog() is False
    assert n.watchdog_interval() is None


def test_send_errors_never_raise(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    n = Notifier({"NOTIFY_SOCKET": str(tmp_path / "nobody-listens.sock")})
    assert n.enabled
    for _ in range(3):
        assert n.watchdog() is False
    assert sum("sd_notify: cannot send" in r.getMessage() for r in caplog.records) == 1
    assert Notifier({"NOTIFY_SOCKET": "relative/path"}).ready() is False


def test_watchdog_interval_is_half_of_watchdog_usec_for_this_pid() -> None:
    pid = str(os.getpid())
    assert Notifier({"WATCHDOG_USEC": "30000000"}).watchdog_interval() == 15.0
    assert Notifier({"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": pid}).watchdog_interval() == 15.0
    assert Notifier({"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": "1"}).watchdog_interval() is None
    assert Notifier({"WATCHDOG_USEC": "junk"}).watchdog_interval() is None
    assert Notifier({"WATCHDOG_USEC": "0"}).watchdog_interval() is None


def test_reads_os_environ_by_default(notify_socket: tuple[NotifySocket, str], monkeypatch: pytest.MonkeyPatch) -> None:
    sock, addr = notify_socket
    monkeypatch.setenv("NOTIFY_SOCKET", addr)
    assert Notifier().ready()
    assert sock.receive()["READY"] == "1"
    assert sock.nothing_pending()
