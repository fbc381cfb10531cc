"""Discord webhook action against a sink that enforces Discord's documented Execute Webhook
contract (https://discord.com/developers/docs/resources/webhook#execute-webhook), then through
a real server and runner."""
from __future__ import annotations

import json
import logging
import re
import socket
from typing import Any

import pytest

from automations import connections, logredact
from automations.models import Run
from connectors.base import ActionContext, PermanentError, RetryableError
from connectors.discord import ACTIONS, CREDENTIALS
from connectors.outbound import OutboundClient
from tests.live import TEST_ALLOWLIST, LiveServer, make_live_app
from tests.sinks import HttpSink, Received, Reply
from tests.test_e2e import make_recipe, steps_of, wait_run
from web.extensions import db

ACTION = ACTIONS[0]
WEBHOOK_ID = "112233445566778899"
TOKEN = "tOk3n-SECRET_9a8b7c6d5e4f"
CHANNEL_ID = "223344556677889900"
THREAD_ID = "998877665544332211"
PATH = f"/api/webhooks/{WEBHOOK_ID}/{TOKEN}"


def form_error(field: str, code: str, message: str) -> dict[str, Any]:
    return {field: {"_errors": [{"code": code, "message": message}]}}


class DiscordLike:
    """Answers like discord.com's Execute Webhook: checks the webhook id and token, the JSON
    body and its limits, ``thread_id``/``thread_name``, applies ``allowed_mentions`` (the
    message's ``mention_everyone`` says whether @everyone would have pinged) and returns the
    message (200) only with ``?wait=true``, else 204. ``next_error`` scripts the next answer."""

    def __init__(self) -> None:
        self.next_error: Reply | None = None
        self.honour_wait = True  # False: behave as if ?wait=true were not given
        self.sent = 0

    def __call__(self, req: Received) -> Reply:
        found = re.fullmatch(r"/api(?:/v\d+)?/webhooks/(\d+)/([^/]+)/?", req.path)
        if found is None or found.group(1) != WEBHOOK_ID:
            return Reply(404, {"message": "Unknown Webhook", "code": 10015})
        if found.group(2) != TOKEN:
            return Reply(401, {"message": "Invalid Webhook Token", "code": 50027})
        if req.method == "GET":  # "Get Webhook with Token": the webhook object, no user
            return Reply(200, {"type": 1, "id": WEBHOOK_ID, "name": "Orders bot", "avatar": None,
                               "channel_id": CHANNEL_ID, "guild_id": "334455667788990011",
                               "application_id": None, "token": TOKEN})
        if req.method != "POST":
            return Reply(405, {"message": "405: Method Not Allowed", "code": 0})
        if self.next_error is not None:
            return self.next_error
        if not req.headers.get("Content-Type", "").startswith("application/json"):
            return Reply(400, {"message": "Cannot send an empty message", "code": 50006})
        try:
            payload = json.loads(req.body)
        except ValueError:
            return Reply(400, {"message": "The request body contains invalid JSON.", "code": 50109})
        if not isinstance(payload, dict):
            return Reply(400, {"code": 50035, "message": "Invalid Form Body",
                               "errors": form_error("_root", "DICT_TYPE_CONVERT", "Only dictionaries may be used")})
        errors: dict[str, Any] = {}
        content = payload.get("content")
        if content is not None and (not isinstance(content, str) or len(content) > 2000):
            errors.update(form_error("content", "BASE_TYPE_MAX_LENGTH", "Must be 2000 or fewer in length."))
        embeds = payload.get("embeds") or []
        if not isinstance(embeds, list) or len(embeds) > 10:
            errors.update(form_error("embeds", "BASE_TYPE_MAX_LENGTH", "Must be 10 or fewer in length."))
            embeds = []
        for i, embed in enumerate(embeds):
            if not isinstance(embed, dict):
                errors.setdefault("embeds", {}).update(
                    form_error(str(i), "MODEL_TYPE_CONVERT", "Only dictionaries may be used in a ModelType"))
            elif len(str(embed.get("title", ""))) > 256:
                errors.setdefault("embeds", {})[str(i)] = form_error(
                    "title", "BASE_TYPE_MAX_LENGTH", "Must be 256 or fewer in length.")
        mentions = payload.get("allowed_mentions")
        parse = ["users", "roles", "everyone"] if mentions is None else mentions.get("parse", [])
        if not set(parse) <= {"users", "roles", "everyone"}:
            errors.update(form_error("allowed_mentions", "BASE_TYPE_CHOICES", "Value must be one of users, roles, everyone."))
        if errors:
            return Reply(400, {"code": 50035, "errors": errors, "message": "Invalid Form Body"})
        if not str(content or "").strip() and not embeds:
            return Reply(400, {"message": "Cannot send an empty message", "code": 50006})
        thread = (req.query.get("thread_id") or [None])[0]
        if thread is not None and "thread_name" in payload:
            return Reply(400, {"message": "Webhooks posted to forum channels cannot have both a thread_name "
                                          "and thread_id", "code": 220002})
        if thread is not None and thread != THREAD_ID:
            return Reply(404, {"message": "Unknown Channel", "code": 10003})
        self.sent += 1
        if req.query.get("wait") == ["true"] and self.honour_wait:
            return Reply(200, {
                "id": str(1200000000000000000 + self.sent), "type": 0, "channel_id": thread or CHANNEL_ID,
                "content": content or "", "embeds": embeds, "tts": bool(payload.get("tts")),
                "webhook_id": WEBHOOK_ID, "author": {"username": payload.get("username", "Captain Hook"),
                                                     "bot": True},
                "mention_everyone": "@everyone" in (content or "") and "everyone" in parse,
                "mentions": [], "mention_roles": [], "timestamp": "2024-05-01T12:00:00.000000+00:00",
            })
        return Reply(204)


