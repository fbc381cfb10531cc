"""Mattermost incoming webhook: post a message to a channel of a (usually self-hosted)
Mattermost server.

Contract (https://developers.mattermost.com/integrate/webhooks/incoming/): POST JSON to
``https://<server>/hooks/<key>``; success is HTTP 200 with the body ``ok``; errors are JSON
``{"id": "web.incoming_webhook.…", "message": "…", "detailed_error": "…", "status_code": …}``.
400/401/403/404 cannot be fixed by retrying; 429 (with ``Retry-After`` or
``X-Ratelimit-Reset``) and 5xx can. The hook URL holds its key, so the URL is the credential:
it never appears in the run history, error messages or logs (and the key is scrubbed from
whatever the server echoes back). Self-hosted servers often sit on private networks, which
the outbound SSRF guard refuses unless the admin allowlists them (HOOKLINE_OUTBOUND_ALLOWLIST).
"""
from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import Any
from urllib.parse import unquote, urlsplit

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
from .outbound import OutboundResponse, retry_hint
from .redaction import redact_values

MAX_TEXT = 16383  # Mattermost splits longer posts; refused here instead
MAX_CHANNEL = 64  # the longest channel name Mattermost allows (a DM target: "@" + a username)
PRIORITIES = (("important", "Important"), ("urgent", "Urgent"))

# What the documented error ids mean for the person reading the run history.
HINTS = {
    "web.incoming_webhook.text.app_error": "give a text or attachments",
    "web.incoming_webhook.parse.app_error": "the message is not JSON Mattermost accepts",
    "web.incoming_webhook.channel.app_error": (
        "no channel of that name in the webhook's team; use the channel's name as in its URL "
        "(e.g. town-square), not its display name, or @username for a direct message"),
    "web.incoming_webhook.user.app_error": "no Mattermost user of that name for the direct message",
    "web.incoming_webhook.channel_locked.app_error": (
        "this webhook is locked to its own channel; leave Channel empty or unlock the webhook"),
    "web.incoming_webhook.permissions.app_error": "the webhook's owner may not post in that channel",
    "web.incoming_webhook.disabled.app_error": (
        "incoming webhooks are disabled on this Mattermost server (System Console > Integrations)"),
    "web.incoming_webhook.invalid.app_error": (
        "the webhook was deleted or its URL is wrong; create a new incoming webhook and update the connection"),
}
STATUS_HINTS = {
    401: "the webhook is disabled or its owner may not post here",
    403: "the webhook is disabled or its owner may not post here",
    404: "the webhook was deleted or its URL is wrong; create a new incoming webhook and update the connection",
}
_HOOK_PATH = re.compile(r"/hooks/([^/]+)/?")


def _key(url: str) -> str | None:
    """The hook key (the secret) when ``url`` is an http(s) ``…/hooks/<key>`` URL."""
    parts = split_http_url(url)
    if parts is None:
        return None
    match = _HOOK_PATH.search(parts.path)
    return match.group(1) if match and match.end() == len(parts.path) else None


def _attachments(value: Any) -> list[dict[str, Any]] | None:
    value = json_input("attachments", value)
    if value is None:
        return None
    if isinstance(value, dict) and isinstance(value.get("attachments"), list):
        value = value["attachments"]  # a whole webhook payload pasted in
    if not isinstance(value, list) or not all(isinstance(a, dict) for a in value):
        raise PermanentError("attachments: must be a JSON list of attachment objects "
                             '(e.g. [{"fallback": "…", "text": "…", "color": "#FF8000"}])')
    for i, att in enumerate(value):
        fields = att.get("fields")
        if fields is not None and (not isinstance(fields, list) or not all(isinstance(f, dict) for f in fields)):
            raise PermanentError(f"attachments: attachment {i + 1}: fields must be a list of objects "
                                 '(e.g. [{"title": "…", "value": "…", "short": true}])')
    return value or None


def _props(value: Any) -> dict[str, Any] | None:
    value = json_input("props", value)
    if value is None:
        return None
    if not isinstance(value, dict):
        raise PermanentError('props: must be a JSON object (e.g. {"card": "Shown in the post\'s side panel"})')
    return value


def _channel(value: Any) -> str | None:
    channel = str(value or "").strip()
    if not channel:
        return None
    if any(c.isspace() for c in channel):
        raise PermanentError(f"channel: {channel[:80]!r} contains spaces; use the channel's name as in its URL "
                             "(e.g. town-square), not its display name, or @username for a direct message")
    if len(channel) > MAX_CHANNEL + 1:
        raise PermanentError(f"channel: longer than {MAX_CHANNEL} characters; use the channel's name as in its URL")
    return channel


