"""A throw-away PostgreSQL database per test module (skipped with a reason when no server
answers, except in CI where PostgreSQL is part of the machine and its absence is a failure)."""
from __future__ import annotations

import os
import uuid
from collections.abc import Iterator

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

DEFAULT_ADMIN_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"


def admin_url() -> str:
    return os.environ.get("HOOKLINE_TEST_PG_URL") or DEFAULT_ADMIN_URL


def temp_database() -> Iterator[str]:
    url = make_url(admin_url())
    admin = create_engine(url, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as conn:
            conn.execute(text("select 1"))
    except Exception as exc:  # noqa: BLE001 - any failure to connect means "no server here"
        admin.dispose()
        if os.environ.get("CI") == "true":
            pytest.fail(f"PostgreSQL at {url.render_as_string(hide_password=True)} is required in CI: {exc}")
        pytest.skip(f"no PostgreSQL at {url.render_as_string(hide_password=True)} ({type(exc).__name__}); "
                    "set HOOKLINE_TEST_PG_URL to run these tests")
    name = f"hookline_test_{uuid.uuid4().hex[:12]}"
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    try:
        yield url.set(database=name).render_as_string(hide_password=False)
    finally:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()
