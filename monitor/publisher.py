"""MQTT publishing: detections (via the on-disk spool), per-label states, level, stats, HA discovery.

The daemon calls this from its processing loop; every call returns at once. paho-mqtt runs
its network loop in its own thread (`loop_start`), connects asynchronously and reconnects
with exponential backoff (1 s .. `mqtt.reconnect_max_seconds`), so a broker that is down at
start, goes away, or refuses us never blocks or crashes the daemon.

Topics (the MQTT contract in DESIGN.md): `<base>/status` online/offline (retained, QoS 1,
offline is also the last will), `<base>/detection` (QoS 1), `<base>/state/<label>` ON/OFF
(retained, QoS 1), `<base>/level` and `<base>/scores` (QoS 0), `<base>/stats` (retained, QoS 0),
the values in force `<base>/config/<label>/threshold|enabled` (retained, QoS 1) and the Home
Assistant discovery configs (retained, QoS 1; see monitor/discovery.py).

Control (`mqtt.control`, the default): at every connect the publisher subscribes (QoS 1) to
`<base>/set/+/threshold` and `<base>/set/+/enabled` and puts what arrives, as (topic, payload),
on a bounded queue; paho's thread does nothing else with it. The daemon drains the queue in its
own loop (`take_commands`), parses and applies the commands (monitor.control) and hands the
values in force back (`set_config`), which are published retained and re-sent at every connect.
A full queue drops the newest commands and counts them (`commands_dropped`, one WARNING line).
A retained command replayed by the broker at subscribe time is not applied (commands act when
they are sent; a stale retained one would undo later changes at every reconnect).

Delivery of detections to the broker is at-least-once and survives outages and restarts:
- `publish_detection` writes the message to the spool (SQLite, fsynced; in memory while the disk
  cannot be written, see monitor/spool.py) and wakes the sender thread. Nothing else sends
  detections: the spool is the single source of truth and its order is the order of sending.
- The sender thread ("mqtt-sender") hands spooled rows to paho in spool order while connected,
  at most `window` (20) unacknowledged at a time and at most `flush_rate` per second after a
  first burst of `window`; a PUBACK frees a slot and deletes the row. A backlog after an outage
  thus reaches the broker paced, never as one burst: a broker acknowledges QoS 1 messages as
  soon as it has them and then drops what does not fit in a slow subscriber's queue
  (mosquitto `max_queued_messages`), which no PUBACK can tell us.
- On every (re)connect the publisher drops whatever paho still holds from the previous
  connection (`drop_out_messages`) and starts again from the oldest spooled row, so nothing is
  sent twice within one connection, nothing is forgotten, and paho's memory stays small.
- A message id (`mid`) -> spool row map ties PUBACKs to rows. A PUBACK can beat the recording
  of its mid (paho's thread vs ours); such "early" acks are kept while a publish is in
  progress and matched right after, so no ack is missed.
What "nothing lost" covers: every detection reaches the broker (QoS 1, PUBACK) unless the spool
overflows (counted in `spool_dropped`) or the process ends while it exists only in memory
(counted in the last stats message as `undelivered_lost`). A subscriber gets every one only
with a persistent session (clean_session=False, a fixed client id, QoS 1) and a broker queue
(`max_queued_messages`) large enough for what arrives while it is away or slow.

Locks (never held while waiting on each other in the reverse order): `_send_lock` makes "check
the connection, hand a row to paho, record its mid" atomic against a reconnect; `_pub_lock`
orders the retained publishes (status/discovery/states/stats) between the daemon thread and
paho's thread; `_lock` guards the small shared state and is never held while calling paho;
the spool has its own lock. paho calls `on_publish` holding its internal message mutex,
which is why `_lock` must never be held around `client.publish`.

Operators get one log line per state change (connecting, connected, lost, unreachable with
the reason, not authorised, spool full, no CONNACK, another client with our client id), never
one per message. The password is never logged. No paho callback can leave the publisher stuck:
each one resets its flags in `finally` and an error is logged once per distinct cause.
"""

from __future__ import annotations

import collections
import contextlib
import hashlib
import json
import logging
import math
import queue
import socket
import threading
import time
import uuid
from collections.abc import Callable, Iterable
from importlib import metadata
from pathlib import Path
from typing import TYPE_CHECKING, Any

from monitor import discovery
from monitor.control import MAX_PAYLOAD_BYTES
from monitor.errors import ConfigError

# paho-mqtt, ssl and the spool (sqlite3) are imported where a publisher with MQTT on uses them,
# never at module level: a daemon with `mqtt.enabled: false` runs this class too and loads none
# of them (about 4 MB of RSS on a Pi that only logs its detections).
if TYPE_CHECKING:
    import ssl

    import paho.mqtt.client as mqtt

    from monitor.config import MqttConfig, StorageConfig
    from monitor.spool import Spool, SpoolRow

__all__ = ["Publisher", "default_client_id", "machine_tag", "sw_version", "threshold_text"]

# CONNACK reason codes (paho maps the MQTT 3.1.1 return codes 4 and 5 to these).
_BAD_CREDENTIALS = 134  # "Bad user name or password"
_NOT_AUTHORIZED = 135  # "Not authorized"

# A broker that accepts TCP but has sent no CONNACK after this long is worth a warning.
NO_CONNACK_SECONDS = 5.0
SENDER_IDLE_WAIT_S = 1.0
"""How long the idle sender thread sleeps before it looks again (new rows, PUBACKs, connects and
disconnects wake it at once; the look is for the warnings paho gives no callback for and the
spool's disk retries). It was 0.25 s: 4 wakes per second, about 1 ms of CPU per audio second on
the real input path (cold caches at every wake; `python -m tools.realtime_cpu`)."""
# Duplicate client id: this many losses, each within QUICK_LOSS_SECONDS of its connect, within
# FLAP_WINDOW_SECONDS (two clients with one id throw each other off every 1-2 s).
FLAP_LOSSES = 3
QUICK_LOSS_SECONDS = 10.0
FLAP_WINDOW_SECONDS = 30.0
# A connection that stays up this long ends a flapping episode (its warning may come again).
STABLE_SECONDS = 60.0
# Commands received and not yet taken by the daemon (a flood beyond this is dropped and counted).
COMMAND_QUEUE = 256
# A command topic longer than this cannot be valid (base + label + key): kept only this long.
MAX_COMMAND_TOPIC = 4096

