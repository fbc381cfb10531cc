"""The inbound endpoint, ``/hooks/<token>``: the only page open to the internet.

It is plain WSGI in front of Flask (``InboundEndpoint`` wraps the app's ``wsgi_app``): a
webhook needs none of what Flask sets up per request (routing, contexts, sessions, CSRF,
sign-in checks), and skipping it halves the endpoint's CPU per request, which is most of
what the web side spends. Everything else goes on to Flask.

Guard clauses first (size, token, signature), then one transaction that stores the event
and its run, then the acknowledgement. The body is read before the database is touched so
a slow sender never holds a transaction open.

A webhook waits for the writer at most ``INBOUND_WRITE_TIMEOUT`` seconds (senders give up
after 10–30 s and send again). If the writer has not begun its transaction by then (the
database is stalled: another program holds SQLite's write lock, say), the event is withdrawn
and never stored, and the sender is told ``503`` with ``Retry-After``: its retry is then the
only copy, not a duplicate.
"""
from __future__ import annotations

import dataclasses
import json
import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC
from http import HTTPStatus
from typing import Any

from flask import Flask

from automations import content_encoding, handshakes, inbound, verification
from automations.core import Core
from automations.ratelimit import RateLimiter, retry_after_header
from automations.writer import STARTED_GRACE, Abandoned

from .extensions import wake_runners

PREFIX = "/hooks/"
METHODS = ("GET", "POST", "PUT", "PATCH")
ALLOW = ", ".join((*METHODS, "HEAD", "OPTIONS"))
_STATUS = {s.value: f"{s.value} {s.phrase}" for s in HTTPStatus}
INBOUND_WRITE_TIMEOUT = 15.0  # seconds; app.config["INBOUND_WRITE_TIMEOUT"] overrides it
BUSY_RETRY_AFTER = 10  # seconds a sender told 503 (database busy) is asked to wait

log = logging.getLogger("hookline.inbound")
StartResponse = Callable[..., Any]
WSGIApp = Callable[[dict[str, Any], StartResponse], Iterable[bytes]]


def hook_path(token: str) -> str:
    return PREFIX + token


@dataclass
class Reply:
    status: int
    body: bytes = b""
    content_type: str = "application/json"
    headers: dict[str, str] = field(default_factory=dict)

    @classmethod
    def json(cls, status: int, data: dict[str, Any], **headers: str) -> Reply:
        return cls(status, json.dumps(data, separators=(",", ":")).encode() + b"\n", headers=headers)

    @classmethod
    def error(cls, status: int, message: str, **headers: str) -> Reply:
        return cls.json(status, {"error": message}, **headers)


