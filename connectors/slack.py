"""Slack incoming webhook: post a message to the channel the webhook was created for.

Contract (https://api.slack.com/messaging/webhooks#handling_errors): success is HTTP 200
with the body ``ok``; errors are a status plus a plain-text code. The webhook URL is the
credential itself, so it never appears in the run history or error messages. Production
webhooks live under https://hooks.slack.com/; any http(s) URL is accepted here and the
outbound SSRF guard (with its allowlist) decides where requests may go.
"""
from __future__ import annotations

from typing import Any

from .base import (
    Action,
    ActionContext,
    ActionResult,
    CredentialType,
    Field,
    PermanentError,
    RetryableError,
    json_input,
    message_test,
    split_http_url,
)
from .outbound import retry_hint

# What each documented error code means for the person reading the run history.
HINTS = {
    "invalid_payload": "the message is not valid JSON Slack accepts",
    "no_text": "give a text or blocks",
    "invalid_blocks": "a block is malformed; check it with Slack's Block Kit Builder",
    "invalid_blocks_format": "blocks must be a JSON list of block objects",
    "action_prohibited": "a workspace admin restricted posting to this channel",
    "invalid_token": "the webhook URL is invalid or was revoked; reconnect Slack",
    "channel_not_found": "the channel no longer exists",
    "no_service": "the webhook was disabled or removed; create a new one",
    "no_service_id": "the webhook URL is incomplete",
    "no_team": "the webhook URL is incomplete or the workspace is gone",
    "team_disabled": "the Slack workspace is disabled",
    "channel_is_archived": "the channel is archived",
    "posting_to_general_channel_denied": "only admins may post to this channel",
    "too_many_attachments": "too many attachments in one message",
}


def _blocks(value: Any) -> list[dict[str, Any]] | None:
    value = json_input("blocks", value)
    if value is None:
        return None
    if isinstance(value, dict) and isinstance(value.get("blocks"), list):
        value = value["blocks"]  # pasted straight from Block Kit Builder
    if not isinstance(value, list) or not all(isinstance(b, dict) for b in value):
        raise PermanentError("blocks: must be a JSON list of block objects")
    return value or None


def _payload(inputs: dict[str, Any]) -> dict[str, Any]:
    text = inputs.get("text")
    text = "" if text is None else str(text)
    blocks = _blocks(inputs.get("blocks"))
    if not text.strip() and not blocks:
        raise PermanentError("text: required unless blocks are given")
    payload: dict[str, Any] = {"text": text} if text.strip() else {}
    if blocks:
        payload["blocks"] = blocks
    for name in ("username", "icon_emoji"):
        if str(inputs.get(name) or "").strip():
            payload[name] = str(inputs[name]).strip()
    payload["unfurl_links"] = bool(inputs.get("unfurl_links"))
    return payload


def run(ctx: ActionContext) -> ActionResult:
    url = str(ctx.credentials.get("webhook_url") or "").strip()
    parts = split_http_url(url)
    if parts is None:
        raise PermanentError("webhook_url: the connection needs a Slack webhook URL (https://hooks.slack.com/...)")
    if parts.hostname != "hooks.slack.com":
        ctx.logger.info("slack webhook host is %s, not hooks.slack.com", parts.hostname)
    payload = _payload(ctx.inputs)
    resp = ctx.http.request("POST", url, json=payload, headers={"Idempotency-Key": ctx.idempotency_key},
                            secret_url=True)  # the client keeps the URL out of its errors
    summary = resp.summary()
    code = resp.text.strip()
    if resp.status == 200 and code == "ok":
        return ActionResult(output={"ok": True, "status": resp.status}, request=resp.request, response=summary)
    detail = f"{code or 'no error code'} (HTTP {resp.status})"
    kw: dict[str, Any] = {"request": resp.request, "response": summary}
    if resp.status == 429 or resp.status >= 500:
        raise RetryableError(f"Slack is unavailable: {detail}",
                             retry_after=retry_hint(resp.headers.get("Retry-After")), **kw)
    hint = HINTS.get(code)
    if resp.status == 200:
        raise PermanentError(f"Slack answered 200 without 'ok': {code[:200]!r}; is this a Slack webhook URL?", **kw)
    raise PermanentError(f"Slack rejected the message: {detail}" + (f": {hint}" if hint else ""), **kw)


CREDENTIALS = (
    CredentialType(
        key="slack_webhook", label="Slack incoming webhook",
        test=message_test(run, "Slack"), test_posts=True,
        description="An incoming-webhook URL from a Slack app; it posts to the one channel chosen when it was made.",
        fields=(
            Field("webhook_url", "Webhook URL", required=True, secret=True, template=False,
                  placeholder="https://hooks.slack.com/services/T000/B000/XXXX",
                  help="The URL Slack shows under Incoming Webhooks; anyone holding it can post, so it is secret."),
        ),
    ),
)

ACTIONS = (
    Action(
        key="slack_message", label="Slack: send message", group="Chat", run=run,
        credential="slack_webhook", credential_required=True,
        description=("Post a message through a Slack incoming webhook. Rate limits (429) and Slack outages "
                     "are retried; a revoked webhook or archived channel fails the run."),
        fields=(
            Field("text", "Text", "text", placeholder="New order {{ order_id }} from {{ email }}",
                  help="Message text in Slack mrkdwn; required unless blocks are given (then it is the fallback)."),
            Field("blocks", "Blocks", "json", default="",
                  help="Optional Block Kit layout: a JSON list of blocks (Slack then shows these instead of text)."),
            Field("username", "Bot name", help="Overrides the poster's name (legacy webhooks only)."),
            Field("icon_emoji", "Icon emoji", placeholder=":robot_face:",
                  help="Overrides the poster's icon (legacy webhooks only)."),
            Field("unfurl_links", "Unfurl links", "boolean", default=False, template=False,
                  help="Whether Slack shows previews of links in the text."),
        ),
    ),
)
