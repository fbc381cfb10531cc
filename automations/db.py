"""Engine setup shared by the web app and the worker.

SQLite (the embedded default) runs in WAL mode and every transaction starts with
``BEGIN IMMEDIATE``: a transaction that reads and then writes can never fail half-way with
``SQLITE_BUSY_SNAPSHOT``. Writers queue for a :class:`WriterSlot` instead of spinning in
SQLite's busy handler (which sleeps in steps of up to 100 ms and ruins tail latency): a lock
for the threads of this process, and an advisory file lock next to the database for the
other processes (``serve --no-worker`` beside ``worker``s). SQLite stays the arbiter; the
slot only makes writers wait their turn promptly. ``busy_timeout`` remains the fallback.

Transactions that only read (``READ_ONLY`` in the execution options: the runner's reads, the
UI's GET pages) start with a plain ``BEGIN`` and skip the slot: WAL lets them read a snapshot
while writers commit, so a page being rendered never holds up a webhook. They run with
``PRAGMA query_only``, so a write in one fails loudly instead of taking SQLite's lock behind
the slot's back.
"""
from __future__ import annotations

import fcntl
import json
import os
import queue
import sqlite3
import threading
import time
from collections.abc import Callable
from typing import Any

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session, sessionmaker

from .jsonable import finite, json_default

READ_ONLY = "hookline_read_only"
LOCK_TIMEOUT = 30.0


def is_sqlite(url_or_engine: Any) -> bool:
    return str(getattr(url_or_engine, "url", url_or_engine)).startswith("sqlite")


PG_POOL_KEPT, PG_POOL_MAX = 5, 15  # per process; see engine_options
# libpq settings for every PostgreSQL connection, unless the database URL sets its own: a peer
# gone without a word (a partition, a failover that drops packets) is found within about a
# minute, where a statement would otherwise wait for the kernel's retransmission timeout (~15
# min) with the writer, and every webhook behind it, stuck. The user timeout counts only data
# the server has not acknowledged, so a long query is not cut short.
PG_TCP_SETTINGS = {"keepalives": 1, "keepalives_idle": 30, "keepalives_interval": 10,
                   "keepalives_count": 3, "tcp_user_timeout": 30_000}


def pg_tcp_settings(url: Any) -> dict[str, Any]:
    """PG_TCP_SETTINGS less those the URL's query sets."""
    query = make_url(url).query
    return {k: v for k, v in PG_TCP_SETTINGS.items() if k not in query}


def dumps_json(value: Any) -> str:
    """The JSON columns' encoder: a step's recorded input or output that holds a date or a
    Decimal is stored in its JSON form (see automations/jsonable.py), where the default
    encoder raised after the step's request was sent, and the run was sent again at each
    lease expiry. So is a NaN or an infinity (``{{ x | float }}`` of "nan"), which
    PostgreSQL's json refuses: as the text "NaN", "Infinity" or "-Infinity"."""
    try:
        return _JSON.encode(value)
    except ValueError:  # a float JSON cannot hold (a circular structure cannot come from a template)
        return _JSON.encode(finite(value))


# One, as json.dumps keeps one: building an encoder per call costs more than most values.
_JSON = json.JSONEncoder(default=json_default, allow_nan=False)


def engine_options(url: str, pool_size: int = 20) -> dict[str, Any]:
    """Options for ``create_engine`` (also handed to Flask-SQLAlchemy)."""
    if is_sqlite(url):
        return {
            "connect_args": {"check_same_thread": False, "timeout": 30},
            "pool_size": pool_size,
            "max_overflow": 20,
            "json_serializer": dumps_json,
        }
    # PostgreSQL: connections are a server-wide budget (max_connections, 100 by default) that
    # every web and worker process shares, and they stay open. A process's threads mostly write
    # through its one writer and read briefly, so it keeps at most PG_POOL_KEPT connections and
    # opens at most PG_POOL_MAX under a burst (threads beyond wait their turn): sized by thread
    # count, three workers and a web process used 90+ connections and the next was refused.
    kept = min(pool_size, PG_POOL_KEPT)
    return {"pool_size": kept, "max_overflow": PG_POOL_MAX - kept, "pool_pre_ping": True,
            "json_serializer": dumps_json, "connect_args": pg_tcp_settings(url)}