class InboundEndpoint:
    """``/hooks/…`` answered here; any other path goes on to ``fallback`` (Flask)."""

    def __init__(self, app: Flask, fallback: WSGIApp) -> None:
        self.app = app
        self.fallback = fallback
        rate, nf = app.config["INBOUND_RATE"], app.config["NOT_FOUND_RATE"]
        self.per_url = RateLimiter(rate, burst=2 * rate)
        self.not_found = RateLimiter(nf, burst=30)
        self.write_timeout = float(app.config.get("INBOUND_WRITE_TIMEOUT", INBOUND_WRITE_TIMEOUT))

    def __call__(self, environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        path = environ.get("PATH_INFO") or ""
        if not path.startswith(PREFIX):
            return self.fallback(environ, start_response)
        try:
            reply = self.handle(environ, path)
        except Exception:
            if self._propagate():
                raise  # as Flask does when testing: the server logs and answers 500
            log.exception("Exception on %s [%s]", path, environ.get("REQUEST_METHOD"))
            reply = Reply.error(500, "internal error")
        headers = [("Content-Type", reply.content_type), ("Content-Length", str(len(reply.body))),
                   *reply.headers.items()]
        start_response(_STATUS.get(reply.status) or f"{reply.status} Unknown", headers)
        return [] if environ.get("REQUEST_METHOD") == "HEAD" else [reply.body]

    def _propagate(self) -> bool:
        value = self.app.config.get("PROPAGATE_EXCEPTIONS")
        return bool(self.app.testing or self.app.debug) if value is None else bool(value)

    # -- the request ----------------------------------------------------------------------
    def handle(self, environ: dict[str, Any], path: str) -> Reply:
        method = (environ.get("REQUEST_METHOD") or "GET").upper()
        if method == "OPTIONS":
            return Reply(200, content_type="text/plain", headers={"Allow": ALLOW})
        if method not in METHODS and method != "HEAD":
            return Reply.error(405, "method not allowed", Allow=ALLOW)
        token = path[len(PREFIX):]
        if not token or "/" in token:
            return Reply.error(404, "no hook at this address")
        limit = self.app.config["MAX_BODY_BYTES"]
        try:
            body = _read_body(environ, limit)
        except (OSError, ValueError):  # the sender went away mid-body
            return Reply.error(400, "incomplete body")
        if body is None:
            return Reply.error(413, f"body larger than {limit} bytes")
        hookline: Core = self.app.extensions["hookline"]
        remote_addr = environ.get("REMOTE_ADDR")
        recipe_id = hookline.recipe_id_for_token(token)
        if recipe_id is not None:
            wait = self.per_url.take(recipe_id)
            if wait:
                return _too_many(wait)
            if method == "HEAD":
                # HEAD stores nothing, so it would never find out that another process revoked the
                # URL: it asks the database (within the URL's rate); events keep the cache (storing
                # one checks the token).
                recipe_id = hookline.recipe_id_for_token(token, fresh=True)
        if recipe_id is None:
            wait = self.not_found.take(remote_addr)
            return _too_many(wait) if wait else Reply.error(404, "no hook at this address")
        if method == "HEAD":  # "does this URL exist?" (senders checking it, uptime monitors): no event
            return Reply(200)
        content_type = environ.get("CONTENT_TYPE") or None
        try:
            query = _query(environ)
        except inbound.BodyRejected as exc:
            return Reply.error(400, f"query string: {exc}")
        sent = body
        if environ.get("HTTP_CONTENT_ENCODING"):
            try:
                body = content_encoding.decode(sent, environ["HTTP_CONTENT_ENCODING"], limit)
            except content_encoding.ContentEncodingError as exc:
                log.warning("refused a request to recipe %s from %s: %s", recipe_id, remote_addr, exc)
                return Reply.error(400, str(exc))
            if body is None:
                log.warning("refused a request to recipe %s from %s: over %d bytes once decompressed",
                            recipe_id, remote_addr, limit)
                return Reply.error(413, f"body larger than {limit} bytes once decompressed")
        req = inbound.InboundRequest(method=method, content_type=content_type, body=body,
                                     headers=_headers(environ), query=query, remote_addr=remote_addr)
        settings = hookline.current_settings(recipe_id)
        rejected = self._verification_failure(hookline, settings, req, environ, path, sent)
        if not rejected and (handshake := _handshake(hookline, settings, req)) is not None:
            # a handshake stores nothing either: confirm the URL is still this recipe's (as HEAD)
            if hookline.recipe_id_for_token(token, fresh=True) != recipe_id:
                return Reply.error(404, "no hook at this address")
            return Reply(handshake.status, handshake.body.encode(), handshake.content_type, dict(handshake.headers))
        try:
            # a unit that began is waited for at most half the wait again: senders give up soon
            accepted = inbound.accept(hookline.writer, hookline.definitions, recipe_id, token, req,
                                      hookline.clock, rejected=rejected, timeout=self.write_timeout,
                                      grace=min(STARTED_GRACE, self.write_timeout / 2))
        except Abandoned:  # withdrawn before its transaction began: nothing is stored
            log.warning("recipe %s: the database took no write for %g s; asked the sender to retry",
                        recipe_id, self.write_timeout)
            return _busy()
        except TimeoutError:  # began, unfinished: it may yet be stored (a de-duplicating recipe drops the retry)
            log.error("recipe %s: storing an event did not finish in time; it may still be stored", recipe_id)
            return _busy()
        except inbound.RecipeGone:
            hookline.forget_token(token)
            return Reply.error(404, "no hook at this address")
        except inbound.BodyRejected as exc:
            return Reply.error(400, str(exc))
        if rejected:
            log.warning("rejected a request to recipe %s from %s: %s", recipe_id, remote_addr, rejected)
            return Reply.error(401, "signature verification failed")
        if accepted.duplicate:  # already have it: 200, so the sender stops retrying
            return Reply.json(200, {"run_id": accepted.run_id, "status": "duplicate"})
        wake_runners(self.app)  # the run starts now, not at a runner's next poll
        return Reply.json(202, {"run_id": accepted.run_id, "status": accepted.status})

    def _verification_failure(self, hookline: Core, settings: dict, req: inbound.InboundRequest,
                              environ: dict[str, Any], path: str, sent: bytes) -> str | None:
        """The reason the request is not authentic, or None (also when the recipe verifies nothing).
        A compressed body is checked as decompressed (what senders sign), else as ``sent``."""
        cfg = settings.get("verify")
        if not cfg:
            return None
        public_url = self.app.config["PUBLIC_URL"] + _wsgi_str(path)  # the URL the sender was given
        query = environ.get("QUERY_STRING", "")
        signed = verification.SignedRequest(
            method=req.method, url=f"{public_url}?{query}" if query else public_url, headers=req.headers,
            body=req.body, remote_addr=req.remote_addr or "")
        secrets, now = hookline.signing_secrets(cfg.get("connection")), hookline.clock.now().replace(tzinfo=UTC).timestamp()
        try:
            verification.check(cfg, secrets, signed, now)
        except verification.VerificationFailed as exc:
            if sent is req.body:
                return f"signature verification failed: {exc.reason}"
            try:  # a compressed body: some senders sign what they sent, not what it decompresses to
                verification.check(cfg, secrets, dataclasses.replace(signed, body=sent), now)
            except verification.VerificationFailed:
                return f"signature verification failed: {exc.reason}"
        return None


def install(app: Flask) -> None:
    """Put the inbound endpoint in front of the app (before any proxy middleware wraps both)."""
    app.wsgi_app = InboundEndpoint(app, app.wsgi_app)  # type: ignore[method-assign]


def _wsgi_str(value: str) -> str:
    """WSGI hands over bytes as latin-1 text; URLs and headers are UTF-8 in practice."""
    try:
        return value.encode("latin-1").decode("utf-8")
    except (UnicodeEncodeError, UnicodeDecodeError):
        return value


def _read_body(environ: dict[str, Any], limit: int) -> bytes | None:
    """The body, or None when it is larger than ``limit`` (refused before reading when the
    length is declared; a chunked body is read up to one byte past the limit)."""
    stream = environ["wsgi.input"]
    length = environ.get("CONTENT_LENGTH")
    if length:
        try:
            n = int(length)
        except ValueError:
            n = -1
        if n > limit:
            return None
        if n >= 0:
            return stream.read(n) if n else b""
    if not environ.get("wsgi.input_terminated"):
        return b""  # no length and a stream that would not end: WSGI says there is no body
    data = stream.read(limit + 1)
    return None if len(data) > limit else data


def _headers(environ: dict[str, Any]) -> dict[str, str]:
    """Lower-case names, as the engine stores and verifies them."""
    out = {key[5:].replace("_", "-").lower(): value for key, value in environ.items()
           if key.startswith("HTTP_") and key not in ("HTTP_CONTENT_TYPE", "HTTP_CONTENT_LENGTH")}
    if environ.get("CONTENT_TYPE"):
        out["content-type"] = environ["CONTENT_TYPE"]
    if environ.get("CONTENT_LENGTH"):
        out["content-length"] = environ["CONTENT_LENGTH"]
    return out


def _query(environ: dict[str, Any]) -> dict[str, Any]:
    """A name given once maps to its value, a repeated one to the list of its values (at most
    as many fields as a form body; BodyRejected past that)."""
    raw = environ.get("QUERY_STRING")
    return inbound.parse_form(_wsgi_str(raw), errors="replace") if raw else {}


def _busy() -> Reply:
    return Reply.error(503, "the database is busy; retry", **{"Retry-After": str(BUSY_RETRY_AFTER)})


def _too_many(wait: float) -> Reply:
    return Reply.error(429, "too many requests", **{"Retry-After": retry_after_header(wait)})


_HANDSHAKE_MARKERS = (b"url_verification", b"endpoint.url_validation")


def _handshake(hookline: Core, settings: dict, req: inbound.InboundRequest) -> handshakes.Handshake | None:
    """A provider's subscription handshake (answered, no run), or None for an ordinary event."""
    if not ("validationToken" in req.query or "hub.challenge" in req.query
            or any(m in req.body for m in _HANDSHAKE_MARKERS)):
        return None  # the common case costs two lookups and a byte search, not a parse
    try:
        body = inbound.parse_body(req.content_type, req.body).value
    except inbound.BodyRejected:
        return None  # refused with 400 when it is stored
    cfg = settings.get("verify") or {}
    secret = None
    if cfg.get("connection"):
        secret = hookline.signing_secrets(cfg["connection"]).get("secret")
    return handshakes.answer(req.method, req.query, body, settings, verified=bool(cfg), signing_secret=secret)
