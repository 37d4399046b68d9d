"""MQTT publishing: detections (via the on-disk spool), per-label states, level, stats, HA discovery.

The daemon calls this from its processing loop; every call returns at once. paho-mqtt runs
its network loop in its own thread (`loop_start`), connects asynchronously and reconnects
with exponential backoff (1 s .. `mqtt.reconnect_max_seconds`), so a broker that is down at
start, goes away, or refuses us never blocks or crashes the daemon.

Topics (the MQTT contract in DESIGN.md): `<base>/status` online/offline (retained, QoS 1,
offline is also the last will), `<base>/detection` (QoS 1), `<base>/state/<label>` ON/OFF
(retained, QoS 1), `<base>/level` (QoS 0), `<base>/stats` (retained, QoS 0) and the Home
Assistant discovery configs (retained, QoS 1; see monitor/discovery.py).

Delivery of detections is at-least-once and survives outages and restarts:
- `publish_detection` writes the message to the spool (SQLite, fsynced) before anything else;
  it is handed to paho only while connected, and deleted from the spool on its PUBACK.
- On every (re)connect the publisher first drops whatever paho still holds from the previous
  connection (`drop_out_messages`) and re-sends every spooled row in spool order. The spool
  is the single source of truth, so nothing is sent twice within one connection, nothing
  is forgotten, and paho's memory does not grow during a long outage.
- A message id (`mid`) -> spool row map ties PUBACKs to rows. A PUBACK can beat the
  recording of its mid (paho's thread vs ours); such "early" acks are kept while a publish
  is in progress and matched right after, so no ack is missed.

Locks (never held while waiting on each other in the reverse order): `_pub_lock` orders the
retained publishes (status/discovery/states/stats) between the daemon thread and paho's
thread; `_lock` guards the small shared state and is never held while calling paho; the
spool has its own lock. paho calls `on_publish` holding its internal message mutex, which is
why `_lock` must never be held around `client.publish`.

Operators get one log line per state change (connecting, connected, lost, unreachable with
the reason, not authorised, spool full), never one per message. The password is never logged.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import socket
import ssl
import threading
import time
from collections.abc import Iterable
from importlib import metadata
from typing import TYPE_CHECKING, Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from monitor import discovery
from monitor.errors import ConfigError
from monitor.spool import Spool, SpoolError, SpoolRow

if TYPE_CHECKING:
    from monitor.config import MqttConfig, StorageConfig

__all__ = ["Publisher", "sw_version"]

# CONNACK reason codes (paho maps the MQTT 3.1.1 return codes 4 and 5 to these).
_BAD_CREDENTIALS = 134  # "Bad user name or password"
_NOT_AUTHORIZED = 135  # "Not authorized"


def sw_version() -> str:
    """The installed soundmon version (for the HA device block)."""
    try:
        return metadata.version("soundmon")
    except metadata.PackageNotFoundError:
        return "unknown"


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


def _dumps(payload: Any) -> str:
    return json.dumps(_plain(payload), ensure_ascii=False, separators=(",", ":"), allow_nan=False)


class Publisher:
    """Publishes soundmon's MQTT messages; see the module docstring for the guarantees.

    With `mqtt.enabled: false` every method is a no-op (state "disabled", no spool file).
    `enabled` lists the labels whose HA entities should exist (None = all); disabled ones get
    an empty retained discovery payload so HA removes them.
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
    ) -> None:
        self.cfg = cfg
        self.log = logger or logging.getLogger("soundmon.mqtt")
        self.base = cfg.base
        self.client_id = cfg.client_id or f"soundmon-{cfg.node_id}"
        self.model_name = model_name
        self.sw_version = sw_version()
        self._labels = list(labels)
        self._enabled: set[str] | None = None if enabled is None else set(enabled)
        self._removed: set[str] = set()

        self._lock = threading.Lock()
        self._idle = threading.Condition(self._lock)
        self._pub_lock = threading.RLock()
        self._connected = False
        self._state = "stopped" if cfg.enabled else "disabled"
        self._started = False
        self._stopping = False
        self._inflight: dict[int, int] = {}  # paho mid -> spool row id (this connection)
        self._claimed: set[int] = set()  # spool row ids handed to paho in this connection
        self._early: set[int] = set()  # PUBACKs that arrived before their mid was recorded
        self._publishing = 0  # detection publishes between client.publish() and recording
        self._flushing = False  # the connect-time spool sweep is running
        # Every watched label has a retained state from the first connection on (never
        # `unknown` in HA), and a state left ON by an unclean exit is reset at connect.
        self._states: dict[str, bool] = {
            x: False for x in self._labels if self._enabled is None or x in self._enabled
        }
        self._stats: str | None = None
        self._published = 0
        self._spool_full_logged = False
        self._spool_error_logged = False
        self._password_error_logged = False

        self.spool: Spool | None = None
        self._client: mqtt.Client | None = None
        if cfg.enabled:
            self._client = self._make_client()  # first: a ConfigError leaves no spool open
            self.spool = Spool.from_config(storage, self.log)

    # ------------------------------------------------------------------ setup

    def _make_client(self) -> mqtt.Client:
        cfg = self.cfg
        client = mqtt.Client(
            CallbackAPIVersion.VERSION2,
            client_id=self.client_id,
            clean_session=True,
            protocol=mqtt.MQTTv311,
        )
        client.suppress_exceptions = True  # an exception in a callback must not kill paho's thread
        client.will_set(f"{self.base}/status", "offline", qos=1, retain=True)
        password = cfg.password()  # ConfigError (one clear line) if its file/env var is missing
        if cfg.username:
            client.username_pw_set(cfg.username, password)
        elif password is not None:
            raise ConfigError("mqtt.username: a password is configured but no username")
        if cfg.tls:
            try:
                client.tls_set(
                    ca_certs=str(cfg.ca_file) if cfg.ca_file else None,
                    certfile=str(cfg.cert_file) if cfg.cert_file else None,
                    keyfile=str(cfg.key_file) if cfg.key_file else None,
                )
            except (OSError, ValueError) as exc:
                raise ConfigError(
                    f"mqtt.ca_file/cert_file/key_file: cannot load TLS files ({exc})"
                ) from None
            if cfg.tls_insecure:
                client.tls_insecure_set(True)
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
        return client

    def _guard(self, fn):  # type: ignore[no-untyped-def]
        """Wrap a paho callback: log an unexpected exception instead of losing it."""

        def wrapper(*args: Any) -> None:
            try:
                fn(*args)
            except Exception:
                self.log.exception("MQTT: internal error in %s", fn.__name__)

        wrapper.__name__ = fn.__name__
        return wrapper

    @property
    def _where(self) -> str:
        return f"{self.cfg.host}:{self.cfg.port}"

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
        self._client.connect_async(self.cfg.host, self.cfg.port, keepalive=self.cfg.keepalive)
        self._client.loop_start()

    def stop(self, timeout: float = 3.0) -> None:
        """Publish retained `offline`, wait up to `timeout` s for outstanding PUBACKs, disconnect.

        Detections not acknowledged by then stay in the spool for the next start.
        """
        if self._stopping:
            return
        deadline = time.monotonic() + max(0.0, timeout)
        client = self._client
        if client is not None and self._started:
            # A short run (a file at fast pace) can end before the first connection attempt has
            # finished, or while on_connect is still sending online/discovery/states/stats and
            # the spool: wait for that (before _stopping is set, which on_connect honours), so
            # everything is flushed and "offline" is the last status sent.
            while (self.state == "connecting" or self._flushing) and time.monotonic() < deadline:
                time.sleep(0.02)
        self._stopping = True
        if client is not None and self._started:
            info = None
            with self._pub_lock:
                if self._connected:
                    info = client.publish(f"{self.base}/status", "offline", qos=1, retain=True)
            if info is not None:
                with contextlib.suppress(ValueError, RuntimeError):  # not queued / connection gone
                    info.wait_for_publish(max(0.0, deadline - time.monotonic()))
            with self._idle:
                self._idle.wait_for(
                    lambda: not self._inflight or not self._connected,
                    max(0.0, deadline - time.monotonic()),
                )
            client.disconnect()
            # loop_stop() joins paho's thread without a timeout; a connect attempt in progress
            # can take up to 5 s, so join from a helper and give up at the deadline (daemon thread).
            stopper = threading.Thread(target=client.loop_stop, name="mqtt-stop", daemon=True)
            stopper.start()
            stopper.join(max(0.2, deadline - time.monotonic()))
        with self._lock:
            self._connected = False
            self._state = "stopped" if self.cfg.enabled else "disabled"
        if self.spool is not None:
            left = self.spool.depth
            self.spool.close()
            if left:
                self.log.info(
                    "MQTT: stopped; %d detection(s) stay spooled for the next start", left
                )

    def __enter__(self) -> Publisher:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # ------------------------------------------------------------------ paho callbacks

    def _on_pre_connect(self, client: mqtt.Client, userdata: Any) -> None:
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
        if reason.is_failure:
            self._refused(reason)
            return
        if self._stopping:
            return  # stop() raced with this connection: do not announce "online"
        # Whatever paho still holds from the last connection is re-sent below (detections from
        # the spool, in order; states, stats and discovery from memory); letting paho resend
        # it too would duplicate and reorder it. Dropped before `connected` is set, so nothing
        # published from the daemon thread for this connection can be dropped.
        client.drop_out_messages()
        with self._lock:
            self._connected = True
            self._state = "connected"
            self._inflight.clear()
            self._claimed.clear()
            self._early.clear()
            self._flushing = True
        depth = self.spool_depth
        self._spool_full_logged = self.spool is not None and depth >= self.spool.max_messages
        self.log.info(
            "MQTT: connected to %s as %s%s",
            self._where,
            self.client_id,
            f"; sending {depth} spooled detection(s)" if depth else "",
        )
        with self._pub_lock:
            client.publish(f"{self.base}/status", "online", qos=1, retain=True)
            if self.cfg.discovery:
                client.subscribe(f"{self.cfg.discovery_prefix}/status", qos=1)
                self._send_discovery(client)
            self._send_states(client)
            if self._stats is not None:
                client.publish(f"{self.base}/stats", self._stats, qos=0, retain=True)
        self._flush_spool()

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
        """Why the broker cannot be reached (paho does not pass the error to on_connect_fail)."""
        try:
            with socket.create_connection((self.cfg.host, self.cfg.port), timeout=3.0) as sock:
                if self.cfg.tls:
                    ctx = ssl.create_default_context(
                        cafile=str(self.cfg.ca_file) if self.cfg.ca_file else None
                    )
                    if self.cfg.cert_file:
                        ctx.load_cert_chain(
                            str(self.cfg.cert_file),
                            str(self.cfg.key_file) if self.cfg.key_file else None,
                        )
                    if self.cfg.tls_insecure:
                        ctx.check_hostname = False
                        ctx.verify_mode = ssl.CERT_NONE
                    with ctx.wrap_socket(sock, server_hostname=self.cfg.host):
                        pass
        except ssl.SSLError as exc:
            return str(exc)
        except (OSError, ValueError) as exc:
            return str(getattr(exc, "strerror", None) or exc)
        return "reachable now"

    def _on_disconnect(
        self, client: mqtt.Client, userdata: Any, flags: Any, reason: Any, properties: Any
    ) -> None:
        with self._lock:
            was, self._connected = self._connected, False
            prev = self._state
            if was and not self._stopping:
                self._state = "disconnected"
            self._idle.notify_all()
        if was and not self._stopping and prev == "connected":
            why = str(reason)
            if why == "Unspecified error":  # paho's name for a closed socket (MQTT_ERR_CONN_LOST)
                why = "connection closed"
            if getattr(flags, "is_disconnect_packet_from_server", False):
                why = f"broker sent DISCONNECT: {why}"
            self.log.warning(
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

    # ------------------------------------------------------------------ sending

    def _send_discovery(self, client: mqtt.Client) -> None:
        if not self.cfg.discovery:
            return
        for topic, payload in discovery.discovery_messages(
            self.cfg, self._labels, self._enabled, self.model_name, self.sw_version, self._removed
        ):
            client.publish(
                topic, _dumps(payload) if payload is not None else b"", qos=1, retain=True
            )

    def _send_states(self, client: mqtt.Client) -> None:
        for label, on in self._states.items():
            client.publish(
                discovery.state_topic(self.base, label), "ON" if on else "OFF", qos=1, retain=True
            )

    def _send_row(self, row: SpoolRow) -> None:
        """Hand one spooled row to paho (QoS 1) unless it is already in flight on this connection."""
        client = self._client
        assert client is not None
        with self._lock:
            if not self._connected or row.id in self._claimed:
                return
            self._claimed.add(row.id)
            self._publishing += 1
        info = None
        try:
            info = client.publish(row.topic, row.payload, qos=1)
        except (ValueError, TypeError) as exc:  # an invalid topic or payload: cannot ever be sent
            self.log.error(
                "MQTT: spooled message %d cannot be published (%s); dropping it", row.id, exc
            )
        early = False
        with self._lock:
            self._publishing -= 1
            if info is None or info.rc == mqtt.MQTT_ERR_QUEUE_SIZE:
                self._claimed.discard(row.id)
            elif info.mid in self._early:
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

    def _delivered(self, row_id: int, count: bool = True) -> None:
        """The broker has the message (PUBACK): forget it."""
        if self.spool is not None:
            try:
                self.spool.ack(row_id)
            except SpoolError as exc:
                self._spool_problem(exc)
        with self._lock:
            if count:
                self._published += 1
            self._claimed.discard(row_id)
            if not self._inflight:
                self._idle.notify_all()

    def _flush_spool(self) -> None:
        """Send every spooled row in order (connect time). Rows spooled meanwhile are picked up."""
        assert self.spool is not None
        after = 0
        try:
            while True:
                rows = self.spool.pending(limit=500, after_id=after)
                if not rows:
                    # Re-check under the lock: publish_detection skips sending while we flush,
                    # so a row it spooled after our last query must be seen here.
                    with self._lock:
                        rows = self.spool.pending(limit=500, after_id=after)
                        if not rows:
                            self._flushing = False
                            return
                for row in rows:
                    if not self._connected:
                        return
                    self._send_row(row)
                    after = row.id
        except SpoolError as exc:
            self._spool_problem(exc)
        finally:
            with self._lock:
                self._flushing = False

    def _spool_problem(self, exc: Exception) -> None:
        if not self._spool_error_logged:
            self._spool_error_logged = True
            self.log.error(
                "MQTT: spool error (%s); detections are sent without the disk spool", exc
            )

    # ------------------------------------------------------------------ public API

    def publish_detection(self, payload: dict[str, Any]) -> None:
        """Spool, then publish QoS 1 to `<base>/detection`; the spool row goes on PUBACK."""
        if self._client is None or self.spool is None:
            return
        topic = f"{self.base}/detection"
        text = _dumps(payload)
        dropped_before = self.spool.dropped
        try:
            row = self.spool.put(topic, text)
            self._spool_error_logged = False
        except SpoolError as exc:
            self._spool_problem(exc)
            if self._connected:  # better unspooled than not at all
                self._client.publish(topic, text, qos=1)
            return
        if self.spool.dropped > dropped_before and not self._spool_full_logged:
            self._spool_full_logged = True
            self.log.warning(
                "MQTT: spool full (%d): dropping the oldest detections until the broker is back "
                "(dropped so far: %d)",
                self.spool.max_messages,
                self.spool.dropped,
            )
        with self._lock:
            if not self._connected or self._flushing:
                return  # sent by the connect-time sweep
        self._send_row(row)

    def set_state(self, label: str, on: bool) -> None:
        """Retained QoS 1 `ON`/`OFF` on `<base>/state/<label>`; remembered and re-sent on reconnect."""
        if self._client is None:
            return
        with self._pub_lock:
            self._states[label] = bool(on)
            if self._connected:
                self._client.publish(
                    discovery.state_topic(self.base, label),
                    "ON" if on else "OFF",
                    qos=1,
                    retain=True,
                )

    def publish_level(self, payload: dict[str, Any]) -> None:
        """QoS 0 `{"time", "dbfs"}` on `<base>/level`; dropped while disconnected."""
        if self._client is None or not self._connected:
            return
        self._client.publish(f"{self.base}/level", _dumps(payload), qos=0)

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
            self._stats = text
            if self._connected:
                self._client.publish(f"{self.base}/stats", text, qos=0, retain=True)

    def update_labels(self, labels: Iterable[str], enabled: Iterable[str]) -> None:
        """New label set / enabled set (after SIGHUP or a model change): re-send discovery.

        Labels that disappeared or were disabled get an empty retained config (HA removes them).
        """
        if self._client is None:
            return
        labels = list(labels)
        with self._pub_lock:
            self._removed |= set(self._labels) - set(labels)
            self._removed -= set(labels)
            self._labels = labels
            self._enabled = set(enabled)
            for label in labels:
                if label in self._enabled:
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
        """Detections waiting for a PUBACK (in the spool)."""
        return self.spool.depth if self.spool is not None else 0

    @property
    def spool_dropped(self) -> int:
        """Detections dropped because the spool was full (persistent, all time)."""
        return self.spool.dropped if self.spool is not None else 0

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
            "spool_corrupt_files": self.spool.corrupt_files if self.spool is not None else 0,
            "spool_persistent": self.spool.persistent if self.spool is not None else False,
        }
