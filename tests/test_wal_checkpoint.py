"""SQLite's WAL checkpoints run beside the group-commit writer, not inside its commits: a batch
of webhooks is not acknowledged late because its COMMIT had to copy the log back into the
database and wait for the disk."""
from __future__ import annotations

import threading
import time

from sqlalchemy import Connection, create_engine, text

from automations.db import FALLBACK_PAGES, make_engine
from automations.wal_checkpoint import WalCheckpointer
from automations.writer import BatchWriter

ROW = b"x" * 4000  # about one page each
ROWS = 2500  # well past SQLite's own default of 1,000 pages before a commit checkpoints


def insert_rows(writer: BatchWriter, n: int, per_unit: int = 50) -> None:
    def unit(conn: Connection) -> None:
        conn.execute(text("INSERT INTO blobs (data) VALUES (:d)"), [{"d": ROW}] * per_unit)

    for _ in range(n // per_unit):
        writer.submit(unit)


def make_db(tmp_path):
    path = tmp_path / "c.db"
    engine = make_engine(f"sqlite:///{path}")
    with engine.begin() as conn:
        conn.execute(text("CREATE TABLE blobs (id INTEGER PRIMARY KEY, data BLOB)"))
    return engine, path


def wal_frames(path) -> int:
    """Frames in the log, read from the file (a checkpoint never shrinks it; this test's
    database is fresh, so the log has not wrapped round)."""
    size = (path.parent / (path.name + "-wal")).stat().st_size
    return max(0, (size - 32) // (4096 + 24))


def checkpointer_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == "hookline-checkpoint"]


def test_the_writers_commits_leave_the_log_to_the_background_checkpoint(tmp_path):
    engine, path = make_db(tmp_path)
    writer = BatchWriter(engine, checkpoint_interval=3600)  # started, but it will not come round
    try:
        db_size = path.stat().st_size
        insert_rows(writer, ROWS)
        assert wal_frames(path) > 2000  # SQLite's default would have checkpointed at 1,000 pages
        assert path.stat().st_size == db_size  # nothing was copied back by a commit
        busy, log_frames, copied = writer._checkpointer.checkpoint()
        assert (busy, copied) == (0, log_frames) and log_frames > 2000
        assert path.stat().st_size > db_size + ROWS * 4000
    finally:
        writer.stop()
        engine.dispose()


def test_the_background_checkpoint_copies_the_log_back_while_the_writer_runs(tmp_path):
    engine, path = make_db(tmp_path)
    others = set(checkpointer_threads())  # other tests' apps, left running
    writer = BatchWriter(engine, checkpoint_interval=0.05)
    try:
        db_size = path.stat().st_size
        insert_rows(writer, ROWS)
        [mine] = set(checkpointer_threads()) - others
        deadline = time.monotonic() + 10
        while path.stat().st_size < db_size + ROWS * 4000 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert path.stat().st_size >= db_size + ROWS * 4000, "the background checkpoint never copied the log"
        with engine.connect() as conn:  # and the rows are all there, read from either file
            assert conn.execute(text("SELECT count(*) FROM blobs")).scalar_one() == ROWS
    finally:
        writer.stop()
        engine.dispose()
    assert not mine.is_alive()  # stopped with the writer


def test_every_connection_keeps_a_fallback_bound_on_the_log(tmp_path):
    """Should the checkpoint thread stop, a commit still checkpoints, only later."""
    engine, _path = make_db(tmp_path)
    try:
        with engine.connect() as conn:
            assert conn.exec_driver_sql("PRAGMA wal_autocheckpoint").scalar_one() == FALLBACK_PAGES
        assert FALLBACK_PAGES > 1000
    finally:
        engine.dispose()


def test_the_fallback_checkpoints_when_no_background_thread_runs(tmp_path):
    """A process writing through the engine without a writer (``hookline import``, say) still
    keeps its log bounded."""
    engine, path = make_db(tmp_path)
    try:
        db_size = path.stat().st_size
        for _ in range((FALLBACK_PAGES + 500) // 50):
            with engine.begin() as conn:
                conn.execute(text("INSERT INTO blobs (data) VALUES (:d)"), [{"d": ROW}] * 50)
        assert path.stat().st_size > db_size + FALLBACK_PAGES // 2 * 4096  # a commit checkpointed
        assert wal_frames(path) <= FALLBACK_PAGES + 100  # and the log stopped about there
    finally:
        engine.dispose()


def test_only_a_sqlite_file_gets_a_checkpoint_thread():
    memory = create_engine("sqlite://")
    postgres = create_engine("postgresql+psycopg://postgres@127.0.0.1:5432/none")  # never connects
    assert not WalCheckpointer.wanted(memory) and not WalCheckpointer.wanted(postgres)
    others = set(checkpointer_threads())
    writer = BatchWriter(memory)
    try:
        writer.submit(lambda conn: conn.execute(text("SELECT 1")).scalar_one())
        assert set(checkpointer_threads()) <= others
    finally:
        writer.stop()
        memory.dispose()
