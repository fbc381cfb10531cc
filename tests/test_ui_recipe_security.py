"""The recipe editor's "Verify the sender" and "When a run goes dead" sections through the
real form: settings stored, errors on their fields, other keys kept, and a signed webhook
end to end."""
from __future__ import annotations

import pytest

from automations.models import Recipe, RecipeVersion
from automations.recipes import Problem
from tests.test_ui_recipe_settings import imported, new, selected, settings_of
from tests.test_ui_recipes import (
    HTTP_STEP,
    add_connection,
    count,
    errors_for,
    errors_summary,
    recipe_form,
    value_of,
)
from web.extensions import db
from web.forms import RecipeEditor

GITHUB_SECRET = "It's a Secret to Everybody"  # GitHub's documented example
GITHUB_SIGNATURE = "sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17"
OFF = {"verify-preset": "", "verify-connection": "", "alert-action": "", "alert-pause_after_dead": ""}


def form(**sections: str) -> dict[str, str]:
    """The edit page's post: one HTTP step plus both sections (``verify-preset="github"``...)."""
    return recipe_form(steps=[HTTP_STEP], **{**OFF, **{k.replace("__", "-"): v for k, v in sections.items()}})


def secret(app, value: str = GITHUB_SECRET) -> int:
    return add_connection(app, "gh", "signing_secret", {"secret": value})


def test_new_page_shows_every_preset_and_alert_action(client):
    page = client.get("/recipes/new").get_data(as_text=True)
    assert "Verify the sender" in page and "When a run goes dead" in page
    for label in ("GitHub", "Stripe", "Shopify", "Slack: send message"):
        assert label in page
    assert 'href="/connections/new/signing_secret"' in page
    assert 'name="verify-stripe-tolerance"' in page and value_of(page, "verify-stripe-tolerance") == "300"
    assert 'name="alert-slack_message-inputs-text"' in page and "{{ run.id }}" in page
    assert 'placeholder="10"' in page and selected(page, "verify-preset") == ""


def test_saving_github_verification_stores_the_settings(app, client):
    conn = secret(app)
    add_connection(app, "team", "slack_webhook", {"webhook_url": "http://127.0.0.1:9/x"})
    recipe_id = new(client, form(verify__preset="github", verify__connection=str(conn)))
    assert settings_of(app, recipe_id) == {"verify": {"preset": "github", "connection": conn, "settings": {}}}
    page = client.get(f"/recipes/{recipe_id}/edit").get_data(as_text=True)
    assert selected(page, "verify-preset") == "github" and selected(page, "verify-connection") == str(conn)
    assert '<option value="1">team</option>' not in page.split('name="verify-connection"')[1].split("</select>")[0]


def test_preset_settings_come_from_the_chosen_block_only(app, client):
    conn = secret(app)
    data = form(verify__preset="stripe", verify__connection=str(conn), **{
        "verify__stripe-tolerance": "600", "verify__slack-tolerance": "5", "verify__hmac-header": "X-Sig"})
    recipe_id = new(client, data)
    assert settings_of(app, recipe_id)["verify"] == {"preset": "stripe", "connection": conn,
                                                     "settings": {"tolerance": 600}}
    page = client.get(f"/recipes/{recipe_id}/edit").get_data(as_text=True)
    assert value_of(page, "verify-stripe-tolerance") == "600"


def test_signed_webhook_end_to_end(app, client):
    conn = secret(app)
    recipe_id = new(client, form(verify__preset="github", verify__connection=str(conn)))
    with app.app_context():
        token = db.session.get(Recipe, recipe_id).token
    headers = {"Content-Type": "text/plain"}
    ok = client.post(f"/hooks/{token}", data=b"Hello, World!",
                     headers={**headers, "X-Hub-Signature-256": GITHUB_SIGNATURE})
    assert ok.status_code == 202
    bad = client.post(f"/hooks/{token}", data=b"Hello, World!",
                      headers={**headers, "X-Hub-Signature-256": "sha256=" + "0" * 64})
    assert bad.status_code == 401


def test_preset_without_connection_is_refused_on_the_connection_field(app, client):
    secret(app)
    resp = client.post("/recipes/new", data=form(verify__preset="github"))
    page = resp.get_data(as_text=True)
    assert resp.status_code == 200 and "Not saved" in page
    assert errors_for(page, "verify-connection") == ["choose a webhook signing secret connection"], \
        errors_summary(page)
    assert selected(page, "verify-preset") == "github" and count(app, Recipe) == 0


def test_bad_preset_option_is_shown_on_its_field(app, client):
    conn = secret(app)
    data = form(verify__preset="stripe", verify__connection=str(conn), **{"verify__stripe-tolerance": "0"})
    page = client.post("/recipes/new", data=data).get_data(as_text=True)
    assert any("from 1 to 86400" in e for e in errors_for(page, "verify-stripe-tolerance")), errors_summary(page)
    assert count(app, Recipe) == 0


