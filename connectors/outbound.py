"""The one HTTP client every connector uses. Recipes let users aim requests at any URL, so
the server must never become a proxy into its own network: every hop is resolved and every
resolved address must be public (or allowlisted), and the connection goes to exactly the
address that was checked (no DNS rebinding) while Host, TLS SNI and certificate checks keep
the hostname. Oversized responses fail ("response too large") instead of being truncated:
a cut JSON body would silently feed garbage to later steps.
"""
from __future__ import annotations

import json as jsonlib
import re
import socket
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from http import HTTPStatus
from http.cookiejar import DefaultCookiePolicy
from typing import Any
from urllib.parse import parse_qsl, urljoin, urlsplit

import requests
from requests.structures import CaseInsensitiveDict

from .base import ConnectorError, PermanentError, RetryableError
from .destinations import (  # noqa: F401 - re-exported: the client's public surface
    ALLOWLIST_SETTING,
    Allowlist,
    DestinationNotAllowed,
    PinnedAdapter,
    address_problem,
    check_destination,
    check_scheme,
)
from .redaction import REDACTED, is_secret_header, redact_headers, redact_text, redact_url

MAX_REDIRECTS = 5
SUMMARY_LIMIT = 4096
_REDIRECTS = (301, 302, 303, 307, 308)
_CHARSET = re.compile(r"""charset\s*=\s*("[^"]*"|'[^']*'|[^;\s]+)""", re.IGNORECASE)
_SUMMARY_HEADERS = frozenset({"content-type", "content-length", "content-encoding", "location", "retry-after",
                              "date", "etag", "last-modified", "x-request-id", "request-id", "x-correlation-id"})


def _clip(text: str, limit: int = SUMMARY_LIMIT) -> str:
    return text if len(text) <= limit else f"{text[:limit]}… [{len(text) - limit} more characters]"


def _body_summary(json: Any, data: Any) -> Any:
    if json is not None:
        text = jsonlib.dumps(json, default=str)
        return json if len(text) <= SUMMARY_LIMIT else _clip(text)
    if isinstance(data, bytes):
        data = data.decode("utf-8", "replace")
    return _clip(data) if isinstance(data, str) else data


# --- responses and errors -----------------------------------------------------------------

@dataclass
class OutboundResponse:
    """A fully read response (after redirects). ``request`` is the redacted summary of what
    was sent, for the run history."""

    status: int
    headers: CaseInsensitiveDict
    body: bytes
    url: str
    elapsed_ms: int
    request: dict[str, Any] = field(default_factory=dict)

    @property
    def content_type(self) -> str:
        return (self.headers.get("Content-Type") or "").split(";", 1)[0].strip().lower()

    @property
    def text(self) -> str:
        match = _CHARSET.search(self.headers.get("Content-Type") or "")
        try:
            return self.body.decode(match.group(1).strip('"\'') if match else "utf-8", "replace")
        except LookupError:  # a charset Python does not know
            return self.body.decode("utf-8", "replace")

    @property
    def is_json(self) -> bool:
        return self.content_type.endswith("/json") or self.content_type.endswith("+json")

    def json(self) -> Any:
        return jsonlib.loads(self.body)

    def parsed_body(self) -> Any:
        """JSON-decoded body when the server says (and sends) JSON, else the text."""
        if self.is_json and self.body.strip():
            try:
                return self.json()
            except ValueError:
                pass
        return self.text

    def summary(self, limit: int = SUMMARY_LIMIT) -> dict[str, Any]:
        """Status, a safe subset of headers and the body (JSON-decoded when JSON and short)."""
        headers = {k: v for k, v in self.headers.items()
                   if k.lower() in _SUMMARY_HEADERS or "ratelimit" in k.lower()}
        out: dict[str, Any] = {"status": self.status, "headers": headers}
        if len(self.body) <= limit:
            out["body"] = self.parsed_body()
        else:
            out["body"] = self.body[:limit].decode("utf-8", "replace")
            out["body_truncated"] = True
            out["body_bytes"] = len(self.body)
        return out


def retry_hint(value: str | None) -> float | datetime | None:
    """A Retry-After value as seconds (delta-seconds) or as the absolute instant it names
    (HTTP-date, aware UTC), so the runner measures a date against its own clock; None when
    absent or unparseable (a negative number is unparseable)."""
    value = (value or "").strip()
    if not value:
        return None
    if re.fullmatch(r"\d+(\.\d+)?", value):
        return float(value)
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    return when.replace(tzinfo=UTC) if when.tzinfo is None else when.astimezone(UTC)


