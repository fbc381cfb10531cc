"""The group-commit writer: units of many threads in one transaction, batchable units run
together, and a failing unit fails alone."""
from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor
from types import SimpleNamespace
from typing import Any, ClassVar

import pytest
from sqlalchemy import Connection, create_engine, select, text

from automations import recipes
from automations.inbound import InboundRequest, RecipeGone, StoreUnit, event_values, store_many
from automations.models import Event, Run, StepRun
from automations.writer import BatchWriter, run_units
from web.extensions import db


class Insert:
    """A unit inserting one row; batchable as one executemany."""

    batch_key = "insert"
    calls: ClassVar[list[tuple[str, int]]] = []

    def __init__(self, value: int) -> None:
        self.value = value

    def __call__(self, conn: Connection) -> int:
        Insert.calls.append(("one", self.value))
        conn.execute(text("INSERT INTO t (v) VALUES (:v)"), {"v": self.value})
        return self.value

    @staticmethod
    def run_many(conn: Connection, units: list[Insert]) -> list[int]:
        Insert.calls.append(("many", len(units)))
        conn.execute(text("INSERT INTO t (v) VALUES (:v)"), [{"v": u.value} for u in units])
        return [u.value for u in units]


@pytest.fixture
def engine(tmp_path):
    engine = create_engine(f"sqlite:///{tmp_path / 'w.db'}")
    with engine.begin() as conn:
        conn.execute(text("CREATE TABLE t (v INTEGER UNIQUE)"))
    Insert.calls = []
    yield engine
    engine.dispose()


def test_consecutive_batchable_units_run_together_in_order(engine):
    def plain(conn: Connection) -> str:
        return "plain"

    works: list[Any] = [Insert(1), Insert(2), Insert(3), plain, Insert(4), plain, Insert(5), Insert(6)]
    with engine.begin() as conn:
        assert run_units(conn, works) == [1, 2, 3, "plain", 4, "plain", 5, 6]
    assert Insert.calls == [("many", 3), ("one", 4), ("many", 2)]
    with engine.connect() as conn:
        assert sorted(conn.scalars(text("SELECT v FROM t"))) == [1, 2, 3, 4, 5, 6]


class Other(Insert):
    """Another batchable kind, to interleave with ``Insert`` (as webhooks and run results do)."""

    batch_key = "other"


def test_interleaved_kinds_run_as_one_group_each_up_to_a_plain_unit(engine):
    def plain(conn: Connection) -> str:
        # a plain unit sees everything queued before it: three rows
        return f"plain after {conn.scalar(text('SELECT count(*) FROM t'))}"

    works: list[Any] = [Insert(1), Other(2), Insert(3), plain, Other(4), Insert(5), Other(6)]
    with engine.begin() as conn:
        assert run_units(conn, works) == [1, 2, 3, "plain after 3", 4, 5, 6]
    assert Insert.calls == [("many", 2), ("one", 2), ("many", 2), ("one", 5)]


def test_a_failing_unit_fails_alone_and_the_others_commit(engine):
    writer = BatchWriter(engine)
    gate = threading.Event()

    def blocker(conn: Connection) -> None:
        gate.wait(5)  # holds the writer so the next units queue up into one batch

    results: dict[int, Any] = {}
    with ThreadPoolExecutor(8) as pool:
        first = pool.submit(writer.submit, blocker)
        values = [10, 11, 11, 12, 13]  # the second 11 breaks the UNIQUE constraint
        futures = {i: pool.submit(writer.submit, Insert(v)) for i, v in enumerate(values)}
        gate.set()
        first.result(5)
        for i, fut in futures.items():
            try:
                results[i] = fut.result(5)
            except Exception as exc:  # noqa: BLE001 - the failing unit's own error
                results[i] = type(exc).__name__
    writer.stop()
    assert sorted(str(r) for r in results.values()).count("IntegrityError") == 1
    with engine.connect() as conn:
        assert sorted(conn.scalars(text("SELECT v FROM t"))) == [10, 11, 12, 13]


def test_a_caller_that_waits_too_long_gets_a_timeout_and_the_writer_goes_on(engine):
    writer = BatchWriter(engine)
    gate, running = threading.Event(), threading.Event()

    def blocker(conn: Connection) -> str:
        running.set()
        gate.wait(5)
        return "done"

    with ThreadPoolExecutor(1) as pool:
        first = pool.submit(writer.submit, blocker)
        assert running.wait(5)
        with pytest.raises(TimeoutError, match="within 0.2 s"):
            writer.submit(Insert(1), timeout=0.2)  # queued behind the blocker
        gate.set()
        assert first.result(5) == "done"
    assert writer.submit(Insert(2)) == 2  # the timed-out unit was withdrawn; nothing is stuck
    writer.stop()
    with engine.connect() as conn:
        assert sorted(conn.scalars(text("SELECT v FROM t"))) == [2]


