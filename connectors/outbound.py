"""The one HTTP client every connector uses. Recipes let users aim requests at any URL, so
the server must never become a proxy into its own network: every hop is resolved and every
resolved address must be public (or allowlisted), and the connection goes to exactly the
address that was checked (no DNS rebinding) while Host, TLS SNI and certificate checks keep
the hostname. Oversized responses fail ("response too large") instead of being truncated:
a cut JSON body would silently feed garbage to later steps.

Requests are encoded here (``_encode``), the way requests used to encode them, and sent by
``transport.py`` (``http.client`` connections kept alive per checked address). Nothing reads
environment proxies or ``.netrc``, and no cookies are kept.
"""
from __future__ import annotations

import http.client
import json as jsonlib
import re
import ssl
import time
from base64 import b64encode
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from functools import lru_cache
from http import HTTPStatus
from typing import Any
from urllib.parse import parse_qsl, unquote, urlencode, urljoin, urlsplit

from urllib3 import HTTPHeaderDict
from urllib3 import exceptions as u3
from urllib3.util import parse_url

from .base import ConnectorError, PermanentError, RetryableError
from .destinations import (  # noqa: F401 - re-exported: the client's public surface
    ALLOWLIST_SETTING,
    Allowlist,
    DestinationNotAllowed,
    DnsCache,
    address_problem,
    check_destination,
    check_scheme,
    checked_addresses,
)
from .redaction import REDACTED, is_secret_header, redact_headers, redact_text, redact_url
from .transport import ACCEPT_ENCODING, BodyDecodeError, ConnectError, ConnectionPool, Origin, Response

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

_UNPARSED = object()


@dataclass
class OutboundResponse:
    """A fully read response (after redirects). ``request`` is the redacted summary of what
    was sent, for the run history."""

    status: int
    headers: HTTPHeaderDict  # case-insensitive; one entry per name, repeated headers joined with ", "
    body: bytes
    url: str
    elapsed_ms: int
    request: dict[str, Any] = field(default_factory=dict)
    _parsed: Any = field(default=_UNPARSED, init=False, repr=False, compare=False)

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
        """JSON-decoded body when the server says (and sends) JSON, else the text. Worked out
        once: a step's output and its history summary both show it."""
        if self._parsed is _UNPARSED:
            self._parsed = self._parse()
        return self._parsed

    def _parse(self) -> Any:
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
    """Never show a refused header value, which is usually a pasted credential: name the
    header when it is not a secret one."""
    if "header name" in str(exc):
        return "invalid request: a header name contains whitespace, a line break or another reserved character"
    bad = [k for k, v in (request.get("headers") or {}).items()
           if isinstance(v, str) and v != REDACTED and not _VALID_HEADER_VALUE.fullmatch(v)]
    which = f"the value of header {', '.join(bad)}" if bad else "a header value (a credential, not shown)"
    return (f"invalid request: {which} starts with whitespace, contains a line break or is not text; "
            "check for a pasted line break or space")


# What requests accepted (no leading whitespace, no CR or LF; names without ":"), and no NUL.
_VALID_HEADER_NAME = re.compile(r"[^:\s\0][^:\r\n\0]*")
_VALID_HEADER_VALUE = re.compile(r"(?:[^\s\0][^\r\n\0]*)?")
_VALID_HEADER_VALUE_BYTES = re.compile(rb"(?:[^\s\0][^\r\n\0]*)?")


