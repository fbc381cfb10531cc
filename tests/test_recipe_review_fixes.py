"""Fixes from the recipe/runs review (D7–D9), each through the real pages and engine:

* D7: the editor shows a typed field default as JSON and reads it back typed; saving an
  unchanged recipe writes no new version.
* D8: a held run of a paused recipe points to the recipe page instead of offering "Run now".
* D9: out-of-range run pages are clamped, long recipe names are refused, the setup page shows
  every error at once, every page declares an icon.
"""
from __future__ import annotations

import html
import re
from html.parser import HTMLParser
from typing import Any

import pytest
from sqlalchemy import func, select

from automations import portability, recipes, users
from automations.models import Recipe, RecipeVersion, Run
from tests.conftest import make_app, signed_in_client
from tests.live import LiveServer, make_live_app
from tests.sinks import HttpSink
from tests.test_e2e import wait_run
from tests.test_ui_recipes import HTTP_STEP, create, errors_for, errors_summary, recipe_form
from web.extensions import db

# --- helpers ---------------------------------------------------------------------------------


class _FormReader(HTMLParser):
    """What a browser submits for the form ``form_id`` when its default "save" button is
    clicked: text inputs, hidden inputs, checked boxes, selected options, textareas."""

    def __init__(self, form_id: str) -> None:
        super().__init__(convert_charrefs=True)
        self.form_id, self.inside = form_id, False
        self.data: list[tuple[str, str]] = []
        self._select: str | None = None
        self._select_value: str | None = None
        self._textarea: str | None = None
        self._text: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = {k: (v or "") for k, v in attrs}
        if tag == "form":
            self.inside = a.get("id") == self.form_id
        if not self.inside or "name" not in a and tag in ("input", "select", "textarea"):
            return
        if tag == "input":
            kind = a.get("type", "text")
            if kind in ("submit", "button", "image", "reset"):
                return
            if kind in ("checkbox", "radio") and "checked" not in a:
                return
            self.data.append((a["name"], a.get("value", "on" if kind == "checkbox" else "")))
        elif tag == "select":
            self._select, self._select_value = a["name"], None
        elif tag == "option" and self._select is not None:
            if self._select_value is None or "selected" in a:
                self._select_value = a.get("value", "")
        elif tag == "textarea":
            self._textarea, self._text = a["name"], []

    def handle_data(self, data: str) -> None:
        if self._textarea is not None:
            self._text.append(data)

    def handle_endtag(self, tag: str) -> None:
        if tag == "form":
            self.inside = False
        elif tag == "select" and self._select is not None:
            self.data.append((self._select, self._select_value or ""))
            self._select = None
        elif tag == "textarea" and self._textarea is not None:
            text = "".join(self._text)  # a browser drops the newline right after <textarea>
            text = text.removeprefix("\r\n") if text.startswith("\r\n") else text.removeprefix("\n")
            self.data.append((self._textarea, text))
            self._textarea = None


def form_as_shown(page: str, form_id: str = "recipe-form") -> dict[str, str]:
    reader = _FormReader(form_id)
    reader.feed(page)
    return {**dict(reader.data), "save": "1"}


def versions(app, recipe_id: int) -> int:
    with app.app_context():
        return db.session.scalar(select(func.count()).select_from(RecipeVersion)
                                 .where(RecipeVersion.recipe_id == recipe_id))


def stored_fields(app, recipe_id: int) -> list[dict[str, Any]]:
    with app.app_context():
        return recipes.current_definition(db.session.get(Recipe, recipe_id))["fields"]


def value_of(page: str, name: str) -> str | None:
    m = re.search(rf'<input[^>]*\bname="{re.escape(name)}"[^>]*>', page)
    v = re.search(r'\bvalue="([^"]*)"', m.group(0)) if m else None
    return html.unescape(v.group(1)) if v else None


def flashes(page: str) -> list[str]:
    return [html.unescape(m) for m in re.findall(r'<p class="flash[^"]*"[^>]*>(.*?)</p>', page, re.DOTALL)]


# --- D7: typed defaults and unchanged saves ------------------------------------------------------

