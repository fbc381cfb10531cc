"""Connection review fixes: duplicate and over-long names, typed secrets after an error,
connections referenced by recipe settings, clearing an optional saved secret."""
from __future__ import annotations

import pytest
from sqlalchemy import event, func, insert, select

from automations import connections, portability, recipes
from automations.models import Connection, Recipe
from automations.recipes import RecipeInvalid
from tests.conftest import make_app
from web.extensions import core, db

SECRET = "pw-Zq81-never-shown"
NEW_SECRET = "rotated-Kx42-never-shown"
SMTP = {"name": "Mail", "cred-host": "127.0.0.1", "cred-port": "2525", "cred-security": "none",
        "cred-username": "robot", "cred-password": SECRET, "cred-from_address": "robot@example.com",
        "cred-tls_verify": "y"}
SLACK = {"name": "Team", "cred-webhook_url": "http://127.0.0.1:9/slack-Secret-hook"}
AGAIN = "Not saved: enter it again (secrets are never sent back to the browser)"
CLEAR_LABEL = "Clear the saved value"


def count(app) -> int:
    with app.app_context():
        return db.session.scalar(select(func.count()).select_from(Connection))


def stored(app, conn_id: int) -> dict:
    with app.app_context():
        conn = db.session.get(Connection, conn_id)
        return {"name": conn.name, **connections.credentials_for(core().secret_box, conn)}


def name_errors(exc: RecipeInvalid) -> list[str]:
    return [p.message for p in exc.problems if p.where == "name"]


# D3: duplicate names -------------------------------------------------------------------


def test_a_new_connection_with_an_existing_name_is_a_field_error(app, client):
    assert client.post("/connections/new/smtp", data=SMTP).status_code == 302
    resp = client.post("/connections/new/smtp", data={**SMTP, "cred-host": "mail.internal"})
    assert resp.status_code == 200
    page = resp.get_data(as_text=True)
    assert '<p class="error">a connection named &#39;Mail&#39; already exists</p>' in page
    assert 'value="mail.internal"' in page and 'value="2525"' in page  # the rest of the form is kept
    assert SECRET not in page
    assert count(app) == 1


def test_renaming_onto_another_connections_name_is_a_field_error(app, client):
    client.post("/connections/new/slack_webhook", data=SLACK)
    client.post("/connections/new/slack_webhook", data={**SLACK, "name": "Other"})
    resp = client.post("/connections/2/edit", data={**SLACK, "cred-webhook_url": ""})
    assert resp.status_code == 200
    assert "a connection named &#39;Team&#39; already exists" in resp.get_data(as_text=True)
    assert stored(app, 2)["name"] == "Other"
    # keeping its own name is no conflict
    assert client.post("/connections/2/edit", data={**SLACK, "name": "Other", "cred-webhook_url": ""}
                       ).status_code == 302


def test_the_engine_refuses_duplicate_names_for_every_caller(app):
    with app.app_context():
        box = core().secret_box
        first = connections.create(db.session, box, "Team", "slack_webhook", {"webhook_url": "http://x/1"})
        with pytest.raises(RecipeInvalid) as caught:
            connections.create(db.session, box, "  Team ", "slack_webhook", {"webhook_url": "http://x/2"})
        assert name_errors(caught.value) == ["a connection named 'Team' already exists"]
        other = connections.create(db.session, box, "team", "slack_webhook", {"webhook_url": "http://x/3"})
        with pytest.raises(RecipeInvalid) as caught:
            connections.update(db.session, box, other, "Team", {})
        assert name_errors(caught.value) == ["a connection named 'Team' already exists"]
        db.session.rollback()
        assert {c.name for c in db.session.scalars(select(Connection))} == {first.name, "team"}


def test_a_name_taken_by_a_race_after_the_check_is_the_same_clear_error(app):
    """The unique constraint is the last line of defence: a row inserted between the check
    and the commit must come back as the field error, not an IntegrityError (a 500)."""
    with app.app_context():
        box = core().secret_box

        raced: list[bool] = []

        def racer(session, _ctx, _instances) -> None:  # another writer takes the name first
            if not raced:
                raced.append(True)
                session.connection().execute(insert(Connection).values(name="Team", kind="slack_webhook",
                                                                        settings={}))

        event.listen(db.session(), "before_flush", racer)
        try:
            with pytest.raises(RecipeInvalid) as caught:
                connections.create(db.session, box, "Team", "slack_webhook", {"webhook_url": "http://x/1"})
        finally:
            event.remove(db.session(), "before_flush", racer)
        assert raced and name_errors(caught.value) == ["a connection named 'Team' already exists"]
        assert connections.create(db.session, box, "Team", "slack_webhook", {"webhook_url": "http://x/1"}).id


