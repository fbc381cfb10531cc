"""Senders without a preset of their own: a configurable HMAC, a shared secret header and
HTTP Basic authentication. Every comparison is constant-time on bytes."""
from __future__ import annotations

import hmac
from typing import Any

from ..base import Field
from .core import (
    ALGORITHMS,
    NotConfigured,
    SignedRequest,
    VerificationFailed,
    Verifier,
    after_prefix,
    check_window,
    decode,
    header,
    require_match,
    secret_keys,
    timestamp,
    to_bytes,
    tolerance_field,
    unb64,
)


def _hmac(settings: dict[str, Any], secrets: tuple[str, ...], request: SignedRequest,
          now: float) -> None:
    timed = settings["signed"] == "timestamp.body"
    if timed and not settings["timestamp_header"]:
        raise NotConfigured("Timestamp header is required when the timestamp is signed")
    name = settings["header"]
    value = header(request, name)
    if settings["prefix"]:
        value = after_prefix(value, settings["prefix"], name)
    signature = decode(value, settings["encoding"], name)
    message = request.body
    if timed:
        ts_name = settings["timestamp_header"]
        stamp = header(request, ts_name)
        check_window(timestamp(stamp, ts_name), now, settings["tolerance"])
        message = stamp.encode("ascii") + b"." + request.body
    require_match(secret_keys(secrets), message, [signature], settings["algorithm"])


def _shared_secret(settings: dict[str, Any], secrets: tuple[str, ...], request: SignedRequest,
                   now: float) -> None:
    value = to_bytes(header(request, settings["header"]))
    results = [hmac.compare_digest(value, key) for key in secret_keys(secrets)]  # no short cut
    if not any(results):
        raise VerificationFailed("secret does not match")


def _basic_auth(settings: dict[str, Any], secrets: tuple[str, ...], request: SignedRequest,
                now: float) -> None:
    scheme, _, token = header(request, "Authorization").partition(" ")
    raw = unb64(token.strip()) if scheme.lower() == "basic" else None
    if raw is None or b":" not in raw:
        raise VerificationFailed("malformed Authorization header")
    username, _, password = raw.partition(b":")
    user_ok = hmac.compare_digest(username, to_bytes(settings["username"]))
    results = [hmac.compare_digest(password, key) for key in secret_keys(secrets)]  # no short cut
    password_ok = any(results)
    if not (user_ok and password_ok):
        raise VerificationFailed("credentials do not match")


def _opt(name: str, label: str, help: str, **kw: Any) -> Field:
    return Field(name, label, help=help, template=False, **kw)


HMAC = Verifier(
    key="hmac",
    label="Generic HMAC",
    help="Checks an HMAC signature header made with a shared secret, for senders without a preset: "
         "choose the header, algorithm, encoding, prefix and what is signed.",
    verify=_hmac,
    settings_fields=(
        _opt("header", "Signature header", "The request header that carries the signature.",
             required=True, placeholder="X-Signature"),
        _opt("algorithm", "Algorithm", "The hash the sender uses in its HMAC.", type="select",
             default="sha256", choices=tuple((a, a.upper().replace("SHA", "SHA-")) for a in ALGORITHMS)),
        _opt("encoding", "Encoding", "How the signature is written in the header.", type="select",
             default="hex", choices=(("hex", "Hexadecimal"), ("base64", "Base64"))),
        _opt("prefix", "Prefix", "Text before the signature in the header, if any.",
             placeholder="sha256="),
        _opt("signed", "Signed content", "What the sender signs: the raw body alone, or a timestamp "
             "header's value, a dot and the raw body.", type="select", default="body",
             choices=(("body", "Body"), ("timestamp.body", "Timestamp.Body"))),
        _opt("timestamp_header", "Timestamp header", "Header with the unix time in seconds; required "
             "when the timestamp is signed.", placeholder="X-Timestamp"),
        tolerance_field(),
    ),
    secret_label="Shared secret",
    secret_help="The secret both sides use as the HMAC key, exactly as the sender shows it.",
)

SHARED_SECRET = Verifier(
    key="shared_secret",
    label="Shared secret header",
    help="Accepts the request when a header carries the shared secret itself. Weaker than a "
         "signature (the body is not protected): use only over HTTPS.",
    verify=_shared_secret,
    settings_fields=(_opt("header", "Header", "The request header that carries the secret.",
                          required=True, default="X-Webhook-Secret"),),
    secret_label="Secret",
    secret_help="The exact value the sender puts in the header (printable ASCII).",
)

BASIC_AUTH = Verifier(
    key="basic_auth",
    label="HTTP Basic authentication",
    help="Accepts the request when its Authorization: Basic credentials match. The body is not "
         "protected: use only over HTTPS.",
    verify=_basic_auth,
    settings_fields=(_opt("username", "Username", "The user name the sender authenticates with.",
                          required=True),),
    secret_label="Password",
    secret_help="The password the sender authenticates with.",
)

VERIFIERS = (HMAC, SHARED_SECRET, BASIC_AUTH)
