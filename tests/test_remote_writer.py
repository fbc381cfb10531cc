"""The runner child's writes through the web process's writer: results and exceptions come
back over the socket pair, units that cannot be pickled stay local, and a vanished web
process fails pending writes instead of hanging them."""
from __future__ import annotations

import pickle
import socket
import struct
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta

import pytest
from sqlalchemy import Connection, create_engine, select, text, update

from automations import queue, recipes, retention
from automations.executor import LeaseLost
from automations.inbound import store_many
from automations.models import Run, StepRun
from automations.remote_writer import ChannelClosed, RemoteWriter, WriterService
from automations.runner import ClaimDue
from automations.writer import BatchWriter
from tests.test_writer import _made, _unit, finished_write
from web.extensions import db


class Insert:
    """Inserts one row and says which thread committed it."""

    def __init__(self, value: int) -> None:
        self.value = value

    def __call__(self, conn: Connection) -> tuple[int, str]:
        conn.execute(text("INSERT INTO t (v) VALUES (:v)"), {"v": self.value})
        return self.value, threading.current_thread().name


class Unreturnable:
    """Commits, but its result cannot be pickled back."""

    def __call__(self, conn: Connection) -> object:
        conn.execute(text("INSERT INTO t (v) VALUES (99)"))
        return threading.Lock()


class RaisesLocal:
    """Fails with an exception that cannot be pickled back (its class is local)."""

    def __call__(self, conn: Connection) -> None:
        class Local(Exception):
            pass
        raise Local("boom")


@pytest.fixture
def channel(tmp_path) -> Iterator[tuple[RemoteWriter, BatchWriter, BatchWriter]]:
    """A remote writer (the child's side) served by a real BatchWriter (the parent's side) on
    one SQLite file, as ``serve --runner-process`` wires them."""
    engine = create_engine(f"sqlite:///{tmp_path / 'w.db'}")
    with engine.begin() as conn:
        conn.execute(text("CREATE TABLE t (v INTEGER UNIQUE)"))
    parent_writer, child_local = BatchWriter(engine), BatchWriter(engine)
    ours, theirs = socket.socketpair()
    service = WriterService(ours, parent_writer).start()
    remote = RemoteWriter(theirs, local=child_local)
    yield remote, parent_writer, child_local
    remote.stop()
    service.stop()
    parent_writer.stop()
    engine.dispose()


def rows(remote: RemoteWriter) -> list[int]:
    return remote.submit(lambda conn: [v for (v,) in conn.execute(text("SELECT v FROM t ORDER BY v"))])


def test_units_are_committed_by_the_web_process_writer_and_their_results_come_back(channel):
    remote, _parent, _local = channel
    with ThreadPoolExecutor(8) as pool:
        results = list(pool.map(lambda n: remote.submit(Insert(n)), range(20)))
    assert [v for v, _ in results] == list(range(20))
    assert {thread for _, thread in results} == {"hookline-writer"}
    assert rows(remote) == list(range(20))


def test_an_exception_in_the_parent_is_raised_in_the_child(channel):
    remote, _parent, _local = channel
    remote.submit(Insert(1))
    with pytest.raises(Exception, match="UNIQUE constraint failed"):
        remote.submit(Insert(1))
    with pytest.raises(TypeError, match="cannot pickle '_thread.lock' object"):
        remote.submit(Unreturnable())
    with pytest.raises(RuntimeError, match="^Local: boom$"):
        remote.submit(RaisesLocal())
    assert rows(remote) == [1, 99]  # the unit committed; only its answer could not travel


def test_a_unit_that_cannot_be_pickled_runs_on_the_child_own_writer(channel):
    remote, _parent, local = channel
    assert local._thread is None
    assert remote.submit(lambda conn: conn.execute(text("INSERT INTO t (v) VALUES (5)")).rowcount) == 1
    assert local._thread is not None  # the lambda went through the local writer
    assert remote.submit(Insert(6))[1] == "hookline-writer"


def test_a_vanished_web_process_fails_pending_and_later_writes(channel):
    remote, parent, _local = channel
    started, release = threading.Event(), threading.Event()
    with ThreadPoolExecutor(3) as pool:
        # the parent's writer is busy in a transaction of its own (started first, so the units
        # below cannot join its batch: they wait in its queue)
        blocker = pool.submit(parent.submit, lambda conn: (started.set(), release.wait(10)))
        assert started.wait(5)
        pending = [pool.submit(remote.submit, Insert(n)) for n in (7, 8)]
        deadline = time.monotonic() + 5
        while parent._queue.qsize() < 2:  # both wait in the parent's queue
            assert time.monotonic() < deadline, "the units never reached the parent's writer"
            time.sleep(0.01)
        remote._sock.shutdown(socket.SHUT_RDWR)  # as when the parent is killed
        for future in pending:
            with pytest.raises(ChannelClosed):
                future.result(5)
        release.set()
        blocker.result(5)
    with pytest.raises(ChannelClosed):
        remote.submit(Insert(9))


