"""Sign-in, sign-out, first-run setup and roles.

Every page needs a signed-in user except the inbound endpoint (senders cannot sign in), the
login and setup pages and static files. While no user exists at all, every page leads to
``/setup``, which creates the first admin and answers 404 as soon as any user exists (or use
``hookline create-user``). Roles: viewer (read only) < editor (recipes, replays) < admin
(also connections, which hold secrets, and users). Views needing more than viewer use
``@requires``; templates show a button or link only when ``can(role)`` allows its target.
"""
from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable
from functools import wraps
from typing import Any, TypeVar
from urllib.parse import urlsplit

from flask import (
    Blueprint,
    abort,
    current_app,
    flash,
    g,
    redirect,
    render_template,
    request,
    session,
    url_for,
)
from flask_wtf import FlaskForm
from werkzeug.exceptions import HTTPException
from werkzeug.wrappers import Response
from wtforms import PasswordField, StringField
from wtforms.validators import DataRequired, EqualTo

from automations import users
from automations.models import User

from .extensions import db

bp = Blueprint("auth", __name__)

# /hooks/… never reaches Flask; health checks are for load balancers and monitors
PUBLIC_ENDPOINTS = frozenset({"auth.login", "auth.setup", "static", "health.live", "health.ready"})
F = TypeVar("F", bound=Callable[..., Any])


# --- throttling ---------------------------------------------------------------------------

class LoginThrottle:
    """Failed logins per key (client address, email) in a sliding window, in memory."""

    def __init__(self, max_failures: int, window: float, clock: Callable[[], float] = time.monotonic,
                 max_keys: int = 100_000) -> None:
        self.max_failures, self.window, self._clock, self.max_keys = max_failures, window, clock, max_keys
        self._failures: dict[str, deque[float]] = {}
        self._lock = threading.Lock()

    def _recent(self, key: str, now: float) -> deque[float]:
        times = self._failures.get(key, deque())
        while times and times[0] <= now - self.window:
            times.popleft()
        return times

    def wait(self, *keys: str) -> float:
        """Seconds until a login may be tried again for these keys; 0 when allowed."""
        now = self._clock()
        with self._lock:
            waits = [times[0] + self.window - now for key in keys
                     if len(times := self._recent(key, now)) >= self.max_failures]
        return max(waits, default=0.0)

    def fail(self, *keys: str) -> None:
        now = self._clock()
        with self._lock:
            for key in keys:
                times = self._recent(key, now)
                times.append(now)
                self._failures[key] = times
            if len(self._failures) > self.max_keys:  # bounded memory under an address flood
                for key in list(self._failures)[: len(self._failures) - self.max_keys]:
                    del self._failures[key]

    def reset(self, key: str) -> None:
        with self._lock:
            self._failures.pop(key, None)


def throttle() -> LoginThrottle:
    ext = current_app.extensions
    if "hookline_login_throttle" not in ext:
        ext["hookline_login_throttle"] = LoginThrottle(current_app.config["LOGIN_MAX_FAILURES"],
                                                       float(current_app.config["LOGIN_LOCKOUT_SECONDS"]))
    return ext["hookline_login_throttle"]


# --- forms --------------------------------------------------------------------------------

class LoginForm(FlaskForm):
    email = StringField("Email", validators=[DataRequired()], render_kw={"autocomplete": "username"})
    password = PasswordField("Password", validators=[DataRequired()],
                             render_kw={"autocomplete": "current-password"})


class SetupForm(FlaskForm):
    email = StringField("Email", validators=[DataRequired()], render_kw={"autocomplete": "username"})
    password = PasswordField("Password", validators=[DataRequired()],
                             description=f"At least {users.MIN_PASSWORD} characters.",
                             render_kw={"autocomplete": "new-password"})
    confirm = PasswordField("Password again", validators=[DataRequired(), EqualTo("password", "Passwords differ.")],
                            render_kw={"autocomplete": "new-password"})


# --- session ------------------------------------------------------------------------------

def start_session(user: User) -> None:
    session.clear()  # no session fixation: a fresh session on every login
    session.permanent = True
    session["user_id"] = user.id
    session["sv"] = user.session_version


def current_user() -> User | None:
    if "hookline_user" not in g:
        user = None
        uid = session.get("user_id")
        if uid is not None:
            user = db.session.get(User, uid)
            if user is None or user.session_version != session.get("sv"):
                user = None
                session.clear()
        g.hookline_user = user
    return g.hookline_user


