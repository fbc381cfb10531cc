"""Discord channel webhook: post a message to the channel (or thread) the webhook belongs to.

Contract (https://discord.com/developers/docs/resources/webhook#execute-webhook): POST JSON
to ``/api/webhooks/{webhook.id}/{webhook.token}``; with ``?wait=true`` success is 200 and the
created message (so later steps get its id), without it 204. Errors are a status plus a JSON
body ``{"message": ..., "code": ...}`` (``errors`` holds per-field problems for code 50035);
a 429 also says ``retry_after`` in seconds (https://discord.com/developers/docs/topics/rate-limits).

The webhook URL holds the webhook's token, so the URL is the credential: it never appears in
the run history or in error messages. Mentions are off unless the step allows them, so data
from a webhook payload cannot ping @everyone or a role.
"""
from __future__ import annotations

import re
from datetime import datetime
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
    split_http_url,
)
from .outbound import retry_hint
from .redaction import redact_values

MAX_CONTENT = 2000  # characters of message text
MAX_EMBEDS = 10
DISCORD_HOSTS = frozenset({"discord.com", "discordapp.com", "ptb.discord.com", "canary.discord.com"})
_WEBHOOK_PATH = re.compile(r"/api(?:/v\d+)?/webhooks/(\d+)/([^/?#]+)/?")
_SNOWFLAKE = re.compile(r"\d{1,20}")
_TRUE = frozenset({"true", "1", "yes", "y", "on"})
_FALSE = frozenset({"false", "0", "no", "n", "off", ""})

# What Discord's JSON error codes mean for the person reading the run history
# (https://discord.com/developers/docs/topics/opcodes-and-status-codes#json-json-error-codes).
HINTS = {
    10003: "the thread or channel does not exist (check the thread ID)",
    10015: "the webhook was deleted; create a new one in the channel's Integrations settings "
           "and update the connection",
    40058: "this webhook posts to a forum channel: give a thread name (new post) or a thread ID",
    50001: "the webhook cannot see this channel or thread",
    50006: "give content or embeds",
    50013: "the webhook lacks permission to post here",
    50027: "the webhook token is wrong or was reset; copy the webhook URL again into the connection",
    50035: "Discord refused some fields",
    50083: "the thread is archived",
    50109: "the request body is not valid JSON",
    160005: "the thread is locked",
    220001: "this webhook posts to a forum channel: give a thread name (new post) or a thread ID",
    220002: "give a thread name or a thread ID, not both",
    220003: "thread names only work for webhooks of forum or media channels",
    220004: "this kind of webhook cannot post to forum channels",
}


def _flag(inputs: dict[str, Any], name: str) -> bool:
    value = inputs.get(name)
    if value is None or isinstance(value, bool):
        return bool(value)
    if isinstance(value, (int, float)):
        return value != 0
    text = str(value).strip().lower()
    if text in _TRUE:
        return True
    if text in _FALSE:
        return False
    raise PermanentError(f"{name}: must be true or false, not {str(value)[:40]!r}")


def _embeds(value: Any) -> list[dict[str, Any]] | None:
    value = json_input("embeds", value)
    if value is None:
        return None
    if isinstance(value, dict) and isinstance(value.get("embeds"), list):
        value = value["embeds"]  # a whole message payload pasted from an embed builder
    if not isinstance(value, list) or not all(isinstance(e, dict) for e in value):
        raise PermanentError("embeds: must be a JSON list of embed objects, e.g. "
                             '[{"title": "New order", "description": "..."}]')
    if len(value) > MAX_EMBEDS:
        raise PermanentError(f"embeds: Discord allows at most {MAX_EMBEDS} embeds per message "
                             f"(this one has {len(value)})")
    return value or None


def _text(inputs: dict[str, Any], name: str) -> str:
    value = inputs.get(name)
    return "" if value is None else str(value)


def _payload(inputs: dict[str, Any]) -> dict[str, Any]:
    content = _text(inputs, "content")
    embeds = _embeds(inputs.get("embeds"))
    if not content.strip() and not embeds:
        raise PermanentError("content: required unless embeds are given")
    if len(content) > MAX_CONTENT:
        raise PermanentError(f"content: Discord allows at most {MAX_CONTENT} characters "
                             f"(this one has {len(content)})")
    payload: dict[str, Any] = {"content": content} if content.strip() else {}
    if embeds:
        payload["embeds"] = embeds
    for name in ("username", "avatar_url", "thread_name"):
        if _text(inputs, name).strip():
            payload[name] = _text(inputs, name).strip()
    payload["tts"] = _flag(inputs, "tts")
    # Without allowed_mentions Discord pings whatever the text names (@everyone, roles, users).
    payload["allowed_mentions"] = ({"parse": ["users", "roles", "everyone"]} if _flag(inputs, "allow_mentions")
                                   else {"parse": []})
    return payload


