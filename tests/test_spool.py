"""The on-disk spool: order, acks, bound (drop oldest, counted), persistence, corrupt files, threads."""

from __future__ import annotations

import logging
import os
import sqlite3
import threading
import time
from pathlib import Path

import pytest

from monitor.config import StorageConfig
from monitor.spool import SPOOL_FILENAME, Spool, SpoolError


def _msgs(spool: Spool) -> list[str]:
    return [r.payload for r in spool.pending()]


def test_put_pending_ack_in_order(tmp_path: Path) -> None:
    with Spool(tmp_path, 100) as s:
        rows = [s.put("soundmon/n/detection", f'{{"n":{i}}}') for i in range(5)]
        assert [r.id for r in rows] == sorted(r.id for r in rows)  # sequence grows
        assert s.depth == 5
        assert _msgs(s) == [f'{{"n":{i}}}' for i in range(5)]
        assert s.ack(rows[2].id) is True
        assert s.ack(rows[2].id) is False  # idempotent
        assert s.ack(999_999) is False
        assert [r.id for r in s.pending()] == [rows[i].id for i in (0, 1, 3, 4)]
        assert s.depth == 4
        assert [r.id for r in s.pending(limit=2)] == [rows[0].id, rows[1].id]
        assert [r.id for r in s.pending(after_id=rows[1].id)] == [rows[3].id, rows[4].id]
        p = s.pending()[0]
        assert p.topic == "soundmon/n/detection" and abs(p.created - time.time()) < 60


def test_wal_mode_and_file_location(tmp_path: Path) -> None:
    state = tmp_path / "state" / "nested"  # created on demand
    with Spool.from_config(StorageConfig(state_dir=state, spool_max_messages=10)) as s:
        s.put("t", "x")
        assert s.path == state / SPOOL_FILENAME and s.persistent
    conn = sqlite3.connect(state / SPOOL_FILENAME)
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    conn.close()


def test_full_spool_drops_oldest_and_counts_persistently(tmp_path: Path) -> None:
    with Spool(tmp_path, 10) as s:
        for i in range(25):
            s.put("t", str(i))
        assert s.depth == 10
        assert s.dropped == 15
        assert _msgs(s) == [str(i) for i in range(15, 25)]  # the newest survive
    with Spool(tmp_path, 10) as s:
        assert s.dropped == 15 and s.depth == 10
        s.put("t", "25")
        assert s.dropped == 16 and _msgs(s)[0] == "16"
    # a smaller bound after a config change trims on the next put
    with Spool(tmp_path, 5) as s:
        s.put("t", "26")
        assert s.depth == 5 and _msgs(s) == ["22", "23", "24", "25", "26"]
        assert s.dropped == 16 + 6


def test_pending_survives_reopen_and_sequence_never_reused(tmp_path: Path) -> None:
    with Spool(tmp_path, 100) as s:
        a = s.put("t", "a")
        b = s.put("t", "b")
        s.ack(b.id)
    with Spool(tmp_path, 100) as s:
        assert [(r.id, r.payload) for r in s.pending()] == [(a.id, "a")]
        c = s.put("t", "c")
        assert c.id > b.id  # AUTOINCREMENT: an acked id is never handed out again


def test_closed_spool(tmp_path: Path) -> None:
    s = Spool(tmp_path, 10)
    r = s.put("t", "x")
    s.close()
    assert s.closed
    assert s.ack(r.id) is False  # late PUBACK after shutdown: ignored
    with pytest.raises(SpoolError):
        s.put("t", "y")
    with pytest.raises(SpoolError):
        s.pending()
    s.close()  # twice is fine


def _corrupt_files(d: Path) -> list[Path]:
    return sorted(
        p for p in d.iterdir() if ".corrupt-" in p.name and not p.name.endswith(("-wal", "-shm"))
    )