class WriterSlot:
    """The right to write to one SQLite file. ``acquire`` takes this process's thread lock,
    then an exclusive ``flock`` on ``<database>.writer-lock`` (opened per transaction and
    closed on release, so a killed process never leaves it held). When another process holds
    it, a helper thread blocks in ``flock`` so the kernel wakes us the moment it is free
    (polling would add up to its interval to every hand-over), while the caller waits no
    longer than its timeout."""

    def __init__(self, database: str | None) -> None:
        self._lock = threading.Lock()
        self._path = f"{database}.writer-lock" if _is_file(database) else None
        self._fd: int | None = None
        self._waits: queue.SimpleQueue[_FlockWait] | None = None
        self._waiting_since: float | None = None  # monotonic start of a wait for another process

    def waited(self) -> float:
        """How long this process has been waiting for another process to let go of the slot
        (0 when it is not waiting): lets a supervisor spot a stalled holder."""
        since = self._waiting_since
        return 0.0 if since is None else max(time.monotonic() - since, 0.0)

    def holders(self) -> set[int] | None:
        """The ids of the processes holding the slot's file lock now, from Linux's /proc/locks;
        None where that cannot be read (another system, no lock file yet)."""
        if self._path is None:
            return None
        try:
            st = os.stat(self._path)
            with open("/proc/locks", encoding="ascii", errors="replace") as fh:
                table = fh.read()
        except OSError:
            return None
        return _flock_holders(table, st.st_dev, st.st_ino)

    def acquire(self, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        if not self._lock.acquire(timeout=timeout):
            return False
        if self._path is None:
            return True
        try:
            fd = os.open(self._path, os.O_RDWR | os.O_CREAT, 0o600)
        except OSError:  # a read-only folder: SQLite's busy handler still arbitrates
            return True
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            self._waiting_since = time.monotonic()
            try:
                got = self._wait(fd, deadline - time.monotonic())
            finally:
                self._waiting_since = None
            if not got:
                self._lock.release()
                return False
        self._fd = fd
        return True

    def release(self) -> None:
        fd, self._fd = self._fd, None
        if fd is not None:
            os.close(fd)  # closing drops the flock
        self._lock.release()

    def _wait(self, fd: int, timeout: float) -> bool:
        if self._waits is None:
            self._waits = queue.SimpleQueue()
            threading.Thread(target=_flock_waiter, args=(self._waits,), name="hookline-writer-lock",
                             daemon=True).start()
        wait = _FlockWait(fd)
        self._waits.put(wait)
        if wait.done.wait(max(timeout, 0.0)):
            return True
        with wait.guard:
            if wait.done.is_set():  # got it just as we gave up
                return True
            wait.abandoned = True  # the waiter closes the descriptor when it gets the lock
        return False


class _FlockWait:
    def __init__(self, fd: int) -> None:
        self.fd = fd
        self.done = threading.Event()
        self.guard = threading.Lock()
        self.abandoned = False


def _flock_waiter(waits: queue.SimpleQueue[_FlockWait]) -> None:
    while True:
        wait = waits.get()
        try:
            fcntl.flock(wait.fd, fcntl.LOCK_EX)  # releases the GIL while it blocks
        except OSError:  # treat as acquired: SQLite's busy handler still arbitrates
            pass
        with wait.guard:
            if wait.abandoned:
                os.close(wait.fd)
            else:
                wait.done.set()


def _flock_holders(table: str, dev: int, inode: int) -> set[int]:
    """The processes holding a ``flock`` on the file (``dev``, ``inode``), read from the text
    of /proc/locks (``1: FLOCK  ADVISORY  WRITE 4242 08:01:1234 0 EOF``; waiters' lines carry
    ``->`` and are skipped)."""
    file_id = f"{os.major(dev):02x}:{os.minor(dev):02x}:{inode}"
    pids: set[int] = set()
    for line in table.splitlines():
        fields = line.split()
        if len(fields) >= 6 and fields[1] == "FLOCK" and fields[5] == file_id and fields[4].isdigit():
            pids.add(int(fields[4]))
    return pids


def writer_slot(engine: Engine) -> WriterSlot | None:
    """The engine's :class:`WriterSlot` (SQLite file databases configured here), else None."""
    return getattr(engine.dialect, "_hookline_writer_slot", None)


def _is_file(database: str | None) -> bool:
    return bool(database) and database != ":memory:" and not str(database).startswith("file:")


def configure_engine(engine: Engine) -> Engine:
    """Install SQLite pragmas and transaction handling. Idempotent; no-op elsewhere."""
    if not is_sqlite(engine) or getattr(engine.dialect, "_hookline_configured", False):
        return engine
    engine.dialect._hookline_configured = True  # type: ignore[attr-defined]
    write_lock = WriterSlot(engine.url.database)
    engine.dialect._hookline_writer_slot = write_lock  # type: ignore[attr-defined]
    holders: dict[int, int] = {}  # id() of the DBAPI connection holding write_lock → thread id
    readers: set[int] = set()  # id() of the DBAPI connections in a read-only transaction

    def release(conn: Any) -> None:
        key = id(getattr(conn, "dbapi_connection", conn))  # pool proxy or raw DBAPI connection
        if holders.pop(key, None) is not None:
            write_lock.release()

    def end_read(conn: Any) -> None:
        dbapi_conn = getattr(conn, "dbapi_connection", conn)  # pool proxy or raw DBAPI connection
        if id(dbapi_conn) in readers:
            readers.discard(id(dbapi_conn))
            dbapi_conn.execute("PRAGMA query_only=OFF")  # the pooled connection may write next time

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn: Any, _record: Any) -> None:
        dbapi_conn.isolation_level = None  # autocommit at driver level; we issue BEGIN ourselves
        for pragma in ("journal_mode=WAL", "synchronous=NORMAL", "foreign_keys=ON", "busy_timeout=30000"):
            dbapi_conn.execute(f"PRAGMA {pragma}")

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Any) -> None:
        dbapi_conn = conn.connection.dbapi_connection
        if conn.get_execution_options().get(READ_ONLY):
            dbapi_conn.execute("PRAGMA query_only=ON")  # a write here fails rather than upgrading
            readers.add(id(dbapi_conn))
            dbapi_conn.execute("BEGIN")  # a reader never upgrades, so WAL lets it run beside writers
            return
        if threading.get_ident() in holders.values():
            # This thread already writes through another connection: taking the lock would
            # deadlock. Let SQLite's busy timeout turn it into an error instead.
            dbapi_conn.execute("BEGIN IMMEDIATE")
            return
        if not write_lock.acquire(LOCK_TIMEOUT):
            raise sqlite3.OperationalError(f"database is locked (no writer slot after {LOCK_TIMEOUT:.0f} s)")
        holders[id(dbapi_conn)] = threading.get_ident()
        try:
            dbapi_conn.execute("BEGIN IMMEDIATE")
        except BaseException:
            release(dbapi_conn)
            raise

    @event.listens_for(engine, "close")
    def _on_close(dbapi_conn: Any, _record: Any) -> None:
        release(dbapi_conn)
        readers.discard(id(dbapi_conn))

    @event.listens_for(engine, "invalidate")
    def _on_invalidate(dbapi_conn: Any, _record: Any, _exc: Any) -> None:
        release(dbapi_conn)
        readers.discard(id(dbapi_conn))

    dialect = engine.dialect
    orig_commit, orig_rollback = dialect.do_commit, dialect.do_rollback

    def do_commit(dbapi_conn: Any) -> None:
        try:
            orig_commit(dbapi_conn)
        finally:
            release(dbapi_conn)
            end_read(dbapi_conn)

    def do_rollback(dbapi_conn: Any) -> None:  # also called by the pool's reset-on-return
        try:
            orig_rollback(dbapi_conn)
        finally:
            release(dbapi_conn)
            end_read(dbapi_conn)

    dialect.do_commit = do_commit  # type: ignore[method-assign]
    dialect.do_rollback = do_rollback  # type: ignore[method-assign]
    return engine


def for_reading(engine: Engine) -> Engine:
    """``engine`` for transactions that only read (on SQLite: no writer slot, see above); the
    same object for every call, so a session keeps one connection per bind."""
    cached = engine.__dict__.get("_hookline_read_only")
    if cached is None:
        cached = engine.__dict__["_hookline_read_only"] = engine.execution_options(**{READ_ONLY: True})
    return cached


def make_engine(url: str, pool_size: int = 20) -> Engine:
    return configure_engine(create_engine(url, **engine_options(url, pool_size)))


def make_session_factory(engine: Engine, read_only: bool = False) -> Callable[[], Session]:
    """Sessions for the engine. ``read_only`` sessions must not write: on SQLite they skip the
    writer lock and run concurrently with writers (WAL snapshot reads)."""
    return sessionmaker(bind=for_reading(engine) if read_only else engine, expire_on_commit=False)
