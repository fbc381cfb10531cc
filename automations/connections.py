"""Stored credentials. Secret fields are encrypted and never leave this module in clear
except as ``credentials_for`` hands them to a connector's ``run``."""
from __future__ import annotations

import base64
from collections.abc import Iterable, Iterator
from secrets import token_hex
from typing import Any

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from connectors.base import ActionContext, ConnectorError
from connectors.outbound import OutboundClient
from connectors.redaction import redact_values
from connectors.registry import CREDENTIALS

from .models import Connection, Recipe, RecipeVersion
from .recipes import Problem, RecipeInvalid
from .secrets import SecretBox, SecretsError

NAME_MAX = Connection.__table__.c.name.type.length  # the column's length: longer names are refused


class ConnectionInUse(ValueError):
    pass


def connection_id(value: Any) -> int | None:
    """A reference as stored in a definition (an int, or digits from a form) as an id."""
    if isinstance(value, bool):
        return None
    try:
        return int(value)
    except (TypeError, ValueError):
        return None


def references(definition: dict[str, Any]) -> Iterator[tuple[str, dict[str, Any]]]:
    """Every part of a definition that holds a connection: each step and each settings part
    (``verify``, ``alert``, any other) with a ``connection`` key, as (where, the part itself).
    One walk for "who uses this connection" and for export/import, so none is missed."""
    for i, step in enumerate(definition.get("steps") or []):
        if isinstance(step, dict) and "connection" in step:
            yield f"steps.{i}", step
    settings = definition.get("settings")
    for key, part in (settings.items() if isinstance(settings, dict) else ()):
        if isinstance(part, dict) and "connection" in part:
            yield f"settings.{key}", part


def _name_problems(session: Session, name: str, own_id: int | None) -> list[Problem]:
    if not name:
        return [Problem("name", "is required")]
    if len(name) > NAME_MAX:
        return [Problem("name", f"at most {NAME_MAX} characters")]
    if _taken(session, name, own_id):
        return [_name_taken(name)]
    return []


def _taken(session: Session, name: str, own_id: int | None) -> bool:
    """Matches like the unique constraint does (exact, case-sensitive on SQLite and PostgreSQL)."""
    query = select(Connection.id).where(Connection.name == name)
    if own_id is not None:
        query = query.where(Connection.id != own_id)
    return session.scalar(query.limit(1)) is not None


def _name_taken(name: str) -> Problem:
    return Problem("name", f"a connection named '{name}' already exists")


def _commit(session: Session, name: str, own_id: int | None) -> None:
    """Commit; the unique constraint stays the last line of defence, so a name taken between
    the check and the commit (another process) is the same field error, not a crash."""
    try:
        session.commit()
    except IntegrityError as exc:
        session.rollback()
        text = str(exc.orig).lower()
        if ("unique" in text and "name" in text) or _taken(session, name, own_id):
            raise RecipeInvalid([_name_taken(name)]) from None
        raise


def _split(kind: str, values: dict[str, Any], existing_secrets: dict[str, Any],
           clear: frozenset[str]) -> tuple[dict[str, Any], dict[str, Any], list[Problem]]:
    ctype = CREDENTIALS.get(kind)
    if ctype is None:
        raise RecipeInvalid([Problem("kind", f"unknown connection type '{kind}'")])
    problems = [Problem(n, "only a saved secret can be cleared")
                for n in sorted(clear - ctype.secret_names)]
    settings: dict[str, Any] = {}
    secrets: dict[str, Any] = {}
    for f in ctype.fields:
        value = values.get(f.name)
        if f.secret and f.name in clear:
            if f.required:
                problems.append(Problem(f.name, "is required, so it cannot be cleared: enter a new value"))
            elif value not in (None, ""):
                problems.append(Problem(f.name, "enter a new value or clear the saved one, not both"))
            continue
        if f.secret:
            # A blank secret on edit keeps the stored one: secrets are never shown again.
            value = value if value not in (None, "") else existing_secrets.get(f.name)
        if f.required and value in (None, ""):
            problems.append(Problem(f.name, "is required"))
        if value in (None, ""):
            value = f.default
        if value is None:
            continue
        if f.check is not None and value != "" and (problem := f.check(value)):
            problems.append(Problem(f.name, problem))
        (secrets if f.secret else settings)[f.name] = value
    return settings, secrets, problems


