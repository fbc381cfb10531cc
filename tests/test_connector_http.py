"""The generic HTTP request action, called through its public ``run`` against a real sink."""
from __future__ import annotations

import base64
from typing import Any

import pytest

from connectors.base import ActionContext, PermanentError, RetryableError
from connectors.http_request import ACTIONS
from connectors.outbound import OutboundClient
from tests.sinks import HttpSink, Received, Reply

ACTION = ACTIONS[0]


def call(inputs: dict[str, Any], credentials: dict[str, Any] | None = None):
    ctx = ActionContext(inputs={"method": "POST", "body_type": "json", **inputs}, credentials=credentials or {},
                        http=OutboundClient(allowlist=["127.0.0.0/8", "::1/128", "localhost"], timeout=2),
                        idempotency_key="run-1-step-a")
    return ACTION.run(ctx)


@pytest.fixture
def sink():
    with HttpSink(lambda r: Reply(200, {"id": 42, "nested": {"ok": True}})) as s:
        yield s


@pytest.mark.parametrize("body_type, body, content_type, expected", [
    ("json", {"a": 1, "b": [1, 2]}, "application/json", b'{"a": 1, "b": [1, 2]}'),
    ("json", '{"a": 1}', "application/json", b'{"a": 1}'),
    ("json", [1, "two"], "application/json", b'[1, "two"]'),
    ("form", {"a": "1", "b": "x y"}, "application/x-www-form-urlencoded", b"a=1&b=x+y"),
    ("form", "a=1&b=2", "application/x-www-form-urlencoded", b"a=1&b=2"),
    ("form", [{"key": "a", "value": "1"}], "application/x-www-form-urlencoded", b"a=1"),
    ("raw", "<xml>héllo</xml>", "application/xml", "<xml>héllo</xml>".encode()),
    ("none", {"ignored": True}, None, b""),
])
def test_body_types(sink: HttpSink, body_type: str, body: Any, content_type: str | None, expected: bytes) -> None:
    call({"url": sink.url + "/items", "body_type": body_type, "body": body, "content_type": "application/xml"})
    [req] = sink.wait_for(1)
    assert req.body == expected
    assert req.headers.get("Content-Type") == content_type


def test_raw_body_default_content_type(sink: HttpSink) -> None:
    call({"url": sink.url, "body_type": "raw", "body": "hello"})
    assert sink.wait_for(1)[0].headers["Content-Type"] == "text/plain; charset=utf-8"


def test_query_headers_method_and_idempotency_key(sink: HttpSink) -> None:
    result = call({"url": sink.url + "/v1?fixed=1", "method": "PATCH", "query": {"page": 2, "tag": ["a", "b"]},
                   "headers": {"X-Trace": "t-1", "X-Count": 3}, "body": {"x": 1}})
    [req] = sink.wait_for(1)
    assert req.method == "PATCH" and req.query == {"fixed": ["1"], "page": ["2"], "tag": ["a", "b"]}
    assert req.headers["X-Trace"] == "t-1" and req.headers["X-Count"] == "3"
    assert req.headers["Idempotency-Key"] == "run-1-step-a"
    assert result.output == {"status": 200, "headers": result.output["headers"], "body": {"id": 42, "nested": {"ok": True}}}
    assert result.output["headers"]["content-type"] == "application/json"
    assert result.response["status"] == 200 and result.request["method"] == "PATCH"


def test_users_idempotency_key_wins(sink: HttpSink) -> None:
    call({"url": sink.url, "headers": {"idempotency-key": "mine"}})
    assert sink.wait_for(1)[0].headers["idempotency-key"] == "mine"


def test_text_response_body(sink: HttpSink) -> None:
    sink.responder = lambda r: Reply(200, "plain words")
    assert call({"url": sink.url, "method": "GET", "body_type": "none"}).output["body"] == "plain words"