def parse_retry_after(value: str | None, now: datetime | None = None) -> float | None:
    """Seconds to wait from a Retry-After value, clamped to 1 s .. 6 h; None when absent or
    unparseable."""
    hint = retry_hint(value)
    if hint is None:
        return None
    seconds = (hint - (now or datetime.now(UTC))).total_seconds() if isinstance(hint, datetime) else hint
    return min(max(seconds, 1.0), 6 * 3600.0)


def raise_for_status(resp: OutboundResponse, request_summary: dict[str, Any] | None = None) -> None:
    """2xx/3xx pass; 408, 425, 429 and 5xx → RetryableError (with Retry-After); other 4xx →
    PermanentError. The message carries the status and a short body excerpt."""
    if resp.status < 400:
        return
    try:
        phrase = HTTPStatus(resp.status).phrase
    except ValueError:
        phrase = ""
    excerpt = " ".join(resp.text[:300].split())[:200]
    message = f"HTTP {resp.status} {phrase}".rstrip() + (f": {excerpt}" if excerpt else "")
    kw: dict[str, Any] = {"response": resp.summary(),
                          "request": request_summary if request_summary is not None else resp.request}
    if resp.status in (408, 425, 429) or resp.status >= 500:
        raise RetryableError(message, retry_after=retry_hint(resp.headers.get("Retry-After")), **kw)
    raise PermanentError(message, **kw)


def _root_cause(exc: BaseException) -> BaseException:
    seen: set[int] = set()
    while id(exc) not in seen:
        seen.add(id(exc))
        nxt = (getattr(exc, "reason", None) if isinstance(getattr(exc, "reason", None), BaseException)
               else exc.__cause__ or (exc.args[0] if exc.args and isinstance(exc.args[0], BaseException)
                                      else exc.__context__))
        if nxt is None:
            break
        exc = nxt
    return exc


def _scrubber(url: str, request: Mapping[str, Any]) -> Callable[[str], str]:
    """Exception texts quote what was sent (a receiver that echoes the request line, a URL
    the parser refused): replace ``url`` and its path/query with what the run history shows
    (``request["url"]``: secret parameters masked, the whole path when it is the secret) and
    redact whatever else looks like a credential."""
    shown_path, _, shown_query = _target(str(request.get("url") or "")).partition("?")
    names = tuple(k for k, v in parse_qsl(shown_query, keep_blank_values=True) if v == REDACTED)
    secret_path = shown_path == f"/{REDACTED}"
    safe_url = redact_url(url, names, secret_path=secret_path)
    pairs = [(url, safe_url)]
    target, safe_target = _target(url), _target(safe_url)
    if len(target) > 1 and target != safe_target:
        pairs.append((target, safe_target))
    path = target.partition("?")[0]
    if secret_path and len(path) > 1:
        pairs.append((path, f"/{REDACTED}"))

    def scrub(text: str) -> str:
        for secret, shown_as in pairs:
            text = text.replace(secret, shown_as)
        return redact_text(text, names)
    return scrub


def _target(url: str) -> str:
    """Path and query of ``url`` (its request line's target), without parsing the netloc: a
    redacted one ("[redacted]@host") reads as a bad IPv6 literal to ``urlsplit``."""
    rest = url.split("#", 1)[0].split("://", 1)[-1]
    slash = rest.find("/")
    return rest[slash:] if slash >= 0 else ""


def _header_problem(exc: Exception, request: Mapping[str, Any]) -> str:
    """requests quotes the offending header value, which is usually a pasted credential:
    name the header when it is not a secret one, never show the value."""
    if "header name" in str(exc):
        return "invalid request: a header name contains whitespace, a line break or another reserved character"
    bad = [k for k, v in (request.get("headers") or {}).items()
           if isinstance(v, str) and v != REDACTED and not _VALID_HEADER_VALUE.match(v)]
    which = f"the value of header {', '.join(bad)}" if bad else "a header value (a credential, not shown)"
    return (f"invalid request: {which} starts with whitespace, contains a line break or is not text; "
            "check for a pasted line break or space")


_VALID_HEADER_VALUE = re.compile(r"^\S[^\r\n]*$|^$")


