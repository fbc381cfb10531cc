"""Recipe pages through the real forms: create, edit, errors on their fields, pause/resume,
the inbound URL and the field picker."""
from __future__ import annotations

import html
import re
from typing import Any

import pytest
from sqlalchemy import func, select

from automations import connections
from automations.mapping import validate_path
from automations.models import Recipe, RecipeVersion, Run
from automations.templating import validate_template
from tests.conftest import make_app, signed_in_client
from web.extensions import core, db


def count(app, model) -> int:
    with app.app_context():
        return db.session.scalar(select(func.count()).select_from(model))


def add_connection(app, name: str, kind: str, values: dict[str, Any]) -> int:
    with app.app_context():
        return connections.create(db.session, core().secret_box, name, kind, values).id


def recipe_form(name: str = "Orders", fields: list[tuple[str, str]] = (),
                steps: list[dict[str, Any]] = (), **extra: str) -> dict[str, str]:
    """What the edit page posts: ``steps`` items are {"action", "key", "connection", "inputs"}."""
    data = {"name": name, **extra}
    for i, (fname, path) in enumerate(fields):
        data |= {f"fields-{i}-name": fname, f"fields-{i}-path": path}
    for i, step in enumerate(steps):
        data |= {f"steps-{i}-action": step["action"], f"steps-{i}-key": step.get("key", f"s{i}"),
                 f"steps-{i}-connection": str(step.get("connection", ""))}
        data |= {f"steps-{i}-inputs-{k}": v for k, v in step.get("inputs", {}).items()}
    return data


def errors_for(page: str, field_id: str) -> list[str]:
    """The error texts rendered next to one field (in its ``<id>-note`` block)."""
    m = re.search(rf'id="{re.escape(field_id)}-note">(.*?)</div>', page, re.DOTALL)
    return [html.unescape(e) for e in re.findall(r'<p class="error">(.*?)</p>', m.group(1))] if m else []


HTTP_STEP = {"action": "http_request", "key": "post_it",
             "inputs": {"method": "POST", "url": "http://127.0.0.1:9/in", "body_type": "json",
                        "body": '{"email": "{{ email }}"}'}}


def create(client, **kw: Any) -> int:
    resp = client.post("/recipes/new", data=recipe_form(**kw))
    assert resp.status_code == 302, errors_summary(resp.get_data(as_text=True))
    return int(resp.location.rstrip("/").rsplit("/", 1)[1])


def value_of(page: str, name: str) -> str | None:
    m = re.search(rf'<input[^>]*\bname="{re.escape(name)}"[^>]*>', page)
    v = re.search(r'\bvalue="([^"]*)"', m.group(0)) if m else None
    return html.unescape(v.group(1)) if v else None


def errors_summary(page: str) -> list[str]:
    return [html.unescape(e) for e in re.findall(r'<p class="error">(.*?)</p>', page)]


def test_new_page_offers_every_action_grouped(client):
    page = client.get("/recipes/new").get_data(as_text=True)
    for label in ("HTTP", "Chat", "Email", "HTTP request", "Slack: send message", "Email: send (SMTP)"):
        assert html.escape(label) in page or label in page
    assert 'name="add_step" value="slack_message"' in page


def test_add_and_remove_steps_and_fields_without_javascript(app, client):
    page = client.post("/recipes/new", data=recipe_form(add_step="http_request")).get_data(as_text=True)
    assert 'name="steps-0-inputs-url"' in page and value_of(page, "steps-0-key") == "http_request"
    data = recipe_form(steps=[HTTP_STEP, {**HTTP_STEP, "key": "second"}], add_field="1",
                       fields=[("email", "$.email")], step_up="1")
    page = client.post("/recipes/new", data=data).get_data(as_text=True)
    assert page.index('value="second"') < page.index('value="post_it"')  # moved up
    assert 'name="fields-1-path"' in page and 'value="$.email"' in page
    data = recipe_form(steps=[HTTP_STEP, {**HTTP_STEP, "key": "second"}], remove_step="0")
    page = client.post("/recipes/new", data=data).get_data(as_text=True)
    assert 'value="second"' in page and 'value="post_it"' not in page
    assert "steps-1-key" not in page
    assert count(app, Recipe) == 0  # reshaping the page never saves


