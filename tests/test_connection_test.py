""""Test the saved connection": the stored credentials tried against the service (a real SMTP
server, a server keeping HubSpot's contract) without sending anything anyone sees."""
from __future__ import annotations

import html
import socket

import pytest

from automations import connections
from automations.models import Connection
from connectors.base import TEST_MESSAGE
from tests.conftest import signed_in_client
from tests.sinks import Reply
from tests.smtp_server import SmtpServer
from tests.test_connector_discord import CHANNEL_ID, WEBHOOK_ID, discord  # noqa: F401 - the fixture
from tests.test_connector_discord import PATH as DISCORD_PATH
from tests.test_connector_hubspot import TOKEN, hubspot  # noqa: F401 - the fixture
from tests.test_connector_mattermost import KEY, mattermost  # noqa: F401 - the fixture
from tests.test_connector_slack import WEBHOOK_PATH as SLACK_PATH
from tests.test_connector_slack import slack  # noqa: F401 - the fixture
from tests.test_connector_teams import SIG, WORKFLOWS_PATH, teams  # noqa: F401 - the fixture
from web.extensions import core, db

PASSWORD = "s3cret-Smtp-77"


def saved(app, kind: str, values: dict) -> int:
    with app.app_context():
        return connections.create(db.session, core().secret_box, f"{kind} one", kind, values).id


def run_test(app, conn: int) -> tuple[bool, str]:
    with app.app_context():
        return connections.run_test(core().secret_box, db.session.get(Connection, conn), core().http, timeout=3)


def smtp_values(server: SmtpServer, **extra) -> dict:
    return {"host": server.host, "port": server.port, "security": server.security, "tls_verify": False,
            "username": "alice", "password": PASSWORD, "from_address": "robot@acme.example", **extra}


def test_smtp_signs_in_and_offers_the_sender_without_sending(app):
    with SmtpServer(security="starttls", auth=("alice", PASSWORD), auth_required=True) as server:
        conn = saved(app, "smtp", smtp_values(server))
        passed, message = run_test(app, conn)
        assert (passed, message) == (True, (f"signed in to 127.0.0.1:{server.port} as alice; the server "
                                           "accepts mail from robot@acme.example"))
        assert server.messages == []


@pytest.mark.parametrize("change, reject, expected", [
    ({"password": "wrong-password"}, None, "SMTP server refused the login: 535"),
    ({}, ("MAIL", "553 5.7.1 robot@acme.example: sender not allowed"),
     "SMTP server refused the sender robot@acme.example: 553 5.7.1"),
    ({"security": "ssl"}, None, "TLS error talking to 127.0.0.1:"),
])
def test_smtp_says_what_is_wrong(app, change, reject, expected):
    with SmtpServer(security="starttls", auth=("alice", PASSWORD), auth_required=True) as server:
        if reject:
            server.reject(*reject)
        conn = saved(app, "smtp", smtp_values(server, **change))
        passed, message = run_test(app, conn)
    assert not passed and message.startswith(expected), message
    assert PASSWORD not in message and "wrong-password" not in message


def test_smtp_with_nothing_listening(app):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    conn = saved(app, "smtp", {"host": "127.0.0.1", "port": port, "security": "none",
                               "from_address": "robot@acme.example"})
    assert run_test(app, conn) == (False, f"connection refused by 127.0.0.1:{port}")


def test_hubspot_reads_one_contact_and_writes_nothing(app, hubspot):  # noqa: F811
    conn = saved(app, "hubspot_private_app", {"access_token": TOKEN, "base_url": hubspot.url})
    assert run_test(app, conn) == (True, f"the token works: {hubspot.url} lets it read contacts")
    [req] = hubspot.requests
    assert (req.method, req.path, req.query) == ("GET", "/crm/v3/objects/contacts", {"limit": ["1"]})
    assert hubspot.contract.contacts == {}


@pytest.mark.parametrize("token, scopes, expected", [
    ("pat-na1-wrong", None, ["HubSpot refused the token: Authentication credentials not found",
                             "(HTTP 401, INVALID_AUTHENTICATION", "paste the app's current access token"]),
    (TOKEN, set(), ["HubSpot refused the token: This app hasn't been granted all required scopes",
                    "(HTTP 403, MISSING_SCOPES", "lacks the crm.objects.contacts.read scope"]),
])
def test_hubspot_says_what_is_wrong(app, hubspot, token, scopes, expected):  # noqa: F811
    if scopes is not None:
        hubspot.contract.scopes = scopes
    conn = saved(app, "hubspot_private_app", {"access_token": token, "base_url": hubspot.url})
    passed, message = run_test(app, conn)
    assert not passed and all(part in message for part in expected), message
    assert token not in message