RECIPE_FILE = """\
hookline: 1
recipes:
- name: Amounts
  token: amountsAmountsAmountsAmounts01
  status: active
  fields:
  - {{name: cents, path: $.amount, default: 0}}
  - {{name: tags, path: $.tags, default: []}}
  steps:
  - key: post
    action: http_request
    inputs:
      method: POST
      url: {url}/in
      body_type: json
      body: '{{"dollars": {{{{ cents / 100 }}}}, "n": {{{{ tags | length }}}}}}'
"""


def test_saving_an_imported_recipe_unchanged_keeps_its_typed_defaults_and_runs(tmp_path):
    """The reported repro: import, open Edit, click Save, send a webhook without ``amount``."""
    app = make_live_app(tmp_path)
    live = LiveServer(app)
    try:
        with HttpSink() as sink:
            with app.app_context():
                [imported] = portability.import_all(db.session, portability.loads(RECIPE_FILE.format(url=sink.url)))
                recipe_id, token = imported.recipe.id, imported.recipe.token
            client = signed_in_client(app)
            page = client.get(f"/recipes/{recipe_id}/edit").get_data(as_text=True)
            assert value_of(page, "fields-0-default") == "0" and value_of(page, "fields-1-default") == "[]"

            resp = client.post(f"/recipes/{recipe_id}/edit", data=form_as_shown(page), follow_redirects=True)
            assert "No changes to save" in " ".join(flashes(resp.get_data(as_text=True)))
            assert versions(app, recipe_id) == 1
            assert stored_fields(app, recipe_id) == [{"name": "cents", "path": "$.amount", "default": 0},
                                                     {"name": "tags", "path": "$.tags", "default": []}]

            run_id = live.post(token, json={"other": 1}).json()["run_id"]
            assert wait_run(app, run_id) == "succeeded"
            assert sink.wait_for(1)[0].json() == {"dollars": 0, "n": 0}
    finally:
        live.close()


@pytest.mark.parametrize("typed, stored", [
    ("0", 0), ("2.5", 2.5), ("-3", -3), ("true", True), ("false", False),
    ("[]", []), ('["a", 1]', ["a", 1]), ('{"k": null}', {"k": None}),
    ('"0"', "0"), ('"true"', "true"), ('" padded "', " padded "), ('""', ""),
    ("hello", "hello"), ("unknown@example.com", "unknown@example.com"), ("{not json", "{not json"),
    ("  spaced text  ", "spaced text"), ("", None), ("null", None),
], ids=lambda v: repr(v))
def test_default_rule_reads_json_else_text_and_round_trips(typed, stored):
    assert recipes.parse_default(typed) == stored
    assert type(recipes.parse_default(typed)) is type(stored)
    shown = recipes.format_default(stored)
    assert recipes.parse_default(shown) == stored and type(recipes.parse_default(shown)) is type(stored)


def test_defaults_typed_in_the_editor_are_stored_typed_and_shown_back(app, client):
    data = recipe_form(fields=[("cents", "$.amount"), ("flag", "$.f"), ("code", "$.c"), ("who", "$.w")],
                       steps=[HTTP_STEP])
    data |= {"fields-0-default": "0", "fields-1-default": "false", "fields-2-default": '"42"',
             "fields-3-default": "nobody"}
    resp = client.post("/recipes/new", data=data)
    assert resp.status_code == 302, errors_summary(resp.get_data(as_text=True))
    recipe_id = int(resp.location.rstrip("/").rsplit("/", 1)[1])
    assert [f.get("default") for f in stored_fields(app, recipe_id)] == [0, False, "42", "nobody"]
    page = client.get(f"/recipes/{recipe_id}/edit").get_data(as_text=True)
    assert [value_of(page, f"fields-{i}-default") for i in range(4)] == ["0", "false", '"42"', "nobody"]
    assert recipes.DEFAULT_RULE in html.unescape(page)  # the rule is on the page, next to the fields
    resp = client.post(f"/recipes/{recipe_id}/edit", data=form_as_shown(page), follow_redirects=True)
    assert "No changes to save" in " ".join(flashes(resp.get_data(as_text=True)))
    assert versions(app, recipe_id) == 1


