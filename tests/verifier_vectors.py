"""Data for tests/test_verifiers.py: the providers' published signature examples, each with
its source, and independent signers (straight from each provider's description, sharing no
code with ``connectors.verifiers``) that build correctly signed requests for the attack tables.
Where a provider publishes no example, the vector is constructed here and says so."""
from __future__ import annotations

import base64
import hashlib
import hmac
from collections.abc import Callable
from urllib.parse import parse_qsl

# --- Published vectors --------------------------------------------------------------------

# https://docs.github.com/en/webhooks/using-webhooks/validating-webhook-deliveries
# ("Testing the webhook payload validation").
GITHUB = {
    "secret": "It's a Secret to Everybody",
    "body": b"Hello, World!",
    "signature": "sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17",
}

# https://api.slack.com/authentication/verifying-requests-from-slack (the worked example).
SLACK = {
    "secret": "8f742231b10e8888abcd99yyyzzz85a5",
    "timestamp": "1531420618",
    "body": (b"token=xyzz0WbapA4vBCDEFasx0q6G&team_id=T1DC2JH3J&team_domain=testteamnow"
             b"&channel_id=G8PSS9T3V&channel_name=foobar&user_id=U2CERLKJA&user_name=roadrunner"
             b"&command=%2Fwebhook-collect&text=&response_url=https%3A%2F%2Fhooks.slack.com%2Fcommands"
             b"%2FT1DC2JH3J%2F397700885554%2F96rGlfmibIGlgcZRskXaIFfN"
             b"&trigger_id=398738663015.47445629121.803a0bc887a14d10d2c447fce8b6703c"),
    "signature": "v0=a2114d57b48eac39b9ad189dd8316235a7b4a8d21a10bd27519666489c69b503",
}

# https://docs.svix.com/receiving/verifying-payloads/how-manual (the example the Standard
# Webhooks libraries also test against; same scheme, only the header names differ).
SVIX = {
    "secret": "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
    "id": "msg_p5jXN8AQM9LWM0D4loKWxJek",
    "timestamp": "1614265330",
    "body": b'{"test": 2432232314}',
    "signature": "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=",
}

TWILIO_URL = "https://mycompany.com/myapp.php?foo=1&bar=2"


def _twilio_params(number: str) -> dict[str, str]:
    return {"CallSid": "CA1234567890ABCDE", "Caller": number, "Digits": "1234", "From": number,
            "To": "+18005551212"}


# (source, form, signature) for auth token "12345" and TWILIO_URL.
TWILIO = [
    # https://www.twilio.com/docs/usage/webhooks/webhooks-security, current worked example.
    ("docs", _twilio_params("+12349013030"), "0/KCTR6DLpKmkAf8muzZqo1nDgQ="),
    # GvWf1cFY/… is the signature of the same example with Caller/From +14158675310, as an
    # earlier revision of that page printed it (quoted so by many projects). It does NOT belong
    # to the +12349013030 parameters: HMAC-SHA1 of those gives 0/KCTR6… above.
    ("docs-earlier", _twilio_params("+14158675310"), "GvWf1cFY/Q7PnoempGyD5oXAezc="),
    # twilio-python tests/unit/test_request_validator.py (the official SDK's own vector).
    ("sdk", _twilio_params("+14158675309"), "RSOYDt4T1cUTdK1PDd93/VVr8B8="),
]
TWILIO_SDK_PARAMS = _twilio_params("+14158675309")
# twilio-python: the same request signed over the URL with an explicit port / over http.
TWILIO_SDK_PORTS = [
    ("https://mycompany.com:1234/myapp.php?foo=1&bar=2", "RSOYDt4T1cUTdK1PDd93/VVr8B8="),
    (TWILIO_URL, "kvajT1Ptam85bY51eRf/AJRuM3w="),
    ("http://mycompany.com/myapp.php?foo=1&bar=2", "0ZXoZLH/DfblKGATFgpif+LLRf4="),
    ("http://mycompany.com:1234/myapp.php?foo=1&bar=2", "Zmvh+3yNM1Phv2jhDCwEM3q5ebU="),
]
# twilio-python: repeated form names (values sorted too), and a JSON body with bodySHA256.
TWILIO_SDK_DUPLICATES = ([("Sid", "CA123"), ("SidAccount", "AC123"), ("Digits", "5678"),
                          ("Digits", "1234")], "IK+Dwps556ElfBT0I3Rgjkr1wJU=")
TWILIO_SDK_BODY = {
    "body": b'{"property": "value", "boolean": true}',
    "url": TWILIO_URL + "&bodySHA256=0a1ff7634d9ab3b95db5c9a2dfe9416e41502b283a80c7cf19632632f96e6620",
    "signature": "a9nBmqA0ju/hNViExpshrM61xv4=",
}