def _params(inputs: dict[str, Any], payload: dict[str, Any]) -> dict[str, str]:
    params = {"wait": "true"}  # answer with the message, so the step's output has its id
    thread_id = _text(inputs, "thread_id").strip()
    if thread_id:
        if not _SNOWFLAKE.fullmatch(thread_id):
            raise PermanentError("thread_id: must be a Discord thread ID (digits only; copy it with "
                                 "Developer Mode on: right-click the thread, Copy Thread ID)")
        if "thread_name" in payload:
            raise PermanentError("thread_id, thread_name: give a thread ID (post in an existing thread) "
                                 "or a thread name (start a forum post), not both")
        params["thread_id"] = thread_id
    return params


def _webhook_url(ctx: ActionContext) -> tuple[str, str]:
    """The webhook URL and its token (to keep out of anything we say)."""
    url = str(ctx.credentials.get("webhook_url") or "").strip()
    parts = split_http_url(url)
    if parts is None:
        raise PermanentError("webhook_url: the connection needs a Discord webhook URL "
                             "(https://discord.com/api/webhooks/...)")
    found = _WEBHOOK_PATH.fullmatch(parts.path)
    if not found:
        raise PermanentError("webhook_url: not a Discord webhook URL: the path must be "
                             "/api/webhooks/<webhook id>/<token>; copy it again from Discord")
    if parts.hostname not in DISCORD_HOSTS:  # hostname is lower case
        ctx.logger.info("discord webhook host is %s, not discord.com", parts.hostname)
    return url, found.group(2)


def _field_errors(errors: Any, path: str = "") -> list[str]:
    """Flatten 50035's nested ``errors`` ({"embeds": {"0": {"title": {"_errors": [...]}}}})
    into "embeds.0.title: message" lines."""
    if not isinstance(errors, dict):
        return []
    out: list[str] = []
    for key, value in errors.items():
        if key == "_errors" and isinstance(value, list):
            out += [f"{path or 'body'}: {e.get('message') or e.get('code')}" for e in value if isinstance(e, dict)]
        elif isinstance(value, dict):
            out += _field_errors(value, f"{path}.{key}" if path else str(key))
    return out


def _rate_limit_hint(body: Any, headers: Any) -> float | datetime | None:
    """Seconds to wait: the body's ``retry_after`` (precise, fractional) first, then the
    Retry-After header, then X-RateLimit-Reset-After."""
    value = body.get("retry_after") if isinstance(body, dict) else None
    if isinstance(value, (int, float)) and not isinstance(value, bool) and value >= 0:
        return float(value)
    return retry_hint(headers.get("Retry-After")) or retry_hint(headers.get("X-RateLimit-Reset-After"))


def run(ctx: ActionContext) -> ActionResult:
    url, token = _webhook_url(ctx)
    payload = _payload(ctx.inputs)
    params = _params(ctx.inputs, payload)
    resp = ctx.http.request("POST", url, params=params, json=payload,
                            headers={"Idempotency-Key": ctx.idempotency_key},
                            secret_url=True)  # the client keeps the URL out of its errors and the history
    summary = resp.summary()
    kw: dict[str, Any] = {"request": resp.request, "response": summary}
    body = resp.parsed_body()
    if resp.status == 204:
        return ActionResult(output={"id": None, "channel_id": None}, request=resp.request, response=summary)
    if 200 <= resp.status < 300:
        if isinstance(body, dict) and body.get("id"):
            return ActionResult(output={"id": str(body["id"]), "channel_id": body.get("channel_id")},
                                request=resp.request, response=summary)
        excerpt = redact_values(" ".join(resp.text[:300].split())[:200], (url, token))
        raise PermanentError(f"Discord answered {resp.status} without the message it created: {excerpt!r}; "
                             "is this a Discord webhook URL?", **kw)

    error = body if isinstance(body, dict) else {}
    code = error.get("code") if isinstance(error.get("code"), int) else None
    text = str(error.get("message") or "").strip() or " ".join(resp.text[:300].split())[:200]
    detail = f"{text or 'no error message'} (" + (f"code {code}, " if code is not None else "") + f"HTTP {resp.status})"
    if resp.status == 429:
        scope = " (global)" if error.get("global") else ""
        raise RetryableError(redact_values(f"Discord rate limit{scope}: {detail}", (url, token)),
                             retry_after=_rate_limit_hint(body, resp.headers), **kw)
    if resp.status in (408, 425) or resp.status >= 500:
        raise RetryableError(redact_values(f"Discord is unavailable: {detail}", (url, token)),
                             retry_after=retry_hint(resp.headers.get("Retry-After")), **kw)
    fields = _field_errors(error.get("errors"))
    hint = HINTS.get(code) if code is not None else None
    message = f"Discord rejected the message: {detail}"
    if fields:
        message += ": " + "; ".join(fields[:10])[:600]
    elif hint:
        message += f": {hint}"
    raise PermanentError(redact_values(message, (url, token)), **kw)


