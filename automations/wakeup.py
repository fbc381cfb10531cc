"""Waking runners in other processes at once, on PostgreSQL (LISTEN/NOTIFY).

In one ``serve`` the web process wakes its runner directly (a call, or a pipe to its child).
Scale-out workers on PostgreSQL are other processes, often on other machines: without this
they find a run queued by a web process only at their next poll (``POLL_INTERVAL``, 1 s),
so each delivery waited half a second on average. Now a process that queues runs and has no
runner of its own (``serve --no-worker``, gunicorn) sends ``NOTIFY hookline_runs`` after its
commit and every runner listening on that channel claims at once, as n8n's queue mode does
through Redis, but with nothing more to run.

Notifications only hasten what polling does anyway: one lost while a connection is down
(or behind a pooler in transaction mode, where LISTEN does not work) delays that run until
the next poll, never more. So both sides treat the database's absence as a reason to wait
and reconnect, not to fail.
"""
from __future__ import annotations

import contextlib
import logging
import threading
import time
from abc import ABC, abstractmethod
from collections.abc import Callable
from typing import Any

from sqlalchemy import Engine

from .db import pg_tcp_settings

log = logging.getLogger("hookline.wakeup")

CHANNEL = "hookline_runs"
RETRY_SECONDS = (0.5, 1.0, 2.0, 5.0, 10.0, 30.0)  # between reconnection attempts
LIVENESS_SECONDS = 30.0  # a listener checks its connection this often (a dead peer sends nothing)


def supported(engine: Engine) -> bool:
    return engine.dialect.name == "postgresql"


def _connect(engine: Engine, role: str) -> Any:
    """A connection of its own, outside the engine's pool: it stays open for the process's
    life (a listener's must: notifications go to the session that listens), and an
    autocommit NOTIFY is delivered as soon as it runs. Same parameters as the engine's, named
    for ``pg_stat_activity`` unless the URL names it."""
    import psycopg

    cargs, cparams = engine.dialect.create_connect_args(engine.url)
    cparams.pop("context", None)  # SQLAlchemy's type adapters: nothing here needs them
    cparams.setdefault("application_name", f"hookline {role}")
    cparams.update(pg_tcp_settings(engine.url))  # the engine's connect_args are not in its URL
    return psycopg.connect(*cargs, **cparams, autocommit=True)


def _close(conn: Any) -> None:
    with contextlib.suppress(Exception):  # already broken: nothing to save
        conn.close()


class _Reconnecting(ABC):
    """The shared part of both sides: a daemon thread that keeps one connection, says once
    that it lost it (and once that it has it back), and waits longer between each attempt."""

    role = ""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._start_lock = threading.Lock()
        self._failures = 0
        self.conn: Any = None

    def start(self) -> None:
        """Once; again only if the thread died. Never after :meth:`stop`: a request finishing
        after its process's Core was closed must not start another thread."""
        with self._start_lock:  # started on first use: a forking server (gunicorn --preload) forks first
            if self._stop.is_set() or (self._thread is not None and self._thread.is_alive()):
                return
            self._thread = threading.Thread(target=self._loop, daemon=True,
                                            name=f"hookline-{self.role.replace(' ', '-')}")
            self._thread.start()

    def stop(self, timeout: float = 2.0) -> None:
        self._stop.set()
        self._interrupt()
        if self._thread is not None:
            self._thread.join(timeout)

    def _interrupt(self) -> None:
        pass

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                self.conn = _connect(self.engine, self.role)
                self._connected()
                if self._failures:
                    log.info("%s: connected to the database again", self.role)
                self._failures = 0
                self._serve(self.conn)
            except Exception as exc:  # noqa: BLE001 - polling covers the gap; keep trying
                if self._stop.is_set():
                    break
                if not self._failures:
                    log.warning("%s: %s: %s; runs are found by polling (POLL_INTERVAL) until it "
                                "reconnects", self.role, type(exc).__name__, exc)
                self._stop.wait(RETRY_SECONDS[min(self._failures, len(RETRY_SECONDS) - 1)])
                self._failures += 1
            finally:
                if self.conn is not None:
                    _close(self.conn)
                    self.conn = None

    def _connected(self) -> None:
        pass

    @abstractmethod
    def _serve(self, conn: Any) -> None:
        """Use the connection until it fails (raise) or :meth:`stop` is called (return)."""


class Broadcaster(_Reconnecting):
    """Sends ``NOTIFY`` for a process that queues runs (the web tier). :meth:`notify` never
    blocks: it sets a flag, and the thread sends one NOTIFY for however many calls came in
    while it sent the last one, so a burst of webhooks costs a few round trips, not one each."""

    role = "wake-up sender"

    def __init__(self, engine: Engine) -> None:
        super().__init__(engine)
        self._pending = threading.Event()

    def notify(self) -> None:
        self._pending.set()
        if self._thread is None or not self._thread.is_alive():
            self.start()

    def _interrupt(self) -> None:
        self._pending.set()

    def _serve(self, conn: Any) -> None:
        while True:
            self._pending.wait()
            if self._stop.is_set():
                return
            self._pending.clear()
            try:
                conn.execute(f"NOTIFY {CHANNEL}")
            except Exception:
                self._pending.set()  # found dead only now: sent after reconnecting
                raise


class Listener(_Reconnecting):
    """Calls ``on_wake`` for each NOTIFY on the channel, in a runner's process. Also once on
    every (re)connection: notifications sent while it was not listening are lost, and the
    runs they announced are due now."""

    role = "wake-up listener"

    def __init__(self, engine: Engine, on_wake: Callable[[], None]) -> None:
        super().__init__(engine)
        self.on_wake = on_wake
        self.listening = threading.Event()  # set while LISTEN is in force (tests wait for it)

    def _connected(self) -> None:
        self.conn.execute(f"LISTEN {CHANNEL}")
        self.listening.set()
        self.on_wake()

    def _serve(self, conn: Any) -> None:
        try:
            checked = time.monotonic()
            while not self._stop.is_set():
                for _ in conn.notifies(timeout=1.0):
                    self.on_wake()
                    if self._stop.is_set():
                        return
                if time.monotonic() - checked >= LIVENESS_SECONDS:
                    conn.execute("SELECT 1")  # raises if the server or the network dropped us
                    checked = time.monotonic()
        finally:
            self.listening.clear()
