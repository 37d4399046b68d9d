"""A real Mosquitto broker for tests, and a subscriber that records what it receives.

Use from a test module (or list "tests.broker" in the root conftest's `pytest_plugins`)::

    from tests.broker import Broker, Subscriber, broker_factory_fixture, broker_fixture  # noqa: F401

    def test_something(broker):                       # a fresh anonymous broker per test
        with Subscriber(broker, "soundmon/#") as sub:
            ...publish...
            msg = sub.wait_for("soundmon/x/status", lambda m: m.text == "online")

    def test_auth(broker_factory):
        b = broker_factory(users={"soundmon": "s3cret"})          # password_file broker
        b = broker_factory(persistence=True, start=False)          # start later / outages

`Broker` runs `mosquitto -c <conf>` as a child process on a free 127.0.0.1 port (persistence
off unless asked), waits until the port accepts, and can `stop()` and `start()` again on the
same port to simulate outages. Its log (connections, auth failures) is in `broker.log_text()`.
If the `mosquitto` binary is missing the fixtures fail with a message saying how to install it.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

__all__ = [
    "Broker",
    "Message",
    "Subscriber",
    "broker",
    "broker_factory",
    "broker_factory_fixture",
    "broker_fixture",
    "find_mosquitto",
    "free_port",
    "make_tls_files",
]

MOSQUITTO_CANDIDATES = (
    "mosquitto",
    "/usr/sbin/mosquitto",
    "/usr/local/sbin/mosquitto",
    "/opt/homebrew/sbin/mosquitto",
)


def find_mosquitto() -> str | None:
    """Path of the mosquitto binary ($MOSQUITTO overrides), or None."""
    env = os.environ.get("MOSQUITTO")
    if env:
        return env if Path(env).exists() else None
    for cand in MOSQUITTO_CANDIDATES:
        found = shutil.which(cand)
        if found:
            return found
    return None


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Broker:
    """One mosquitto child process on 127.0.0.1:`port` (kept across stop/start).

    users: {name: password} -> `allow_anonymous false` with a `mosquitto_passwd` file.
    persistence: keep retained messages and persistent sessions across stop()/start()
        (mosquitto saves them on SIGTERM) -- lets a `Subscriber(persistent=True)` miss nothing
        while the broker is down.
    tls: {"cafile", "certfile", "keyfile"} -> the listener speaks TLS (see `make_tls_files`).
    """

    host = "127.0.0.1"

    def __init__(
        self,
        workdir: str | Path | None = None,
        port: int | None = None,
        users: dict[str, str] | None = None,
        persistence: bool = False,
        tls: dict[str, str | Path] | None = None,
        extra_conf: Iterable[str] | None = None,
    ) -> None:
        exe = find_mosquitto()
        if exe is None:
            raise RuntimeError(
                "mosquitto is not installed: the MQTT tests need a real broker "
                "(`apt-get install mosquitto`, or `make system-deps`; or set $MOSQUITTO to its path)"
            )
        self.exe = exe
        self._own_dir = workdir is None
        self.workdir = (
            Path(workdir) if workdir is not None else Path(tempfile.mkdtemp(prefix="mosquitto-"))
        )
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.port = port or free_port()
        self.users = dict(users or {})
        self.persistence = persistence
        self.tls = dict(tls) if tls else None
        # more mosquitto.conf lines, e.g. ["max_queued_messages 20"] (after the defaults)
        self.extra_conf = list(extra_conf or [])
        self.proc: subprocess.Popen[bytes] | None = None
        self.log_path = self.workdir / f"mosquitto-{self.port}.log"
        self.conf_path = self.workdir / f"mosquitto-{self.port}.conf"
        self.start_seconds: float | None = None  # how long the last start() took
        self._write_conf()

    def _write_conf(self) -> None:
        lines = [f"listener {self.port} {self.host}"]
        if os.geteuid() == 0:
            # otherwise mosquitto drops to user `mosquitto` and cannot read our files
            lines.insert(0, "user root")
        if self.users:
            pw = self.workdir / f"passwd-{self.port}"
            pw.write_text("")
            for name, password in self.users.items():
                subprocess.run(
                    [
                        shutil.which("mosquitto_passwd") or "mosquitto_passwd",
                        "-b",
                        str(pw),
                        name,
                        password,
                    ],
                    check=True,
                    capture_output=True,
                )
            pw.chmod(0o600)
            lines += ["allow_anonymous false", f"password_file {pw}"]
        else:
            lines.append("allow_anonymous true")
        if self.tls:
            lines += [
                f"cafile {self.tls['cafile']}",
                f"certfile {self.tls['certfile']}",
                f"keyfile {self.tls['keyfile']}",
            ]
        if self.persistence:
            lines += [
                "persistence true",
                f"persistence_location {self.workdir}/",
                f"persistence_file store-{self.port}.db",
            ]
        else:
            lines.append("persistence false")
        lines += ["log_dest stderr", "log_type error", "log_type warning", "log_type notice", "log_type information",
                  "connection_messages true", "log_timestamp true"]  # fmt: skip
        lines += self.extra_conf
        self.conf_path.write_text("\n".join(lines) + "\n")

    @property
    def url(self) -> str:
        return f"mqtt://{self.host}:{self.port}"

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def start(self, timeout: float = 10.0) -> Broker:
        """Start mosquitto and wait until its port accepts connections (same port every time)."""
        if self.running:
            return self
        t0 = time.monotonic()
        logf = open(self.log_path, "ab")  # noqa: SIM115 (the child owns it; closed below)
        try:
            self.proc = subprocess.Popen(
                [self.exe, "-c", str(self.conf_path)],
                stdin=subprocess.DEVNULL,
                stdout=logf,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        finally:
            logf.close()
        deadline = t0 + timeout
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(
                    f"mosquitto exited with status {self.proc.returncode} on port {self.port}:\n{self.log_text()}"
                )
            try:
                with socket.create_connection((self.host, self.port), timeout=0.2):
                    break
            except OSError:
                if time.monotonic() > deadline:
                    self.stop()
                    raise RuntimeError(
                        f"mosquitto did not accept on port {self.port}:\n{self.log_text()}"
                    ) from None
                time.sleep(0.005)
        self.start_seconds = time.monotonic() - t0
        return self

    def stop(self, timeout: float = 5.0) -> None:
        """Stop the broker (SIGTERM: it saves persistence and closes every connection)."""
        proc, self.proc = self.proc, None
        if proc is None or proc.poll() is not None:
            return
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()

    def kill(self) -> None:
        """Crash the broker (SIGKILL: nothing saved)."""
        proc, self.proc = self.proc, None
        if proc is not None and proc.poll() is None:
            proc.kill()
            proc.wait()

    def restart(self) -> Broker:
        self.stop()
        return self.start()

    def log_text(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def mqtt_config(self, **overrides: Any):  # type: ignore[no-untyped-def]
        """An `MqttConfig` pointing at this broker, with a fast reconnect for tests."""
        from monitor.config import MqttConfig

        values: dict[str, Any] = {
            "host": self.host,
            "port": self.port,
            "reconnect_max_seconds": 0.5,
            "keepalive": 10,
        }
        if self.tls:
            values.update(tls=True, ca_file=Path(self.tls["cafile"]))
        values.update(overrides)
        return MqttConfig(**values)

    def close(self) -> None:
        self.stop()
        if self._own_dir:
            shutil.rmtree(self.workdir, ignore_errors=True)

    def __enter__(self) -> Broker:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"Broker({self.url}, {'running' if self.running else 'stopped'})"


def make_tls_files(directory: str | Path, host: str = "127.0.0.1") -> dict[str, Path]:
    """A throw-away CA and a server certificate for `host` (openssl CLI); returns the paths."""
    d = Path(directory)
    d.mkdir(parents=True, exist_ok=True)
    ca_key, ca, key, csr, crt, ext = (
        d / n for n in ("ca.key", "ca.pem", "server.key", "server.csr", "server.pem", "san.ext")
    )
    openssl = shutil.which("openssl")
    if openssl is None:
        pytest.skip("openssl is not installed")

    def run(*args: str) -> None:
        subprocess.run([openssl, *args], check=True, capture_output=True)

    run("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", "/CN=soundmon test CA",
        "-keyout", str(ca_key), "-out", str(ca))  # fmt: skip
    run(
        "req",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-subj",
        f"/CN={host}",
        "-keyout",
        str(key),
        "-out",
        str(csr),
    )
    ext.write_text(
        f"subjectAltName=IP:{host}\n"
        if host.replace(".", "").isdigit()
        else f"subjectAltName=DNS:{host}\n"
    )
    run("x509", "-req", "-in", str(csr), "-CA", str(ca), "-CAkey", str(ca_key), "-CAcreateserial", "-days", "2",
        "-extfile", str(ext), "-out", str(crt))  # fmt: skip
    for p in (ca_key, key):
        p.chmod(0o600)
    return {"cafile": ca, "certfile": crt, "keyfile": key}


@dataclass
class Message:
    """One received message."""

    topic: str
    payload: bytes
    qos: int
    retain: bool
    time: float = field(default_factory=time.monotonic)

    @property
    def text(self) -> str:
        return self.payload.decode("utf-8", errors="replace")

    def json(self) -> Any:
        return json.loads(self.payload)


class Subscriber:
    """A paho client that subscribes (QoS 1) and records every message per topic.

    The constructor returns once the subscription is acknowledged, so nothing published after
    it is missed. It reconnects (and re-subscribes) by itself when the broker comes back.
    persistent=True: clean_session=False with a fixed client id, so with a `Broker(persistence=True)`
    the messages published while this subscriber was away are queued for it by the broker.
    """

    def __init__(
        self,
        broker: Broker | tuple[str, int],
        topics: str | Iterable[str] = "#",
        *,
        client_id: str | None = None,
        persistent: bool = False,
        username: str | None = None,
        password: str | None = None,
        timeout: float = 5.0,
    ) -> None:
        if isinstance(broker, Broker):
            self.host, self.port = broker.host, broker.port
            tls = broker.tls
        else:
            (self.host, self.port), tls = broker, None
        self.topics = [topics] if isinstance(topics, str) else list(topics)
        self._cond = threading.Condition()
        self.messages: list[Message] = []
        self._subscribed = threading.Event()
        cid = client_id or f"test-sub-{os.getpid()}-{id(self):x}"
        self.client = mqtt.Client(
            CallbackAPIVersion.VERSION2, client_id=cid, clean_session=not persistent
        )
        if username:
            self.client.username_pw_set(username, password)
        if tls:
            self.client.tls_set(ca_certs=str(tls["cafile"]))
        self.client.reconnect_delay_set(0.05, 0.2)  # type: ignore[arg-type]
        self.client.on_connect = self._on_connect
        self.client.on_subscribe = self._on_subscribe
        self.client.on_message = self._on_message
        self.client.connect_async(self.host, self.port, keepalive=10)
        self.client.loop_start()
        if not self._subscribed.wait(timeout):
            self.close()
            raise TimeoutError(f"subscriber could not connect/subscribe to {self.host}:{self.port}")

    def _on_connect(
        self, client: mqtt.Client, userdata: Any, flags: Any, reason: Any, props: Any
    ) -> None:
        if not reason.is_failure:
            client.subscribe([(t, 1) for t in self.topics])

    def _on_subscribe(
        self, client: mqtt.Client, userdata: Any, mid: int, reasons: Any, props: Any
    ) -> None:
        self._subscribed.set()

    def _on_message(self, client: mqtt.Client, userdata: Any, msg: mqtt.MQTTMessage) -> None:
        with self._cond:
            self.messages.append(Message(msg.topic, bytes(msg.payload), msg.qos, bool(msg.retain)))
            self._cond.notify_all()

    # -- queries

    def get(self, topic: str | None = None) -> list[Message]:
        """Messages received so far (on `topic`, or all), in arrival order."""
        with self._cond:
            return [m for m in self.messages if topic is None or m.topic == topic]

    def topics_seen(self) -> set[str]:
        with self._cond:
            return {m.topic for m in self.messages}

    def clear(self) -> None:
        with self._cond:
            self.messages.clear()

    def wait_for(
        self,
        topic: str,
        predicate: Callable[[Message], bool] | None = None,
        timeout: float = 5.0,
    ) -> Message:
        """The first message on `topic` (already received or arriving within `timeout`) that
        satisfies `predicate`; AssertionError listing what did arrive otherwise."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                for m in self.messages:
                    if m.topic == topic and (predicate is None or predicate(m)):
                        return m
                left = deadline - time.monotonic()
                if left <= 0:
                    seen = [(m.topic, m.payload[:80]) for m in self.messages[-20:]]
                    raise AssertionError(
                        f"no matching message on {topic!r} within {timeout}s; last received: {seen}"
                    )
                self._cond.wait(left)

    def wait_count(self, topic: str, n: int, timeout: float = 5.0) -> list[Message]:
        """Wait until at least `n` messages arrived on `topic`; return them all."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                got = [m for m in self.messages if m.topic == topic]
                if len(got) >= n:
                    return got
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError(
                        f"{len(got)} of {n} messages on {topic!r} within {timeout}s"
                    )
                self._cond.wait(left)

    def wait_quiet(self, seconds: float = 0.3) -> None:
        """Return once no message has arrived for `seconds` (e.g. after a burst)."""
        while True:
            with self._cond:
                last = self.messages[-1].time if self.messages else 0.0
            idle = time.monotonic() - last
            if idle >= seconds:
                return
            time.sleep(seconds - idle)

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.client.disconnect()
        self.client.loop_stop()

    def __enter__(self) -> Subscriber:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


@pytest.fixture(name="broker_factory")
def broker_factory_fixture(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Callable[..., Broker]]:
    """Make brokers with options: `broker_factory(users=..., persistence=..., tls=..., extra_conf=[...], start=True)`.

    All are stopped at the end of the test.
    """
    made: list[Broker] = []

    def make(*, start: bool = True, **kwargs: Any) -> Broker:
        try:
            b = Broker(tmp_path_factory.mktemp("mosquitto"), **kwargs)
        except RuntimeError as exc:
            pytest.fail(str(exc), pytrace=False)
        made.append(b)
        if start:
            b.start()
        return b

    yield make
    for b in made:
        b.stop()


@pytest.fixture(name="broker")
def broker_fixture(broker_factory: Callable[..., Broker]) -> Broker:
    """A fresh anonymous mosquitto on a free loopback port (function scope: no retained leftovers)."""
    return broker_factory()


# The fixtures are registered under the names `broker` / `broker_factory` (what tests take as
# arguments). Import the *_fixture names into a test module -- the argument then does not
# shadow the import (no ruff F811) -- or list "tests.broker" in the root conftest's pytest_plugins.
broker = broker_fixture
broker_factory = broker_factory_fixture
