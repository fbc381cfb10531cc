"""Slack: ``X-Slack-Signature: v0=<hex>`` over ``v0:<X-Slack-Request-Timestamp>:<raw body>``,
HMAC-SHA256 with the app's signing secret; Slack asks to refuse timestamps more than five
minutes away. https://api.slack.com/authentication/verifying-requests-from-slack
"""
from __future__ import annotations

from typing import Any

from .core import (
    SignedRequest,
    Verifier,
    after_prefix,
    check_window,
    decode,
    header,
    require_match,
    secret_keys,
    timestamp,
    tolerance_field,
)

SIGNATURE = "X-Slack-Signature"
TIMESTAMP = "X-Slack-Request-Timestamp"


def _verify(settings: dict[str, Any], secrets: tuple[str, ...], request: SignedRequest,
            now: float) -> None:
    stamp = header(request, TIMESTAMP)
    ts = timestamp(stamp, TIMESTAMP)
    signature = decode(after_prefix(header(request, SIGNATURE), "v0=", SIGNATURE), "hex", SIGNATURE)
    check_window(ts, now, settings["tolerance"])
    message = b"v0:" + stamp.encode("ascii") + b":" + request.body
    require_match(secret_keys(secrets), message, [signature])


SLACK = Verifier(
    key="slack",
    label="Slack",
    help="Checks X-Slack-Signature (v0 HMAC-SHA256 over the timestamp and body) and refuses "
         "requests signed outside the tolerance window.",
    verify=_verify,
    settings_fields=(tolerance_field(),),
    secret_label="Signing secret",
    secret_help="The app's Signing Secret (Basic Information > App Credentials), not the "
                "deprecated verification token.",
    docs_url="https://api.slack.com/authentication/verifying-requests-from-slack",
)

VERIFIERS = (SLACK,)
