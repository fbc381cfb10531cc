"""Mattermost incoming-webhook action against a sink that enforces Mattermost's documented
contract (https://developers.mattermost.com/integrate/webhooks/incoming/), plus one recipe
run end to end through a live server and runner."""
from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import pytest

from automations import connections
from connectors.base import ActionContext, PermanentError, RetryableError
from connectors.mattermost import ACTIONS, CREDENTIALS, MAX_TEXT
from connectors.outbound import OutboundClient
from connectors.registry import ACTIONS as REGISTERED_ACTIONS
from connectors.registry import CREDENTIALS as REGISTERED_CREDENTIALS
from tests.live import TEST_ALLOWLIST, LiveServer, make_live_app
from tests.sinks import HttpSink, Received, Reply
from tests.test_e2e import make_recipe, steps_of, wait_run
from web.extensions import db

ACTION = ACTIONS[0]
KEY = "x8k3mfqz1jbh7pwd5ecrty9ngo"  # 26 characters, like a real hook id
CHANNELS = {"town-square", "off-topic", "orders"}
USERS = {"ann"}


def mm_error(status: int, error_id: str, message: str, detailed: str = "") -> Reply:
    return Reply(status, {"id": error_id, "message": message, "detailed_error": detailed,
                          "request_id": "h8sd7f6ghjk", "status_code": status})


class MattermostLike:
    """Validates requests like Mattermost's /hooks/<key> endpoint; ``next_error`` scripts the
    next answer (after the request is recorded)."""

    def __init__(self) -> None:
        self.next_error: Reply | None = None
        self.posts: list[dict[str, Any]] = []

    def __call__(self, req: Received) -> Reply:
        if not req.path.startswith("/hooks/") or req.path.rstrip("/") != f"/hooks/{KEY}":
            hook = req.path.rsplit("/", 1)[-1]  # developer mode shows the id it looked for
            return mm_error(404, "web.incoming_webhook.invalid.app_error", "Invalid webhook.",
                            f"resource: IncomingWebhook id: {hook}")
        if req.method != "POST":
            return mm_error(405, "api.context.404.app_error", "Sorry, we could not find the page.")
        if self.next_error is not None:
            return self.next_error
        if not req.headers.get("Content-Type", "").startswith("application/json"):
            return mm_error(400, "web.incoming_webhook.parse.app_error", "Unable to parse incoming data.")
        try:
            payload = json.loads(req.body)
        except ValueError:
            return mm_error(400, "web.incoming_webhook.parse.app_error", "Unable to parse incoming data.")
        if not isinstance(payload, dict):
            return mm_error(400, "web.incoming_webhook.parse.app_error", "Unable to parse incoming data.")
        attachments = payload.get("attachments")
        if attachments is not None and (not isinstance(attachments, list)
                                        or not all(isinstance(a, dict) for a in attachments)):
            return mm_error(400, "web.incoming_webhook.parse.app_error", "Unable to parse incoming data.")
        props = payload.get("props")
        if props is not None and not isinstance(props, dict):
            return mm_error(400, "web.incoming_webhook.parse.app_error", "Unable to parse incoming data.")
        for name in ("text", "channel", "username", "icon_url", "icon_emoji"):
            if name in payload and not isinstance(payload[name], str):
                return mm_error(400, "web.incoming_webhook.parse.app_error", "Unable to parse incoming data.")
        if not str(payload.get("text") or "").strip() and not attachments:
            return mm_error(400, "web.incoming_webhook.text.app_error", "No text specified")
        priority = payload.get("priority")
        if priority is not None and (not isinstance(priority, dict)
                                     or priority.get("priority") not in ("", "important", "urgent")):
            return mm_error(400, "api.post.post_priority.invalid_priority.app_error", "Invalid post priority")
        channel = payload.get("channel")
        if channel:
            if channel.startswith("@"):
                if channel[1:] not in USERS:
                    return mm_error(400, "web.incoming_webhook.user.app_error", "Couldn't find the user")
            elif channel.lstrip("#") not in CHANNELS:
                return mm_error(400, "web.incoming_webhook.channel.app_error", "Couldn't find the channel")
        text = str(payload.get("text") or "")
        # Mattermost splits long text into several posts of at most 16383 characters.
        self.posts += [{**payload, "text": text[i:i + MAX_TEXT]} for i in range(0, max(len(text), 1), MAX_TEXT)]
        return Reply(200, "ok", headers={"Content-Type": "text/plain"})


@pytest.fixture
def mattermost():
    contract = MattermostLike()
    with HttpSink(contract) as sink:
        sink.contract = contract  # type: ignore[attr-defined]
        yield sink


