"""A connection's "Allowed hosts": an editor cannot point a step at a server of their own
and read the admin's API token off the request."""
from __future__ import annotations

import html

import pytest
from sqlalchemy import func, select

from automations.models import Connection
from connectors import host_patterns
from connectors.base import PermanentError
from tests.sinks import HttpSink
from tests.test_connector_http import call
from web.extensions import db

TOKEN = "tok-Allowed-Hosts-77"


@pytest.mark.parametrize("patterns, url, allowed", [
    ("", "https://anything.example/", True),  # empty: any host, as before the setting existed
    ("api.example.com", "https://api.example.com/v1", True),
    ("API.Example.com.", "https://API.example.com./v1", True),  # case and a trailing dot do not matter
    ("api.example.com", "https://api.example.com.evil.net/", False),
    ("api.example.com", "https://evil.net/", False),
    ("*.example.com", "https://eu.api.example.com/", True),
    ("*.example.com", "https://example.com/", False),  # a wildcard covers hosts under it, not the domain
    ("*.example.com", "https://badexample.com/", False),
    ("*.example.com", "https://example.com.evil.net/", False),
    ("crm.example, *.hubapi.com", "https://api.hubapi.com/crm", True),
    ("crm.example\n127.0.0.1", "http://127.0.0.1:8080/", True),
    ("::1", "http://[::1]:8080/", True),
    ("0:0:0:0:0:0:0:1", "http://[::1]/", True),  # one spelling per address
    ("bücher.example", "https://xn--bcher-kva.example/", True),
    ("localhost", "http://localhost:8000/", True),  # a name on the allowlisted internal network
    # the review's bypasses: the host checked must be the host connected to
    ("api.example.com", "https://evil.example\\@api.example.com/x", False),  # urllib3 connects to evil.example
    ("api.example.com", "https://user@api.example.com/x", True),
    ("strasse.de", "https://straße.de/", False),  # IDNA 2008: xn--strae-oqa.de, another domain
    ("*.strasse.de", "https://api.straße.de/", False),
    ("straße.de", "https://straße.de/", True),
    ("api.example.com", "not a url", False),
])
def test_patterns(patterns, url, allowed):
    assert host_patterns.allows(patterns, url) is allowed


@pytest.mark.parametrize("text, reason", [
    ("api.example.com/v1", "is not a host name"),
    ("api_example.com", "is not a host name"),
    # the review's reports: a pasted URL kept only its host, so scheme and port looked enforced
    ("https://api.example.com/v1/", "write the host only (api.example.com), not a URL"),
    ("127.0.0.1:8741", "write the host without a port"),
    ("api.example.com:443", "write the host without a port"),
    ("*.com", "a wildcard must name a domain under the top level"),
    ("*", "is not a host name"),
    ("*.127.0.0.1", "a wildcard needs a domain"),
    ("-bad-.example", "is not a host name"),
])
def test_patterns_that_cannot_be_saved_are_named(text, reason):
    assert reason in (host_patterns.problem(text) or "")
    assert host_patterns.allows(text, "https://api.example.com/") is False  # never "allow all" by mistake


def test_a_step_sending_the_credentials_elsewhere_fails_and_sends_nothing():
    with HttpSink() as sink:
        creds = {"scheme": "bearer", "token": TOKEN, "allowed_hosts": "api.example.com"}
        with pytest.raises(PermanentError, match=r"may only be sent to api\.example\.com, not to 127\.0\.0\.1"):
            call({"url": sink.url, "body": {}}, creds)
        assert sink.requests == []
        call({"url": sink.url, "body": {}}, {**creds, "allowed_hosts": "api.example.com, 127.0.0.1"})
        [received] = sink.wait_for(1)
        assert received.headers["Authorization"] == f"Bearer {TOKEN}"


def test_a_step_without_a_connection_goes_anywhere():
    with HttpSink() as sink:
        call({"url": sink.url, "body": {}})
        assert len(sink.wait_for(1)) == 1


def test_the_error_names_the_allowed_hosts_on_one_line():
    with pytest.raises(PermanentError) as exc:
        call({"url": "http://127.0.0.1:9/x", "body": {}},
             {"scheme": "bearer", "token": TOKEN, "allowed_hosts": "API.example.com\n *.Example.org"})
    assert exc.value.message == ("url: this connection's credentials may only be sent to api.example.com, "
                                 "*.example.org, not to 127.0.0.1; nothing was sent")


def test_a_url_written_out_is_checked_against_the_connection_when_the_recipe_is_saved(app):
    """The review's report: an editor learnt of the binding only when a live event failed."""
    from automations import connections, recipes

    with app.app_context():
        box = app.extensions["hookline"].secret_box
        conn = connections.create(db.session, box, "Billing", "http_auth",
                                  {"scheme": "bearer", "token": TOKEN, "allowed_hosts": "api.example.com"}).id

        def step(url: str) -> dict:
            return {"steps": [{"key": "call", "action": "http_request", "connection": conn,
                               "inputs": {"method": "POST", "url": url, "body_type": "json", "body": "{}"}}]}

        with pytest.raises(recipes.RecipeInvalid) as exc:
            recipes.create(db.session, "r", step("http://evil.example.net/collect"))
        assert [(p.where, p.message) for p in exc.value.problems] == [(
            "steps.0.inputs.url", ("this connection's credentials may only be sent to api.example.com, "
                                   "not to evil.example.net"))]
        recipes.create(db.session, "ok", step("https://api.example.com/v1/invoices"))
        recipes.create(db.session, "templated", step("https://{{ host }}/v1"))  # checked when it runs


def test_the_step_connection_picker_shows_the_allowed_hosts(app, client):
    from tests.test_ui_recipes import create

    client.post("/connections/new/http_auth", data={**HTTP_AUTH, "cred-allowed_hosts": "api.example.com\n*.example.org"})
    recipe_id = create(client, steps=[{"action": "http_request", "key": "call", "connection": 1,
                                       "inputs": {"url": "https://api.example.com/x", "body": "{}"}}])
    page = html.unescape(client.get(f"/recipes/{recipe_id}/edit").get_data(as_text=True))
    assert "CRM (only api.example.com, *.example.org)" in page


HTTP_AUTH = {"name": "CRM", "cred-scheme": "bearer", "cred-token": TOKEN}


def test_the_connection_form_refuses_a_bad_pattern_and_saves_nothing(app, client):
    resp = client.post("/connections/new/http_auth", data={**HTTP_AUTH, "cred-allowed_hosts": "api.example.com/v1"})
    assert resp.status_code == 200
    page = html.unescape(resp.get_data(as_text=True))
    assert "'api.example.com/v1' is not a host name" in page and TOKEN not in page
    with app.app_context():
        assert db.session.scalar(select(func.count()).select_from(Connection)) == 0
    resp = client.post("/connections/new/http_auth", data={**HTTP_AUTH, "cred-allowed_hosts": "*.example.com"})
    assert resp.status_code == 302
    with app.app_context():
        assert db.session.scalars(select(Connection)).one().settings["allowed_hosts"] == "*.example.com"
