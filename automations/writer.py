"""Group commit: the small write transactions of many threads become one.

Every acknowledged webhook and every step result is a tiny transaction. Committed one by
one, they queue on SQLite's single writer (and each holder is slowed further by the GIL);
committed together, one COMMIT serves a whole batch. Callers block until *their* work is
committed, so "acknowledge only after commit" still holds. If one unit fails, the batch is
rolled back and every unit is run again alone, so only the failing one fails (units must
therefore be plain database work that can be re-run).

A unit may also be *batchable*: an object with a ``batch_key`` and a ``run_many(conn,
units)`` that does the work of several units with the same key in a few statements
(executing a statement costs more than its rows). Alone, or when its batch is re-run unit
by unit after a failure, it is simply called. Batchable units must not depend on each
other across keys: between two plain units (which keep their place, so work queued before
a plain unit is done before it), the units of each key run together, in their order of
arrival. Each caller has one unit in flight at a time (``submit`` blocks), so no run's two
writes ever share a batch.

Callers must not hold a write transaction of their own while they wait (they would wait
for the writer while the writer waits for them).

A caller that stops waiting (its timeout: the database is stalled, say another program
holds SQLite's write lock) withdraws its unit if the unit's batch has not begun, so it never
runs later behind the caller's back (a webhook answered 503 stored anyway, a claim leasing
runs to a runner that gave up on it): the writer thread *starts* each unit only once its
batch's transaction has begun (on SQLite: holds the write lock), one atomic step per unit
(:meth:`Waiter.start`), and skips, reporting nothing, those whose caller gave up first. A
caller whose unit had begun cannot know whether it will commit, so it waits for the outcome
STARTED_GRACE seconds more, then gives up not knowing (a plain ``TimeoutError``; a withdrawn
unit raises :class:`Abandoned`, also a ``TimeoutError``).

Under load (the last batch had more than one unit) the writer waits GATHER_SECONDS before
it takes a batch, so the units already on their way join it: bigger batches cost less per
unit (e2e, three interleaved pairs: 12 % more acks, 4 % more deliveries, 5 % less CPU per
webhook). A lone request (the last batch had one unit) is committed at once.

Units marked ``urgent`` (a stored webhook: its sender waits on the line) are committed in a
transaction of their own before the rest of their batch, so an acknowledgement does not wait
for the run results and claims that queued beside it. It costs one more COMMIT per mixed
batch. Open loop at 1,500 webhooks/s, three interleaved pairs: ack p99 25–33 → 17–23 ms,
deliveries the same; closed loop, two pairs: acks +4 and +10 %, deliveries −2 %. (Measured
when the runner child's writes went through the web process's writer; they still meet in one
writer with ``--no-runner-process``.) Webhooks come only from request threads, each
independent of the units queued before it, so moving them ahead changes no outcome.

The writer thread keeps one connection checked out for its life instead of taking one from
the pool per batch: the checkout and its return were a fifth of the writer's busy time,
and every Python step it takes there competes for the GIL with the threads it serves. A
connection a batch failed on is given back to the pool (which resets or discards it) and the
next batch checks out a fresh one.
"""
from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable
from typing import Any, TypeVar

from sqlalchemy import Connection, Engine
from sqlalchemy.exc import SQLAlchemyError

log = logging.getLogger("hookline.writer")

T = TypeVar("T")
GATHER_SECONDS = 0.0002  # 0.5 and 1 ms measured the same; the shortest adds the least latency
STARTED_GRACE = 10.0  # how much longer a caller waits for a unit that began before its timeout
Work = Callable[[Connection], Any]


