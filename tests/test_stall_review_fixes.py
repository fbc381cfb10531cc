"""Review fixes for a stalled database (another program holding SQLite's write lock): a unit
whose caller stopped waiting before its batch began never runs (so a webhook answered 503
is not stored, and a claim the runner gave up on leases nothing), a unit that had begun is
waited for, and readiness counts the runs stuck in ``running`` past their lease."""
from __future__ import annotations

import sqlite3
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta

import pytest
from sqlalchemy import Connection, Engine, select, text, update

from automations import health, recipes
from automations.db import make_engine
from automations.models import Event, Run
from automations.runner import ClaimDue
from automations.writer import BatchWriter
from tests.conftest import make_app
from tests.test_writer import _made, _unit
from web.extensions import db


@contextmanager
def write_lock_held_elsewhere(database: str) -> Iterator[None]:
    """Another program (a sqlite3 shell, a backup) holds the database's write lock meanwhile."""
    other = sqlite3.connect(database, isolation_level=None)
    other.execute("BEGIN EXCLUSIVE")
    try:
        yield
    finally:
        other.execute("ROLLBACK")
        other.close()


class Insert:
    """Inserts one row."""

    def __init__(self, value: int) -> None:
        self.value = value

    def __call__(self, conn: Connection) -> int:
        conn.execute(text("INSERT INTO t (v) VALUES (:v)"), {"v": self.value})
        return self.value


class SlowInsert(Insert):
    """Inserts, then takes its time inside the transaction (its batch has begun)."""

    def __call__(self, conn: Connection) -> int:
        value = super().__call__(conn)
        time.sleep(0.6)
        return value


@pytest.fixture
def engine(tmp_path) -> Iterator[Engine]:
    engine = make_engine(f"sqlite:///{tmp_path / 'w.db'}")  # BEGIN IMMEDIATE, as in service
    with engine.begin() as conn:
        conn.execute(text("CREATE TABLE t (v INTEGER UNIQUE)"))
    yield engine
    engine.dispose()


def values(engine: Engine) -> list[int]:
    with engine.connect() as conn:
        return [v for (v,) in conn.execute(text("SELECT v FROM t ORDER BY v"))]


# --- the writer ---------------------------------------------------------------------------

def test_a_unit_whose_caller_gave_up_before_its_batch_began_never_runs(engine):
    writer = BatchWriter(engine)
    try:
        with write_lock_held_elsewhere(engine.url.database):
            started = time.monotonic()
            with pytest.raises(TimeoutError, match="within 0.3 s"):
                writer.submit(Insert(1), timeout=0.3)
            assert time.monotonic() - started < 2
        assert writer.submit(Insert(2)) == 2  # the writer goes on once the lock is released
        assert values(engine) == [2]  # the abandoned unit was skipped, not committed late
    finally:
        writer.stop()


def test_a_unit_whose_batch_had_begun_is_waited_for(engine):
    """Once its batch began, the caller cannot know whether it will commit: it waits for the
    outcome (bounded) instead of reporting a timeout for work that then commits."""
    writer = BatchWriter(engine)
    try:
        assert writer.submit(SlowInsert(1), timeout=0.2) == 1
        assert values(engine) == [1]
    finally:
        writer.stop()


def test_abandoned_units_are_skipped_and_the_rest_of_their_batch_commits(engine):
    writer = BatchWriter(engine)
    results: dict[int, object] = {}

    def submit(value: int, timeout: float) -> None:
        try:
            results[value] = writer.submit(Insert(value), timeout=timeout)
        except TimeoutError:
            results[value] = "timeout"

    try:
        with write_lock_held_elsewhere(engine.url.database):
            threads = [threading.Thread(target=submit, args=(v, 0.3 if v % 2 else 30.0)) for v in range(6)]
            for t in threads:
                t.start()
            time.sleep(0.8)  # the odd ones have given up
        for t in threads:
            t.join(10)
    finally:
        writer.stop()
    assert results == {0: 0, 1: "timeout", 2: 2, 3: "timeout", 4: 4, 5: "timeout"}
    assert values(engine) == [0, 2, 4]


def test_when_the_batch_cannot_even_begin_given_up_units_are_dropped_and_the_others_fail(engine, monkeypatch):
    """The writer slot times out (another Hookline process holds it): the batch fails before
    it began; its units are re-run one by one, except those already given up."""
    from pathlib import Path

    from automations import db as hookline_db
    from tests.test_writer_slot import hold_in_another_process

    monkeypatch.setattr(hookline_db, "LOCK_TIMEOUT", 0.3)
    writer = BatchWriter(engine)
    holder = hold_in_another_process(Path(f"{engine.url.database}.writer-lock"), 2.0)
    try:
        with pytest.raises(TimeoutError, match="will not run"):
            writer.submit(Insert(1), timeout=0.2)
        with pytest.raises(Exception, match="no writer slot"):
            writer.submit(Insert(2), timeout=30)  # its caller still waits: told the failure
    finally:
        holder.kill()
        holder.wait(5)
    try:
        assert writer.submit(Insert(3)) == 3
    finally:
        writer.stop()
    assert values(engine) == [3]