def _network_error(exc: Exception, url: str, timeout: float, request: dict[str, Any]) -> Exception:
    parts = urlsplit(url)
    where = f"{parts.hostname}:{parts.port or (443 if parts.scheme == 'https' else 80)}"
    safe = _scrubber(url, request)
    if isinstance(exc, requests.exceptions.InvalidHeader):
        return PermanentError(_header_problem(exc, request), request=request)
    if isinstance(exc, (requests.exceptions.InvalidURL, requests.exceptions.MissingSchema,
                        requests.exceptions.InvalidSchema)):
        return PermanentError(f"invalid request: {safe(str(exc))}", request=request)
    if isinstance(exc, requests.exceptions.ContentDecodingError):
        return PermanentError(f"could not decode the response from {where}: {safe(str(_root_cause(exc)))}",
                              request=request)
    if isinstance(exc, requests.Timeout) or isinstance(_root_cause(exc), (TimeoutError, socket.timeout)):
        return RetryableError(f"timed out after {timeout:g} s talking to {where}", request=request)
    cause = _root_cause(exc)
    if isinstance(exc, requests.exceptions.SSLError):
        if "CERTIFICATE_VERIFY_FAILED" in str(exc) or "match" in str(cause):
            return PermanentError(f"TLS certificate of {where} could not be verified: {safe(str(cause))}",
                                  request=request)
        return RetryableError(f"TLS error talking to {where}: {safe(str(cause))}", request=request)
    if isinstance(cause, ConnectionRefusedError):
        return RetryableError(f"connection refused by {where}", request=request)
    if isinstance(cause, ConnectionResetError):
        return RetryableError(f"connection reset by {where}", request=request)
    return RetryableError(f"network error talking to {where}: {safe(str(cause))}", request=request)


# --- the client ---------------------------------------------------------------------------