class BatchWriter:
    def __init__(self, engine: Engine, max_batch: int = 256) -> None:
        self.engine = engine
        self.max_batch = max_batch
        self._queue: queue.SimpleQueue[tuple[Work, Waiter] | None] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._start_lock = threading.Lock()
        self._conn: Connection | None = None  # the writer thread's own, between batches
        self._failing = False  # the last batch failed (a stalled database?): drop given-up units first

    def submit(self, work: Callable[[Connection], T], timeout: float = 60.0,
               grace: float = STARTED_GRACE) -> T:
        """Run ``work(conn)`` inside the next batch; return its result once committed. If it
        has not begun within ``timeout`` it is withdrawn and :class:`Abandoned` raised (it will
        never run); if it had begun, the outcome is waited for ``grace`` seconds more."""
        waiter = Waiter()
        if self._thread is None:
            self._start()
        self._queue.put((work, waiter))
        return waiter.result(timeout, grace)

    def _start(self) -> None:
        with self._start_lock:
            if self._thread is None:
                self._thread = threading.Thread(target=self._loop, name="hookline-writer", daemon=True)
                self._thread.start()

    def stop(self) -> None:
        if self._thread is not None:
            self._queue.put(None)
            self._thread.join(10)
            self._thread = None

    def _loop(self) -> None:
        try:
            self._serve()
        finally:
            self._drop_connection()

    def _serve(self) -> None:
        busy = False
        while True:
            item = self._queue.get()
            if item is None:
                return
            batch = [item]
            if busy:  # under load, let the units on their way join this batch
                time.sleep(GATHER_SECONDS)
            while len(batch) < self.max_batch:
                try:
                    nxt = self._queue.get_nowait()
                except queue.Empty:
                    break
                if nxt is None:
                    self._queue.put(None)  # stop after this batch
                    break
                batch.append(nxt)
            busy = len(batch) > 1
            if self._failing:  # the database may be stalled: do not wait on it for units given up
                batch = [item for item in batch if not item[1].gave_up()]
                if not batch:
                    continue
            urgent, rest = [], []
            for item in batch:
                (urgent if getattr(item[0], "urgent", False) else rest).append(item)
            if urgent and rest:  # someone is on the line: answer them first
                self._commit(urgent)
                batch = rest
            self._commit(batch)

    def _commit(self, batch: list[tuple[Work, Waiter]]) -> None:
        started: list[tuple[Work, Waiter]] | None = None
        try:
            conn = self._connection()
            with conn.begin():
                # The batch has begun: from here on its callers wait for the outcome. Units
                # whose caller already gave up are skipped, and nothing is reported for them.
                started = [item for item in batch if item[1].start()]
                results = run_units(conn, [work for work, _c in started])
        except Exception:  # noqa: BLE001 - one unit failed: run each alone so only it fails
            self._failing = True
            self._drop_connection()
            if started is None:  # it failed before it began (connecting, BEGIN): nothing started
                for work, completion in batch:
                    if not completion.gave_up():
                        self._commit_one(work, completion, begun=False)
            else:
                for work, completion in started:
                    self._commit_one(work, completion, begun=True)
            return
        self._failing = False
        for (_w, completion), result in zip(started, results, strict=True):
            completion.set_result(result)

    def _commit_one(self, work: Work, completion: Waiter, begun: bool) -> None:
        """``work`` in a transaction of its own; ``begun``: the unit was started already (in a
        batch that failed), so its caller waits for this outcome."""
        try:
            conn = self._connection()
            with conn.begin():
                if not begun and not completion.start():
                    return  # its caller gave up while this transaction was beginning
                begun = True
                result = work(conn)
        except Exception as exc:  # noqa: BLE001 - handed to the caller
            self._drop_connection()
            if begun or completion.start():  # BEGIN failed: fail it, unless given up meanwhile
                completion.set_exception(exc)
        else:
            completion.set_result(result)

    def _connection(self) -> Connection:
        if self._conn is None:
            self._conn = self.engine.connect()
        return self._conn

    def _drop_connection(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            try:
                conn.close()  # back to the pool, which resets it (or discards it if it broke)
            except SQLAlchemyError:
                log.warning("closing the writer's connection failed", exc_info=True)


class Abandoned(TimeoutError):
    """The writer did not begin the unit before its caller stopped waiting: it was withdrawn
    and will never run (nothing of it is committed)."""


class Waiter:
    """A unit's outcome, between the writer thread and the one caller of :meth:`BatchWriter.submit`
    waiting for it: one lock, released when the outcome is in, and one taken by whichever comes
    first, the writer starting the unit or the caller giving up on it. Not a ``Future``: a
    condition variable, a lock per wait and notify_all per unit cost the writer thread about 5 %
    of its time. The writer thread's methods (``start``, ``gave_up``, ``set_…``) never raise or
    block."""

    __slots__ = ("_claim", "_done", "_error", "_value")

    def __init__(self) -> None:
        self._done = threading.Lock()
        self._done.acquire()
        self._claim = threading.Lock()
        self._value: Any = None
        self._error: BaseException | None = None

    def start(self) -> bool:
        """The unit's transaction has begun: True to run it, False if its caller gave up (it
        is then skipped and neither ``set_…`` is called)."""
        return self._claim.acquire(False)

    def gave_up(self) -> bool:
        """A cheap look, to skip a unit not yet started without waiting for the database."""
        return self._claim.locked()  # asked only before the writer starts the unit

    def set_result(self, value: Any) -> None:
        self._value = value
        self._done.release()

    def set_exception(self, exc: BaseException) -> None:
        self._error = exc
        self._done.release()

    def wait(self, timeout: float) -> bool:
        """Whether the outcome came within ``timeout``."""
        return self._done.acquire(timeout=max(timeout, 0.0))

    def outcome(self) -> Any:
        """The result, or the unit's exception raised (once :meth:`wait` said it is in)."""
        if self._error is not None:
            raise self._error
        return self._value

    def result(self, timeout: float, grace: float = STARTED_GRACE) -> Any:
        """The outcome within ``timeout``; past it, the unit is withdrawn (:class:`Abandoned`)
        unless it has begun, whose outcome is then waited for ``grace`` seconds more."""
        if self._done.acquire(timeout=timeout):
            return self.outcome()
        if self._claim.acquire(False):  # the writer will skip it
            raise Abandoned(f"the writer did not commit this within {timeout:g} s: withdrawn before it "
                            "began, it will not run")
        if self._done.acquire(timeout=max(grace, 0.0)):
            return self.outcome()
        raise TimeoutError(f"the writer began this but did not commit it within {timeout + grace:g} s; "
                           "it may still commit")


def run_units(conn: Connection, works: list[Work]) -> list[Any]:
    """Every unit's result, in order. Between two plain units, the batchable units of each key
    run together, whatever their order of arrival (webhooks and run results interleave)."""
    results: list[Any] = [None] * len(works)
    i = 0
    while i < len(works):
        if getattr(works[i], "batch_key", None) is None:
            results[i] = works[i](conn)
            i += 1
            continue
        groups: dict[Any, list[int]] = {}
        while i < len(works) and (key := getattr(works[i], "batch_key", None)) is not None:
            groups.setdefault(key, []).append(i)
            i += 1
        for key, indexes in groups.items():
            if len(indexes) == 1:
                results[indexes[0]] = works[indexes[0]](conn)
                continue
            done = works[indexes[0]].run_many(conn, [works[k] for k in indexes])  # type: ignore[attr-defined]
            if len(done) != len(indexes):
                raise RuntimeError(f"{key}: run_many returned {len(done)} results for {len(indexes)} units")
            for k, result in zip(indexes, done, strict=True):
                results[k] = result
    return results
