"""The on-disk spool: detections wait here until the broker has acknowledged them.

Why: paho keeps un-acknowledged QoS 1 messages only in memory, so a broker outage that
outlasts the process (a restart, a power cut) would lose detections. The publisher
therefore writes every detection here *before* handing it to paho and deletes it on PUBACK;
whatever is still here at the next connection (or the next start) is sent again. The
guarantee is at-least-once: a duplicate after a restart is possible, a loss is not -- except
that the spool is bounded (`storage.spool_max_messages`): when it is full the *oldest*
messages go first and a persistent `dropped` counter says how many.

A single SQLite file (`<state_dir>/spool.sqlite3`) in WAL mode. Writes (`put`) are synced to
disk before they return (synchronous=FULL); deletions (`ack`) are not synced on their own
(synchronous=NORMAL), because losing an ack to a power cut only means a duplicate later.

A spool file that SQLite cannot read (corrupt, not a database, written by an incompatible
version) never stops the daemon: it is renamed `spool.sqlite3.corrupt-<UTC time>` (with its
WAL), what can still be read from it is copied into a fresh spool, one line is logged and
the persistent `corrupt_files` counter goes up. If the state directory cannot be written at
all, the spool lives in memory (logged once at ERROR) so detections still flow.

Thread-safe: one connection guarded by a lock (paho calls `ack` from its network thread).
"""

from __future__ import annotations

import contextlib
import logging
import sqlite3
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from monitor.config import StorageConfig

__all__ = ["SCHEMA_VERSION", "SPOOL_FILENAME", "Spool", "SpoolError", "SpoolRow"]

SPOOL_FILENAME = "spool.sqlite3"
SCHEMA_VERSION = 1

_SCHEMA = """
CREATE TABLE IF NOT EXISTS messages (
    id      INTEGER PRIMARY KEY AUTOINCREMENT,  -- the sequence: never reused, gives the order
    topic   TEXT NOT NULL,
    payload TEXT NOT NULL,
    created REAL NOT NULL                        -- time.time() when spooled
);
CREATE TABLE IF NOT EXISTS meta (
    key   TEXT PRIMARY KEY,
    value INTEGER NOT NULL
);
"""


class SpoolError(Exception):
    """The spool cannot store a message (disk full, I/O error, closed)."""


@dataclass(frozen=True)
class SpoolRow:
    """One spooled message. `id` is its sequence number (strictly increasing, never reused)."""

    id: int
    topic: str
    payload: str
    created: float


class _Unusable(Exception):
    """Internal: the file is not a usable spool (corrupt, foreign, wrong schema)."""


def _is_corruption(exc: BaseException) -> bool:
    """SQLITE_CORRUPT / SQLITE_NOTADB surface as DatabaseError but not OperationalError."""
    return isinstance(exc, sqlite3.DatabaseError) and not isinstance(exc, sqlite3.OperationalError)


