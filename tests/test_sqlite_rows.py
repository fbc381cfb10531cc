"""The writer's inserts through the SQLite driver's cursor write exactly what SQLAlchemy Core
writes: the same values with the same storage types, column by column."""
from __future__ import annotations

import sqlite3
from datetime import datetime
from decimal import Decimal

import pytest
from sqlalchemy import Table, insert

from automations.db import make_engine
from automations.executor import _STEP_COLUMNS
from automations.inbound import InboundRequest, _run_row, event_values
from automations.models import Base, Event, Recipe, Run, StepRun
from automations.sqlite_rows import insert_rows, prepare

WHEN = datetime(2026, 11, 29, 3, 4, 5, 678901)


def event_rows() -> list[dict]:
    rows = []
    for n, (ctype, body) in enumerate([
        ("application/json", '{"é": [1, 2.5, null, true], "n": {"deep": "ünï"}}'.encode()),
        ("application/x-www-form-urlencoded", b"a=1&a=2&b="),
        ("text/plain; charset=latin-1", "caf\xe9".encode("latin-1")),
        ("application/json", b'{"broken": '),  # stored as text, with the parse error
        (None, b"\x00\xff binary"),
    ]):
        req = InboundRequest("POST", ctype, body, {"Content-Type": ctype or "", "X-N": str(n)},
                             {"q": ["1", "2"]}, "127.0.0.1")
        rows.append({**event_values(1, req, WHEN), "id": 10 + n})
    return rows


def run_rows() -> list[dict]:
    recipe = Recipe(id=1, status="active", current_version=3)
    return [{**_run_row(10 + n, 1, recipe, WHEN, None), "id": 20 + n} for n in range(3)]


def step_rows() -> list[dict]:
    """Including what only the JSON columns' own encoder (``db.dumps_json``) can store."""
    values = [
        {"input": {"text": "hi ✓", "n": 1.5, "at": WHEN, "price": Decimal("12.50"), "ratio": float("nan")},
         "request": None, "response": {"status": 200, "body": "ok"},
         "error": None, "duration_ms": 12, "status": "succeeded"},
        {"input": {"run_if": False}, "request": None, "response": None, "error": "its condition was false",
         "duration_ms": 0, "status": "skipped"},
        {"input": None, "request": {"url": "https://x.example/"}, "response": None,
         "error": "x" * 5000, "duration_ms": None, "status": "failed"},
    ]
    return [{"run_id": 20, "step_key": f"s{n}", "position": n, "action": "http_request", "attempt": 1,
             "started_at": WHEN, **v} for n, v in enumerate(values)]


def stored(path, table: str) -> list[tuple]:
    """Every row as SQLite holds it: each value with its storage class."""
    conn = sqlite3.connect(path)
    try:
        columns = [r[1] for r in conn.execute(f"PRAGMA table_info({table})")]
        select = ", ".join(f"{c}, typeof({c})" for c in columns)
        return conn.execute(f"SELECT {select} FROM {table} ORDER BY id").fetchall()
    finally:
        conn.close()


def fresh(path):
    engine = make_engine(f"sqlite:///{path}")
    Base.metadata.create_all(engine)
    with engine.begin() as conn:  # what the rows point at
        conn.exec_driver_sql("INSERT INTO recipes (id, name, token, status, current_version, created_at, updated_at)"
                             " VALUES (1, 'r', 't', 'active', 3, '2026-01-01', '2026-01-01')")
    return engine


def with_runs(path, *statements: str):
    """A fresh database holding :func:`event_rows` and :func:`run_rows`, then ``statements``."""
    engine = fresh(path)
    with engine.begin() as conn:
        insert_rows(conn, Event.__table__, event_rows())
        insert_rows(conn, Run.__table__, run_rows())
        for sql in statements:
            conn.exec_driver_sql(sql)
    return engine


@pytest.mark.parametrize("table, rows", [
    (Event.__table__, event_rows), (Run.__table__, run_rows), (StepRun.__table__, step_rows)])
def test_a_row_inserted_through_the_cursor_is_the_row_core_inserts(tmp_path, table: Table, rows):
    by_core, by_cursor = fresh(tmp_path / "core.db"), fresh(tmp_path / "cursor.db")
    made = rows()
    assert prepare(insert(table), tuple(made[0]), by_cursor.dialect) is not None  # the cursor path is taken
    for engine in (by_core, by_cursor):
        with engine.begin() as conn:
            if table is not Event.__table__:
                insert_rows(conn, Event.__table__, event_rows())  # what runs and steps refer to
            if table is StepRun.__table__:
                insert_rows(conn, Run.__table__, run_rows())
            if engine is by_core:
                conn.execute(insert(table), made)
            else:
                insert_rows(conn, table, made)
    expected = stored(tmp_path / "core.db", table.name)
    assert len(expected) == len(made)
    assert stored(tmp_path / "cursor.db", table.name) == expected