def test_claims_and_lost_leases_cross_the_channel(app):
    """The units the runner sends: a claim returns the runs' rows; a finish whose lease another
    worker took raises LeaseLost in the child, and only that run is left alone."""
    core = app.extensions["hookline"]
    with app.app_context():
        recipe = _made(recipes.create(db.session, "r", {}))
    with core.engine.begin() as conn:
        ids = [a.run_id for a in store_many(conn, [_unit(core, recipe, n) for n in range(3)])]
    ours, theirs = socket.socketpair()
    service = WriterService(ours, core.writer).start()
    remote = RemoteWriter(theirs, local=BatchWriter(core.engine))
    try:
        claimed, loaded = remote.submit(ClaimDue("w1", 10, core.clock.now(), 60))
        assert claimed == ids and sorted(loaded) == ids
        assert loaded[ids[0]].body == {"n": 0}
        with core.engine.begin() as conn:
            conn.execute(update(Run).where(Run.id == ids[1]).values(lease_owner="w2"))
            assert queue.claim_in(conn, "w3", 10, core.clock.now(), 60) == []

        remote.submit(finished_write(core, ids[0], "w1"))
        with pytest.raises(LeaseLost):
            remote.submit(finished_write(core, ids[1], "w1"))
    finally:
        remote.stop()
        service.stop()
    with app.app_context():
        statuses = {r.id: r.status for r in db.session.scalars(select(Run))}
        steps = list(db.session.scalars(select(StepRun.run_id)))
    assert statuses == {ids[0]: "succeeded", ids[1]: "running", ids[2]: "running"}
    assert steps == [ids[0]]


def test_the_web_process_answers_a_unit_it_cannot_read_and_closes_on_a_malformed_frame(tmp_path):
    engine = create_engine(f"sqlite:///{tmp_path / 'w.db'}")
    writer = BatchWriter(engine)
    ours, theirs = socket.socketpair()
    service = WriterService(ours, writer).start()
    theirs.settimeout(5)
    try:
        garbage = b"not a pickle"
        theirs.sendall(struct.pack("!IQ", len(garbage) + 8, 7) + garbage)  # request 7: unreadable
        size = struct.unpack("!I", theirs.recv(4, socket.MSG_WAITALL))[0]
        rid, ok, exc = pickle.loads(theirs.recv(size, socket.MSG_WAITALL))
        assert (rid, ok) == (7, False) and isinstance(exc, pickle.UnpicklingError)
        theirs.sendall(struct.pack("!I", 3) + b"abc")  # too short to carry a request id
        assert theirs.recv(16) == b""  # closed: a child waiting on it would be told at once
    finally:
        service.stop()
        theirs.close()
        writer.stop()
        engine.dispose()


def test_a_retention_purge_in_the_runner_child_is_written_by_the_web_process(app):
    """Upkeep units are plain module functions in partials: they cross the channel like the
    run writes, so the child does not take SQLite's writer lock for them either."""
    core = app.extensions["hookline"]
    with app.app_context():
        recipe = _made(recipes.create(db.session, "r", {}))
    with core.engine.begin() as conn:
        ids = [a.run_id for a in store_many(conn, [_unit(core, recipe, n) for n in range(3)])]
        conn.execute(update(Run).where(Run.id.in_(ids[:2])).values(status="succeeded"))
    ours, theirs = socket.socketpair()
    service = WriterService(ours, core.writer).start()
    local = BatchWriter(core.engine)
    remote = RemoteWriter(theirs, local=local)
    try:
        totals = retention.purge(remote, core.clock.now() + timedelta(days=31), max_age_days=30)
        assert local._thread is None  # nothing went through the child's own writer (stop() resets it)
    finally:
        remote.stop()
        service.stop()
    assert totals == {"runs": 2, "events": 2, "dedupe_keys": 0}
    with app.app_context():
        assert list(db.session.scalars(select(Run.id))) == ids[2:]


def test_a_runner_behind_the_channel_claims_there_and_reads_the_rows_itself(app):
    """The web process's writer only claims (its time is what every webhook waits on); the
    runner child reads the claimed rows through its own connection, and the runs complete."""
    from automations.runner import Runner

    core = app.extensions["hookline"]
    with app.app_context():
        recipe = _made(recipes.create(db.session, "r", {}))  # no steps: a run succeeds at once
    with core.engine.begin() as conn:
        ids = [a.run_id for a in store_many(conn, [_unit(core, recipe, n) for n in range(5)])]
    ours, theirs = socket.socketpair()
    service = WriterService(ours, core.writer).start()
    remote = RemoteWriter(theirs, local=BatchWriter(core.engine))
    claims: list[ClaimDue] = []
    real_submit = remote.submit

    def watching_submit(work, *args, **kwargs):
        if isinstance(work, ClaimDue):
            claims.append(work)
        return real_submit(work, *args, **kwargs)

    remote.submit = watching_submit  # type: ignore[method-assign]
    local_writer, core.writer = core.writer, remote
    runner = Runner(core, threads=3, owner="child")  # room for 6 claims
    try:
        assert runner.dispatch() == 5
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            with app.app_context():
                if set(db.session.scalars(select(Run.status))) == {"succeeded"}:
                    break
            time.sleep(0.05)
    finally:
        runner.stop(5)
        core.writer = local_writer
        remote.stop()
        service.stop()
    with app.app_context():
        assert {r.id: r.status for r in db.session.scalars(select(Run))} == dict.fromkeys(ids, "succeeded")
    assert claims and not any(c.read_rows for c in claims)
    with core.engine.begin() as conn:  # and a claim told not to read returns no rows
        assert ClaimDue("x", 10, core.clock.now(), 60, read_rows=False)(conn) == ([], {})