def _network_error(exc: Exception, url: str, timeout: float, request: dict[str, Any]) -> Exception:
    parts = urlsplit(url)
    try:
        where = f"{parts.hostname}:{parts.port or (443 if parts.scheme == 'https' else 80)}"
    except ValueError:  # a port out of range
        where = str(parts.hostname)
    safe = _scrubber(url, request)
    if isinstance(exc, _InvalidHeader):
        return PermanentError(_header_problem(exc, request), request=request)
    cause = _root_cause(exc)
    if isinstance(cause, ssl.SSLError):  # before ValueError: a certificate error is one
        if isinstance(cause, ssl.SSLCertVerificationError) or "CERTIFICATE_VERIFY_FAILED" in str(cause):
            return PermanentError(f"TLS certificate of {where} could not be verified: {safe(str(cause))}",
                                  request=request)
        return RetryableError(f"TLS error talking to {where}: {safe(str(cause))}", request=request)
    if isinstance(exc, (ValueError, TypeError)):  # _InvalidRequest, a header http.client refuses, ...
        return PermanentError(f"invalid request: {safe(str(exc))}", request=request)
    if isinstance(exc, BodyDecodeError):
        return PermanentError(f"could not decode the response from {where}: {safe(str(exc))}", request=request)
    if isinstance(cause, TimeoutError):  # socket.timeout, ETIMEDOUT
        return RetryableError(f"timed out after {timeout:g} s talking to {where}", request=request)
    if isinstance(cause, ConnectionRefusedError):
        return RetryableError(f"connection refused by {where}", request=request)
    if isinstance(cause, ConnectionResetError):  # http.client's RemoteDisconnected too
        return RetryableError(f"connection reset by {where}", request=request)
    if isinstance(cause, http.client.HTTPException):
        what = f"{type(cause).__name__}: {cause}" if str(cause) else type(cause).__name__
        return RetryableError(f"invalid HTTP response from {where}: {safe(what)}", request=request)
    return RetryableError(f"network error talking to {where}: {safe(str(cause))}", request=request)


# --- request encoding -----------------------------------------------------------------------

class _InvalidRequest(ValueError):
    """A request that cannot be sent as given (URL, header, body or auth); never sent."""


class _InvalidHeader(_InvalidRequest):
    """The message names the part ("header name"/"header value"), never its content."""


_FORM = "application/x-www-form-urlencoded"


@dataclass(slots=True)
class _Prepared:
    """One hop's request, encoded: ``url`` as requests' ``PreparedRequest.url`` was
    (normalised, IDNA host, userinfo and fragment kept), ``target`` the request-line path and
    query, ``host`` the hostname (lower case, no brackets) and ``port`` the effective port."""

    method: str
    url: str
    scheme: str
    host: str
    port: int
    target: str
    headers: dict[str, Any]
    body: bytes | None
    sets_host: bool = False


def _pairs(value: Any, what: str) -> str:
    """Key/value pairs (a mapping or a list of pairs; a list or tuple value repeats the key,
    None values are left out) as application/x-www-form-urlencoded; text is taken as is."""
    if isinstance(value, str):
        return value
    if isinstance(value, bytes):
        return value.decode("ascii")
    out: list[tuple[Any, Any]] = []
    try:
        for key, values in (value.items() if hasattr(value, "items") else value):
            if isinstance(values, (str, bytes)) or not hasattr(values, "__iter__"):
                values = (values,)
            out.extend((key, v) for v in values if v is not None)
        return urlencode(out, doseq=True)
    except (TypeError, ValueError):
        raise _InvalidRequest(f"{what} must be key/value pairs, not {type(value).__name__}") from None


def _encode_url(url: str, params: Any) -> tuple[str, str, str, int, str, str | None]:
    """(url, scheme, host, port, target, userinfo): ``url`` parsed, percent-encoded where it
    holds characters a URL may not (urllib3's ``parse_url``, as requests did), with
    ``params`` appended to its query."""
    if params is None:
        return _encode_bare_url(url)
    return _parse_and_encode_url(url, params)


@lru_cache(maxsize=1024)
def _encode_bare_url(url: str) -> tuple[str, str, str, int, str, str | None]:
    """A URL without params, remembered: a recipe's steps send to the same few URLs."""
    return _parse_and_encode_url(url, None)


def _parse_and_encode_url(url: str, params: Any) -> tuple[str, str, str, int, str, str | None]:
    try:
        parts = parse_url(url)
    except u3.LocationParseError as exc:
        raise _InvalidRequest(str(exc)) from None
    if not parts.scheme:
        raise _InvalidRequest(f"Invalid URL {url!r}: No scheme supplied. Perhaps you meant https://{url}?")
    host = parts.host
    if not host:
        raise _InvalidRequest(f"Invalid URL {url!r}: No host supplied")
    if host.startswith(("*", ".")):
        raise _InvalidRequest("URL has an invalid label.")
    query = parts.query
    if params is not None:
        extra = _pairs(params, "params")
        if extra:
            query = f"{query}&{extra}" if query else extra
    netloc = f"{parts.auth}@{host}" if parts.auth else host
    if parts.port:
        netloc += f":{parts.port}"
    target = f"{parts.path or '/'}?{query}" if query else parts.path or "/"
    full = f"{parts.scheme}://{netloc}{target}" + (f"#{parts.fragment}" if parts.fragment else "")
    if isinstance(params, (str, bytes)) and params:  # raw query text: encode it like the URL's own
        return _encode_url(full, None)
    scheme = parts.scheme
    port = parts.port or (443 if scheme == "https" else 80)
    return full, scheme, host.strip("[]"), port, target, parts.auth