def test_a_type_without_a_test(app):
    conn = saved(app, "http_auth", {"scheme": "bearer", "token": "t0ken-value"})
    assert run_test(app, conn) == (False, "a http_auth connection has no test")


def test_the_page_offers_the_test_to_admins_and_shows_the_result(app):
    admin = signed_in_client(app, "admin")
    with SmtpServer(security="none") as server:
        conn = saved(app, "smtp", {"host": server.host, "port": server.port, "security": "none",
                                   "from_address": "robot@acme.example"})
        page = admin.get(f"/connections/{conn}/edit").get_data(as_text=True)
        assert "Test the saved connection" in page
        result = admin.post(f"/connections/{conn}/test", follow_redirects=True)
    text = html.unescape(result.get_data(as_text=True))
    assert f"Test passed: signed in to 127.0.0.1:{server.port}; the server accepts mail from robot@acme.example." in text
    chat = saved(app, "slack_webhook", {"webhook_url": "https://hooks.slack.com/services/T0/B0/x"})
    page = admin.get(f"/connections/{chat}/edit").get_data(as_text=True)
    assert "Test the saved connection" not in page  # it would post: the page says so
    assert "Send a test message" in page and "people where it posts will see it" in page
    editor = signed_in_client(app, "editor")
    assert editor.post(f"/connections/{conn}/test").status_code == 403


def test_the_test_holds_no_database_lock_while_it_talks_to_the_service(tmp_path, monkeypatch):
    """The review's report: the route's transaction (a POST's takes SQLite's write lock) stayed
    open through the network exchange, so webhooks waited behind a slow SMTP server."""
    import dataclasses

    from automations import recipes
    from connectors.registry import CREDENTIALS
    from tests.live import LiveServer, make_live_app

    live = LiveServer(make_live_app(tmp_path, INBOUND_WRITE_TIMEOUT=1.0), with_runner=False)
    try:
        with live.app.app_context():
            token = recipes.create(db.session, "r", {}).token
        seen: list[int] = []

        def slow_service(ctx) -> str:  # a webhook arrives while the test is talking to the server
            seen.append(live.post(token, json={"during": "the test"}).status_code)
            return "fine"

        monkeypatch.setitem(CREDENTIALS, "smtp", dataclasses.replace(CREDENTIALS["smtp"], test=slow_service))
        conn = saved(live.app, "smtp", {"host": "127.0.0.1", "port": 25, "security": "none",
                                        "from_address": "robot@acme.example"})
        admin = signed_in_client(live.app, "admin")
        page = html.unescape(admin.post(f"/connections/{conn}/test", follow_redirects=True).get_data(as_text=True))
        assert "Test passed: fine." in page and seen == [202]
    finally:
        live.close()


@pytest.mark.parametrize("change, expected", [
    ({"from_address": "not an address"}, "from_address: 'not an address' is not a valid email address"),
    ({"password": "pässword-Ümlaut"}, "the user name, password or an address is not ASCII"),
])
def test_smtp_refuses_what_a_real_send_would_refuse(app, change, expected):
    """The review's report: the test passed with a from address every send refuses, and a
    non-ASCII password gave a 500 instead of an answer."""
    with SmtpServer(security="none", auth=("alice", PASSWORD)) as server:
        conn = saved(app, "smtp", smtp_values(server, **change))
        passed, message = run_test(app, conn)
    assert not passed and expected in message, message
    assert "Ümlaut" not in message


def test_discord_asks_for_the_webhook_and_posts_nothing(app, discord):  # noqa: F811
    conn = saved(app, "discord_webhook", {"webhook_url": discord.url + DISCORD_PATH})
    assert run_test(app, conn) == (True, f"the webhook 'Orders bot' exists and posts to channel {CHANNEL_ID}")
    [req] = discord.requests
    assert req.method == "GET" and discord.contract.sent == 0


@pytest.mark.parametrize("path, expected", [
    (f"/api/webhooks/{WEBHOOK_ID}/wrong-token", "Discord refused the webhook: Invalid Webhook Token (code 50027, HTTP 401)"),
    ("/api/webhooks/1/whatever", "Discord refused the webhook: Unknown Webhook (code 10015, HTTP 404)"),
])
def test_discord_says_what_is_wrong_without_the_token(app, discord, path, expected):  # noqa: F811
    conn = saved(app, "discord_webhook", {"webhook_url": discord.url + path})
    passed, message = run_test(app, conn)
    assert not passed and message.startswith(expected), message
    assert "wrong-token" not in message and "whatever" not in message