def test_alert_round_trips_and_none_removes_it(app, client):
    conn = add_connection(app, "team", "slack_webhook", {"webhook_url": "http://127.0.0.1:9/x"})
    text = "{{ recipe.name }}: run {{ run.id }} dead ({{ error }}), paused={{ paused }}"
    data = form(alert__action="slack_message", alert__pause_after_dead="3", **{
        "alert__slack_message-connection": str(conn), "alert__slack_message-inputs-text": text})
    recipe_id = new(client, data)
    assert settings_of(app, recipe_id) == {
        "pause_after_dead": 3,
        "alert": {"action": "slack_message", "connection": conn, "inputs": {"text": text, "unfurl_links": False}}}
    page = client.get(f"/recipes/{recipe_id}/edit").get_data(as_text=True)
    assert selected(page, "alert-action") == "slack_message"
    assert selected(page, "alert-slack_message-connection") == str(conn)
    assert value_of(page, "alert-pause_after_dead") == "3"
    resp = client.post(f"/recipes/{recipe_id}/edit", data=data, follow_redirects=True)
    assert "definition unchanged" in resp.get_data(as_text=True)
    client.post(f"/recipes/{recipe_id}/edit", data=form())
    assert settings_of(app, recipe_id) == {}


def test_alert_without_connection_is_refused_on_its_field(app, client):
    add_connection(app, "team", "slack_webhook", {"webhook_url": "http://127.0.0.1:9/x"})
    add_connection(app, "ops", "slack_webhook", {"webhook_url": "http://127.0.0.1:9/y"})
    data = form(alert__action="slack_message", **{"alert__slack_message-inputs-text": ""})
    page = client.post("/recipes/new", data=data).get_data(as_text=True)
    assert errors_for(page, "alert-slack_message-connection") == ["choose a connection"], errors_summary(page)
    assert count(app, Recipe) == 0


@pytest.mark.parametrize("value", ["abc", "-1", "10001", "2.5"])
def test_invalid_pause_after_dead_is_refused_on_its_field(app, client, value):
    page = client.post("/recipes/new", data=form(alert__pause_after_dead=value)).get_data(as_text=True)
    assert any("whole number from 0 to 10000" in e for e in errors_for(page, "alert-pause_after_dead")), \
        errors_summary(page)
    assert count(app, Recipe) == 0


def test_pause_zero_is_kept_and_other_settings_survive(app, client):
    stored = {"x_team": {"owner": "ann"}, "retry": {"max_attempts": 3}, "pause_after_dead": 7}
    recipe_id = imported(app, client, stored)
    page = client.get(f"/recipes/{recipe_id}/edit").get_data(as_text=True)
    assert value_of(page, "alert-pause_after_dead") == "7"
    client.post(f"/recipes/{recipe_id}/edit", data=form(alert__pause_after_dead="0"))
    assert settings_of(app, recipe_id) == {**stored, "pause_after_dead": 0}
    assert count(app, RecipeVersion) == 3


def test_a_post_without_the_sections_keeps_settings(app, client):
    conn = secret(app)
    stored = {"verify": {"preset": "github", "connection": conn, "settings": {}}, "pause_after_dead": 2,
              "alert": {"action": "http_request", "connection": None, "inputs": {"method": "POST", "url": "http://x/{{ run.id }}", "body_type": "json"}}}
    recipe_id = imported(app, client, stored)
    resp = client.post(f"/recipes/{recipe_id}/edit", data=recipe_form(steps=[HTTP_STEP]), follow_redirects=True)
    assert "definition unchanged" in resp.get_data(as_text=True)
    assert settings_of(app, recipe_id) == stored


def test_engine_problems_land_on_the_section_fields(app):
    with app.test_request_context():
        settings = {"verify": {"preset": "hmac", "connection": 9, "settings": {}},
                    "alert": {"action": "slack_message", "inputs": {"text": "{{"}}}
        editor = RecipeEditor.from_definition("r", {"settings": settings}, [])
        editor.show([Problem("settings.verify.preset", "unknown preset"),
                     Problem("settings.verify.connection", "choose a webhook signing secret connection"),
                     Problem("settings.verify.settings", "Signature header is required"),
                     Problem("settings.alert.connection", "choose a connection"),
                     Problem("settings.alert.inputs.text", "bad template"),
                     Problem("settings.alert.inputs.nope", "'Slack' has no input 'nope'"),
                     Problem("settings.pause_after_dead", "must be a whole number")])
        v, a = editor.verify, editor.dead
        assert v["preset"].errors == ["unknown preset"]
        assert v["connection"].errors == ["choose a webhook signing secret connection"]
        assert v.blocks["hmac"]["header"].errors == ["Signature header is required"]
        block = a.blocks["slack_message"]
        assert block.form["connection"].errors == ["choose a connection"]
        assert block.inputs["text"].errors == ["bad template"]
        assert a["action"].errors == ["nope: 'Slack' has no input 'nope'"]
        assert a["pause_after_dead"].errors == ["must be a whole number"]
        assert editor.problems == [] and editor.error_count == 7
