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
version), at start or found damaged while running, never stops the daemon: it is renamed
`spool.sqlite3.corrupt-<UTC time>` (with its WAL), what can still be read from it is copied into
a fresh spool with the same ids (so a PUBACK for a row in flight still deletes that row, and new
rows still come after every id handed out), one line is logged and the persistent
`corrupt_files` counter goes up. If the state directory cannot be written at all at start, or
no fresh file can be made after a damage (disk full, read-only), the spool lives in memory
until the next start (logged once at ERROR, counted as memory-only) so detections still flow.
A file that holds more rows than `max_messages` (the setting was lowered) loses its oldest at
open, with one WARNING line.

A spool that stops accepting writes later (disk full, I/O error) keeps new messages in a
bounded in-memory queue instead (one ERROR line when that starts, one INFO line when it ends):
they keep their place in the sequence (ids continue after the last one on disk), `pending()`
returns them after the rows on disk, and the disk is retried (on `put`, `retry_disk()` and
`close()`) every `retry_seconds` at first, backing off to ten times that; once a write works,
the memory rows are moved to disk with their ids unchanged, so rows already handed to the
broker are still acknowledged by id.
While the disk cannot be written, deletions (acks, rows dropped because the spool is full) are
remembered and carried out once it can. The bound (`max_messages`) covers both places and
every dropped message is counted in `dropped`. `memory_depth` says how many messages exist only
in memory: those are lost if the process ends before they are delivered or reach the disk.

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

    Parameters: `state_dir`, the directory of the file (created if missing); `max_messages`
    (>= 1), the bound over disk and memory together (ValueError below 1); `logger`, for its
    one-line reports (default "soundmon.spool"); `filename`, the file's name in `state_dir`.
    An unusable file or directory never raises here (see the module docstring); `persistent` is
    False when the spool could not be opened on disk and lives in memory until the next start.
    Usable as a context manager (closed at exit).
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
        self._depth = 0  # rows in the messages table (disk, or the start-up memory database)
        self._dropped = 0
        self._corrupt = 0
        self._last_id = 0  # the highest id ever handed out (disk sequence or memory queue)
        self._mem: dict[int, SpoolRow] = {}  # written while the disk failed; ids > every disk id
        self._unlinked: set[int] = set()  # disk rows acked/dropped while the disk failed
        self._retry_at = 0.0  # monotonic time of the next disk retry while _mem/_unlinked exist
        self.retry_seconds = 1.0
        self._retry_delay = 1.0
        self._disk_down = False  # a write failed and no write has worked since (one ERROR line each)
        self.persistent = True
        self._open()

    @classmethod
    def from_config(cls, storage: StorageConfig, logger: logging.Logger | None = None) -> Spool:
        """Build from a `StorageConfig` (state_dir, spool_max_messages), logging to `logger`."""
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
        seq = self._conn.execute(
            "SELECT seq FROM sqlite_sequence WHERE name = 'messages'"
        ).fetchone()
        self._last_id = max(self._last_id, int(seq[0]) if seq else 0)

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
            self._trim_at_open()
        except (OSError, sqlite3.OperationalError) as exc:
            self.log.error(
                "spool: cannot use %s (%s); keeping detections in memory only until restart",
                self.path,
                exc,
            )
            self.persistent = False
            self._conn = self._connect(":memory:")
            self._load_counters()

    def _trim_at_open(self) -> None:
        """Hold the bound from the start: a file written under a larger `max_messages` (the
        setting was lowered) loses its oldest rows now, with one line, not silently at the
        first put. A disk that cannot be written now leaves that to the first put."""
        try:
            n = self._trim()
        except (sqlite3.Error, SpoolError):
            return
        if n:
            self.log.warning(
                "spool: %s held more than storage.spool_max_messages (%d): dropped the oldest %d "
                "detection(s) (dropped so far: %d)",
                self.path,
                self.max_messages,
                n,
                self._dropped,
            )

    def _recover(self, reason: str) -> None:
        """Move an unusable spool file aside, salvage what is readable, start a fresh one.

        Salvaged rows keep their ids, and the fresh file's sequence continues after the highest
        id handed out: the publisher may hold ids of rows in flight (a recovery while running),
        and an acknowledgement must delete the row it was for. If no fresh file can be made
        (the disk is full or read-only), the salvaged rows go into memory as at a failed start."""
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
        unusable: Exception | None = None
        try:
            for suffix in ("", "-wal", "-shm"):
                src = Path(str(self.path) + suffix)
                if src.exists():
                    src.replace(Path(str(aside) + suffix))
            source = aside
        except OSError as exc:  # cannot even rename it: read what we can where it is
            source, unusable = self.path, exc
        salvaged = self._salvage(source)
        old = self._counters_from(source)
        # this run's counters, if the old file's cannot be read (they were kept there too)
        old = {"dropped": max(self._dropped, old.get("dropped", 0)),
               "corrupt_files": max(self._corrupt, old.get("corrupt_files", 0))}  # fmt: skip
        try:
            if unusable is not None:
                raise unusable
            self._conn = self._connect(self.path)
            self._fill(salvaged, old)
        except (OSError, sqlite3.Error, _Unusable) as exc:
            if self._conn is not None:
                with contextlib.suppress(sqlite3.Error):
                    self._conn.close()
            self.log.error(
                "spool: %s is unreadable (%s) and no new spool file can be made (%s); keeping "
                "detections in memory only until restart",
                self.path,
                reason,
                exc,
            )
            self.persistent = False
            self._conn = self._connect(":memory:")
            self._fill(salvaged, old)
            self._trim()
            return
        trimmed = self._trim()
        self.log.error(
            "spool: %s is unreadable (%s); moved it to %s, salvaged %d message(s)%s, started a new "
            "spool (corrupt spool files so far: %d)",
            self.path,
            reason,
            aside.name,
            len(salvaged),
            f" (the oldest {trimmed} dropped: more than storage.spool_max_messages)" if trimmed else "",
            self._corrupt,
        )

    def _fill(self, salvaged: list[tuple[int, str, str, float]], old: dict[str, int]) -> None:
        """A fresh spool's rows and counters after a recovery: the salvaged rows with their ids,
        the sequence after the highest id ever handed out, the old file's counters added."""
        self._load_counters()
        with self._transaction() as conn:
            conn.executemany(
                "INSERT INTO messages (id, topic, payload, created) VALUES (?, ?, ?, ?)", salvaged
            )
            self._last_id = max([self._last_id, *(row[0] for row in salvaged)])
            conn.execute("DELETE FROM sqlite_sequence WHERE name = 'messages'")
            conn.execute("INSERT INTO sqlite_sequence (name, seq) VALUES ('messages', ?)", (self._last_id,))
            self._dropped += old.get("dropped", 0)
            self._corrupt += old.get("corrupt_files", 0) + 1
            self._set_meta(conn, "dropped", self._dropped)
            self._set_meta(conn, "corrupt_files", self._corrupt)
        self._depth += len(salvaged)

    @staticmethod
    def _salvage(path: Path) -> list[tuple[int, str, str, float]]:
        """Best effort: the rows (id, topic, payload, created) of an unusable spool that can
        still be read, in order.

        Reads in id order; when a damaged page stops the scan, probes further ids (growing
        steps) so that rows stored after the damage are still recovered.
        """
        rows: list[tuple[int, str, str, float]] = []
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
                            rows.append((int(row_id), topic, payload, float(created)))
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
            return self._run_locked(op, *args)

    def _run_locked(self, op, *args):  # type: ignore[no-untyped-def]
        """`_run` for a caller that holds the lock."""
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

    # ------------------------------------------------------------------ disk failures

    def _disk_failed(self, exc: SpoolError) -> None:
        """A write failed: say so once per episode and schedule the next retry."""
        first = not self._disk_down
        self._disk_down = True
        # every retry_seconds at first, backing off to 10x while it keeps failing: a retry
        # writes every memory row again, which is not free with thousands of them
        self._retry_delay = (
            self.retry_seconds if first else min(self._retry_delay * 2, 10 * self.retry_seconds)
        )
        self._retry_at = time.monotonic() + self._retry_delay
        if first:
            self.log.error(
                "spool: cannot write %s (%s); keeping detections in memory (at most %d) and "
                "retrying the disk from every %gs to every %gs",
                self.path,
                exc.__cause__ or exc,
                self.max_messages,
                self.retry_seconds,
                10 * self.retry_seconds,
            )

    def _put_mem(self, topic: str, payload: str) -> SpoolRow:
        """Queue a message in memory (the disk failed); drop the oldest rows beyond the bound."""
        self._last_id += 1
        row = SpoolRow(self._last_id, topic, payload, time.time())
        self._mem[row.id] = row
        excess = self._live_depth - self.max_messages
        if excess > 0 and self._conn is not None:
            # oldest first: rows on disk (deleted once the disk works again), then memory rows
            with contextlib.suppress(sqlite3.Error):
                ids = self._conn.execute(
                    "SELECT id FROM messages ORDER BY id LIMIT ?", (excess + len(self._unlinked),)
                ).fetchall()
                for (i,) in ids:
                    if excess and i not in self._unlinked:
                        self._unlinked.add(int(i))
                        self._dropped += 1
                        excess -= 1
        while excess > 0 and self._mem:
            del self._mem[next(iter(self._mem))]
            self._dropped += 1
            excess -= 1
        return row

    def _migrate(self) -> None:
        """Carry out the deferred deletions and move the memory rows to disk, ids unchanged."""
        assert self._conn is not None
        mem = list(self._mem.values())
        gone = sorted(self._unlinked)
        self._conn.execute("PRAGMA synchronous=FULL")
        try:
            with self._transaction() as conn:
                deleted = 0
                for i in gone:
                    deleted += conn.execute("DELETE FROM messages WHERE id = ?", (i,)).rowcount
                conn.executemany(
                    "INSERT INTO messages (id, topic, payload, created) VALUES (?, ?, ?, ?)",
                    [(r.id, r.topic, r.payload, r.created) for r in mem],
                )
                self._set_meta(conn, "dropped", self._dropped)
        finally:
            self._conn.execute("PRAGMA synchronous=NORMAL")
        self._depth += len(mem) - deleted
        self._mem.clear()
        self._unlinked.clear()
        self._disk_ok(len(mem))

    def _disk_ok(self, moved: int = 0) -> None:
        """A write worked: end a disk-failure episode (one INFO line)."""
        if self._disk_down or moved:
            self._disk_down = False
            self.log.info(
                "spool: %s can be written again; moved %d detection(s) from memory to disk",
                self.path,
                moved,
            )

    def _retry_locked(self, force: bool = False) -> bool:
        """Try the disk again (at most every retry_seconds unless forced); True once all is on disk."""
        if not self._mem and not self._unlinked:
            return True
        if self._conn is None or (not force and time.monotonic() < self._retry_at):
            return False
        try:
            self._run_locked(self._migrate)
        except SpoolError as exc:
            self._disk_failed(exc)
            return False
        return True

    def retry_disk(self, force: bool = False) -> bool:
        """Move memory rows to disk if the disk works again; True when no row is memory-only.

        Tried at most every `retry_seconds` (backing off) unless `force`."""
        with self._lock:
            return self._retry_locked(force)

    @property
    def _live_depth(self) -> int:
        return self._depth - len(self._unlinked) + len(self._mem)

    # ------------------------------------------------------------------ public API

    def put(self, topic: str, payload: str, *, memory_ok: bool = True) -> SpoolRow:
        """Store a message durably (synced to disk) and return it with its sequence id.

        When the spool is full the oldest message(s) are dropped first and counted. When the
        disk cannot be written it is kept in memory instead (see the module docstring), unless
        `memory_ok` is False: then SpoolError, for a caller that holds the message durably
        elsewhere (moving rows from another spool file must not downgrade them to memory).
        Otherwise raises SpoolError only when the spool is closed.
        """
        with self._lock:
            if self._conn is None:
                raise SpoolError("spool is closed")
            if not self._retry_locked(force=not memory_ok):
                if not memory_ok:
                    raise SpoolError(f"spool {self.path}: the disk cannot be written now")
                return self._put_mem(topic, payload)  # keep the order: behind the memory rows
            try:
                row = self._run_locked(self._put, topic, payload)
                self._disk_ok()
                return row
            except SpoolError as exc:
                if self._conn is None:
                    raise
                self._disk_failed(exc)
                if not memory_ok:
                    raise
                return self._put_mem(topic, payload)

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
        self._last_id = max(self._last_id, row_id)
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
        if self._mem.pop(row_id, None) is not None:
            return True
        if row_id in self._unlinked:
            return False
        try:
            n = self._conn.execute("DELETE FROM messages WHERE id = ?", (row_id,)).rowcount
        except sqlite3.OperationalError as exc:
            # cannot write (disk full): forget the row now, delete it once the disk works
            if self._conn.execute("SELECT 1 FROM messages WHERE id = ?", (row_id,)).fetchone():
                self._unlinked.add(row_id)
                if self._disk_down:
                    self._retry_at = min(self._retry_at, time.monotonic() + self.retry_seconds)
                else:  # the episode starts here (a PUBACK can come before the next put)
                    self._disk_failed(SpoolError(f"spool {self.path}: {exc}"))
                return True
            return False
        self._depth -= n
        return n > 0

    def pending(self, limit: int | None = None, after_id: int = 0) -> list[SpoolRow]:
        """Messages not yet acknowledged, oldest first (optionally only ids > after_id, at most
        `limit`); SpoolError when the spool is closed."""
        return self._run(self._pending, limit, after_id)

    def _pending(self, limit: int | None, after_id: int) -> list[SpoolRow]:
        assert self._conn is not None
        want = -1 if limit is None else limit + len(self._unlinked)
        rows = [
            SpoolRow(int(i), t, p, float(c))
            for i, t, p, c in self._conn.execute(
                "SELECT id, topic, payload, created FROM messages WHERE id > ? ORDER BY id LIMIT ?",
                (after_id, want),
            ).fetchall()
            if int(i) not in self._unlinked
        ]
        rows += [r for r in self._mem.values() if r.id > after_id]  # all newer than the disk's
        return rows if limit is None else rows[:limit]

    @property
    def depth(self) -> int:
        """How many messages wait for an acknowledgement (on disk and in memory)."""
        return self._live_depth

    @property
    def memory_depth(self) -> int:
        """How many waiting messages exist only in memory (lost if the process ends now)."""
        return self._live_depth if not self.persistent else len(self._mem)

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
        """`close()` has run."""
        return self._conn is None

    def close(self) -> None:
        """Move memory rows to disk if it works now, checkpoint and close; later calls to
        put/pending raise SpoolError, ack returns False. `memory_depth` then says what was lost."""
        with self._lock:
            if self._conn is None:
                return
            self._retry_locked(force=True)
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
            f"Spool({where}, depth={self.depth}, memory={self.memory_depth}, "
            f"max={self.max_messages}, dropped={self._dropped})"
        )