def safe_next(target: str | None) -> str:
    """Only a path on this site; anything else (other hosts, schemes, ``//host``) → ``/``."""
    target = (target or "").strip()
    parts = urlsplit(target)
    if (not target.startswith("/") or target.startswith("//") or "\\" in target
            or parts.scheme or parts.netloc or any(ord(c) < 32 for c in target)):
        return "/"
    return target


@bp.before_app_request
def require_login() -> Response | None:
    if request.endpoint in PUBLIC_ENDPOINTS or request.endpoint is None:
        return None
    if current_user() is not None:
        return None
    if users.count(db.session) == 0:
        return redirect(url_for("auth.setup"))
    target = request.full_path if request.query_string else request.path
    return redirect(url_for("auth.login", next=target))


def requires(role: str) -> Callable[[F], F]:
    """Refuse (403) users whose role is below ``role``."""
    def decorate(view: F) -> F:
        @wraps(view)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            user = current_user()
            if user is None or not users.role_at_least(user.role, role):
                g.needed_role = role
                abort(403)
            return view(*args, **kwargs)
        wrapper.hookline_role = role  # type: ignore[attr-defined]  # read by required_role()
        return wrapper  # type: ignore[return-value]
    return decorate


def required_role(endpoint: str | None) -> str:
    """The role a view needs: what its ``@requires`` says, else viewer (any signed-in user)."""
    view = current_app.view_functions.get(endpoint or "")
    return getattr(view, "hookline_role", "viewer")


def show_error(form: FlaskForm, exc: users.UserInvalid, *, skip_flagged: bool = False) -> None:
    """Put each ``"<field>: <message>"`` problem on that field of the form, else above the form.

    ``skip_flagged`` leaves out problems of fields the form's own checks already flagged
    (an empty email is "required", not also "not a valid email address")."""
    for problem in exc.problems or [str(exc)]:
        field, _, message = problem.partition(": ")
        if message and field in form:
            if not (skip_flagged and form[field].errors):
                form[field].errors = [*form[field].errors, message]
        else:
            form.form_errors.append(message or problem)


@bp.app_context_processor
def auth_globals() -> dict[str, Any]:
    user = current_user() if request else None
    return {"current_user": user,
            "can": lambda role: user is not None and users.role_at_least(user.role, role)}


@bp.app_errorhandler(403)
def forbidden(exc: HTTPException) -> tuple[str, int]:
    return render_template("auth/forbidden.html", needed=g.get("needed_role")), 403


# --- views --------------------------------------------------------------------------------

@bp.route("/login", methods=["GET", "POST"])
def login() -> Response | str | tuple[str, int]:
    if users.count(db.session) == 0:
        return redirect(url_for(".setup"))
    form = LoginForm()
    target = safe_next(request.args.get("next"))
    if request.method == "GET" and current_user() is not None:
        return redirect(target)
    if form.validate_on_submit():
        email = users.normalize_email(form.email.data or "")
        keys = (f"addr:{request.remote_addr}", f"email:{email}")
        wait = throttle().wait(*keys)
        if wait > 0:
            minutes = max(1, round(wait / 60))
            form.form_errors.append(f"Too many failed sign-ins. Try again in about {minutes} minute"
                                    f"{'s' if minutes != 1 else ''}.")
            resp = render_template("auth/login.html", form=form), 429
            return resp
        user = users.authenticate(db.session, email, form.password.data or "")
        if user is None:
            throttle().fail(*keys)
            form.form_errors.append("Wrong email or password.")
        else:
            throttle().reset(keys[1])
            start_session(user)
            return redirect(target)
    return render_template("auth/login.html", form=form)


@bp.post("/logout")
def logout() -> Response:
    user = current_user()
    if user is not None:
        users.end_sessions(db.session, user)  # every cookie issued so far stops working
    session.clear()
    flash("Signed out.", "success")
    return redirect(url_for(".login"))


@bp.route("/setup", methods=["GET", "POST"])
def setup() -> Response | str:
    if users.count(db.session) > 0:
        abort(404)
    form = SetupForm()
    if form.is_submitted():
        valid = form.validate()
        email, password = form.email.data or "", form.password.data or ""
        try:  # the engine's checks even when the form's failed: every error in one round trip
            users.validate(users.normalize_email(email), password, "admin")
            user = users.create_user(db.session, email, password, "admin") if valid else None
        except users.UserInvalid as exc:
            db.session.rollback()
            show_error(form, exc, skip_flagged=True)
        else:
            if user is not None:
                start_session(user)
                flash(f"Welcome. You are signed in as {user.email} (admin).", "success")
                return redirect(url_for("ui.index"))
    return render_template("auth/setup.html", form=form)
