"""The database schema: made where missing, and a SQLite database made by an earlier
Hookline brought up to date.

``create_all`` makes what is missing but never changes a table that exists. The one change
so far: tables whose ids must never be given twice (``models.NEVER_REUSED``) were made
without ``AUTOINCREMENT``, and SQLite cannot add it to a table in place, so such a table is
rebuilt as SQLite documents (https://www.sqlite.org/lang_altertable.html, "other kinds of
table schema changes"): with foreign keys off, create the new table, copy the rows, drop the
old one, rename the new one, then check every foreign key, all in one transaction. The
copied rows keep their ids, and SQLite starts the new table's sequence after the highest.
Idempotent, and safe when two processes start together: the second finds nothing to do once
it gets the write lock.
"""
from __future__ import annotations

import logging

from sqlalchemy import Connection, Engine, MetaData, Table, inspect, text
from sqlalchemy.schema import CreateIndex, CreateTable

from .db import READ_ONLY
from .models import Base

log = logging.getLogger("hookline.schema")


def create_schema(engine: Engine) -> None:
    """Tables and indexes that are missing, then :func:`upgrade`. On PostgreSQL under an
    advisory lock: processes starting together against an empty database raced in
    ``create_all`` (a duplicate type name) and one of them crashed."""
    if engine.dialect.name == "postgresql":
        with engine.begin() as conn:
            conn.execute(text("SELECT pg_advisory_xact_lock(hashtext('hookline schema'))"))
            Base.metadata.create_all(conn)
            _create_missing_indexes(conn)
        return
    Base.metadata.create_all(engine)
    with engine.begin() as conn:
        _create_missing_indexes(conn)
    upgrade(engine)


def _create_missing_indexes(conn: Connection) -> None:
    """``create_all`` makes a table's indexes only with the table: an index added to a table
    that already exists (a database made before) is made here."""
    inspector = inspect(conn)
    for table in Base.metadata.sorted_tables:
        present = {i["name"] for i in inspector.get_indexes(table.name)}
        for index in table.indexes:
            if index.name not in present:
                index.create(conn)


def upgrade(engine: Engine) -> list[str]:
    """Rebuild the tables that lack AUTOINCREMENT; the names of those rebuilt."""
    if engine.dialect.name != "sqlite":
        return []
    wanted = [t for t in Base.metadata.sorted_tables if t.kwargs.get("sqlite_autoincrement")]
    with engine.connect().execution_options(**{READ_ONLY: True}) as conn:  # the usual case: no write lock
        if not _lacking(conn, wanted):
            return []
    with engine.connect() as conn:
        raw = conn.connection.dbapi_connection
        raw.execute("PRAGMA foreign_keys=OFF")  # a no-op inside a transaction: before BEGIN
        try:
            with conn.begin():
                tables = _lacking(conn, wanted)  # again, under the write lock
                for table in tables:
                    _rebuild(conn, table)
                problems = conn.exec_driver_sql("PRAGMA foreign_key_check").fetchall()
                if problems:
                    raise RuntimeError(f"foreign key check failed after rebuilding {tables}: {problems[:5]}")
        finally:
            raw.execute("PRAGMA foreign_keys=ON")
    names = [t.name for t in tables]
    if names:
        log.warning("upgraded the database: ids of %s are never given twice now (AUTOINCREMENT)", ", ".join(names))
    return names


def _lacking(conn: Connection, tables: list[Table]) -> list[Table]:
    out = []
    for table in tables:
        sql = conn.exec_driver_sql("SELECT sql FROM sqlite_master WHERE type = 'table' AND name = ?",
                                   (table.name,)).scalar()
        if sql is not None and "AUTOINCREMENT" not in sql.upper():
            out.append(table)
    return out


def _rebuild(conn: Connection, table: Table) -> None:
    new_name = f"{table.name}__hookline_new"
    conn.exec_driver_sql(f'DROP TABLE IF EXISTS "{new_name}"')
    scratch = MetaData()  # with every table, so the copy's foreign keys resolve
    for other in Base.metadata.sorted_tables:
        other.to_metadata(scratch)
    new = table.to_metadata(scratch, name=new_name)
    new.indexes.clear()  # index names are global: the old table's go with it, then made again
    conn.execute(CreateTable(new))
    present = {row[1] for row in conn.exec_driver_sql(f'PRAGMA table_info("{table.name}")')}
    columns = ", ".join(f'"{c.name}"' for c in table.columns if c.name in present)
    conn.exec_driver_sql(f'INSERT INTO "{new_name}" ({columns}) SELECT {columns} FROM "{table.name}"')
    conn.exec_driver_sql(f'DROP TABLE "{table.name}"')
    conn.exec_driver_sql(f'ALTER TABLE "{new_name}" RENAME TO "{table.name}"')
    for index in table.indexes:
        conn.execute(CreateIndex(index))
