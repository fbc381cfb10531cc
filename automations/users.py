"""Web UI accounts: creation with validation, password checks, roles and their
administration (role changes, password resets, deletion; never leaving no admin).

Passwords are hashed with werkzeug's ``generate_password_hash`` (scrypt); an unknown email
still costs one hash check so response times do not tell which accounts exist."""
from __future__ import annotations

import functools
import re

from sqlalchemy import func, select
from sqlalchemy.orm import Session
from werkzeug.security import check_password_hash, generate_password_hash

from .clock import utcnow
from .models import User

ROLES = ("viewer", "editor", "admin")  # each role may do everything the ones before it may
MIN_PASSWORD = 10
EMAIL_RE = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")


@functools.cache
def _dummy_hash() -> str:
    """Made on first use, not at import: scrypt needs 32 MiB, which every process (the
    worker, each CLI command) would otherwise pay at start-up."""
    return generate_password_hash("hookline-dummy-password")


class UserInvalid(ValueError):
    """One or more ``"<field>: <message>"`` problems (the form field, then the problem), so a
    form can show every one of them at once; ``str()`` joins them with "; "."""

    def __init__(self, *problems: str) -> None:
        super().__init__("; ".join(problems))
        self.problems = list(problems)


class LastAdmin(UserInvalid):
    """The change would leave no admin."""


class WrongPassword(UserInvalid):
    """The current password given to change it was not the user's password."""


def normalize_email(email: str) -> str:
    return (email or "").strip().lower()


def role_at_least(role: str | None, needed: str) -> bool:
    return role in ROLES and ROLES.index(role) >= ROLES.index(needed)


def validate(email: str, password: str, role: str) -> None:
    """Raise one ``UserInvalid`` carrying every problem, not just the first."""
    problems = []
    if not EMAIL_RE.match(email) or len(email) > 254:
        problems.append("email: not a valid email address")
    if len(password or "") < MIN_PASSWORD:
        problems.append(f"password: must be at least {MIN_PASSWORD} characters")
    if role not in ROLES:
        problems.append(f"role: must be one of {', '.join(ROLES)}")
    if problems:
        raise UserInvalid(*problems)


def create_user(session: Session, email: str, password: str, role: str = "viewer") -> User:
    email = normalize_email(email)
    validate(email, password, role)
    if session.scalar(select(User.id).where(User.email == email)) is not None:
        raise UserInvalid(f"email: a user {email} already exists")
    user = User(email=email, password_hash=generate_password_hash(password), role=role)
    session.add(user)
    session.commit()
    return user


def authenticate(session: Session, email: str, password: str) -> User | None:
    user = session.scalar(select(User).where(User.email == normalize_email(email)))
    if user is None:
        check_password_hash(_dummy_hash(), password or "")
        return None
    if not check_password_hash(user.password_hash, password or ""):
        return None
    user.last_login_at = utcnow()
    session.commit()
    return user


def count(session: Session) -> int:
    return session.scalar(select(func.count()).select_from(User)) or 0


def end_sessions(session: Session, user: User) -> None:
    """Invalidate every session cookie issued to the user so far."""
    user.session_version = (user.session_version or 1) + 1
    session.commit()


# --- administration (the Users and Account pages) ------------------------------------------
# Each function validates everything first and commits once: a refused change writes nothing.

def all_users(session: Session) -> list[User]:
    return list(session.scalars(select(User).order_by(User.email)))


def _refuse_last_admin(session: Session, user: User, field: str, doing: str) -> None:
    """Raise if ``user`` is the only admin. The admin rows are locked (``FOR UPDATE`` on
    PostgreSQL; SQLite's write transaction serializes anyway) so two admins demoting each
    other at the same moment cannot both succeed."""
    admins = session.scalars(select(User.id).where(User.role == "admin").with_for_update()).all()
    if user.id in admins and len(admins) <= 1:
        raise LastAdmin(f"{field}: {user.email} is the last admin and cannot be {doing}; "
                        "make another user admin first")


def _hash(password: str) -> str:
    if len(password or "") < MIN_PASSWORD:
        raise UserInvalid(f"password: must be at least {MIN_PASSWORD} characters")
    return generate_password_hash(password)


def set_role(session: Session, user: User, role: str) -> bool:
    """Give ``user`` another role and end their sessions; False when the role is unchanged."""
    if role not in ROLES:
        raise UserInvalid(f"role: must be one of {', '.join(ROLES)}")
    if role == user.role:
        return False
    if role != "admin":
        _refuse_last_admin(session, user, "role", "demoted")
    user.role = role
    end_sessions(session, user)  # commits
    return True


def set_password(session: Session, user: User, password: str) -> None:
    """An admin's reset: a new password, and every session of the user ends."""
    user.password_hash = _hash(password)
    end_sessions(session, user)


def change_password(session: Session, user: User, current: str, new: str) -> None:
    """The user's own change: needs the current password; every session of theirs ends (the
    caller starts a fresh one for the browser that asked)."""
    if not check_password_hash(user.password_hash, current or ""):
        raise WrongPassword("current_password: is not your current password")
    if new == current:
        raise UserInvalid("password: is the same as the current password")
    set_password(session, user, new)


def delete_user(session: Session, user: User) -> None:
    """Delete the account; its session cookies stop working since the user is gone."""
    _refuse_last_admin(session, user, "user", "deleted")
    session.delete(user)
    session.commit()
