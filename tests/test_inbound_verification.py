"""Senders proven by their signatures: a forged or malformed request gets 401, is kept in
the history as rejected with the reason, and never runs."""
from __future__ import annotations

import hashlib
import hmac
from datetime import UTC

import pytest
from sqlalchemy import select

from automations import connections, recipes
from automations.clock import FrozenClock
from automations.models import Run
from tests.live import LiveServer, make_live_app
from tests.sinks import HttpSink
from web.extensions import db

GITHUB_SECRET = "It's a Secret to Everybody"  # GitHub's documented example
GITHUB_SIGNATURE = "sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17"


@pytest.fixture
def live(tmp_path):
    server = LiveServer(make_live_app(tmp_path))
    yield server
    server.close()


def verified_recipe(app, preset, secret, previous=None, settings=None, sink_url=None):
    with app.app_context():
        box = app.extensions["hookline"].secret_box
        conn = connections.create(db.session, box, f"{preset} secret", "signing_secret",
                                  {"secret": secret, "previous_secret": previous})
        steps = [{"key": "a", "action": "http_request",
                  "inputs": {"method": "POST", "url": sink_url, "body_type": "json", "body": "{}"}}] if sink_url else []
        return recipes.create(db.session, preset, {"steps": steps, "settings": {
            "verify": {"preset": preset, "connection": conn.id, "settings": settings or {}}}}).token


def runs(app):
    with app.app_context():
        return [(r.status, r.error) for r in db.session.scalars(select(Run).order_by(Run.id))]


@pytest.mark.parametrize("headers, expected", [
    ({"X-Hub-Signature-256": GITHUB_SIGNATURE}, 202),
    ({"X-Hub-Signature-256": "sha256=" + "0" * 64}, 401),
    ({}, 401),
    ({"X-Hub-Signature-256": "sha256="}, 401),
    ({"X-Hub-Signature-256": "sha256=ü"}, 401),
    ({"X-Hub-Signature-256": ",".join(["sha256=ab"] * 5000)}, 401),
])
def test_github_signature_table(live, headers, expected):
    with HttpSink() as sink:
        token = verified_recipe(live.app, "github", GITHUB_SECRET, sink_url=sink.url)
        resp = live.post(token, data=b"Hello, World!", headers={"Content-Type": "text/plain", **headers})
        assert resp.status_code == expected
        if expected == 202:
            sink.wait_for(1)
        else:
            assert resp.json() == {"error": "signature verification failed"}
            [(status, error)] = runs(live.app)
            assert status == "rejected" and error.startswith("signature verification failed: ")
            assert GITHUB_SECRET not in error
            assert sink.requests == []


def test_previous_secret_still_accepted_during_rotation(live):
    token = verified_recipe(live.app, "github", "the-new-secret", previous=GITHUB_SECRET)
    resp = live.post(token, data=b"Hello, World!", headers={"X-Hub-Signature-256": GITHUB_SIGNATURE})
    assert resp.status_code == 202


def test_stripe_timestamp_window_uses_the_server_clock(live):
    clock = FrozenClock()
    live.app.extensions["hookline"].clock = clock
    token = verified_recipe(live.app, "stripe", "whsec_test")
    ts = int(clock.now().replace(tzinfo=UTC).timestamp())
    body = b'{"id": "evt_1"}'
    sig = hmac.new(b"whsec_test", f"{ts}.".encode() + body, hashlib.sha256).hexdigest()
    header = {"Stripe-Signature": f"t={ts},v1={sig}", "Content-Type": "application/json"}
    assert live.post(token, data=body, headers=header).status_code == 202
    clock.advance(301)
    assert live.post(token, data=body, headers=header).status_code == 401  # a replay, too late
    assert [s for s, _ in runs(live.app)][1] == "rejected"


@pytest.mark.parametrize("verify, where", [
    ({"preset": "nope", "connection": None}, "settings.verify.preset"),
    ({"preset": "github"}, "settings.verify.connection"),
    ({"preset": "stripe", "connection": None, "settings": {"tolerance": 0}}, "settings.verify.settings"),
])
def test_bad_verification_settings_are_refused(tmp_path, verify, where):
    app = make_live_app(tmp_path)
    with app.app_context(), pytest.raises(recipes.RecipeInvalid) as exc:
        recipes.create(db.session, "r", {"settings": {"verify": verify}})
    assert where in {p.where for p in exc.value.problems}
