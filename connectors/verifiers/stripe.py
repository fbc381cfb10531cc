"""Stripe: ``Stripe-Signature: t=<unix seconds>,v1=<hex>[,v1=<hex>…][,v0=…]``.

The signed payload is ``<t>.<raw body>``, HMAC-SHA256 with the endpoint's signing secret.
Several ``v1`` entries appear while Stripe rolls a secret; any may match. ``v0`` (test
mode legacy) and unknown schemes are ignored. https://docs.stripe.com/webhooks#verify-manually
"""
from __future__ import annotations

from typing import Any

from .core import (
    SignedRequest,
    VerificationFailed,
    Verifier,
    check_window,
    entries,
    header,
    require_match,
    secret_keys,
    timestamp,
    tolerance_field,
    unhex,
)

NAME = "Stripe-Signature"


def _verify(settings: dict[str, Any], secrets: tuple[str, ...], request: SignedRequest,
            now: float) -> None:
    stamp: str | None = None
    signatures: list[bytes] = []
    for item in entries(header(request, NAME), ",", NAME):
        scheme, eq, value = item.partition("=")
        scheme, value = scheme.strip(), value.strip()
        if not eq or not scheme or not value:
            raise VerificationFailed(f"malformed {NAME} header")
        if scheme == "t":
            if stamp is not None:
                raise VerificationFailed(f"malformed {NAME} header")
            stamp = value
        elif scheme == "v1" and (raw := unhex(value)) is not None:
            signatures.append(raw)
    if stamp is None:
        raise VerificationFailed(f"malformed {NAME} header")
    ts = timestamp(stamp, NAME)
    if not signatures:
        raise VerificationFailed(f"no v1 signature in {NAME} header")
    check_window(ts, now, settings["tolerance"])
    require_match(secret_keys(secrets), stamp.encode("ascii") + b"." + request.body, signatures)


STRIPE = Verifier(
    key="stripe",
    label="Stripe",
    help="Checks the Stripe-Signature header (timestamp plus v1 HMAC-SHA256 signatures) and "
         "refuses requests signed outside the tolerance window.",
    verify=_verify,
    settings_fields=(tolerance_field(),),
    secret_label="Signing secret",
    secret_help="The endpoint's signing secret (whsec_…) from Developers > Webhooks, or the one "
                "the Stripe CLI prints for stripe listen.",
    docs_url="https://docs.stripe.com/webhooks#verify-manually",
)

VERIFIERS = (STRIPE,)
