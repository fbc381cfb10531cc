"""The form builder's live preview: what a recipe would send for a sample event, computed as
a run computes it, without sending anything."""
from __future__ import annotations

import html
import re

from sqlalchemy import select

from automations import recipes as recipes_mod
from automations.models import Event, Recipe
from automations.preview import preview
from tests.conftest import signed_in_client
from tests.sinks import HttpSink
from tests.test_ui_recipes import create, recipe_form
from web.extensions import db

STRIPE = {"body": {"id": "evt_1", "data": {"object": {"amount_total": 1999, "customer_details": {
    "email": "ann@example.com", "name": "Ann Lee"}}}},
    "headers": {"content-type": "application/json"}, "query": {}, "method": "POST",
    "received_at": "2026-11-28T12:00:00Z"}


def test_fields_and_each_steps_inputs_are_rendered_as_a_run_would_without_sending() -> None:
    with HttpSink() as sink:
        definition = {
            "fields": [{"name": "email", "path": "$.data.object.customer_details.email"},
                       {"name": "cents", "path": "$.data.object.amount_total"},
                       {"name": "coupon", "path": "$.data.object.discount.code", "default": "none"}],
            "steps": [{"key": "crm", "action": "http_request", "inputs": {
                "method": "POST", "url": sink.url + "/contacts", "body_type": "json",
                "body": '{"email": "{{ email }}", "dollars": {{ cents / 100 }}, "coupon": "{{ coupon }}"}'}}],
        }
        result = preview(definition, STRIPE)
        assert sink.requests == []
    assert result.fields == {"email": "ann@example.com", "cents": 1999, "coupon": "none"}
    assert result.field_errors == {}
    [step] = result.steps
    shown = {i.name: i.value for i in step.inputs}
    assert step.label == "HTTP request" and step.error is None
    assert shown["url"] == sink.url + "/contacts"
    assert shown["body"] == '{"email": "ann@example.com", "dollars": 19.99, "coupon": "none"}'


def test_one_mistake_shows_on_its_own_line_and_hides_nothing_else() -> None:
    definition = {
        "fields": [{"name": "email", "path": "$.data.object.customer_details.email"},
                   {"name": "broken", "path": "$.data[?(@.x >"}],
        "steps": [{"key": "chat", "action": "slack_message", "inputs": {"text": "{{ email | nosuchfilter }}"}},
                  {"key": "mail", "action": "http_request", "inputs": {
                      "method": "POST", "url": "https://crm.example/{{ email }}", "body_type": "raw",
                      "body": "{% for %}"}}],
    }
    result = preview(definition, STRIPE)
    assert result.fields == {"email": "ann@example.com"}
    assert "broken" in result.field_errors and "$.data[?(@.x >" in result.field_errors["broken"]
    chat, mail = result.steps
    [text] = [i for i in chat.inputs if i.name == "text"]
    assert text.value is None and "nosuchfilter" in text.error
    by_name = {i.name: i for i in mail.inputs}
    assert by_name["url"].value == "https://crm.example/ann@example.com" and by_name["url"].error is None
    assert by_name["body"].error and by_name["body"].value is None


def test_an_earlier_steps_output_shows_as_its_name_until_it_runs() -> None:
    definition = {"fields": [], "steps": [
        {"key": "crm", "action": "http_request", "inputs": {"method": "POST", "url": "https://crm.example/c"}},
        {"key": "chat", "action": "slack_message", "inputs": {
            "text": "Contact {{ steps.crm.body.id }}, first item {{ steps.crm.body.items[0] }}, "
                    "{{ steps.crm.status | string | upper }}"}},
        {"key": "again", "action": "http_request", "inputs": {
            "method": "POST", "url": "https://x.example/", "body_type": "json", "body": "{{ steps.crm.body }}"}},
    ]}
    _crm, chat, again = preview(definition, STRIPE).steps
    text = {i.name: i.value for i in chat.inputs}["text"]
    assert text == "Contact ‹steps.crm.body.id›, first item ‹steps.crm.body.items[0]›, ‹STEPS.CRM.STATUS›"
    assert {i.name: i.value for i in again.inputs}["body"] == "‹steps.crm.body›"


def test_an_unknown_action_is_reported_not_raised() -> None:
    [step] = preview({"steps": [{"key": "x", "action": "nope", "inputs": {}}]}, STRIPE).steps
    assert step.error == "unknown action 'nope'"


# --- in the editor -------------------------------------------------------------------------

def _recipe_with_sample(app, client, sink_url: str) -> int:
    recipe_id = create(client, fields=[("email", "$.customer.email")],
                       steps=[{"action": "http_request", "key": "crm", "inputs": {
                           "method": "POST", "url": sink_url + "/c", "body_type": "json",
                           "body": '{"email": "{{ email }}"}'}}])
    with app.app_context():
        token = db.session.get(Recipe, recipe_id).token
    assert client.post(f"/hooks/{token}", json={"customer": {"email": "ann@example.com", "name": "Ann"}}
                       ).status_code == 202
    return recipe_id