def test_a_default_that_changes_type_is_a_new_version(app, client):
    recipe_id = create(client, fields=[("cents", "$.amount")], steps=[HTTP_STEP])
    page = client.get(f"/recipes/{recipe_id}/edit").get_data(as_text=True)
    resp = client.post(f"/recipes/{recipe_id}/edit", data={**form_as_shown(page), "fields-0-default": "0"},
                       follow_redirects=True)
    assert "Saved as version 2" in resp.get_data(as_text=True)
    page = client.get(f"/recipes/{recipe_id}/edit").get_data(as_text=True)
    resp = client.post(f"/recipes/{recipe_id}/edit", data={**form_as_shown(page), "fields-0-default": '"0"'},
                       follow_redirects=True)
    assert "Saved as version 3" in resp.get_data(as_text=True)
    assert stored_fields(app, recipe_id)[0]["default"] == "0"


def test_unchanged_save_writes_nothing_but_a_rename_is_saved(app, client):
    recipe_id = create(client, fields=[("email", "$.email")], steps=[HTTP_STEP])
    with app.app_context():
        before = db.session.get(Recipe, recipe_id).updated_at
    page = client.get(f"/recipes/{recipe_id}/edit").get_data(as_text=True)
    resp = client.post(f"/recipes/{recipe_id}/edit", data=form_as_shown(page), follow_redirects=True)
    assert "No changes to save" in " ".join(flashes(resp.get_data(as_text=True)))
    with app.app_context():
        assert db.session.get(Recipe, recipe_id).updated_at == before
    resp = client.post(f"/recipes/{recipe_id}/edit", data={**form_as_shown(page), "name": "Renamed"},
                       follow_redirects=True)
    text = " ".join(flashes(resp.get_data(as_text=True)))
    assert "No changes to save" not in text and "Renamed" in text
    with app.app_context():
        recipe = db.session.get(Recipe, recipe_id)
        assert (recipe.name, recipe.current_version) == ("Renamed", 1)


# --- D8: held runs of a paused recipe -------------------------------------------------------------

def test_held_run_of_a_paused_recipe_points_to_the_recipe_page(app, client):
    with app.app_context():
        recipe_id = recipes.create(db.session, "Paused one", {"fields": []}, paused=True).id
        token = db.session.get(Recipe, recipe_id).token
    assert client.post(f"/hooks/{token}", json={}).get_json()["status"] == "held"
    page = client.get("/runs/1").get_data(as_text=True)
    assert "/runs/1/run-held" not in page and ">Run now<" not in page
    assert "recipe is paused" in page
    assert f'href="/recipes/{recipe_id}"' in page and "resume" in page.lower()

    client.post(f"/recipes/{recipe_id}/resume", data={"held": "keep"})  # a held run left over
    page = client.get("/runs/1").get_data(as_text=True)
    assert 'action="/runs/1/run-held"' in page and ">Run now<" in page
    resp = client.post("/runs/1/run-held", follow_redirects=True)
    assert "Run #1 queued" in resp.get_data(as_text=True)
    with app.app_context():
        assert db.session.get(Run, 1).status == "queued"


def test_a_viewer_sees_why_a_held_run_waits_but_no_buttons(app):
    with app.app_context():
        token = recipes.create(db.session, "Paused one", {"fields": []}, paused=True).token
    viewer = signed_in_client(app, "viewer")
    viewer.post(f"/hooks/{token}", json={})
    page = viewer.get("/runs/1").get_data(as_text=True)
    assert "recipe is paused" in page and "run-held" not in page


# --- D9: clamped pages, long names, setup errors, icon ----------------------------------------------

@pytest.fixture
def paged(tmp_path):
    """Recipe "A" with 5 runs, 2 per page: pages 1..3."""
    app = make_app(tmp_path, RUNS_PER_PAGE=2)
    client = signed_in_client(app)
    with app.app_context():
        recipe = recipes.create(db.session, "A", {"fields": []})
        a, token = recipe.id, recipe.token
    for i in range(5):
        assert client.post(f"/hooks/{token}", json={"x": i}).status_code == 202
    return app, client, a


