"""Review fixes to the inbound endpoint: waitress's own body cap, linear parsing of repeated
names with a field limit, charsets that are no text encodings, XML depth and encodings, Zoom
handshakes without an object payload, lone surrogates and NaN in JSON, HEAD and handshakes
after another process revoked the URL, and over-long Content-Type headers."""
from __future__ import annotations

import hashlib
import hmac
import socket
import time

import pytest
import requests
from sqlalchemy import create_engine, func, select
from sqlalchemy.orm import Session

from automations import connections, recipes
from automations.handshakes import answer
from automations.inbound import MAX_JSON_DEPTH, MAX_JSON_NODES, BodyRejected, multi_dict, parse_body
from automations.models import Event, Recipe, Run
from tests.conftest import signed_in_client
from tests.live import LiveServer, make_live_app
from tests.pg import temp_database
from web.extensions import db

GITHUB_SECRET = "It's a Secret to Everybody"


@pytest.fixture
def live(tmp_path):
    server = LiveServer(make_live_app(tmp_path))
    yield server
    server.close()


def make_recipe(app, settings=None, secret=None, preset="github"):
    with app.app_context():
        settings = dict(settings or {})
        if secret is not None:
            conn = connections.create(db.session, app.extensions["hookline"].secret_box, "s", "signing_secret",
                                      {"secret": secret})
            settings["verify"] = {"preset": preset, "connection": conn.id, "settings": {}}
        r = recipes.create(db.session, "r", {"steps": [], "settings": settings})
        return r.id, r.token


def events(app):
    with app.app_context():
        return db.session.scalars(select(Event).order_by(Event.id)).all()


def run_of(app, run_id):
    with app.app_context():
        return db.session.get(Run, run_id)


