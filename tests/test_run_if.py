"""A step's "Only run if": the step is skipped when its condition is false and the run goes
on, so two steps with opposite conditions are an if / else (n8n's IF, Zapier's Paths)."""
from __future__ import annotations

import html

import pytest
from sqlalchemy import select

from automations import portability, recipes
from automations.models import Recipe, Run
from automations.preview import preview
from tests.conftest import make_app, signed_in_client
from tests.sinks import HttpSink, Reply
from tests.test_e2e import http_step, live, make_recipe, steps_of, wait_run  # noqa: F401 - fixtures
from tests.test_ui_recipes import HTTP_STEP, errors_for, recipe_form, value_of
from web.extensions import db

FIELDS = [{"name": "kind", "path": "$.kind"}, {"name": "amount", "path": "$.amount"}]


def if_else(url):
    return [{**http_step("crm", url + "/crm", '{"order": {{ amount }}}'), "run_if": "{{ kind == 'order' }}"},
            {**http_step("chat", url + "/chat", '{"other": "{{ kind }}"}'), "run_if": "{{ kind != 'order' }}"}]


def test_two_steps_with_opposite_conditions_are_an_if_else(live, sink):  # noqa: F811 - fixtures
    _rid, token = make_recipe(live.app, fields=FIELDS, steps=if_else(sink.url))
    order = live.post(token, json={"kind": "order", "amount": 30}).json()["run_id"]
    assert wait_run(live.app, order) == "succeeded"
    other = live.post(token, json={"kind": "refund"}).json()["run_id"]
    assert wait_run(live.app, other) == "succeeded"
    assert [(r.path, r.json()) for r in sink.wait_for(2)] == [("/crm", {"order": 30}), ("/chat", {"other": "refund"})]
    crm, chat = steps_of(live.app, order)
    assert (crm["status"], chat["status"]) == ("succeeded", "skipped")
    assert chat["error"] == "its condition was false" and chat["input"] == {"run_if": False}
    assert chat["request"] is None and chat["response"] is None  # nothing was sent
    assert [s["status"] for s in steps_of(live.app, other)] == ["skipped", "succeeded"]
    with live.app.app_context():
        run = db.session.get(Run, order)
        assert run.error is None and run.step_index == 2
        assert "crm" in run.outputs and "chat" not in run.outputs  # a skipped step leaves no output


def test_a_condition_on_an_earlier_steps_answer(live):  # noqa: F811
    """Create the contact only when the lookup found none; a later step sees what was skipped."""
    def crm(req):
        return Reply(200, {"found": req.query.get("email") == ["known@example.com"]})

    with HttpSink(crm) as api:
        steps = [
            {"key": "lookup", "action": "http_request",
             "inputs": {"method": "GET", "url": api.url + "/lookup", "query": '{"email": "{{ email }}"}', "body_type": "none"}},
            {**http_step("create", api.url + "/create", '{"email": "{{ email }}"}'),
             "run_if": "{{ not steps.lookup.body.found }}"},
            http_step("log", api.url + "/log", '{"created": "{% if steps.create %}yes{% else %}no{% endif %}"}'),
        ]
        _rid, token = make_recipe(live.app, fields=[{"name": "email", "path": "$.email"}], steps=steps)
        known = live.post(token, json={"email": "known@example.com"}).json()["run_id"]
        assert wait_run(live.app, known) == "succeeded"
        new = live.post(token, json={"email": "new@example.com"}).json()["run_id"]
        assert wait_run(live.app, new) == "succeeded"
        paths = [(r.path.split("?")[0], r.json() if r.method == "POST" else None) for r in api.wait_for(5)]
    assert paths == [("/lookup", None), ("/log", {"created": "no"}),
                     ("/lookup", None), ("/create", {"email": "new@example.com"}), ("/log", {"created": "yes"})]
    assert [s["status"] for s in steps_of(live.app, known)] == ["succeeded", "skipped", "succeeded"]


def test_a_condition_that_cannot_be_evaluated_skips_the_step_with_the_reason(live, sink):  # noqa: F811
    _rid, token = make_recipe(live.app, fields=FIELDS, steps=[
        {**http_step("big", sink.url + "/big", "{}"), "run_if": "{{ amount > 100 }}"},
        http_step("always", sink.url + "/always", "{}")])
    run_id = live.post(token, json={"kind": "order"}).json()["run_id"]  # no amount: None > 100
    assert wait_run(live.app, run_id) == "succeeded"
    assert [r.path for r in sink.wait_for(1)] == ["/always"]
    big, always = steps_of(live.app, run_id)
    assert big["status"] == "skipped" and always["status"] == "succeeded"
    assert big["error"].startswith("its condition could not be evaluated for this event (")
    assert "'>' not supported" in big["error"]


def test_a_skipped_last_step_ends_the_run_succeeded_and_the_history_says_why(live, sink):  # noqa: F811
    _rid, token = make_recipe(live.app, fields=FIELDS, steps=if_else(sink.url)[:1])
    run_id = live.post(token, json={"kind": "refund"}).json()["run_id"]
    assert wait_run(live.app, run_id) == "succeeded"
    assert sink.requests == []
    page = html.unescape(signed_in_client(live.app, "viewer").get(f"/runs/{run_id}").get_data(as_text=True))
    assert "Skipped:</strong> its condition was false; the run went on." in page
    assert 'badge-skipped' in page and "error-box" not in page


ONE_EXPRESSION = "write the condition as one expression in {{ }}, e.g. {{ amount > 100 and status == 'paid' }}"


