"""Senders retry and redeliver; a recipe that names the delivery id runs each delivery once."""
from __future__ import annotations

import threading

import pytest
import requests
from sqlalchemy import func, select

from automations import recipes
from automations.clock import FrozenClock
from automations.models import Run
from tests.live import LiveServer, make_live_app
from tests.sinks import HttpSink
from web.extensions import db


@pytest.fixture
def live(tmp_path):
    server = LiveServer(make_live_app(tmp_path))
    yield server
    server.close()


def recipe_with(app, dedupe, sink_url=None):
    steps = [{"key": "a", "action": "http_request",
              "inputs": {"method": "POST", "url": sink_url, "body_type": "json", "body": "{}"}}] if sink_url else []
    with app.app_context():
        return recipes.create(db.session, "d", {"steps": steps, "settings": {"dedupe": dedupe}}).token


def run_count(app):
    with app.app_context():
        return db.session.scalar(select(func.count()).select_from(Run))


def test_repeat_with_same_header_gets_first_run_and_no_new_run(live):
    with HttpSink() as sink:
        token = recipe_with(live.app, {"header": "X-GitHub-Delivery"}, sink.url)
        first = live.post(token, json={"a": 1}, headers={"X-GitHub-Delivery": "d-1"})
        again = live.post(token, json={"a": 1}, headers={"X-GitHub-Delivery": "d-1"})
        other = live.post(token, json={"a": 1}, headers={"X-GitHub-Delivery": "d-2"})
        assert first.status_code == 202 and other.status_code == 202
        assert again.status_code == 200
        assert again.json() == {"run_id": first.json()["run_id"], "status": "duplicate"}
        sink.wait_for(2)
        assert run_count(live.app) == 2


def test_twenty_concurrent_identical_deliveries_make_exactly_one_run(live):
    token = recipe_with(live.app, {"path": "$.id"})
    answers: list[requests.Response] = []
    lock = threading.Lock()
    start = threading.Barrier(20)

    def deliver():
        start.wait()
        r = live.post(token, json={"id": "evt_123", "type": "charge.succeeded"})
        with lock:
            answers.append(r)

    threads = [threading.Thread(target=deliver) for _ in range(20)]
    [t.start() for t in threads]
    [t.join() for t in threads]
    assert sorted(r.status_code for r in answers) == [200] * 19 + [202]
    assert len({r.json()["run_id"] for r in answers}) == 1
    assert run_count(live.app) == 1


def test_key_is_free_again_after_the_window(live):
    clock = FrozenClock()
    live.app.extensions["hookline"].clock = clock
    token = recipe_with(live.app, {"path": "$.id", "window_seconds": 60})
    assert live.post(token, json={"id": 7}).status_code == 202
    clock.advance(30)
    assert live.post(token, json={"id": 7}).status_code == 200
    clock.advance(31)
    assert live.post(token, json={"id": 7}).status_code == 202
    assert run_count(live.app) == 2


def test_delivery_without_the_key_is_never_a_duplicate(live):
    token = recipe_with(live.app, {"header": "Webhook-Id"})
    assert [live.post(token, json={}).status_code for _ in range(2)] == [202, 202]
    assert run_count(live.app) == 2


@pytest.mark.parametrize("dedupe, where", [
    ({"path": "$..["}, "settings.dedupe.path"),
    ({"header": "X-Id", "path": "$.id"}, "settings.dedupe"),
    ({"path": "$.id", "window_seconds": 0}, "settings.dedupe.window_seconds"),
    ({"path": "$.id", "window_seconds": "soon"}, "settings.dedupe.window_seconds"),
])
def test_bad_dedupe_settings_are_refused_on_save(tmp_path, dedupe, where):
    app = make_live_app(tmp_path)
    with app.app_context(), pytest.raises(recipes.RecipeInvalid) as exc:
        recipes.create(db.session, "d", {"settings": {"dedupe": dedupe}})
    assert where in {p.where for p in exc.value.problems}


@pytest.mark.parametrize("retry, where", [
    ("often", "settings.retry"),
    ({"schedule": []}, "settings.retry.schedule"),
    ({"schedule": [30, "x"]}, "settings.retry.schedule"),
    ({"schedule": [-1]}, "settings.retry.schedule"),
    ({"max_attempts": 0}, "settings.retry.max_attempts"),
    ({"max_attempts": 51}, "settings.retry.max_attempts"),
    ({"max_attempts": True}, "settings.retry.max_attempts"),
    ({"max_age_seconds": 10**9}, "settings.retry.max_age_seconds"),
])
def test_bad_retry_settings_are_refused_on_save(tmp_path, retry, where):
    app = make_live_app(tmp_path)
    with app.app_context(), pytest.raises(recipes.RecipeInvalid) as exc:
        recipes.create(db.session, "r", {"settings": {"retry": retry}})
    assert where in {p.where for p in exc.value.problems}
