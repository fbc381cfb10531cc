""""Only continue if": a step that ends the run as ``filtered`` when its condition is false,
so a recipe acts only on the events it is for (Zapier's Filter, n8n's IF)."""
from __future__ import annotations

import html

import pytest
from sqlalchemy import select

from automations.models import Run
from automations.preview import preview
from connectors.flow import passes
from tests.test_e2e import http_step, live, make_recipe, steps_of, wait_run  # noqa: F401 - fixtures
from tests.test_ui_recipes import create, errors_for, recipe_form
from web.extensions import db

PAID_OVER_100 = {"key": "big_paid", "action": "filter",
                 "inputs": {"condition": "{{ paid and amount > 100 }}"}}


@pytest.mark.parametrize("value, verdict", [
    (True, True), (False, False), (None, False), (0, False), (1, True), (0.5, True),
    ([], False), (["a"], True), ({}, False),
    ("", False), ("  ", False), ("false", False), ("False", False), ("no", False), ("OFF", False),
    ("0", False), ("none", False), ("null", False),
    ("true", True), ("yes", True), ("push", True), ("00", True),
])
def test_what_counts_as_true(value, verdict):
    assert passes(value) is verdict


def _fields():
    return [{"name": "amount", "path": "$.amount"}, {"name": "paid", "path": "$.paid"}]


def test_an_event_that_passes_runs_every_step(live, sink):  # noqa: F811 - fixtures
    _rid, token = make_recipe(live.app, fields=_fields(),
                              steps=[PAID_OVER_100, http_step("crm", sink.url, '{"amount": {{ amount }}}')])
    run_id = live.post(token, json={"amount": 150, "paid": True}).json()["run_id"]
    assert wait_run(live.app, run_id) == "succeeded"
    [received] = sink.wait_for(1)
    assert received.json() == {"amount": 150}
    first, second = steps_of(live.app, run_id)
    assert (first["key"], first["status"], first["input"]) == ("big_paid", "succeeded", {"condition": True})
    assert (second["key"], second["status"]) == ("crm", "succeeded")


def test_an_event_that_fails_the_condition_ends_filtered_after_the_steps_before(live, sink):  # noqa: F811
    _rid, token = make_recipe(live.app, fields=_fields(), steps=[
        http_step("log", sink.url, '{"seen": {{ amount }}}'), PAID_OVER_100,
        http_step("crm", sink.url, '{"amount": {{ amount }}}')])
    run_id = live.post(token, json={"amount": 50, "paid": True}).json()["run_id"]
    assert wait_run(live.app, run_id, statuses=("succeeded", "filtered", "failed", "dead")) == "filtered"
    assert [r.json() for r in sink.wait_for(1)] == [{"seen": 50}]  # the step before the filter ran
    with live.app.app_context():
        run = db.session.get(Run, run_id)
        assert run.error == ("stopped at step 'big_paid' (Only continue if): the condition was false; "
                             "the later steps did not run")
        assert run.outputs["big_paid"] == {"passed": False} and "crm" not in run.outputs
    assert [s["key"] for s in steps_of(live.app, run_id)] == ["log", "big_paid"]
    assert sink.requests[1:] == []  # nothing more arrived


def test_the_run_history_shows_and_filters_filtered_runs(live, sink):  # noqa: F811
    from tests.conftest import signed_in_client

    _rid, token = make_recipe(live.app, fields=_fields(), steps=[PAID_OVER_100])
    kept = live.post(token, json={"amount": 500, "paid": True}).json()["run_id"]
    dropped = live.post(token, json={"amount": 500, "paid": False}).json()["run_id"]
    assert wait_run(live.app, kept, statuses=("succeeded", "filtered")) == "succeeded"
    assert wait_run(live.app, dropped, statuses=("succeeded", "filtered")) == "filtered"
    client = signed_in_client(live.app, "viewer")
    listed = client.get("/runs/?status=filtered").get_data(as_text=True)
    assert f'href="/runs/{dropped}"' in listed and f'href="/runs/{kept}"' not in listed
    detail = html.unescape(client.get(f"/runs/{dropped}").get_data(as_text=True))
    assert "Filtered:" in detail and "the condition was false" in detail and "error-box" not in detail


def test_the_editor_offers_the_step_and_checks_its_condition(app, client):
    page = client.get("/recipes/new").get_data(as_text=True)
    assert 'name="add_step" value="filter"' in page and "Only continue if" in page
    bad = client.post("/recipes/new", data=recipe_form(steps=[
        {"action": "filter", "key": "only", "inputs": {"condition": "{{ amount > }}"}}]))
    assert bad.status_code == 200 and errors_for(bad.get_data(as_text=True), "steps-0-inputs-condition")
    empty = client.post("/recipes/new", data=recipe_form(steps=[
        {"action": "filter", "key": "only", "inputs": {"condition": ""}}]))
    assert errors_for(empty.get_data(as_text=True), "steps-0-inputs-condition") == ["is required"]
    recipe_id = create(client, fields=[("amount", "$.amount")], steps=[
        {"action": "filter", "key": "only", "inputs": {"condition": "{{ amount > 100 }}"}}])
    with app.app_context():
        assert db.session.scalars(select(Run)).all() == []  # saving runs nothing
    assert recipe_id