def create(session: Session, box: SecretBox, name: str, kind: str, values: dict[str, Any]) -> Connection:
    """Validate (name free and at most ``NAME_MAX`` long, required fields) and insert."""
    name = name.strip()
    settings, secrets, problems = _split(kind, values, {}, frozenset())
    problems = _name_problems(session, name, None) + problems
    if problems:
        raise RecipeInvalid(problems)
    conn = Connection(name=name, kind=kind, settings=settings,
                      secret_blob=box.encrypt(secrets) if secrets else None)
    session.add(conn)
    _commit(session, name, None)
    return conn


def update(session: Session, box: SecretBox, conn: Connection, name: str, values: dict[str, Any], *,
           clear: Iterable[str] = ()) -> Connection:
    """Validate and save. A blank secret keeps the stored one; the optional secrets named in
    ``clear`` are removed (blank cannot mean both "keep" and "remove")."""
    name = name.strip()
    settings, secrets, problems = _split(conn.kind, values, box.decrypt(conn.secret_blob), frozenset(clear))
    problems = _name_problems(session, name, conn.id) + problems
    if problems:
        raise RecipeInvalid(problems)
    conn.name = name
    conn.settings = settings
    conn.secret_blob = box.encrypt(secrets) if secrets else None
    _commit(session, name, conn.id)
    return conn


def usage(session: Session) -> dict[int, list[Recipe]]:
    """Recipes by connection id, counting every reference in each recipe's current version
    (steps, and settings such as ``verify`` and ``alert``): a signing secret that only a
    "Verify the sender" setting uses must not look unused and be deleted."""
    rows = session.execute(
        select(Recipe, RecipeVersion.definition).join(
            RecipeVersion, (RecipeVersion.recipe_id == Recipe.id)
            & (RecipeVersion.version == Recipe.current_version)).order_by(Recipe.name, Recipe.id)
    )
    found: dict[int, list[Recipe]] = {}
    for recipe, definition in rows:
        ids = {connection_id(part.get("connection")) for _, part in references(definition or {})}
        for cid in ids:
            if cid is not None:
                found.setdefault(cid, []).append(recipe)
    return found


def users_of(session: Session, conn: Connection) -> list[Recipe]:
    """Recipes whose current version uses the connection anywhere (see ``usage``)."""
    return usage(session).get(conn.id, [])


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
    """The clear-text secrets, so the runner can scrub them from anything it records, and the
    forms they travel in: a Basic ``Authorization`` carries base64("user:password"), which an
    echoing API sends back and which decodes to the password."""
    if conn is None:
        return []
    secrets = box.decrypt(conn.secret_blob)
    values = [v for v in secrets.values() if isinstance(v, str)]
    user, password = (conn.settings or {}).get("username"), secrets.get("password")
    if isinstance(user, str) and isinstance(password, str) and password:
        values.append(base64.b64encode(f"{user}:{password}".encode()).decode("ascii"))
    return values


def run_test(box: SecretBox, conn: Connection, http: OutboundClient, timeout: float = 10.0) -> tuple[bool, str]:
    """The connection type's test with the stored credentials: (passed, what was found or
    what is wrong). Nothing is written; the caller must not hold a write transaction, since
    this talks to the service."""
    ctype = CREDENTIALS.get(conn.kind)
    if ctype is None or ctype.test is None:
        return False, f"a {conn.kind} connection has no test"
    try:
        creds = credentials_for(box, conn)
    except SecretsError as exc:
        return False, str(exc)
    # a key of its own per test: a receiver that honours Idempotency-Key would drop a second test
    ctx = ActionContext(inputs={}, credentials=creds, http=http,
                        idempotency_key=f"hookline-test-{conn.id}-{token_hex(6)}",
                        smtp_timeout=timeout)
    try:
        return True, ctype.test(ctx)
    except ConnectorError as exc:
        return False, redact_values(exc.message, secret_values(box, conn))
