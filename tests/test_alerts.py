"""A dead run alerts someone; a recipe whose runs keep dying pauses itself and holds events."""
from __future__ import annotations

import pytest

from automations import connections, recipes
from tests.live import LiveServer, make_live_app
from tests.sinks import HttpSink, Reply
from tests.test_e2e import wait_run
from web.extensions import db


@pytest.fixture
def live(tmp_path):
    server = LiveServer(make_live_app(tmp_path))
    yield server
    server.close()


def _alerting_recipe(live, name: str, broken: HttpSink, chat: HttpSink, settings: dict, text: str) -> tuple[int, str]:
    """A recipe whose one step posts to ``broken`` and whose dead-run alert is a Slack message
    to ``chat`` saying ``text``; its id and token."""
    with live.app.app_context():
        box = live.app.extensions["hookline"].secret_box
        slack = connections.create(db.session, box, "ops", "slack_webhook", {"webhook_url": chat.url + "/x"}).id
        recipe = recipes.create(db.session, name, {
            "steps": [{"key": "crm", "action": "http_request",
                       "inputs": {"method": "POST", "url": broken.url, "body_type": "json", "body": "{}"}}],
            "settings": {**settings, "alert": {"action": "slack_message", "connection": slack,
                                               "inputs": {"text": text}}},
        })
        return recipe.id, recipe.token


def test_dead_runs_alert_and_pause_the_recipe(live):
    with HttpSink(lambda req: Reply(503, "down")) as broken, HttpSink() as chat:
        rid, token = _alerting_recipe(live, "Orders → CRM", broken, chat,
                                      {"retry": {"schedule": [0.05], "max_attempts": 1}, "pause_after_dead": 2},
                                      "{{ recipe.name }}: run {{ run.id }} dead{% if paused %} (recipe paused){% endif %}")
        first = live.post(token, json={}).json()["run_id"]
        assert wait_run(live.app, first) == "dead"
        assert chat.wait_for(1)[0].json()["text"] == f"Orders → CRM: run {first} dead"
        second = live.post(token, json={}).json()["run_id"]
        assert wait_run(live.app, second) == "dead"
        assert chat.wait_for(2)[1].json()["text"] == f"Orders → CRM: run {second} dead (recipe paused)"
        with live.app.app_context():
            recipe = db.session.get(recipes.Recipe, rid)
            assert recipe.is_paused
            assert recipe.status_reason == "paused automatically: the last 2 runs all went dead"
        assert live.post(token, json={}).json()["status"] == "held"


def test_a_success_in_between_resets_the_count(live):
    answers = iter([Reply(503), Reply(200), Reply(503)])
    with HttpSink(lambda req: next(answers)) as sink:
        with live.app.app_context():
            token = recipes.create(db.session, "r", {
                "steps": [{"key": "a", "action": "http_request",
                           "inputs": {"method": "POST", "url": sink.url, "body_type": "json", "body": "{}"}}],
                "settings": {"retry": {"max_attempts": 1}, "pause_after_dead": 2}}).token
        for expected in ("dead", "succeeded", "dead"):
            assert wait_run(live.app, live.post(token, json={}).json()["run_id"]) == expected
        assert live.post(token, json={}).json()["status"] == "queued"


def test_filtered_runs_in_between_do_not_reset_the_count(live):
    """The review's report: a recipe that filters most events never paused itself, because
    each filtered run between two dead ones broke the streak."""
    with HttpSink(lambda req: Reply(503)) as sink:
        with live.app.app_context():
            token = recipes.create(db.session, "r", {
                "fields": [{"name": "amount", "path": "$.amount"}],
                "steps": [{"key": "big", "action": "filter", "inputs": {"condition": "{{ amount > 100 }}"}},
                          {"key": "a", "action": "http_request",
                           "inputs": {"method": "POST", "url": sink.url, "body_type": "json", "body": "{}"}}],
                "settings": {"retry": {"max_attempts": 1}, "pause_after_dead": 2}}).token
        for amount, expected in ((500, "dead"), (5, "filtered"), (500, "dead")):
            run_id = live.post(token, json={"amount": amount}).json()["run_id"]
            assert wait_run(live.app, run_id, statuses=("dead", "filtered", "succeeded")) == expected
        assert live.post(token, json={"amount": 500}).json()["status"] == "held"


@pytest.mark.parametrize("settings, where", [
    ({"alert": {"action": "nope"}}, "settings.alert.action"),
    ({"alert": {"action": "filter", "inputs": {"condition": "{{ true }}"}}}, "settings.alert.action"),
    ({"alert": {"action": "slack_message", "inputs": {"text": "{{ x"}}}, "settings.alert.connection"),
    ({"pause_after_dead": -1}, "settings.pause_after_dead"),
])
def test_bad_alert_settings_are_refused(tmp_path, settings, where):
    app = make_live_app(tmp_path)
    with app.app_context(), pytest.raises(recipes.RecipeInvalid) as exc:
        recipes.create(db.session, "r", {"settings": settings})
    assert where in {p.where for p in exc.value.problems}


def test_an_alert_answered_429_is_sent_again_after_retry_after(live):
    """Slack rate-limits bursts: an alert refused with 429 must not be dropped on the first try."""
    answers = iter([Reply(429, "rate_limited", headers={"Retry-After": "1"})])

    def chat_answer(req):
        return next(answers, Reply(200, "ok"))
    with HttpSink(lambda req: Reply(503, "down")) as broken, HttpSink(chat_answer) as chat:
        _rid, token = _alerting_recipe(live, "Orders", broken, chat, {"retry": {"max_attempts": 1}, "pause_after_dead": 0},
                                       "run {{ run.id }} dead")
        run_id = live.post(token, json={}).json()["run_id"]
        assert wait_run(live.app, run_id) == "dead"
        first, second = chat.wait_for(2, timeout=10)
        assert first.json() == second.json() == {"text": f"run {run_id} dead", "unfurl_links": False}
        assert second.at - first.at >= 0.9  # Retry-After: 1
