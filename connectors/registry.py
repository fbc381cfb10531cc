"""The manifest of every action and credential type. Add a connector by importing its
module here; everything else (forms, validation, docs, API) reads these two mappings."""
from __future__ import annotations

from . import delay as _delay
from . import discord as _discord
from . import email as _email
from . import flow as _flow
from . import http_request as _http_request
from . import hubspot as _hubspot
from . import mattermost as _mattermost
from . import signing as _signing
from . import slack as _slack
from . import teams as _teams
from .base import Action, CredentialType

_MODULES = (_http_request, _hubspot, _slack, _discord, _teams, _mattermost, _email, _flow, _delay, _signing)

ACTIONS: dict[str, Action] = {a.key: a for m in _MODULES for a in m.ACTIONS}
CREDENTIALS: dict[str, CredentialType] = {c.key: c for m in _MODULES for c in m.CREDENTIALS}


def get_action(key: str) -> Action:
    try:
        return ACTIONS[key]
    except KeyError:
        raise KeyError(f"unknown action {key!r}") from None


def get_credential_type(key: str) -> CredentialType:
    try:
        return CREDENTIALS[key]
    except KeyError:
        raise KeyError(f"unknown connection type {key!r}") from None
