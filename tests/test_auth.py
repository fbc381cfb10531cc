"""Sign-in, roles, first-run setup, throttling and the ``create-user`` command."""
from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner
from sqlalchemy import func, select

from automations import connections, recipes, users
from automations.models import Connection, Recipe, Run, User
from tests.conftest import PASSWORD, ensure_user, login, make_app, signed_in_client
from web.app import create_app
from web.auth import LoginThrottle
from web.cli import main
from web.extensions import db


@pytest.fixture
def world(app):
    """A recipe with one run and a connection; ids for building URLs."""
    with app.app_context():
        r = recipes.create(db.session, "Orders")
        rid, token = r.id, r.token
        box = app.extensions["hookline"].secret_box
        cid = connections.create(db.session, box, "ops", "slack_webhook",
                                 {"webhook_url": "http://127.0.0.1:9/x"}).id
    assert app.test_client().post(f"/hooks/{token}", json={"n": 1}).status_code == 202
    with app.app_context():
        run = db.session.scalar(select(Run.id))
        uid = users.create_user(db.session, "target@example.com", PASSWORD, "viewer").id
    return {"r": rid, "c": cid, "run": run, "token": token, "u": uid}


def snapshot(app):
    with app.app_context():
        count = {m.__name__: db.session.scalar(select(func.count()).select_from(m)) for m in (Recipe, Run, Connection)}
        recipe = db.session.scalars(select(Recipe)).first()
        conn = db.session.scalars(select(Connection)).first()
        accounts = sorted((u.email, u.role, u.password_hash, u.session_version) for u in db.session.scalars(select(User)))
        return count, (recipe.status, recipe.token, recipe.name, recipe.current_version), (conn.name,), accounts


V, E, A = "viewer", "editor", "admin"
OK, NO = 200, 403
# (method, url, data, {role: status})
TABLE = [
    ("GET", "/recipes/", None, {V: OK, E: OK, A: OK}),
    ("GET", "/recipes/{r}", None, {V: OK, E: OK, A: OK}),
    ("GET", "/runs/", None, {V: OK, E: OK, A: OK}),
    ("GET", "/runs/{run}", None, {V: OK, E: OK, A: OK}),
    ("GET", "/connections/", None, {V: OK, E: OK, A: OK}),
    ("GET", "/recipes/new", None, {V: NO, E: OK, A: OK}),
    ("GET", "/recipes/{r}/edit", None, {V: NO, E: OK, A: OK}),
    ("GET", "/recipes/{r}/delete", None, {V: NO, E: OK, A: OK}),
    ("GET", "/runs/bulk-replay?status=queued", None, {V: NO, E: OK, A: OK}),
    ("GET", "/connections/new", None, {V: NO, E: NO, A: OK}),
    ("GET", "/connections/new/slack_webhook", None, {V: NO, E: NO, A: OK}),
    ("GET", "/connections/{c}/edit", None, {V: NO, E: NO, A: OK}),
    ("GET", "/connections/{c}/delete", None, {V: NO, E: NO, A: OK}),
    ("POST", "/recipes/new", {"name": "New one"}, {V: NO, E: 302, A: 302}),
    ("POST", "/recipes/{r}/edit", {"name": "Renamed"}, {V: NO, E: 302, A: 302}),
    ("POST", "/recipes/{r}/pause", {}, {V: NO, E: 302, A: 302}),
    ("POST", "/recipes/{r}/resume", {}, {V: NO, E: 302, A: 302}),
    ("POST", "/recipes/{r}/token", {}, {V: NO, E: 302, A: 302}),
    ("POST", "/runs/{run}/replay", {}, {V: NO, E: 302, A: 302}),
    ("POST", "/runs/{run}/run-held", {}, {V: NO, E: 302, A: 302}),
    ("POST", "/runs/bulk-replay", {"status": "queued", "upto": "999"}, {V: NO, E: 302, A: 302}),
    ("POST", "/connections/new/slack_webhook", {"name": "x", "cred-webhook_url": "http://127.0.0.1:9/y"},
     {V: NO, E: NO, A: 302}),
    ("POST", "/connections/{c}/edit", {"name": "ops2", "cred-webhook_url": "http://127.0.0.1:9/y"},
     {V: NO, E: NO, A: 302}),
    ("POST", "/recipes/{r}/delete", {}, {V: NO, E: 302, A: 302}),
    ("POST", "/connections/{c}/delete", {}, {V: NO, E: NO, A: 302}),
    ("GET", "/account", None, {V: OK, E: OK, A: OK}),
    ("GET", "/users/", None, {V: NO, E: NO, A: OK}),
    ("GET", "/users/new", None, {V: NO, E: NO, A: OK}),
    ("GET", "/users/{u}", None, {V: NO, E: NO, A: OK}),
    ("GET", "/users/{u}/delete", None, {V: NO, E: NO, A: OK}),
    ("POST", "/users/new", {"email": "new@example.com", "role": "admin", "password": PASSWORD, "confirm": PASSWORD},
     {V: NO, E: NO, A: 302}),
    ("POST", "/users/{u}/role", {"role": "admin"}, {V: NO, E: NO, A: 302}),
    ("POST", "/users/{u}/password", {"password": PASSWORD + "!", "confirm": PASSWORD + "!"}, {V: NO, E: NO, A: 302}),
    ("POST", "/users/{u}/delete", {}, {V: NO, E: NO, A: 302}),
]
CASES = [(role, m, u, d, want[role]) for m, u, d, want in TABLE for role in (V, E, A)]