@pytest.fixture
def discord():
    contract = DiscordLike()
    with HttpSink(contract) as sink:
        sink.contract = contract  # type: ignore[attr-defined]
        yield sink


def context(url: str, inputs: dict[str, Any]) -> ActionContext:
    return ActionContext(inputs=inputs, credentials={"webhook_url": url},
                         http=OutboundClient(allowlist=TEST_ALLOWLIST, timeout=2),
                         idempotency_key="run-1-step-a")


def send(sink: HttpSink, inputs: dict[str, Any], path: str = PATH):
    return ACTION.run(context(sink.url + path, inputs))


def assert_no_token(*things: Any) -> None:
    text = json.dumps(things, default=str)
    assert TOKEN not in text, text


# --- success ----------------------------------------------------------------------------------

def test_message_is_posted_with_wait_and_output_has_the_message_id(discord: HttpSink) -> None:
    result = send(discord, {"content": "New order **42**", "username": "Orders",
                            "avatar_url": "https://example.com/a.png"})
    [req] = discord.wait_for(1)
    assert req.method == "POST" and req.path == PATH
    assert req.query == {"wait": ["true"]}
    assert req.headers["Content-Type"] == "application/json"
    assert req.json() == {"content": "New order **42**", "username": "Orders",
                          "avatar_url": "https://example.com/a.png", "tts": False,
                          "allowed_mentions": {"parse": []}}
    assert result.output == {"id": "1200000000000000001", "channel_id": CHANNEL_ID}
    assert result.response["status"] == 200 and result.response["body"]["webhook_id"] == WEBHOOK_ID
    assert result.request["url"] == f"{discord.url}/[redacted]"
    assert result.request["body"]["content"] == "New order **42**"
    assert_no_token(result.request, result.response, result.output)


def test_204_no_content_is_success_without_message_id(discord: HttpSink) -> None:
    discord.contract.honour_wait = False  # type: ignore[attr-defined]
    result = send(discord, {"content": "hi"})
    assert result.output == {"id": None, "channel_id": None}
    assert result.response["status"] == 204
    assert discord.contract.sent == 1  # type: ignore[attr-defined]


