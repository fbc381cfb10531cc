"""An id names one row for the database's whole life (SQLite AUTOINCREMENT; PostgreSQL
identities never go back), including databases made before the fix, which are upgraded at
start."""
from __future__ import annotations

import sqlite3
from pathlib import Path

from sqlalchemy import MetaData, select
from sqlalchemy.orm import Session

from automations import connections, recipes, users
from automations.db import make_engine
from automations.models import Base, Event, Recipe, RecipeVersion, Run, StepRun
from automations.schema import upgrade
from tests.conftest import make_app
from tests.live import LiveServer, make_live_app
from tests.sinks import HttpSink
from tests.test_e2e import http_step, make_recipe, wait_run
from web.extensions import db


def test_a_new_recipe_runs_its_own_steps_after_the_newest_recipe_was_deleted(tmp_path: Path) -> None:
    """The bug report: recipe A (the newest) ran once, so its definition was cached; A was
    deleted and recipe B created. B's webhook was delivered to A's URL, because B got A's id
    and the runner's cache is keyed by (recipe id, version)."""
    live = LiveServer(make_live_app(tmp_path))
    try:
        with HttpSink() as sink:
            app = live.app
            a_id, a_token = make_recipe(app, "A", steps=[http_step("s", sink.url + "/from-recipe-A", '{"x": 1}')])
            assert wait_run(app, live.post(a_token, json={}).json()["run_id"]) == "succeeded"
            with app.app_context():
                recipes.delete(db.session, db.session.get(Recipe, a_id))
            b_id, b_token = make_recipe(app, "B", steps=[http_step("s", sink.url + "/from-recipe-B", '{"x": 2}')])
            assert b_id != a_id
            assert wait_run(app, live.post(b_token, json={}).json()["run_id"]) == "succeeded"
            assert [r.path for r in sink.wait_for(2)] == ["/from-recipe-A", "/from-recipe-B"]
    finally:
        live.close()


def test_ids_of_deleted_newest_rows_are_not_given_again(app) -> None:
    """Connections (old recipe versions keep naming a deleted one's id: it must not become a
    stranger's credentials), users (sessions name the id) and recipes."""
    box = app.extensions["hookline"].secret_box
    with app.app_context():
        old = connections.create(db.session, box, "Old Slack", "slack_webhook",
                                 {"webhook_url": "https://hooks.slack.com/services/T/B/OLD"})
        old_id = old.id
        connections.delete(db.session, old)
        new = connections.create(db.session, box, "Unrelated Slack", "slack_webhook",
                                 {"webhook_url": "https://hooks.slack.com/services/T/B/NEW"})
        assert new.id > old_id

        first = users.create_user(db.session, "first@example.com", "a long password 1", "admin")
        gone = users.create_user(db.session, "gone@example.com", "a long password 2", "viewer")
        gone_id = gone.id
        db.session.delete(gone)
        db.session.commit()
        assert users.create_user(db.session, "later@example.com", "a long password 3", "viewer").id > gone_id
        assert first.id < gone_id

        r = recipes.create(db.session, "newest", None)
        r_id = r.id
        recipes.delete(db.session, r)
        assert recipes.create(db.session, "next", None).id > r_id


def _old_database(path: Path) -> None:
    """The schema as Hookline made it before: the same tables, without AUTOINCREMENT."""
    old = MetaData()
    for table in Base.metadata.sorted_tables:
        table.to_metadata(old).dialect_kwargs["sqlite_autoincrement"] = False
    engine = make_engine(f"sqlite:///{path}")
    old.create_all(engine)
    engine.dispose()


def _table_sql(path: Path, name: str) -> str:
    with sqlite3.connect(path) as conn:
        return conn.execute("SELECT sql FROM sqlite_master WHERE type = 'table' AND name = ?", (name,)).fetchone()[0]


