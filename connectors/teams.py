"""Microsoft Teams incoming webhook: post an Adaptive Card to the channel the webhook was made for.

Two kinds of webhook URL, one contract each; both take the same JSON message
``{"type": "message", "attachments": [{"contentType": "application/vnd.microsoft.card.adaptive",
"content": <Adaptive Card>}]}``:

* Workflows (Power Automate, "Post to a channel when a webhook request is received", the
  replacement Microsoft recommends): ``https://prod-NN.<region>.logic.azure.com/workflows/…
  /triggers/manual/paths/invoke?api-version=…&sig=…`` or
  ``https://<env>.environment.api.powerplatform.com/…/workflows/…``. Success is
  **202 Accepted** with an empty body (a flow ending in its own Response action may answer
  another 2xx). 400/401/403/404 are permanent (401/403: the ``sig`` is wrong or the flow is
  off); 429 (Power Automate throttling, with Retry-After) and 5xx are retried.
* Legacy Office 365 connector webhooks: ``https://<tenant>.webhook.office.com/webhookb2/…``.
  Success is **200 with the body "1"**; any other 200 body is an error text ("Summary or
  Text is required.", "Webhook message delivery failed with error: Microsoft Teams endpoint
  returned HTTP error 413 …"), as is a 400. 404/410: the webhook was removed or the connector
  retired. 429 and 5xx are retried.

The URL (its path and its ``sig`` query) is the credential itself: the client is told so
(``secret_url=True``) and anything the receiver echoes back is scrubbed of it. Any http(s)
URL is accepted; the outbound SSRF guard and its allowlist decide where requests may go.
Teams refuses messages over 28 KB, so larger ones fail here before anything is sent.
"""
from __future__ import annotations

import json
import re
from collections.abc import Callable
from typing import Any, Literal
from urllib.parse import unquote_plus, urlsplit

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
from .outbound import SUMMARY_LIMIT, OutboundResponse, retry_hint
from .redaction import REDACTED, redact_text

ADAPTIVE = "application/vnd.microsoft.card.adaptive"
CARD_VERSION = "1.4"
MAX_MESSAGE_BYTES = 28 * 1024  # Teams' documented message size limit
Kind = Literal["workflows", "legacy", "unknown"]

_LEGACY_HOSTS = (".webhook.office.com", "outlook.office.com", "outlook.office365.com")
_WORKFLOW_HOSTS = (".logic.azure.com", ".api.powerplatform.com")
# An error a legacy webhook reports inside a 200 that retrying can fix (throttled, Teams down).
_LEGACY_TRANSIENT = re.compile(r"returned HTTP error (429|5\d\d)\b")


# --- the message ----------------------------------------------------------------------------

def _card(value: Any) -> dict[str, Any] | None:
    card = json_input("card", value)
    if card is None:
        return None
    if (isinstance(card, dict) and card.get("type") == "message"
            and isinstance(card.get("attachments"), list) and len(card["attachments"]) == 1
            and isinstance(card["attachments"][0], dict)
            and card["attachments"][0].get("contentType") == ADAPTIVE):
        card = card["attachments"][0].get("content")  # a whole Teams message pasted: its card
    if not isinstance(card, dict):
        raise PermanentError("card: must be a JSON object (an Adaptive Card, as the Adaptive Cards "
                             f"Designer shows it), not {type(card).__name__}")
    if card.get("type") != "AdaptiveCard":
        raise PermanentError('card: must be an Adaptive Card: a JSON object with "type": "AdaptiveCard"')
    return card


def _fact_value(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    return json.dumps(value, ensure_ascii=False)


def _facts(value: Any) -> list[dict[str, str]]:
    facts = json_input("facts", value)
    if facts is None:
        return []
    if not isinstance(facts, dict):
        raise PermanentError('facts: must be a JSON object of name → value, e.g. {"Order": "42", '
                             f'"Total": "$19.99"}}, not {type(facts).__name__}')
    return [{"title": str(k), "value": _fact_value(v)} for k, v in facts.items()]


def build_card(title: str, text: str, facts: list[dict[str, str]]) -> dict[str, Any]:
    """An Adaptive Card 1.4: the title (bolder, larger), the text, then the facts."""
    body: list[dict[str, Any]] = []
    if title:
        body.append({"type": "TextBlock", "text": title, "weight": "Bolder", "size": "Large", "wrap": True})
    body.append({"type": "TextBlock", "text": text, "wrap": True})
    if facts:
        body.append({"type": "FactSet", "facts": facts})
    return {"type": "AdaptiveCard", "$schema": "http://adaptivecards.io/schemas/adaptive-card.json",
            "version": CARD_VERSION, "body": body}


def _text(inputs: dict[str, Any], name: str) -> str:
    value = inputs.get(name)
    if value is None:
        return ""
    return (value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)).strip()


