"""Microsoft Teams incoming-webhook action against a sink that enforces both documented
contracts: Workflows (Power Automate: 202 Accepted) under ``/workflows/…`` and legacy
Office 365 connector webhooks (200 with the body "1") under ``/webhookb2/…``."""
from __future__ import annotations

import json
from typing import Any

import pytest

from automations import connections
from connectors.base import ActionContext, PermanentError, RetryableError
from connectors.outbound import OutboundClient
from connectors.registry import ACTIONS as REGISTERED
from connectors.registry import CREDENTIALS as REGISTERED_CREDENTIALS
from connectors.teams import ACTIONS, ADAPTIVE, CREDENTIALS, MAX_MESSAGE_BYTES, kind_of
from tests.live import TEST_ALLOWLIST, LiveServer, make_live_app
from tests.sinks import HttpSink, Received, Reply
from tests.test_e2e import make_recipe, steps_of, wait_run
from web.extensions import db

ACTION = ACTIONS[0]
SIG = "Zx9SECRETsig0123456789abcdefABCDEF"
WORKFLOW_ID = "0a1b2c3d4e5f4a6b8c9d0e1f2a3b4c5d"
WORKFLOWS_PATH = (f"/workflows/{WORKFLOW_ID}/triggers/manual/paths/invoke"
                  f"?api-version=2016-06-01&sp=%2Ftriggers%2Fmanual%2Frun&sv=1.0&sig={SIG}")
LEGACY_TOKEN = "9f8e7d6c5b4a49388271605f4e3d2c1b"
LEGACY_PATH = (f"/webhookb2/11111111-2222-3333-4444-555555555555@66666666-7777-8888-9999-000000000000"
               f"/IncomingWebhook/{LEGACY_TOKEN}/aaaaaaaa-bbbb-cccc-dddd-eeeeeeeeeeee")
SECRETS = (SIG, WORKFLOW_ID, LEGACY_TOKEN, "11111111-2222", "/workflows/", "/webhookb2/")


def _problem(payload: Any) -> str | None:
    """What Teams says about a message it cannot post, or None when it is fine."""
    if not isinstance(payload, dict) or payload.get("type") != "message":
        return "Summary or Text is required."
    attachments = payload.get("attachments")
    if not isinstance(attachments, list) or len(attachments) != 1:
        return "Summary or Text is required."
    att = attachments[0]
    card = att.get("content") if isinstance(att, dict) else None
    if att.get("contentType") != ADAPTIVE or not isinstance(card, dict):
        return "Summary or Text is required."
    if card.get("type") != "AdaptiveCard" or not card.get("version") or not isinstance(card.get("body"), list):
        return "Bad payload received by generic incoming webhook."
    return None


class TeamsLike:
    """Answers like Teams does, by URL kind: ``/workflows/…`` as a Power Automate flow
    (202, needs the right ``sig``), ``/webhookb2/…`` as a legacy connector (200 "1"; errors
    as 200/400 texts). Anything else is 404. ``next_reply`` scripts the next answer."""

    def __init__(self) -> None:
        self.next_reply: Reply | None = None

    def __call__(self, req: Received) -> Reply:
        if req.method != "POST":
            return Reply(405, "")
        if self.next_reply is not None:
            reply, self.next_reply = self.next_reply, None
            return reply
        if req.headers.get("Content-Type", "").split(";")[0] != "application/json":
            return Reply(415, "")
        if len(req.body) > 28 * 1024:
            return Reply(413, "")
        try:
            payload = json.loads(req.body)
        except ValueError:
            payload = None
        if req.path.startswith("/workflows/"):
            if req.path != WORKFLOWS_PATH.split("?")[0]:
                return Reply(404, {"error": {"code": "WorkflowNotFound",
                                             "message": "The workflow could not be found."}})
            if req.query.get("sig") != [SIG]:
                return Reply(401, {"error": {"code": "DirectApiAuthorizationRequired",
                                             "message": "The request must be authenticated."}})
            problem = _problem(payload)
            if problem:
                return Reply(400, {"error": {"code": "InvalidRequestContent", "message": problem}})
            return Reply(202, b"")
        if req.path.startswith("/webhookb2/"):
            if req.path != LEGACY_PATH:  # removed, or never was
                return Reply(404, "")
            problem = _problem(payload)
            return Reply(400, problem) if problem else Reply(200, "1")
        return Reply(404, "")


