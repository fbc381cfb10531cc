"""What must never reach the run history, logs or exports: credentials in headers, query
strings and URLs. Shared by the outbound client and the inbound endpoint; ``redact_text``
applies the same rules to free text (log lines, error messages) for the log filter."""
from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from functools import lru_cache
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

REDACTED = "[redacted]"
_SECRET_HEADERS = frozenset({"authorization", "proxy-authorization", "cookie", "set-cookie", "x-api-key"})
_SECRET_HEADER_WORDS = ("token", "secret", "signature", "key", "password", "hmac")
_SECRET_PARAMS = frozenset({"key", "sig", "passwd", "pwd", "auth"})
_SECRET_PARAM_WORDS = ("token", "secret", "password", "signature", "api_key", "apikey")


def is_secret_header(name: str, extra: Iterable[str] = ()) -> bool:
    low = name.lower()
    if extra and low in {e.lower() for e in extra}:
        return True
    return _secret_header_name(low)


@lru_cache(maxsize=4096)
def _secret_header_name(low: str) -> bool:
    """By the name alone (lower case); remembered, as every step redacts the same few names."""
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
    query at all when ``secret_path``: a Slack webhook URL is itself the credential). A URL
    too broken to split is shown as scheme and host only, through the free-text rules."""
    try:
        parts = urlsplit(url)
    except ValueError:  # e.g. "http://[::1/x": say what it was without what it carried
        head = re.split(r"[/?#]", url.split("://", 1)[-1], maxsplit=1)[0]
        scheme = url.split("://", 1)[0] if "://" in url else ""
        return redact_text(f"{scheme}://{head}/{REDACTED}" if scheme else REDACTED)
    netloc = parts.netloc.rsplit("@", 1)[-1]
    netloc = f"{REDACTED}@{netloc}" if "@" in parts.netloc else netloc
    if secret_path:
        return urlunsplit((parts.scheme, netloc, f"/{REDACTED}" if parts.path.strip("/") else parts.path, "", ""))
    names = tuple(secret_names)
    pairs = [(k, REDACTED if _is_secret_param(k, names) else v)
             for k, v in parse_qsl(parts.query, keep_blank_values=True)]
    query = urlencode(pairs, safe="[]") if pairs else parts.query
    return urlunsplit((parts.scheme, netloc, parts.path, query, ""))



# --- free text: log lines, exception messages, parser errors -----------------------------
# Each rule keeps enough to be useful (which header, which parameter, which host) and drops
# the credential. Incoming-webhook URLs of chat services carry the secret in the path.
_NAME_WORDS = frozenset({"token", "secret", "password", "passwd", "signature", "apikey", "api_key"})
_USERINFO = re.compile(r"(\b[A-Za-z][A-Za-z0-9+.\-]*://)[^/\s@'\"<>?#]+@")
_WEBHOOK_HOSTS = re.compile(
    r"(\b(?:hooks\.slack(?:-gov)?\.com|[\w-]+\.webhook\.office\.com|outlook\.office(?:365)?\.com/webhook"
    r"|(?:(?:canary|ptb)\.)?discord(?:app)?\.com/api(?:/v\d+)?/webhooks)(?::\d+)?)/[^\s'\"<>]+", re.IGNORECASE)
_WEBHOOK_PATHS = re.compile(
    r"(/services)/T[A-Z0-9]+/B[A-Z0-9]+/[^\s'\"<>?#]+"          # Slack
    r"|(/api(?:/v\d+)?/webhooks)/\d+/[^\s'\"<>?#]+"              # Discord
    r"|(/webhookb2|/IncomingWebhook)/[^\s'\"<>?#]+")              # Microsoft Teams
_HOOK_TOKEN = re.compile(r"(/hooks/[\w-]{4})[\w-]+(?:/[^\s'\"<>?#]*)?")  # Hookline, Mattermost, Zapier
_LABEL = re.compile(r"(?<![\w-])([A-Za-z][\w-]*)[\"']?[ \t]*:[ \t]*[\"']?")  # Authorization: / "token": '
_LABEL_VALUE_END = re.compile(r"[\"'\r\n]")
_AUTH_SCHEME = re.compile(r"\b(Bearer|Basic|Digest|Negotiate|NTLM)(\s+)(?=[\w.~+/=-]*[A-Z0-9+/=])[\w.~+/=-]{6,}")
_PARAM = re.compile(r"(?<![\w.%-])([A-Za-z_][\w.\[\]-]*)=([^&\s'\"<>,;)]+)")
_SMTP_AUTH = re.compile(r"\b(AUTH\s+(?:PLAIN|LOGIN|XOAUTH2|OAUTHBEARER|CRAM-MD5|NTLM|GSSAPI))\s+[A-Za-z0-9+/=]+",
                        re.IGNORECASE)


def _secret_label(name: str) -> bool:
    """A header-like label (``Authorization:``, ``"token":``) whose value is a credential.
    Plain words need to be exact secret words: "key: …" in prose is not worth hiding."""
    low = name.lower()
    if low in _SECRET_HEADERS or low.replace("-", "_") in _NAME_WORDS:
        return True
    return ("-" in low or "_" in low) and is_secret_header(low)


def _redact_labels(text: str) -> str:
    """Values after secret labels, up to the closing quote or the end of the line. Labels
    are found anywhere (also inside another label's value: "ValueError: x-api-key: …")."""
    out: list[str] = []
    pos = 0
    for m in _LABEL.finditer(text):
        if m.start() < pos or not _secret_label(m.group(1)):
            continue
        end_match = _LABEL_VALUE_END.search(text, m.end())
        end = end_match.start() if end_match else len(text)
        value = text[m.end():end]
        if not value.strip() or value.startswith(REDACTED):
            continue
        out += [text[pos:m.end()], REDACTED]
        pos = end
    return "".join(out) + text[pos:] if out else text


def redact_text(text: str, secret_names: Iterable[str] = ()) -> str:
    """``text`` without the credentials that can be recognised by their shape: passwords in
    URLs, secret query parameters (and ``secret_names``), Authorization/Cookie/signature
    header values, chat incoming-webhook paths, inbound tokens after ``/hooks/`` (first 4
    characters kept) and SMTP AUTH lines. Values with no recognisable shape (a bare API
    key in an exception message) need :func:`redact_values`."""
    if not text:
        return text
    names = tuple(secret_names)
    low = text.lower()  # cheap substring checks first: most log lines hold none of these
    if "@" in text and "://" in text:
        text = _USERINFO.sub(rf"\1{REDACTED}@", text)
    if any(word in low for word in ("slack", "webhook", "discord")):
        text = _WEBHOOK_HOSTS.sub(rf"\1/{REDACTED}", text)
    if any(word in low for word in ("/services/", "/webhooks/", "/webhookb2/", "/incomingwebhook/")):
        text = _WEBHOOK_PATHS.sub(lambda m: f"{m.group(1) or m.group(2) or m.group(3)}/{REDACTED}", text)
    if "/hooks/" in text:
        text = _HOOK_TOKEN.sub("\\1…", text)
    if ":" in text:
        text = _redact_labels(text)
    text = _AUTH_SCHEME.sub(rf"\1\2{REDACTED}", text)
    if "=" in text:
        text = _PARAM.sub(lambda m: f"{m.group(1)}={REDACTED}" if _is_secret_param(m.group(1), names)
                          and not m.group(2).startswith(REDACTED) else m.group(0), text)
    return _SMTP_AUTH.sub(rf"\1 {REDACTED}", text) if "auth" in low else text


def redact_values(value: Any, secrets: Iterable[str]) -> Any:
    """``value`` with every occurrence of each secret string replaced, inside dicts and lists
    too (longest first; strings under 4 characters are not secrets worth the false hits).
    For secrets with no recognisable shape: a connection's values, a key a receiver echoed."""
    needles = sorted({s for s in secrets if isinstance(s, str) and len(s) >= 4}, key=len, reverse=True)
    if not needles:
        return value
    return _walk(value, needles)


def _walk(value: Any, needles: list[str]) -> Any:
    if isinstance(value, str):
        for n in needles:
            if n in value:
                value = value.replace(n, REDACTED)
        return value
    if isinstance(value, dict):
        return {k: _walk(v, needles) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_walk(v, needles) for v in value]
    return value
