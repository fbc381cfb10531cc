"""The Users pages (admins: add users, change roles, reset passwords, delete) and the Account
page (everyone: change my password). The rules (validation, never leaving no admin, ending
sessions) live in ``automations.users``; these views only map forms to it and back."""
from __future__ import annotations

from flask import Blueprint, flash, redirect, render_template, url_for
from flask_wtf import FlaskForm
from werkzeug.wrappers import Response
from wtforms import PasswordField, SelectField, StringField
from wtforms.validators import DataRequired, EqualTo

from automations import users
from automations.models import User

from .auth import current_user, requires, show_error, start_session, throttle
from .extensions import db
from .form_fields import choices

bp = Blueprint("users", __name__)

ROLE_CHOICES = choices([
    ("viewer", "viewer: reads recipes, runs and their details"),
    ("editor", "editor: also creates and changes recipes, replays runs"),
    ("admin", "admin: also manages connections (secrets) and users"),
])
NEW_PASSWORD = {"autocomplete": "new-password"}


def new_password_fields(label: str, description: str,
                        again: str = "Password again") -> tuple[PasswordField, PasswordField]:
    """A new password and its confirmation (the second must equal the first)."""
    return (PasswordField(label, validators=[DataRequired()], render_kw=NEW_PASSWORD, description=description),
            PasswordField(again, render_kw=NEW_PASSWORD,
                          validators=[DataRequired(), EqualTo("password", "Passwords differ.")]))


class NewUserForm(FlaskForm):
    email = StringField("Email", validators=[DataRequired()], render_kw={"autocomplete": "off"})
    role = SelectField("Role", choices=ROLE_CHOICES, default="viewer")
    password, confirm = new_password_fields(
        "Initial password", f"At least {users.MIN_PASSWORD} characters. Give it to them over a safe "
                            "channel; they can change it under Account.")


class RoleForm(FlaskForm):
    role = SelectField("Role", choices=ROLE_CHOICES,
                       description="Changing the role signs the user out everywhere.")


class ResetPasswordForm(FlaskForm):
    password, confirm = new_password_fields(
        "New password", f"At least {users.MIN_PASSWORD} characters. The user is signed out everywhere.")


class DeleteUserForm(FlaskForm):
    """Only the CSRF token: the confirmation page is the question."""


class ChangePasswordForm(FlaskForm):
    current_password = PasswordField("Current password", validators=[DataRequired()],
                                     render_kw={"autocomplete": "current-password"})
    password, confirm = new_password_fields("New password", f"At least {users.MIN_PASSWORD} characters.",
                                            again="New password again")


def _user(user_id: int) -> User:
    return db.get_or_404(User, user_id)


def _me() -> User:
    user = current_user()
    assert user is not None  # every view here is behind require_login
    return user


def _manage_page(user: User, role_form: RoleForm | None = None,
                 password_form: ResetPasswordForm | None = None) -> str:
    return render_template("users/manage.html", user=user, me=_me(),
                           role_form=role_form or RoleForm(formdata=None, data={"role": user.role}),
                           password_form=password_form or ResetPasswordForm(formdata=None))


def _after_change_to(user: User, message: str) -> Response:
    """Where to go after changing a user: if it was me, this browser keeps a fresh session
    (the others ended) and leaves the Users pages if I am no longer admin."""
    target = url_for(".manage", user_id=user.id)
    if user.id == _me().id:
        start_session(user)  # clears the session, flashes included: flash after it
        if not users.role_at_least(user.role, "admin"):
            target = url_for("ui.index")
    flash(message, "success")
    return redirect(target)


@bp.get("/users/")
@requires("admin")
def index() -> str:
    return render_template("users/index.html", users=users.all_users(db.session), me=_me())


@bp.route("/users/new", methods=["GET", "POST"])
@requires("admin")
def new() -> Response | str:
    form = NewUserForm()
    if form.validate_on_submit():
        try:
            user = users.create_user(db.session, form.email.data or "", form.password.data or "",
                                     form.role.data or "")
        except users.UserInvalid as exc:
            db.session.rollback()
            show_error(form, exc)
        else:
            flash(f"User {user.email} ({user.role}) added.", "success")
            return redirect(url_for(".index"))
    return render_template("users/new.html", form=form)


@bp.get("/users/<int:user_id>")
@requires("admin")
def manage(user_id: int) -> str:
    return _manage_page(_user(user_id))


@bp.post("/users/<int:user_id>/role")
@requires("admin")
def role(user_id: int) -> Response | str:
    user = _user(user_id)
    form = RoleForm()
    if form.validate_on_submit():
        try:
            changed = users.set_role(db.session, user, form.role.data or "")
        except users.UserInvalid as exc:
            db.session.rollback()
            show_error(form, exc)
        else:
            return _after_change_to(user, f"{user.email} is now {user.role}; signed out everywhere."
                                    if changed else f"{user.email} already is {user.role}.")
    return _manage_page(user, role_form=form)


@bp.post("/users/<int:user_id>/password")
@requires("admin")
def password(user_id: int) -> Response | str:
    user = _user(user_id)
    form = ResetPasswordForm()
    if form.validate_on_submit():
        try:
            users.set_password(db.session, user, form.password.data or "")
        except users.UserInvalid as exc:
            db.session.rollback()
            show_error(form, exc)
        else:
            return _after_change_to(user, f"Password of {user.email} reset; signed out everywhere.")
    return _manage_page(user, password_form=form)


@bp.route("/users/<int:user_id>/delete", methods=["GET", "POST"])
@requires("admin")
def delete(user_id: int) -> Response | str:
    user = _user(user_id)
    form = DeleteUserForm()
    if form.validate_on_submit():
        email, myself = user.email, user.id == _me().id
        try:
            users.delete_user(db.session, user)
        except users.UserInvalid as exc:
            db.session.rollback()
            show_error(form, exc)
        else:
            flash(f"User {email} deleted.", "success")
            return redirect(url_for("auth.login") if myself else url_for(".index"))
    return render_template("users/delete.html", user=user, form=form, me=_me())


@bp.route("/account", methods=["GET", "POST"])
def account() -> Response | str:
    me = _me()
    form = ChangePasswordForm()
    if form.validate_on_submit():
        key = f"account:{me.id}"  # guessing the current password is throttled like sign-in
        if throttle().wait(key) > 0:
            form.current_password.errors = [*form.current_password.errors,
                                            "Too many wrong passwords. Try again later."]
            return render_template("users/account.html", form=form, me=me), 429
        try:
            users.change_password(db.session, me, form.current_password.data or "",
                                  form.password.data or "")
        except users.UserInvalid as exc:
            db.session.rollback()
            if isinstance(exc, users.WrongPassword):
                throttle().fail(key)
            show_error(form, exc)
        else:
            throttle().reset(key)
            start_session(me)  # this browser stays signed in; every other session ended
            flash("Password changed. You were signed out everywhere else.", "success")
            return redirect(url_for(".account"))
    return render_template("users/account.html", form=form, me=me)