@pytest.fixture
def teams():
    contract = TeamsLike()
    with HttpSink(contract) as sink:
        sink.contract = contract  # type: ignore[attr-defined]
        yield sink


def client() -> OutboundClient:
    return OutboundClient(allowlist=TEST_ALLOWLIST, timeout=2)


def send(sink: HttpSink, inputs: dict[str, Any], path: str = WORKFLOWS_PATH):
    ctx = ActionContext(inputs=inputs, credentials={"webhook_url": sink.url + path}, http=client(),
                        idempotency_key="run-1-step-a")
    return ACTION.run(ctx)


def assert_no_secret(*things: Any) -> None:
    text = json.dumps(things, default=str)
    for secret in SECRETS:
        assert secret not in text, f"{secret!r} leaked: {text}"


def card_of(req: Received) -> dict[str, Any]:
    payload = req.json()
    assert payload["type"] == "message"
    [att] = payload["attachments"]
    assert att["contentType"] == "application/vnd.microsoft.card.adaptive"
    return att["content"]


# --- success -----------------------------------------------------------------------------------

def test_workflows_webhook_202_is_success(teams: HttpSink) -> None:
    result = send(teams, {"title": "New order", "text": "Ann paid **$19.99**"})
    [req] = teams.wait_for(1)
    assert req.path == f"/workflows/{WORKFLOW_ID}/triggers/manual/paths/invoke"
    assert req.query["sig"] == [SIG]
    assert req.headers["Content-Type"] == "application/json"
    assert req.headers["Idempotency-Key"] == "run-1-step-a"
    assert result.output == {"ok": True, "status": 202, "webhook": "workflows"}
    assert result.response["status"] == 202
    assert result.request["method"] == "POST" and result.request["body"] == req.json()
    assert result.request["url"] == f"{teams.url}/[redacted]"
    assert_no_secret(result.request, result.response, result.output)


def test_legacy_webhook_200_one_is_success(teams: HttpSink) -> None:
    result = send(teams, {"text": "hello"}, path=LEGACY_PATH)
    [req] = teams.wait_for(1)
    assert req.path == LEGACY_PATH
    assert card_of(req)["body"] == [{"type": "TextBlock", "text": "hello", "wrap": True}]
    assert result.output == {"ok": True, "status": 200, "webhook": "legacy"}
    assert result.response["body"] == "1"
    assert_no_secret(result.request, result.response)


def test_card_built_from_title_text_and_facts(teams: HttpSink) -> None:
    send(teams, {"title": "Order 42", "text": "Paid by _Ann_",
                 "facts": {"Total": "$19.99", "Items": 3, "Gift": True, "Tags": ["a", "b"], "Note": None}})
    card = card_of(teams.wait_for(1)[0])
    assert card == {
        "type": "AdaptiveCard", "$schema": "http://adaptivecards.io/schemas/adaptive-card.json", "version": "1.4",
        "body": [
            {"type": "TextBlock", "text": "Order 42", "weight": "Bolder", "size": "Large", "wrap": True},
            {"type": "TextBlock", "text": "Paid by _Ann_", "wrap": True},
            {"type": "FactSet", "facts": [
                {"title": "Total", "value": "$19.99"}, {"title": "Items", "value": "3"},
                {"title": "Gift", "value": "true"}, {"title": "Tags", "value": '["a", "b"]'},
                {"title": "Note", "value": ""}]},
        ],
    }


def test_facts_given_as_json_text(teams: HttpSink) -> None:
    """A json field rendered from a template arrives as text."""
    send(teams, {"text": "x", "facts": '{"Café": "crème", "n": 1}', "title": ""})
    card = card_of(teams.wait_for(1)[0])
    assert [b["type"] for b in card["body"]] == ["TextBlock", "FactSet"]
    assert card["body"][1]["facts"] == [{"title": "Café", "value": "crème"}, {"title": "n", "value": "1"}]