def message(inputs: dict[str, Any]) -> dict[str, Any]:
    """The Teams message for these inputs; PermanentError when they cannot make one."""
    card = _card(inputs.get("card"))
    facts = _facts(inputs.get("facts"))  # checked even when a card is given: a mistake is a mistake
    if card is None:
        text = _text(inputs, "text")
        if not text:
            raise PermanentError("text: required unless a card is given")
        card = build_card(_text(inputs, "title"), text, facts)
    return {"type": "message", "attachments": [{"contentType": ADAPTIVE, "content": card}]}


def encode(payload: dict[str, Any]) -> bytes:
    """The body as sent (UTF-8, compact), refused when Teams would refuse it for its size."""
    try:
        body = json.dumps(payload, ensure_ascii=False, allow_nan=False, separators=(",", ":")).encode("utf-8")
    except ValueError as exc:  # NaN/Infinity from a pasted card: not JSON
        raise PermanentError(f"card: cannot be sent as JSON ({exc})") from None
    if len(body) > MAX_MESSAGE_BYTES:
        raise PermanentError(f"message too large for Teams: {len(body):,} bytes, the limit is "
                             f"{MAX_MESSAGE_BYTES:,} bytes (28 KB); shorten the text, facts or card")
    return body


# --- the webhook --------------------------------------------------------------------------

def kind_of(url: str) -> Kind:
    parts = urlsplit(url)
    host, path = (parts.hostname or "").lower(), parts.path.lower()
    if "/webhookb2/" in path or "/incomingwebhook/" in path or host.endswith(_LEGACY_HOSTS):
        return "legacy"
    if "/workflows/" in path or host.endswith(_WORKFLOW_HOSTS):
        return "workflows"
    return "unknown"


def _scrubber(url: str) -> Callable[[str], str]:
    """Replaces whatever part of the webhook URL a receiver echoes back (the URL, its path,
    its query, its signature, its ids) with ``[redacted]``."""
    parts = urlsplit(url)
    pieces = {url, url.split("://", 1)[-1], parts.path, parts.query}
    for pair in parts.query.split("&"):
        name, _, value = pair.partition("=")
        if unquote_plus(name).lower() in ("sig", "code", "token", "key") or len(value) >= 20:
            pieces |= {value, unquote_plus(value)}
    pieces |= {seg for seg in re.split(r"[/@]", parts.path) if len(seg) >= 16 and re.search(r"\d", seg)}
    ordered = sorted((p for p in pieces if len(p) >= 8), key=len, reverse=True)

    def scrub(text: str) -> str:
        for piece in ordered:
            text = text.replace(piece, REDACTED)
        return redact_text(text)
    return scrub


def _detail(resp: OutboundResponse, scrub: Callable[[str], str]) -> str:
    """A short, single-line account of the receiver's answer: Power Automate's
    ``{"error": {"code", "message"}}`` as "code: message", else the text."""
    text = resp.text
    if resp.is_json:
        try:
            err = resp.json().get("error")
        except (ValueError, AttributeError):
            err = None
        if isinstance(err, dict) and (err.get("code") or err.get("message")):
            text = ": ".join(str(err[k]) for k in ("code", "message") if err.get(k))
    text = " ".join(text.split())
    return scrub(text[:300] + ("…" if len(text) > 300 else ""))


def _safe_summary(summary: dict[str, Any], scrub: Callable[[str], str]) -> dict[str, Any]:
    body = summary.get("body")
    if body is None or body == "":
        return summary
    dumped = body if isinstance(body, str) else json.dumps(body, ensure_ascii=False)
    clean = scrub(dumped)
    return summary if clean == dumped else {**summary, "body": clean}


_WORKFLOW_HINTS = {
    400: "the workflow refused the message; check the card in the Adaptive Cards Designer",
    401: "the URL's signature (sig) is wrong, or the flow was turned off; copy the URL from the workflow again",
    403: "the URL's signature (sig) is wrong, or the flow was turned off; copy the URL from the workflow again",
    404: "the workflow no longer exists; create a new one and reconnect Teams",
    413: "the message is too large",
}
_LEGACY_HINTS = {
    404: "the webhook was removed or its Office 365 connector retired; create a new webhook "
         "(Microsoft recommends a Workflows webhook) and reconnect Teams",
    410: "the webhook was removed or its Office 365 connector retired; create a new webhook "
         "(Microsoft recommends a Workflows webhook) and reconnect Teams",
    413: "the message is too large",
}


def _succeeded(kind: Kind, resp: OutboundResponse) -> bool:
    if resp.status == 202:
        return True
    if resp.status == 200 and resp.text.strip() == "1":
        return True
    # A flow may end in a Response action of its own; a legacy 200 without "1" is an error.
    return kind == "workflows" and 200 <= resp.status < 300