class OutboundClient:
    """Thread-safe: one ``requests.Session`` (environment proxies and .netrc ignored, no
    cookie jar shared between runs) with a connection pool sized for ``pool_size`` threads.
    ``timeout`` is both the connect/read timeout and the deadline for the whole exchange,
    redirects and body included. ``verify`` is True, False or a CA bundle path."""

    def __init__(self, allowlist: Sequence[str] | str = (), timeout: float = 30.0,
                 max_response_bytes: int = 5 * 1024 * 1024, user_agent: str = "Hookline/0.1",
                 verify: bool | str = True, pool_size: int = 32) -> None:
        self.allowlist = Allowlist(allowlist)
        self.timeout = timeout
        self.max_response_bytes = max_response_bytes
        self.session = requests.Session()
        self.session.trust_env = False
        self.session.verify = verify
        self.session.headers["User-Agent"] = user_agent
        self.session.cookies.set_policy(DefaultCookiePolicy(allowed_domains=[]))
        adapter = PinnedAdapter(self.allowlist, pool_size)
        self.session.mount("http://", adapter)
        self.session.mount("https://", adapter)

    def close(self) -> None:
        self.session.close()

    def describe_request(self, method: str, url: str, *, headers: Mapping[str, str] | None = None,
                         params: Any = None, json: Any = None, data: Any = None, auth: Any = None,
                         secret_names: Iterable[str] = (), secret_url: bool = False) -> dict[str, Any]:
        """Redacted summary of the request as it would be sent (session headers included)."""
        prep = self._prepare(method.upper(), url, dict(headers or {}), params, json, data, auth)
        return self._describe(prep, method, url, headers, json, data, tuple(secret_names), secret_url)

    def _prepare(self, method: str, url: str, headers: dict[str, str], params: Any, json: Any, data: Any,
                 auth: Any) -> requests.PreparedRequest | None:
        try:
            return self.session.prepare_request(requests.Request(
                method, url, headers=headers, params=params, json=json, data=data, auth=auth))
        except (requests.RequestException, ValueError, TypeError):  # described anyway; sending fails clearly
            return None

    def _describe(self, prep: requests.PreparedRequest | None, method: str, url: str,
                  headers: Mapping[str, str] | None, json: Any, data: Any, names: tuple[str, ...],
                  secret_url: bool) -> dict[str, Any]:
        if prep is not None:
            url, sent = prep.url or url, dict(prep.headers)
        else:
            sent = {**self.session.headers, **(headers or {})}
        out: dict[str, Any] = {"method": method.upper(), "url": redact_url(url, names, secret_path=secret_url),
                               "headers": redact_headers(sent, names)}
        body = _body_summary(json, data)
        if body is not None:
            out["body"] = body
        return out

    def request(self, method: str, url: str, *, headers: Mapping[str, str] | None = None, params: Any = None,
                json: Any = None, data: Any = None, auth: Any = None, secret_names: Iterable[str] = (),
                secret_url: bool = False) -> OutboundResponse:
        """Send one request, following up to 5 redirects by hand (each hop re-checked; 303 and
        POST-after-301/302 become GET; credentials dropped when the host changes). Network
        trouble → RetryableError; a refused destination → DestinationNotAllowed."""
        started = time.monotonic()
        deadline = started + self.timeout
        names = tuple(secret_names)
        method, hdrs = method.upper(), dict(headers or {})
        prep = self._prepare(method, url, hdrs, params, json, data, auth)  # prepared once: sent and described
        summary = self._describe(prep, method, url, headers, json, data, names, secret_url)
        for _hop in range(MAX_REDIRECTS + 1):
            check_scheme(url)
            raw = self._send(method, url, hdrs, params, json, data, auth, deadline, summary, prep)
            prep = None
            location = raw.headers.get("Location") if raw.status_code in _REDIRECTS else None
            if not location:
                body = self._read_body(raw, deadline, summary)
                return OutboundResponse(raw.status_code, raw.headers, body, raw.url,
                                        int((time.monotonic() - started) * 1000), summary)
            raw.close()
            next_url = urljoin(raw.url, location)
            if raw.status_code == 303 and method != "HEAD" or raw.status_code in (301, 302) and method == "POST":
                method, json, data = "GET", None, None
                hdrs = {k: v for k, v in hdrs.items() if k.lower() not in ("content-type", "content-length")}
            if _origin_changes(url, next_url):
                hdrs = {k: v for k, v in hdrs.items() if not is_secret_header(k, names)}
                auth = None
            url, params = next_url, None
        raise PermanentError(f"too many redirects (more than {MAX_REDIRECTS})", request=summary)

    def _send(self, method: str, url: str, headers: dict[str, str], params: Any, json: Any, data: Any,
              auth: Any, deadline: float, summary: dict[str, Any],
              prep: requests.PreparedRequest | None = None) -> requests.Response:
        left = deadline - time.monotonic()
        if left <= 0:
            raise RetryableError(f"timed out after {self.timeout:g} s", request=summary)
        try:
            if prep is None:
                prep = self.session.prepare_request(requests.Request(
                    method, url, headers=headers, params=params, json=json, data=data, auth=auth))
            return self.session.send(prep, stream=True, timeout=(left, left), allow_redirects=False)
        except ConnectorError as exc:  # the adapter's destination check
            exc.request = exc.request or summary
            raise
        except requests.RequestException as exc:
            raise _network_error(exc, url, self.timeout, summary) from exc

    def _read_body(self, raw: requests.Response, deadline: float, summary: dict[str, Any]) -> bytes:
        """Stream the body, shrinking the socket timeout to what is left of the deadline
        before every read, so a server trickling bytes cannot hold a worker past it."""
        cap = self.max_response_bytes
        too_large = PermanentError(
            f"response too large: more than {cap} bytes from {urlsplit(raw.url).hostname}",
            request=summary, response={"status": raw.status_code, "headers": dict(raw.headers)})
        declared = raw.headers.get("Content-Length", "")
        if declared.isdigit() and int(declared) > cap:
            raw.close()
            raise too_large
        read = getattr(raw.raw, "read1", raw.raw.read)
        chunks: list[bytes] = []
        size = 0
        try:
            while True:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise RetryableError(f"timed out after {self.timeout:g} s reading the response",
                                         request=summary)
                sock = getattr(getattr(raw.raw, "connection", None), "sock", None)
                if sock is not None:
                    sock.settimeout(left)
                chunk = read(65536, decode_content=True)
                if not chunk:
                    break
                size += len(chunk)
                if size > cap:
                    raise too_large
                chunks.append(chunk)
        except (RetryableError, PermanentError):
            raw.close()
            raise
        except Exception as exc:  # urllib3 timeouts, protocol and decoding errors
            raw.close()
            wrapped = requests.exceptions.ContentDecodingError(exc) if "Decod" in type(exc).__name__ else exc
            raise _network_error(wrapped, raw.url, self.timeout, summary) from exc
        raw.raw.release_conn()
        return b"".join(chunks)


def _origin_changes(old: str, new: str) -> bool:
    """True when credentials must not follow: another host or port, or https → http."""
    a, b = urlsplit(old), urlsplit(new)
    port = {"http": 80, "https": 443}
    if a.hostname != b.hostname:
        return True
    if a.scheme == "https" and b.scheme != "https":
        return True
    if (a.port or port.get(a.scheme)) == (b.port or port.get(b.scheme)):
        return False
    return not (a.scheme == "http" and b.scheme == "https" and a.port in (None, 80) and b.port in (None, 443))