def test_slack_posts_one_test_message(app, slack):  # noqa: F811
    conn = saved(app, "slack_webhook", {"webhook_url": slack.url + SLACK_PATH})
    assert run_test(app, conn) == (True, "Slack accepted a test message: look for it where this webhook posts")
    [req] = slack.requests
    assert req.json()["text"] == TEST_MESSAGE


def test_slack_says_the_webhook_was_removed_without_its_url(app, slack):  # noqa: F811
    conn = saved(app, "slack_webhook", {"webhook_url": slack.url + SLACK_PATH.replace("/services/", "/gone/")})
    passed, message = run_test(app, conn)
    assert not passed
    assert message == ("Slack rejected the message: no_service (HTTP 404): the webhook was disabled or removed; "
                       "create a new one")


def test_teams_posts_one_test_message(app, teams):  # noqa: F811
    conn = saved(app, "teams_webhook", {"webhook_url": teams.url + WORKFLOWS_PATH})
    assert run_test(app, conn) == (True, "Teams accepted a test message: look for it where this webhook posts")
    [req] = teams.requests
    assert TEST_MESSAGE in req.body.decode()


def test_teams_says_the_signature_is_wrong_without_showing_it(app, teams):  # noqa: F811
    conn = saved(app, "teams_webhook", {"webhook_url": teams.url + WORKFLOWS_PATH.replace(SIG, "wrongSIGvalue")})
    passed, message = run_test(app, conn)
    assert not passed and "401" in message and "DirectApiAuthorizationRequired" in message, message
    assert "wrongSIGvalue" not in message and SIG not in message


def test_mattermost_posts_one_test_message(app, mattermost):  # noqa: F811
    conn = saved(app, "mattermost_webhook", {"webhook_url": f"{mattermost.url}/hooks/{KEY}"})
    assert run_test(app, conn) == (True, "Mattermost accepted a test message: look for it where this webhook posts")
    assert [p["text"] for p in mattermost.contract.posts] == [TEST_MESSAGE]


def test_mattermost_says_the_webhook_is_unknown_without_its_key(app, mattermost):  # noqa: F811
    conn = saved(app, "mattermost_webhook", {"webhook_url": f"{mattermost.url}/hooks/{'z' * 26}"})
    passed, message = run_test(app, conn)
    assert not passed and "Invalid webhook" in message and "404" in message, message
    assert "z" * 26 not in message


def test_each_test_has_its_own_idempotency_key(app, slack):  # noqa: F811
    """A receiver that honours Idempotency-Key would take a second test for the first one
    retried, and drop it."""
    conn = saved(app, "slack_webhook", {"webhook_url": slack.url + SLACK_PATH})
    assert run_test(app, conn)[0] and run_test(app, conn)[0]
    first, second = (r.headers["Idempotency-Key"] for r in slack.requests)
    assert first != second and first.startswith(f"hookline-test-{conn}-")


def test_the_page_sends_a_test_message_and_shows_the_answer(app, slack):  # noqa: F811
    admin = signed_in_client(app, "admin")
    conn = saved(app, "slack_webhook", {"webhook_url": slack.url + SLACK_PATH})
    slack.contract.next_error = Reply(404, "channel_not_found")
    text = html.unescape(admin.post(f"/connections/{conn}/test", follow_redirects=True).get_data(as_text=True))
    assert ("Test failed: Slack rejected the message: channel_not_found (HTTP 404): the channel no longer "
            "exists") in text
    slack.contract.next_error = None
    text = html.unescape(admin.post(f"/connections/{conn}/test", follow_redirects=True).get_data(as_text=True))
    assert "Test passed: Slack accepted a test message: look for it where this webhook posts." in text


@pytest.mark.parametrize("kind, values, expected", [
    ("slack_webhook", {"webhook_url": "https://[::1/services/T0/B0/x"}, "webhook_url: the connection needs a Slack"),
    ("teams_webhook", {"webhook_url": "https://[::1/workflows/abc"}, "webhook_url: the connection needs a Teams"),
    ("hubspot_private_app", {"access_token": TOKEN, "base_url": "https://[::1"}, "base_url: 'https://[::1' is not"),
])
def test_a_url_that_cannot_be_split_gets_an_answer_not_a_500(app, kind, values, expected):
    conn = saved(app, kind, values)
    passed, message = run_test(app, conn)
    assert not passed and message.startswith(expected), message
    admin = signed_in_client(app, "admin")
    assert admin.post(f"/connections/{conn}/test").status_code == 302