CARD = {"type": "AdaptiveCard", "version": "1.5", "body": [{"type": "TextBlock", "text": "Custom"}],
        "actions": [{"type": "Action.OpenUrl", "title": "Open", "url": "https://example.com"}]}


@pytest.mark.parametrize("card", [
    CARD,
    json.dumps(CARD),
    {"type": "message", "attachments": [{"contentType": ADAPTIVE, "content": CARD}]},  # a whole message pasted
])
def test_given_card_is_sent_as_is(teams: HttpSink, card: Any) -> None:
    send(teams, {"card": card, "text": "ignored", "title": "ignored too"}, path=LEGACY_PATH)
    assert card_of(teams.wait_for(1)[0]) == CARD


# --- validation before sending -------------------------------------------------------------------

@pytest.mark.parametrize("inputs, message", [
    ({}, "text: required unless a card is given"),
    ({"text": "   ", "title": "only a title"}, "text: required unless a card is given"),
    ({"text": "", "card": "", "facts": {"a": 1}}, "text: required unless a card is given"),
    ({"card": "{oops"}, "card: invalid JSON"),
    ({"card": [{"type": "AdaptiveCard"}]}, "card: must be a JSON object"),
    ({"card": '"AdaptiveCard"'}, "card: must be a JSON object"),
    ({"card": {"type": "MessageCard", "text": "x"}}, 'card: must be an Adaptive Card: a JSON object with "type"'),
    ({"card": {"body": []}}, "card: must be an Adaptive Card"),
    ({"card": '{"type": "AdaptiveCard", "version": "1.4", "body": [{"type": "TextBlock", "text": NaN}]}'},
     "card: cannot be sent as JSON"),
    ({"text": "x", "facts": ["a", "b"]}, "facts: must be a JSON object"),
    ({"text": "x", "facts": "a=1"}, "facts: invalid JSON"),
    ({"text": "x", "facts": '"just text"'}, "facts: must be a JSON object"),
    ({"card": CARD, "facts": [1]}, "facts: must be a JSON object"),
])
def test_invalid_input_refused_before_sending(teams: HttpSink, inputs: dict[str, Any], message: str) -> None:
    with pytest.raises(PermanentError, match=message):
        send(teams, inputs)
    assert teams.requests == []


def test_message_over_28_kb_refused_before_sending(teams: HttpSink) -> None:
    with pytest.raises(PermanentError, match=r"message too large for Teams: [\d,]+ bytes, the limit is 28,672") as info:
        send(teams, {"text": "x" * MAX_MESSAGE_BYTES})
    assert "shorten" in info.value.message
    assert teams.requests == []
    with pytest.raises(PermanentError, match="too large"):  # a given card is measured too
        send(teams, {"card": {**CARD, "body": [{"type": "TextBlock", "text": "é" * 15_000}]}})
    assert teams.requests == []


def test_message_just_under_the_limit_is_sent(teams: HttpSink) -> None:
    """The limit is measured on the UTF-8 bytes sent, not on \\u-escaped JSON."""
    send(teams, {"text": "é" * 13_000})  # 26,000 bytes of UTF-8; 78,000 as \\u00e9 escapes
    req = teams.wait_for(1)[0]
    assert len(req.body) < MAX_MESSAGE_BYTES
    assert card_of(req)["body"][0]["text"] == "é" * 13_000


@pytest.mark.parametrize("url", ["", "prod-00.westus.logic.azure.com/workflows/x", "mailto:a@b.c"])
def test_bad_webhook_url(url: str) -> None:
    ctx = ActionContext(inputs={"text": "hi"}, credentials={"webhook_url": url}, http=OutboundClient(),
                        idempotency_key="k")
    with pytest.raises(PermanentError, match="webhook_url: the connection needs a Teams webhook URL"):
        ACTION.run(ctx)