def test_garbage_file_is_moved_aside_and_counted(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    (tmp_path / SPOOL_FILENAME).write_bytes(b"this is not sqlite" * 500)
    caplog.set_level(logging.INFO)
    with Spool(tmp_path, 10) as s:
        assert s.depth == 0 and s.corrupt_files == 1 and s.persistent
        s.put("t", "fresh")  # works
    aside = _corrupt_files(tmp_path)
    assert len(aside) == 1 and aside[0].read_bytes().startswith(b"this is not sqlite")
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(errors) == 1 and "moved it to" in errors[0].getMessage()
    with Spool(tmp_path, 10) as s:  # the counter is kept in the new spool
        assert s.corrupt_files == 1 and _msgs(s) == ["fresh"]


def test_damaged_page_salvages_the_readable_rows(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with Spool(tmp_path, 10_000) as s:
        for i in range(2000):
            s.put("t", f"{i:05d}" + "x" * 200)
        for _ in range(7):
            s.put("t", "z")  # the last rows, far behind the damaged page
    path = tmp_path / SPOOL_FILENAME
    with open(path, "r+b") as f:  # smash one page in the middle of the table
        f.seek(4096 * 40)
        f.write(os.urandom(4096))
    with caplog.at_level(logging.ERROR), Spool(tmp_path, 10_000) as s:
        assert s.corrupt_files == 1
        salvaged = _msgs(s)
    assert 1000 < len(salvaged) < 2007  # one page lost, the rest (before *and* after it) kept
    assert salvaged == sorted(salvaged)  # still in order
    assert salvaged[-1] == "z"
    assert len(_corrupt_files(tmp_path)) == 1
    assert any("salvaged" in r.getMessage() for r in caplog.records)


def test_foreign_schema_is_treated_as_unreadable(tmp_path: Path) -> None:
    conn = sqlite3.connect(tmp_path / SPOOL_FILENAME)
    conn.executescript("CREATE TABLE messages (a, b); PRAGMA user_version = 99;")
    conn.close()
    with Spool(tmp_path, 10) as s:
        assert s.corrupt_files == 1 and s.depth == 0
        s.put("t", "ok")


def test_unwritable_state_dir_falls_back_to_memory(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("a file where the state directory should be")
    with caplog.at_level(logging.ERROR), Spool(blocker / "state", 10) as s:
        assert not s.persistent
        r = s.put("t", "x")
        assert s.ack(r.id) and s.depth == 0
    assert any("in memory" in r.getMessage() for r in caplog.records)


def test_thread_safety(tmp_path: Path) -> None:
    """Producers put while an 'acker' (paho's thread) acks: depth and contents stay exact."""
    s = Spool(tmp_path, 100_000)
    n_threads, per = 4, 150
    produced: list[int] = []
    lock = threading.Lock()
    errors: list[BaseException] = []

    def producer(k: int) -> None:
        try:
            for i in range(per):
                r = s.put("t", f"{k}-{i}")
                with lock:
                    produced.append(r.id)
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    def acker() -> None:
        acked = 0
        try:
            while acked < n_threads * per // 2:
                with lock:
                    ids = produced[acked : n_threads * per // 2]
                for i in ids:
                    assert s.ack(i)
                    acked += 1
        except BaseException as exc:  # pragma: no cover
            errors.append(exc)

    threads = [threading.Thread(target=producer, args=(k,)) for k in range(n_threads)] + [
        threading.Thread(target=acker)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not errors
    assert len(set(produced)) == n_threads * per
    assert s.depth == n_threads * per // 2 == len(s.pending())
    s.close()


def test_put_ack_cost(tmp_path: Path) -> None:
    """Measured, not asserted tightly: put (fsynced) + ack must stay far below a detection rate."""
    with Spool(tmp_path, 10_000) as s:
        n = 100
        t0 = time.perf_counter()
        ids = [
            s.put("soundmon/n/detection", '{"id":"x","label":"siren","score":0.9}').id
            for _ in range(n)
        ]
        t1 = time.perf_counter()
        for i in ids:
            s.ack(i)
        t2 = time.perf_counter()
    put_ms, ack_ms = (t1 - t0) / n * 1e3, (t2 - t1) / n * 1e3
    print(f"spool put {put_ms:.3f} ms, ack {ack_ms:.3f} ms")
    assert put_ms < 100 and ack_ms < 50
