"""The on-disk spool: order, acks, bound (drop oldest, counted), persistence, corrupt files, threads."""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import sqlite3
import subprocess
import threading
import time
from collections.abc import Iterator
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


# ---------------------------------------------------------------- a disk that fills up


class SmallDisk:
    """A real 256 KiB tmpfs (mounted for the test, root only) that can be filled and freed.

    Real: SQLite gets its genuine SQLITE_FULL ("database or disk is full") from the kernel.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self.filler = path / "filler"

    def fill(self) -> None:
        """Take every free byte (a file written until ENOSPC)."""
        fd = os.open(self.filler, os.O_WRONLY | os.O_CREAT | os.O_APPEND)
        try:
            for size in (65536, 4096, 512, 64, 1):
                with contextlib.suppress(OSError):
                    while True:
                        os.write(fd, b"\0" * size)
        finally:
            os.close(fd)

    def free(self) -> None:
        self.filler.unlink(missing_ok=True)


@pytest.fixture(name="small_disk")
def small_disk_fixture(tmp_path: Path) -> Iterator[SmallDisk]:
    """A fresh small tmpfs; skipped where mounting is not permitted (not root, no CAP_SYS_ADMIN)."""
    mnt = tmp_path / "small-disk"
    mnt.mkdir()
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=256k", "tmpfs", str(mnt)],
        capture_output=True,
        text=True,
    )
    if done.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs here: {done.stderr.strip()}")
    try:
        yield SmallDisk(mnt)
    finally:
        subprocess.run(["umount", "-l", str(mnt)], capture_output=True)


def test_disk_full_keeps_messages_in_memory_in_order_then_moves_them_to_disk(
    small_disk: SmallDisk, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    s = Spool(small_disk.path, 100)
    s.retry_seconds = 0.0
    on_disk = [s.put("t", f"a{i}") for i in range(3)]
    small_disk.fill()
    in_mem = [s.put("t", f"b{i}") for i in range(5)]  # no SpoolError: kept in memory
    assert s.depth == 8 and s.memory_depth == 5 and s.persistent
    ids = [r.id for r in on_disk + in_mem]
    assert ids == sorted(ids) and len(set(ids)) == 8  # one sequence, in order
    assert [r.payload for r in s.pending()] == ["a0", "a1", "a2", "b0", "b1", "b2", "b3", "b4"]
    assert [r.payload for r in s.pending(limit=2, after_id=on_disk[1].id)] == ["a2", "b0"]
    assert s.ack(on_disk[0].id)  # cannot be deleted now: remembered
    assert s.ack(in_mem[1].id)
    assert not s.ack(on_disk[0].id)
    assert s.depth == 6 and s.memory_depth == 4
    assert not s.retry_disk(force=True)  # still full
    errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(errors) == 1 and "in memory" in errors[0] and "full" in errors[0]
    small_disk.free()
    assert s.retry_disk()
    assert s.memory_depth == 0 and s.depth == 6
    assert any("moved 4 detection(s) from memory to disk" in r.getMessage() for r in caplog.records)
    after = [(r.id, r.payload) for r in s.pending()]
    s.close()
    with Spool(small_disk.path, 100) as again:  # really on disk, ids unchanged
        assert [(r.id, r.payload) for r in again.pending()] == after
        assert [p for _, p in after] == ["a1", "a2", "b0", "b2", "b3", "b4"]
        assert again.put("t", "c").id > in_mem[-1].id


def test_disk_full_bound_drops_the_oldest_and_counts(small_disk: SmallDisk) -> None:
    s = Spool(small_disk.path, 10)
    s.retry_seconds = 0.0
    for i in range(4):
        s.put("t", f"a{i}")
    small_disk.fill()
    for i in range(12):
        s.put("t", f"b{i}")
    assert s.depth == 10 and s.dropped == 6  # the 4 on disk first, then the 2 oldest in memory
    assert [r.payload for r in s.pending()] == [f"b{i}" for i in range(2, 12)]
    small_disk.free()
    s.close()  # close() tries the disk once more: nothing is memory-only now
    assert s.memory_depth == 0
    with Spool(small_disk.path, 10) as again:
        assert again.dropped == 6 and [r.payload for r in again.pending()][0] == "b2"


def test_memory_fallback_at_start_counts_as_memory_only(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    s = Spool(blocker / "state", 10)
    for i in range(3):
        s.put("t", str(i))
    assert s.memory_depth == 3 == s.depth
    s.close()
    assert s.memory_depth == 3  # what stop() reports as lost


def test_put_without_memory_refuses_when_the_disk_is_full(small_disk: SmallDisk) -> None:
    """For moving rows from another spool file: never downgrade a row from disk to memory."""
    s = Spool(small_disk.path, 100)
    s.put("t", "a")
    small_disk.fill()
    with pytest.raises(SpoolError):
        s.put("t", "b", memory_ok=False)
    assert s.depth == 1 and s.memory_depth == 0
    s.put("t", "c")  # the ordinary path still keeps it in memory
    with pytest.raises(SpoolError):  # and behind a memory row a disk write would break order
        s.put("t", "d", memory_ok=False)
    small_disk.free()
    assert s.put("t", "e", memory_ok=False).payload == "e"  # moves "c" to disk first
    assert [r.payload for r in s.pending()] == ["a", "c", "e"] and s.memory_depth == 0
    s.close()


def _damage_while_open(s: Spool, page: int) -> None:
    """Smash one page of an open spool's file (after a checkpoint put every row there) and drop
    the connection's page cache, so its next full read meets the damage: a real
    "database disk image is malformed" at run time, not at open."""
    assert s._conn is not None
    s._conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    with open(s.path, "r+b") as f:
        f.seek(4096 * page)
        f.write(os.urandom(4096))
    s._conn.execute("PRAGMA shrink_memory")


def test_a_spool_damaged_while_running_keeps_its_row_ids(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """The publisher holds ids of rows in flight; after a recovery an acknowledgement must still
    delete the row it was for, and new rows must come after the ones it has already seen."""
    s = Spool(tmp_path, 10_000)
    rows = {r.id: r.payload for r in (s.put("t", f"{i:05d}" + "x" * 200) for i in range(2000))}
    _damage_while_open(s, 40)
    with caplog.at_level(logging.ERROR):
        salvaged = s.pending()  # meets the damage: moved aside, rows salvaged, a fresh file
    assert s.corrupt_files == 1 and s.persistent and 1000 < len(salvaged) < 2000
    assert all(rows[r.id] == r.payload for r in salvaged)  # every row under its old id
    assert s.put("t", "new").id == 2001  # after every id handed out, not after the salvaged count
    in_flight = salvaged[-5:]
    for r in in_flight:  # their PUBACKs arrive
        assert s.ack(r.id)
    left = [r.payload for r in s.pending()]
    assert left[-1] == "new" and not {r.payload for r in in_flight} & set(left)
    assert len(left) == len(salvaged) - 5 + 1
    assert any("salvaged" in r.getMessage() for r in caplog.records)
    s.close()


def test_a_spool_damaged_on_a_full_disk_keeps_its_rows_in_memory(
    small_disk: SmallDisk, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """No fresh file can be made: the salvaged rows and new ones live in memory (counted as
    memory-only, so a stop reports them), instead of the spool closing for the rest of the run."""
    with Spool(tmp_path, 1000) as built:  # written where there is room, then moved onto the small disk
        for i in range(600):
            built.put("t", f"{i:03d}" + "x" * 40)
    shutil.copyfile(tmp_path / SPOOL_FILENAME, small_disk.path / SPOOL_FILENAME)
    s = Spool(small_disk.path, 1000)
    _damage_while_open(s, 5)
    small_disk.fill()
    with caplog.at_level(logging.ERROR):
        salvaged = s.pending()
    assert not s.persistent and 0 < len(salvaged) < 600
    assert s.put("t", "new").id == 601 and [r.payload for r in s.pending()][-1] == "new"
    assert s.memory_depth == s.depth == len(salvaged) + 1
    assert any("in memory only" in r.getMessage() for r in caplog.records)
    s.close()


def test_a_disk_that_fills_before_an_acknowledgement_is_reported(
    small_disk: SmallDisk, caplog: pytest.LogCaptureFixture
) -> None:
    """The usual order is put, publish, PUBACK: the first failed write can be an ack's. The
    ERROR line that says detections are now kept in memory must come all the same."""
    caplog.set_level(logging.INFO)
    s = Spool(small_disk.path, 100)
    s.retry_seconds = 0.0
    first = s.put("t", "a")
    small_disk.fill()
    assert s.ack(first.id)  # cannot be deleted now: remembered
    for i in range(3):
        s.put("t", f"b{i}")
    assert s.memory_depth == 3
    errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(errors) == 1 and "keeping detections in memory" in errors[0]
    small_disk.free()
    assert s.retry_disk(force=True)
    assert any("can be written again" in r.getMessage() for r in caplog.records)
    s.close()


def test_a_lowered_bound_drops_the_oldest_at_open_and_says_so(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with Spool(tmp_path, 300) as s:
        for i in range(300):
            s.put("t", str(i))
    with caplog.at_level(logging.WARNING), Spool(tmp_path, 100) as s:
        assert (s.depth, s.dropped) == (100, 200) and _msgs(s)[0] == "200"
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 1 and "dropped the oldest 200" in lines[0]