ONE_EXPRESSION = "write the condition as one expression in {{ }}, e.g. {{ amount > 100 and status == 'paid' }}"


@pytest.mark.parametrize("condition, message", [
    ("status == 'paid'", ONE_EXPRESSION),  # no braces: renders as text, which is never false
    ("{{ amount > 100 }} and {{ status == 'paid' }}", ONE_EXPRESSION),  # renders "True and False"
    ("   ", ONE_EXPRESSION),
    ("{{ a }}{{ b }}", ONE_EXPRESSION),
    ("{% if a %}yes{% endif %}", ONE_EXPRESSION),
    (["{{ a }}"], ONE_EXPRESSION),
    (1, ONE_EXPRESSION),
    ("{{ }}", "line 1: Expected an expression, got 'end of print statement'"),  # the syntax error first
    ("", "is required"),
])
def test_a_condition_that_is_not_one_expression_is_refused_on_save(tmp_path, condition, message):
    """The review's report: these saved fine and then let every event through (or none)."""
    from automations import recipes
    from tests.conftest import make_app

    app = make_app(tmp_path)
    with app.app_context(), pytest.raises(recipes.RecipeInvalid) as exc:
        recipes.create(db.session, "r", {"steps": [{"key": "only", "action": "filter",
                                                    "inputs": {"condition": condition}}]})
    assert [(p.where, p.message) for p in exc.value.problems] == [("steps.0.inputs.condition", message)]


def test_a_condition_that_cannot_be_evaluated_for_an_event_filters_it_with_the_reason(live, sink):  # noqa: F811
    """The review's report: an event without the value the condition compares (``amount``
    missing: None > 100) failed its run; Zapier and n8n users expect "did not match"."""
    _rid, token = make_recipe(live.app, fields=_fields(), steps=[
        {"key": "big", "action": "filter", "inputs": {"condition": "{{ amount > 100 }}"}},
        http_step("crm", sink.url, "{}")])
    run_id = live.post(token, json={"paid": True}).json()["run_id"]
    assert wait_run(live.app, run_id, statuses=("succeeded", "filtered", "failed", "dead")) == "filtered"
    with live.app.app_context():
        run = db.session.get(Run, run_id)
        assert run.error.startswith("stopped at step 'big' (Only continue if): the condition could not be "
                                    "evaluated for this event (")
        assert "'>' not supported" in run.error and run.outputs["big"]["passed"] is False
    big = live.post(token, json={"amount": 500}).json()["run_id"]
    assert wait_run(live.app, big) == "succeeded" and len(sink.wait_for(1)) == 1


def test_the_alert_choices_leave_out_the_filter(app, client):
    """A dead-run alert is a message to someone; "Only continue if" sends nothing."""
    recipe_id = create(client)
    page = client.get(f"/recipes/{recipe_id}/edit").get_data(as_text=True)
    select = page[page.index('name="alert-action"'):]
    select = select[:select.index("</select>")]
    assert 'value="slack_message"' in select and 'value="filter"' not in select


def _trigger(body):
    return {"body": body, "headers": {}, "query": {}, "method": "POST"}


def test_the_preview_says_where_the_run_would_stop():
    definition = {"fields": _fields(), "steps": [
        PAID_OVER_100, {"key": "crm", "action": "http_request", "inputs": {"url": "https://crm.example/"}}]}
    stopped = preview(definition, _trigger({"amount": 50, "paid": True}))
    assert stopped.steps[0].note.startswith("stops the run for this event")
    assert stopped.steps[1].note == "not reached for this event: step 'big_paid' stops the run first"
    going = preview(definition, _trigger({"amount": 500, "paid": True}))
    assert going.steps[0].note == "passes for this event: the run goes on" and going.steps[1].note is None
    named = preview({"steps": [{"key": "only", "action": "filter",
                                "inputs": {"condition": "{{ trigger.body.steps_total > 5 }}"}}]}, _trigger({"steps_total": 3}))
    assert named.steps[0].note.startswith("stops the run for this event")  # "steps_total" is not steps
    missing = preview(definition, _trigger({"paid": True}))
    assert missing.steps[0].note == ("stops the run for this event: the condition cannot be evaluated for it, "
                                     "so the run would end as filtered")
    unrendered = preview(definition, _trigger({"amount": 50, "paid": True}), budget=0)  # out of time
    assert unrendered.steps[0].note is None and unrendered.steps[1].note is None  # no verdict, not "filtered"
    later = preview({"steps": [{"key": "a", "action": "http_request", "inputs": {"url": "https://x.example/"}},
                               {"key": "only", "action": "filter",
                                "inputs": {"condition": "{{ steps.a.body.ok }}"}}]}, _trigger({}))
    assert later.steps[1].note == "decided during the run: the condition uses an earlier step's output"