def test_v10_api_path_and_pasted_trailing_blanks_are_accepted(discord: HttpSink) -> None:
    ctx = context(f"  {discord.url}/api/v10/webhooks/{WEBHOOK_ID}/{TOKEN}\n", {"content": "hi"})
    assert ACTION.run(ctx).output["id"]


@pytest.mark.parametrize("embeds", [
    [{"title": "Order 42", "description": "paid", "color": 5814783}],
    '[{"title": "Order 42"}]',
    {"content": None, "embeds": [{"title": "Order 42"}]},  # a whole payload from an embed builder
])
def test_embeds_without_content(discord: HttpSink, embeds: Any) -> None:
    result = send(discord, {"embeds": embeds})
    payload = discord.wait_for(1)[0].json()
    assert "content" not in payload and payload["embeds"][0]["title"] == "Order 42"
    assert result.output["id"]


def test_limits_are_inclusive(discord: HttpSink) -> None:
    send(discord, {"content": "x" * 2000, "embeds": [{"title": str(i)} for i in range(10)]})
    payload = discord.wait_for(1)[0].json()
    assert len(payload["content"]) == 2000 and len(payload["embeds"]) == 10


def test_thread_id_goes_in_the_query_and_thread_name_in_the_body(discord: HttpSink) -> None:
    result = send(discord, {"content": "in thread", "thread_id": f" {THREAD_ID} "})
    req = discord.wait_for(1)[0]
    assert req.query == {"wait": ["true"], "thread_id": [THREAD_ID]}
    assert result.output["channel_id"] == THREAD_ID
    assert_no_token(result.request)
    send(discord, {"content": "new post", "thread_name": "Order 42"})
    req = discord.wait_for(2)[1]
    assert req.query == {"wait": ["true"]} and req.json()["thread_name"] == "Order 42"


# --- mentions ---------------------------------------------------------------------------------

def test_mentions_are_suppressed_by_default(discord: HttpSink) -> None:
    result = send(discord, {"content": "@everyone <@&123> order from {{ name }}"})
    assert discord.wait_for(1)[0].json()["allowed_mentions"] == {"parse": []}
    assert result.response["body"]["mention_everyone"] is False


@pytest.mark.parametrize("value, parse, pings", [
    (True, ["users", "roles", "everyone"], True),
    ("true", ["users", "roles", "everyone"], True),
    ("false", [], False),   # a string from an API client is read, not taken as truthy
    (False, [], False),
    (None, [], False),
])
def test_allow_mentions_is_an_explicit_switch(discord: HttpSink, value: Any, parse: list[str], pings: bool) -> None:
    result = send(discord, {"content": "@everyone deploy done", "allow_mentions": value})
    assert discord.wait_for(1)[0].json()["allowed_mentions"] == {"parse": parse}
    assert result.response["body"]["mention_everyone"] is pings


def test_tts_flag(discord: HttpSink) -> None:
    send(discord, {"content": "hear me", "tts": True})
    assert discord.wait_for(1)[0].json()["tts"] is True


# --- input validation (nothing is sent) ---------------------------------------------------------

@pytest.mark.parametrize("inputs, message", [
    ({"content": ""}, "content: required unless embeds are given"),
    ({"content": "   ", "embeds": []}, "content: required unless embeds are given"),
    ({"content": None, "embeds": ""}, "content: required unless embeds are given"),
    ({"content": "x" * 2001}, "content: Discord allows at most 2000 characters .this one has 2001."),
    ({"embeds": [{"title": str(i)} for i in range(11)]}, "embeds: Discord allows at most 10 embeds per message .this one has 11."),
    ({"content": "x", "embeds": "[{oops"}, "embeds: invalid JSON"),
    ({"content": "x", "embeds": {"title": "not in a list"}}, "embeds: must be a JSON list of embed objects"),
    ({"content": "x", "embeds": ["a string"]}, "embeds: must be a JSON list of embed objects"),
    ({"content": "x", "embeds": '"text"'}, "embeds: must be a JSON list of embed objects"),
    ({"content": "x", "thread_id": "general"}, "thread_id: must be a Discord thread ID"),
    ({"content": "x", "thread_id": THREAD_ID, "thread_name": "new"}, "not both"),
    ({"content": "x", "allow_mentions": "maybe"}, "allow_mentions: must be true or false"),
])
def test_invalid_input_refused_before_sending(discord: HttpSink, inputs: dict[str, Any], message: str) -> None:
    with pytest.raises(PermanentError, match=message):
        send(discord, inputs)
    assert discord.requests == []