def run(ctx: ActionContext) -> ActionResult:
    url = str(ctx.credentials.get("webhook_url") or "").strip()
    parts = split_http_url(url)
    if parts is None:
        raise PermanentError("webhook_url: the connection needs a Teams webhook URL (a Workflows URL "
                             "https://….logic.azure.com/workflows/… or https://….webhook.office.com/webhookb2/…)")
    kind = kind_of(url)
    if kind == "unknown":
        ctx.logger.info("teams webhook host is %s, neither a Workflows nor an Office 365 connector URL",
                        parts.hostname)
    payload = message(ctx.inputs)
    body = encode(payload)
    resp = ctx.http.request("POST", url, data=body,
                            headers={"Content-Type": "application/json", "Idempotency-Key": ctx.idempotency_key},
                            secret_url=True)  # the client keeps the URL out of its errors and summary
    scrub = _scrubber(url)
    request = dict(resp.request)
    if len(body) <= SUMMARY_LIMIT:
        request["body"] = payload  # the history shows the message as JSON, not as one string
    summary = _safe_summary(resp.summary(), scrub)
    if _succeeded(kind, resp):
        return ActionResult(output={"ok": True, "status": resp.status, "webhook": kind},
                            request=request, response=summary)

    detail = _detail(resp, scrub)
    quoted = f"{detail} (HTTP {resp.status})" if detail else f"HTTP {resp.status}"
    kw: dict[str, Any] = {"request": request, "response": summary}
    if resp.status in (408, 425, 429) or resp.status >= 500:
        what = "throttled" if resp.status == 429 else "unavailable"
        raise RetryableError(f"Teams is {what}: {quoted}",
                             retry_after=retry_hint(resp.headers.get("Retry-After")), **kw)
    if resp.status == 200:
        if _LEGACY_TRANSIENT.search(detail):
            raise RetryableError(f"Teams could not deliver the message yet: {quoted}", **kw)
        if not detail:
            raise PermanentError("Teams answered 200 without \"1\" (an empty body); is this a Teams webhook URL?",
                                 **kw)
        raise PermanentError(f"Teams did not accept the message: {quoted}", **kw)
    if 200 < resp.status < 300:
        raise PermanentError(f"Teams answered HTTP {resp.status} instead of 202 or 200 \"1\"; "
                             "is this a Teams webhook URL?", **kw)
    hints = _WORKFLOW_HINTS if kind == "workflows" else _LEGACY_HINTS if kind == "legacy" else {}
    hint = hints.get(resp.status)
    raise PermanentError(f"Teams rejected the message: {quoted}" + (f": {hint}" if hint else ""), **kw)


CREDENTIALS = (
    CredentialType(
        key="teams_webhook", label="Microsoft Teams incoming webhook",
        test=message_test(run, "Teams"), test_posts=True,
        description=("A Teams channel's incoming-webhook URL: a Workflows URL (Power Automate, "
                     "\"Post to a channel when a webhook request is received\", the kind Microsoft recommends) "
                     "or a legacy Office 365 connector URL (….webhook.office.com/webhookb2/…). "
                     "It posts to the channel chosen when it was made."),
        fields=(
            Field("webhook_url", "Webhook URL", required=True, secret=True, template=False,
                  placeholder="https://prod-00.westus.logic.azure.com:443/workflows/…/triggers/manual/paths/invoke?…&sig=…",
                  help=("The URL the Teams workflow (or connector) shows, all of it, query included: "
                        "anyone holding it can post, so it is secret.")),
        ),
    ),
)

ACTIONS = (
    Action(
        key="teams_message", label="Microsoft Teams: send message", group="Chat", run=run,
        credential="teams_webhook", credential_required=True,
        description=("Post a message (an Adaptive Card) to a Teams channel through an incoming webhook, "
                     "Workflows or Office 365 connector. Throttling (429) and Teams or Power Automate outages "
                     "are retried; a removed webhook, a turned-off flow or a refused card fails the run. "
                     "Messages over 28 KB are refused before sending."),
        fields=(
            Field("title", "Title", placeholder="New order {{ order_id }}",
                  help="Optional heading, shown larger and in bold above the text."),
            Field("text", "Text", "text", placeholder="**{{ name }}** paid {{ amount }} — [open]({{ url }})",
                  help=("Message text; Teams renders a subset of Markdown (**bold**, _italic_, lists, "
                        "[links](https://example.com)). Required unless a card is given.")),
            Field("facts", "Facts", "json", default="",
                  placeholder='{"Order": "{{ order_id }}", "Customer": "{{ email }}"}',
                  help="Optional name → value pairs (a JSON object) shown as a table under the text."),
            Field("card", "Adaptive Card", "json", default="",
                  placeholder='{"type": "AdaptiveCard", "version": "1.4", "body": [...]}',
                  help=("Optional Adaptive Card (a JSON object with \"type\": \"AdaptiveCard\", e.g. from the "
                        "Adaptive Cards Designer, adaptivecards.io/designer) sent as is instead of the card "
                        "built from title, text and facts, which are then not used.")),
        ),
    ),
)