def check_connection(ctx: ActionContext) -> str:
    """Asks Discord for the webhook itself (GET on its URL, "Get Webhook with Token"): that it
    exists, that the token is right and which channel it posts to, without posting anything."""
    url, token = _webhook_url(ctx)
    resp = ctx.http.request("GET", url, secret_url=True)
    body = resp.parsed_body()
    error = body if isinstance(body, dict) else {}
    if resp.status == 200 and error.get("id"):
        name = " ".join(str(error.get("name") or "").split())[:80]
        return f"the webhook {name!r} exists and posts to channel {error.get('channel_id')}"
    code = error.get("code") if isinstance(error.get("code"), int) else None
    text = str(error.get("message") or "").strip() or " ".join(resp.text[:300].split())[:200]
    detail = f"{text or 'no error message'} (" + (f"code {code}, " if code is not None else "") + f"HTTP {resp.status})"
    hint = HINTS.get(code) if code is not None else None
    message = f"Discord refused the webhook: {detail}" + (f": {hint}" if hint else "")
    raise PermanentError(redact_values(message, (url, token)))


CREDENTIALS = (
    CredentialType(
        key="discord_webhook", label="Discord webhook", test=check_connection,
        description=("A channel webhook URL from Discord (channel settings → Integrations → Webhooks → "
                     "Copy Webhook URL); it posts to that channel, or to its threads."),
        fields=(
            Field("webhook_url", "Webhook URL", required=True, secret=True, template=False,
                  placeholder="https://discord.com/api/webhooks/123456789012345678/AbCdEf...",
                  help="The URL Discord shows under Copy Webhook URL. It contains the webhook's token: "
                       "anyone holding it can post, so it is secret."),
        ),
    ),
)

ACTIONS = (
    Action(
        key="discord_message", label="Discord: send message", group="Chat", run=run,
        credential="discord_webhook", credential_required=True,
        description=("Post a message through a Discord channel webhook; the step's output is the new "
                     "message's id and channel_id. Mentions (@everyone, roles, users) are suppressed "
                     "unless allowed. Rate limits (429) and Discord outages are retried after the wait "
                     "Discord asks for; a deleted webhook or invalid message fails the run."),
        fields=(
            Field("content", "Message", "text", placeholder="New order {{ order_id }} from {{ email }}",
                  help=f"Message text in Discord markdown, up to {MAX_CONTENT} characters; "
                       "required unless embeds are given."),
            Field("embeds", "Embeds", "json", default="",
                  placeholder='[{"title": "Order {{ order_id }}", "description": "{{ total }}", "color": 5814783}]',
                  help=f"Optional rich embeds: a JSON list of up to {MAX_EMBEDS} embed objects "
                       "(title, description, url, color, fields, ...), as in Discord's API."),
            Field("username", "Bot name", placeholder="Hookline",
                  help="Overrides the webhook's name for this message."),
            Field("avatar_url", "Avatar URL", placeholder="https://example.com/avatar.png",
                  help="Overrides the webhook's avatar for this message (an image URL)."),
            Field("thread_id", "Thread ID", placeholder="123456789012345678",
                  help="Post into this existing thread of the webhook's channel (or forum post); "
                       "leave blank to post in the channel itself."),
            Field("thread_name", "New thread name", placeholder="Order {{ order_id }}",
                  help="Forum and media channels only: start a new post with this title. "
                       "Use either this or a thread ID."),
            Field("allow_mentions", "Allow mentions", "boolean", default=False, template=False,
                  help="Off: @everyone, @here, role and user mentions in the message are shown but "
                       "notify nobody (safe for data from webhooks). On: they ping as typed."),
            Field("tts", "Text to speech", "boolean", default=False, template=False,
                  help="Ask Discord to read the message aloud to members viewing the channel."),
        ),
    ),
)