@pytest.mark.parametrize("url", [
    "",
    "discord.com/api/webhooks/1/x",                        # no scheme
    "mailto:hook@discord.com",
    "https://discord.com/channels/1234/5678",              # a channel link, not a webhook
    "https://discord.com/api/webhooks/notanumber/tok",
    "https://discord.com/api/webhooks/1234",               # token missing
    f"https://discord.com/api/webhooks/{WEBHOOK_ID}/{TOKEN}/slack",  # the Slack-compatible endpoint
    "http://[::1/api/webhooks/1/x",                        # unparseable
])
def test_bad_webhook_url(url: str) -> None:
    with pytest.raises(PermanentError, match="webhook_url") as info:
        ACTION.run(context(url, {"content": "hi"}))
    assert_no_token(info.value.message)


# --- Discord's answers ------------------------------------------------------------------------

RATE_LIMITED = {"message": "You are being rate limited.", "retry_after": 0.64, "global": False}


@pytest.mark.parametrize("reply, error, needles", [
    (Reply(400, {"message": "Cannot send an empty message", "code": 50006}), PermanentError,
     ["Cannot send an empty message (code 50006, HTTP 400)", "give content or embeds"]),
    (Reply(400, {"code": 50035, "message": "Invalid Form Body", "errors": {
        "content": {"_errors": [{"code": "BASE_TYPE_MAX_LENGTH", "message": "Must be 2000 or fewer in length."}]},
        "embeds": {"0": {"title": {"_errors": [{"code": "BASE_TYPE_MAX_LENGTH",
                                                 "message": "Must be 256 or fewer in length."}]}}}}}),
     PermanentError, ["Invalid Form Body (code 50035, HTTP 400)", "content: Must be 2000 or fewer in length.",
                      "embeds.0.title: Must be 256 or fewer in length."]),
    (Reply(401, {"message": "Invalid Webhook Token", "code": 50027}), PermanentError,
     ["Invalid Webhook Token", "copy the webhook URL again"]),
    (Reply(403, {"message": "Missing Permissions", "code": 50013}), PermanentError,
     ["Missing Permissions (code 50013, HTTP 403)", "lacks permission"]),
    (Reply(404, {"message": "Unknown Webhook", "code": 10015}), PermanentError,
     ["Unknown Webhook (code 10015, HTTP 404)", "the webhook was deleted; create a new one"]),
    (Reply(400, {"message": "Webhooks posted to forum channels must have a thread_name or thread_id",
                 "code": 220001}), PermanentError, ["code 220001", "give a thread name"]),
    (Reply(413, "<html>Request Entity Too Large</html>"), PermanentError, ["HTTP 413", "Request Entity Too Large"]),
    (Reply(429, RATE_LIMITED, headers={"Retry-After": "1"}), RetryableError,
     ["Discord rate limit: You are being rate limited. (HTTP 429)"]),
    (Reply(429, {**RATE_LIMITED, "global": True}, headers={"Retry-After": "1"}), RetryableError,
     ["Discord rate limit (global)"]),
    (Reply(500, {"message": "500: Internal Server Error", "code": 0}), RetryableError,
     ["Discord is unavailable: 500: Internal Server Error (code 0, HTTP 500)"]),
    (Reply(502, "<html><h1>502 Bad Gateway</h1></html>"), RetryableError, ["Discord is unavailable", "HTTP 502"]),
    (Reply(503, "", headers={"Retry-After": "30"}), RetryableError, ["no error message (HTTP 503)"]),
])
def test_discord_error_contract(discord: HttpSink, reply: Reply, error: type, needles: list[str]) -> None:
    discord.contract.next_error = reply  # type: ignore[attr-defined]
    with pytest.raises(error) as info:
        send(discord, {"content": "hello"})
    assert type(info.value) is error
    for needle in needles:
        assert needle in info.value.message, info.value.message
    assert info.value.response["status"] == reply.status
    assert_no_token(info.value.message, info.value.request, info.value.response)
    if reply.status == 503:
        assert info.value.retry_after == 30.0