def client() -> OutboundClient:
    return OutboundClient(allowlist=TEST_ALLOWLIST, timeout=2)


def send(sink: HttpSink, inputs: dict[str, Any], path: str = f"/hooks/{KEY}"):
    ctx = ActionContext(inputs=inputs, credentials={"webhook_url": sink.url + path}, http=client(),
                        idempotency_key="run-1-step-a")
    return ACTION.run(ctx)


# --- declaration -----------------------------------------------------------------------------

def test_declaration_is_registered_with_a_secret_url() -> None:
    assert REGISTERED_ACTIONS["mattermost_message"] is ACTION
    assert ACTION.label == "Mattermost: send message" and ACTION.group == "Chat"
    assert ACTION.credential == "mattermost_webhook" and ACTION.credential_required
    ctype = REGISTERED_CREDENTIALS["mattermost_webhook"]
    assert ctype is CREDENTIALS[0] and ctype.secret_names == {"webhook_url"}
    assert "HOOKLINE_OUTBOUND_ALLOWLIST" in ctype.fields[0].help
    assert "HOOKLINE_OUTBOUND_ALLOWLIST" in ACTION.description
    for f in (*ACTION.fields, *ctype.fields):
        assert f.label and f.help, f.name


# --- success ---------------------------------------------------------------------------------

def test_text_message(mattermost: HttpSink) -> None:
    result = send(mattermost, {"text": "New order **42**"})
    [req] = mattermost.wait_for(1)
    assert req.method == "POST" and req.path == f"/hooks/{KEY}"
    assert req.json() == {"text": "New order **42**"}
    assert req.headers["Content-Type"] == "application/json"
    assert result.output == {"ok": True, "status": 200, "channel": None}
    assert result.response["status"] == 200 and result.response["body"] == "ok"
    assert result.request["method"] == "POST" and result.request["body"] == {"text": "New order **42**"}
    assert KEY not in json.dumps([result.request, result.response, result.output])
    assert "/hooks/" not in result.request["url"]


def test_channel_username_and_icons_are_sent(mattermost: HttpSink) -> None:
    result = send(mattermost, {"text": "hi", "channel": " orders ", "username": "Orders bot",
                               "icon_url": "https://example.com/bot.png", "icon_emoji": ":tada:"})
    assert mattermost.wait_for(1)[0].json() == {
        "text": "hi", "channel": "orders", "username": "Orders bot",
        "icon_url": "https://example.com/bot.png", "icon_emoji": ":tada:"}
    assert result.output["channel"] == "orders"


def test_direct_message_to_a_user(mattermost: HttpSink) -> None:
    send(mattermost, {"text": "psst", "channel": "@ann"})
    assert mattermost.wait_for(1)[0].json()["channel"] == "@ann"


@pytest.mark.parametrize("attachments", [
    [{"fallback": "Order 42", "color": "#36a64f", "text": "Paid",
      "fields": [{"title": "Total", "value": "$19.99", "short": True}]}],
    '[{"fallback": "Order 42", "text": "Paid"}]',
    {"attachments": [{"fallback": "Order 42", "text": "Paid"}]},
])
def test_attachments_without_text(mattermost: HttpSink, attachments: Any) -> None:
    send(mattermost, {"text": "", "attachments": attachments})
    payload = mattermost.wait_for(1)[0].json()
    assert "text" not in payload
    assert payload["attachments"][0]["fallback"] == "Order 42"


def test_props_and_priority(mattermost: HttpSink) -> None:
    send(mattermost, {"text": "Outage", "props": '{"card": "**Runbook**: restart"}', "priority": "urgent",
                      "requested_ack": True})
    payload = mattermost.wait_for(1)[0].json()
    assert payload["props"] == {"card": "**Runbook**: restart"}
    assert payload["priority"] == {"priority": "urgent", "requested_ack": True}


def test_text_at_the_limit_is_one_post(mattermost: HttpSink) -> None:
    send(mattermost, {"text": "é" * MAX_TEXT})
    assert len(mattermost.wait_for(1)[0].json()["text"]) == MAX_TEXT
    assert len(mattermost.contract.posts) == 1  # type: ignore[attr-defined]


# --- validation before sending -------------------------------------------------------------

