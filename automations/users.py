"""Web UI accounts: creation with validation, password checks and roles.

Passwords are hashed with werkzeug's ``generate_password_hash`` (scrypt); an unknown email
still costs one hash check so response times do not tell which accounts exist."""
from __future__ import annotations

import re

from sqlalchemy import func, select
from sqlalchemy.orm import Session
from werkzeug.security import check_password_hash, generate_password_hash

from .clock import utcnow
from .models import User

ROLES = ("viewer", "editor", "admin")  # each role may do everything the ones before it may
MIN_PASSWORD = 10
EMAIL_RE = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")
_DUMMY_HASH = generate_password_hash("hookline-dummy-password")


class UserInvalid(ValueError):
    pass


def normalize_email(email: str) -> str:
    return (email or "").strip().lower()


def role_at_least(role: str | None, needed: str) -> bool:
    return role in ROLES and ROLES.index(role) >= ROLES.index(needed)


def validate(email: str, password: str, role: str) -> None:
    if not EMAIL_RE.match(email) or len(email) > 254:
        raise UserInvalid("email: not a valid email address")
    if len(password or "") < MIN_PASSWORD:
        raise UserInvalid(f"password: must be at least {MIN_PASSWORD} characters")
    if role not in ROLES:
        raise UserInvalid(f"role: must be one of {', '.join(ROLES)}")


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
        check_password_hash(_DUMMY_HASH, password or "")
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
