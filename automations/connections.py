"""Stored credentials. Secret fields are encrypted and never leave this module in clear
except as ``credentials_for`` hands them to a connector's ``run``."""
from __future__ import annotations

from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from connectors.registry import CREDENTIALS

from .models import Connection, Recipe, RecipeVersion
from .recipes import Problem, RecipeInvalid
from .secrets import SecretBox


class ConnectionInUse(ValueError):
    pass


def _split(kind: str, values: dict[str, Any], existing_secrets: dict[str, Any],
           name: str) -> tuple[dict[str, Any], dict[str, Any]]:
    ctype = CREDENTIALS.get(kind)
    if ctype is None:
        raise RecipeInvalid([Problem("kind", f"unknown connection type '{kind}'")])
    problems = [] if name.strip() else [Problem("name", "is required")]
    settings: dict[str, Any] = {}
    secrets: dict[str, Any] = {}
    for f in ctype.fields:
        value = values.get(f.name)
        if f.secret:
            # A blank secret on edit keeps the stored one: secrets are never shown again.
            value = value if value not in (None, "") else existing_secrets.get(f.name)
        if f.required and value in (None, ""):
            problems.append(Problem(f.name, "is required"))
        if value in (None, ""):
            value = f.default
        if value is None:
            continue
        (secrets if f.secret else settings)[f.name] = value
    if problems:
        raise RecipeInvalid(problems)
    return settings, secrets


def create(session: Session, box: SecretBox, name: str, kind: str, values: dict[str, Any]) -> Connection:
    settings, secrets = _split(kind, values, {}, name)
    conn = Connection(name=name.strip(), kind=kind, settings=settings,
                      secret_blob=box.encrypt(secrets) if secrets else None)
    session.add(conn)
    session.commit()
    return conn


def update(session: Session, box: SecretBox, conn: Connection, name: str, values: dict[str, Any]) -> Connection:
    settings, secrets = _split(conn.kind, values, box.decrypt(conn.secret_blob), name)
    conn.name = name.strip()
    conn.settings = settings
    conn.secret_blob = box.encrypt(secrets) if secrets else None
    session.commit()
    return conn


def users_of(session: Session, conn: Connection) -> list[Recipe]:
    """Recipes whose current version uses the connection."""
    rows = session.execute(
        select(Recipe, RecipeVersion.definition).join(
            RecipeVersion, (RecipeVersion.recipe_id == Recipe.id)
            & (RecipeVersion.version == Recipe.current_version))
    )
    return [r for r, d in rows if any(s.get("connection") == conn.id for s in d.get("steps", []))]


def delete(session: Session, conn: Connection) -> None:
    users = users_of(session, conn)
    if users:
        raise ConnectionInUse("used by " + ", ".join(f"'{r.name}'" for r in users))
    session.delete(conn)
    session.commit()


def credentials_for(box: SecretBox, conn: Connection | None) -> dict[str, Any]:
    if conn is None:
        return {}
    return {**(conn.settings or {}), **box.decrypt(conn.secret_blob)}


def secret_values(box: SecretBox, conn: Connection | None) -> list[str]:
    """The clear-text secrets, so the runner can scrub them from anything it records."""
    if conn is None:
        return []
    return [v for v in box.decrypt(conn.secret_blob).values() if isinstance(v, str)]