@pytest.mark.parametrize("role,method,url,data,expected", CASES,
                         ids=[f"{c[0]}-{c[1]}-{c[2]}" for c in CASES])
def test_role_table(app, world, role, method, url, data, expected):
    client = signed_in_client(app, role)
    before = snapshot(app)
    resp = client.open(url.format(**world), method=method, data=data)
    assert resp.status_code == expected, resp.get_data(as_text=True)[:500]
    if expected == NO:
        needed = "admin" if url.startswith(("/connections", "/users")) else "editor"
        assert f"needs the <strong>{needed}</strong> role" in resp.get_data(as_text=True)
        assert snapshot(app) == before  # nothing written


def test_every_page_needs_a_login_but_the_inbound_endpoint(app, world):
    ensure_user(app, "admin")
    anon = app.test_client()
    for method, url, data, _want in TABLE:
        resp = anon.open(url.format(**world), method=method, data=data)
        assert resp.status_code == 302, url
        assert resp.headers["Location"].startswith("/login?next="), url
    assert anon.get("/").headers["Location"] == "/login?next=/"
    assert snapshot(app)[0] == {"Recipe": 1, "Run": 1, "Connection": 1}
    assert anon.post(f"/hooks/{world['token']}", json={"n": 2}).status_code == 202
    assert anon.get("/static/hookline.css").status_code == 200


def test_setup_only_while_no_user_exists(app):
    anon = app.test_client()
    assert anon.get("/recipes/").headers["Location"] == "/setup"
    assert anon.get("/login").headers["Location"] == "/setup"
    short = anon.post("/setup", data={"email": "a@example.com", "password": "short", "confirm": "short"})
    assert short.status_code == 200 and "at least 10 characters" in short.get_data(as_text=True)
    resp = anon.post("/setup", data={"email": "Boss@Example.com", "password": PASSWORD, "confirm": PASSWORD})
    assert resp.status_code == 302
    assert anon.get("/recipes/").status_code == 200  # signed in as the new admin
    with app.app_context():
        user = db.session.scalars(select(User)).one()
        assert (user.email, user.role) == ("boss@example.com", "admin")
    assert anon.get("/setup").status_code == 404
    assert app.test_client().post("/setup", data={"email": "x@example.com", "password": PASSWORD,
                                                  "confirm": PASSWORD}).status_code == 404


def test_wrong_password_and_unknown_user(app):
    ensure_user(app, "admin")
    client = app.test_client()
    for email, pw in (("admin@example.com", "wrong password"), ("nobody@example.com", PASSWORD)):
        resp = login(client, email, pw)
        assert resp.status_code == 200 and "Wrong email or password" in resp.get_data(as_text=True)
    assert login(client, "ADMIN@example.com ").status_code == 302  # email is case-insensitive


@pytest.fixture
def clock(app):
    now = [1000.0]
    app.extensions["hookline_login_throttle"] = LoginThrottle(5, 900, clock=lambda: now[0])
    return now


def _client(app, addr):
    client = app.test_client()
    client.environ_base["REMOTE_ADDR"] = addr
    return client


def test_login_throttled_after_five_failures_per_email(app, clock):
    ensure_user(app, "admin")
    for i in range(5):
        assert login(_client(app, f"10.0.0.{i}"), "admin@example.com", "nope").status_code == 200
    locked = login(_client(app, "10.0.1.1"), "admin@example.com")  # even the right password
    assert locked.status_code == 429 and "Try again in about 15 minutes" in locked.get_data(as_text=True)
    clock[0] += 901
    assert login(_client(app, "10.0.1.1"), "admin@example.com").status_code == 302


def test_login_throttled_per_address(app, clock):
    ensure_user(app, "admin")
    client = _client(app, "10.9.9.9")
    for i in range(5):
        login(client, f"guess{i}@example.com", "nope")
    assert login(client, "admin@example.com").status_code == 429
    assert login(_client(app, "10.9.9.10"), "admin@example.com").status_code == 302