def test_create_saves_recipe_and_version(app, client):
    conn = add_connection(app, "team", "slack_webhook", {"webhook_url": "http://127.0.0.1:9/x"})
    slack = {"action": "slack_message", "key": "notify", "connection": conn,
             "inputs": {"text": "New {{ email }}", "unfurl_links": "y"}}
    http_step = {**HTTP_STEP, "inputs": {**HTTP_STEP["inputs"], "headers": "X-One: 1\nX-Two: {{ email }}"}}
    recipe_id = create(client, fields=[("email", "$.data.email")], steps=[slack, http_step])
    with app.app_context():
        recipe = db.session.get(Recipe, recipe_id)
        (version,) = recipe.versions
        steps = version.definition["steps"]
    assert recipe.name == "Orders" and version.version == 1
    assert version.definition["fields"] == [{"name": "email", "path": "$.data.email"}]
    assert steps[0] == {"key": "notify", "name": "", "action": "slack_message", "connection": conn,
                        "inputs": {"text": "New {{ email }}", "unfurl_links": True}}
    assert steps[1]["connection"] is None
    assert steps[1]["inputs"]["headers"] == {"X-One": "1", "X-Two": "{{ email }}"}
    page = client.get(f"/recipes/{recipe_id}").get_data(as_text=True)
    assert "version 1" in page and "Slack: send message" in page and "team" in page


BAD_INPUTS = [
    pytest.param({"fields": [("email", "$.[")]}, "fields-0-path", validate_path("$.["), id="bad-jsonpath"),
    pytest.param({"fields": [("1email", "$.email")]}, "fields-0-name", "letters", id="bad-field-name"),
    pytest.param({"steps": [{**HTTP_STEP, "inputs": {**HTTP_STEP["inputs"], "url": "{{ email"}}]},
                 "steps-0-inputs-url", validate_template("{{ email"), id="bad-template"),
    pytest.param({"steps": [{**HTTP_STEP, "inputs": {**HTTP_STEP["inputs"], "url": ""}}]},
                 "steps-0-inputs-url", "is required", id="missing-required-input"),
    pytest.param({"steps": [{**HTTP_STEP, "inputs": {**HTTP_STEP["inputs"], "headers": "no colon"}}]},
                 "steps-0-inputs-headers", "Name: value", id="bad-keyvalue-line"),
    pytest.param({"steps": [{**HTTP_STEP, "key": "steps"}]}, "steps-0-key", "reserved", id="reserved-key"),
    pytest.param({"name": "  "}, "name", "is required", id="missing-name"),
]


@pytest.mark.parametrize("form, field_id, message", BAD_INPUTS)
def test_invalid_recipe_shows_error_on_field_and_writes_nothing(app, client, form, field_id, message):
    resp = client.post("/recipes/new", data=recipe_form(**{"steps": [HTTP_STEP], **form}))
    assert resp.status_code == 200
    page = resp.get_data(as_text=True)
    assert any(message in e for e in errors_for(page, field_id)), errors_summary(page)
    assert "Not saved" in page
    assert count(app, Recipe) == 0 and count(app, RecipeVersion) == 0


def test_wrong_connection_kind_is_refused_on_the_connection_field(app, client):
    smtp = add_connection(app, "mail", "smtp", {"host": "127.0.0.1", "port": 25, "security": "none",
                                                "from_address": "a@example.com"})
    step = {"action": "slack_message", "key": "notify", "connection": smtp, "inputs": {"text": "hi"}}
    page = client.post("/recipes/new", data=recipe_form(steps=[step])).get_data(as_text=True)
    assert any("'mail' is a smtp connection" in e for e in errors_for(page, "steps-0-connection"))
    assert count(app, Recipe) == 0


def test_invalid_edit_keeps_the_current_version(app, client):
    recipe_id = create(client, fields=[("email", "$.email")], steps=[HTTP_STEP])
    bad = recipe_form(name="Renamed", fields=[("email", "$..[")], steps=[HTTP_STEP])
    resp = client.post(f"/recipes/{recipe_id}/edit", data=bad)
    assert resp.status_code == 200 and errors_for(resp.get_data(as_text=True), "fields-0-path")
    with app.app_context():
        recipe = db.session.get(Recipe, recipe_id)
        assert (recipe.name, recipe.current_version, len(recipe.versions)) == ("Orders", 1, 1)