_MACHINE_ID_FILES = (Path("/etc/machine-id"), Path("/var/lib/dbus/machine-id"))


def sw_version() -> str:
    """The installed soundmon version (for the HA device block)."""
    try:
        return metadata.version("soundmon")
    except metadata.PackageNotFoundError:
        return "unknown"


def machine_tag(files: Iterable[Path] = _MACHINE_ID_FILES) -> str:
    """8 hex digits that differ between machines and stay the same across restarts.

    A hash of the systemd machine id (/etc/machine-id, then /var/lib/dbus/machine-id), else of
    the MAC address (uuid.getnode()). Hashed: the machine id itself must not leave the host.
    """
    for path in files:
        try:
            text = path.read_text().strip()
        except OSError:
            continue
        if text:
            return hashlib.sha256(f"soundmon:{text}".encode()).hexdigest()[:8]
    return hashlib.sha256(f"soundmon:{uuid.getnode():012x}".encode()).hexdigest()[:8]


def default_client_id(node_id: str) -> str:
    """`soundmon-<node_id>-<machine tag>`: readable, and unique per machine.

    Two Pis left on the default host name (`raspberrypi`) share a node id; with the same client
    id the broker would throw each off whenever the other connects.
    """
    return f"soundmon-{node_id}-{machine_tag()}"


def _plain(value: Any) -> Any:
    """JSON-safe copy: numpy scalars/arrays -> Python, NaN/inf -> None, other objects -> str."""
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if value is None or isinstance(value, (str, int, bool)):
        return value
    item = getattr(value, "tolist", None) or getattr(value, "item", None)  # numpy
    if callable(item):
        return _plain(item())
    iso = getattr(value, "isoformat", None)  # datetime
    if callable(iso):
        return iso()
    return str(value)


def threshold_text(value: float) -> str:
    """A threshold as sent on `<base>/config/<label>/threshold`: `0.35`, `0.5`, `1`, `0`."""
    return f"{round(float(value), 6) + 0.0:g}"  # (+ 0.0: -0.0 is sent as 0)


def _dumps(payload: Any) -> str:
    return json.dumps(_plain(payload), ensure_ascii=False, separators=(",", ":"), allow_nan=False)


