"""Pausing a recipe stops it hammering a broken receiver: its queued runs and retries wait
for the resume, as its new events do (from a review of the runner: auto-pause left 10
queued retries running)."""
from __future__ import annotations

import time

from sqlalchemy import select, update

from automations import alerts, recipes
from automations.clock import utcnow
from automations.models import Recipe, Run
from tests.live import LiveServer, make_live_app
from tests.sinks import HttpSink, Received, Reply
from tests.test_e2e import http_step, make_recipe, wait_run
from tests.test_ui_recipes import HTTP_STEP, create
from web.extensions import db


def _webhooks(app, client, recipe_id: int, n: int) -> list[int]:
    with app.app_context():
        token = db.session.get(Recipe, recipe_id).token
    return [client.post(f"/hooks/{token}", json={"n": i}).get_json()["run_id"] for i in range(n)]


def _statuses(app, run_ids: list[int]) -> list[str]:
    with app.app_context():
        return [db.session.get(Run, r).status for r in run_ids]


def test_pausing_holds_queued_runs_and_retries_and_resuming_runs_them(app, client) -> None:
    recipe_id = create(client, steps=[HTTP_STEP])
    fresh, retrying = _webhooks(app, client, recipe_id, 2)  # no runner here: both stay queued
    with app.app_context():  # the second failed its first attempt and waits to retry
        db.session.execute(update(Run).where(Run.id == retrying).values(attempt=1))
        db.session.commit()
    client.post(f"/recipes/{recipe_id}/pause", data={"reason": "receiver down"})
    assert _statuses(app, [fresh, retrying]) == ["held", "held"]
    client.post(f"/recipes/{recipe_id}/resume", data={"held": "run"})
    assert _statuses(app, [fresh, retrying]) == ["queued", "queued"]
    with app.app_context():
        assert db.session.get(Run, retrying).attempt == 1  # its attempts still count


def test_a_run_held_part_way_keeps_the_version_its_earlier_steps_ran(app, client) -> None:
    recipe_id = create(client, steps=[HTTP_STEP, {**HTTP_STEP, "key": "second"}])
    not_started, part_way = _webhooks(app, client, recipe_id, 2)
    with app.app_context():
        db.session.execute(update(Run).where(Run.id == part_way).values(attempt=1, step_index=1))
        recipe = db.session.get(Recipe, recipe_id)
        recipes.update_recipe(db.session, recipe, definition={"fields": [], "steps": [
            {**HTTP_STEP, "key": "other"}], "settings": {}})
        assert recipe.current_version == 2
        recipes.set_paused(db.session, recipe, True, "editing")
        recipes.release_held(db.session, recipe)
        versions = dict(db.session.execute(select(Run.id, Run.recipe_version).where(
            Run.id.in_([not_started, part_way]))).all())
    assert versions == {not_started: 2, part_way: 1}


def _dead(app, recipe_id: int, run_ids: list[int]) -> None:
    with app.app_context():
        db.session.execute(update(Run).where(Run.id.in_(run_ids)).values(status="dead", finished_at=utcnow()))
        db.session.commit()


def test_auto_pause_holds_the_queued_retries_too(app, client) -> None:
    recipe_id = create(client, steps=[HTTP_STEP])
    with app.app_context():
        recipe = db.session.get(Recipe, recipe_id)
        settings = {"pause_after_dead": 2}
        recipes.update_recipe(db.session, recipe, definition={**recipes.current_definition(recipe),
                                                              "settings": settings})
    first, second, waiting = _webhooks(app, client, recipe_id, 3)
    _dead(app, recipe_id, [first, second])
    alerts.after_dead(app.extensions["hookline"], second, recipe_id, settings, "HTTP 500")
    with app.app_context():
        assert db.session.get(Recipe, recipe_id).is_paused
    assert _statuses(app, [waiting]) == ["held"]


def test_after_a_resume_one_dead_run_does_not_pause_again(app, client) -> None:
    recipe_id = create(client, steps=[HTTP_STEP])
    settings = {"pause_after_dead": 2}
    core = app.extensions["hookline"]
    a, b, c, d = _webhooks(app, client, recipe_id, 4)
    _dead(app, recipe_id, [a, b])
    alerts.after_dead(core, b, recipe_id, settings, "HTTP 500")
    with app.app_context():
        recipe = db.session.get(Recipe, recipe_id)
        assert recipe.is_paused
        recipes.set_paused(db.session, recipe, False)
    _dead(app, recipe_id, [c])
    alerts.after_dead(core, c, recipe_id, settings, "HTTP 500")
    with app.app_context():
        assert not db.session.get(Recipe, recipe_id).is_paused  # one dead run since the resume
    _dead(app, recipe_id, [d])
    alerts.after_dead(core, d, recipe_id, settings, "HTTP 500")
    with app.app_context():
        assert db.session.get(Recipe, recipe_id).is_paused  # two since the resume: paused again


def test_a_run_in_flight_when_its_recipe_is_paused_waits_for_the_resume_instead_of_retrying(tmp_path) -> None:
    """The receiver fails while the recipe is being paused: the failed attempt's retry is held
    with the recipe's other runs, not sent to the broken receiver again."""
    live = LiveServer(make_live_app(tmp_path))
    try:
        app = live.app

        def down_and_paused(req: Received) -> Reply:  # the recipe is paused while this attempt is in flight
            with app.app_context():
                recipes.set_paused(db.session, db.session.get(Recipe, recipe_id), True, "receiver down")
            return Reply(503, "down")
        with HttpSink(down_and_paused) as sink:
            recipe_id, token = make_recipe(app, "A", steps=[http_step("s", sink.url + "/x", "{}")],
                                           settings={"retry": {"schedule": [0.2], "max_attempts": 5}})
            run_id = live.post(token, json={}).json()["run_id"]
            assert wait_run(app, run_id, statuses=("held",)) == "held"
            time.sleep(0.6)  # past the retry's due time: still held, nothing more sent
            assert _statuses(app, [run_id]) == ["held"] and len(sink.requests) == 1
    finally:
        live.close()
