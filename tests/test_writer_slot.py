"""The SQLite writer slot: writers in other processes queue on a file lock next to the
database instead of sleeping in SQLite's busy handler, and a dead holder never blocks."""
from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest
import sqlalchemy as sa

from automations.db import READ_ONLY, WriterSlot, for_reading, make_engine

HOLDER = textwrap.dedent("""
    import fcntl, os, sys, time
    fd = os.open(sys.argv[1], os.O_RDWR | os.O_CREAT, 0o600)
    fcntl.flock(fd, fcntl.LOCK_EX)
    print("held", flush=True)
    time.sleep(float(sys.argv[2]))
""")


def hold_in_another_process(lock_file: Path, seconds: float) -> subprocess.Popen:
    proc = subprocess.Popen([sys.executable, "-c", HOLDER, str(lock_file), str(seconds)],
                            stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None and proc.stdout.readline().strip() == "held"
    return proc


def test_a_writer_waits_for_another_process_and_goes_as_soon_as_it_is_done(tmp_path: Path) -> None:
    db = tmp_path / "hookline.db"
    holder = hold_in_another_process(Path(f"{db}.writer-lock"), 0.4)
    slot = WriterSlot(str(db))
    started = time.monotonic()
    assert slot.acquire(timeout=10)
    waited = time.monotonic() - started
    slot.release()
    holder.wait(5)
    assert 0.2 <= waited < 2  # it waited for the holder, then went without a long sleep


def test_a_writer_gives_up_at_its_timeout(tmp_path: Path) -> None:
    db = tmp_path / "hookline.db"
    holder = hold_in_another_process(Path(f"{db}.writer-lock"), 30)
    slot = WriterSlot(str(db))
    try:
        assert slot.acquire(timeout=0.2) is False
        assert slot.acquire(timeout=0.2) is False  # the thread lock was given back
    finally:
        holder.kill()
        holder.wait(5)
    # The abandoned waits are cleaned up when the holder goes: the slot works again at once.
    started = time.monotonic()
    assert slot.acquire(timeout=2)
    assert time.monotonic() - started < 1
    slot.release()


def test_a_killed_holder_never_blocks_the_others(tmp_path: Path) -> None:
    db = tmp_path / "hookline.db"
    holder = hold_in_another_process(Path(f"{db}.writer-lock"), 30)
    os.kill(holder.pid, signal.SIGKILL)
    holder.wait(5)
    slot = WriterSlot(str(db))
    assert slot.acquire(timeout=1)
    slot.release()


def test_two_slots_on_one_file_exclude_each_other(tmp_path: Path) -> None:
    first, second = WriterSlot(str(tmp_path / "x.db")), WriterSlot(str(tmp_path / "x.db"))
    assert first.acquire(timeout=1)
    assert second.acquire(timeout=0.1) is False
    first.release()
    assert second.acquire(timeout=1)
    second.release()


def test_in_memory_databases_need_no_file(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)  # a lock file named after ":memory:" would land here
    for database in (":memory:", "", None, "file:x?mode=memory&uri=true"):
        slot = WriterSlot(database)
        assert slot.acquire(timeout=1)
        slot.release()
    assert list(tmp_path.iterdir()) == []
    file_slot = WriterSlot(str(tmp_path / "x.db"))
    assert file_slot.acquire(timeout=1)
    file_slot.release()
    assert [p.name for p in tmp_path.iterdir()] == ["x.db.writer-lock"]


def test_a_reading_transaction_takes_no_slot_and_refuses_writes(tmp_path: Path) -> None:
    """Readers (GET pages, the runner's reads) run beside the writer; one that writes by
    mistake fails at once instead of taking SQLite's lock behind the slot's back."""
    engine = make_engine(f"sqlite:///{tmp_path / 'r.db'}", pool_size=1)
    with engine.begin() as conn:
        conn.execute(sa.text("CREATE TABLE t (v INTEGER)"))
    try:
        with engine.connect() as writer, for_reading(engine).connect() as reader:
            writer.begin()
            writer.execute(sa.text("INSERT INTO t VALUES (1)"))  # holds the slot, uncommitted
            assert reader.scalar(sa.text("SELECT count(*) FROM t")) == 0  # a snapshot, at once
            try:
                reader.execute(sa.text("INSERT INTO t VALUES (2)"))
            except sa.exc.OperationalError as exc:
                assert isinstance(exc.orig, sqlite3.OperationalError) and "readonly" in str(exc.orig)
            else:
                raise AssertionError("a write in a reading transaction went through")
            reader.rollback()
            writer.commit()
            reader.execution_options(**{READ_ONLY: False})  # the same DBAPI connection, now to write
            with reader.begin():
                reader.execute(sa.text("INSERT INTO t VALUES (3)"))
        with engine.connect() as conn:
            assert sorted(conn.scalars(sa.text("SELECT v FROM t"))) == [1, 3]
    finally:
        engine.dispose()


def test_the_slot_tells_who_holds_it_and_how_long_it_has_waited(tmp_path: Path) -> None:
    """What serve's watch over its runner child reads (web/runner_process.py): the process
    holding the lock (from /proc/locks; not the waiter's own queued request) and how long this
    process has been waiting."""
    if not Path("/proc/locks").exists():
        pytest.skip("the slot names its holders from Linux's /proc/locks; this system has none, so "
                    "serve's watch over its runner child does not run here either")
    db = tmp_path / "hookline.db"
    slot = WriterSlot(str(db))
    assert slot.holders() is None  # no lock file yet: nobody can hold it
    holder = hold_in_another_process(Path(f"{db}.writer-lock"), 1.0)
    assert slot.holders() == {holder.pid}
    assert slot.waited() == 0.0
    seen: list[tuple[float, set[int] | None]] = []

    def look() -> None:
        time.sleep(0.5)
        seen.append((slot.waited(), slot.holders()))

    looker = threading.Thread(target=look)
    looker.start()
    assert slot.acquire(timeout=10)
    looker.join()
    assert slot.holders() == {os.getpid()}
    assert slot.waited() == 0.0
    slot.release()
    holder.wait(5)
    [(waited, holders)] = seen
    assert 0.4 <= waited < 1.0 and holders == {holder.pid}  # this process's queued flock is not a holder
    assert slot.holders() == set()