def test_edit_saves_a_new_version_only_when_changed(app, client):
    recipe_id = create(client, fields=[("email", "$.email")], steps=[HTTP_STEP])
    same = recipe_form(fields=[("email", "$.email")], steps=[HTTP_STEP])
    resp = client.post(f"/recipes/{recipe_id}/edit", data=same, follow_redirects=True)
    assert "definition unchanged" in resp.get_data(as_text=True)
    changed = recipe_form(fields=[("email", "$.customer.email")], steps=[HTTP_STEP])
    resp = client.post(f"/recipes/{recipe_id}/edit", data=changed, follow_redirects=True)
    assert "Saved as version 2" in resp.get_data(as_text=True)
    assert count(app, RecipeVersion) == 2
    page = client.get(f"/recipes/{recipe_id}/edit").get_data(as_text=True)
    assert 'value="$.customer.email"' in page and "X-One" not in page


def test_detail_shows_inbound_url_and_curl(tmp_path):
    app = make_app(tmp_path, PUBLIC_URL="https://hooks.example.com/")
    client = signed_in_client(app)
    recipe_id = create(client)
    with app.app_context():
        token = db.session.get(Recipe, recipe_id).token
    page = html.unescape(client.get(f"/recipes/{recipe_id}").get_data(as_text=True))
    url = f"https://hooks.example.com/hooks/{token}"
    assert f'<code id="inbound-url" class="url">{url}</code>' in page
    assert f"""curl -X POST '{url}' -H 'Content-Type: application/json' -d '{{"hello": "world"}}'""" in page
    assert 'data-copy="#inbound-url"' in page
    assert url in client.get("/recipes/").get_data(as_text=True)


@pytest.mark.parametrize("choice, status", [("run", "queued"), ("keep", "held")])
def test_pause_holds_events_and_resume_offers_to_run_them(app, client, choice, status):
    recipe_id = create(client, steps=[HTTP_STEP])
    with app.app_context():
        token = db.session.get(Recipe, recipe_id).token
    client.post(f"/recipes/{recipe_id}/pause", data={"reason": "maintenance"})
    resp = client.post(f"/hooks/{token}", json={"email": "a@example.com"})
    assert resp.status_code == 202 and resp.get_json()["status"] == "held"
    page = client.get(f"/recipes/{recipe_id}").get_data(as_text=True)
    assert "maintenance" in page and "Resume and run 1 held event<" in page and "Resume only" in page
    client.post(f"/recipes/{recipe_id}/resume", data={"held": choice})
    with app.app_context():
        assert db.session.get(Recipe, recipe_id).status == "active"
        assert db.session.scalar(select(Run.status)) == status


def test_field_picker_lists_latest_sample_and_fills_a_row_without_javascript(app, client):
    recipe_id = create(client, steps=[HTTP_STEP])
    with app.app_context():
        token = db.session.get(Recipe, recipe_id).token
    assert "No event received yet" in client.get(f"/recipes/{recipe_id}/edit").get_data(as_text=True)
    client.post(f"/hooks/{token}", json={"data": {"customer": {"email": "ann@example.com"}, "n": 3}})
    page = client.get(f"/recipes/{recipe_id}/edit").get_data(as_text=True)
    assert 'data-path="$.data.customer.email"' in page and "ann@example.com" in page
    form = recipe_form(steps=[HTTP_STEP], pick_path="$.data.customer.email")
    page = client.post(f"/recipes/{recipe_id}/edit", data=form).get_data(as_text=True)
    assert value_of(page, "fields-0-name") == "email"
    assert value_of(page, "fields-0-path") == "$.data.customer.email"
    assert count(app, RecipeVersion) == 1


def test_list_shows_status_steps_and_last_run(app, client):
    recipe_id = create(client, steps=[HTTP_STEP])
    with app.app_context():
        token = db.session.get(Recipe, recipe_id).token
    client.post(f"/hooks/{token}", json={})
    page = client.get("/recipes/").get_data(as_text=True)
    assert "Orders" in page and "badge-active" in page and "<td>1</td>" in page and "badge-queued" in page