def test_the_editor_previews_the_form_as_typed_without_saving_or_sending(app, client) -> None:
    with HttpSink() as sink:
        recipe_id = _recipe_with_sample(app, client, sink.url)
        page = client.get(f"/recipes/{recipe_id}/edit").get_data(as_text=True)
        assert 'id="preview"' in page and "ann@example.com" in page  # the saved recipe, at once
        typed = recipe_form(fields=[("email", "$.customer.email"), ("who", "$.customer.name")],
                            steps=[{"action": "http_request", "key": "crm", "inputs": {
                                "method": "POST", "url": sink.url + "/c", "body_type": "json",
                                "body": '{"to": "{{ who | upper }} <{{ email }}>"}'}},
                                   {"action": "slack_message", "key": "chat", "inputs": {
                                       "text": "CRM said {{ steps.crm.body.id }}; {{ who | nosuch }}"}}])
        resp = client.post(f"/recipes/{recipe_id}/preview", data=typed)
        assert resp.status_code == 200
        shown = html.unescape(resp.get_data(as_text=True))
        assert shown.lstrip().startswith("<div id=\"preview-body\"")  # the panel alone, for the script
        assert '{"to": "ANN <ann@example.com>"}' in shown
        assert "nosuch" in shown  # the slack text's error, on its own line...
        assert "Step 2" in shown and "Slack" in shown
        # ... nothing saved, nothing sent
        with app.app_context():
            assert db.session.get(Recipe, recipe_id).current_version == 1
        assert sink.requests == []  # this app has no runner: anything here would be the preview sending


def test_without_javascript_the_preview_button_refreshes_and_saves_nothing(app, client) -> None:
    with HttpSink() as sink:
        recipe_id = _recipe_with_sample(app, client, sink.url)
        typed = recipe_form(fields=[("email", "$.customer.email")],
                            steps=[{"action": "http_request", "key": "crm", "inputs": {
                                "method": "POST", "url": sink.url + "/c", "body_type": "json",
                                "body": '{"shout": "{{ email | upper }}"}'}}], refresh_preview="1")
        resp = client.post(f"/recipes/{recipe_id}/edit", data=typed)
        assert resp.status_code == 200
        assert '{"shout": "ANN@EXAMPLE.COM"}' in html.unescape(resp.get_data(as_text=True))
        with app.app_context():
            assert db.session.get(Recipe, recipe_id).current_version == 1


def test_preview_needs_a_sample_and_an_editor(app, client) -> None:
    recipe_id = create(client, steps=[{"action": "http_request", "key": "crm", "inputs": {"url": "https://crm.example/"}}])
    shown = client.post(f"/recipes/{recipe_id}/preview", data=recipe_form()).get_data(as_text=True)
    assert "No event received yet" in shown
    viewer = signed_in_client(app, "viewer")
    assert viewer.post(f"/recipes/{recipe_id}/preview", data=recipe_form()).status_code == 403


SLOW = "{{ ('a' * 100000) | regex_findall('\\\\w+\\\\d') }}"  # runs into the 1 s regex deadline


def test_a_preview_has_one_budget_for_all_its_inputs() -> None:
    steps = [{"key": f"s{i}", "action": "slack_message", "inputs": {"text": SLOW}} for i in range(4)]
    result = preview({"steps": steps}, STRIPE, budget=0.5)
    texts = [next(i for i in s.inputs if i.name == "text") for s in result.steps]
    assert texts[0].error and "not previewed" not in texts[0].error  # rendered, and failed on its own
    assert all(t.error == "not previewed: the preview took longer than 0.5 s" for t in texts[1:])


def test_a_slow_preview_does_not_hold_up_webhooks(tmp_path) -> None:
    """The review's report: while an editor's preview of slow templates ran, a webhook waited
    behind it (the request's transaction held SQLite's write lock) and got 503."""
    import threading
    import time

    import requests

    from tests.conftest import PASSWORD, ensure_user
    from tests.live import LiveServer, make_live_app

    live = LiveServer(make_live_app(tmp_path), with_runner=False)
    try:
        app = live.app
        email = ensure_user(app, "editor")
        with app.app_context():
            recipe = recipes_mod.create(db.session, "r", {"steps": [
                {"key": "s", "action": "http_request", "inputs": {"method": "POST", "url": "https://crm.example/",
                                                                  "body_type": "raw", "body": SLOW}}]})
            recipe_id, token = recipe.id, recipe.token
        assert live.post(token, json={"sample": 1}).status_code == 202
        browser = requests.Session()
        assert browser.post(f"{live.url}/login", data={"email": email, "password": PASSWORD},
                            timeout=10).status_code == 200
        form = recipe_form(steps=[{"action": "http_request", "key": f"s{i}", "inputs": {
            "url": "https://crm.example/", "body": SLOW}} for i in range(3)])
        slow = threading.Thread(target=lambda: browser.post(f"{live.url}/recipes/{recipe_id}/preview",
                                                            data=form, timeout=30))
        slow.start()
        time.sleep(0.5)  # the preview is rendering now
        started = time.monotonic()
        resp = live.post(token, json={"during": True})
        waited = time.monotonic() - started
        slow.join(30)
        assert resp.status_code == 202 and waited < 1.0, (resp.status_code, waited)
    finally:
        live.close()


