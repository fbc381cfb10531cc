"""Connection pages. Secret fields are password inputs that are never filled in: once saved,
a secret only leaves the engine for a connector's ``run``. So a form shown again after an
error says which typed secrets must be typed again, and a saved optional secret is removed
with its own "Clear" box (blank means keep)."""
from __future__ import annotations

from flask import Blueprint, abort, flash, redirect, render_template, request, url_for
from sqlalchemy import select
from werkzeug.wrappers import Response

from automations import connections
from automations.connections import ConnectionInUse
from automations.models import Connection
from automations.recipes import RecipeInvalid
from automations.secrets import SecretsError
from connectors.base import CredentialType
from connectors.registry import CREDENTIALS

from .auth import requires
from .extensions import core, db
from .form_fields import CredentialForm
from .forms import ConnectionForm, credential_form_class

bp = Blueprint("connections", __name__, url_prefix="/connections")

PREFIX = "cred-"  # keeps a credential field called "name" apart from the connection's name


def _ctype(kind: str) -> CredentialType:
    ctype = CREDENTIALS.get(kind)
    if ctype is None:
        abort(404)
    return ctype


def _saved_secret_names(conn: Connection) -> frozenset[str]:
    """Which secrets are stored (names only), so the form can say "saved"."""
    try:
        return frozenset(core().secret_box.decrypt(conn.secret_blob))
    except SecretsError as exc:
        flash(str(exc), "error")
        return frozenset()


def _show(exc: RecipeInvalid, form: ConnectionForm, values: CredentialForm) -> None:
    for p in exc.problems:
        if p.where == "name":
            form.name.errors = [*form.name.errors, p.message]
        elif not values.add_error(p.where, p.message):
            flash(str(p), "error")


def _render(form: ConnectionForm, values: CredentialForm, ctype: CredentialType,
            conn: Connection | None) -> str:
    if values.errors or form.name.errors:  # shown again: typed secrets did not survive the trip
        values.flag_typed_secrets()
    return render_template("connections/edit.html", form=form, values=values, ctype=ctype, conn=conn)


@bp.get("/")
def index() -> str:
    rows = list(db.session.scalars(select(Connection).order_by(Connection.name)))
    used = connections.usage(db.session)
    users = {c.id: used.get(c.id, []) for c in rows}
    return render_template("connections/index.html", connections=rows, users=users, types=CREDENTIALS)


@bp.get("/new")
@requires("admin")
def choose() -> str:
    return render_template("connections/choose.html", types=CREDENTIALS)


@bp.route("/new/<kind>", methods=["GET", "POST"])
@requires("admin")
def new(kind: str) -> Response | str:
    ctype = _ctype(kind)
    form = ConnectionForm()
    posted = request.form if request.method == "POST" else None
    values = credential_form_class(kind)(formdata=posted, prefix=PREFIX)
    if posted is not None and values.validate():
        try:
            conn = connections.create(db.session, core().secret_box, form.name.data or "", kind,
                                      values.values())
        except RecipeInvalid as exc:
            db.session.rollback()
            _show(exc, form, values)
        else:
            flash(f"Connection '{conn.name}' saved.", "success")
            return redirect(url_for(".index"))
    return _render(form, values, ctype, None)


@bp.route("/<int:conn_id>/edit", methods=["GET", "POST"])
@requires("admin")
def edit(conn_id: int) -> Response | str:
    conn = db.get_or_404(Connection, conn_id)
    ctype = _ctype(conn.kind)
    form_cls = credential_form_class(conn.kind, _saved_secret_names(conn))
    if request.method == "GET":
        form = ConnectionForm(formdata=None, data={"name": conn.name})
        return _render(form, form_cls(data=conn.settings, prefix=PREFIX), ctype, conn)
    form = ConnectionForm()
    values = form_cls(formdata=request.form, prefix=PREFIX)
    if values.validate():
        try:
            connections.update(db.session, core().secret_box, conn, form.name.data or "", values.values(),
                               clear=values.cleared())
        except RecipeInvalid as exc:
            db.session.rollback()
            _show(exc, form, values)
        else:
            core().forget_connection(conn.id)  # this process's runs use it at once; others within 1 s
            flash(f"Connection '{conn.name}' saved.", "success")
            return redirect(url_for(".index"))
    return _render(form, values, ctype, conn)


@bp.post("/<int:conn_id>/test")
@requires("admin")
def test(conn_id: int) -> Response:
    """Try the saved credentials against the service (see ``CredentialType.test``)."""
    conn = db.get_or_404(Connection, conn_id)
    # The test talks to the network: end the transaction first (a POST's holds SQLite's write
    # lock), keeping the row as read (detached, so nothing reloads it in a new transaction).
    db.session.expunge(conn)
    db.session.rollback()
    passed, message = connections.run_test(core().secret_box, conn, core().http)
    flash(f"Test passed: {message}." if passed else f"Test failed: {message}", "success" if passed else "error")
    return redirect(url_for(".edit", conn_id=conn_id))


@bp.route("/<int:conn_id>/delete", methods=["GET", "POST"])
@requires("admin")
def delete(conn_id: int) -> Response | str:
    conn = db.get_or_404(Connection, conn_id)
    if request.method == "GET":
        return render_template("connections/delete.html", conn=conn,
                               users=connections.users_of(db.session, conn))
    name = conn.name
    try:
        connections.delete(db.session, conn)
        core().forget_connection(conn_id)
    except ConnectionInUse as exc:
        db.session.rollback()
        flash(f"Connection '{name}' cannot be deleted: {exc}.", "error")
        return redirect(url_for(".delete", conn_id=conn_id))
    flash(f"Connection '{name}' deleted.", "success")
    return redirect(url_for(".index"))