def test_new_url_revokes_the_old_one(app, client):
    recipe_id = create(client)
    with app.app_context():
        old = db.session.get(Recipe, recipe_id).token
    client.post(f"/recipes/{recipe_id}/token")
    assert client.post(f"/hooks/{old}", json={}).status_code == 404


def test_delete_asks_first_and_keeps_runs(app, client):
    recipe_id = create(client)
    with app.app_context():
        token = db.session.get(Recipe, recipe_id).token
    client.post(f"/hooks/{token}", json={})
    assert "Delete recipe" in client.get(f"/recipes/{recipe_id}/delete").get_data(as_text=True)
    assert count(app, Recipe) == 1
    resp = client.post(f"/recipes/{recipe_id}/delete", follow_redirects=True)
    assert "deleted" in resp.get_data(as_text=True)
    assert count(app, Recipe) == 0 and count(app, Run) == 1
    assert "deleted recipe" in client.get("/runs/").get_data(as_text=True)


def test_duplicate_makes_a_paused_copy_with_its_own_url(app, client):
    recipe_id = create(client, name="Orders", fields=[("email", "$.email")], steps=[HTTP_STEP])
    resp = client.post(f"/recipes/{recipe_id}/duplicate")
    assert resp.status_code == 302
    copy_id = int(resp.location.rstrip("/").rsplit("/", 1)[1])
    page = html.unescape(client.get(resp.location).get_data(as_text=True))
    assert "Copied as 'Orders (copy)', with its own inbound URL. The copy is paused" in page
    with app.app_context():
        original, copy = db.session.get(Recipe, recipe_id), db.session.get(Recipe, copy_id)
        assert copy.name == "Orders (copy)" and copy.is_paused and not original.is_paused
        assert copy.status_reason == "a copy of 'Orders': resume it when it is ready"
        assert copy.token != original.token and copy.current_version == 1
        assert copy.versions[0].definition == original.versions[-1].definition
        token = copy.token
    assert client.post(f"/hooks/{token}", json={"email": "a@example.com"}).get_json()["status"] == "held"


def test_duplicate_keeps_a_long_name_within_the_limit_and_needs_an_editor(app, client):
    recipe_id = create(client, name="x" * 200)
    copy_url = client.post(f"/recipes/{recipe_id}/duplicate").location
    with app.app_context():
        copy = db.session.get(Recipe, int(copy_url.rstrip("/").rsplit("/", 1)[1]))
        assert copy.name == "x" * 193 + " (copy)"
    viewer = signed_in_client(app, "viewer")
    assert viewer.post(f"/recipes/{recipe_id}/duplicate").status_code == 403
    assert "Duplicate" not in viewer.get(f"/recipes/{recipe_id}").get_data(as_text=True)


def test_duplicate_of_a_recipe_that_no_longer_validates_says_why_and_copies_nothing(app, client):
    """An admin bound the step's connection to other hosts after the recipe was saved."""
    with app.app_context():
        conn = connections.create(db.session, core().secret_box, "CRM", "http_auth",
                                  {"scheme": "bearer", "token": "t0ken-Dup-1"}).id
    recipe_id = create(client, steps=[{**HTTP_STEP, "connection": conn}])
    with app.app_context():
        row = db.session.get(connections.Connection, conn)
        row.settings = {**row.settings, "allowed_hosts": "api.example.com"}
        db.session.commit()
    page = html.unescape(client.post(f"/recipes/{recipe_id}/duplicate", follow_redirects=True).get_data(as_text=True))
    assert "Could not copy: steps.0.inputs.url: this connection's credentials may only be sent to" in page
    with app.app_context():
        assert db.session.scalar(select(func.count()).select_from(Recipe)) == 1


def test_a_recipes_recent_runs_do_not_repeat_its_name_on_every_row(app, client):
    recipe_id = create(client, steps=[HTTP_STEP])
    with app.app_context():
        token = db.session.get(Recipe, recipe_id).token
    client.post(f"/hooks/{token}", json={})
    own = client.get(f"/recipes/{recipe_id}").get_data(as_text=True)
    assert 'href="/runs/1"' in own and "<th>Recipe</th>" not in own and own.count(">Orders</a>") == 0
    assert "<th>Recipe</th>" in client.get("/runs/").get_data(as_text=True)
