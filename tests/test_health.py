"""Health checks for load balancers and monitors: ``/healthz`` (the process answers) and
``/healthz/readiness`` (a webhook sent now would be stored; how the runs flow), both
without signing in."""
from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta

import pytest
from sqlalchemy import create_engine, text, update

from automations import health, recipes
from automations.models import Run
from tests.conftest import ensure_user, make_app
from tests.pg import admin_url, temp_database
from web.extensions import db


@contextmanager
def write_lock_held_elsewhere(app) -> Iterator[None]:
    """Another program (a sqlite3 shell, a backup) holds SQLite's write lock meanwhile."""
    other = sqlite3.connect(app.extensions["hookline"].engine.url.database, isolation_level=None)
    other.execute("BEGIN IMMEDIATE")
    try:
        yield
    finally:
        other.execute("ROLLBACK")
        other.close()


def _recipe_token(app) -> str:
    with app.app_context():
        return recipes.create(db.session, "Orders").token


def test_liveness_answers_without_signing_in(app):
    ensure_user(app)  # once there is a user, every page but these asks to sign in
    client = app.test_client()
    resp = client.get("/healthz")
    assert resp.status_code == 200 and resp.get_json() == {"status": "ok"}
    assert resp.headers["Cache-Control"] == "no-store"
    assert client.get("/recipes/").status_code == 302  # the rest of the UI still asks


@pytest.fixture(autouse=True)
def _fresh_checks(monkeypatch):
    """Every request checks again (in service a result is reused for CHECK_EVERY seconds)."""
    monkeypatch.setattr(health, "CHECK_EVERY", 0.0)


def test_readiness_counts_the_due_runs_and_how_long_the_oldest_has_waited(app):
    ensure_user(app)
    token = _recipe_token(app)
    client = app.test_client()
    ready = client.get("/healthz/readiness")
    assert ready.status_code == 200
    assert ready.get_json() == {"status": "ok", "database": "ok", "runner": "off", "runs_due": 0,
                                "oldest_due_seconds": 0.0}  # off: this app started no runner
    ids = [client.post(f"/hooks/{token}", json={"n": n}).get_json()["run_id"] for n in range(3)]
    core = app.extensions["hookline"]
    now = core.clock.now()
    with core.engine.begin() as conn:  # one waited 90 s; one is a retry due in an hour
        conn.execute(update(Run).where(Run.id == ids[0]).values(next_attempt_at=now - timedelta(seconds=90)))
        conn.execute(update(Run).where(Run.id == ids[2]).values(next_attempt_at=now + timedelta(hours=1)))
    body = client.get("/healthz/readiness").get_json()
    assert body["runs_due"] == 2
    assert 90 <= body["oldest_due_seconds"] < 120


def test_readiness_is_503_while_the_database_cannot_take_a_write_and_recovers(app, monkeypatch):
    """Another program holds SQLite's write lock: a webhook now would wait, so a load balancer
    should send it elsewhere; once the lock is released the server is ready again."""
    monkeypatch.setattr(health, "WRITE_PROBE_TIMEOUT", 0.5)
    client = app.test_client()
    assert client.get("/healthz/readiness").status_code == 200
    with write_lock_held_elsewhere(app):
        resp = client.get("/healthz/readiness")
        assert resp.status_code == 503
        assert resp.get_json() == {"status": "unavailable", "database": "unavailable", "runner": "off",
                                   "runs_due": None, "oldest_due_seconds": None}
        assert client.get("/healthz").status_code == 200  # alive all along
    assert client.get("/healthz/readiness").status_code == 200


@pytest.fixture
def pg_url():
    yield from temp_database()


@pytest.mark.postgres
def test_on_postgres_readiness_follows_the_database_going_away_and_coming_back(tmp_path, pg_url):
    app = make_app(tmp_path, DATABASE_URL=pg_url)
    name = app.extensions["hookline"].engine.url.database
    client = app.test_client()
    assert client.get("/healthz/readiness").status_code == 200
    admin = create_engine(admin_url(), isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as conn:  # no new connections, and the open ones killed
            conn.execute(text(f'ALTER DATABASE "{name}" WITH ALLOW_CONNECTIONS false'))
            conn.execute(text("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = :name"),
                         {"name": name})
        resp = client.get("/healthz/readiness")
        assert resp.status_code == 503, resp.get_json()
        assert resp.get_json()["database"] == "unavailable"
        assert name not in resp.get_data(as_text=True)  # the reason is logged, not shown
    finally:
        with admin.connect() as conn:
            conn.execute(text(f'ALTER DATABASE "{name}" WITH ALLOW_CONNECTIONS true'))
        admin.dispose()
    assert client.get("/healthz/readiness").status_code == 200
    with app.app_context():
        db.session.remove()
    app.extensions["hookline"].close()


def test_a_flood_of_readiness_requests_checks_the_database_once_a_second(app, monkeypatch):
    """The endpoint needs no sign-in: its answer is reused, so requests cannot multiply the
    write transactions and counts it costs."""
    from sqlalchemy import event

    monkeypatch.setattr(health, "CHECK_EVERY", 60.0)
    engine = app.extensions["hookline"].engine
    counts: list[str] = []

    def listener(_conn, _cursor, statement, *_rest):
        if "count(" in statement:
            counts.append(statement)

    event.listen(engine, "before_cursor_execute", listener)
    try:
        client = app.test_client()
        bodies = [client.get("/healthz/readiness").get_json() for _ in range(20)]
    finally:
        event.remove(engine, "before_cursor_execute", listener)
    assert len(counts) == 1
    assert all(b == bodies[0] for b in bodies) and bodies[0]["status"] == "ok"


def test_while_a_check_is_stuck_other_requests_get_the_previous_answer_at_once(app, monkeypatch):
    """A database that stops answering holds the check for up to 5 s: the other health
    requests do not each hold a request thread that long."""
    import threading
    import time

    monkeypatch.setattr(health, "WRITE_PROBE_TIMEOUT", 2.0)
    client = app.test_client()
    assert client.get("/healthz/readiness").status_code == 200
    with write_lock_held_elsewhere(app):
        stuck = threading.Thread(target=lambda: client.get("/healthz/readiness"))
        stuck.start()
        time.sleep(0.3)  # the first request is now inside its check, waiting for the lock
        started = time.monotonic()
        resp = app.test_client().get("/healthz/readiness")
        assert time.monotonic() - started < 1.0
        assert resp.status_code == 200  # the previous answer; the stuck check decides the next
        stuck.join(10)
        assert app.test_client().get("/healthz/readiness").status_code == 503