@pytest.mark.parametrize("url, kind", [
    ("https://prod-12.westus.logic.azure.com:443/workflows/abc/triggers/manual/paths/invoke?sig=x", "workflows"),
    (("https://default1234.ab.environment.api.powerplatform.com:443/powerautomate/automations/direct/workflows/"
      "abc/triggers/manual/paths/invoke?api-version=1&sig=x"), "workflows"),
    ("https://contoso.webhook.office.com/webhookb2/a@b/IncomingWebhook/c/d", "legacy"),
    ("https://outlook.office.com/webhook/a@b/IncomingWebhook/c/d", "legacy"),
    ("https://example.com/notify", "unknown"),
])
def test_webhook_kind(url: str, kind: str) -> None:
    assert kind_of(url) == kind


# --- errors, per URL kind ------------------------------------------------------------------------

WORKFLOWS_ERRORS = [
    (Reply(400, {"error": {"code": "InvalidRequestContent", "message": "The input body for trigger 'manual' "
                                                                       "of type 'Request' did not match its schema"}}),
     PermanentError, "InvalidRequestContent: The input body for trigger 'manual'"),
    (Reply(401, {"error": {"code": "DirectApiAuthorizationRequired", "message": "The request must be authenticated"}}),
     PermanentError, "signature (sig) is wrong, or the flow was turned off"),
    (Reply(403, {"error": {"code": "WorkflowTriggerIsNotEnabled",
                           "message": "The workflow 'x' cannot be triggered because it is disabled."}}),
     PermanentError, "WorkflowTriggerIsNotEnabled"),
    (Reply(404, {"error": {"code": "WorkflowNotFound", "message": "The workflow could not be found."}}),
     PermanentError, "the workflow no longer exists; create a new one"),
    (Reply(429, {"error": {"code": "WorkflowRequestsThrottled", "message": "Rate limit is exceeded."}},
           headers={"Retry-After": "17"}), RetryableError, "Teams is throttled: WorkflowRequestsThrottled"),
    (Reply(500, "internal"), RetryableError, "Teams is unavailable: internal (HTTP 500)"),
    (Reply(502, ""), RetryableError, "Teams is unavailable: HTTP 502"),
    (Reply(503, "down", headers={"Retry-After": "Wed, 21 Oct 2037 07:28:00 GMT"}), RetryableError, "HTTP 503"),
    (Reply(200, ""), None, ""),  # a flow ending in a Response action: still delivered
]
LEGACY_ERRORS = [
    (Reply(200, "Summary or Text is required."), PermanentError,
     "Teams did not accept the message: Summary or Text is required. (HTTP 200)"),
    (Reply(200, "Webhook message delivery failed with error: Microsoft Teams endpoint returned HTTP error 413 "
                "with ContextId tcid=0,server=msgapi-production-eus-azsc2-4-170,cv=deadbeef.0."),
     PermanentError, "Microsoft Teams endpoint returned HTTP error 413"),
    (Reply(200, "Webhook message delivery failed with error: Microsoft Teams endpoint returned HTTP error 429 "
                "with ContextId tcid=0."), RetryableError, "could not deliver the message yet"),
    (Reply(200, ""), PermanentError, 'answered 200 without "1"'),
    (Reply(200, "<html>Sign in</html>"), PermanentError, "<html>Sign in</html>"),
    (Reply(400, "Summary or Text is required."), PermanentError,
     "Teams rejected the message: Summary or Text is required. (HTTP 400)"),
    (Reply(400, "Bad payload received by generic incoming webhook."), PermanentError, "Bad payload received"),
    (Reply(404, ""), PermanentError, "the webhook was removed or its Office 365 connector retired; create a new"),
    (Reply(410, "Connector retired"), PermanentError, "Connector retired (HTTP 410): the webhook was removed"),
    (Reply(429, "Too many requests", headers={"Retry-After": "30"}), RetryableError, "Teams is throttled"),
    (Reply(500, "Internal Server Error"), RetryableError, "Teams is unavailable: Internal Server Error (HTTP 500)"),
    (Reply(503, "Service Unavailable"), RetryableError, "Service Unavailable"),
    (Reply(202, ""), None, ""),
]