@pytest.mark.parametrize("asked, clamped", [("999", 3), ("4", 3), ("0", 1), ("-1", 1)])
def test_runs_page_out_of_range_goes_to_the_nearest_page_keeping_filters(paged, asked, clamped):
    _app, client, a = paged
    resp = client.get(f"/runs/?recipe={a}&status=queued&page={asked}")
    assert resp.status_code == 302
    assert f"recipe={a}" in resp.location and "status=queued" in resp.location
    page = client.get(resp.location).get_data(as_text=True)
    assert f"Page {clamped} of 3" in page


def test_runs_page_with_no_runs_and_a_page_number_is_the_empty_list(paged):
    _app, client, _a = paged
    resp = client.get("/runs/?status=dead&page=5", follow_redirects=True)
    assert resp.status_code == 200 and "No runs" in resp.get_data(as_text=True)


def test_recipe_name_longer_than_200_characters_is_refused(app, client):
    long_name = "x" * 201
    page = client.post("/recipes/new", data=recipe_form(name=long_name, steps=[HTTP_STEP])).get_data(as_text=True)
    assert any("at most 200 characters" in e for e in errors_for(page, "name")), errors_summary(page)
    with app.app_context():
        assert db.session.scalar(select(func.count()).select_from(Recipe)) == 0
    recipe_id = create(client, name="y" * 200, steps=[HTTP_STEP])  # exactly 200 is fine
    page = client.post(f"/recipes/{recipe_id}/edit",
                       data=recipe_form(name=long_name, steps=[HTTP_STEP])).get_data(as_text=True)
    assert any("at most 200 characters" in e for e in errors_for(page, "name")), errors_summary(page)
    with app.app_context():
        assert db.session.get(Recipe, recipe_id).name == "y" * 200
        with pytest.raises(recipes.RecipeInvalid) as exc:
            recipes.create(db.session, long_name, {})
        assert [p.where for p in exc.value.problems] == ["name"]


def test_recipe_name_too_long_is_reported_with_other_local_errors(app, client):
    bad = recipe_form(name="z" * 300, steps=[{**HTTP_STEP, "inputs": {**HTTP_STEP["inputs"], "headers": "no colon"}}])
    page = client.post("/recipes/new", data=bad).get_data(as_text=True)
    assert any("at most 200 characters" in e for e in errors_for(page, "name"))
    assert errors_for(page, "steps-0-inputs-headers")


@pytest.mark.parametrize("posted, expected", [
    ({"email": "not-an-email", "password": "short", "confirm": "short"},
     {"email": "not a valid email address", "password": "at least 10 characters"}),
    ({"email": "not-an-email", "password": "long enough pw", "confirm": "different pw!"},
     {"email": "not a valid email address", "confirm": "Passwords differ"}),
    ({"email": "", "password": "short", "confirm": ""},
     {"email": "This field is required", "password": "at least 10 characters", "confirm": "required"}),
])
def test_setup_shows_every_field_error_at_once(app, posted, expected):
    anon = app.test_client()
    resp = anon.post("/setup", data=posted)
    page = resp.get_data(as_text=True)
    assert resp.status_code == 200
    for field_id, message in expected.items():
        assert any(message in e for e in errors_for(page, field_id)), (field_id, errors_summary(page))
    assert len(errors_for(page, "email")) == 1  # one message per problem, not the form's and the engine's
    with app.app_context():
        assert users.count(db.session) == 0


def test_setup_errors_from_the_engine_are_all_collected():
    with pytest.raises(users.UserInvalid) as exc:
        users.validate("nope", "short", "boss")
    assert exc.value.problems == ["email: not a valid email address",
                                  "password: must be at least 10 characters",
                                  "role: must be one of viewer, editor, admin"]


def test_every_page_declares_an_icon_so_browsers_skip_favicon_ico(app, client):
    for page in (app.test_client().get("/login", follow_redirects=True).get_data(as_text=True),
                 client.get("/recipes/").get_data(as_text=True)):
        link = re.search(r'<link rel="icon"[^>]*>', page)
        assert link and 'href="data:image/svg+xml,' in link.group(0), page[:600]