@pytest.mark.parametrize("inputs, message", [
    ({"text": ""}, "text: required unless attachments"),
    ({"text": "  \n", "attachments": []}, "text: required unless attachments"),
    ({"text": "  ", "attachments": "  "}, "text: required unless attachments"),
    ({"text": "x" * (MAX_TEXT + 1)}, f"text: {MAX_TEXT + 1} characters; Mattermost allows at most {MAX_TEXT}"),
    ({"text": "x", "attachments": "[{oops"}, "attachments: invalid JSON"),
    ({"text": "x", "attachments": {"text": "one object"}}, "attachments: must be a JSON list"),
    ({"text": "x", "attachments": ["just text"]}, "attachments: must be a JSON list"),
    ({"text": "x", "attachments": '"a string"'}, "attachments: must be a JSON list"),
    ({"text": "x", "attachments": [{"fields": {"title": "a"}}]}, "attachment 1: fields must be a list"),
    ({"text": "x", "props": "[1, 2]"}, "props: must be a JSON object"),
    ({"text": "x", "props": "{nope"}, "props: invalid JSON"),
    ({"text": "x", "channel": "Town Square"}, "channel: 'Town Square' contains spaces"),
    ({"text": "x", "channel": "c" * 80}, "channel: longer than 64"),
    ({"text": "x", "icon_url": "javascript:alert(1)"}, "icon_url: must be an http"),
    ({"text": "x", "priority": "critical"}, "priority: must be one of important, urgent"),
])
def test_invalid_input_refused_before_sending(mattermost: HttpSink, inputs: dict[str, Any], message: str) -> None:
    with pytest.raises(PermanentError, match=message):
        send(mattermost, inputs)
    assert mattermost.requests == []


@pytest.mark.parametrize("url", ["", "chat.example.com/hooks/abc", "mailto:a@b.c",
                                 "https://chat.example.com/", "https://chat.example.com/hooks/",
                                 "https://chat.example.com/hooks/abc/extra"])
def test_bad_webhook_url(url: str) -> None:
    ctx = ActionContext(inputs={"text": "hi"}, credentials={"webhook_url": url}, http=client(),
                        idempotency_key="k")
    with pytest.raises(PermanentError, match="webhook_url: the connection needs a Mattermost") as info:
        ACTION.run(ctx)
    assert "abc" not in info.value.message


# --- the error contract ----------------------------------------------------------------------

@pytest.mark.parametrize("reply, error, expected", [
    (mm_error(400, "web.incoming_webhook.text.app_error", "No text specified"), PermanentError,
     ["No text specified", "web.incoming_webhook.text.app_error", "HTTP 400", "give a text or attachments"]),
    (mm_error(400, "web.incoming_webhook.channel.app_error", "Couldn't find the channel"), PermanentError,
     ["Couldn't find the channel", "HTTP 400", "town-square"]),
    (mm_error(401, "web.incoming_webhook.disabled.app_error", "Incoming webhooks have been disabled."),
     PermanentError, ["Incoming webhooks have been disabled.", "HTTP 401", "System Console"]),
    (mm_error(403, "web.incoming_webhook.permissions.app_error", "Inappropriate channel permissions"),
     PermanentError, ["Inappropriate channel permissions", "HTTP 403", "may not post"]),
    (mm_error(403, "web.incoming_webhook.channel_locked.app_error", "This webhook is not permitted"),
     PermanentError, ["not permitted", "locked to its own channel"]),
    (mm_error(404, "web.incoming_webhook.invalid.app_error", "Invalid webhook."), PermanentError,
     ["Invalid webhook.", "HTTP 404", "create a new incoming webhook"]),
    (Reply(404, "<html>nginx</html>", headers={"Content-Type": "text/html"}), PermanentError,
     ["an HTML page", "HTTP 404", "create a new incoming webhook"]),
    (mm_error(500, "app.post.save.app_error", "Unable to save the post."), RetryableError,
     ["Mattermost is unavailable", "Unable to save the post.", "HTTP 500"]),
    (Reply(502, "<html>Bad Gateway</html>", headers={"Content-Type": "text/html"}), RetryableError,
     ["Mattermost is unavailable", "HTTP 502"]),
    (Reply(503, ""), RetryableError, ["HTTP 503"]),
    (Reply(200, "<html>sign in</html>", headers={"Content-Type": "text/html"}), PermanentError,
     ["without 'ok'", "is this a Mattermost incoming-webhook URL"]),
])
def test_mattermost_error_contract(mattermost: HttpSink, reply: Reply, error: type, expected: list[str]) -> None:
    mattermost.contract.next_error = reply  # type: ignore[attr-defined]
    with pytest.raises(error) as info:
        send(mattermost, {"text": "hello"})
    for part in expected:
        assert part in info.value.message, info.value.message
    assert info.value.response["status"] == reply.status
    assert KEY not in info.value.message and KEY not in json.dumps([info.value.request, info.value.response])
    if error is RetryableError:
        assert info.value.retry_after is None


