"""The hottest statements on SQLite, run through the driver's cursor: the writers', and the
runner's read of the runs it claimed (:func:`read_each`).

Every webhook and every step result is written by a group-commit writer: the web process's
is its busiest thread and shares one CPU with the request threads (``CPU_AFFINITY``), so its
CPU is what the acknowledgements queue behind; the runner child's holds the database's one
write lock while it works, and the web process's writer waits for it. Core spends
more CPU on each statement (execution context, parameter compilation, events, result set-up)
than SQLite spends running it. With the events, runs and step records inserted here, the
writer's CPU fell from 47 to 40–42 µs per webhook and from 147–150 to 130–137 µs per delivered
run; the run updates and the recipe lookups followed, then the claim and its read
(``bench/README.md``, twelfth to fourteenth sessions).

A statement is the Core statement the caller built, compiled once by SQLAlchemy for this
dialect and these parameter names; every value goes through its bind's own type processor
(JSON encoding, dates as SQLite stores them), so what reaches SQLite is what Core would send
(``tests/test_sqlite_rows.py`` compares the rows byte for byte). What this path cannot do as
Core would is left to Core: a column default computed in Python, an expanding ``IN``, a
bind whose value is computed at each execution. A result column whose type converts what it
reads (JSON, dates) goes through that type's own result processor, as Core's rows do. Other
databases always go through Core.
"""
from __future__ import annotations

from collections import namedtuple
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from sqlalchemy import Connection, Engine, Executable, Table, insert
from sqlalchemy.engine import Dialect

Processor = Callable[[Any], Any] | None
_GIVEN = object()  # the value comes from the caller's parameters


@dataclass(frozen=True)
class Prepared:
    """A statement as the cursor runs it: its SQL, and for each ``?`` in order, the
    parameter's name, its bind processor and, for a value fixed in the statement, that value
    (processed once here)."""

    sql: str
    names: tuple[str, ...]
    processors: tuple[Processor, ...]
    fixed: tuple[Any, ...]
    row: type | None  # a SELECT's row: a named tuple class, as Core's rows read
    results: tuple[Processor, ...] = ()  # a SELECT's result processors, by column (JSON, dates)

    def parameters(self, params: dict[str, Any]) -> tuple[Any, ...]:
        return tuple(
            (params[name] if p is None else p(params[name])) if value is _GIVEN else value
            for name, p, value in zip(self.names, self.processors, self.fixed, strict=True))

    def rows(self, fetched: list[tuple]) -> list[Any]:
        """Rows as the cursor returned them, each value through its column's result
        processor, as named tuples (an UPDATE's RETURNING: as they came)."""
        if self.row is None:
            return fetched
        make, results = self.row._make, self.results  # type: ignore[attr-defined]
        if not any(results):
            return [make(r) for r in fetched]
        return [make(v if p is None or v is None else p(v) for p, v in zip(results, r, strict=True))
                for r in fetched]


@lru_cache(maxsize=128)
def prepare(stmt: Executable, keys: tuple[str, ...], dialect: Dialect) -> Prepared | None:
    """``stmt`` compiled for parameters named ``keys``, or None where only Core runs it right."""
    compiled = stmt.compile(dialect=dialect, column_keys=list(keys))
    if (compiled.positiontup is None or compiled.insert_prefetch or compiled.update_prefetch
            or compiled.post_compile_params or compiled.literal_execute_params):
        return None  # not positional; a default Core computes; SQL Core renders per execution
    names, processors, fixed = tuple(compiled.positiontup), [], []
    for name in names:
        bind = compiled.binds[name]
        process = bind.type.dialect_impl(dialect).bind_processor(dialect)
        if name in keys:
            processors.append(process)
            fixed.append(_GIVEN)
        elif bind.required or bind.callable is not None:
            return None  # a missing parameter (Core says which), or a value computed per execution
        else:
            processors.append(None)
            fixed.append(bind.effective_value if process is None else process(bind.effective_value))
    row, results = None, ()
    if hasattr(stmt, "selected_columns"):
        columns = stmt.selected_columns
        results = tuple(c.type.dialect_impl(dialect).result_processor(dialect, None) for c in columns)
        row = namedtuple("Row", columns.keys(), rename=True)  # type: ignore[misc]
    return Prepared(compiled.string, names, tuple(processors), tuple(fixed), row, results)


def _prepared(dialect: Dialect, stmt: Executable, keys: tuple[str, ...]) -> Prepared | None:
    return prepare(stmt, keys, dialect) if dialect.name == "sqlite" else None


def _cursor(conn: Connection) -> Any:
    return conn.connection.driver_connection.cursor()  # type: ignore[union-attr]


def _fetch(cursor: Any, prepared: Prepared, params: Sequence[dict[str, Any]]) -> list[Any]:
    """The rows of ``prepared`` for each parameter set in turn, then the cursor closed."""
    try:
        fetched = [row for p in params for row in cursor.execute(prepared.sql, prepared.parameters(p)).fetchall()]
    finally:
        cursor.close()
    return prepared.rows(fetched)


def execute_many(conn: Connection, stmt: Executable, params: Sequence[dict[str, Any]]) -> int:
    """Run the INSERT or UPDATE ``stmt`` once per parameter set (dicts with the same keys) in
    ``conn``'s transaction; the number of rows it changed in all."""
    if not params:
        return 0
    prepared = _prepared(conn.dialect, stmt, tuple(params[0]))
    if prepared is None:
        return conn.execute(stmt, list(params)).rowcount
    cursor = _cursor(conn)
    try:
        cursor.executemany(prepared.sql, [prepared.parameters(p) for p in params])
        return cursor.rowcount
    finally:
        cursor.close()


def select_all(conn: Connection, stmt: Executable, params: dict[str, Any]) -> list[Any]:
    """Every row of the SELECT ``stmt``, each read by name or position as Core's rows are (or
    of an UPDATE's RETURNING, each read by position)."""
    prepared = _prepared(conn.dialect, stmt, tuple(params))
    if prepared is None:
        return list(conn.execute(stmt, params).all())
    return _fetch(_cursor(conn), prepared, [params])


def read_each(engine: Engine, stmt: Executable, params: Sequence[dict[str, Any]]) -> list[Any]:
    """The rows of the SELECT ``stmt`` for each parameter set in turn, read as
    :func:`select_all` reads them. On SQLite, outside any transaction, on a pooled connection
    of the driver's own: each statement reads one snapshot of the database, and nothing
    else is needed to read one (Core's transaction and the read-only guard of
    ``db.for_reading`` cost several times the statement). For a caller whose rows need not
    be read together, one statement at a time."""
    if not params:
        return []
    prepared = _prepared(engine.dialect, stmt, tuple(params[0]))
    if prepared is None:
        with engine.connect() as conn:
            return [row for p in params for row in conn.execute(stmt, p).all()]
    raw = engine.raw_connection()
    try:
        return _fetch(raw.driver_connection.cursor(), prepared, params)  # type: ignore[union-attr]
    finally:
        raw.close()  # back to the pool


@lru_cache(maxsize=32)
def _insert(table: Table) -> Executable:
    return insert(table)


def insert_rows(conn: Connection, table: Table, rows: Sequence[dict[str, Any]]) -> None:
    """Insert ``rows`` (dicts with the same keys) in ``conn``'s transaction. A row that leaves
    out a column whose default Python computes goes through Core, which fills it in."""
    execute_many(conn, _insert(table), rows)