# RFC 2202 §3 and RFC 4231 §4.3, test case 2 (key "Jefe"), for the generic HMAC's algorithms.
RFC_KEY, RFC_DATA = "Jefe", b"what do ya want for nothing?"
RFC_HMAC = {
    "sha1": "effcdf6ae5eb2fa2d27416d5f184df9c259a7c79",
    "sha256": "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843",
    "sha512": ("164b7a7bfcf819e2e395fbe73b56e0a387bd64222e831fd610270cd7ea250554"
               "9758bf75c05a994a6d034f65f8f0e6fdcaeab1a34d4a6b4b636e070a38bce737"),
}

# RFC 7617 §2: user "Aladdin", password "open sesame".
BASIC = {"username": "Aladdin", "password": "open sesame",
         "header": "Basic QWxhZGRpbjpvcGVuIHNlc2FtZQ=="}

# --- Constructed vectors (the provider publishes no example with a secret) ----------------
# Pinned outputs of HMAC-SHA256 computed once with Python's hmac, so a change in how we build
# the signed payload is caught.

STRIPE = {  # constructed: Stripe documents the scheme but publishes no secret + signature pair
    "secret": "whsec_test_secret",
    "timestamp": "1700000000",
    "body": b'{"id": "evt_test_webhook", "object": "event"}',
    "signature": "aafb6f8becb4b5db5da0da34d6fb419de5f0866d738651a835f821a8a96cf1f3",
}
SHOPIFY = {  # constructed
    "secret": "hush",
    "body": b'{"id": 820982911946154508, "email": "jon@example.com"}',
    "signature": "8oTAlJ0HtUEbJDFmjrpj7ILB73p0WlxjdkJwg509B48=",
}
TYPEFORM = {  # constructed
    "secret": "abc123",
    "body": b'{"event_id": "01H0000000000000000000000", "event_type": "form_response"}',
    "signature": "sha256=/vWPO24T5VQncRvB5Vd4EL7cQtVfPJuQiDxrxYVpHiY=",
}

# --- Independent signers: (secret, body, unix time) -> headers -----------------------------


def _mac(secret: str | bytes, message: bytes, algorithm: str = "sha256") -> bytes:
    key = secret.encode() if isinstance(secret, str) else secret
    return hmac.new(key, message, getattr(hashlib, algorithm)).digest()


def _b64(raw: bytes) -> str:
    return base64.b64encode(raw).decode()


def sign_github(secret: str, body: bytes, ts: int) -> dict[str, str]:
    return {"X-Hub-Signature-256": "sha256=" + _mac(secret, body).hex()}


def sign_shopify(secret: str, body: bytes, ts: int) -> dict[str, str]:
    return {"X-Shopify-Hmac-Sha256": _b64(_mac(secret, body))}


def sign_typeform(secret: str, body: bytes, ts: int) -> dict[str, str]:
    return {"Typeform-Signature": "sha256=" + _b64(_mac(secret, body))}


def sign_stripe(secret: str, body: bytes, ts: int) -> dict[str, str]:
    return {"Stripe-Signature": f"t={ts},v1={_mac(secret, f'{ts}.'.encode() + body).hex()},v0=00"}


def sign_slack(secret: str, body: bytes, ts: int) -> dict[str, str]:
    return {"X-Slack-Request-Timestamp": str(ts),
            "X-Slack-Signature": "v0=" + _mac(secret, f"v0:{ts}:".encode() + body).hex()}


def standard_signer(prefix: str) -> Callable[[str, bytes, int], dict[str, str]]:
    def sign(secret: str, body: bytes, ts: int) -> dict[str, str]:
        key = base64.b64decode(secret.removeprefix("whsec_"))
        sig = _b64(_mac(key, f"msg_1.{ts}.".encode() + body))
        return {f"{prefix}-id": "msg_1", f"{prefix}-timestamp": str(ts),
                f"{prefix}-signature": f"v1a,ignored v1,{sig}"}
    return sign


def sign_twilio(secret: str, body: bytes, ts: int, url: str = TWILIO_URL) -> dict[str, str]:
    """``body`` is application/x-www-form-urlencoded; the form fields are what Twilio signs."""
    data = url + "".join(k + v for k, v in sorted(parse_qsl(body.decode(), keep_blank_values=True)))
    return {"X-Twilio-Signature": _b64(_mac(secret, data.encode(), "sha1"))}


def sign_hmac(secret: str, body: bytes, ts: int) -> dict[str, str]:
    """For HMAC_SETTINGS: SHA-512, base64, prefix, timestamp.body."""
    return {"X-Timestamp": str(ts),
            "X-Signature": "sig=" + _b64(_mac(secret, f"{ts}.".encode() + body, "sha512"))}


HMAC_SETTINGS = {"header": "X-Signature", "algorithm": "sha512", "encoding": "base64", "prefix": "sig=",
                 "signed": "timestamp.body", "timestamp_header": "X-Timestamp", "tolerance": "300"}


def sign_shared_secret(secret: str, body: bytes, ts: int) -> dict[str, str]:
    return {"X-Webhook-Secret": secret}


def sign_basic_auth(secret: str, body: bytes, ts: int) -> dict[str, str]:
    return {"Authorization": "Basic " + _b64(f"robot:{secret}".encode())}
