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
from automations.sqlite_rows import _statement, insert_rows

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


@pytest.mark.parametrize("table, rows", [
    (Event.__table__, event_rows), (Run.__table__, run_rows), (StepRun.__table__, step_rows)])
def test_a_row_inserted_through_the_cursor_is_the_row_core_inserts(tmp_path, table: Table, rows):
    by_core, by_cursor = fresh(tmp_path / "core.db"), fresh(tmp_path / "cursor.db")
    made = rows()
    assert _statement(table, tuple(made[0]), by_cursor.dialect) is not None  # the cursor path is taken
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


def test_the_writers_own_rows_take_the_cursor_path(app):
    """Each row the writer inserts names every column with a Python-side default, so none of
    them falls back to Core (a new column with a default would, harmlessly but slowly)."""
    dialect = app.extensions["hookline"].engine.dialect
    assert _statement(Event.__table__, tuple(event_rows()[0]), dialect) is not None
    assert _statement(Run.__table__, tuple(run_rows()[0]), dialect) is not None
    assert _statement(StepRun.__table__, _STEP_COLUMNS, dialect) is not None


def test_a_row_leaving_out_a_column_with_a_default_goes_through_core(tmp_path):
    engine = fresh(tmp_path / "d.db")
    row = {k: v for k, v in event_rows()[0].items() if k not in ("body_kind", "headers")}
    assert _statement(Event.__table__, tuple(row), engine.dialect) is None
    with engine.begin() as conn:
        insert_rows(conn, Event.__table__, [row])
    [(body_kind, headers)] = sqlite3.connect(tmp_path / "d.db").execute(
        "SELECT body_kind, headers FROM events").fetchall()
    assert (body_kind, headers) == ("empty", "{}")  # Core filled in the defaults
