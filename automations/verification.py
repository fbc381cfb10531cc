"""Checking that an inbound request really comes from its sender, before anything is stored
as a run. A recipe opts in with ``settings.verify`` = ``{"preset": "github", "connection":
<signing_secret connection id>, "settings": {...preset options}}``. A request that fails is
stored as a *rejected* run with the reason (visible in history, never executed) and answered
401; the reason never contains the secret."""
from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from connectors.verifiers import (
    VERIFIERS,
    NotConfigured,
    SignedRequest,
    VerificationFailed,
    get_verifier,
    resolve_settings,
    verify,
)

from .models import Connection

SECRET_KIND = "signing_secret"

__all__ = ["NotConfigured", "SignedRequest", "VerificationFailed", "check", "validate_settings"]


def validate_settings(settings: Mapping[str, Any], connections: Mapping[int, Connection]) -> list[tuple[str, str]]:
    cfg = settings.get("verify")
    if not cfg:
        return []
    if not isinstance(cfg, dict):
        return [("settings.verify", "must be a mapping with a preset and a connection")]
    problems: list[tuple[str, str]] = []
    preset = cfg.get("preset")
    if preset not in VERIFIERS:
        problems.append(("settings.verify.preset", f"unknown preset; one of {', '.join(sorted(VERIFIERS))}"))
    else:
        try:
            resolve_settings(get_verifier(preset), cfg.get("settings"))
        except NotConfigured as exc:
            problems.append(("settings.verify.settings", exc.reason))
    conn = connections.get(_int(cfg.get("connection")))
    if conn is None:
        problems.append(("settings.verify.connection", "choose a webhook signing secret connection"))
    elif conn.kind != SECRET_KIND:
        problems.append(("settings.verify.connection", f"'{conn.name}' is not a webhook signing secret"))
    return problems


def _int(value: Any) -> int | None:
    try:
        return int(value)
    except (TypeError, ValueError):
        return None


def check(cfg: Mapping[str, Any], stored: Mapping[str, Any], request: SignedRequest, now: float) -> None:
    """Raise :class:`VerificationFailed` unless ``request`` is authentic. ``stored``: the
    decrypted secrets of the recipe's signing-secret connection (``Core.signing_secrets``)."""
    secrets = [s for s in (stored.get("secret"), stored.get("previous_secret")) if s]
    verify(cfg.get("preset", ""), cfg.get("settings"), secrets, request, now)
