"""The inbound endpoint: the only page open to the internet.

Guard clauses first (size, token, signature), then one transaction that stores the event
and its run, then the acknowledgement. The body is read before the database is touched so
a slow sender never holds a transaction open.
"""
from __future__ import annotations

import logging
from datetime import UTC

from flask import Blueprint, Response, current_app, jsonify, request
from werkzeug.exceptions import RequestEntityTooLarge

from automations import handshakes, inbound, verification
from automations.core import Core
from automations.ratelimit import RateLimiter, retry_after_header

from .extensions import core, csrf, notify_runner

bp = Blueprint("hooks", __name__)
log = logging.getLogger("hookline.inbound")


def _error(status: int, message: str) -> Response:
    resp = jsonify({"error": message})
    resp.status_code = status
    return resp


@bp.route("/hooks/<token>", methods=["GET", "POST", "PUT", "PATCH"])
@csrf.exempt
def receive(token: str) -> Response:
    limit = current_app.config["MAX_BODY_BYTES"]
    if request.content_length is not None and request.content_length > limit:
        return _error(413, f"body larger than {limit} bytes")
    try:
        body = request.get_data(cache=False)
    except RequestEntityTooLarge:
        return _error(413, f"body larger than {limit} bytes")
    hookline = core()
    limits = _limits()
    recipe_id = hookline.recipe_id_for_token(token)
    if recipe_id is None:
        wait = limits["not_found"].take(request.remote_addr)
        if wait:
            return _too_many(wait)
        return _error(404, "no hook at this address")
    wait = limits["per_url"].take(recipe_id)
    if wait:
        return _too_many(wait)
    req = inbound.InboundRequest(
        method=request.method,
        content_type=request.headers.get("Content-Type"),
        body=body,
        headers={k.lower(): v for k, v in request.headers.items()},
        query={k: (v if len(v) > 1 else v[0]) for k, v in request.args.lists()},
        remote_addr=request.remote_addr,
    )
    settings = hookline.current_settings(recipe_id)
    rejected = _verification_failure(hookline, settings, req)
    if not rejected and (handshake := _handshake(hookline, settings, req)) is not None:
        return Response(handshake.body, handshake.status, handshake.headers, content_type=handshake.content_type)
    try:
        accepted = inbound.accept(hookline.writer, hookline.definitions, recipe_id, token, req,
                                  hookline.clock, rejected=rejected)
    except inbound.RecipeGone:
        hookline.forget_token(token)
        return _error(404, "no hook at this address")
    except inbound.BodyRejected as exc:
        return _error(400, str(exc))
    if rejected:
        log.warning("rejected a request to recipe %s from %s: %s", recipe_id, request.remote_addr, rejected)
        return _error(401, "signature verification failed")
    if accepted.duplicate:  # already have it: 200, so the sender stops retrying
        return jsonify({"run_id": accepted.run_id, "status": "duplicate"})
    notify_runner()
    resp = jsonify({"run_id": accepted.run_id, "status": accepted.status})
    resp.status_code = 202
    return resp


def _limits() -> dict[str, RateLimiter]:
    limits = current_app.extensions.get("hookline_rate_limits")
    if limits is None:
        rate, nf = current_app.config["INBOUND_RATE"], current_app.config["NOT_FOUND_RATE"]
        limits = current_app.extensions.setdefault("hookline_rate_limits", {
            "per_url": RateLimiter(rate, burst=2 * rate),
            "not_found": RateLimiter(nf, burst=30),
        })
    return limits


def _too_many(wait: float) -> Response:
    resp = _error(429, "too many requests")
    resp.headers["Retry-After"] = retry_after_header(wait)
    return resp


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
        secret = hookline.secret_box.decrypt(hookline.signing_secret_blob(cfg["connection"])).get("secret")
    return handshakes.answer(req.method, req.query, body, settings, verified=bool(cfg), signing_secret=secret)


def _verification_failure(hookline: Core, settings: dict, req: inbound.InboundRequest) -> str | None:
    """The reason the request is not authentic, or None (also when the recipe verifies nothing)."""
    cfg = settings.get("verify")
    if not cfg:
        return None
    public_url = current_app.config["PUBLIC_URL"] + request.path  # the URL the sender was given
    query = request.query_string.decode("latin-1")
    signed = verification.SignedRequest(
        method=req.method, url=f"{public_url}?{query}" if query else public_url, headers=req.headers,
        body=req.body, remote_addr=req.remote_addr or "")
    try:
        verification.check(cfg, hookline.secret_box, hookline.signing_secret_blob(cfg.get("connection")),
                           signed, hookline.clock.now().replace(tzinfo=UTC).timestamp())
    except verification.VerificationFailed as exc:
        return f"signature verification failed: {exc.reason}"
    return None


@bp.errorhandler(RequestEntityTooLarge)
def _too_large(_exc: RequestEntityTooLarge) -> Response:
    return _error(413, f"body larger than {current_app.config['MAX_BODY_BYTES']} bytes")
