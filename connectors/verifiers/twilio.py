"""Twilio: ``X-Twilio-Signature: base64(HMAC-SHA1(auth token, URL + sorted form pairs))``.

For form posts the URL (with its query string) is followed by every POST field, sorted by
name, as name+value with no separators (several values of one name sorted too). For JSON
bodies Twilio adds ``bodySHA256=<hex SHA-256 of the raw body>`` to the query and signs the
URL alone. Like Twilio's own libraries, the URL is tried with and without the default port.
Twilio signs no timestamp, so there is no replay window.
https://www.twilio.com/docs/usage/webhooks/webhooks-security
"""
from __future__ import annotations

import hashlib
import hmac
from collections.abc import Mapping
from typing import Any
from urllib.parse import parse_qs, parse_qsl, urlsplit, urlunsplit

from ..base import Field
from .core import (
    MAX_HEADER,
    SignedRequest,
    VerificationFailed,
    Verifier,
    any_match,
    decode,
    header,
    secret_keys,
    to_bytes,
)

NAME = "X-Twilio-Signature"
MAX_FIELDS = 1000


def url_variants(url: str) -> list[str]:
    """``url`` as given, without its port and with the scheme's default port made explicit."""
    if not url or len(url) > MAX_HEADER:
        raise VerificationFailed("request URL is missing or too long")
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        raise VerificationFailed("request URL is malformed") from None
    userinfo, at, hostport = parts.netloc.rpartition("@")
    host = hostport if port is None else hostport[:hostport.rfind(":")]
    port = port or (443 if parts.scheme == "https" else 80)
    variants = [url]
    for netloc in (f"{userinfo}{at}{host}", f"{userinfo}{at}{host}:{port}"):
        variant = urlunsplit(parts._replace(netloc=netloc))
        if variant not in variants:
            variants.append(variant)
    return variants


def _pairs(form: Mapping[str, Any]) -> list[tuple[str, str]]:
    if len(form) > MAX_FIELDS:
        raise VerificationFailed("too many form fields")
    pairs: list[tuple[str, str]] = []
    for key in sorted(form, key=str):
        name = str(key)
        values = form.getlist(key) if hasattr(form, "getlist") else form[key]  # werkzeug MultiDict
        values = values if isinstance(values, list | tuple) else [values]
        pairs.extend((name, str(v)) for v in sorted(str(v) for v in values))
        if len(pairs) > MAX_FIELDS:
            raise VerificationFailed("too many form fields")
    return pairs


def _form(request: SignedRequest) -> Mapping[str, Any]:
    if request.form or not request.body:
        return request.form
    try:  # the endpoint gave no parsed form: read the body as application/x-www-form-urlencoded
        fields = parse_qsl(request.body.decode("utf-8", "replace"), keep_blank_values=True,
                           max_num_fields=MAX_FIELDS)
    except ValueError:
        raise VerificationFailed("too many form fields") from None
    grouped: dict[str, list[str]] = {}
    for name, value in fields:
        grouped.setdefault(name, []).append(value)
    return grouped


def _verify(settings: dict[str, Any], secrets: tuple[str, ...], request: SignedRequest,
            now: float) -> None:
    signature = decode(header(request, NAME), "base64", NAME)
    url = settings["url"] or request.url
    variants = url_variants(url)
    body_hash = parse_qs(urlsplit(url).query).get("bodySHA256")
    if body_hash:
        actual = hashlib.sha256(request.body).hexdigest()
        if not hmac.compare_digest(to_bytes(actual), to_bytes(body_hash[0].lower())):
            raise VerificationFailed("body hash does not match")
        tail = ""
    else:
        tail = "".join(name + value for name, value in _pairs(_form(request)))
    messages = [to_bytes(variant + tail) for variant in variants]
    if not any_match(secret_keys(secrets), messages, [signature], "sha1"):
        raise VerificationFailed("signature does not match")


TWILIO = Verifier(
    key="twilio",
    label="Twilio",
    help="Checks X-Twilio-Signature (HMAC-SHA1 over the URL and the POST fields, or over the URL "
         "with bodySHA256 for JSON bodies). Twilio signs no timestamp: there is no replay window.",
    verify=_verify,
    settings_fields=(
        Field("url", "Webhook URL as configured in Twilio", template=False,
              placeholder="https://hooks.example.com/hooks/…",
              help="Only if a proxy changes the URL we see; Twilio signs the exact URL it called, "
                   "query string included. Empty: the URL of the request."),
    ),
    secret_label="Auth token",
    secret_help="The account's Auth Token (Console > Account info). During a token rotation, "
                "add the secondary token as the second secret.",
    docs_url="https://www.twilio.com/docs/usage/webhooks/webhooks-security",
)

VERIFIERS = (TWILIO,)