# D9: names longer than the column ------------------------------------------------------


def test_a_name_longer_than_200_characters_is_refused(app, client):
    resp = client.post("/connections/new/slack_webhook", data={**SLACK, "name": "x" * 201})
    assert resp.status_code == 200
    assert '<p class="error">at most 200 characters</p>' in resp.get_data(as_text=True)
    assert count(app) == 0
    with app.app_context():
        with pytest.raises(RecipeInvalid) as caught:
            connections.create(db.session, core().secret_box, "y" * 201, "slack_webhook", {"webhook_url": "http://x"})
        assert name_errors(caught.value) == ["at most 200 characters"]
    assert client.post("/connections/new/slack_webhook", data={**SLACK, "name": "x" * 200}).status_code == 302


# D4: typed secrets after a validation error -------------------------------------------


@pytest.mark.parametrize("change", [{"cred-port": "twenty"}, {"name": ""}])
def test_a_typed_secret_is_flagged_when_the_form_comes_back(app, client, change):
    resp = client.post("/connections/new/smtp", data={**SMTP, **change})
    assert resp.status_code == 200
    page = resp.get_data(as_text=True)
    assert SECRET not in page
    assert page.count(AGAIN) == 1
    assert 'data-field="password"' in page.split(AGAIN)[0].rsplit('<div class="field', 1)[1]
    assert count(app) == 0
    untyped = client.post("/connections/new/smtp", data={**SMTP, **change, "cred-password": ""})
    assert AGAIN not in untyped.get_data(as_text=True)


def test_a_rotation_typed_into_a_form_with_an_error_is_not_lost_silently(app, client):
    client.post("/connections/new/smtp", data=SMTP)
    resp = client.post("/connections/1/edit", data={**SMTP, "cred-port": "twenty", "cred-password": NEW_SECRET})
    page = resp.get_data(as_text=True)
    assert resp.status_code == 200 and AGAIN in page and NEW_SECRET not in page
    assert stored(app, 1)["password"] == SECRET


# D5: connections referenced by recipe settings -----------------------------------------


def _signing_and_slack(app) -> tuple[int, int]:
    with app.app_context():
        box = core().secret_box
        signing = connections.create(db.session, box, "GitHub secret", "signing_secret", {"secret": "s3cret-value"})
        slack = connections.create(db.session, box, "Team Slack", "slack_webhook",
                                   {"webhook_url": "http://127.0.0.1:9/slack-hook"})
        return signing.id, slack.id


@pytest.mark.parametrize("part", ["verify", "alert"])
def test_a_connection_used_only_by_settings_is_listed_and_cannot_be_deleted(app, client, part):
    signing, slack = _signing_and_slack(app)
    settings = {"verify": {"preset": "github", "connection": signing},
                "alert": {"action": "slack_message", "connection": slack, "inputs": {"text": "dead"}}}
    with app.app_context():
        recipes.create(db.session, "Guarded", {"steps": [], "settings": {part: settings[part]}})
    used = signing if part == "verify" else slack
    index = client.get("/connections/").get_data(as_text=True)
    assert "Guarded" in index and "no recipe" in index  # the other connection is unused
    assert "Guarded" in client.get(f"/connections/{used}/delete").get_data(as_text=True)
    resp = client.post(f"/connections/{used}/delete", follow_redirects=True)
    assert "cannot be deleted: used by &#39;Guarded&#39;" in resp.get_data(as_text=True)
    assert count(app) == 2


def test_a_settings_reference_saved_as_text_counts_and_exports_by_name(app):
    signing, _ = _signing_and_slack(app)
    with app.app_context():
        recipes.create(db.session, "Guarded", {"settings": {"verify": {"preset": "github", "connection": str(signing)}}})
        conn = db.session.get(Connection, signing)
        assert [r.name for r in connections.users_of(db.session, conn)] == ["Guarded"]
        exported = portability.export_all(db.session)
    assert exported["recipes"][0]["settings"]["verify"]["connection"] == "GitHub secret"