def _three_events(app, client, sink_url: str) -> tuple[int, list[int]]:
    """Ann's order, then Bob's, then a test request whose JSON did not parse (the newest)."""
    recipe_id = _recipe_with_sample(app, client, sink_url)
    with app.app_context():
        token = db.session.get(Recipe, recipe_id).token
    client.post(f"/hooks/{token}", json={"customer": {"email": "bob@example.com", "tier": "gold"}})
    client.post(f"/hooks/{token}", data="{not json", content_type="application/json")
    with app.app_context():
        ids = list(db.session.scalars(select(Event.id).where(Event.recipe_id == recipe_id).order_by(Event.id)))
    return recipe_id, ids


def test_the_editor_samples_the_newest_readable_event_not_a_broken_one(app, client) -> None:
    """Reported: "after one bad test request, the field picker showed nothing and the preview
    said the body could not be read, although the tool had sent good events before"."""
    with HttpSink() as sink:
        recipe_id, (ann, bob, broken) = _three_events(app, client, sink.url)
        page = html.unescape(client.get(f"/recipes/{recipe_id}/edit").get_data(as_text=True))
    assert 'data-path="$.customer.tier"' in page  # Bob's event: the newest that parsed
    assert '"bob@example.com"' in page.split('id="preview"')[1]
    options = re.findall(r'<option value="(\d+)"( selected)?>([^<]*)</option>', page)
    assert [int(v) for v, _sel, _label in options] == [broken, bob, ann]  # every recent one, newest first
    assert [int(v) for v, sel, _label in options if sel] == [bob]
    assert "could not be read" in options[0][2] and "could not be read" not in options[1][2]


def test_choosing_another_sample_changes_the_paths_and_the_preview(app, client) -> None:
    with HttpSink() as sink:
        recipe_id, (ann, _bob, broken) = _three_events(app, client, sink.url)
        form = recipe_form(fields=[("email", "$.customer.email")],
                           steps=[{"action": "http_request", "key": "crm", "inputs": {
                               "method": "POST", "url": sink.url + "/c", "body_type": "json",
                               "body": '{"email": "{{ email }}"}'}}])
        # Without JavaScript: the "Use this event" button re-renders the editor, saving nothing.
        page = html.unescape(client.post(f"/recipes/{recipe_id}/edit", data={
            **form, "sample_event": str(ann), "refresh_preview": "1"}).get_data(as_text=True))
        assert 'data-path="$.customer.name"' in page and 'data-path="$.customer.tier"' not in page
        assert '{"email": "ann@example.com"}' in page
        assert re.search(rf'<option value="{ann}" selected>', page)
        # The live preview the script fetches follows the same choice.
        panel = html.unescape(client.post(f"/recipes/{recipe_id}/preview",
                                          data={**form, "sample_event": str(ann)}).get_data(as_text=True))
        assert '{"email": "ann@example.com"}' in panel and f"event #{ann}" in panel
        # The broken one can be chosen, and says why it cannot be previewed.
        panel = html.unescape(client.post(f"/recipes/{recipe_id}/preview",
                                          data={**form, "sample_event": str(broken)}).get_data(as_text=True))
        assert f"Event #{broken}'s body could not be read" in panel
        with app.app_context():
            assert db.session.get(Recipe, recipe_id).current_version == 1
        assert sink.requests == []


def test_a_sample_from_another_recipe_is_not_shown(app, client) -> None:
    """The choice arrives from the browser: an id that is not one of this recipe's recent
    events falls back to the default instead of showing another recipe's payload."""
    with HttpSink() as sink:
        recipe_id, (_ann, bob, _broken) = _three_events(app, client, sink.url)
        other = create(client, name="Other", fields=[("x", "$.x")])
        with app.app_context():
            token = db.session.get(Recipe, other).token
        client.post(f"/hooks/{token}", json={"secret": "other recipe's payload"})
        with app.app_context():
            foreign = db.session.scalar(select(Event.id).where(Event.recipe_id == other))
        page = client.get(f"/recipes/{recipe_id}/edit?sample_event={foreign}").get_data(as_text=True)
    assert "other recipe" not in page and re.search(rf'<option value="{bob}" selected>', page)


def test_the_preview_leaves_out_inputs_the_run_ignores() -> None:
    """A raw body's content type beside a JSON body, a body beside "No body": showing them
    would say they are sent."""
    def shown(**inputs):
        step = {"key": "s", "action": "http_request",
                "inputs": {"method": "POST", "url": "https://crm.example/", "body": "{}", **inputs}}
        return [i.name for i in preview(recipes_mod.normalize({"steps": [step]}), {"body": {}}).steps[0].inputs]

    assert "content_type" not in shown(body_type="json") and "body" in shown(body_type="json")
    assert "content_type" in shown(body_type="raw", content_type="text/csv")
    assert "body" not in shown(body_type="none")