def check(req: Received, creds: dict[str, str]) -> bool:
    scheme = creds["scheme"]
    if scheme == "bearer":
        return req.headers.get("Authorization") == "Bearer tok-123"
    if scheme == "basic":
        return req.headers.get("Authorization") == "Basic " + base64.b64encode(b"alice:pw").decode()
    if scheme == "api_key_header":
        return req.headers.get("X-Partner-Key") == "k-9"
    return req.query.get("apikey") == ["k-9"]


@pytest.mark.parametrize("creds", [
    {"scheme": "bearer", "token": "tok-123"},
    {"scheme": "basic", "username": "alice", "password": "pw"},
    {"scheme": "api_key_header", "key_name": "X-Partner-Key", "key_value": "k-9"},
    {"scheme": "api_key_query", "key_name": "apikey", "key_value": "k-9"},
])
def test_auth_schemes(sink: HttpSink, creds: dict[str, str]) -> None:
    sink.responder = lambda r: Reply(200, {"ok": True}) if check(r, creds) else Reply(401, {"error": "auth"})
    result = call({"url": sink.url + "/secure"}, creds)
    assert result.output["status"] == 200
    summary = str(result.request)
    for secret in ("tok-123", "k-9", base64.b64encode(b"alice:pw").decode()):
        assert secret not in summary


def test_default_api_key_names(sink: HttpSink) -> None:
    call({"url": sink.url}, {"scheme": "api_key_header", "key_value": "k1"})
    call({"url": sink.url}, {"scheme": "api_key_query", "key_value": "k2"})
    first, second = sink.wait_for(2)
    assert first.headers["X-Api-Key"] == "k1" and second.query["api_key"] == ["k2"]


@pytest.mark.parametrize("status, error, retry_after", [
    (400, PermanentError, None), (401, PermanentError, None), (404, PermanentError, None),
    (422, PermanentError, None), (429, RetryableError, 30.0), (500, RetryableError, None),
    (503, RetryableError, 30.0),
])
def test_error_statuses(sink: HttpSink, status: int, error: type, retry_after: float | None) -> None:
    headers = {"Retry-After": "30"} if retry_after else {}
    sink.responder = lambda r: Reply(status, {"error": "boom"}, headers=headers)
    with pytest.raises(error) as info:
        call({"url": sink.url, "body": {"a": 1}})
    assert str(status) in info.value.message and "boom" in info.value.message
    assert info.value.response["status"] == status and info.value.response["body"] == {"error": "boom"}
    assert info.value.request["body"] == {"a": 1}
    assert getattr(info.value, "retry_after", None) == retry_after


@pytest.mark.parametrize("inputs, message", [
    ({"url": "not a url"}, "url:"),
    ({"url": "ftp://example.com/x"}, "url:"),
    ({"url": ""}, "url:"),
    ({"url": "http://127.0.0.1:1/", "body": "{not json"}, "body: invalid JSON"),
    ({"url": "http://127.0.0.1:1/", "body_type": "form", "body": "a=1&&b"}, "body: form"),
    ({"url": "http://127.0.0.1:1/", "method": "TRACE"}, "method:"),
    ({"url": "http://127.0.0.1:1/", "headers": "nope"}, "headers:"),
    ({"url": "http://127.0.0.1:1/", "query": 5}, "query:"),
])
def test_invalid_rendered_inputs_refused_before_sending(inputs: dict[str, Any], message: str) -> None:
    with pytest.raises(PermanentError, match=message):
        call(inputs)


def test_private_destination_refused() -> None:
    ctx = ActionContext(inputs={"url": "http://10.0.0.5/x", "method": "GET", "body_type": "none"}, credentials={},
                        http=OutboundClient(), idempotency_key="k")
    with pytest.raises(PermanentError, match="destination not allowed"):
        ACTION.run(ctx)


def test_empty_token_is_permanent(sink: HttpSink) -> None:
    with pytest.raises(PermanentError, match="token is empty"):
        call({"url": sink.url}, {"scheme": "bearer", "token": ""})
    assert sink.requests == []