def wait_final(app, run_id, timeout=10.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        run = run_of(app, run_id)
        if run.status in ("succeeded", "failed", "dead", "rejected"):
            return run
        time.sleep(0.05)
    raise AssertionError(f"run {run_id} still {run.status}")


# -- 1. waitress refuses what is too large before reading it --------------------------------

def _raw_request(url: str, head: bytes, timeout: float = 2.0) -> tuple[socket.socket, float]:
    host, port = url.removeprefix("http://").split(":")
    sock = socket.create_connection((host, int(port)), timeout=timeout)
    sock.sendall(head)
    return sock, time.monotonic()


def test_declared_length_over_the_limit_is_413_before_any_body_is_sent(tmp_path):
    server = LiveServer(make_live_app(tmp_path, MAX_BODY_BYTES=1024), with_runner=False)
    try:
        _, token = make_recipe(server.app)
        head = (f"POST /hooks/{token} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                f"Content-Length: 500000000\r\n\r\n").encode() + b'{"a"'  # 500 MB declared, 4 bytes sent
        sock, started = _raw_request(server.url, head)
        with sock:
            reply = sock.recv(4096)  # times out (2 s) if the server waits for the body
        assert reply.startswith(b"HTTP/1.1 413 "), reply
        assert time.monotonic() - started < 2.0
        assert events(server.app) == []
    finally:
        server.close()


def test_chunked_body_is_cut_off_once_past_the_limit(tmp_path):
    server = LiveServer(make_live_app(tmp_path, MAX_BODY_BYTES=1024), with_runner=False)
    try:
        _, token = make_recipe(server.app)
        head = (f"POST /hooks/{token} HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n").encode()
        sock, _ = _raw_request(server.url, head)
        chunk = b"10000\r\n" + b"x" * 0x10000 + b"\r\n"
        sent, cut_off = 0, False
        with sock:
            try:
                while sent < 256 * 1024 * 1024:  # waitress's old cap was 1 GiB: it would take all of this
                    sock.sendall(chunk)
                    sent += len(chunk)
            except OSError:  # reset, broken pipe or a send timeout: the server stopped reading
                cut_off = True
        assert cut_off and sent < 64 * 1024 * 1024, sent  # the cap plus what socket buffers hold
        assert events(server.app) == []
    finally:
        server.close()


# -- 2. repeated names: linear, and at most MAX_JSON_NODES fields ---------------------------

def test_form_at_the_field_limit_keeps_every_repeated_value():
    parsed = parse_body("application/x-www-form-urlencoded", b"&".join([b"a=1"] * MAX_JSON_NODES))
    assert parsed.kind == "form" and parsed.value == {"a": ["1"] * MAX_JSON_NODES}


@pytest.mark.parametrize("content_type, raw", [
    ("application/x-www-form-urlencoded", b"&".join([b"a=1"] * (MAX_JSON_NODES + 1))),
    ("application/xml", b"<r>" + b"<i/>" * MAX_JSON_NODES + b"</r>"),  # the root makes it one too many
    ("application/xml", b'<r a="1">' + b"<i/>" * (MAX_JSON_NODES - 1) + b"</r>"),  # attributes count
])
def test_more_fields_than_the_limit_are_refused(content_type, raw):
    with pytest.raises(BodyRejected, match=f"more than {MAX_JSON_NODES}"):
        parse_body(content_type, raw)


def test_multi_dict_refuses_more_pairs_than_the_limit_and_appends_in_place():
    with pytest.raises(BodyRejected):
        multi_dict([("a", "1")] * (MAX_JSON_NODES + 1))
    assert multi_dict([("a", "1"), ("b", "2"), ("a", "3"), ("a", "4")]) == {"a": ["1", "3", "4"], "b": "2"}


def test_xml_repeated_siblings_become_one_list():
    parsed = parse_body("application/xml", b"<r>" + b"<i>x</i>" * 100_000 + b"<j>y</j></r>")
    assert parsed.kind == "xml" and parsed.value == {"r": {"i": ["x"] * 100_000, "j": "y"}}


def test_form_and_query_over_the_field_limit_are_400_and_not_stored(live):
    _, token = make_recipe(live.app)
    resp = live.post(token, data=b"&".join([b"a=1"] * (MAX_JSON_NODES + 1)),
                     headers={"Content-Type": "application/x-www-form-urlencoded"})
    assert resp.status_code == 400 and f"more than {MAX_JSON_NODES} form fields" in resp.json()["error"]
    # waitress caps headers at 256 KiB, below the limit: the WSGI app itself gets this query string
    query = "&".join(f"k{i}=" for i in range(MAX_JSON_NODES + 1))
    resp = live.app.test_client().post(f"/hooks/{token}?{query}", data=b"{}")
    assert resp.status_code == 400 and "query string" in resp.get_json()["error"]
    assert events(live.app) == []


# -- 3. charsets that are no text encodings -------------------------------------------------

@pytest.mark.parametrize("content_type, raw, kind, value", [
    ("text/plain; charset=punycode", b"ab-\\", "binary", None),          # punycode raises plain UnicodeError
    ("text/plain; charset=unicode_escape", b"\\u003cscript\\u003e", "binary", None),  # would make <script>
    ("text/plain; charset=raw_unicode_escape", b"\\u003c", "binary", None),
    ("text/plain; charset=idna", b"xn--", "binary", None),
    ("text/plain; charset=utf-7", b"+2AA-", "binary", None),             # decodes to a lone surrogate
    ("text/plain; charset=base64", b"YWJj", "binary", None),
    ("text/plain; charset=rot13", b"nop", "binary", None),
    ("text/plain; charset=" + "x" * 500, b"abc", "binary", None),
    ("text/plain; charset=ISO-8859-1", b"caf\xe9", "text", "café"),      # real charsets still honoured
    ("text/plain; charset=utf-16", "hé".encode("utf-16"), "text", "hé"),
    ("application/json; charset=punycode", b'{"a": "ab-\\\\"}', "json", {"a": "ab-\\"}),  # read as UTF-8
    ("application/json; charset=unicode_escape", b'{"a": "\\\\u0022"}', "json", {"a": "\\u0022"}),
    ("application/x-www-form-urlencoded; charset=punycode", b"a=ab-\\", "form", {"a": "ab-\\"}),
    ("multipart/form-data; boundary=X",
     (b'--X\r\nContent-Disposition: form-data; name="a"\r\nContent-Type: text/plain; charset=punycode\r\n\r\n'
      b"ab-\\\r\n--X--\r\n"), "multipart", {"a": "ab-\\"}),
])
def test_only_real_text_encodings_are_honoured(content_type, raw, kind, value):
    parsed = parse_body(content_type, raw)
    assert (parsed.kind, parsed.value, parsed.error) == (kind, value, None)


def test_made_up_charset_names_do_not_grow_pythons_codec_cache():
    """``encodings`` keeps every unknown name it is asked about, for good: a sender inventing
    a charset per request must not grow the server's memory without bound."""
    import encodings
    before = len(encodings._cache)
    for n in range(500):
        assert parse_body(f"text/plain; charset=x-made-up-{n}", b"abc").kind == "binary"
        assert parse_body(f"application/json; charset=nope{n}", b'{"a": 1}').value == {"a": 1}
    assert len(encodings._cache) == before
    assert parse_body("text/plain; charset=windows-1252", b"caf\xe9").value == "café"


@pytest.mark.parametrize("disposition", [b"form-data; name*=punycode''ab-%5C",
                                         b"form-data; name=\"a\"; filename*=punycode''ab-%5C",
                                         b"form-data; name*=unicode_escape''%5Cud800"])
def test_multipart_names_in_a_failing_charset_are_kept_as_text_with_the_reason(disposition):
    raw = b"--X\r\nContent-Disposition: " + disposition + b"\r\n\r\nv\r\n--X--\r\n"
    parsed = parse_body("multipart/form-data; boundary=X", raw)
    assert parsed.kind == "text" and "cannot be decoded" in parsed.error
    assert parsed.value == raw.decode()


def test_body_in_a_refused_charset_is_stored_as_received(live):
    _, token = make_recipe(live.app)
    resp = live.post(token, data=b"ab-\\", headers={"Content-Type": "text/plain; charset=punycode"})
    assert resp.status_code == 202
    [event] = events(live.app)
    assert (event.body_raw, event.body_kind, event.body) == (b"ab-\\", "binary", None)


def test_signed_recipe_still_rejects_and_records_a_bad_signature_in_a_refused_charset(live):
    _, token = make_recipe(live.app, secret=GITHUB_SECRET)
    headers = {"Content-Type": "application/json; charset=punycode", "X-Hub-Signature-256": "sha256=" + "0" * 64}
    resp = live.post(token, data=b"ab-\\", headers=headers)
    assert resp.status_code == 401 and resp.json() == {"error": "signature verification failed"}
    with live.app.app_context():
        [run] = db.session.scalars(select(Run)).all()
        assert run.status == "rejected" and run.error.startswith("signature verification failed: ")
        assert run.event.body_raw == b"ab-\\"
    good = "sha256=" + hmac.new(GITHUB_SECRET.encode(), b"ab-\\", hashlib.sha256).hexdigest()
    assert live.post(token, data=b"ab-\\", headers={**headers, "X-Hub-Signature-256": good}).status_code == 202


# -- 4. and 5. XML: depth limit, unknown encodings --------------------------------------------

def test_xml_nested_deeper_than_the_json_limit_is_refused():
    assert parse_body("application/xml", b"<a>" * MAX_JSON_DEPTH + b"</a>" * MAX_JSON_DEPTH).kind == "xml"
    depth = MAX_JSON_DEPTH + 1
    with pytest.raises(BodyRejected, match=f"XML nested deeper than {MAX_JSON_DEPTH} levels"):
        parse_body("application/xml", b"<a>" * depth + b"</a>" * depth)


def test_deeply_nested_xml_is_400_and_not_stored(live):
    _, token = make_recipe(live.app)
    resp = live.post(token, data=b"<a>" * 5000 + b"</a>" * 5000, headers={"Content-Type": "application/xml"})
    assert resp.status_code == 400 and "nested deeper" in resp.json()["error"]
    assert events(live.app) == []


@pytest.mark.parametrize("encoding", ["bogus", "rot13", "base64"])
def test_xml_in_an_unknown_encoding_is_stored_as_text_and_the_run_fails(live, encoding):
    _, token = make_recipe(live.app)
    raw = f'<?xml version="1.0" encoding="{encoding}"?><foo>x</foo>'.encode()
    resp = live.post(token, data=raw, headers={"Content-Type": "application/xml"})
    assert resp.status_code == 202
    run = wait_final(live.app, resp.json()["run_id"])
    assert run.status == "failed" and run.error.startswith("mapping error: body is not acceptable XML")
    [event] = events(live.app)
    assert (event.body_kind, event.body, event.body_raw) == ("text", raw.decode(), raw)


# -- 6. Zoom validation without an object payload --------------------------------------------

@pytest.mark.parametrize("payload", [None, "x", [1], 7])
def test_zoom_validation_with_a_payload_that_is_no_object_is_400(live, payload):
    _, token = make_recipe(live.app)
    resp = live.post(token, json={"event": "endpoint.url_validation", "payload": payload})
    assert resp.status_code == 400 and "no plainToken" in resp.text
    assert events(live.app) == []
    hs = answer("POST", {}, {"event": "endpoint.url_validation", "payload": payload}, {}, True, "secret")
    assert hs is not None and hs.status == 400


# -- 7. JSON the databases cannot hold: lone surrogates, NaN, Infinity ------------------------

@pytest.mark.parametrize("raw, reason", [
    (b'{"email": "x\\ud800y"}', "lone UTF-16 surrogate"),
    (b'{"email": "x\\uDFFFy"}', "lone UTF-16 surrogate"),
    (b'{"x\\udc00": 1}', "lone UTF-16 surrogate"),                  # in a key
    (b'[["a", {"b": "\\ud83d"}]]', "lone UTF-16 surrogate"),        # a high half without its low half
    (b'{"n": NaN}', "NaN is not a JSON value"),
    (b'{"n": Infinity}', "Infinity is not a JSON value"),
    (b'[-Infinity]', "-Infinity is not a JSON value"),
])
def test_json_the_databases_refuse_is_not_valid_json(raw, reason):
    parsed = parse_body("application/json", raw)
    assert parsed.kind == "text" and parsed.value == raw.decode()
    assert parsed.error.startswith("body is not valid JSON (") and reason in parsed.error
    assert parse_body(None, raw).kind == "text"  # unlabelled: kept as plain text


@pytest.mark.parametrize("raw, value", [
    (b'{"e": "\\ud83d\\ude00"}', {"e": "\U0001f600"}),               # a pair is one character
    (b'{"e": "\\\\ud800"}', {"e": "\\ud800"}),                       # an escaped backslash, not an escape
    (b'{"e": "\\u00e9", "n": 1.5e300}', {"e": "é", "n": 1.5e300}),
])
def test_json_with_escapes_that_are_fine_still_parses(raw, value):
    assert parse_body("application/json", raw).value == value


def test_lone_surrogate_run_fails_with_a_mapping_error_and_its_page_renders(live):
    _, token = make_recipe(live.app)
    resp = live.post(token, data=b'{"email": "x\\ud800y"}', headers={"Content-Type": "application/json"})
    assert resp.status_code == 202
    run_id = resp.json()["run_id"]
    run = wait_final(live.app, run_id)
    assert run.status == "failed" and "mapping error: body is not valid JSON" in run.error
    assert "lone UTF-16 surrogate" in run.error
    page = signed_in_client(live.app).get(f"/runs/{run_id}")
    assert page.status_code == 200


# -- 8. HEAD and handshakes confirm the URL against the database -----------------------------

def test_head_and_handshakes_answer_404_once_another_process_revoked_the_url(live):
    rid, token = make_recipe(live.app)
    rid2, token2 = make_recipe(live.app)
    challenge = {"hub.challenge": "1158201444"}
    assert requests.head(live.hook_url(token), timeout=5).status_code == 200
    assert requests.get(live.hook_url(token2), params=challenge, timeout=5).text == "1158201444"
    assert live.post(token, json={}).status_code == 202  # both tokens are now in this process's cache
    other = create_engine(live.app.config["SQLALCHEMY_DATABASE_URI"])  # another process's connection
    try:
        with Session(other) as s:
            new = recipes.rotate_token(s, s.get(Recipe, rid))
            recipes.delete(s, s.get(Recipe, rid2))
    finally:
        other.dispose()
    assert requests.head(live.hook_url(token), timeout=5).status_code == 404
    assert requests.head(live.hook_url(new), timeout=5).status_code == 200
    assert requests.get(live.hook_url(token2), params=challenge, timeout=5).status_code == 404
    zoom = {"event": "endpoint.url_validation", "payload": {"plainToken": "abc"}}
    assert live.post(token, json=zoom).status_code == 404
    with live.app.app_context():
        assert db.session.scalar(select(func.count()).select_from(Event)) == 1


# -- 9. Content-Type longer than its column ---------------------------------------------------

def _long_content_type_is_cut_to_the_column(server: LiveServer) -> None:
    _, token = make_recipe(server.app)
    content_type = "application/json; x=" + "y" * 980
    resp = server.post(token, data=b'{"a": 1}', headers={"Content-Type": content_type})
    assert resp.status_code == 202, resp.text
    [event] = events(server.app)
    assert event.content_type == content_type[:200]
    assert event.headers["content-type"] == content_type  # the full header is kept
    assert event.body == {"a": 1}


def test_long_content_type_is_stored_cut_to_200_characters(live):
    _long_content_type_is_cut_to_the_column(live)


@pytest.fixture(scope="module")
def pg_url():
    yield from temp_database()


@pytest.mark.postgres
def test_long_content_type_is_stored_cut_to_200_characters_on_postgres(tmp_path, pg_url):
    app = make_live_app(tmp_path, DATABASE_URL=pg_url)
    server = LiveServer(app, with_runner=False)
    try:
        _long_content_type_is_cut_to_the_column(server)
    finally:
        server.close()
        with app.app_context():
            db.session.remove()
            db.drop_all()
            db.engine.dispose()


@pytest.mark.parametrize("content_type", ["application/json", "application/json; charset=utf-8", None])
def test_json_with_a_byte_order_mark_parses(content_type):
    parsed = parse_body(content_type, b'\xef\xbb\xbf{"email": "ann@example.com"}')
    assert (parsed.kind, parsed.value, parsed.error) == ("json", {"email": "ann@example.com"}, None)


def test_xml_keeps_text_around_children_and_both_of_two_same_named_attributes():
    parsed = parse_body("application/xml",
                        b'<a xmlns:p="urn:p" x="1" p:x="2">hello <b>x</b> world <c/> again</a>')
    assert parsed.value == {"a": {"@x": "1", "@{urn:p}x": "2", "b": "x", "c": "", "#text": "hello world again"}}