def test_settings_references_round_trip_through_export_and_import(tmp_path):
    source = make_app(tmp_path / "a")
    signing, slack = _signing_and_slack(source)
    with source.app_context():
        recipes.create(db.session, "Guarded", {"settings": {
            "verify": {"preset": "github", "connection": signing},
            "alert": {"action": "slack_message", "connection": slack, "inputs": {"text": "dead"}}}})
        text = portability.dumps(portability.export_all(db.session))
    assert "connection: GitHub secret" in text and "connection: Team Slack" in text
    target = make_app(tmp_path / "b")
    with target.app_context():  # same names, other ids
        box = core().secret_box
        connections.create(db.session, box, "Unrelated", "slack_webhook", {"webhook_url": "http://x/0"})
        slack_b = connections.create(db.session, box, "Team Slack", "slack_webhook", {"webhook_url": "http://x/1"}).id
        signing_b = connections.create(db.session, box, "GitHub secret", "signing_secret", {"secret": "other"}).id
        portability.import_all(db.session, portability.loads(text))
        settings = recipes.current_definition(db.session.scalar(select(Recipe)))["settings"]
        assert settings["verify"]["connection"] == signing_b
        assert settings["alert"]["connection"] == slack_b
        again = portability.dumps(portability.export_all(db.session))
    assert again.split("connections:")[1].split("recipes:")[1] == text.split("connections:")[1].split("recipes:")[1]


# D6: clearing an optional saved secret -------------------------------------------------


def _signing_with_previous(app) -> int:
    with app.app_context():
        return connections.create(db.session, core().secret_box, "GitHub secret", "signing_secret",
                                  {"secret": "current-S3cret", "previous_secret": "old-S3cret"}).id


def test_an_optional_saved_secret_can_be_cleared(app, client):
    conn_id = _signing_with_previous(app)
    page = client.get(f"/connections/{conn_id}/edit").get_data(as_text=True)
    assert CLEAR_LABEL in page and page.count('name="cred-clear-') == 1  # the required secret has none
    assert 'name="cred-clear-previous_secret"' in page and 'name="cred-clear-secret"' not in page
    resp = client.post(f"/connections/{conn_id}/edit", data={
        "name": "GitHub secret", "cred-secret": "", "cred-previous_secret": "", "cred-clear-previous_secret": "y"})
    assert resp.status_code == 302
    assert stored(app, conn_id) == {"name": "GitHub secret", "secret": "current-S3cret"}
    assert CLEAR_LABEL not in client.get(f"/connections/{conn_id}/edit").get_data(as_text=True)


def test_unchecked_clear_keeps_the_saved_secret_and_new_forms_have_no_clear(app, client):
    conn_id = _signing_with_previous(app)
    client.post(f"/connections/{conn_id}/edit", data={"name": "Renamed", "cred-secret": "", "cred-previous_secret": ""})
    assert stored(app, conn_id)["previous_secret"] == "old-S3cret"
    assert CLEAR_LABEL not in client.get("/connections/new/signing_secret").get_data(as_text=True)
    assert CLEAR_LABEL not in client.get("/connections/new/http_auth").get_data(as_text=True)


def test_the_clear_boxes_follow_the_declaration(app, client):
    """http_auth's three optional secrets: a box for each saved one, from the declaration."""
    with app.app_context():
        conn_id = connections.create(db.session, core().secret_box, "API", "http_auth",
                                     {"scheme": "bearer", "token": "tok-S3cret", "key_value": "key-S3cret"}).id
    page = client.get(f"/connections/{conn_id}/edit").get_data(as_text=True)
    assert 'name="cred-clear-token"' in page and 'name="cred-clear-key_value"' in page
    assert 'name="cred-clear-password"' not in page
    client.post(f"/connections/{conn_id}/edit", data={"name": "API", "cred-scheme": "bearer",
                                                      "cred-clear-key_value": "y"})
    assert stored(app, conn_id) == {"name": "API", "scheme": "bearer", "token": "tok-S3cret"}


def test_a_required_secret_cannot_be_cleared_by_the_engine(app):
    conn_id = _signing_with_previous(app)
    with app.app_context():
        conn = db.session.get(Connection, conn_id)
        with pytest.raises(RecipeInvalid) as caught:
            connections.update(db.session, core().secret_box, conn, conn.name, {}, clear={"secret"})
        assert [p.where for p in caught.value.problems] == ["secret"]
        db.session.rollback()
    assert stored(app, conn_id)["secret"] == "current-S3cret"
