"""Subscription handshakes are answered, create no run and never reflect HTML."""
from __future__ import annotations

import hashlib
import hmac
import json
import time

import pytest
import requests
from sqlalchemy import func, select

from automations import connections, recipes
from automations.models import Event
from tests.live import LiveServer, make_live_app
from web.extensions import db

SLACK_SECRET = "8f742231b10e8888abcd99yyyzzz85a5"


@pytest.fixture
def live(tmp_path):
    server = LiveServer(make_live_app(tmp_path))
    yield server
    server.close()


def recipe(app, settings=None, preset=None, secret="zoom-secret", verify_settings=None):
    with app.app_context():
        settings = dict(settings or {})
        if preset:
            conn = connections.create(db.session, app.extensions["hookline"].secret_box, "s", "signing_secret",
                                      {"secret": secret})
            settings["verify"] = {"preset": preset, "connection": conn.id, "settings": verify_settings or {}}
        return recipes.create(db.session, "h", {"settings": settings}).token


def stored(app):
    with app.app_context():
        return db.session.scalar(select(func.count()).select_from(Event))


def test_microsoft_graph_validation_token_is_echoed_as_plain_text(live):
    token = recipe(live.app)
    graph = "Validation: Testing client application reachability for subscription Request-Id: 7e4f"
    r = requests.post(live.hook_url(token), params={"validationToken": graph}, timeout=5)
    assert (r.status_code, r.text) == (200, graph)
    assert r.headers["Content-Type"].startswith("text/plain")
    assert r.headers["X-Content-Type-Options"] == "nosniff"
    assert stored(live.app) == 0


@pytest.mark.parametrize("value", ["<script>alert(1)</script>", "a\"onload=x", "a\nb", "x" * 600, "é", ""])
def test_challenges_that_could_reflect_markup_are_refused(live, value):
    token = recipe(live.app)
    r = requests.post(live.hook_url(token), params={"validationToken": value}, timeout=5)
    assert r.status_code == 400 and "<script>" not in r.text
    r = requests.get(live.hook_url(token), params={"hub.challenge": value}, timeout=5)
    assert r.status_code == 400 and "<script>" not in r.text
    assert stored(live.app) == 0


def test_hub_challenge_checks_the_verify_token(live):
    token = recipe(live.app, {"handshake": {"verify_token": "my-token"}})
    ok = requests.get(live.hook_url(token), params={"hub.mode": "subscribe", "hub.challenge": "1158201444",
                                                    "hub.verify_token": "my-token"}, timeout=5)
    assert (ok.status_code, ok.text) == (200, "1158201444")
    bad = requests.get(live.hook_url(token), params={"hub.challenge": "1", "hub.verify_token": "guess"}, timeout=5)
    assert bad.status_code == 403
    assert stored(live.app) == 0


def slack_headers(body: bytes, secret: str = SLACK_SECRET) -> dict[str, str]:
    ts = str(int(time.time()))
    sig = hmac.new(secret.encode(), f"v0:{ts}:".encode() + body, hashlib.sha256).hexdigest()
    return {"X-Slack-Request-Timestamp": ts, "X-Slack-Signature": f"v0={sig}", "Content-Type": "application/json"}


def test_slack_url_verification_only_with_a_valid_signature(live):
    token = recipe(live.app, preset="slack", secret=SLACK_SECRET)
    body = json.dumps({"type": "url_verification", "challenge": "3eZbrw1aBm2rZgRNFdxV2595E9CY3gmdALWMmHkvFXO7tYXAYM8P"}).encode()
    ok = live.post(token, data=body, headers=slack_headers(body))
    assert ok.status_code == 200
    assert ok.json() == {"challenge": "3eZbrw1aBm2rZgRNFdxV2595E9CY3gmdALWMmHkvFXO7tYXAYM8P"}
    assert stored(live.app) == 0
    forged = live.post(token, data=body, headers=slack_headers(body, "wrong-secret"))
    assert forged.status_code == 401  # rejected, recorded, and no challenge echoed
    assert "3eZbrw" not in forged.text
    assert stored(live.app) == 1


def test_unsigned_recipe_treats_slack_challenge_as_an_event(live):
    token = recipe(live.app)
    r = live.post(token, json={"type": "url_verification", "challenge": "abc"})
    assert r.status_code == 202 and stored(live.app) == 1


def test_zoom_endpoint_validation_proves_the_secret(live):
    token = recipe(live.app, preset="hmac", secret="zoom-secret-token", verify_settings={"header": "X-Signature"})
    body = {"event": "endpoint.url_validation", "payload": {"plainToken": "qgg8vlvZRS6UYooatFL8Aw"}}
    # Zoom's validation request is signed like its events (here: the generic HMAC preset, body only)
    raw = json.dumps(body).encode()
    sig = hmac.new(b"zoom-secret-token", raw, hashlib.sha256).hexdigest()
    r = live.post(token, data=raw, headers={"Content-Type": "application/json", "X-Signature": sig})
    assert r.status_code == 200, r.text
    expected = hmac.new(b"zoom-secret-token", b"qgg8vlvZRS6UYooatFL8Aw", hashlib.sha256).hexdigest()
    assert r.json() == {"plainToken": "qgg8vlvZRS6UYooatFL8Aw", "encryptedToken": expected}
    assert stored(live.app) == 0