def test_the_writers_own_statements_take_the_cursor_path(app):
    """Each row the writer inserts names every column with a Python-side default, so none of
    them falls back to Core (a new column with a default would, harmlessly but slowly), and
    the webhook batch's lookups and the run update are plain enough for the cursor."""
    dialect = app.extensions["hookline"].engine.dialect
    assert prepare(insert(Event), tuple(event_rows()[0]), dialect) is not None
    assert prepare(insert(Run), tuple(run_rows()[0]), dialect) is not None
    assert prepare(insert(StepRun), _STEP_COLUMNS, dialect) is not None
    from automations.executor import _FENCED_UPDATE
    from automations.inbound import _LAST_IDS, _RECIPE_STATE_BY_ID
    assert prepare(_RECIPE_STATE_BY_ID, ("b_id",), dialect) is not None
    assert prepare(_LAST_IDS, (), dialect) is not None
    checkpoint = ("step_index", "outputs", "b_id", "b_owner", "b_attempt")
    assert prepare(_FENCED_UPDATE, checkpoint, dialect) is not None


def test_a_row_leaving_out_a_column_with_a_default_goes_through_core(tmp_path):
    engine = fresh(tmp_path / "d.db")
    row = {k: v for k, v in event_rows()[0].items() if k not in ("body_kind", "headers")}
    assert prepare(insert(Event), tuple(row), engine.dialect) is None
    with engine.begin() as conn:
        insert_rows(conn, Event.__table__, [row])
    [(body_kind, headers)] = sqlite3.connect(tmp_path / "d.db").execute(
        "SELECT body_kind, headers FROM events").fetchall()
    assert (body_kind, headers) == ("empty", "{}")  # Core filled in the defaults


def test_a_run_update_through_the_cursor_changes_what_core_changes_and_counts_it(tmp_path):
    """The executor's guarded UPDATE: the SET values go through their types' processors, the
    status compared in its WHERE is the statement's own value, and a lost lease counts 0."""
    from automations.executor import _FENCED_UPDATE
    from automations.sqlite_rows import execute_many

    def params(run_id: int, owner: str) -> dict:
        return {"status": "succeeded", "outputs": {"s": {"at": WHEN, "n": Decimal("1.5")}}, "finished_at": WHEN,
                "error": None, "b_id": run_id, "b_owner": owner, "b_attempt": 1}

    counts = {}
    for name in ("core", "cursor"):
        engine = with_runs(tmp_path / f"{name}.db", "UPDATE runs SET status = 'running', lease_owner = 'me', attempt = 1",
                           "UPDATE runs SET status = 'queued' WHERE id = 22")  # not running: untouched
        with engine.begin() as conn:
            batch = [params(20, "me"), params(21, "someone else"), params(22, "me")]
            if name == "core":
                assert prepare(_FENCED_UPDATE, tuple(batch[0]), engine.dialect) is not None
                counts[name] = conn.execute(_FENCED_UPDATE, batch).rowcount
            else:
                counts[name] = execute_many(conn, _FENCED_UPDATE, batch)
    assert counts == {"core": 1, "cursor": 1}
    assert stored(tmp_path / "cursor.db", "runs") == stored(tmp_path / "core.db", "runs")
    assert [r[:2] for r in sqlite3.connect(tmp_path / "cursor.db").execute(
        "SELECT id, status FROM runs ORDER BY id")] == [(20, "succeeded"), (21, "running"), (22, "queued")]


def test_a_claim_through_the_cursor_leases_what_core_leases(tmp_path):
    """The dispatcher's claim (UPDATE ... RETURNING): the same runs, oldest due first, within
    the limit, with the same lease, attempt and start time stored as Core's own execution."""
    from datetime import timedelta

    from automations.queue import _CLAIM, claim_in

    later = WHEN + timedelta(seconds=1)

    def by_core(conn, limit: int) -> list[int]:
        return sorted(conn.execute(_CLAIM, {"b_owner": "me", "b_limit": limit, "b_now": later,
                                            "b_expires": later + timedelta(seconds=300)}).scalars())

    claimed = {}
    for name in ("core", "cursor"):
        engine = with_runs(tmp_path / f"{name}.db",
                           "UPDATE runs SET next_attempt_at = '2026-11-29 03:00:00.000000' WHERE id = 21",
                           "UPDATE runs SET next_attempt_at = '2026-12-01 00:00:00.000000' WHERE id = 22")
        with engine.begin() as conn:
            if name == "core":
                claimed[name] = by_core(conn, 1), by_core(conn, 5)
            else:
                assert prepare(_CLAIM, ("b_owner", "b_limit", "b_now", "b_expires"), engine.dialect) is not None
                claimed[name] = claim_in(conn, "me", 1, later, 300), claim_in(conn, "me", 5, later, 300)
    assert claimed == {"core": ([21], [20]), "cursor": ([21], [20])}  # 22 is not due yet
    assert stored(tmp_path / "cursor.db", "runs") == stored(tmp_path / "core.db", "runs")


