"""What every inbound signature verifier shares: the request it sees, how a preset is
declared, the one exception it raises, and small parsers that fail closed.

Every check works on the RAW body bytes and compares with :func:`hmac.compare_digest`.
Header values are refused unparsed when empty, non-ASCII or longer than ``MAX_HEADER``;
at most ``MAX_ENTRIES`` comma- or space-separated entries are parsed from one header.
"""
from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from ..base import Field

MAX_HEADER = 8 * 1024
MAX_ENTRIES = 20
DEFAULT_TOLERANCE = 300
MAX_TOLERANCE = 86_400
ALGORITHMS: dict[str, Callable[..., Any]] = {
    "sha1": hashlib.sha1, "sha256": hashlib.sha256, "sha512": hashlib.sha512,
}
_HEX = re.compile(r"(?:[0-9a-fA-F]{2})+")
_TIMESTAMP = re.compile(r"[0-9]{1,15}")


class VerificationFailed(Exception):
    """The request is not proven to come from its sender. ``reason`` is short and safe to
    show and log: it never contains a secret or a received header value."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class NotConfigured(VerificationFailed):
    """The recipe's verifier lacks a setting or a secret: every request fails until fixed."""

    def __init__(self, detail: str) -> None:
        super().__init__(f"verifier not configured: {detail}")


def _text(value: Any) -> str:
    return value.decode("latin-1") if isinstance(value, bytes | bytearray) else str(value)


@dataclass
class SignedRequest:
    """An inbound request as the sender made it. ``url`` is the full URL the sender called
    (scheme, host, path, query); ``form`` the parsed form fields (Twilio signs those)."""

    method: str
    url: str
    headers: Mapping[str, Any]
    body: bytes = b""
    form: Mapping[str, str | list[str]] = field(default_factory=dict)
    remote_addr: str = ""

    def __post_init__(self) -> None:
        self.headers = {str(k).lower(): _text(v) for k, v in self.headers.items()}

    def header(self, name: str) -> str | None:
        return self.headers.get(name.lower())


# A preset's check: resolved settings, 1–2 active secrets, the request, the clock (epoch s).
VerifyFn = Callable[[dict[str, Any], tuple[str, ...], SignedRequest, float], None]


@dataclass(frozen=True)
class Verifier:
    """One preset, declared once: the recipe form, its validation and the docs read this."""

    key: str
    label: str
    help: str
    verify: VerifyFn
    settings_fields: tuple[Field, ...] = ()
    secret_label: str = "Signing secret"
    secret_help: str = ""
    docs_url: str = ""

    @property
    def secret_field(self) -> Field:
        return Field("secret", self.secret_label, required=True, help=self.secret_help,
                     template=False, secret=True)


def tolerance_field(default: int = DEFAULT_TOLERANCE) -> Field:
    return Field("tolerance", "Tolerance (seconds)", type="number", default=default, template=False,
                 help="Refuse requests whose signed timestamp is further than this from our clock, "
                      f"in the past or the future (replay protection; 1 to {MAX_TOLERANCE}).")


def to_bytes(text: str) -> bytes:
    """UTF-8, never raising (a lone surrogate is encoded as is and simply never matches)."""
    return text.encode("utf-8", "surrogatepass")


def header(request: SignedRequest, name: str) -> str:
    """The stripped value of header ``name``; missing or malformed → VerificationFailed."""
    value = request.header(name)
    if value is None:
        raise VerificationFailed(f"missing {name} header")
    if len(value) > MAX_HEADER or not value.isascii() or not value.strip():
        raise VerificationFailed(f"malformed {name} header")
    return value.strip()


def after_prefix(value: str, prefix: str, name: str) -> str:
    """``value`` without ``prefix`` (compared case-insensitively); nothing after it is malformed."""
    if len(value) <= len(prefix) or value[:len(prefix)].lower() != prefix.lower():
        raise VerificationFailed(f"malformed {name} header")
    return value[len(prefix):]


def entries(value: str, sep: str | None, name: str) -> list[str]:
    """Non-empty entries of a list header (``sep=None``: any whitespace), at most MAX_ENTRIES."""
    parts = value.split(sep, MAX_ENTRIES)
    if len(parts) > MAX_ENTRIES:
        raise VerificationFailed(f"too many entries in {name} header")
    return [p.strip() for p in parts if p.strip()]


def timestamp(value: str, name: str) -> int:
    """Whole seconds since the epoch, ASCII digits only."""
    if not _TIMESTAMP.fullmatch(value):
        raise VerificationFailed(f"malformed {name} header")
    return int(value)


def check_window(ts: int, now: float, tolerance: int) -> None:
    if abs(now - ts) > tolerance:
        raise VerificationFailed(f"timestamp outside the {tolerance} s window")


def unhex(text: str) -> bytes | None:
    return bytes.fromhex(text) if _HEX.fullmatch(text) else None


def unb64(text: str) -> bytes | None:
    try:
        return base64.b64decode(text, validate=True) or None
    except (binascii.Error, ValueError):
        return None


def decode(text: str, encoding: str, name: str) -> bytes:
    raw = unhex(text) if encoding == "hex" else unb64(text)
    if raw is None:
        raise VerificationFailed(f"malformed {name} header")
    return raw


def secret_keys(secrets: Iterable[str]) -> list[bytes]:
    return [to_bytes(s) for s in secrets]


def any_match(keys: Iterable[bytes], messages: Iterable[bytes], signatures: Iterable[bytes],
              algorithm: str = "sha256") -> bool:
    """Whether HMAC(key, message) equals one of ``signatures`` for any key and message."""
    digestmod = ALGORITHMS[algorithm]
    msgs, sigs = list(messages), list(signatures)
    found = False
    for key in keys:
        for message in msgs:
            digest = hmac.new(key, message, digestmod).digest()
            for sig in sigs:
                found |= hmac.compare_digest(digest, sig)
    return found


def require_match(keys: Iterable[bytes], message: bytes, signatures: Iterable[bytes],
                  algorithm: str = "sha256") -> None:
    if not any_match(keys, [message], signatures, algorithm):
        raise VerificationFailed("signature does not match")
