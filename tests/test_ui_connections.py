"""Connection pages: generated forms, secrets that never come back, refusal to delete in use."""
from __future__ import annotations

import pytest
from sqlalchemy import func, select

from automations import connections, recipes
from automations.models import Connection, Recipe
from web.extensions import core, db

SECRET = "pw-Zq81-never-shown"
SMTP = {"name": "Mail", "cred-host": "127.0.0.1", "cred-port": "2525", "cred-security": "none",
        "cred-username": "robot", "cred-password": SECRET, "cred-from_address": "robot@example.com",
        "cred-tls_verify": "y"}


def count(app) -> int:
    with app.app_context():
        return db.session.scalar(select(func.count()).select_from(Connection))


def stored(app, conn_id: int = 1) -> dict:
    with app.app_context():
        conn = db.session.get(Connection, conn_id)
        return {"name": conn.name, **connections.credentials_for(core().secret_box, conn)}


def test_choose_lists_every_connection_type(client):
    page = client.get("/connections/new").get_data(as_text=True)
    for kind in ("smtp", "slack_webhook"):
        assert f"/connections/new/{kind}" in page
    assert client.get("/connections/new/nope").status_code == 404


def test_create_stores_typed_values_and_never_shows_the_secret(app, client):
    resp = client.post("/connections/new/smtp", data=SMTP)
    assert resp.status_code == 302
    assert stored(app) == {"name": "Mail", "host": "127.0.0.1", "port": 2525, "security": "none",
                           "username": "robot", "password": SECRET, "from_address": "robot@example.com",
                           "tls_verify": True}
    for url in ("/connections/", "/connections/1/edit", "/connections/1/delete", "/recipes/new"):
        page = client.get(url).get_data(as_text=True)
        assert SECRET not in page, url
    edit = client.get("/connections/1/edit").get_data(as_text=True)
    assert 'type="password"' in edit and "leave blank to keep" in edit
    assert 'value="127.0.0.1"' in edit and 'value="2525"' in edit


def test_blank_secret_on_edit_keeps_the_saved_one(app, client):
    client.post("/connections/new/smtp", data=SMTP)
    resp = client.post("/connections/1/edit", data={**SMTP, "name": "Mail 2", "cred-password": ""})
    assert resp.status_code == 302
    assert stored(app)["password"] == SECRET and stored(app)["name"] == "Mail 2"
    client.post("/connections/1/edit", data={**SMTP, "cred-password": "new-Secret-77"})
    assert stored(app)["password"] == "new-Secret-77"
    assert "new-Secret-77" not in client.get("/connections/1/edit").get_data(as_text=True)


def test_a_saved_password_is_what_the_runner_uses_next_in_this_process(app, client):
    """The engine reads connections at most once a second; saving one here must not leave
    this process's next runs with the old password for that second."""
    client.post("/connections/new/smtp", data=SMTP)
    with app.app_context():
        box = core().secret_box
        assert connections.credentials_for(box, core().connection_rows([1])[1])["password"] == SECRET
        client.post("/connections/1/edit", data={**SMTP, "cred-password": "new-Secret-77"})
        assert connections.credentials_for(box, core().connection_rows([1])[1])["password"] == "new-Secret-77"


@pytest.mark.parametrize("change, message", [
    ({"name": ""}, "is required"),
    ({"cred-host": ""}, "is required"),
    ({"cred-port": "twenty"}, "must be a number"),
])
def test_invalid_connection_shows_the_error_and_saves_nothing(app, client, change, message):
    resp = client.post("/connections/new/smtp", data={**SMTP, **change})
    assert resp.status_code == 200
    page = resp.get_data(as_text=True)
    assert f'<p class="error">{message}</p>' in page
    assert SECRET not in page  # a re-rendered form does not echo the secret either
    assert count(app) == 0


def test_delete_is_refused_while_a_recipe_uses_it(app, client):
    client.post("/connections/new/slack_webhook",
                data={"name": "Team", "cred-webhook_url": "http://127.0.0.1:9/x"})
    with app.app_context():
        recipes.create(db.session, "Alerts", {"steps": [
            {"key": "notify", "action": "slack_message", "connection": 1, "inputs": {"text": "hi"}}]})
    assert "Alerts" in client.get("/connections/").get_data(as_text=True)
    resp = client.post("/connections/1/delete", follow_redirects=True)
    assert "cannot be deleted: used by &#39;Alerts&#39;" in resp.get_data(as_text=True)
    assert count(app) == 1
    with app.app_context():
        recipes.delete(db.session, db.session.scalar(select(Recipe)))
    client.post("/connections/1/delete")
    assert count(app) == 0
