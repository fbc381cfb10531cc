"""SQLite's WAL checkpoints, taken off the writer's commits.

In WAL mode every commit appends pages to ``<database>-wal``, and SQLite copies them back into
the database file (a *checkpoint*) once the log passes ``wal_autocheckpoint`` pages (1,000 by
default). It does that inside the COMMIT that crossed the line, so that one commit also copies
the pages and, with ``synchronous=NORMAL``, waits for two ``fsync`` calls. For the group-commit
writer that is a whole batch of webhooks acknowledged late: storing batches of 8 back to back
on one thread, the commit's p99 was 4.3–5.5 ms with the automatic checkpoint and 1.1 ms without
it (p50 0.5 ms either way), and at 1,000 webhooks/s about one webhook batch in a hundred paid it.

So a process that writes through a :class:`~automations.writer.BatchWriter` runs a
:class:`WalCheckpointer` beside it: a thread of its own, with a connection of its own, that
runs ``PRAGMA wal_checkpoint(PASSIVE)`` every ``interval`` seconds. A passive checkpoint takes
no write lock: commits go on while it copies, and the thread waits for the disk with the GIL
released. Every connection keeps an automatic checkpoint at FALLBACK_PAGES (:mod:`.db` sets it),
so should this thread stop or fall behind, the log is still bounded: the writer pays for the
checkpoint again, as it did before, only later.

Several processes on one database (``serve --no-worker`` beside ``worker``) each run one; two
passive checkpoints at once are harmless (one finds the other busy and does nothing).
"""
from __future__ import annotations

import logging
import threading
from typing import Any

from sqlalchemy import Engine

from .db import FALLBACK_PAGES, is_file_database

log = logging.getLogger("hookline.checkpoint")

CHECKPOINT_INTERVAL = 1.0  # seconds between passive checkpoints


class WalCheckpointer:
    """Passive checkpoints of one SQLite database, every ``interval`` seconds, in a daemon
    thread. Started by :meth:`start` (nothing happens for a database without a file)."""

    def __init__(self, engine: Engine, interval: float = CHECKPOINT_INTERVAL) -> None:
        self.engine = engine
        self.interval = interval
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._conn: Any = None  # a pooled DBAPI connection, this thread's for its life
        self._failing = False

    @staticmethod
    def wanted(engine: Engine) -> bool:
        """Whether ``engine`` is a SQLite database in a file (where WAL mode applies)."""
        return engine.dialect.name == "sqlite" and is_file_database(engine.url.database)

    def start(self) -> None:
        if self._thread is None and self.wanted(self.engine):
            self._stop.clear()
            self._thread = threading.Thread(target=self._loop, name="hookline-checkpoint", daemon=True)
            self._thread.start()

    def stop(self) -> None:
        thread, self._thread = self._thread, None
        if thread is not None:
            self._stop.set()
            thread.join(10)

    def checkpoint(self) -> tuple[int, int, int]:
        """One passive checkpoint: (1 if another checkpoint was running, frames in the log,
        frames copied back), as ``PRAGMA wal_checkpoint`` reports them."""
        if self._conn is None:
            self._conn = self.engine.raw_connection()
        cursor = self._conn.cursor()
        try:
            cursor.execute("PRAGMA wal_checkpoint(PASSIVE)")
            busy, log_frames, copied = cursor.fetchone()
        finally:
            cursor.close()
        return int(busy), int(log_frames), int(copied)

    def _loop(self) -> None:
        try:
            while not self._stop.wait(self.interval):
                try:
                    self.checkpoint()
                except Exception:  # the fallback checkpoint bounds the log meanwhile
                    if not self._failing:
                        log.warning("background WAL checkpoint failed; commits checkpoint every "
                                    "%d pages until it works again", FALLBACK_PAGES, exc_info=True)
                    self._failing = True
                    self._drop_connection()
                else:
                    if self._failing:
                        log.info("background WAL checkpoint works again")
                    self._failing = False
        finally:
            self._drop_connection()

    def _drop_connection(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            try:
                conn.close()
            except Exception:  # a broken connection: the pool discards it
                log.debug("closing the checkpoint connection failed", exc_info=True)
