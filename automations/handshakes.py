"""Handshakes some senders require before they send events. A handshake is answered and
creates no run. Echoed values go back as ``text/plain`` (or JSON) with ``nosniff``, are
length-capped and restricted to printable characters, so a challenge can never be turned
into reflected HTML.
"""
from __future__ import annotations

import hashlib
import hmac
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

MAX_ECHO = 512
# Printable ASCII without markup characters: Graph tokens contain spaces and colons, never <>&"'`
_PRINTABLE = re.compile(rf"^[\x20-\x7e]{{1,{MAX_ECHO}}}$")
_MARKUP = re.compile(r"[<>&\"'`]")


@dataclass
class Handshake:
    status: int
    body: str
    content_type: str = "text/plain; charset=utf-8"
    headers: dict[str, str] = field(default_factory=lambda: {"X-Content-Type-Options": "nosniff"})


def _echo(value: Any) -> str | None:
    ok = isinstance(value, str) and _PRINTABLE.match(value) and not _MARKUP.search(value)
    return value if ok else None


def answer(method: str, query: Mapping[str, Any], body: Any, settings: Mapping[str, Any],
           verified: bool, signing_secret: str | None) -> Handshake | None:
    """The response to a handshake request, or None when this is an ordinary event.

    ``verified`` says the request passed the recipe's signature check (False when the recipe
    checks nothing); ``signing_secret`` is the recipe's secret, for handshakes that prove
    knowledge of it (Zoom).
    """
    token = query.get("validationToken")  # Microsoft Graph subscriptions
    if token is not None:
        value = _echo(token if isinstance(token, str) else None)
        return Handshake(200, value) if value else Handshake(400, "invalid validationToken")
    if method == "GET" and "hub.challenge" in query:  # Meta / WhatsApp / WebSub
        expected = (settings.get("handshake") or {}).get("verify_token")
        if expected and not hmac.compare_digest(str(query.get("hub.verify_token", "")), str(expected)):
            return Handshake(403, "verify token does not match")
        value = _echo(query.get("hub.challenge"))
        return Handshake(200, value) if value else Handshake(400, "invalid hub.challenge")
    if not isinstance(body, dict):
        return None
    if body.get("type") == "url_verification" and "challenge" in body:  # Slack Events API
        if not verified:
            return None  # unsigned: an ordinary (and, with verification on, already rejected) event
        value = _echo(body.get("challenge"))
        return (Handshake(200, json.dumps({"challenge": value}), "application/json") if value
                else Handshake(400, "invalid challenge"))
    if body.get("event") == "endpoint.url_validation":  # Zoom
        payload = body.get("payload")  # anything but an object (null, "x", [1]) carries no token
        plain = _echo(payload.get("plainToken") if isinstance(payload, dict) else None)
        if not plain or not signing_secret:
            return Handshake(400, "cannot validate: no plainToken or no signing secret configured")
        encrypted = hmac.new(signing_secret.encode(), plain.encode(), hashlib.sha256).hexdigest()
        return Handshake(200, json.dumps({"plainToken": plain, "encryptedToken": encrypted}), "application/json")
    return None