def _icon_url(value: Any) -> str | None:
    url = str(value or "").strip()
    if not url:
        return None
    if split_http_url(url) is None:
        raise PermanentError("icon_url: must be an http(s) URL of an image")
    return url


def _payload(inputs: dict[str, Any]) -> dict[str, Any]:
    text = inputs.get("text")
    text = "" if text is None else str(text)
    attachments = _attachments(inputs.get("attachments"))
    if not text.strip() and not attachments:
        raise PermanentError("text: required unless attachments are given")
    if len(text) > MAX_TEXT:
        raise PermanentError(f"text: {len(text)} characters; Mattermost allows at most {MAX_TEXT} in one message "
                             "(shorten it, e.g. with the truncate filter)")
    optional = {
        "text": text if text.strip() else None,
        "attachments": attachments,
        "channel": _channel(inputs.get("channel")),
        "username": str(inputs.get("username") or "").strip(),
        "icon_url": _icon_url(inputs.get("icon_url")),
        "icon_emoji": str(inputs.get("icon_emoji") or "").strip(),
        "props": _props(inputs.get("props")),
    }
    payload: dict[str, Any] = {k: v for k, v in optional.items() if v}  # left empty: not sent
    priority = str(inputs.get("priority") or "").strip().lower()
    if priority and priority not in dict(PRIORITIES):
        raise PermanentError(f"priority: must be one of {', '.join(p for p, _ in PRIORITIES)} or empty")
    requested_ack = bool(inputs.get("requested_ack"))
    if priority or requested_ack:
        payload["priority"] = {"priority": priority, "requested_ack": requested_ack}
    return payload


def _wait(resp: OutboundResponse) -> float | datetime | None:
    """Retry-After, else X-Ratelimit-Reset (seconds until the window resets; a Unix time
    when some proxy sends that instead)."""
    hint = retry_hint(resp.headers.get("Retry-After"))
    if hint is not None:
        return hint
    reset = retry_hint(resp.headers.get("X-Ratelimit-Reset"))
    if isinstance(reset, float) and reset > 1e9:
        return datetime.fromtimestamp(reset, UTC)
    return reset


def _error_detail(resp: OutboundResponse) -> tuple[str, str]:
    """(error id, message) from Mattermost's JSON error, or ("", a short text excerpt)."""
    body: Any = None
    if resp.body.strip()[:1] == b"{":
        try:
            body = resp.json()
        except ValueError:
            body = None
    if isinstance(body, dict) and (body.get("message") or body.get("id")):
        return str(body.get("id") or ""), " ".join(str(body.get("message") or "").split())[:300]
    excerpt = " ".join(resp.text[:300].split())[:200]
    if resp.content_type == "text/html" or excerpt.lower().startswith("<"):
        excerpt = "an HTML page"
    return "", excerpt


def run(ctx: ActionContext) -> ActionResult:
    url = str(ctx.credentials.get("webhook_url") or "").strip()
    key = _key(url)
    if key is None:
        raise PermanentError("webhook_url: the connection needs a Mattermost incoming-webhook URL "
                             "(https://<your-mattermost>/hooks/<key>, from Integrations > Incoming Webhooks)")
    payload = _payload(ctx.inputs)
    resp = ctx.http.request("POST", url, json=payload, headers={"Idempotency-Key": ctx.idempotency_key},
                            secret_url=True)  # the client keeps the URL out of the history and its errors
    keys = (key, unquote(key))  # a developer-mode detailed_error names the hook it could not find
    summary = redact_values(resp.summary(), keys)
    text = resp.text.strip()
    if resp.status == 200 and text == "ok":
        return ActionResult(output={"ok": True, "status": resp.status, "channel": payload.get("channel")},
                            request=resp.request, response=summary)

    def safe(message: str) -> str:
        return redact_values(message, keys)

    kw: dict[str, Any] = {"request": resp.request, "response": summary}
    if resp.status == 200:
        asked, answered = urlsplit(url), urlsplit(resp.url)
        moved = ("; the server redirected the request (a POST redirected by 301/302 arrives as a GET): "
                 "use the exact https:// URL Mattermost shows"
                 if (asked.scheme, asked.path) != (answered.scheme, answered.path) else "")
        raise PermanentError(safe(f"Mattermost answered 200 without 'ok': {_error_detail(resp)[1]!r}"
                                  + (moved or "; is this a Mattermost incoming-webhook URL?")), **kw)
    error_id, message = _error_detail(resp)
    detail = ", ".join(filter(None, (error_id, f"HTTP {resp.status}")))
    what = f"{message} ({detail})" if message else detail
    if resp.status == 429:
        raise RetryableError(safe(f"Mattermost is rate limiting this webhook: {what}"), retry_after=_wait(resp),
                             **kw)
    if resp.status >= 500 or resp.status in (408, 425):
        raise RetryableError(safe(f"Mattermost is unavailable: {what}"),
                             retry_after=retry_hint(resp.headers.get("Retry-After")), **kw)
    hint = HINTS.get(error_id) or STATUS_HINTS.get(resp.status)
    if 300 <= resp.status < 400:
        hint = "the server redirected the request too often or without a Location"
    raise PermanentError(safe(f"Mattermost rejected the message: {what}" + (f": {hint}" if hint else "")), **kw)


