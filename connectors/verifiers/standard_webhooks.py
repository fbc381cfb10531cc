"""Standard Webhooks (https://www.standardwebhooks.com/, spec: github.com/standard-webhooks)
and Svix, which signs the same way under ``svix-*`` header names.

Signed content is ``<id>.<timestamp>.<raw body>``, HMAC-SHA256; the signature header holds
space-separated ``v1,<base64>`` entries (others, e.g. asymmetric ``v1a``, are ignored). The
secret is ``whsec_<base64 key>``; a secret without the prefix is tried both base64-decoded
(as the reference libraries do) and as raw text.
"""
from __future__ import annotations

from typing import Any

from .core import (
    NotConfigured,
    SignedRequest,
    VerificationFailed,
    Verifier,
    VerifyFn,
    check_window,
    entries,
    header,
    require_match,
    timestamp,
    to_bytes,
    tolerance_field,
    unb64,
)

PREFIX = "whsec_"


def signing_keys(secrets: tuple[str, ...]) -> list[bytes]:
    keys: list[bytes] = []
    for secret in secrets:
        if secret.startswith(PREFIX):
            if (raw := unb64(secret[len(PREFIX):])) is not None:
                keys.append(raw)
            continue
        if (raw := unb64(secret)) is not None:
            keys.append(raw)
        keys.append(to_bytes(secret))
    if not keys:
        raise NotConfigured("the secret after whsec_ is not valid base64")
    return keys


def _scheme(prefix: str) -> VerifyFn:
    id_name, ts_name, sig_name = f"{prefix}-id", f"{prefix}-timestamp", f"{prefix}-signature"

    def verify(settings: dict[str, Any], secrets: tuple[str, ...], request: SignedRequest,
               now: float) -> None:
        msg_id = header(request, id_name)
        stamp = header(request, ts_name)
        ts = timestamp(stamp, ts_name)
        signatures: list[bytes] = []
        for entry in entries(header(request, sig_name), None, sig_name):
            version, comma, value = entry.partition(",")
            if not comma or not version or not value:
                raise VerificationFailed(f"malformed {sig_name} header")
            if version == "v1" and (raw := unb64(value)) is not None:
                signatures.append(raw)
        if not signatures:
            raise VerificationFailed(f"no v1 signature in {sig_name} header")
        check_window(ts, now, settings["tolerance"])
        message = to_bytes(f"{msg_id}.{stamp}.") + request.body
        require_match(signing_keys(secrets), message, signatures)
    return verify


_SECRET_HELP = "The endpoint's signing secret, usually starting with whsec_."

STANDARD_WEBHOOKS = Verifier(
    key="standard_webhooks",
    label="Standard Webhooks",
    help="Checks webhook-id, webhook-timestamp and webhook-signature as the Standard Webhooks "
         "spec defines them (used by many providers), with a replay window.",
    verify=_scheme("webhook"),
    settings_fields=(tolerance_field(),),
    secret_help=_SECRET_HELP,
    docs_url="https://github.com/standard-webhooks/standard-webhooks/blob/main/spec/standard-webhooks.md",
)

SVIX = Verifier(
    key="svix",
    label="Svix",
    help="Checks svix-id, svix-timestamp and svix-signature (Svix and the providers that send "
         "through it, e.g. Clerk and Resend), with a replay window.",
    verify=_scheme("svix"),
    settings_fields=(tolerance_field(),),
    secret_help=_SECRET_HELP,
    docs_url="https://docs.svix.com/receiving/verifying-payloads/how-manual",
)

VERIFIERS = (STANDARD_WEBHOOKS, SVIX)