class Urgent(Insert):
    """A unit someone waits for on the line (as a webhook's sender does)."""

    batch_key = "urgent"
    urgent = True


def test_urgent_units_commit_before_the_rest_of_their_batch(engine):
    """A webhook queued behind a slow claim or a pile of run results is acknowledged once its
    own rows are committed, not once the whole batch is."""
    writer = BatchWriter(engine)
    gate, running = threading.Event(), threading.Event()
    seen: dict[str, Any] = {}

    def blocker(conn: Connection) -> None:
        running.set()
        gate.wait(5)  # holds the writer so the next units queue up into one batch

    with ThreadPoolExecutor(4) as pool:
        first = pool.submit(writer.submit, blocker)
        assert running.wait(5)

        def slow(conn: Connection) -> str:  # queued before the urgent unit
            with engine.connect() as other:  # another connection sees only what is committed
                seen["urgent committed before the slow unit ran"] = other.scalar(
                    text("SELECT count(*) FROM t WHERE v = 7")) == 1
            return "slow"

        later = pool.submit(writer.submit, slow)
        while writer._queue.qsize() < 1:  # the slow unit is queued first
            time.sleep(0.001)
        urgent = pool.submit(writer.submit, Urgent(7))
        while writer._queue.qsize() < 2:
            time.sleep(0.001)
        gate.set()
        first.result(5)
        assert later.result(5) == "slow" and urgent.result(5) == 7
    writer.stop()
    assert seen == {"urgent committed before the slow unit ran": True}
    with engine.connect() as conn:
        assert sorted(conn.scalars(text("SELECT v FROM t"))) == [7]


# --- storing webhooks in batches ----------------------------------------------------------

def _made(recipe) -> SimpleNamespace:
    """The recipe's id and token, and the session's transaction ended: the writer path under
    test must not wait for this thread's own open transaction."""
    made = SimpleNamespace(id=recipe.id, token=recipe.token)
    db.session.commit()
    return made


def _unit(core, recipe, n: int, headers: dict[str, str] | None = None) -> StoreUnit:
    body = f'{{"n": {n}}}'.encode()
    req = InboundRequest("POST", "application/json", body, headers or {"content-type": "application/json"})
    now = core.clock.now()
    return StoreUnit(core.definitions, recipe.id, recipe.token, req.headers, event_values(recipe.id, req, now), now)


def test_store_many_keeps_each_event_with_its_run_and_honours_pauses(app):
    core = app.extensions["hookline"]
    with app.app_context():
        active = _made(recipes.create(db.session, "active", {}))
        paused = recipes.create(db.session, "paused", {})
        recipes.set_paused(db.session, paused, True)
        paused = _made(paused)
        units = [_unit(core, active if n % 3 else paused, n) for n in range(30)]
        with core.engine.begin() as conn:
            accepted = store_many(conn, units)
        assert [a.status for a in accepted] == ["held" if n % 3 == 0 else "queued" for n in range(30)]
        for n, a in enumerate(accepted):
            run = db.session.get(Run, a.run_id)
            event = db.session.get(Event, run.event_id)
            assert event.body == {"n": n} and run.recipe_id == event.recipe_id == units[n].recipe_id
            assert run.status == a.status


def test_store_many_takes_one_insert_per_table_for_a_batch_on_sqlite(app):
    """SQLAlchemy cannot batch ``INSERT … RETURNING`` in parameter order on SQLite and falls
    back to a statement per row; store_many numbers the rows itself instead, and inserts them
    with one prepared statement per table (automations/sqlite_rows.py)."""
    core = app.extensions["hookline"]
    with app.app_context():
        recipe = _made(recipes.create(db.session, "r", {}))
    with core.engine.begin() as conn:  # rows already there: numbering continues after them
        first = store_many(conn, [_unit(core, recipe, n) for n in range(3)])
    statements: list[str] = []  # as SQLite runs them: one line per row of an executemany
    with core.engine.begin() as conn:
        driver = conn.connection.driver_connection
        driver.set_trace_callback(statements.append)
        try:
            accepted = store_many(conn, [_unit(core, recipe, n) for n in range(3, 43)])
        finally:
            driver.set_trace_callback(None)
    inserts = [s.split("(", 1)[0].strip() for s in statements if s.startswith("INSERT")]
    assert inserts == ["INSERT INTO events"] * 40 + ["INSERT INTO runs"] * 40
    assert not [s for s in statements if "RETURNING" in s]
    with app.app_context():
        for n, a in enumerate(first + accepted):
            run = db.session.get(Run, a.run_id)
            assert db.session.get(Event, run.event_id).body == {"n": n}
        assert db.session.query(Run).count() == db.session.query(Event).count() == 43


