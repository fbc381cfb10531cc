"""Plain row inserts on SQLite through the driver's cursor, for the writer's hottest statements.

Every webhook and every step result is inserted by the group-commit writer, the busiest
thread of the web process, and on SQLite that thread shares one CPU with the request
threads (``CPU_AFFINITY``), so its CPU is what the acknowledgements queue behind. Core spends
more CPU on each statement (execution context, parameter compilation, events, result set-up)
than SQLite spends inserting the rows. With the events, runs and step records inserted here,
the writer's CPU fell from 47 to 40–42 µs per webhook (``bench/inprocess.py ingest``) and from
147–150 to 130–137 µs per delivered run (``… runner``); see ``bench/README.md``, twelfth session.

The statement is built from the table's own metadata and every value goes through its
column type's bind processor, the very function Core would apply (JSON encoding, dates as
SQLite stores them), so a row written here is the row Core writes, byte for byte
(``tests/test_sqlite_rows.py`` compares them). Rows that leave out a column with a Python-side
default are inserted through Core, which fills it in. Other databases always go through Core.
"""
from __future__ import annotations

from collections.abc import Callable, Sequence
from functools import lru_cache
from typing import Any

from sqlalchemy import Connection, Table, insert
from sqlalchemy.engine import Dialect

Processor = Callable[[Any], Any] | None


@lru_cache(maxsize=64)
def _statement(table: Table, columns: tuple[str, ...], dialect: Dialect) -> tuple[str, tuple[Processor, ...]] | None:
    """The INSERT for ``columns`` of ``table`` and each column's bind processor; None when a
    column left out has a Python-side default (Core must fill it) or a name is not a column."""
    if any(name not in table.c for name in columns):
        return None
    if any(col.default is not None for col in table.c if col.name not in columns):
        return None
    processors = tuple(table.c[name].type.dialect_impl(dialect).bind_processor(dialect) for name in columns)
    quote = dialect.identifier_preparer.quote
    sql = (f"INSERT INTO {quote(table.name)} ({', '.join(quote(name) for name in columns)}) "
           f"VALUES ({', '.join('?' * len(columns))})")
    return sql, processors


def insert_rows(conn: Connection, table: Table, rows: Sequence[dict[str, Any]]) -> None:
    """Insert ``rows`` (dicts with the same keys) in ``conn``'s transaction: through the
    SQLite driver's cursor when that writes what Core would, else through Core."""
    if not rows:
        return
    columns = tuple(rows[0])
    built = _statement(table, columns, conn.dialect) if conn.dialect.name == "sqlite" else None
    if built is None:
        conn.execute(insert(table), list(rows))
        return
    sql, processors = built
    params = [tuple(v if p is None else p(v) for p, v in zip(processors, (row[c] for c in columns), strict=True))
              for row in rows]
    cursor = conn.connection.driver_connection.cursor()  # type: ignore[union-attr]
    try:
        cursor.executemany(sql, params)
    finally:
        cursor.close()