def test_unknown_channel_from_the_contract(mattermost: HttpSink) -> None:
    with pytest.raises(PermanentError) as info:
        send(mattermost, {"text": "hi", "channel": "no-such-channel"})
    assert "Couldn't find the channel (web.incoming_webhook.channel.app_error, HTTP 400)" in info.value.message
    with pytest.raises(PermanentError, match="Couldn't find the user"):
        send(mattermost, {"text": "hi", "channel": "@nobody"})
    assert len(mattermost.requests) == 2 and mattermost.contract.posts == []  # type: ignore[attr-defined]


def test_deleted_webhook_never_shows_its_key(mattermost: HttpSink) -> None:
    """The server echoes the hook id in detailed_error (developer mode): scrubbed everywhere."""
    other = "q" * 26
    with pytest.raises(PermanentError) as info:
        send(mattermost, {"text": "hi"}, path=f"/hooks/{other}")
    assert "Invalid webhook." in info.value.message and "create a new incoming webhook" in info.value.message
    body = info.value.response["body"]
    assert body["id"] == "web.incoming_webhook.invalid.app_error"
    assert body["detailed_error"] == "resource: IncomingWebhook id: [redacted]"
    assert other not in json.dumps([info.value.message, info.value.request, info.value.response])


def test_rate_limited_honours_retry_after(mattermost: HttpSink) -> None:
    mattermost.contract.next_error = Reply(  # type: ignore[attr-defined]
        429, {"id": "api.context.rate_limit_exceeded.app_error", "message": "limit exceeded", "status_code": 429},
        headers={"Retry-After": "17", "X-Ratelimit-Limit": "10", "X-Ratelimit-Remaining": "0",
                 "X-Ratelimit-Reset": "3"})
    with pytest.raises(RetryableError) as info:
        send(mattermost, {"text": "hello"})
    assert info.value.retry_after == 17.0
    assert "rate limiting" in info.value.message and "limit exceeded" in info.value.message
    headers = {k.lower(): v for k, v in info.value.response["headers"].items()}
    assert headers["x-ratelimit-remaining"] == "0" and headers["retry-after"] == "17"


def test_rate_limited_with_only_x_ratelimit_reset(mattermost: HttpSink) -> None:
    mattermost.contract.next_error = Reply(  # type: ignore[attr-defined]
        429, "limit exceeded", headers={"X-Ratelimit-Limit": "10", "X-Ratelimit-Remaining": "0",
                                        "X-Ratelimit-Reset": "42"})
    with pytest.raises(RetryableError) as info:
        send(mattermost, {"text": "hello"})
    assert info.value.retry_after == 42.0
    assert "limit exceeded (HTTP 429)" in info.value.message


def test_rate_limit_reset_as_unix_time(mattermost: HttpSink) -> None:
    mattermost.contract.next_error = Reply(429, "", headers={"X-Ratelimit-Reset": "4102444800"})  # type: ignore[attr-defined]
    with pytest.raises(RetryableError) as info:
        send(mattermost, {"text": "hello"})
    assert info.value.retry_after == datetime(2100, 1, 1, tzinfo=UTC)


def test_redirected_post_is_explained(mattermost: HttpSink) -> None:
    """http:// behind a proxy that 301s to https://: the POST arrives as a GET on a web page."""
    def responder(req: Received) -> Reply:
        if req.path == f"/hooks/{KEY}":
            return Reply(301, "", headers={"Location": "/login"})
        return Reply(200, "<html>Mattermost</html>", headers={"Content-Type": "text/html"})

    with HttpSink(responder) as sink, pytest.raises(PermanentError, match="redirected the request") as info:
        send(sink, {"text": "hi"})
    assert KEY not in info.value.message


def test_sink_contract_rejects_what_mattermost_rejects(mattermost: HttpSink) -> None:
    """The sink itself behaves like Mattermost (so the tests above use a faithful double)."""
    http = client()
    url = f"{mattermost.url}/hooks/{KEY}"
    bad = http.request("POST", url, data=b"{nope", headers={"Content-Type": "application/json"})
    assert bad.status == 400 and bad.json()["id"] == "web.incoming_webhook.parse.app_error"
    assert http.request("POST", url, json={"text": ""}).json()["message"] == "No text specified"
    assert http.request("POST", url, json={"text": "x", "channel": "nope"}).json()["message"] == \
        "Couldn't find the channel"
    assert http.request("POST", url, json={"text": "x", "attachments": {"a": 1}}).status == 400
    assert http.request("POST", url + "x", json={"text": "x"}).status == 404
    long = http.request("POST", url, json={"text": "y" * (MAX_TEXT + 5)})
    assert long.text == "ok" and [len(p["text"]) for p in mattermost.contract.posts] == [MAX_TEXT, 5]  # type: ignore[attr-defined]


