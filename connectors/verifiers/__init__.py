"""Inbound signature verification presets, as a pure library.

``verify(preset, settings, secrets, request, now)`` returns ``None`` when the request is
authentic and raises :class:`VerificationFailed` (``.reason`` is short and safe to show)
otherwise; a recipe whose verifier lacks a setting or secret raises :class:`NotConfigured`,
a subclass. ``secrets`` holds one or two active secrets so they can be rotated without
downtime: any may match. Each preset is declared once in :data:`VERIFIERS` (label, help,
``settings_fields`` for its non-secret options, ``secret_field``), so forms and docs can be
generated from it.
"""
from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Any

from . import body_hmac, generic, slack, standard_webhooks, stripe, twilio
from .core import MAX_TOLERANCE, NotConfigured, SignedRequest, VerificationFailed, Verifier

__all__ = ["VERIFIERS", "NotConfigured", "SignedRequest", "VerificationFailed", "Verifier",
           "get_verifier", "resolve_settings", "verify"]

log = logging.getLogger("hookline.verifiers")
MAX_SECRETS = 2

VERIFIERS: dict[str, Verifier] = {
    v.key: v for m in (body_hmac, stripe, slack, standard_webhooks, twilio, generic) for v in m.VERIFIERS
}


def get_verifier(key: str) -> Verifier:
    try:
        return VERIFIERS[key]
    except (KeyError, TypeError):
        raise NotConfigured("unknown verification preset") from None


def resolve_settings(verifier: Verifier, settings: Mapping[str, Any] | None) -> dict[str, Any]:
    """Settings with defaults filled in and values checked against the declarations."""
    settings = settings or {}
    resolved: dict[str, Any] = {}
    for f in verifier.settings_fields:
        value = settings.get(f.name)
        if value is None or (isinstance(value, str) and not value.strip()):
            value = f.default
        if value is None or value == "":
            if f.required:
                raise NotConfigured(f"{f.label} is required")
            resolved[f.name] = ""
            continue
        if f.type == "number":
            try:
                value = int(str(value).strip())
            except ValueError:
                value = 0
            if not 1 <= value <= MAX_TOLERANCE:
                raise NotConfigured(f"{f.label} must be a whole number from 1 to {MAX_TOLERANCE}")
        else:
            value = str(value).strip()
            if f.type == "select" and value not in {c for c, _ in f.choices}:
                raise NotConfigured(f"{f.label} must be one of {', '.join(c for c, _ in f.choices)}")
        resolved[f.name] = value
    return resolved


def _active(secrets: Sequence[str] | None) -> tuple[str, ...]:
    if isinstance(secrets, str) or not isinstance(secrets, Sequence):
        raise NotConfigured("secrets must be a list of one or two secrets")
    if not all(isinstance(s, str) for s in secrets):
        raise NotConfigured("secrets must be text")
    active = tuple(s for s in secrets if s)
    if not active:
        raise NotConfigured("no secret")
    if len(active) > MAX_SECRETS:
        raise NotConfigured(f"at most {MAX_SECRETS} active secrets")
    return active


def verify(preset: str, settings: Mapping[str, Any] | None, secrets: Sequence[str],
           request: SignedRequest, now: float) -> None:
    """Raise :class:`VerificationFailed` unless ``request`` is signed as ``preset`` expects.
    ``now`` is the injectable clock (unix seconds) the replay window is measured against."""
    verifier = get_verifier(preset)
    resolved = resolve_settings(verifier, settings)
    active = _active(secrets)
    try:
        verifier.verify(resolved, active, request, now)
    except VerificationFailed:
        raise
    except Exception:  # a bug: fail closed, keep the traceback (it holds no local values)
        log.exception("verifier %s crashed", verifier.key)
        raise VerificationFailed("internal verification error") from None
