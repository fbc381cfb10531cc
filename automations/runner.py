"""The runner: a dispatcher thread that claims due runs and a thread pool that executes them.

APScheduler drives time (a periodic tick for due retries and for runs other processes
queued; lease renewal and a lease sweep; retention), the database decides what runs. A run
created in this process starts at once: the inbound endpoint calls :meth:`Runner.notify`
after its commit, so nothing waits for the next poll. On PostgreSQL a run queued by another
process does too: the runner LISTENs for the NOTIFY that process sends (automations/wakeup.py).

Leases: a run is claimed for LEASE_SECONDS, and every third of that the runner extends the
leases of all the runs it holds, in one statement, so a run that takes longer than a lease
(a slow receiver) is never taken back from under the live worker that executes it; a
worker that dies stops renewing, and its runs are taken back once their leases expire.
Stopping, the runner lets each run in flight finish its current step, then releases it at
that checkpoint instead of starting the next step.
"""
from __future__ import annotations

import logging
import os
import socket
import threading
import time
import uuid
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime
from functools import partial
from typing import Any

from apscheduler.schedulers.background import BackgroundScheduler
from sqlalchemy import Connection

from . import queue, retention, wakeup
from .core import Core
from .executor import LeaseLost, execute, read_claimed
from .writer import STARTED_GRACE, Abandoned

log = logging.getLogger("hookline.runner")

RENEW_JOB = "renew-leases"


def worker_id() -> str:
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


@dataclass(frozen=True)
class ClaimDue:
    """The dispatcher's claim, as a unit of the batch writer: the ids of up to ``limit`` due
    runs, leased to ``owner``. Their rows are read after the commit, outside the writer
    (:meth:`Runner.dispatch`): on SQLite its transaction holds the database's one write lock,
    which the other process's writer waits for."""

    owner: str
    limit: int
    now: datetime
    lease: float

    def __call__(self, conn: Connection) -> list[int]:
        return queue.claim_in(conn, self.owner, self.limit, self.now, self.lease)


