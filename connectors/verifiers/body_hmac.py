"""Providers that sign only the raw body with HMAC-SHA256 and carry no timestamp:
GitHub (hex), Shopify (base64) and Typeform (base64). Without a timestamp there is no
replay window; deduplicate on the delivery id header instead."""
from __future__ import annotations

from typing import Any

from .core import SignedRequest, Verifier, VerifyFn, after_prefix, decode, header, require_match, secret_keys


def _body_hmac(name: str, prefix: str, encoding: str) -> VerifyFn:
    def verify(settings: dict[str, Any], secrets: tuple[str, ...], request: SignedRequest,
               now: float) -> None:
        value = header(request, name)
        if prefix:
            value = after_prefix(value, prefix, name)
        require_match(secret_keys(secrets), request.body, [decode(value, encoding, name)])
    return verify


GITHUB = Verifier(
    key="github",
    label="GitHub",
    help="Checks X-Hub-Signature-256: sha256=<hex HMAC-SHA256 of the body> made with the "
         "webhook's secret.",
    verify=_body_hmac("X-Hub-Signature-256", "sha256=", "hex"),
    secret_label="Webhook secret",
    secret_help="The Secret you typed in the repository's or organisation's webhook settings.",
    docs_url="https://docs.github.com/en/webhooks/using-webhooks/validating-webhook-deliveries",
)

SHOPIFY = Verifier(
    key="shopify",
    label="Shopify",
    help="Checks X-Shopify-Hmac-Sha256: the base64 HMAC-SHA256 of the body.",
    verify=_body_hmac("X-Shopify-Hmac-Sha256", "", "base64"),
    secret_label="Client secret",
    secret_help="The app's client secret (or, for webhooks made in the admin, the key shown "
                "under Settings > Notifications > Webhooks).",
    docs_url="https://shopify.dev/docs/apps/build/webhooks/subscribe/https#step-5-verify-the-webhook",
)

TYPEFORM = Verifier(
    key="typeform",
    label="Typeform",
    help="Checks Typeform-Signature: sha256=<base64 HMAC-SHA256 of the body>.",
    verify=_body_hmac("Typeform-Signature", "sha256=", "base64"),
    secret_label="Webhook secret",
    secret_help="The secret set on the form's webhook (Connect > Webhooks > Edit).",
    docs_url="https://www.typeform.com/developers/webhooks/secure-your-webhooks/",
)

VERIFIERS = (GITHUB, SHOPIFY, TYPEFORM)