def _encode(method: str, url: str, headers: Mapping[Any, Any], params: Any, json: Any, data: Any, auth: Any,
            defaults: Mapping[str, tuple[str, str]]) -> _Prepared:
    """Encode one request as requests did: ``defaults`` (lower-case name → (name, value))
    (already checked) overridden by ``headers`` case-insensitively (None drops a header; each
    given name and value is checked: :func:`_check_header`); a ``json`` body
    (unless ``data``); ``data`` as form pairs, text (UTF-8) or bytes; Content-Length (0 for
    a bodiless method other than GET/HEAD); ``auth`` (user, password) or the URL's userinfo
    as Basic (UTF-8). No error raised here quotes a header value."""
    url = url.decode("utf-8") if isinstance(url, bytes) else str(url)
    url = url.lstrip()
    scheme = host = target = ""
    port, userinfo = 0, None
    if not (":" in url and not url.lower().startswith("http")):  # else check_scheme refuses it
        url, scheme, host, port, target, userinfo = _encode_url(url, params)
    merged = dict(defaults)
    for name, value in headers.items():
        if isinstance(name, bytes):
            name = name.decode("latin-1")
        if value is not None:
            _check_header(name, value)
        merged[name.lower()] = (name, value)
    if any(value is None for _, value in merged.values()):
        merged = {k: nv for k, nv in merged.items() if nv[1] is not None}

    body: bytes | None = None
    content_type = None
    if not data and json is not None:
        try:
            body = jsonlib.dumps(json, allow_nan=False).encode("utf-8")
        except (TypeError, ValueError) as exc:
            raise _InvalidRequest(f"the JSON body cannot be encoded: {exc}") from None
        content_type = "application/json"
    elif data:
        if isinstance(data, str):
            body = data.encode("utf-8")
        elif isinstance(data, (bytes, bytearray, memoryview)):
            body = bytes(data)
        else:
            body = _pairs(data, "data").encode("ascii")
            content_type = _FORM
    if body:
        merged["content-length"] = ("Content-Length", str(len(body)))
    else:
        body = None
        if method not in ("GET", "HEAD") and "content-length" not in merged:
            merged["content-length"] = ("Content-Length", "0")
    if content_type and "content-type" not in merged:
        merged["content-type"] = ("Content-Type", content_type)

    if auth is None and userinfo:
        user, colon, password = userinfo.partition(":")
        if colon and (user or password):
            auth = (unquote(user), unquote(password))
    if auth:
        if not isinstance(auth, (tuple, list)) or len(auth) != 2:
            raise _InvalidRequest(f"auth must be a (user, password) pair, not {type(auth).__name__}")
        user_b, password_b = (a if isinstance(a, bytes) else str(a).encode("utf-8") for a in auth)
        merged["authorization"] = ("Authorization", "Basic " + b64encode(user_b + b":" + password_b).decode("ascii"))

    return _Prepared(method, url, scheme, host, port, target, dict(merged.values()), body, "host" in merged)


def _check_header(name: Any, value: Any) -> None:
    """Refuse what requests refused (a name with ":", whitespace first, CR or LF; a value
    with whitespace first, CR or LF; anything but text) and NUL; never quote the value."""
    if not isinstance(name, str) or not _VALID_HEADER_NAME.fullmatch(name):
        raise _InvalidHeader("invalid request: leading whitespace, a reserved character or a line break "
                             "in a header name")
    if isinstance(value, str):
        ok = _VALID_HEADER_VALUE.fullmatch(value)
    elif isinstance(value, bytes):
        ok = _VALID_HEADER_VALUE_BYTES.fullmatch(value)
    else:
        raise _InvalidHeader(f"invalid request: a header value of type {type(value).__name__} is not text")
    if not ok:
        raise _InvalidHeader("invalid request: leading whitespace or a line break in a header value")


# --- the client ---------------------------------------------------------------------------

