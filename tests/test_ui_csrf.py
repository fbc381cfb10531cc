"""With CSRF protection on (the default outside tests), every UI form needs its token, while
the inbound endpoint, which senders cannot give a token, still accepts POSTs."""
from __future__ import annotations

import re

import pytest
from sqlalchemy import func, select

from automations import recipes
from automations.models import Connection, Recipe
from tests.conftest import make_app
from web.extensions import db


@pytest.fixture
def app(tmp_path):
    return make_app(tmp_path, WTF_CSRF_ENABLED=True)


@pytest.fixture
def recipe(app):
    with app.app_context():
        r = recipes.create(db.session, "Orders")
        return r.id, r.token


def rows(app, model) -> int:
    with app.app_context():
        return db.session.scalar(select(func.count()).select_from(model))


def test_forms_without_token_are_refused_and_write_nothing(app, client, recipe):
    recipe_id, _token = recipe
    posts = [
        ("/recipes/new", {"name": "Sneaky"}),
        (f"/recipes/{recipe_id}/pause", {}),
        (f"/recipes/{recipe_id}/delete", {}),
        (f"/recipes/{recipe_id}/duplicate", {}),
        ("/connections/new/slack_webhook", {"name": "x", "cred-webhook_url": "http://127.0.0.1/x"}),
        ("/connections/1/test", {}),
    ]
    for url, data in posts:
        assert client.post(url, data=data).status_code == 400, url
    assert rows(app, Recipe) == 1 and rows(app, Connection) == 0
    with app.app_context():
        assert db.session.get(Recipe, recipe_id).status == "active"


def test_inbound_endpoint_needs_no_token(client, recipe):
    _id, token = recipe
    resp = client.post(f"/hooks/{token}", json={"hello": "world"})
    assert resp.status_code == 202 and resp.get_json()["status"] == "queued"


def test_forms_carry_the_token_and_are_accepted_with_it(app, client, recipe):
    recipe_id, _token = recipe
    page = client.get("/recipes/new").get_data(as_text=True)
    token = re.search(r'name="csrf_token" type="hidden" value="([^"]+)"', page).group(1)
    resp = client.post("/recipes/new", data={"name": "Second", "csrf_token": token})
    assert resp.status_code == 302 and rows(app, Recipe) == 2
    detail = client.get(f"/recipes/{recipe_id}").get_data(as_text=True)
    assert detail.count('name="csrf_token"') >= 2  # pause and new-URL forms
    token = re.search(r'name="csrf_token" value="([^"]+)"', detail).group(1)
    assert client.post(f"/recipes/{recipe_id}/pause", data={"csrf_token": token}).status_code == 302