def test_private_server_refused_without_allowlist() -> None:
    ctx = ActionContext(inputs={"text": "hi"}, credentials={"webhook_url": f"http://192.168.0.10:8065/hooks/{KEY}"},
                        http=OutboundClient(), idempotency_key="k")
    with pytest.raises(PermanentError, match="destination not allowed") as info:
        ACTION.run(ctx)
    assert KEY not in info.value.message and "/hooks/" not in info.value.message


def test_network_error_never_shows_the_key() -> None:
    with HttpSink() as sink:
        url = f"{sink.url}/hooks/{KEY}"
    ctx = ActionContext(inputs={"text": "hi"}, credentials={"webhook_url": url}, http=client(),
                        idempotency_key="k")
    with pytest.raises(RetryableError) as info:  # the sink is closed: connection refused
        ACTION.run(ctx)
    assert KEY not in info.value.message and KEY not in json.dumps(info.value.request)


# --- end to end --------------------------------------------------------------------------------

@pytest.fixture
def live(tmp_path):
    server = LiveServer(make_live_app(tmp_path))
    yield server
    server.close()


def _connection(live: LiveServer, url: str) -> int:
    with live.app.app_context():
        box = live.app.extensions["hookline"].secret_box
        return connections.create(db.session, box, "team chat", "mattermost_webhook", {"webhook_url": url}).id


def test_recipe_posts_to_mattermost_through_the_runner(live: LiveServer, mattermost: HttpSink) -> None:
    conn_id = _connection(live, f"{mattermost.url}/hooks/{KEY}")
    _, token = make_recipe(live.app, fields=[{"name": "email", "path": "$.customer.email"},
                                             {"name": "total", "path": "$.total"}], steps=[
        {"key": "chat", "action": "mattermost_message", "connection": conn_id,
         "inputs": {"text": "New order from **{{ email }}**: ${{ total }}", "channel": "orders",
                    "username": "Shop", "attachments": '[{"fallback": "order", "text": "{{ email }}"}]'}},
    ])
    resp = live.post(token, json={"customer": {"email": "ann@example.com"}, "total": "19.99"})
    assert resp.status_code == 202
    run_id = resp.json()["run_id"]
    received = mattermost.wait_for(1)[0]
    assert received.path == f"/hooks/{KEY}"
    assert received.json() == {"text": "New order from **ann@example.com**: $19.99", "channel": "orders",
                               "username": "Shop", "attachments": [{"fallback": "order", "text": "ann@example.com"}]}
    assert received.headers["Idempotency-Key"] == f"hookline-{run_id}-chat"
    assert wait_run(live.app, run_id) == "succeeded"
    [step] = steps_of(live.app, run_id)
    assert step["key"] == "chat" and step["status"] == "succeeded" and step["attempt"] == 1
    assert step["request"]["method"] == "POST" and step["request"]["body"]["channel"] == "orders"
    assert step["request"]["url"].startswith(mattermost.url) and "/hooks/" not in step["request"]["url"]
    assert step["response"]["status"] == 200 and step["response"]["body"] == "ok"
    assert KEY not in json.dumps(step, default=str)


def test_rate_limited_step_is_retried_after_retry_after(live: LiveServer) -> None:
    answers = [Reply(429, {"id": "api.context.rate_limit_exceeded.app_error", "message": "limit exceeded",
                           "status_code": 429}, headers={"Retry-After": "1", "X-Ratelimit-Reset": "1"})]
    contract = MattermostLike()

    def responder(req: Received) -> Reply:
        return answers.pop(0) if answers else contract(req)

    with HttpSink(responder) as sink:
        conn_id = _connection(live, f"{sink.url}/hooks/{KEY}")
        _, token = make_recipe(live.app, steps=[
            {"key": "chat", "action": "mattermost_message", "connection": conn_id, "inputs": {"text": "hi"}}],
            settings={"retry": {"schedule": [60], "max_attempts": 3}})  # Retry-After (1 s) wins over 60 s
        run_id = live.post(token, json={}).json()["run_id"]
        first, second = sink.wait_for(2, timeout=10)
        assert second.at - first.at >= 0.9
        assert wait_run(live.app, run_id) == "succeeded"
        history = steps_of(live.app, run_id)
        assert [(s["status"], s["attempt"]) for s in history] == [("retrying", 1), ("succeeded", 2)]
        assert "limit exceeded" in history[0]["error"]
        assert KEY not in json.dumps(history, default=str)