def test_a_select_through_the_cursor_reads_rows_by_name_and_position(tmp_path):
    from automations.inbound import _LAST_IDS, _RECIPE_STATE_BY_ID
    from automations.sqlite_rows import select_all

    engine = fresh(tmp_path / "s.db")
    with engine.begin() as conn:
        insert_rows(conn, Event.__table__, event_rows())
        assert prepare(_RECIPE_STATE_BY_ID, ("b_id",), engine.dialect) is not None
        [row] = select_all(conn, _RECIPE_STATE_BY_ID, {"b_id": 1})
        assert (row.id, row.token, row.status, row.current_version) == (1, "t", "active", 3)
        assert tuple(row) == (1, "t", "active", 3)
        assert select_all(conn, _RECIPE_STATE_BY_ID, {"b_id": 2}) == []
        assert select_all(conn, _LAST_IDS, {}) == [(14, 0)]


def test_what_the_cursor_cannot_run_as_core_does_goes_through_core(tmp_path):
    """An expanding IN, a missing parameter."""
    from sqlalchemy import bindparam, select
    from sqlalchemy.exc import StatementError

    from automations.inbound import _RECIPE_STATES
    from automations.sqlite_rows import select_all

    engine = fresh(tmp_path / "f.db")
    with engine.begin() as conn:
        insert_rows(conn, Event.__table__, event_rows())
        assert prepare(_RECIPE_STATES, ("ids",), engine.dialect) is None
        assert [r.id for r in select_all(conn, _RECIPE_STATES, {"ids": [1, 2]})] == [1]
        converted = select(Event.headers, Event.received_at).where(Event.id == bindparam("b_id"))
        assert prepare(converted, (), engine.dialect) is None
        with pytest.raises(StatementError, match="b_id"):
            select_all(conn, converted, {})


def test_columns_that_convert_what_they_read_read_as_core_reads_them(tmp_path):
    """JSON (objects, a number, text, null), dates, a NULL date: through each column's own
    result processor, inside the writer's transaction (select_all) and outside any
    (read_each, the runner child's read of the runs it claimed)."""
    from automations.executor import _LOAD, read_claimed
    from automations.sqlite_rows import read_each, select_all

    engine = with_runs(tmp_path / "r.db", "UPDATE runs SET outputs = '{\"s\": {\"n\": 1.5, \"at\": \"x\"}}' WHERE id = 20",
                       "UPDATE runs SET outputs = '7' WHERE id = 21")
    assert prepare(_LOAD, ("b_id",), engine.dialect) is not None  # the cursor path is taken
    with engine.connect() as conn:
        by_core = [conn.execute(_LOAD, {"b_id": i}).one() for i in (20, 21, 22)]
    with engine.begin() as conn:
        in_transaction = [row for i in (20, 21, 22) for row in select_all(conn, _LOAD, {"b_id": i})]
    outside = read_each(engine, _LOAD, [{"b_id": 20}, {"b_id": 21}, {"b_id": 22}, {"b_id": 99}])
    assert [tuple(r) for r in in_transaction] == [tuple(r) for r in outside] == [tuple(r) for r in by_core]
    first = outside[0]
    assert first.outputs == {"s": {"n": 1.5, "at": "x"}} and outside[1].outputs == 7
    assert first.headers["X-N"] == "0" and first.body == {"é": [1, 2.5, None, True], "n": {"deep": "ünï"}}
    assert first.received_at == WHEN and first.started_at is None
    assert read_claimed(engine, [22, 20]).keys() == {22, 20} and read_claimed(engine, [99]) == {}
    assert read_each(engine, _LOAD, []) == []


def test_a_value_computed_at_each_execution_is_left_to_core(tmp_path):
    from itertools import count

    from sqlalchemy import bindparam, select

    from automations.sqlite_rows import select_all

    ids = count(10)
    stmt = select(Event.id).where(Event.id == bindparam("next_id", callable_=lambda: next(ids)))
    engine = fresh(tmp_path / "c.db")
    with engine.begin() as conn:
        insert_rows(conn, Event.__table__, event_rows())
        assert prepare(stmt, (), engine.dialect) is None
        assert [select_all(conn, stmt, {})[0].id for _ in range(3)] == [10, 11, 12]