def test_429_retry_after_comes_from_the_body(discord: HttpSink) -> None:
    """The body's retry_after (fractional seconds) wins over the rounded Retry-After header."""
    discord.contract.next_error = Reply(429, RATE_LIMITED, headers={"Retry-After": "1"})  # type: ignore[attr-defined]
    with pytest.raises(RetryableError) as info:
        send(discord, {"content": "hello"})
    assert info.value.retry_after == 0.64
    assert info.value.response["body"]["retry_after"] == 0.64


@pytest.mark.parametrize("reply, expected", [
    (Reply(429, "<html>Cloudflare: rate limited</html>", headers={"Retry-After": "7"}), 7.0),  # no JSON
    (Reply(429, {"message": "You are being rate limited.", "global": False},
           headers={"X-RateLimit-Reset-After": "2.5"}), 2.5),
    (Reply(429, {"message": "You are being rate limited."}), None),
])
def test_429_retry_after_falls_back_to_headers(discord: HttpSink, reply: Reply, expected: float | None) -> None:
    discord.contract.next_error = reply  # type: ignore[attr-defined]
    with pytest.raises(RetryableError) as info:
        send(discord, {"content": "hello"})
    assert info.value.retry_after == expected


def test_deleted_webhook_is_permanent_with_a_hint(discord: HttpSink) -> None:
    with pytest.raises(PermanentError) as info:
        send(discord, {"content": "hi"}, path=f"/api/webhooks/999999999999999999/{TOKEN}")
    assert "Unknown Webhook" in info.value.message and "create a new one" in info.value.message
    assert_no_token(info.value.message, info.value.request)


def test_wrong_token_is_permanent(discord: HttpSink) -> None:
    with pytest.raises(PermanentError, match="Invalid Webhook Token .code 50027, HTTP 401.") as info:
        send(discord, {"content": "hi"}, path=f"/api/webhooks/{WEBHOOK_ID}/wrong-token")
    assert "copy the webhook URL again" in info.value.message


def test_unknown_thread_is_permanent(discord: HttpSink) -> None:
    with pytest.raises(PermanentError, match="Unknown Channel .code 10003, HTTP 404.: the thread or channel"):
        send(discord, {"content": "hi", "thread_id": "1"})


def test_200_without_a_message_is_not_taken_for_success(discord: HttpSink) -> None:
    discord.contract.next_error = Reply(200, "<html>Please sign in</html>")  # type: ignore[attr-defined]
    with pytest.raises(PermanentError, match="without the message it created.*is this a Discord webhook URL"):
        send(discord, {"content": "hi"})


def test_sink_contract_rejects_what_discord_rejects(discord: HttpSink) -> None:
    """The sink itself behaves like Discord (so the tables above test a faithful double)."""
    client = OutboundClient(allowlist=TEST_ALLOWLIST, timeout=2)
    url = discord.url + PATH
    assert client.request("POST", url, data=b"{nope", headers={"Content-Type": "application/json"}).json()["code"] == 50109
    assert client.request("POST", url, json={"content": ""}).json() == {
        "message": "Cannot send an empty message", "code": 50006}
    too_long = client.request("POST", url, json={"content": "x" * 2001}).json()
    assert too_long["code"] == 50035 and "content" in too_long["errors"]
    assert client.request("POST", url, json={"embeds": [{}] * 11}).json()["code"] == 50035
    assert client.request("POST", url, json={"content": "x"}).status == 204
    assert client.request("POST", url, params={"wait": "true"}, json={"content": "x"}).json()["id"]
    assert client.request("POST", discord.url + "/api/webhooks/1/x", json={"content": "x"}).json()["code"] == 10015


