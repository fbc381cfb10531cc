"""Compressed webhooks (``Content-Encoding: gzip`` / ``deflate``): mapped as if they had not
been compressed, signatures checked on what the sender signed, and the size limit applied to
what comes out, so a small gzip bomb gets 413 and nothing is stored."""
from __future__ import annotations

import gzip
import hashlib
import hmac
import json
import zlib

import pytest
from sqlalchemy import func, select

from automations import content_encoding, recipes
from automations.models import Event, Run
from tests.live import LiveServer, make_live_app
from tests.sinks import HttpSink
from tests.test_inbound_verification import GITHUB_SECRET, verified_recipe
from web.extensions import db

PAYLOAD = {"order": {"id": 42, "email": "ann@example.com"}}
RAW = json.dumps(PAYLOAD).encode()


def raw_deflate(data: bytes) -> bytes:
    c = zlib.compressobj(wbits=-zlib.MAX_WBITS)
    return c.compress(data) + c.flush()


@pytest.mark.parametrize("header, sent", [
    ("gzip", gzip.compress(RAW)),
    ("x-gzip", gzip.compress(RAW)),
    ("GZIP", gzip.compress(RAW)),
    ("deflate", zlib.compress(RAW)),  # what HTTP means by deflate: zlib framing
    ("deflate", raw_deflate(RAW)),  # what some servers send as deflate anyway
    ("gzip, gzip", gzip.compress(gzip.compress(RAW))),  # applied twice, undone last first
    ("deflate, gzip", gzip.compress(zlib.compress(RAW))),
    ("identity", RAW),
    ("gzip", gzip.compress(RAW[:10]) + gzip.compress(RAW[10:])),  # two gzip members
    ("gzip", gzip.compress(RAW) + b"\0" * 512),  # zero padding after the last member
])
def test_known_codings_are_undone(header, sent):
    assert content_encoding.decode(sent, header, limit=1024) == RAW


@pytest.mark.parametrize("header", ["br", "zstd", "gzip, br", "compress"])
def test_an_unknown_coding_leaves_the_body_as_sent(header):
    assert content_encoding.decode(b"\x1b\x00opaque", header, limit=1024) == b"\x1b\x00opaque"


@pytest.mark.parametrize("sent, reason", [
    (b"not gzip at all", "not valid gzip"),
    (gzip.compress(RAW)[:-12], "not valid gzip"),  # truncated: no end of stream
])
def test_a_corrupt_body_is_an_error_naming_the_coding(sent, reason):
    with pytest.raises(content_encoding.ContentEncodingError, match=reason):
        content_encoding.decode(sent, "gzip", limit=1024)


def test_a_body_of_many_empty_members_is_refused_at_once():
    """The review's report: empty members inflate to nothing, so the size limit never trips,
    and each member cost a copy of the rest (2 MB took 1.9 s of CPU, 10 MB about 45 s)."""
    empty = gzip.compress(b"")
    body = empty * (10_000_000 // len(empty))
    with pytest.raises(content_encoding.ContentEncodingError, match="more than 16 gzip members"):
        content_encoding.decode(body, "gzip", limit=10_000_000)  # stops at the 17th member
    parts = b"".join(gzip.compress(bytes([65 + i])) for i in range(16))
    assert content_encoding.decode(parts, "gzip", limit=100) == bytes(range(65, 81))


def test_the_limit_applies_to_what_comes_out():
    bomb = gzip.compress(b"\0" * 1_000_001)  # about 1 KB that inflates to 1 MB
    assert len(bomb) < 2000
    assert content_encoding.decode(bomb, "gzip", limit=1_000_000) is None
    assert content_encoding.decode(bomb, "gzip", limit=1_000_001) == b"\0" * 1_000_001
    two = gzip.compress(b"a" * 600) + gzip.compress(b"b" * 600)  # each member alone fits
    assert content_encoding.decode(two, "gzip", limit=1000) is None


@pytest.fixture
def live(tmp_path):
    server = LiveServer(make_live_app(tmp_path, MAX_BODY_BYTES=100_000))
    yield server
    server.close()


def _events(app) -> list[Event]:
    with app.app_context():
        return list(db.session.scalars(select(Event).order_by(Event.id)))


def test_a_gzipped_webhook_is_mapped_and_delivered_as_if_plain(live):
    with HttpSink() as sink:
        with live.app.app_context():
            token = recipes.create(db.session, "shop", {
                "fields": [{"name": "email", "path": "$.order.email"}],
                "steps": [{"key": "crm", "action": "http_request", "inputs": {
                    "method": "POST", "url": sink.url, "body_type": "json",
                    "body": '{"email": {{ email | to_json }}}'}}]}).token
        resp = live.post(token, data=gzip.compress(RAW),
                         headers={"Content-Type": "application/json", "Content-Encoding": "gzip"})
        assert resp.status_code == 202, resp.text
        [received] = sink.wait_for(1)
        assert received.json() == {"email": "ann@example.com"}
    [event] = _events(live.app)
    assert (event.body_kind, event.body, event.body_raw) == ("json", PAYLOAD, RAW)
    assert event.headers["content-encoding"] == "gzip"  # the request as received says it came compressed


@pytest.mark.parametrize("header, sent, status, error", [
    ("gzip", gzip.compress(b"\0" * 100_001), 413, "body larger than 100000 bytes once decompressed"),
    ("gzip", b"plain text, not gzip", 400, "body is not valid gzip"),
    ("deflate", b"plain text, not deflate", 400, "body is not valid deflate"),
])
def test_a_bomb_or_a_corrupt_body_is_refused_and_nothing_stored(live, header, sent, status, error):
    with live.app.app_context():
        token = recipes.create(db.session, "r", {}).token
    resp = live.post(token, data=sent, headers={"Content-Type": "application/json", "Content-Encoding": header})
    assert resp.status_code == status and resp.json()["error"].startswith(error), resp.text
    with live.app.app_context():
        assert db.session.scalar(select(func.count()).select_from(Event)) == 0


def test_an_unknown_coding_is_stored_as_sent_and_the_run_says_why(live):
    with live.app.app_context():
        token = recipes.create(db.session, "r", {"fields": [{"name": "id", "path": "$.order.id"}]}).token
    opaque = b"\x1b\x7f\x00\xffbrotli-ish"
    resp = live.post(token, data=opaque, headers={"Content-Type": "application/json", "Content-Encoding": "br"})
    assert resp.status_code == 202
    [event] = _events(live.app)
    assert event.body_raw == opaque and event.parse_error and "not valid JSON" in event.parse_error
    assert "sent with Content-Encoding: br, which Hookline does not decompress" in event.parse_error


def _github(body: bytes) -> str:
    return "sha256=" + hmac.new(GITHUB_SECRET.encode(), body, hashlib.sha256).hexdigest()


@pytest.mark.parametrize("signed_over, expected", [("decompressed", 202), ("as sent", 202), ("other", 401)])
def test_signatures_are_checked_on_what_the_sender_signed(live, signed_over, expected):
    token = verified_recipe(live.app, "github", GITHUB_SECRET)
    sent = gzip.compress(RAW)
    signature = _github({"decompressed": RAW, "as sent": sent, "other": RAW + b" "}[signed_over])
    resp = live.post(token, data=sent, headers={
        "Content-Type": "application/json", "Content-Encoding": "gzip", "X-Hub-Signature-256": signature})
    assert resp.status_code == expected
    with live.app.app_context():
        [run] = db.session.scalars(select(Run)).all()
    assert (run.status == "rejected") == (expected == 401)