class Runner:
    def __init__(self, core: Core, threads: int | None = None, prefetch: int = 2,
                 owner: str | None = None) -> None:
        """``owner``: the name this runner leases runs under (default: a fresh one); it must be
        unique among live runners."""
        self.core = core
        self.owner = owner or worker_id()
        self.threads = threads or core.runner_threads
        self.capacity = self.threads * prefetch  # claimed ahead so the pool never starves
        self.claim_timeout, self.claim_grace = 60.0, STARTED_GRACE  # how long a claim is waited for
        self._pool = ThreadPoolExecutor(self.threads, thread_name_prefix="hookline-run")
        self._wake = threading.Event()
        self._stopping = threading.Event()
        self._lock = threading.Lock()
        self._inflight: dict[int, Future] = {}
        self._started: set[int] = set()
        self._backlog = False
        self._dispatcher = threading.Thread(target=self._dispatch_loop, name="hookline-dispatch", daemon=True)
        self._scheduler = BackgroundScheduler(timezone="UTC")
        self._listener = wakeup.Listener(core.engine, self.notify) if core.wakes_other_processes else None

    # -- lifecycle -----------------------------------------------------------------------
    def start(self) -> Runner:
        recovered = self.core.writer.submit(partial(queue.recover_expired, now=self.core.clock.now()))
        if recovered:
            log.info("took back %d runs whose lease had expired", recovered)
        self._scheduler.add_job(self.notify, "interval", seconds=self.core.poll_interval,
                                id="tick", max_instances=1, coalesce=True)
        self._scheduler.add_job(self.renew_leases, "interval", seconds=self.renew_interval,
                                id=RENEW_JOB, max_instances=1, coalesce=True)
        self._scheduler.add_job(self.recover_leases, "interval", seconds=max(5, self.core.lease_seconds / 10),
                                id="recover-leases", max_instances=1, coalesce=True)
        if self.core.retention_days > 0:
            self._scheduler.add_job(self.purge_history, "interval", minutes=30, id="retention",
                                    max_instances=1, coalesce=True)
        self._scheduler.start()
        self._dispatcher.start()
        if self._listener is not None:
            self._listener.start()
        self.notify()
        return self

    def stop(self, timeout: float = 20.0) -> bool:
        """Stop claiming; let in-flight runs finish their current step within ``timeout`` (each
        is then released at its checkpoint, see ``execute``); release those not started. The
        leases of runs in flight are renewed until they are done. Returns whether every run
        finished in time; if not, those still going are queued again, and their threads, which
        the interpreter would wait for at exit, are left behind: the caller should exit with
        ``os._exit``."""
        timeout = max(0.0, timeout)
        deadline = time.monotonic() + timeout  # one bound for the whole stop
        self._stopping.set()
        self._wake.set()
        if self._listener is not None:
            self._listener.stop(timeout=0)  # a daemon thread: it ends within a second on its own
        if self._scheduler.running:  # only lease renewal goes on while runs drain
            for job in self._scheduler.get_jobs():
                if job.id != RENEW_JOB:
                    job.remove()
        if self._dispatcher.is_alive():
            self._dispatcher.join(timeout)
        with self._lock:
            pending = [rid for rid in self._inflight if rid not in self._started]
            futures = list(self._inflight.values())
        for f in futures:
            f.cancel()
        if pending:
            try:
                self.core.writer.submit(partial(queue.release, owner=self.owner, run_ids=pending,
                                                now=self.core.clock.now()))
            except ConnectionError as exc:  # the web process this runner writes through is gone
                log.warning("could not release %d claimed runs (%s); their leases will expire", len(pending), exc)
        done = threading.Event()
        threading.Thread(target=lambda: (self._pool.shutdown(wait=True), done.set()), daemon=True).start()
        finished = done.wait(max(0.0, deadline - time.monotonic()))
        with self._lock:
            finished = finished or not self._inflight  # a zero timeout on an idle runner
        if not finished:
            self._take_back_stuck(timeout)
        if self._scheduler.running:
            self._scheduler.shutdown(wait=False)
        return finished

    def _take_back_stuck(self, timeout: float) -> None:
        """Runs still in flight when the process is about to exit are queued again now, so the
        next start runs them at once instead of after their leases expire (LEASE_SECONDS, five
        minutes by default). Their attempt counts, as with an expired lease: the step under way
        may have reached its receiver. A late write from one of them is refused by the lease fence."""
        with self._lock:
            stuck = len(self._inflight)
        try:  # briefly: the process is expected to exit now
            n = self.core.writer.submit(partial(queue.take_back, owner=self.owner, now=self.core.clock.now()),
                                        timeout=5.0, grace=1.0)
        except Exception as exc:  # noqa: BLE001 - the database or the web process is gone or stalled
            log.warning("%d runs still in flight after %g s; could not queue them again (%s): their "
                        "leases will expire and be retaken", stuck, timeout, exc)
            return
        log.warning("%d runs still in flight after %g s (SHUTDOWN_SECONDS) were queued again: the next start "
                    "runs them again (the step each was in may have reached its receiver already), or ends "
                    "as dead those that were at their last attempt", n, timeout)

    def notify(self) -> None:
        self._wake.set()

    @property
    def state(self) -> str:
        """``running`` while its dispatcher claims runs, else ``stopped`` (for health checks)."""
        return "running" if self._dispatcher.is_alive() and not self._stopping.is_set() else "stopped"

    @property
    def renew_interval(self) -> float:
        """Seconds between lease renewals: a third of a lease, so two may fail or come late
        before a lease runs out."""
        return max(self.core.lease_seconds / 3, 0.05)

    def renew_leases(self) -> int:
        """Extend the leases of every run this runner holds (claimed or executing): one writer
        unit for all of them, nothing when idle."""
        with self._lock:
            ids = list(self._inflight)
        if not ids:
            return 0
        try:
            return self.core.writer.submit(partial(queue.renew, owner=self.owner, run_ids=ids,
                                                   now=self.core.clock.now(), lease_seconds=self.core.lease_seconds))
        except Exception as exc:  # noqa: BLE001 - the next renewal tries again: a lease has room for two
            log.warning("could not renew the leases of %d runs (%s: %s)", len(ids), type(exc).__name__, exc)
            return 0

    def recover_leases(self) -> int:
        with self._lock:
            keep = list(self._inflight)  # ours and being renewed: never taken back from under us
        n = self.core.writer.submit(partial(queue.recover_expired, now=self.core.clock.now(), keep=keep))
        if n:
            log.warning("took back %d runs whose worker stopped holding the lease", n)
            self.notify()
        return n

    def purge_history(self) -> dict[str, int]:
        totals = retention.purge(self.core.writer, self.core.clock.now(), self.core.retention_days)
        if any(totals.values()):
            log.info("retention: purged %(runs)d runs, %(events)d events, %(dedupe_keys)d delivery ids", totals)
        return totals

    # -- dispatching ---------------------------------------------------------------------
    def _dispatch_loop(self) -> None:
        while not self._stopping.is_set():
            self._wake.wait(timeout=max(self.core.poll_interval, 0.05) * 5)
            self._wake.clear()
            try:
                self.dispatch()
            except Exception:  # the database may be briefly unavailable: log and keep going
                log.exception("dispatch failed")
                self._stopping.wait(1.0)

    def dispatch(self) -> int:
        """Claim as many due runs as there is room for and hand them to the pool."""
        total = 0
        while not self._stopping.is_set():
            with self._lock:
                room = self.capacity - len(self._inflight)
            if room <= 0:
                return total
            now, lease = self.core.clock.now(), self.core.lease_seconds
            try:
                ids = self.core.writer.submit(ClaimDue(self.owner, room, now, lease),
                                              timeout=self.claim_timeout, grace=self.claim_grace)
            except Abandoned:
                raise  # withdrawn before it began: nothing was claimed
            except TimeoutError:
                self._release_orphans()  # it began, and may have leased runs we never heard of
                raise
            rows = read_claimed(self.core.read_engine, ids) if ids else {}
            for rid in ids:
                with self._lock:
                    self._inflight[rid] = self._pool.submit(self._run, rid, rows.get(rid))
            total += len(ids)
            self._backlog = len(ids) == room
            if len(ids) < room:
                return total
        return total

    def _release_orphans(self) -> None:
        """After a claim whose outcome never came: queue again whatever it leased to us
        (the writer runs this after the claim, FIFO), instead of leaving it to lease expiry."""
        with self._lock:
            keep = list(self._inflight)
        try:
            n = self.core.writer.submit(partial(queue.release_orphans, owner=self.owner, keep=keep,
                                                now=self.core.clock.now()))
        except Exception as exc:  # noqa: BLE001 - still stalled: the lease runs out instead
            log.warning("could not release runs of a claim that timed out (%s: %s); they are taken back "
                        "when their lease expires", type(exc).__name__, exc)
            return
        if n:
            log.warning("queued again %d runs a timed-out claim had leased to this runner", n)

    def _run(self, run_id: int, claimed: Any = None) -> None:
        with self._lock:
            if self._stopping.is_set():
                return
            self._started.add(run_id)
        try:
            execute(self.core, run_id, self.owner, claimed, self._stopping)
        except LeaseLost:
            log.warning("run %s: lease lost to another worker", run_id)
        except ConnectionError as exc:  # the writer of the web process this runner writes through is gone
            log.warning("run %s: its result could not be recorded (%s); it runs again once taken back",
                        run_id, exc)
        except Exception:
            log.exception("run %s: unexpected failure in the runner; its lease will expire and it "
                          "will be retried", run_id)
        finally:
            with self._lock:
                self._inflight.pop(run_id, None)
                self._started.discard(run_id)
                backlog = self._backlog
            if backlog:  # the last claim was cut short by lack of room: there may be more due
                self._wake.set()