# --- the secret URL ---------------------------------------------------------------------------

def test_receiver_echoing_the_url_does_not_leak_the_token(discord: HttpSink) -> None:
    discord.contract.next_error = None  # type: ignore[attr-defined]
    discord.responder = lambda req: Reply(400, {"message": f"bad request to {req.path}", "code": 0})
    with pytest.raises(PermanentError) as info:
        send(discord, {"content": "hi"})
    assert "bad request to" in info.value.message
    assert_no_token(info.value.message, info.value.request)


def test_network_errors_do_not_show_the_url() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed once the block ends: nobody listens there
    with pytest.raises(RetryableError, match="connection refused") as info:
        ACTION.run(context(f"http://127.0.0.1:{port}{PATH}", {"content": "hi"}))
    assert_no_token(info.value.message, info.value.request)


def test_webhook_on_private_address_refused_without_allowlist() -> None:
    ctx = ActionContext(inputs={"content": "hi"}, credentials={"webhook_url": f"http://192.168.0.10{PATH}"},
                        http=OutboundClient(), idempotency_key="k")
    with pytest.raises(PermanentError, match="destination not allowed") as info:
        ACTION.run(ctx)
    assert_no_token(info.value.message, info.value.request)


def test_logs_never_show_the_token(discord: HttpSink, caplog: pytest.LogCaptureFixture) -> None:
    """Everything logged at DEBUG while sending (the app's log redaction installed) is free of
    the token."""
    logredact.install()
    caplog.set_level(logging.DEBUG)
    send(discord, {"content": "hi"})
    discord.contract.next_error = Reply(404, {"message": "Unknown Webhook", "code": 10015})  # type: ignore[attr-defined]
    with pytest.raises(PermanentError):
        send(discord, {"content": "hi"})
    assert "discord webhook host is 127.0.0.1" in caplog.text
    logged = "\n".join([caplog.text, *(r.getMessage() for r in caplog.records)])
    assert TOKEN not in logged, logged


# --- declaration: what the form builder and the docs are generated from --------------------------

def test_declaration_drives_forms_and_docs() -> None:
    from connectors.docs import markdown
    from connectors.registry import ACTIONS as ALL_ACTIONS
    from connectors.registry import CREDENTIALS as ALL_CREDENTIALS
    from web.form_fields import inputs_form_class

    assert ALL_ACTIONS["discord_message"] is ACTION
    [cred] = CREDENTIALS
    assert ALL_CREDENTIALS["discord_webhook"] is cred and cred.secret_names == {"webhook_url"}
    assert ACTION.credential == "discord_webhook" and ACTION.credential_required and ACTION.group == "Chat"
    for f in (*ACTION.fields, *cred.fields):
        assert f.label and f.help, f.name
    assert ACTION.field("allow_mentions").type == "boolean" and ACTION.field("allow_mentions").default is False
    assert ACTION.field("embeds").type == "json"
    form = inputs_form_class("discord_message")()
    assert set(form.values()) == {f.name for f in ACTION.fields}
    docs = markdown()
    assert "## Discord: send message (`discord_message`)" in docs and "## Discord webhook (`discord_webhook`)" in docs


def test_recipe_editor_offers_discord(client) -> None:
    page = client.get("/recipes/new").get_data(as_text=True)
    assert 'name="add_step" value="discord_message"' in page


# --- end to end: a recipe with a Discord step, through the live server and runner ----------------

ORDER = {"order": {"id": 42, "email": "ann@example.com", "name": "Ann Lee", "total": "19.99"}}