def test_a_lone_webhook_for_a_deduplicating_recipe_reads_its_recipe_once(app):
    """Such a webhook leaves the batch path for the one that looks its delivery id up; the
    recipe's state it has read (and checked the token against) goes with it, not read again."""
    core = app.extensions["hookline"]
    with app.app_context():
        recipe = _made(recipes.create(db.session, "d", {"settings": {"dedupe": {"path": "$.n"}}}))
    statements: list[str] = []
    accepted = []
    for _ in range(2):  # the same delivery twice
        with core.engine.begin() as conn:
            driver = conn.connection.driver_connection
            driver.set_trace_callback(statements.append)
            try:
                accepted.append(store_many(conn, [_unit(core, recipe, 7)])[0])
            finally:
                driver.set_trace_callback(None)
    assert [a.duplicate for a in accepted] == [False, True] and accepted[1].run_id == accepted[0].run_id
    assert len([s for s in statements if s.startswith("SELECT") and "FROM recipes" in s]) == 2  # one each


def test_store_many_refuses_a_batch_with_a_gone_url(app):
    core = app.extensions["hookline"]
    with app.app_context():
        created = recipes.create(db.session, "r", {})
        recipe = _made(created)
        units = [_unit(core, recipe, 1), _unit(core, recipe, 2)]
        recipes.rotate_token(db.session, created)
        db.session.commit()
        with pytest.raises(RecipeGone), core.engine.begin() as conn:
            store_many(conn, units)
        assert db.session.scalar(select(Event.id)) is None


def test_store_many_deduplicates_in_order_within_the_batch(app):
    core = app.extensions["hookline"]
    with app.app_context():
        recipe = _made(recipes.create(db.session, "r", {"settings": {"dedupe": {"header": "X-Delivery"}}}))
        units = [_unit(core, recipe, n, {"content-type": "application/json", "x-delivery": f"d{n // 2}"})
                 for n in range(6)]
        with core.engine.begin() as conn:
            accepted = store_many(conn, units)
        assert [a.duplicate for a in accepted] == [False, True] * 3
        assert [a.run_id for a in accepted[1::2]] == [a.run_id for a in accepted[0::2]]
        assert db.session.query(Run).count() == 3


def test_concurrent_webhooks_each_get_their_own_run(tmp_path):
    from tests.live import LiveServer, make_live_app
    app = make_live_app(tmp_path, WEB_THREADS=16)
    server = LiveServer(app, with_runner=False)
    try:
        with app.app_context():
            token = recipes.create(db.session, "r", {}).token
        with ThreadPoolExecutor(16) as pool:
            answers = list(pool.map(lambda n: server.post(token, json={"n": n}).json(), range(200)))
        with app.app_context():
            for n, answer in enumerate(answers):
                run = db.session.get(Run, answer["run_id"])
                assert db.session.get(Event, run.event_id).body == {"n": n}
            assert db.session.query(Run).count() == 200
    finally:
        server.close()


# --- run writes in batches ------------------------------------------------------------------

def finished_write(core, run_id: int, owner: str):
    """The write of a run that succeeded at its one step, as the executor makes it."""
    from automations.executor import RunWrite

    return RunWrite(run_id, {"status": "succeeded", "step_index": 1, "b_id": run_id, "b_owner": owner},
                    {"run_id": run_id, "step_key": "a", "position": 0, "action": "http_request",
                     "attempt": 1, "status": "succeeded", "input": {"n": run_id}, "request": None,
                     "response": {"status": 200}, "error": None, "started_at": core.clock.now(),
                     "duration_ms": 3})


def test_run_writes_in_one_batch_fail_only_the_run_whose_lease_was_lost(app):
    from sqlalchemy import update

    from automations import queue
    from automations.executor import LeaseLost, RunWrite

    core = app.extensions["hookline"]
    with app.app_context():
        recipe = _made(recipes.create(db.session, "r", {}))
    with core.engine.begin() as conn:
        ids = [a.run_id for a in store_many(conn, [_unit(core, recipe, n) for n in range(4)])]
        queue.claim_in(conn, "w1", 10, core.clock.now(), 60)
        conn.execute(update(Run).where(Run.id == ids[2]).values(lease_owner="w2"))  # taken over

    def finish(run_id: int) -> RunWrite:
        return finished_write(core, run_id, "w1")

    gate = threading.Event()
    with ThreadPoolExecutor(8) as pool:
        blocker = pool.submit(core.writer.submit, lambda conn: gate.wait(5))
        futures = [pool.submit(core.writer.submit, finish(rid)) for rid in ids]
        gate.set()
        blocker.result(5)
        outcomes = []
        for fut in futures:
            try:
                outcomes.append(fut.result(5))
            except LeaseLost:
                outcomes.append("lease lost")
    assert outcomes == [None, None, "lease lost", None]
    with app.app_context():
        statuses = {r.id: r.status for r in db.session.scalars(select(Run))}
        steps = sorted(db.session.scalars(select(StepRun.run_id)))
    assert statuses == {ids[0]: "succeeded", ids[1]: "succeeded", ids[2]: "running", ids[3]: "succeeded"}
    assert steps == [ids[0], ids[1], ids[3]]