@pytest.mark.parametrize("path, reply, error, message",
                         [(WORKFLOWS_PATH, *case) for case in WORKFLOWS_ERRORS]
                         + [(LEGACY_PATH, *case) for case in LEGACY_ERRORS],
                         ids=[f"workflows-{c[0].status}-{i}" for i, c in enumerate(WORKFLOWS_ERRORS)]
                         + [f"legacy-{c[0].status}-{i}" for i, c in enumerate(LEGACY_ERRORS)])
def test_teams_error_contract(teams: HttpSink, path: str, reply: Reply, error: type | None, message: str) -> None:
    teams.contract.next_reply = reply  # type: ignore[attr-defined]
    if error is None:
        assert send(teams, {"text": "hello"}, path=path).output["ok"] is True
        return
    with pytest.raises(error) as info:
        send(teams, {"text": "hello"}, path=path)
    assert message in info.value.message, info.value.message
    assert info.value.response["status"] == reply.status
    assert info.value.request["url"] == f"{teams.url}/[redacted]"
    assert_no_secret(info.value.message, info.value.request, info.value.response)
    if "Retry-After" in reply.headers and reply.headers["Retry-After"].isdigit():
        assert info.value.retry_after == float(reply.headers["Retry-After"])


def test_retry_after_date_is_kept_as_an_instant(teams: HttpSink) -> None:
    teams.contract.next_reply = Reply(429, "", headers={"Retry-After": "Wed, 21 Oct 2037 07:28:00 GMT"})  # type: ignore[attr-defined]
    with pytest.raises(RetryableError) as info:
        send(teams, {"text": "x"})
    assert info.value.retry_after.isoformat() == "2037-10-21T07:28:00+00:00"  # type: ignore[union-attr]


def test_wrong_sig_is_permanent_and_never_shown(teams: HttpSink) -> None:
    """The sink really checks the signature: a URL copied wrong gets Power Automate's 401."""
    path = WORKFLOWS_PATH.replace(SIG, "WRONGsigWRONGsig0123456789")
    with pytest.raises(PermanentError, match="DirectApiAuthorizationRequired") as info:
        send(teams, {"text": "x"}, path=path)
    assert "WRONGsig" not in info.value.message and "WRONGsig" not in json.dumps(info.value.request)
    assert_no_secret(info.value.message, info.value.request, info.value.response)


def test_removed_webhooks_are_permanent_with_a_hint(teams: HttpSink) -> None:
    """The sink answers 404 for a webhook it does not have (deleted, or the connector retired)."""
    with pytest.raises(PermanentError, match="create a new webhook") as info:
        send(teams, {"text": "x"}, path=LEGACY_PATH.replace(LEGACY_TOKEN, "00000000000000000000000000000000"))
    assert info.value.response["status"] == 404
    with pytest.raises(PermanentError, match="WorkflowNotFound.*the workflow no longer exists") as info:
        send(teams, {"text": "x"}, path=WORKFLOWS_PATH.replace(WORKFLOW_ID, "ffffffffffffffffffffffffffffffff"))
    assert "ffffffff" not in info.value.message and "ffffffff" not in json.dumps(info.value.request)


def test_echoed_url_is_scrubbed(teams: HttpSink) -> None:
    """A receiver that quotes the URL it was called on does not put it in the history."""
    teams.contract.next_reply = Reply(  # type: ignore[attr-defined]
        400, f"Bad request to {teams.url}{WORKFLOWS_PATH} (sig {SIG})")
    with pytest.raises(PermanentError) as info:
        send(teams, {"text": "x"})
    assert "Bad request to" in info.value.message
    assert_no_secret(info.value.message, info.value.response, info.value.request)


def test_sink_contract_rejects_what_teams_rejects(teams: HttpSink) -> None:
    """The sink itself behaves like Teams (so the tables above test a faithful double)."""
    http = client()
    workflows, legacy = teams.url + WORKFLOWS_PATH, teams.url + LEGACY_PATH
    assert http.request("POST", workflows, json={"text": "hi"}).status == 400
    assert http.request("POST", workflows.replace(SIG, "nope"), json={}).status == 401
    assert http.request("POST", legacy, json={"text": "hi"}).text == "Summary or Text is required."
    big = {"type": "message", "attachments": [{"contentType": ADAPTIVE, "content": {
        "type": "AdaptiveCard", "version": "1.4", "body": [{"type": "TextBlock", "text": "x" * 30_000}]}}]}
    assert http.request("POST", legacy, json=big).status == 413
    assert http.request("POST", teams.url + "/elsewhere", json={}).status == 404