def test_a_claim_the_runner_gave_up_on_leases_nothing(app):
    """The runner's claim is a writer unit: if the dispatcher stopped waiting for it, it must
    not commit later (its runs would sit in 'running', owned by a runner that does not know it
    claimed them, until the lease expired)."""
    core = app.extensions["hookline"]
    with app.app_context():
        recipe = _made(recipes.create(db.session, "r", {}))
    from automations.inbound import store_many
    with core.engine.begin() as conn:
        ids = [a.run_id for a in store_many(conn, [_unit(core, recipe, n) for n in range(3)])]
    with write_lock_held_elsewhere(core.engine.url.database), pytest.raises(TimeoutError):
        core.writer.submit(ClaimDue("w1", 10, core.clock.now(), 60), timeout=0.3)
    core.writer.submit(lambda conn: None)  # the writer has passed the abandoned claim
    with app.app_context():
        rows = {r.id: (r.status, r.lease_owner) for r in db.session.scalars(select(Run))}
    assert rows == dict.fromkeys(ids, ("queued", None))
    claimed = core.writer.submit(ClaimDue("w2", 10, core.clock.now(), 60))
    assert claimed == ids


# --- the inbound endpoint ------------------------------------------------------------------

def test_a_webhook_the_writer_cannot_take_in_time_gets_503_and_is_not_stored(tmp_path):
    app = make_app(tmp_path, INBOUND_WRITE_TIMEOUT=0.5)
    core = app.extensions["hookline"]
    with app.app_context():
        token = recipes.create(db.session, "r", {}).token
        db.session.commit()
    client = app.test_client()
    release = threading.Event()

    def hold() -> None:
        with write_lock_held_elsewhere(core.engine.url.database):
            held.set()
            release.wait(1.5)  # longer than the inbound wait

    held = threading.Event()
    holder = threading.Thread(target=hold)
    holder.start()
    try:
        assert held.wait(5)
        started = time.monotonic()
        resp = client.post(f"/hooks/{token}", json={"n": 1})
        waited = time.monotonic() - started
    finally:
        release.set()
        holder.join(10)
    assert resp.status_code == 503, resp.get_data(as_text=True)
    assert waited < 1.4
    assert int(resp.headers["Retry-After"]) >= 1
    assert resp.get_json() == {"error": "the database is busy; retry"}
    core.writer.submit(lambda conn: None)  # the writer has passed the abandoned event
    with app.app_context():
        assert db.session.query(Event).count() == 0
        assert db.session.query(Run).count() == 0
    again = client.post(f"/hooks/{token}", json={"n": 2})
    assert again.status_code == 202
    with app.app_context():
        assert [e.body for e in db.session.scalars(select(Event))] == [{"n": 2}]
        assert db.session.query(Run).count() == 1


# --- readiness -----------------------------------------------------------------------------

def test_readiness_counts_running_runs_whose_lease_expired_as_due_since_expiry(app):
    core = app.extensions["hookline"]
    with app.app_context():
        recipe = _made(recipes.create(db.session, "r", {}))
    from automations.inbound import store_many
    now = core.clock.now()
    with core.engine.begin() as conn:
        ids = [a.run_id for a in store_many(conn, [_unit(core, recipe, n) for n in range(3)])]
        # a worker died holding ids[0] (lease expired 120 s ago); ids[1] is running, lease valid;
        # ids[2] is a retry due in an hour
        conn.execute(update(Run).where(Run.id == ids[0]).values(
            status="running", lease_owner="gone", lease_expires_at=now - timedelta(seconds=120),
            next_attempt_at=now - timedelta(seconds=400)))
        conn.execute(update(Run).where(Run.id == ids[1]).values(
            status="running", lease_owner="alive", lease_expires_at=now + timedelta(seconds=60)))
        conn.execute(update(Run).where(Run.id == ids[2]).values(next_attempt_at=now + timedelta(hours=1)))
    state = health.readiness(core)
    assert state.storing and state.runs_due == 1
    assert state.oldest_due_seconds is not None and 120 <= state.oldest_due_seconds < 150
    with core.engine.begin() as conn:  # and a queued run due longer still is the oldest
        conn.execute(update(Run).where(Run.id == ids[2]).values(next_attempt_at=now - timedelta(seconds=300)))
    state = health.readiness(core)
    assert state.runs_due == 2 and 300 <= state.oldest_due_seconds < 330
