"""What must never reach the run history, logs or exports: credentials in headers, query
strings and URLs. Shared by the outbound client and the inbound endpoint."""
from __future__ import annotations

from collections.abc import Iterable, Mapping
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

REDACTED = "[redacted]"
_SECRET_HEADERS = frozenset({"authorization", "proxy-authorization", "cookie", "set-cookie", "x-api-key"})
_SECRET_HEADER_WORDS = ("token", "secret", "signature", "key", "password", "hmac")
_SECRET_PARAMS = frozenset({"key", "sig", "passwd", "pwd", "auth"})
_SECRET_PARAM_WORDS = ("token", "secret", "password", "signature", "api_key", "apikey")


def is_secret_header(name: str, extra: Iterable[str] = ()) -> bool:
    low = name.lower()
    if low in {e.lower() for e in extra}:
        return True
    if low.endswith("idempotency-key"):
        return False
    return low in _SECRET_HEADERS or any(word in low for word in _SECRET_HEADER_WORDS)


def _is_secret_param(name: str, extra: Iterable[str] = ()) -> bool:
    low = name.lower().replace("-", "_")
    return (low in _SECRET_PARAMS or low in {e.lower().replace("-", "_") for e in extra}
            or any(word in low for word in _SECRET_PARAM_WORDS) or low.endswith("_key"))


def redact_headers(headers: Mapping[str, str], secret_names: Iterable[str] = ()) -> dict[str, str]:
    """Copy of ``headers`` with credentials replaced by ``[redacted]``."""
    names = tuple(secret_names)
    return {k: REDACTED if is_secret_header(k, names) else str(v) for k, v in headers.items()}


def redact_url(url: str, secret_names: Iterable[str] = (), *, secret_path: bool = False) -> str:
    """``url`` without passwords and secret-looking query values (or without its path and
    query at all when ``secret_path``: a Slack webhook URL is itself the credential)."""
    parts = urlsplit(url)
    netloc = parts.netloc.rsplit("@", 1)[-1]
    netloc = f"{REDACTED}@{netloc}" if "@" in parts.netloc else netloc
    if secret_path:
        return urlunsplit((parts.scheme, netloc, f"/{REDACTED}" if parts.path.strip("/") else parts.path, "", ""))
    names = tuple(secret_names)
    pairs = [(k, REDACTED if _is_secret_param(k, names) else v)
             for k, v in parse_qsl(parts.query, keep_blank_values=True)]
    query = urlencode(pairs, safe="[]") if pairs else parts.query
    return urlunsplit((parts.scheme, netloc, parts.path, query, ""))