def test_success_resets_the_email_counter(app, clock):
    ensure_user(app, "admin")
    for _ in range(4):
        login(_client(app, "10.0.0.1"), "admin@example.com", "nope")
    assert login(_client(app, "10.0.0.2"), "admin@example.com").status_code == 302
    for _ in range(4):
        login(_client(app, "10.0.0.3"), "admin@example.com", "nope")
    assert login(_client(app, "10.0.0.3"), "admin@example.com").status_code == 302


def test_logout_invalidates_the_session(app):
    client = signed_in_client(app, "editor")
    cookie = client.get_cookie("session").value
    assert client.get("/recipes/").status_code == 200
    assert client.get("/logout").status_code == 405  # POST only
    assert client.post("/logout").headers["Location"] == "/login"
    assert client.get("/recipes/").status_code == 302
    replay = app.test_client()
    replay.set_cookie("session", cookie)  # the cookie from before the logout
    assert replay.get("/recipes/").headers["Location"].startswith("/login")


@pytest.mark.parametrize("target,expected", [
    ("https://evil.example", "/"), ("//evil.example/x", "/"), ("/\\evil.example", "/"),
    ("javascript:alert(1)", "/"), ("", "/"), ("/runs/?status=failed", "/runs/?status=failed"),
])
def test_next_must_be_a_local_path(app, target, expected):
    ensure_user(app, "admin")
    client = app.test_client()
    client.get("/login")
    resp = client.post("/login", query_string={"next": target},
                       data={"email": "admin@example.com", "password": PASSWORD})
    assert resp.status_code == 302 and resp.headers["Location"] == expected


def test_login_form_needs_the_csrf_token(tmp_path):
    app = make_app(tmp_path, WTF_CSRF_ENABLED=True)
    ensure_user(app, "admin")
    client = app.test_client()
    assert client.post("/login", data={"email": "admin@example.com", "password": PASSWORD}).status_code == 400
    assert login(client, "admin@example.com").status_code == 302  # with the token from the page
    assert client.post("/logout").status_code == 400  # logout is a form too


@pytest.mark.parametrize("public_url,secure", [("https://hooks.example.com", True), ("", False)])
def test_session_cookie_flags(tmp_path, public_url, secure):
    app = make_app(tmp_path, PUBLIC_URL=public_url)
    ensure_user(app, "admin")
    resp = login(app.test_client(), "admin@example.com")
    cookie = resp.headers["Set-Cookie"]
    assert "HttpOnly" in cookie and "SameSite=Lax" in cookie and ("Secure" in cookie) is secure
    assert app.permanent_session_lifetime.total_seconds() == 12 * 3600


def test_passwords_are_not_stored_in_clear(app):
    ensure_user(app, "admin")
    with app.app_context():
        stored = db.session.scalar(select(User.password_hash))
    assert stored.startswith("scrypt:") and PASSWORD not in stored
    assert PASSWORD.encode() not in Path(app.instance_path, "hookline.db").read_bytes()


def test_create_user_command(tmp_path, monkeypatch):
    for key in ("HOOKLINE_DATABASE_URL", "HOOKLINE_INSTANCE_PATH"):
        monkeypatch.delenv(key, raising=False)
    instance = str(tmp_path / "inst")
    runner = CliRunner()
    ok = runner.invoke(main, ["create-user", "Ann@Example.com", "--role", "admin", "--password-stdin",
                              "--instance", instance], input=PASSWORD + "\n")
    assert ok.exit_code == 0, ok.output
    assert "created admin ann@example.com" in ok.output
    prompted = runner.invoke(main, ["create-user", "bob@example.com", "--instance", instance],
                             input=f"{PASSWORD}\n{PASSWORD}\n")
    assert prompted.exit_code == 0, prompted.output
    short = runner.invoke(main, ["create-user", "c@example.com", "--password-stdin", "--instance", instance],
                          input="short\n")
    assert short.exit_code != 0 and "at least 10 characters" in short.output
    dup = runner.invoke(main, ["create-user", "ann@example.com", "--password-stdin", "--instance", instance],
                        input=PASSWORD + "\n")
    assert dup.exit_code != 0 and "already exists" in dup.output
    assert "--password-stdin" in runner.invoke(main, ["create-user", "--help"]).output

    app = create_app(instance_path=instance)
    with app.app_context():
        found = {u.email: u.role for u in db.session.scalars(select(User))}
    assert found == {"ann@example.com": "admin", "bob@example.com": "viewer"}
    client = app.test_client()
    assert login(client, "ann@example.com").status_code == 302
    assert client.get("/recipes/").status_code == 200