class Publisher:
    """Publishes soundmon's MQTT messages; see the module docstring for the guarantees.

    One object owns the connection, the spool and the retained state, so the daemon's loop only
    hands it messages and never waits on the network. Parameters: `cfg`, the `mqtt` section
    (broker, TLS, topics, discovery); `storage`, for the spool (`Spool.from_config`);
    `labels`, the watched labels (states, entities, echoes); `model_name`, named in the HA device;
    `logger`, for its one-line state changes (default "soundmon.mqtt"). ConfigError (one line)
    when the client cannot be set up from `cfg` (the password, a TLS file); the spool is then not
    opened.
    With `mqtt.enabled: false` every method is a no-op (state "disabled", no spool file).
    `enabled` lists the labels whose HA entities should exist (None = all); disabled ones get
    an empty retained discovery payload so HA removes them. `window` is the most detections
    unacknowledged at once, `flush_rate` the most sent per second after a first `window`
    (None or 0: no rate limit, only the window). `control` (default `cfg.control`) subscribes to
    the `<base>/set/...` commands; `display_names` (label -> name) name the HA entities; `scores`
    says whether `<base>/scores` is published (HA's Top sensors are announced only then).
    """

    def __init__(
        self,
        cfg: MqttConfig,
        storage: StorageConfig,
        labels: list[str],
        model_name: str,
        logger: logging.Logger | None = None,
        *,
        enabled: Iterable[str] | None = None,
        window: int = 20,
        flush_rate: float | None = 100.0,
        control: bool | None = None,
        display_names: dict[str, str] | None = None,
        scores: bool = True,
    ) -> None:
        self.cfg = cfg
        self.log = logger or logging.getLogger("soundmon.mqtt")
        self.base = cfg.base
        self.client_id = cfg.client_id or default_client_id(cfg.node_id)
        self.model_name = model_name
        self.sw_version = sw_version()
        self.window = max(1, int(window))
        self.flush_rate = float(flush_rate) if flush_rate else None
        self._labels = list(labels)
        self._enabled: set[str] | None = None if enabled is None else set(enabled)
        self._removed: set[str] = set()
        self.control = bool(cfg.control if control is None else control)
        self.display_names = dict(display_names) if display_names else None
        self.scores = bool(scores)
        # Commands from paho's thread to the daemon's: (topic, payload, retained), bounded.
        self._commands: queue.Queue[tuple[str, bytes, bool]] = queue.Queue(maxsize=COMMAND_QUEUE)
        self._commands_dropped = 0
        # The values in force per label, as sent on <base>/config/<label>/...: label -> (threshold
        # text, ON/OFF); labels removed since the last connect get an empty retained payload.
        self._config: dict[str, tuple[str, str]] = {}
        self._config_removed: set[str] = set()
        self._retract_topics: list[str] = []  # a previous identity's retained topics, emptied at connect

        self._lock = threading.Lock()
        self._cond = threading.Condition(self._lock)  # any change the sender or stop() waits for
        self._pub_lock = threading.RLock()
        self._send_lock = threading.Lock()
        self._connected = False
        self._ready = False  # on_connect has sent status/discovery/states: detections may follow
        self._epoch = 0  # connection count: a row planned for one is never sent on the next
        self._state = "stopped" if cfg.enabled else "disabled"
        self._started = False
        self._stopping = False
        self._sender_stop = False
        self._kick = False  # something changed: the sender looks again before sleeping
        self._cursor = 0  # the last spool row id handed to paho on this connection
        self._inflight: dict[int, int] = {}  # paho mid -> spool row id (this connection)
        self._early: set[int] = set()  # PUBACKs that arrived before their mid was recorded
        self._publishing = 0  # detection publishes between client.publish() and recording
        self._tokens = float(self.window)  # rate limit: token bucket, `window` deep
        self._tokens_at = time.monotonic()
        # Every watched label has a retained state from the first connection on (never
        # `unknown` in HA), and a state left ON by an unclean exit is reset at connect: a
        # disabled one's too (it detects nothing, so OFF; disabled after that exit, it kept ON).
        self._states: dict[str, bool] = {x: False for x in self._labels}
        # labels no longer watched: their retained state is cleared (an empty retained payload)
        self._states_removed: set[str] = set()
        self._stats: str | None = None
        self._stats_data: dict[str, Any] | None = None
        self._published = 0
        self._undelivered_lost = 0
        self._spool_full_logged = False
        self._password_error_logged = False
        self._errors_logged: set[str] = set()  # one ERROR line per distinct cause
        # connection diagnostics (no CONNACK, closed before CONNACK, duplicate client id)
        self._attempt_at: float | None = None  # monotonic start of the connect attempt
        self._closed_early = False  # the broker closed an attempt before any CONNACK
        self._no_answer = False  # paho gave up on an attempt that got no CONNACK (keepalive)
        self._connack_warned = False  # once per outage
        self._connected_at = 0.0
        self._quick_losses: collections.deque[float] = collections.deque()
        self._flapping = False  # the duplicate-client-id warning was given (quiet until stable)

        self.spool: Spool | None = None
        self._client: mqtt.Client | None = None
        self._ssl_ctx: ssl.SSLContext | None = None
        self._sender: threading.Thread | None = None
        if cfg.enabled:
            from monitor.spool import Spool

            self._client = self._make_client()  # first: a ConfigError leaves no spool open
            self.spool = Spool.from_config(storage, self.log)

    # ------------------------------------------------------------------ setup

    def _make_client(self) -> mqtt.Client:
        import paho.mqtt.client as mqtt
        from paho.mqtt.enums import CallbackAPIVersion

        cfg = self.cfg
        client = mqtt.Client(
            CallbackAPIVersion.VERSION2,
            client_id=self.client_id,
            clean_session=True,
            protocol=mqtt.MQTTv311,
        )
        client.suppress_exceptions = True  # an exception in a callback must not kill paho's thread
        client.max_inflight_messages_set(self.window)
        client.will_set(f"{self.base}/status", "offline", qos=1, retain=True)
        password = cfg.password()  # ConfigError (one clear line) if its file/env var is missing
        if cfg.username:
            client.username_pw_set(cfg.username, password)
        elif password is not None:
            raise ConfigError("mqtt.username: a password is configured but no username")
        if cfg.tls:
            self._ssl_ctx = self._tls_context()
            client.tls_set_context(self._ssl_ctx)
            # paho: insecure = no host name check (check_hostname), the chain is still verified
            client.tls_insecure_set(bool(cfg.tls_insecure))
        client.reconnect_delay_set(min(1.0, cfg.reconnect_max_seconds), cfg.reconnect_max_seconds)  # type: ignore[arg-type]
        client.on_connect = self._guard(self._on_connect)
        client.on_connect_fail = self._guard(self._on_connect_fail)
        client.on_disconnect = self._guard(self._on_disconnect)
        client.on_publish = self._guard(self._on_publish)
        client.on_pre_connect = self._guard(self._on_pre_connect)
        if cfg.discovery:
            client.message_callback_add(
                f"{cfg.discovery_prefix}/status", self._guard(self._on_ha_status)
            )
        if self.control:
            for topic in self._command_filters():
                client.message_callback_add(topic, self._guard(self._on_command))
        return client

    def _command_filters(self) -> list[str]:
        return [f"{self.base}/set/+/threshold", f"{self.base}/set/+/enabled"]

    def _tls_context(self) -> ssl.SSLContext:
        """The TLS context paho's `tls_set` would build (PROTOCOL_TLS_CLIENT, CERT_REQUIRED, the CA
        or the system's), built here so that `_probe` checks with the very same object."""
        import ssl

        cfg = self.cfg
        try:
            ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
            if cfg.cert_file:
                ctx.load_cert_chain(str(cfg.cert_file), str(cfg.key_file) if cfg.key_file else None)
            ctx.verify_mode = ssl.CERT_REQUIRED
            if cfg.ca_file:
                ctx.load_verify_locations(str(cfg.ca_file))
            else:
                ctx.load_default_certs()
        except (OSError, ValueError) as exc:
            raise ConfigError(
                f"mqtt.ca_file/cert_file/key_file: cannot load TLS files ({exc})"
            ) from None
        return ctx

    def _guard(self, fn: Callable[..., None]) -> Callable[..., None]:
        """Wrap a paho callback: log an unexpected exception (once per cause) instead of losing it."""

        def wrapper(*args: Any) -> None:
            try:
                fn(*args)
            except Exception as exc:
                key = f"{fn.__name__}:{type(exc).__name__}:{exc}"
                if self._first(key):
                    self.log.exception("MQTT: internal error in %s", fn.__name__)
                else:
                    self.log.debug("MQTT: internal error in %s again: %s", fn.__name__, exc)

        wrapper.__name__ = fn.__name__
        return wrapper

    def _first(self, key: str) -> bool:
        """True the first time `key` is seen (one log line per distinct cause)."""
        with self._lock:
            if key in self._errors_logged:
                return False
            self._errors_logged.add(key)
            return True

    @property
    def _where(self) -> str:
        return f"{self.cfg.host}:{self.cfg.port}"

    def _wake(self) -> None:
        """Tell the sender thread (and stop()) that something changed."""
        with self._cond:
            self._kick = True
            self._cond.notify_all()

    # ------------------------------------------------------------------ lifecycle

    def start(self) -> None:
        """Begin connecting in the background; returns at once, even if the broker is down."""
        if self._client is None or self._started:
            return
        self._started = True
        self._state = "connecting"
        depth = self.spool_depth
        self.log.info(
            "MQTT: connecting to %s as %s%s%s",
            self._where,
            self.client_id,
            " (TLS)" if self.cfg.tls else "",
            f"; {depth} spooled detection(s) to send" if depth else "",
        )
        self._sender = threading.Thread(target=self._sender_main, name="mqtt-sender", daemon=True)
        self._sender.start()
        self._client.connect_async(self.cfg.host, self.cfg.port, keepalive=self.cfg.keepalive)
        self._client.loop_start()

    def _drained(self) -> bool:
        """stop() may go on: nothing more can be delivered now (or everything was)."""
        if self._state == "connecting":
            return False  # the first attempt is still running
        if not self._connected:
            return True
        return self._ready and not self._inflight and self.spool_depth == 0

    def stop(self, timeout: float = 3.0) -> None:
        """Deliver what it can within `timeout` s, publish retained `offline`, disconnect.

        Detections on disk that are not acknowledged by then stay in the spool for the next
        start (one INFO line with their number). Those that exist only in memory (the spool
        could not be written) are lost: one ERROR line with their number, and the retained
        stats message is re-published with `undelivered_lost` before `offline`.
        """
        if self._stopping:
            return
        deadline = time.monotonic() + max(0.0, timeout)
        client = self._client
        if client is not None and self._started:
            # A short run (a file at fast pace) can end before the first connection attempt has
            # finished, or with detections still being sent: wait for that (before _stopping is
            # set, which on_connect honours), so everything is flushed and "offline" is last.
            with self._cond:
                while not self._drained() and time.monotonic() < deadline:
                    self._cond.wait(min(0.05, max(0.0, deadline - time.monotonic())))
        self._stopping = True
        sender = self._sender
        if sender is not None:
            with self._cond:
                self._sender_stop = True
                self._cond.notify_all()
            sender.join(max(0.2, deadline - time.monotonic()))
        if client is not None and self._started:
            # Detections already handed to paho may still be acknowledged: let them settle
            # before counting what is lost, so the stats message and the log give one number.
            settle = max(deadline, time.monotonic() + 0.5)
            with self._cond:
                while self._connected and self._inflight and time.monotonic() < settle:
                    self._cond.wait(min(0.05, max(0.0, settle - time.monotonic())))
        lost = 0
        if self.spool is not None:
            self.spool.retry_disk(force=True)  # memory rows go to disk if it works now
            lost = self.spool.memory_depth
        self._undelivered_lost = lost
        if client is not None and self._started:
            info = None
            with self._pub_lock:
                if self._connected:
                    if lost and self._stats_data is not None:
                        data = {**self._stats_data, "undelivered_lost": lost}
                        data["spool_depth"] = self.spool_depth - lost
                        self._stats = _dumps(data)
                        self._publish(f"{self.base}/stats", self._stats, qos=0, retain=True)
                    info = self._publish(f"{self.base}/status", "offline", qos=1, retain=True)
            if info is not None:
                with contextlib.suppress(ValueError, RuntimeError):  # not queued / connection gone
                    info.wait_for_publish(max(0.0, deadline - time.monotonic()))
            client.disconnect()
            # loop_stop() joins paho's thread without a timeout; a connect attempt in progress
            # can take up to 5 s, so join from a helper and give up at the deadline (daemon thread).
            stopper = threading.Thread(target=client.loop_stop, name="mqtt-stop", daemon=True)
            stopper.start()
            stopper.join(max(0.2, deadline - time.monotonic()))
        with self._lock:
            self._connected = False
            self._ready = False
            self._state = "stopped" if self.cfg.enabled else "disabled"
        if self.spool is not None:
            left = self.spool.depth
            self.spool.close()
            lost = self.spool.memory_depth  # close() tried the disk once more
            self._undelivered_lost = lost
            if lost:
                self.log.error(
                    "MQTT: stopped; %d undelivered detection(s) are lost: they were kept only in "
                    "memory because the spool %s could not be written",
                    lost,
                    self.spool.path,
                )
            if left - lost > 0:
                self.log.info(
                    "MQTT: stopped; %d detection(s) stay spooled for the next start", left - lost
                )

    def __enter__(self) -> Publisher:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # ------------------------------------------------------------------ paho callbacks

    def _on_pre_connect(self, client: mqtt.Client, userdata: Any) -> None:
        with self._lock:
            self._attempt_at = time.monotonic()
        # After "not authorised", re-read the password before each attempt: fixing the file
        # (or the environment of a restarted service) is then enough, no restart needed.
        if self._state != "auth_failed" or not self.cfg.username:
            return
        try:
            client.username_pw_set(self.cfg.username, self.cfg.password())
            self._password_error_logged = False
        except ConfigError as exc:
            if not self._password_error_logged:
                self._password_error_logged = True
                self.log.error("MQTT: %s", exc)

    def _on_connect(
        self, client: mqtt.Client, userdata: Any, flags: Any, reason: Any, properties: Any
    ) -> None:
        with self._lock:
            self._attempt_at = None
            self._closed_early = self._no_answer = False
        if reason.is_failure:
            self._refused(reason)
            return
        if self._stopping:
            return  # stop() raced with this connection: do not announce "online"
        # Whatever paho still holds from the last connection is re-sent below (detections from
        # the spool, in order; states, stats and discovery from memory); letting paho resend
        # it too would duplicate and reorder it. Dropped under _send_lock before `connected`
        # is set, so no detection handed to paho for this connection can be dropped.
        with self._send_lock:
            client.drop_out_messages()
            with self._lock:
                self._connected = True
                self._ready = False
                self._epoch += 1
                self._cursor = 0
                self._state = "connected"
                self._inflight.clear()
                self._early.clear()
                self._connack_warned = False
                self._connected_at = time.monotonic()
        try:
            depth = self.spool_depth
            log = self.log.debug if self._flapping else self.log.info
            log(
                "MQTT: connected to %s as %s%s",
                self._where,
                self.client_id,
                f"; sending {depth} spooled detection(s)" if depth else "",
            )
            # "online" last: HA shows an entity's retained state as soon as it is available,
            # so a state left ON by an unclean exit must be reset before (no stale ON flash)
            with self._pub_lock:
                self._send_retractions()
                if self.cfg.discovery:
                    self._subscribe(f"{self.cfg.discovery_prefix}/status")
                    self._send_discovery(client)
                if self.control:
                    for topic in self._command_filters():
                        self._subscribe(topic, "commands are not received")
                self._send_states(client)
                self._send_config(list(self._config) + sorted(self._config_removed))
                if self._stats is not None:
                    self._publish(f"{self.base}/stats", self._stats, qos=0, retain=True)
                self._publish(f"{self.base}/status", "online", qos=1, retain=True)
        finally:
            # whatever failed above, the detections must flow on this connection
            with self._cond:
                self._ready = True
                self._kick = True
                self._cond.notify_all()

    def _refused(self, reason: Any) -> None:
        if self._stopping:
            return
        auth = reason.value in (_BAD_CREDENTIALS, _NOT_AUTHORIZED)
        new = "auth_failed" if auth else "refused"
        with self._lock:
            self._connected = False
            prev, self._state = self._state, new
        if prev == new:
            return
        if auth:
            self.log.error(
                "MQTT: broker %s: not authorised: check mqtt.username / password "
                "(user %r; retrying every %gs at most, detections stay spooled)",
                self._where,
                self.cfg.username,
                self.cfg.reconnect_max_seconds,
            )
        else:
            self.log.error(
                "MQTT: broker %s refused the connection (%s); retrying, detections stay spooled",
                self._where,
                reason,
            )

    def _on_connect_fail(self, client: mqtt.Client, userdata: Any) -> None:
        with self._lock:
            self._attempt_at = None
        if self._stopping:
            return
        with self._lock:
            prev, self._state = self._state, "unreachable"
        if prev in ("unreachable", "disconnected"):
            return  # already said so (one line per outage, not one per retry)
        self.log.warning(
            "MQTT: cannot connect to %s (%s); retrying every %gs at most, detections are spooled",
            self._where,
            self._probe(),
            self.cfg.reconnect_max_seconds,
        )

    def _probe(self) -> str:
        """Why the broker cannot be reached (paho does not pass the error to on_connect_fail).

        With TLS it uses paho's own SSL context (the same object), so it fails exactly when
        paho does: `tls_insecure` skips the host name check, never the certificate chain.
        """
        import ssl

        try:
            with socket.create_connection((self.cfg.host, self.cfg.port), timeout=3.0) as sock:
                if self._ssl_ctx is not None:
                    sock.settimeout(3.0)
                    with self._ssl_ctx.wrap_socket(sock, server_hostname=self.cfg.host):
                        pass
        except ssl.SSLError as exc:
            return str(exc)
        except (OSError, ValueError) as exc:  # ssl.CertificateError is a ValueError
            return str(getattr(exc, "strerror", None) or exc)
        return "reachable now"

    def _speaks_tls(self) -> bool:
        """Does the broker's port complete a TLS handshake (diagnosis only, nothing verified)?"""
        import ssl

        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
        try:
            with socket.create_connection((self.cfg.host, self.cfg.port), timeout=3.0) as sock:
                sock.settimeout(3.0)
                with ctx.wrap_socket(sock, server_hostname=self.cfg.host):
                    return True
        except (OSError, ValueError):
            return False

    def _on_disconnect(
        self, client: mqtt.Client, userdata: Any, flags: Any, reason: Any, properties: Any
    ) -> None:
        now = time.monotonic()
        with self._cond:
            was, self._connected = self._connected, False
            self._ready = False
            prev = self._state
            if was and not self._stopping:
                self._state = "disconnected"
            if not was and not self._stopping and self._attempt_at is not None:
                # ended before any CONNACK (the sender thread says why): paho's own keepalive
                # timeout means the broker said nothing; anything else, that it hung up
                if "keep alive" in str(reason).lower():
                    self._no_answer = True
                else:
                    self._closed_early = True
            self._attempt_at = None
            self._kick = True
            self._cond.notify_all()
        if not was or self._stopping or prev != "connected":
            return
        why = str(reason)
        if why == "Unspecified error":  # paho's name for a closed socket (MQTT_ERR_CONN_LOST)
            why = "connection closed"
        from_server = bool(getattr(flags, "is_disconnect_packet_from_server", False))
        if from_server:
            why = f"broker sent DISCONNECT: {why}"
        # The broker ends a connection at once when another client connects with the same id
        # (MQTT 3.1.1: it just closes the socket). Our own keepalive timeout is not that.
        quick = now - self._connected_at < QUICK_LOSS_SECONDS and "keep alive" not in why.lower()
        if quick:
            self._quick_losses.append(now)
        while self._quick_losses and now - self._quick_losses[0] > FLAP_WINDOW_SECONDS:
            self._quick_losses.popleft()
        if len(self._quick_losses) >= FLAP_LOSSES and not self._flapping:
            self._flapping = True
            self.log.warning(
                "MQTT: the connection to %s was closed by the broker %d times within %gs, each "
                "soon after connecting: another client probably uses the same client id %r (the "
                "broker drops the older connection); set mqtt.client_id or mqtt.node_id to a "
                "value unique to this device",
                self._where,
                len(self._quick_losses),
                FLAP_WINDOW_SECONDS,
                self.client_id,
            )
            return
        (self.log.debug if self._flapping else self.log.warning)(
            "MQTT: connection to %s lost (%s); reconnecting, detections are spooled",
            self._where,
            why,
        )

    def _on_publish(
        self, client: mqtt.Client, userdata: Any, mid: int, reason: Any, properties: Any
    ) -> None:
        with self._lock:
            row_id = self._inflight.pop(mid, None)
            if row_id is None and self._publishing:
                self._early.add(mid)
        if row_id is not None:
            self._delivered(row_id)

    def _on_ha_status(self, client: mqtt.Client, userdata: Any, msg: mqtt.MQTTMessage) -> None:
        # HA's birth message: it (re)started and has forgotten non-retained discovery state.
        # A retained "online" is ignored: we just sent everything on connect.
        if msg.retain or msg.payload.strip().lower() != b"online":
            return
        with self._pub_lock:
            if self._connected:
                self._send_discovery(client)
                self._send_states(client)

    # ------------------------------------------------------------------ connection diagnostics

    def _watch_connection(self) -> None:
        """Run by the sender thread: the warnings paho gives no callback for (once per outage)."""
        now = time.monotonic()
        client = self._client
        with self._lock:
            if self._connected:
                if self._flapping and now - self._connected_at > STABLE_SECONDS:
                    self._flapping = False  # stable again: a new episode may be reported
                    self._quick_losses.clear()
                return
            if self._stopping or self._connack_warned:
                return
            early = self._closed_early
            silent = self._no_answer or (
                self._attempt_at is not None
                and now - self._attempt_at >= NO_CONNACK_SECONDS
                and client is not None
                and client.socket() is not None  # TCP is connected, the MQTT answer is missing
            )
            if not (early or silent):
                return
            self._connack_warned = True
            self._closed_early = self._no_answer = False
            self._state = "unreachable"
        if early and not silent:
            what = "accepts TCP but closed the connection without an MQTT CONNACK"
        else:
            what = f"accepts TCP but sent no MQTT CONNACK within {NO_CONNACK_SECONDS:g} s"
        if not self.cfg.tls and self._speaks_tls():
            why = "it is a TLS port: set mqtt.tls: true (and mqtt.ca_file)"
        elif self.cfg.tls:
            why = "not an MQTT broker, or the broker rejects this client (see its log)"
        else:
            why = "not an MQTT broker, or a TLS port reached without mqtt.tls"
        self.log.warning(
            "MQTT: %s %s: %s; retrying, detections are spooled", self._where, what, why
        )

    # ------------------------------------------------------------------ sending

    def _publish(
        self, topic: str, payload: str | bytes, qos: int, retain: bool = False, what: str = ""
    ) -> Any:
        """client.publish that cannot raise: a topic/payload paho rejects is logged once per
        kind of message (`what`, e.g. "the discovery configs") and cause, then skipped."""
        client = self._client
        assert client is not None
        try:
            return client.publish(topic, payload, qos=qos, retain=retain)
        except (ValueError, TypeError) as exc:
            if self._first(f"publish:{what or topic[:200]}:{exc}"):
                self.log.error(
                    "MQTT: cannot publish %s (to %.120s%s: %s); skipped",
                    what or "a message",
                    topic,
                    "..." if len(topic) > 120 else "",
                    exc,
                )
            return None

    def _subscribe(self, topic: str, consequence: str = "Home Assistant restarts go unnoticed") -> None:
        """client.subscribe that cannot raise (an invalid filter is logged once)."""
        client = self._client
        assert client is not None
        try:
            client.subscribe(topic, qos=1)
        except (ValueError, TypeError) as exc:
            if self._first(f"subscribe:{exc}:{topic[:200]}"):
                self.log.error(
                    "MQTT: cannot subscribe to %.200s (%s); %s", topic, exc, consequence
                )

    def _on_command(self, client: mqtt.Client, userdata: Any, msg: mqtt.MQTTMessage) -> None:
        """A message on `<base>/set/+/...`: queued for the daemon, bounded in size and number.

        Runs in paho's thread: nothing here parses or applies the command. A payload longer than
        any valid command is cut to one byte more than that (still refused as too long; the
        queue never holds a large payload), and so is an overlong topic."""
        raw_topic = msg._topic if isinstance(msg._topic, bytes) else str(msg._topic).encode()
        topic = raw_topic[:MAX_COMMAND_TOPIC].decode("utf-8", "replace")
        payload = bytes(msg.payload[: MAX_PAYLOAD_BYTES + 1])
        try:
            self._commands.put_nowait((topic, payload, bool(msg.retain)))
        except queue.Full:
            with self._lock:
                self._commands_dropped += 1
                first = self._commands_dropped == 1
            if first:
                self.log.warning(
                    "MQTT: more than %d commands on %s/set/... are waiting: dropping the newest "
                    "(counted as commands_dropped in the stats; said only once)",
                    COMMAND_QUEUE,
                    self.base,
                )

    def _send_config(self, labels: Iterable[str]) -> None:
        """Retained QoS 1 `<base>/config/<label>/threshold|enabled` for `labels` (call with
        `_pub_lock` held and connected); a removed label's topics get an empty payload."""
        for label in labels:
            level = discovery.label_topic_level(label)
            values = self._config.get(label)
            threshold, on = values if values is not None else ("", "")
            self._publish(f"{self.base}/config/{level}/threshold", threshold, 1, True, "the values in force")
            self._publish(f"{self.base}/config/{level}/enabled", on, 1, True, "the values in force")
        self._config_removed.clear()

    def retract_node(self, node_id: str, base: str, discovery_prefix: str, labels: Iterable[str]) -> None:
        """The node was published under another identity before (another `mqtt.node_id`,
        `base_topic` or `discovery_prefix`, `<state_dir>/announced.json` says): at the next
        connect (now, if connected), empty the retained topics of that identity that this one does
        not reuse: its Home Assistant entities (else HA keeps a second, unavailable device for
        good), label states, value echoes, stats and status."""
        if self._client is None:
            return
        labels = list(labels)
        old = self.cfg.model_copy(update={"node_id": node_id, "base_topic": base, "discovery_prefix": discovery_prefix})
        mine = {t for t, _ in discovery.discovery_messages(self.cfg, labels, None, self.model_name, self.sw_version,
                                                           control=True)}  # fmt: skip
        out = [t for t, _ in discovery.discovery_messages(old, labels, None, self.model_name, self.sw_version,
                                                          control=True) if t not in mine]  # fmt: skip
        if base != self.base:
            for label in labels:
                out.append(discovery.state_topic(base, label))
                out += [discovery.config_topic(base, label, key) for key in ("threshold", "enabled")]
            out += [f"{base}/stats", f"{base}/status"]
        with self._pub_lock:
            self._retract_topics = out
            if self._connected:
                self._send_retractions()

    def _send_retractions(self) -> None:
        """Empty retained payloads on `retract_node`'s topics (call with `_pub_lock` held)."""
        for topic in self._retract_topics:
            self._publish(topic, b"", 1, True, "the previous node's topics")
        if self._retract_topics and self._connected:
            self.log.info("MQTT: removed %d retained topic(s) of this node's previous id or topics",
                          len(self._retract_topics))  # fmt: skip
            self._retract_topics = []

    def _send_discovery(self, client: mqtt.Client) -> None:
        if not self.cfg.discovery:
            return
        for topic, payload in discovery.discovery_messages(
            self.cfg, self._labels, self._enabled, self.model_name, self.sw_version, self._removed,
            display_names=self.display_names, control=self.control, scores=self.scores,
        ):
            payload_text = _dumps(payload) if payload is not None else b""
            self._publish(topic, payload_text, 1, True, "the discovery configs")

    def _send_states(self, client: mqtt.Client) -> None:
        """Every watched label's retained state; the states of labels no longer watched are
        cleared (empty retained payload: the broker forgets them, as the contract has only
        watched labels with states)."""
        for label in sorted(self._states_removed):
            self._publish(discovery.state_topic(self.base, label), "", 1, True, "the label states")
        self._states_removed.clear()
        for label, on in self._states.items():
            topic = discovery.state_topic(self.base, label)
            self._publish(topic, "ON" if on else "OFF", 1, True, "the label states")

    def _next_rows(self) -> tuple[int, list[SpoolRow]]:
        """The rows that may be sent now (spool order, within the window), with the epoch."""
        from monitor.spool import SpoolError

        spool = self.spool
        if spool is None:
            return 0, []
        with self._lock:
            if not (self._connected and self._ready) or self._stopping:
                return 0, []
            room = self.window - len(self._inflight) - self._publishing
            epoch, cursor = self._epoch, self._cursor
        if room <= 0:
            return 0, []
        try:
            return epoch, spool.pending(limit=room, after_id=cursor)
        except SpoolError as exc:
            self._spool_problem(exc)
            return 0, []

    def _take_token(self) -> float:
        """Rate limit: 0 if a row may go now (a token is taken), else seconds to wait."""
        if self.flush_rate is None:
            return 0.0
        now = time.monotonic()
        self._tokens = min(
            float(self.window), self._tokens + (now - self._tokens_at) * self.flush_rate
        )
        self._tokens_at = now
        if self._tokens >= 1.0:
            self._tokens -= 1.0
            return 0.0
        return (1.0 - self._tokens) / self.flush_rate

    def _sender_main(self) -> None:
        """The sender thread: spooled rows to paho (paced), spool disk retries, diagnostics."""
        while True:
            with self._cond:
                if self._sender_stop:
                    return
            try:
                self._watch_connection()
                if self.spool is not None and self.spool.memory_depth and self.spool.persistent:
                    self.spool.retry_disk()
                epoch, rows = self._next_rows()
                for row in rows:
                    wait = self._take_token()
                    while wait > 0:
                        with self._cond:
                            if self._sender_stop or self._epoch != epoch:
                                break
                            self._cond.wait(wait)
                        wait = self._take_token()
                    if wait > 0 or not self._send_row(row, epoch):
                        break
            except Exception:  # never let the thread die: detections would stop for good
                if self._first("sender"):
                    self.log.exception("MQTT: internal error in the sender")
                rows = []
                time.sleep(0.5)
            if rows:
                continue  # maybe more behind them
            with self._cond:
                if not self._kick and not self._sender_stop:
                    self._cond.wait(SENDER_IDLE_WAIT_S)
                self._kick = False

    def _send_row(self, row: SpoolRow, epoch: int) -> bool:
        """Hand one spooled row to paho (QoS 1) on connection `epoch`; False if that is over."""
        from paho.mqtt.client import MQTT_ERR_QUEUE_SIZE

        client = self._client
        assert client is not None
        with self._send_lock:
            with self._lock:
                if not self._connected or self._epoch != epoch or self._stopping:
                    return False
                self._publishing += 1
            info = None
            try:
                info = client.publish(row.topic, row.payload, qos=1)
            except (ValueError, TypeError) as exc:  # an invalid topic or payload: never sendable
                self.log.error(
                    "MQTT: spooled message %d cannot be published (%s); dropping it", row.id, exc
                )
            except BaseException:  # anything else: the row stays for a later try (the sender logs it)
                with self._lock:
                    self._publishing -= 1
                    if not self._publishing:
                        self._early.clear()
                raise
            early = sent = False
            with self._lock:
                self._publishing -= 1
                if info is None:
                    self._cursor = max(self._cursor, row.id)
                elif info.rc == MQTT_ERR_QUEUE_SIZE:
                    pass  # paho's queue is full: try this row again later
                else:
                    sent = True
                    self._cursor = max(self._cursor, row.id)
                    if info.mid in self._early:
                        self._early.discard(info.mid)
                        early = True
                    else:
                        self._inflight[info.mid] = row.id
                if not self._publishing:
                    self._early.clear()
        if info is None:
            self._delivered(row.id, count=False)
        elif early:
            self._delivered(row.id)
        return sent or info is None

    def _delivered(self, row_id: int, count: bool = True) -> None:
        """The broker has the message (PUBACK): forget it, free its slot in the window."""
        from monitor.spool import SpoolError

        if self.spool is not None:
            try:
                self.spool.ack(row_id)
            except SpoolError as exc:
                self._spool_problem(exc)
        with self._cond:
            if count:
                self._published += 1
            self._kick = True
            self._cond.notify_all()

    def _spool_problem(self, exc: Exception) -> None:
        if self._first(f"spool:{exc}"):
            self.log.error("MQTT: spool error (%s)", exc)

    # ------------------------------------------------------------------ public API

    def publish_detection(self, payload: dict[str, Any]) -> None:
        """Spool, then let the sender publish it (QoS 1, `<base>/detection`) in spool order.

        The spool row goes on PUBACK. Returns at once.
        """
        if self._client is None or self.spool is None:
            return
        from monitor.spool import SpoolError

        topic = f"{self.base}/detection"
        text = _dumps(payload)
        spool = self.spool
        dropped_before = spool.dropped
        try:
            spool.put(topic, text)
        except SpoolError as exc:  # only a closed spool (after stop)
            self._spool_problem(exc)
            return
        # One line per episode of drops: it ends once the spool has room again.
        if spool.dropped > dropped_before and not self._spool_full_logged:
            self._spool_full_logged = True
            self.log.warning(
                "MQTT: spool full (%d): dropped the oldest %d detection(s)%s (dropped so far: %d)",
                spool.max_messages,
                spool.dropped - dropped_before,
                "; dropping the oldest until the broker is back" if not self._connected
                else "; the backlog is larger than storage.spool_max_messages",
                spool.dropped,
            )
        elif self._spool_full_logged and spool.depth < spool.max_messages:
            self._spool_full_logged = False
        self._wake()

    def set_state(self, label: str, on: bool) -> None:
        """Retained QoS 1 `ON`/`OFF` on `<base>/state/<label>`; remembered and re-sent on reconnect."""
        if self._client is None:
            return
        with self._pub_lock:
            self._states[label] = bool(on)
            if self._connected:
                topic = discovery.state_topic(self.base, label)
                self._publish(topic, "ON" if on else "OFF", 1, True, "the label states")

    def publish_level(self, payload: dict[str, Any]) -> None:
        """QoS 0 `{"time", "dbfs"}` on `<base>/level`; dropped while disconnected."""
        if self._client is None or not self._connected:
            return
        self._publish(f"{self.base}/level", _dumps(payload), qos=0)

    def publish_scores(self, text: str) -> None:
        """QoS 0 on `<base>/scores`: the newest window's top labels as JSON text
        (`monitor.payloads.ScoresText`); dropped while disconnected."""
        if self._client is None or not self._connected:
            return
        self._publish(f"{self.base}/scores", text, qos=0)

    def take_commands(self, limit: int = COMMAND_QUEUE) -> list[tuple[str, bytes, bool]]:
        """Up to `limit` commands received since the last call, oldest first: (topic, payload
        (at most one byte longer than a valid command), retained). Never blocks."""
        # Called at every turn of the daemon's loop: an empty queue (nearly always) costs one length test of
        # its deque instead of a locked get_nowait that raises Empty. Without the lock a command
        # put at this very moment may be seen empty: it is taken at the next call.
        if not self._commands.queue:
            return []
        out: list[tuple[str, bytes, bool]] = []
        while len(out) < limit:
            try:
                out.append(self._commands.get_nowait())
            except queue.Empty:
                break
        return out

    @property
    def commands_waiting(self) -> int:
        """Commands received and not yet taken by `take_commands`."""
        return self._commands.qsize()

    @property
    def commands_dropped(self) -> int:
        """Commands dropped because the daemon had not taken the earlier ones yet; all time."""
        return self._commands_dropped

    def set_config(self, values: dict[str, tuple[float, bool]]) -> None:
        """The values in force, label -> (threshold, enabled): retained QoS 1 on
        `<base>/config/<label>/threshold` (e.g. `0.35`) and `.../enabled` (`ON`/`OFF`).

        Published now for the labels whose values changed (when connected) and re-sent at every
        connect; labels no longer in `values` get empty retained payloads (the broker forgets them).
        """
        if self._client is None:
            return
        new = {label: (threshold_text(thr), "ON" if on else "OFF") for label, (thr, on) in values.items()}
        with self._pub_lock:
            changed = [label for label, v in new.items() if self._config.get(label) != v]
            removed = set(self._config) - set(new)
            self._config = new
            self._config_removed |= removed
            self._config_removed -= set(new)
            if self._connected:
                self._send_config(changed + sorted(self._config_removed))

    def publish_stats(self, payload: dict[str, Any]) -> None:
        """Retained QoS 0 health JSON on `<base>/stats`; the last one is re-sent on reconnect.

        `spool_depth` and `spool_dropped` are added when the payload does not have them.
        """
        if self._client is None:
            return
        data = dict(payload)
        data.setdefault("spool_depth", self.spool_depth)
        data.setdefault("spool_dropped", self.spool_dropped)
        text = _dumps(data)
        with self._pub_lock:
            self._stats_data = data
            self._stats = text
            if self._connected:
                self._publish(f"{self.base}/stats", text, qos=0, retain=True)

    def forget_labels(self, labels: Iterable[str]) -> None:
        """Labels an earlier run announced that this one does not watch (another model, or a
        shorter `detection.watch`, since the last run; the daemon keeps the list in the state
        directory): at the next connect their entities are removed from Home Assistant and their
        retained states and echoes cleared, as `update_labels` does for a change while running."""
        if self._client is None:
            return
        with self._pub_lock:
            gone = set(labels) - set(self._labels)
            self._removed |= gone
            self._states_removed |= gone
            self._config_removed |= gone
            if self._connected:
                self._send_discovery(self._client)
                self._send_states(self._client)
                self._send_config(sorted(self._config_removed))

    def update_labels(
        self,
        labels: Iterable[str],
        enabled: Iterable[str],
        display_names: dict[str, str] | None = None,
        scores: bool | None = None,
    ) -> None:
        """New label set / enabled set (after SIGHUP, a model change or a command over MQTT):
        re-send discovery. `display_names` are the (new) bundle's names for people, `scores`
        whether `<base>/scores` is published now (None: unchanged).

        Labels that disappeared or were disabled get an empty retained config (HA removes them);
        the retained state of one that disappeared (another model, a shorter watch list) is cleared.
        """
        if self._client is None:
            return
        labels = list(labels)
        with self._pub_lock:
            self.display_names = dict(display_names) if display_names else None
            if scores is not None:
                self.scores = bool(scores)
            gone = set(self._labels) - set(labels)
            self._removed |= gone
            self._removed -= set(labels)
            for label in gone:
                if self._states.pop(label, None) is not None:
                    self._states_removed.add(label)
            self._states_removed -= set(labels)
            self._labels = labels
            self._enabled = set(enabled)
            for label in labels:
                self._states.setdefault(label, False)
            if self._connected:
                self._send_discovery(self._client)
                self._send_states(self._client)

    # ------------------------------------------------------------------ status

    @property
    def connected(self) -> bool:
        """True between a successful CONNACK and the connection's loss."""
        return self._connected

    @property
    def state(self) -> str:
        """disabled | stopped | connecting | connected | disconnected | unreachable | auth_failed | refused."""
        return self._state

    @property
    def spool_depth(self) -> int:
        """Detections waiting for a PUBACK (in the spool, on disk or in memory)."""
        return self.spool.depth if self.spool is not None else 0

    @property
    def spool_dropped(self) -> int:
        """Detections dropped because the spool (disk and memory together) was full; all time."""
        return self.spool.dropped if self.spool is not None else 0

    @property
    def spool_memory(self) -> int:
        """Detections waiting only in memory (the spool could not write them to disk)."""
        return self.spool.memory_depth if self.spool is not None and not self.spool.closed else 0

    @property
    def undelivered_lost(self) -> int:
        """Detections lost at stop(): undelivered and only in memory (0 before stop)."""
        return self._undelivered_lost

    @property
    def published(self) -> int:
        """Detections acknowledged by the broker since this publisher was created."""
        return self._published

    def health(self) -> dict[str, Any]:
        """A snapshot for the stats message / logs."""
        return {
            "mqtt_state": self._state,
            "mqtt_connected": self._connected,
            "published": self._published,
            "spool_depth": self.spool_depth,
            "spool_dropped": self.spool_dropped,
            "spool_memory": self.spool_memory,
            "spool_corrupt_files": self.spool.corrupt_files if self.spool is not None else 0,
            "spool_persistent": self.spool.persistent if self.spool is not None else False,
        }