@pytest.fixture
def live(tmp_path):
    server = LiveServer(make_live_app(tmp_path))
    yield server
    server.close()


def discord_connection(live: LiveServer, sink: HttpSink) -> int:
    with live.app.app_context():
        conn = connections.create(db.session, live.app.extensions["hookline"].secret_box, "team discord",
                                  "discord_webhook", {"webhook_url": sink.url + PATH})
        return conn.id


def test_recipe_with_discord_step_end_to_end(live: LiveServer, discord: HttpSink) -> None:
    conn_id = discord_connection(live, discord)
    with HttpSink() as crm:
        _, token = make_recipe(live.app, fields=[
            {"name": "name", "path": "$.order.name"},
            {"name": "order_id", "path": "$.order.id"},
            {"name": "total", "path": "$.order.total"},
        ], steps=[
            {"key": "chat", "action": "discord_message", "connection": conn_id,
             "inputs": {"content": "@everyone {{ name }} paid order {{ order_id }}",
                        "embeds": '[{"title": "Order {{ order_id }}", "description": "{{ total }} USD"}]',
                        "username": "Shop"}},
            {"key": "note", "action": "http_request",
             "inputs": {"method": "POST", "url": crm.url + "/notes", "body_type": "json",
                        "body": '{"discord_message": "{{ steps.chat.id }}", "channel": "{{ steps.chat.channel_id }}"}'}},
        ])
        run_id = live.post(token, json=ORDER).json()["run_id"]
        received = discord.wait_for(1)[0]
        assert received.path == PATH and received.query == {"wait": ["true"]}
        assert received.json() == {"content": "@everyone Ann Lee paid order 42",
                                   "embeds": [{"title": "Order 42", "description": "19.99 USD"}],
                                   "username": "Shop", "tts": False, "allowed_mentions": {"parse": []}}
        assert crm.wait_for(1)[0].json() == {"discord_message": "1200000000000000001", "channel": CHANNEL_ID}
        assert wait_run(live.app, run_id) == "succeeded"
    chat, _note = steps_of(live.app, run_id)
    assert chat["status"] == "succeeded" and chat["attempt"] == 1
    assert chat["request"]["method"] == "POST"
    assert chat["request"]["url"] == f"{discord.url}/[redacted]"
    assert chat["request"]["body"]["allowed_mentions"] == {"parse": []}
    assert chat["response"]["status"] == 200 and chat["response"]["body"]["mention_everyone"] is False
    with live.app.app_context():
        run = db.session.get(Run, run_id)
        outputs = run.outputs
    assert outputs["chat"] == {"id": "1200000000000000001", "channel_id": CHANNEL_ID}
    assert_no_token(steps_of(live.app, run_id), outputs)


def test_rate_limited_step_is_retried_after_discords_retry_after(live: LiveServer, discord: HttpSink) -> None:
    """The retry comes after Discord's retry_after (the runner's 1 s minimum), not after the
    recipe's 60 s schedule; the history shows the 429 without the token."""
    answers = [Reply(429, RATE_LIMITED, headers={"Retry-After": "1"})]
    contract = discord.contract  # type: ignore[attr-defined]
    discord.responder = lambda req: answers.pop(0) if answers else contract(req)
    conn_id = discord_connection(live, discord)
    _, token = make_recipe(live.app, steps=[
        {"key": "chat", "action": "discord_message", "connection": conn_id, "inputs": {"content": "hello"}},
    ], settings={"retry": {"schedule": [60], "max_attempts": 3}})
    run_id = live.post(token, json={}).json()["run_id"]
    assert wait_run(live.app, run_id, timeout=15) == "succeeded"
    first, second = discord.requests
    assert second.at - first.at >= 0.9
    history = steps_of(live.app, run_id)
    assert [(s["status"], s["attempt"]) for s in history] == [("retrying", 1), ("succeeded", 2)]
    assert "Discord rate limit" in history[0]["error"] and history[0]["response"]["status"] == 429
    assert_no_token(history)