class OutboundClient:
    """Thread-safe: one :class:`~connectors.transport.ConnectionPool` keeping up to
    ``pool_size`` idle connections per checked address (more are opened when threads need
    them, and closed after use, as requests did).
    ``timeout`` is both the connect/read timeout and the deadline for the whole exchange,
    redirects and body included. ``verify`` is True, False or a CA bundle path (file or
    directory); True uses certifi's bundle; ``extra_ca`` (file or directory) is trusted as
    well. Host names are looked up again after ``dns_cache_seconds``
    (:class:`~connectors.destinations.DnsCache`)."""

    def __init__(self, allowlist: Sequence[str] | str = (), timeout: float = 30.0,
                 max_response_bytes: int = 5 * 1024 * 1024, user_agent: str = "Hookline/0.1",
                 verify: bool | str = True, pool_size: int = 32, dns_cache_seconds: float = 30.0,
                 extra_ca: str | None = None) -> None:
        self.allowlist = Allowlist(allowlist)
        self.dns = DnsCache(dns_cache_seconds)
        self.timeout = timeout
        self.max_response_bytes = max_response_bytes
        self.verify = verify
        _check_header("User-Agent", user_agent)  # the defaults are checked once, here
        self._defaults = {"user-agent": ("User-Agent", user_agent),
                          "accept-encoding": ("Accept-Encoding", ACCEPT_ENCODING),
                          "accept": ("Accept", "*/*"), "connection": ("Connection", "keep-alive")}
        self.pools = ConnectionPool(verify, per_origin=pool_size, max_origins=pool_size, extra_ca=extra_ca)

    def close(self) -> None:
        self.pools.clear()

    def describe_request(self, method: str, url: str, *, headers: Mapping[str, str] | None = None,
                         params: Any = None, json: Any = None, data: Any = None, auth: Any = None,
                         secret_names: Iterable[str] = (), secret_url: bool = False) -> dict[str, Any]:
        """Redacted summary of the request as it would be sent (default headers included)."""
        prep = self._prepare(method.upper(), url, dict(headers or {}), params, json, data, auth)
        return self._describe(prep, method, url, headers, json, data, tuple(secret_names), secret_url)

    def _prepare(self, method: str, url: str, headers: dict[str, str], params: Any, json: Any, data: Any,
                 auth: Any) -> _Prepared | None:
        try:
            return _encode(method, url, headers, params, json, data, auth, self._defaults)
        except (ValueError, TypeError):  # described anyway; sending fails clearly
            return None

    def _describe(self, prep: _Prepared | None, method: str, url: str,
                  headers: Mapping[str, str] | None, json: Any, data: Any, names: tuple[str, ...],
                  secret_url: bool) -> dict[str, Any]:
        if prep is not None:
            url, sent = prep.url, prep.headers
        else:
            sent = {**dict(self._defaults.values()), **(headers or {})}
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
        prep = self._prepare(method, url, hdrs, params, json, data, auth)  # encoded once: sent and described
        summary = self._describe(prep, method, url, headers, json, data, names, secret_url)
        for _hop in range(MAX_REDIRECTS + 1):
            check_scheme(url)
            if prep is None:
                try:
                    prep = _encode(method, url, hdrs, params, json, data, auth, self._defaults)
                except (ValueError, TypeError) as exc:
                    raise _network_error(exc, url, self.timeout, summary) from exc
            raw = self._send(prep, url, deadline, summary)
            status = raw.status
            location = raw.headers.get("Location") if status in _REDIRECTS else None
            if not location:
                body = self._read_body(raw, prep, url, deadline, summary)
                return OutboundResponse(status, raw.headers, body, prep.url,
                                        int((time.monotonic() - started) * 1000), summary)
            raw.discard()
            next_url = urljoin(prep.url, location)
            if status == 303 and method != "HEAD" or status in (301, 302) and method == "POST":
                method, json, data = "GET", None, None
                hdrs = {k: v for k, v in hdrs.items() if k.lower() not in ("content-type", "content-length")}
            if _origin_changes(url, next_url):
                hdrs = {k: v for k, v in hdrs.items() if not is_secret_header(k, names)}
                auth = None
            url, params, prep = next_url, None, None
        raise PermanentError(f"too many redirects (more than {MAX_REDIRECTS})", request=summary)

    def _send(self, prep: _Prepared, url: str, deadline: float, summary: dict[str, Any]) -> Response:
        """Check the destination, then send to the first checked address that accepts the
        connection (the next one only when connecting failed: nothing was sent)."""
        try:
            addresses = checked_addresses(prep.host, prep.port, self.allowlist, prep.url,
                                          timeout=deadline - time.monotonic(), cache=self.dns)
        except ConnectorError as exc:  # e.g. "invalid URL '<the URL>'": shown as the history shows it
            exc.request = exc.request or summary
            exc.message = _scrubber(url, summary)(exc.message)
            exc.args = (exc.message,)
            raise
        host = f"[{prep.host}]" if ":" in prep.host else prep.host
        if prep.port != (443 if prep.scheme == "https" else 80):
            host = f"{host}:{prep.port}"
        sent = prep.headers
        if prep.sets_host:  # the Host header names what the URL names, whatever was given
            sent = {k: v for k, v in sent.items() if k.lower() != "host"}
        headers = {"Host": host, **sent}
        error: Exception | None = None
        for addr in addresses:
            left = deadline - time.monotonic()
            if left <= 0:
                raise RetryableError(f"timed out after {self.timeout:g} s", request=summary)
            try:
                return self.pools.send(Origin(prep.scheme, addr, prep.port, prep.host), prep.method, prep.target,
                                       prep.body, headers, left)
            except ConnectError as exc:  # nothing was sent: try the next checked address
                error = exc
            except (OSError, ValueError, http.client.HTTPException) as exc:  # ssl.SSLError is an OSError
                raise _network_error(exc, url, self.timeout, summary) from exc
        assert error is not None
        self.dns.forget(prep.host, prep.port)  # no address answered: look the name up again next time
        raise _network_error(error, url, self.timeout, summary) from error

    def _read_body(self, raw: Response, prep: _Prepared, url: str, deadline: float,
                   summary: dict[str, Any]) -> bytes:
        """Stream the (decoded) body. Every socket read gets only what is left of the deadline
        (transport.py), so a server trickling bytes cannot hold a worker past it; the size cap
        counts the bytes received as well as the decoded ones, so a body that decodes to
        nothing (empty deflate blocks) cannot stream on either."""
        cap = self.max_response_bytes
        declared = raw.declared_length
        if declared is not None and declared > cap:
            raw.discard()
            raise self._too_large(raw, prep, summary)
        chunks: list[bytes] = []
        size = 0
        try:
            while not raw.done:
                if deadline - time.monotonic() <= 0:
                    raise RetryableError(f"timed out after {self.timeout:g} s reading the response",
                                         request=summary)
                chunk = raw.read1()
                size += len(chunk)
                if size > cap or raw.received > cap:
                    raise self._too_large(raw, prep, summary)
                if chunk:
                    chunks.append(chunk)
        except (RetryableError, PermanentError):
            raw.discard()
            raise
        except Exception as exc:  # timeouts, protocol and decoding errors
            raw.discard()
            raise _network_error(exc, url, self.timeout, summary) from exc
        raw.release()
        return chunks[0] if len(chunks) == 1 else b"".join(chunks)

    def _too_large(self, raw: Response, prep: _Prepared, summary: dict[str, Any]) -> PermanentError:
        return PermanentError(f"response too large: more than {self.max_response_bytes} bytes from {prep.host}",
                              request=summary, response={"status": raw.status, "headers": dict(raw.headers)})


def url_host(url: str) -> str | None:
    """The host a request to ``url`` connects to, as this client parses it (urllib3's
    ``parse_url``: lower case, IDNA 2008, no brackets), or None when it has none or does not
    parse. Checks on a destination must use this, not ``urlsplit``: the two disagree on
    some URLs (``https://evil.example\\@api.example.com/`` connects to evil.example)."""
    try:
        host = parse_url(url.strip()).host
    except u3.LocationParseError:
        return None
    return host.strip("[]").lower() if host else None


def _origin_changes(old: str, new: str) -> bool:
    """True when credentials must not follow: another host or port, or https → http."""
    try:
        a, b = parse_url(old.strip()), parse_url(new.strip())
    except u3.LocationParseError:
        return True
    port = {"http": 80, "https": 443}
    a_scheme, b_scheme = (a.scheme or "").lower(), (b.scheme or "").lower()
    if url_host(old) != url_host(new) or url_host(new) is None:
        return True
    if a_scheme == "https" and b_scheme != "https":
        return True
    if (a.port or port.get(a_scheme)) == (b.port or port.get(b_scheme)):
        return False
    return not (a_scheme == "http" and b_scheme == "https" and a.port in (None, 80) and b.port in (None, 443))