def test_a_database_made_before_is_upgraded_at_start_and_keeps_everything(tmp_path: Path) -> None:
    path = tmp_path / "old.db"
    _old_database(path)
    engine = make_engine(f"sqlite:///{path}")
    with Session(engine) as session:  # rows written as the earlier Hookline wrote them
        kept = recipes.create(session, "kept", {"fields": [], "steps": [], "settings": {}})
        recipes.update_recipe(session, kept, definition={"fields": [{"name": "x", "path": "$.x"}],
                                                         "steps": [], "settings": {}})
        newest = recipes.create(session, "newest", None)
        kept_id, token, newest_id = kept.id, kept.token, newest.id
        event = Event(recipe_id=kept_id, method="POST", body_raw=b"{}")
        session.add(event)
        session.flush()
        run = Run(event_id=event.id, recipe_id=kept_id, recipe_version=2, status="succeeded")
        session.add(run)
        session.flush()
        session.add(StepRun(run_id=run.id, step_key="s", position=0, action="http_request", attempt=1,
                            status="succeeded"))
        session.commit()
        run_id, event_id = run.id, event.id
    engine.dispose()
    assert "AUTOINCREMENT" not in _table_sql(path, "recipes").upper()

    app = make_app(tmp_path, DATABASE_URL=f"sqlite:///{path}")  # upgrades at start
    for name in ("connections", "recipes", "recipe_versions", "events", "runs", "users"):
        assert "AUTOINCREMENT" in _table_sql(path, name).upper(), name
    with app.app_context():
        again = db.session.get(Recipe, kept_id)
        assert again is not None and again.token == token and again.current_version == 2
        assert [v.version for v in again.versions] == [1, 2]
        assert db.session.get(Run, run_id).event_id == event_id
        assert len(db.session.scalars(select(StepRun).where(StepRun.run_id == run_id)).all()) == 1
        recipes.delete(db.session, db.session.get(Recipe, newest_id))  # its versions go with it, as before
        assert db.session.scalars(select(RecipeVersion).where(RecipeVersion.recipe_id == newest_id)).all() == []
        assert recipes.create(db.session, "after", None).id > newest_id
    with sqlite3.connect(path) as conn:
        assert conn.execute("PRAGMA foreign_key_check").fetchall() == []
        indexes = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'index'")}
    assert {"ix_runs_due", "ix_runs_created", "ix_events_recipe_received", "ix_step_runs_run"} <= indexes
    assert upgrade(make_engine(f"sqlite:///{path}")) == []  # once is enough


def test_webhooks_stored_in_a_batch_after_retention_purged_the_newest_runs_get_new_ids(app) -> None:
    """The reviewer's report: a quiet spell longer than RETENTION_DAYS purged every run, and the
    next webhooks, stored together in one batch, got ids 1, 2, 3… again, so their steps sent
    the Idempotency-Keys (hookline-<run>-<step>) of other, older events."""
    from datetime import timedelta

    from automations import inbound, retention
    from automations.writer import run_units

    core = app.extensions["hookline"]
    with app.app_context():
        recipe = recipes.create(db.session, "r", None)
        recipe_id, token = recipe.id, recipe.token

    def store_batch(n: int) -> list[int]:
        now = core.clock.now()
        units = [inbound.StoreUnit(core.definitions, recipe_id, token, {}, inbound.event_values(
            recipe_id, inbound.InboundRequest("POST", "application/json", b'{"n": %d}' % i, {}, {}, "127.0.0.1"),
            now), now) for i in range(n)]
        with core.engine.begin() as conn:
            return [a.run_id for a in run_units(conn, units)]  # one batch: the numbered insert

    first = store_batch(5)
    assert first == [1, 2, 3, 4, 5]
    with core.engine.begin() as conn:  # the runs finish, so retention may take them
        conn.exec_driver_sql("UPDATE runs SET status = 'succeeded', finished_at = created_at")
    purged = retention.purge(core.writer, core.clock.now() + timedelta(days=31), 30)
    assert purged["runs"] == 5 and purged["events"] == 5
    assert store_batch(3) == [6, 7, 8]
