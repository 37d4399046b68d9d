"""systemd service notification (sd_notify protocol), written by hand.

Why not a library: the protocol is "send one datagram of KEY=VALUE lines to the AF_UNIX socket
named in $NOTIFY_SOCKET", a few lines of socket code. systemd's own Python module
(`systemd-python`) needs libsystemd headers and a compiler to install from PyPI and is not
reliably available as a wheel for the Pi, and the small pure-Python packages add a dependency
for nothing. See sd_notify(3) for the protocol.

`Notifier` is a no-op when $NOTIFY_SOCKET is unset (running by hand, in tests, under another
supervisor), and never raises when sending fails: losing a status message must never take the
daemon down (a missed WATCHDOG=1 is handled by systemd restarting us, which is the point).
"""

from __future__ import annotations

import logging
import os
import socket
import time
from collections.abc import Mapping

__all__ = ["Notifier"]

log = logging.getLogger("soundmon.sdnotify")


class Notifier:
    """Sends READY/STATUS/WATCHDOG/STOPPING/RELOADING datagrams to systemd.

    `env` defaults to `os.environ`; pass a dict in tests. The socket address may be a path or
    an abstract socket written with a leading '@' (systemd uses both); anything else is logged
    once and ignored. Every sending method returns `notify`'s result: True when the datagram was
    sent, False when disabled or the send failed (never an exception).
    """

    def __init__(self, env: Mapping[str, str] | None = None) -> None:
        self._env = os.environ if env is None else env
        raw = self._env.get("NOTIFY_SOCKET", "")
        self._address: str | None = None
        if raw:
            if raw.startswith("@"):
                self._address = "\0" + raw[1:]  # Linux abstract namespace
            elif raw.startswith("/"):
                self._address = raw
            else:
                log.warning("sd_notify: ignoring NOTIFY_SOCKET=%r (neither a path nor @abstract)", raw)
        self._sock: socket.socket | None = None
        self._failed_once = False

    @property
    def enabled(self) -> bool:
        """True when running under systemd with a notify socket."""
        return self._address is not None

    def notify(self, *assignments: str) -> bool:
        """Send `KEY=VALUE` lines as one datagram; False if disabled or the send failed."""
        if self._address is None or not assignments:
            return False
        payload = "\n".join(assignments).encode("utf-8", "replace")
        try:
            if self._sock is None:
                self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
            self._sock.sendto(payload, self._address)
        except OSError as exc:
            if not self._failed_once:  # one line, not one per watchdog ping
                log.warning("sd_notify: cannot send to %s (%s)", self._env.get("NOTIFY_SOCKET"), exc)
                self._failed_once = True
            return False
        return True

    def ready(self, status: str | None = None) -> bool:
        """READY=1 (plus an optional STATUS=): the service is up; `Type=notify` start completes."""
        return self.notify("READY=1", *([_status_line(status)] if status else []))

    def status(self, text: str) -> bool:
        """STATUS=...: one line shown by `systemctl status`."""
        return self.notify(_status_line(text))

    def watchdog(self) -> bool:
        """WATCHDOG=1: the processing loop is alive (send every `watchdog_interval()` seconds)."""
        return self.notify("WATCHDOG=1")

    def stopping(self) -> bool:
        """STOPPING=1: shutdown has begun."""
        return self.notify("STOPPING=1")

    def reloading(self) -> bool:
        """RELOADING=1 with MONOTONIC_USEC (required by Type=notify-reload, harmless otherwise).

        Send READY=1 again when the reload is done.
        """
        usec = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
        return self.notify("RELOADING=1", f"MONOTONIC_USEC={usec}")

    def watchdog_interval(self) -> float | None:
        """Seconds between WATCHDOG=1 pings (half of $WATCHDOG_USEC), or None if not asked for.

        Like sd_watchdog_enabled(3): when $WATCHDOG_PID is set it must be this process.
        """
        usec = self._env.get("WATCHDOG_USEC")
        if not usec:
            return None
        pid = self._env.get("WATCHDOG_PID")
        if pid:
            try:
                if int(pid) != os.getpid():
                    return None
            except ValueError:
                return None
        try:
            value = int(usec)
        except ValueError:
            return None
        if value <= 0:
            return None
        return value / 2_000_000.0

    def close(self) -> None:
        """Close the socket (a later send opens it again)."""
        if self._sock is not None:
            self._sock.close()
            self._sock = None


def _status_line(text: str) -> str:
    return "STATUS=" + " ".join(str(text).split())
