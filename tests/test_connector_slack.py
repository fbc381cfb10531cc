"""Slack incoming-webhook action against a sink that enforces Slack's documented contract."""
from __future__ import annotations

import json
from typing import Any

import pytest

from connectors.base import ActionContext, PermanentError, RetryableError
from connectors.outbound import OutboundClient
from connectors.slack import ACTIONS
from tests.sinks import HttpSink, Received, Reply

ACTION = ACTIONS[0]


class SlackLike:
    """Validates payloads like hooks.slack.com does; ``next_error`` scripts the next answer."""

    def __init__(self) -> None:
        self.next_error: Reply | None = None

    def __call__(self, req: Received) -> Reply:
        if req.method != "POST" or not req.path.startswith("/services/"):
            return Reply(404, "no_service")
        if self.next_error is not None:
            return self.next_error
        try:
            payload = json.loads(req.body)
        except ValueError:
            return Reply(400, "invalid_payload")
        if not isinstance(payload, dict):
            return Reply(400, "invalid_payload")
        if not str(payload.get("text") or "").strip() and not payload.get("blocks"):
            return Reply(400, "no_text")
        blocks = payload.get("blocks", [])
        if not isinstance(blocks, list) or any("type" not in b for b in blocks):
            return Reply(400, "invalid_blocks")
        return Reply(200, "ok")


@pytest.fixture
def slack():
    contract = SlackLike()
    with HttpSink(contract) as sink:
        sink.contract = contract  # type: ignore[attr-defined]
        yield sink


WEBHOOK_PATH = "/services/T000/B000/XXXX"  # the shape of a real one: /services/<team>/<bot>/<secret>


def send(sink: HttpSink, inputs: dict[str, Any], path: str = WEBHOOK_PATH):
    ctx = ActionContext(inputs=inputs, credentials={"webhook_url": sink.url + path},
                        http=OutboundClient(allowlist=["127.0.0.0/8", "::1/128", "localhost"], timeout=2),
                        idempotency_key="run-1-step-a")
    return ACTION.run(ctx)


def test_text_message(slack: HttpSink) -> None:
    result = send(slack, {"text": "New order *42*", "username": "Orders", "icon_emoji": ":tada:"})
    [req] = slack.wait_for(1)
    assert req.json() == {"text": "New order *42*", "username": "Orders", "icon_emoji": ":tada:",
                          "unfurl_links": False}
    assert req.headers["Content-Type"] == "application/json"
    assert req.headers["Idempotency-Key"] == "run-1-step-a"
    assert result.output == {"ok": True, "status": 200}
    assert "XXXX" not in json.dumps(result.request) and result.response["body"] == "ok"


@pytest.mark.parametrize("blocks", [
    [{"type": "section", "text": {"type": "mrkdwn", "text": "hi"}}],
    '[{"type": "divider"}]',
    {"blocks": [{"type": "divider"}]},
])
def test_blocks_without_text(slack: HttpSink, blocks: Any) -> None:
    send(slack, {"blocks": blocks, "unfurl_links": True})
    payload = slack.wait_for(1)[0].json()
    assert "text" not in payload and payload["blocks"][0]["type"] in ("section", "divider")
    assert payload["unfurl_links"] is True


@pytest.mark.parametrize("inputs, message", [
    ({"text": ""}, "text: required unless blocks"),
    ({"text": "  ", "blocks": []}, "text: required unless blocks"),
    ({"text": "x", "blocks": "[{oops"}, "blocks: invalid JSON"),
    ({"text": "x", "blocks": {"type": "section"}}, "blocks: must be a JSON list"),
    ({"text": "x", "blocks": ["divider"]}, "blocks: must be a JSON list"),
])
def test_invalid_input_refused_before_sending(slack: HttpSink, inputs: dict[str, Any], message: str) -> None:
    with pytest.raises(PermanentError, match=message):
        send(slack, inputs)
    assert slack.requests == []


@pytest.mark.parametrize("reply, error, code", [
    (Reply(400, "invalid_payload"), PermanentError, "invalid_payload"),
    (Reply(400, "no_text"), PermanentError, "no_text"),
    (Reply(400, "invalid_blocks"), PermanentError, "invalid_blocks"),
    (Reply(403, "action_prohibited"), PermanentError, "action_prohibited"),
    (Reply(403, "invalid_token"), PermanentError, "invalid_token"),
    (Reply(404, "channel_not_found"), PermanentError, "channel_not_found"),
    (Reply(404, "no_service"), PermanentError, "no_service"),
    (Reply(410, "channel_is_archived"), PermanentError, "channel_is_archived"),
    (Reply(500, "rollup_error"), RetryableError, "rollup_error"),
    (Reply(503, ""), RetryableError, "HTTP 503"),
    (Reply(429, "rate_limited", headers={"Retry-After": "17"}), RetryableError, "rate_limited"),
    (Reply(200, "<html>login</html>"), PermanentError, "without 'ok'"),
])
def test_slack_error_contract(slack: HttpSink, reply: Reply, error: type, code: str) -> None:
    slack.contract.next_error = reply  # type: ignore[attr-defined]
    with pytest.raises(error) as info:
        send(slack, {"text": "hello"})
    assert code in info.value.message and "XXXX" not in info.value.message
    assert info.value.response["status"] == reply.status
    if reply.status == 429:
        assert info.value.retry_after == 17.0


def test_sink_contract_rejects_what_slack_rejects(slack: HttpSink) -> None:
    """The sink itself behaves like Slack (so the table above tests a faithful double)."""
    client = OutboundClient(allowlist=["127.0.0.0/8"], timeout=2)
    url = slack.url + "/services/T/B/X"
    assert client.request("POST", url, data=b"{nope").text == "invalid_payload"
    assert client.request("POST", url, json={"text": ""}).text == "no_text"
    assert client.request("POST", url, json={"blocks": [{"text": "x"}]}).text == "invalid_blocks"


def test_revoked_webhook_path(slack: HttpSink) -> None:
    with pytest.raises(PermanentError, match="no_service") as info:
        send(slack, {"text": "hi"}, path="/other")
    assert "webhook was disabled or removed" in info.value.message


@pytest.mark.parametrize("url", ["", "hooks.slack.com/services/x", "mailto:a@b.c"])
def test_bad_webhook_url(url: str) -> None:
    ctx = ActionContext(inputs={"text": "hi"}, credentials={"webhook_url": url}, http=OutboundClient(),
                        idempotency_key="k")
    with pytest.raises(PermanentError, match="webhook_url"):
        ACTION.run(ctx)


def test_webhook_on_private_address_refused_without_allowlist() -> None:
    ctx = ActionContext(inputs={"text": "hi"}, credentials={"webhook_url": "http://192.168.0.10/services/T/B/X"},
                        http=OutboundClient(), idempotency_key="k")
    with pytest.raises(PermanentError, match="destination not allowed") as info:
        ACTION.run(ctx)
    assert "/services/" not in info.value.message