CREDENTIALS = (
    CredentialType(
        key="mattermost_webhook", label="Mattermost incoming webhook",
        test=message_test(run, "Mattermost"), test_posts=True,
        description=("An incoming-webhook URL from a Mattermost server (Integrations > Incoming Webhooks); it posts "
                     "to the channel chosen when it was made, or to another channel of its team unless locked. "
                     "A server on a private network (10.x, 192.168.x, an internal name) is refused until the "
                     "admin adds its host to HOOKLINE_OUTBOUND_ALLOWLIST."),
        fields=(
            Field("webhook_url", "Webhook URL", required=True, secret=True, template=False,
                  placeholder="https://chat.example.com/hooks/xxxxxxxxxxxxxxxxxxxxxxxxxx",
                  help=("The URL Mattermost shows after you add an incoming webhook; the key at its end lets "
                        "anyone post, so it is secret. If the server is on a private network, the Hookline "
                        "admin must allowlist its host (HOOKLINE_OUTBOUND_ALLOWLIST) or sending is refused.")),
        ),
    ),
)

ACTIONS = (
    Action(
        key="mattermost_message", label="Mattermost: send message", group="Chat", run=run,
        credential="mattermost_webhook", credential_required=True,
        description=("Post a message through a Mattermost incoming webhook. Rate limits (429) and server outages "
                     "(5xx) are retried; a deleted or disabled webhook, an unknown channel or an invalid message "
                     "fails the run. Self-hosted servers on a private network must be allowlisted by the admin "
                     "(HOOKLINE_OUTBOUND_ALLOWLIST)."),
        fields=(
            Field("text", "Text", "text", placeholder="New order **{{ order_id }}** from {{ email }}",
                  help=(f"Message in Markdown; required unless attachments are given. At most {MAX_TEXT} "
                        "characters (longer messages are refused, not split).")),
            Field("channel", "Channel", placeholder="town-square",
                  help=("Optional: post elsewhere than the webhook's default channel. The channel's name as in "
                        "its URL (town-square, not Town Square) in the webhook's team, or @username for a direct "
                        "message. Refused if the webhook is locked to its channel.")),
            Field("username", "Bot name", placeholder="Hookline",
                  help=("Optional: the name the post shows. Works only if the server allows integrations to "
                        "override usernames (System Console > Integrations); otherwise ignored.")),
            Field("icon_url", "Icon URL", placeholder="https://example.com/bot.png",
                  help=("Optional: an image URL for the post's profile picture. Works only if the server allows "
                        "integrations to override profile picture icons.")),
            Field("icon_emoji", "Icon emoji", placeholder=":robot:",
                  help="Optional: an emoji name, with or without colons, for the profile picture (overrides Icon URL)."),
            Field("attachments", "Attachments", "json", default="",
                  help=('Optional message attachments (Slack-compatible): a JSON list of objects, e.g. '
                        '[{"fallback": "Order 42", "color": "#36a64f", "title": "Order 42", "text": "Paid"}].')),
            Field("props", "Props", "json", default="",
                  help='Optional post properties: a JSON object, e.g. {"card": "Markdown shown in the side panel"}.'),
            Field("priority", "Priority", "select", default="", choices=PRIORITIES, template=False,
                  help="Optional message priority label (needs message priority enabled on the server)."),
            Field("requested_ack", "Request acknowledgement", "boolean", default=False, template=False,
                  help="Ask readers to acknowledge the message (a Mattermost Professional feature)."),
        ),
    ),
)