def test_webhook_on_private_address_refused_without_allowlist() -> None:
    ctx = ActionContext(inputs={"text": "hi"}, http=OutboundClient(), idempotency_key="k",
                        credentials={"webhook_url": "http://192.168.0.10" + WORKFLOWS_PATH})
    with pytest.raises(PermanentError, match="destination not allowed") as info:
        ACTION.run(ctx)
    assert_no_secret(info.value.message, info.value.request)


def test_network_error_is_retryable_without_the_url() -> None:
    with HttpSink() as sink:
        url = sink.url
    ctx = ActionContext(inputs={"text": "hi"}, http=OutboundClient(allowlist=TEST_ALLOWLIST, timeout=1),
                        idempotency_key="k", credentials={"webhook_url": url + WORKFLOWS_PATH})
    with pytest.raises(RetryableError) as info:
        ACTION.run(ctx)
    assert_no_secret(info.value.message, info.value.request)


# --- declaration -------------------------------------------------------------------------------

def test_declaration_is_registered_and_documented() -> None:
    assert REGISTERED["teams_message"] is ACTION
    assert REGISTERED_CREDENTIALS["teams_webhook"] is CREDENTIALS[0]
    [url_field] = CREDENTIALS[0].fields
    assert url_field.name == "webhook_url" and url_field.secret and url_field.required and not url_field.template
    assert ACTION.credential == "teams_webhook" and ACTION.credential_required
    assert [f.name for f in ACTION.fields] == ["title", "text", "facts", "card"]
    assert all(f.label and f.help for f in ACTION.fields)
    assert not any(f.required for f in ACTION.fields)  # "text unless card" is checked by run()
    from connectors.docs import markdown
    doc = markdown()
    assert "## Microsoft Teams: send message (`teams_message`)" in doc
    assert "## Microsoft Teams incoming webhook (`teams_webhook`)" in doc


# --- end to end --------------------------------------------------------------------------------

def test_recipe_with_teams_step_delivers_through_server_and_runner(tmp_path: Any, teams: HttpSink) -> None:
    live = LiveServer(make_live_app(tmp_path))
    try:
        app = live.app
        with app.app_context():
            conn_id = connections.create(db.session, app.extensions["hookline"].secret_box, "team channel",
                                         "teams_webhook", {"webhook_url": teams.url + WORKFLOWS_PATH}).id
        _, token = make_recipe(app, fields=[
            {"name": "name", "path": "$.customer.name"},
            {"name": "total", "path": "$.total"},
        ], steps=[{"key": "notify", "action": "teams_message", "connection": conn_id, "inputs": {
            "title": "Order {{ trigger.body.id }}",
            "text": "**{{ name }}** paid {{ total }}",
            "facts": '{"Customer": "{{ name }}", "Total": "{{ total }}"}',
        }}])
        run_id = live.post(token, json={"id": 42, "customer": {"name": "Ann Lee"}, "total": "$19.99"}).json()["run_id"]
        [req] = teams.wait_for(1)
        assert req.query["sig"] == [SIG]
        assert req.headers["Idempotency-Key"] == f"hookline-{run_id}-notify"
        body = card_of(req)["body"]
        assert body[0]["text"] == "Order 42" and body[1]["text"] == "**Ann Lee** paid $19.99"
        assert body[2]["facts"] == [{"title": "Customer", "value": "Ann Lee"}, {"title": "Total", "value": "$19.99"}]
        assert wait_run(app, run_id) == "succeeded"
        [step] = steps_of(app, run_id)
        assert step["status"] == "succeeded" and step["attempt"] == 1
        assert step["response"]["status"] == 202
        assert step["request"]["method"] == "POST"
        assert step["request"]["url"] == f"{teams.url}/[redacted]"
        assert step["request"]["body"] == req.json()
        assert_no_secret(step)
    finally:
        live.close()