class Spool:
    """A bounded, persistent FIFO of messages waiting for a broker acknowledgement.

    `put()` before publishing, `ack(id)` on PUBACK, `pending()` for what must be (re)sent.
    """

    def __init__(
        self,
        state_dir: str | Path,
        max_messages: int = 10000,
        logger: logging.Logger | None = None,
        filename: str = SPOOL_FILENAME,
    ) -> None:
        if max_messages < 1:
            raise ValueError("max_messages must be >= 1")
        self.max_messages = max_messages
        self.log = logger or logging.getLogger("soundmon.spool")
        self.path = Path(state_dir) / filename
        self._lock = threading.Lock()
        self._conn: sqlite3.Connection | None = None
        self._depth = 0
        self._dropped = 0
        self._corrupt = 0
        self.persistent = True
        self._open()

    @classmethod
    def from_config(cls, storage: StorageConfig, logger: logging.Logger | None = None) -> Spool:
        """Build from a `StorageConfig` (state_dir, spool_max_messages)."""
        return cls(storage.state_dir, storage.spool_max_messages, logger)

    # ------------------------------------------------------------------ opening / recovery

    def _connect(self, target: str | Path) -> sqlite3.Connection:
        # isolation_level=None: we issue BEGIN/COMMIT ourselves; check_same_thread=False: the
        # lock serialises use across the daemon thread and paho's network thread.
        conn = sqlite3.connect(
            str(target), isolation_level=None, check_same_thread=False, timeout=5.0
        )
        try:
            mode = conn.execute("PRAGMA journal_mode=WAL").fetchone()[0]
            if str(target) != ":memory:" and str(mode).lower() != "wal":
                raise _Unusable(f"cannot switch to WAL mode (got {mode})")
            conn.execute("PRAGMA synchronous=NORMAL")
            version = conn.execute("PRAGMA user_version").fetchone()[0]
            tables = {
                r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")
            }
            if version == 0 and not (tables & {"messages", "meta"}):
                conn.executescript(_SCHEMA + f"PRAGMA user_version={SCHEMA_VERSION};")
            elif version != SCHEMA_VERSION:
                raise _Unusable(f"unknown spool schema version {version}")
            check = conn.execute("PRAGMA quick_check").fetchall()
            if check != [("ok",)]:
                raise _Unusable(f"integrity check failed: {check[0][0]}")
            cols = [r[1] for r in conn.execute("PRAGMA table_info(messages)")]
            if cols != ["id", "topic", "payload", "created"]:
                raise _Unusable("unexpected table layout")
        except BaseException:
            conn.close()
            raise
        return conn

    def _load_counters(self) -> None:
        assert self._conn is not None
        self._depth = self._conn.execute("SELECT COUNT(*) FROM messages").fetchone()[0]
        meta = dict(self._conn.execute("SELECT key, value FROM meta").fetchall())
        self._dropped = int(meta.get("dropped", 0))
        self._corrupt = int(meta.get("corrupt_files", 0))

    def _open(self) -> None:
        """Open (or create) the spool file; recover from an unusable one; fall back to memory."""
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            try:
                self._conn = self._connect(self.path)
            except (_Unusable, sqlite3.DatabaseError) as exc:
                if isinstance(exc, sqlite3.OperationalError):
                    raise  # cannot open/write at all: not a corruption, handled below
                self._recover(str(exc))
                return
            self._load_counters()
        except (OSError, sqlite3.OperationalError) as exc:
            self.log.error(
                "spool: cannot use %s (%s); keeping detections in memory only until restart",
                self.path,
                exc,
            )
            self.persistent = False
            self._conn = self._connect(":memory:")
            self._load_counters()

    def _recover(self, reason: str) -> None:
        """Move an unusable spool file aside, salvage what is readable, start a fresh one."""
        if self._conn is not None:
            with contextlib.suppress(sqlite3.Error):
                self._conn.close()
            self._conn = None
        stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ")
        aside = self.path.with_name(f"{self.path.name}.corrupt-{stamp}")
        n = 1
        while aside.exists():
            n += 1
            aside = self.path.with_name(f"{self.path.name}.corrupt-{stamp}-{n}")
        for suffix in ("", "-wal", "-shm"):
            src = Path(str(self.path) + suffix)
            if src.exists():
                src.replace(Path(str(aside) + suffix))
        salvaged = self._salvage(aside)
        self._conn = self._connect(self.path)
        self._load_counters()
        old = self._counters_from(aside)
        with self._transaction() as conn:
            for topic, payload, created in salvaged:
                conn.execute(
                    "INSERT INTO messages (topic, payload, created) VALUES (?, ?, ?)",
                    (topic, payload, created),
                )
            self._dropped += old.get("dropped", 0)
            self._corrupt += old.get("corrupt_files", 0) + 1
            self._set_meta(conn, "dropped", self._dropped)
            self._set_meta(conn, "corrupt_files", self._corrupt)
        self._depth += len(salvaged)
        self._trim()
        self.log.error(
            "spool: %s is unreadable (%s); moved it to %s, salvaged %d message(s), started a new spool "
            "(corrupt spool files so far: %d)",
            self.path,
            reason,
            aside.name,
            len(salvaged),
            self._corrupt,
        )

    @staticmethod
    def _salvage(path: Path) -> list[tuple[str, str, float]]:
        """Best effort: the rows of an unusable spool that can still be read, in order.

        Reads in id order; when a damaged page stops the scan, probes further ids (growing
        steps) so that rows stored after the damage are still recovered.
        """
        rows: list[tuple[str, str, float]] = []
        try:
            conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True, isolation_level=None)
        except sqlite3.Error:
            return rows
        try:
            after, step, probes = 0, 1, 0
            while probes < 64:
                try:
                    cur = conn.execute(
                        "SELECT id, topic, payload, created FROM messages WHERE id > ? ORDER BY id",
                        (after,),
                    )
                    for row_id, topic, payload, created in cur:
                        after, step = int(row_id), 1
                        if (
                            isinstance(topic, str)
                            and isinstance(payload, str)
                            and isinstance(created, (int, float))
                        ):
                            rows.append((topic, payload, float(created)))
                    break  # reached the end
                except (sqlite3.Error, TypeError, ValueError):
                    after += step  # skip past the damage and try again
                    step *= 2
                    probes += 1
        except sqlite3.Error:
            pass
        finally:
            conn.close()
        return rows

    @staticmethod
    def _counters_from(path: Path) -> dict[str, int]:
        """Carry the counters of an unusable spool over when they can still be read."""
        try:
            conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True, isolation_level=None)
        except sqlite3.Error:
            return {}
        try:
            return {str(k): int(v) for k, v in conn.execute("SELECT key, value FROM meta")}
        except (sqlite3.Error, TypeError, ValueError):
            return {}
        finally:
            conn.close()

    # ------------------------------------------------------------------ helpers

    @contextlib.contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        conn = self._conn
        if conn is None:
            raise SpoolError("spool is closed")
        conn.execute("BEGIN IMMEDIATE")
        try:
            yield conn
        except BaseException:
            with contextlib.suppress(sqlite3.Error):
                conn.execute("ROLLBACK")
            raise
        conn.execute("COMMIT")

    @staticmethod
    def _set_meta(conn: sqlite3.Connection, key: str, value: int) -> None:
        conn.execute(
            "INSERT INTO meta (key, value) VALUES (?, ?) ON CONFLICT(key) DO UPDATE SET value=excluded.value",
            (key, value),
        )

    def _trim(self, room: int = 0) -> int:
        """Drop the oldest rows so that `room` more fit; return how many were dropped."""
        excess = self._depth + room - self.max_messages
        if excess <= 0:
            return 0
        with self._transaction() as conn:
            cur = conn.execute(
                "DELETE FROM messages WHERE id IN (SELECT id FROM messages ORDER BY id LIMIT ?)",
                (excess,),
            )
            n = cur.rowcount
            self._dropped += n
            self._set_meta(conn, "dropped", self._dropped)
        self._depth -= n
        return n

    def _run(self, op, *args):  # type: ignore[no-untyped-def]
        """Run op under the lock; on corruption recover once and retry; other errors -> SpoolError."""
        with self._lock:
            if self._conn is None:
                raise SpoolError("spool is closed")
            try:
                return op(*args)
            except sqlite3.Error as exc:
                if not _is_corruption(exc) or not self.persistent:
                    raise SpoolError(f"spool {self.path}: {exc}") from exc
                reason = str(exc)
            try:
                self._recover(reason)
                return op(*args)
            except (sqlite3.Error, OSError, _Unusable) as exc:
                raise SpoolError(f"spool {self.path}: {exc}") from exc

    # ------------------------------------------------------------------ public API

    def put(self, topic: str, payload: str) -> SpoolRow:
        """Store a message durably (synced to disk) and return it with its sequence id.

        When the spool is full the oldest message(s) are dropped first and counted.
        Raises SpoolError if it cannot be stored (the caller may still publish it unspooled).
        """
        return self._run(self._put, topic, payload)

    def _put(self, topic: str, payload: str) -> SpoolRow:
        assert self._conn is not None
        created = time.time()
        self._conn.execute("PRAGMA synchronous=FULL")  # this commit is fsynced (WAL + FULL)
        try:
            excess = self._depth + 1 - self.max_messages
            with self._transaction() as conn:
                dropped = 0
                if excess > 0:
                    dropped = conn.execute(
                        "DELETE FROM messages WHERE id IN (SELECT id FROM messages ORDER BY id LIMIT ?)",
                        (excess,),
                    ).rowcount
                    self._set_meta(conn, "dropped", self._dropped + dropped)
                cur = conn.execute(
                    "INSERT INTO messages (topic, payload, created) VALUES (?, ?, ?)",
                    (topic, payload, created),
                )
                row_id = int(cur.lastrowid or 0)
        finally:
            self._conn.execute("PRAGMA synchronous=NORMAL")
        self._dropped += dropped
        self._depth += 1 - dropped
        return SpoolRow(row_id, topic, payload, created)

    def ack(self, row_id: int) -> bool:
        """Remove a delivered message; True if it was still there. A closed spool ignores it."""
        try:
            return bool(self._run(self._ack, row_id))
        except SpoolError:
            if self._conn is None:
                return False
            raise

    def _ack(self, row_id: int) -> bool:
        assert self._conn is not None
        n = self._conn.execute("DELETE FROM messages WHERE id = ?", (row_id,)).rowcount
        self._depth -= n
        return n > 0

    def pending(self, limit: int | None = None, after_id: int = 0) -> list[SpoolRow]:
        """Messages not yet acknowledged, oldest first (optionally only ids > after_id)."""
        return self._run(self._pending, limit, after_id)

    def _pending(self, limit: int | None, after_id: int) -> list[SpoolRow]:
        assert self._conn is not None
        rows = self._conn.execute(
            "SELECT id, topic, payload, created FROM messages WHERE id > ? ORDER BY id LIMIT ?",
            (after_id, -1 if limit is None else limit),
        ).fetchall()
        return [SpoolRow(int(i), t, p, float(c)) for i, t, p, c in rows]

    @property
    def depth(self) -> int:
        """How many messages wait for an acknowledgement."""
        return self._depth

    @property
    def dropped(self) -> int:
        """How many messages were dropped because the spool was full (persistent, all time)."""
        return self._dropped

    @property
    def corrupt_files(self) -> int:
        """How many unreadable spool files were moved aside (persistent, all time)."""
        return self._corrupt

    @property
    def closed(self) -> bool:
        return self._conn is None

    def close(self) -> None:
        """Checkpoint and close; later calls to put/pending raise SpoolError, ack returns False."""
        with self._lock:
            if self._conn is None:
                return
            with contextlib.suppress(sqlite3.Error):
                self._conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            with contextlib.suppress(sqlite3.Error):
                self._conn.close()
            self._conn = None

    def __enter__(self) -> Spool:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        where = self.path if self.persistent else ":memory:"
        return (
            f"Spool({where}, depth={self._depth}, max={self.max_messages}, dropped={self._dropped})"
        )