@pytest.mark.parametrize("condition, message", [
    ("kind == 'order'", ONE_EXPRESSION),  # no braces: it renders as text, which is never false
    ("{{ kind == }}", "line 1: unexpected 'end of print statement'"),  # the syntax error, with its line
])
def test_a_condition_that_is_not_one_expression_is_refused_on_save(tmp_path, condition, message):
    app = make_app(tmp_path)
    with app.app_context():
        with pytest.raises(recipes.RecipeInvalid) as exc:
            recipes.create(db.session, "r", {"steps": [{**HTTP_STEP, "run_if": condition}]})
        assert [(p.where, p.message) for p in exc.value.problems] == [("steps.0.run_if", message)]
        assert db.session.scalars(select(Recipe)).all() == []


def test_a_blank_condition_means_always_and_one_with_spaces_around_is_trimmed(tmp_path):
    """The same rule for a recipe file or the API as for the editor's field."""
    app = make_app(tmp_path)
    with app.app_context():
        recipe = recipes.create(db.session, "r", {"steps": [
            {**HTTP_STEP, "run_if": "  {{ kind == 'order' }}\n"}, {**HTTP_STEP, "key": "second", "run_if": "   "}]})
        first, second = recipes.current_definition(recipe)["steps"]
    assert first["run_if"] == "{{ kind == 'order' }}" and "run_if" not in second


def test_the_editor_saves_the_condition_and_shows_its_error_on_the_field(app, client):
    bad = client.post("/recipes/new", data=recipe_form(steps=[HTTP_STEP], **{"steps-0-run_if": "{{ kind == }}"}))
    assert bad.status_code == 200
    assert errors_for(bad.get_data(as_text=True), "steps-0-run_if") == [
        "line 1: unexpected 'end of print statement'"]
    with app.app_context():
        assert db.session.scalars(select(Recipe)).all() == []  # nothing saved half-way
    saved = client.post("/recipes/new", data=recipe_form(steps=[HTTP_STEP, {**HTTP_STEP, "key": "second"}],
                                                         **{"steps-0-run_if": "  {{ kind == 'order' }} ",
                                                            "steps-1-run_if": "  "}))
    assert saved.status_code == 302
    recipe_id = int(saved.location.rstrip("/").rsplit("/", 1)[1])
    with app.app_context():
        first, second = recipes.current_definition(db.session.get(Recipe, recipe_id))["steps"]
    assert first["run_if"] == "{{ kind == 'order' }}" and "run_if" not in second  # blank: always runs
    page = client.get(f"/recipes/{recipe_id}/edit").get_data(as_text=True)
    assert value_of(page, "steps-0-run_if") == "{{ kind == 'order' }}" and "Only run if" in page
    shown = html.unescape(client.get(f"/recipes/{recipe_id}").get_data(as_text=True))
    assert "Only runs if <code>{{ kind == 'order' }}</code>; otherwise skipped" in shown


def _trigger(body):
    return {"body": body, "headers": {}, "query": {}, "method": "POST"}


def test_the_preview_says_whether_each_step_runs_for_the_sample():
    definition = {"fields": FIELDS, "steps": [
        *if_else("https://crm.example"),
        {"key": "gate", "action": "filter", "run_if": "{{ kind == 'order' }}",
         "inputs": {"condition": "{{ amount > 100 }}"}},
        {"key": "after", "action": "http_request", "run_if": "{{ steps.crm.status == 200 }}",
         "inputs": {"url": "https://x.example/"}}]}
    refund = preview(definition, _trigger({"kind": "refund", "amount": 5}))
    assert [s.note for s in refund.steps] == [
        "skipped for this event: its condition was false; the run goes on with the next step",
        "its condition holds for this event: this step runs",
        "skipped for this event: its condition was false; the run goes on with the next step",  # not filtered
        "decided during the run: its condition uses an earlier step's output"]
    order = preview(definition, _trigger({"kind": "order", "amount": 5}))
    assert order.steps[2].note == ("its condition holds for this event: this step runs; "
                                   "stops the run for this event: it would end as filtered, the later steps not run")
    assert order.steps[3].note == "not reached for this event: step 'gate' stops the run first"
    maybe = preview({"fields": FIELDS, "steps": [
        {"key": "a", "action": "http_request", "inputs": {"url": "https://x.example/"}},
        {"key": "gate", "action": "filter", "run_if": "{{ steps.a.status == 200 }}",
         "inputs": {"condition": "{{ amount > 100 }}"}},
        {"key": "b", "action": "http_request", "inputs": {"url": "https://y.example/"}}]},
        _trigger({"kind": "order", "amount": 5}))
    assert maybe.steps[1].note == ("decided during the run: its condition uses an earlier step's output; if it runs: "
                                   "stops the run for this event: it would end as filtered, the later steps not run")
    assert maybe.steps[2].note is None  # it may be reached: the filter may be skipped
    missing = preview({"fields": FIELDS, "steps": [{"key": "a", "action": "http_request",
                                                    "run_if": "{{ amount > 100 }}",
                                                    "inputs": {"url": "https://x.example/"}}]}, _trigger({}))
    assert missing.steps[0].note.startswith("skipped for this event: its condition could not be evaluated")


def test_export_and_import_keep_the_condition(tmp_path):
    source = make_app(tmp_path / "a")
    with source.app_context():
        recipes.create(db.session, "routed", {"fields": FIELDS, "steps": if_else("https://crm.example")})
        text = portability.dumps(portability.export_all(db.session))
    assert "run_if: '{{ kind == ''order'' }}'" in text
    target = make_app(tmp_path / "b")
    with target.app_context():
        portability.import_all(db.session, portability.loads(text))
        [recipe] = db.session.scalars(select(Recipe)).all()
        steps = recipes.current_definition(recipe)["steps"]
    assert [s.get("run_if") for s in steps] == ["{{ kind == 'order' }}", "{{ kind != 'order' }}"]
