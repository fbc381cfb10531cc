"""What each role sees, the Users pages (admins) and the Account page (everyone), through the
real forms: buttons and links only for what the role may do, user administration that never
leaves no admin, sessions ended by role and password changes, and CSRF on every new form."""
from __future__ import annotations

import html
import re
import threading
from html.parser import HTMLParser
from urllib.parse import urlsplit

import pytest
from sqlalchemy import select

from automations import connections, recipes, users
from automations.models import Run, User
from tests.conftest import PASSWORD, csrf_token_in, ensure_user, login, make_app, signed_in_client
from web.auth import LoginThrottle
from web.extensions import core, db

V, E, A = "viewer", "editor", "admin"
ROLES = (V, E, A)
NEW_PASSWORD = "a brand new passphrase"


@pytest.fixture
def world(app):
    """An active recipe with a queued run, a paused one with a held run, a connection, and a
    viewer to administer."""
    with app.app_context():
        active = recipes.create(db.session, "Orders")
        paused = recipes.create(db.session, "Signups")
        recipes.set_paused(db.session, paused, True, "maintenance")
        ids = {"r": active.id, "p": paused.id}
        tokens = (active.token, paused.token)
        ids["c"] = connections.create(db.session, core().secret_box, "ops", "slack_webhook",
                                      {"webhook_url": "http://127.0.0.1:9/x"}).id
    client = app.test_client()
    for token in tokens:
        assert client.post(f"/hooks/{token}", json={"n": 1}).status_code == 202
    with app.app_context():
        runs = {r.recipe_id: r for r in db.session.scalars(select(Run))}
        ids["run"], ids["held"] = runs[ids["r"]].id, runs[ids["p"]].id
        assert runs[ids["p"]].status == "held"
    ensure_user(app, V, "target@example.com")
    with app.app_context():
        ids["u"] = db.session.scalar(select(User.id).where(User.email == "target@example.com"))
    return ids


# --- what each role sees ------------------------------------------------------------------

# page → [(what, marker in its HTML, the lowest role that sees it)]
PAGES: dict[str, list[tuple[str, str, str]]] = {
    "/recipes/": [
        ("nav recipes", 'href="/recipes/"', V),
        ("nav runs", 'href="/runs/"', V),
        ("nav connections", 'href="/connections/"', A),
        ("nav users", 'href="/users/"', A),
        ("account link", 'href="/account"', V),
        ("sign out", 'action="/logout"', V),
        ("recipe link", 'href="/recipes/{r}"', V),
        ("runs of recipe", 'href="/runs/?recipe={r}"', V),
        ("new recipe", 'href="/recipes/new"', E),
        ("edit recipe", 'href="/recipes/{r}/edit"', E),
    ],
    "/recipes/{r}": [
        ("inbound URL", 'id="inbound-url"', V),
        ("definition", "Definition as JSON", V),
        ("all runs", 'href="/runs/?recipe={r}"', V),
        ("active note", "events run as they arrive", V),
        ("edit", 'href="/recipes/{r}/edit"', E),
        ("delete", 'href="/recipes/{r}/delete"', E),
        ("pause", 'action="/recipes/{r}/pause"', E),
        ("rotate token", 'action="/recipes/{r}/token"', E),
    ],
    "/recipes/{p}": [
        ("paused note", "<strong>Paused</strong>: maintenance", V),
        ("resume", 'action="/recipes/{p}/resume"', E),
        ("resume and run held", 'value="run"', E),
    ],
    "/runs/?status=queued": [
        ("run link", 'href="/runs/{run}"', V),
        ("filter form", 'id="status" name="status"', V),
        ("bulk replay", 'href="/runs/bulk-replay?status=queued"', E),
    ],
    "/runs/{run}": [
        ("request body", 'id="event-body"', V),
        ("recipe link", 'href="/recipes/{r}"', V),
        ("replay", 'action="/runs/{run}/replay"', E),
    ],
    "/runs/{held}": [
        ("held, and why", 'id="held-note"', V),
        ("replay", 'action="/runs/{held}/replay"', E),
    ],
    "/connections/": [
        ("connection name", ">ops<", V),
        ("used by", "no recipe", V),
        ("new connection", 'href="/connections/new"', A),
        ("edit connection", 'href="/connections/{c}/edit"', A),
        ("delete connection", 'href="/connections/{c}/delete"', A),
    ],
    "/account": [
        ("change password form", 'id="account-form"', V),
        ("nav users", 'href="/users/"', A),
    ],
}


@pytest.mark.parametrize("role", ROLES)
def test_each_role_sees_only_what_it_may_use(app, world, role):
    client = signed_in_client(app, role)
    wrong = []
    for page, markers in PAGES.items():
        resp = client.get(page.format(**world))
        assert resp.status_code == 200, page
        text = resp.get_data(as_text=True)
        for what, marker, lowest in markers:
            expected = users.role_at_least(role, lowest)
            if (marker.format(**world) in text) is not expected:
                wrong.append(f"{role} {'should' if expected else 'should not'} see {what} on {page}")
    assert wrong == []


@pytest.mark.parametrize("role", ROLES)
def test_empty_lists_offer_creation_only_to_who_may_create(app, role):
    client = signed_in_client(app, role)
    recipes_page = client.get("/recipes/").get_data(as_text=True)
    conns_page = client.get("/connections/").get_data(as_text=True)
    assert ('href="/recipes/new"' in recipes_page) is (role != V)
    assert ('href="/connections/new"' in conns_page) is (role == A)


class Targets(HTMLParser):
    """Every link and every form (method, action) of a page."""

    def __init__(self) -> None:
        super().__init__()
        self.links: list[str] = []
        self.forms: list[tuple[str, str | None]] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = dict(attrs)
        if tag == "a" and a.get("href"):
            self.links.append(a["href"] or "")
        elif tag == "form":
            self.forms.append(((a.get("method") or "get").upper(), a.get("action")))


@pytest.mark.parametrize("role", ROLES)
def test_no_page_offers_a_link_or_form_the_role_cannot_use(app, world, role):
    """Crawl every page reachable by links from the navigation: each link and each form must
    lead to a view whose ``@requires`` the role passes (so a viewer never sees a button that
    ends in "Not allowed")."""
    from web.auth import required_role

    client = signed_in_client(app, role)
    adapter = app.url_map.bind("localhost")
    queue, seen, forms = ["/recipes/", "/runs/", "/connections/", "/account"], set(), 0
    with app.app_context():
        while queue and len(seen) < 300:
            url = queue.pop(0)
            if url in seen:
                continue
            seen.add(url)
            resp = client.get(url, follow_redirects=True)
            assert resp.status_code == 200, (role, url)
            page = Targets()
            page.feed(resp.get_data(as_text=True))
            for href in page.links:
                parts = urlsplit(href)
                if parts.scheme or parts.netloc or not href.startswith("/"):
                    continue
                endpoint = adapter.match(parts.path, method="GET")[0]
                assert users.role_at_least(role, required_role(endpoint)), \
                    f"{url} links to {href} ({endpoint}, needs {required_role(endpoint)}) for a {role}"
                queue.append(href)
            for method, action in page.forms:
                target = urlsplit(action or url).path
                endpoint = adapter.match(target, method=method)[0]
                assert users.role_at_least(role, required_role(endpoint)), \
                    f"{url} has a form to {method} {target} ({endpoint}) for a {role}"
                forms += 1
    reached = {A: "/users/{u}/delete", E: "/recipes/{r}/edit", V: "/runs/{held}"}[role]
    assert reached.format(**world) in seen, sorted(seen)
    assert forms > len(seen)  # at least the sign-out form on each page
    assert ("/users/" in seen) is (role == A)


# --- Users pages --------------------------------------------------------------------------

def errors_for(page: str, field_id: str) -> list[str]:
    """The error texts rendered next to one field (in its ``<id>-note`` block)."""
    m = re.search(rf'id="{re.escape(field_id)}-note">(.*?)</div>', page, re.DOTALL)
    return [html.unescape(e) for e in re.findall(r'<p class="error">(.*?)</p>', m.group(1))] if m else []


def form_errors(page: str) -> list[str]:
    return [html.unescape(e) for e in re.findall(r'<p class="flash flash-error" role="alert">(.*?)</p>', page)]


def accounts(app) -> dict[str, tuple[str, int]]:
    """email → (role, session_version)."""
    with app.app_context():
        return {u.email: (u.role, u.session_version) for u in db.session.scalars(select(User))}


def user_id(app, email: str) -> int:
    with app.app_context():
        return db.session.scalar(select(User.id).where(User.email == email))


def signed_in(client) -> bool:
    return client.get("/recipes/").status_code == 200


def new_user(email="new@example.com", role="editor", password=PASSWORD, confirm=None):
    return {"email": email, "role": role, "password": password,
            "confirm": password if confirm is None else confirm}


def test_users_page_lists_every_user(app, client):
    assert login(app.test_client(), ensure_user(app, V, "zoe@example.com")).status_code == 302
    with app.app_context():
        users.create_user(db.session, "ed@example.com", PASSWORD, E)  # never signed in
    page = client.get("/users/").get_data(as_text=True)
    rows = re.findall(r'<tr data-user="([^"]+)">(.*?)</tr>', page, re.DOTALL)
    assert [email for email, _ in rows] == ["admin@example.com", "ed@example.com", "zoe@example.com"]
    by_email = dict(rows)
    assert "<td>admin</td>" in by_email["admin@example.com"] and "(you)" in by_email["admin@example.com"]
    assert "<td>editor</td>" in by_email["ed@example.com"] and "never" in by_email["ed@example.com"]
    assert "<td>viewer</td>" in by_email["zoe@example.com"]
    assert by_email["zoe@example.com"].count("<time") == 2  # created and last sign-in


def test_admin_adds_a_user_who_can_then_sign_in(app, client):
    resp = client.post("/users/new", data=new_user(" New@Example.com "))
    assert resp.status_code == 302 and resp.location == "/users/"
    assert "User new@example.com (editor) added." in client.get("/users/").get_data(as_text=True)
    assert accounts(app)["new@example.com"][0] == E
    fresh = app.test_client()
    assert login(fresh, "new@example.com").status_code == 302
    assert fresh.get("/recipes/new").status_code == 200 and fresh.get("/users/").status_code == 403


@pytest.mark.parametrize("data,field,message", [
    (new_user(email="not-an-email"), "email", "not a valid email address"),
    (new_user(email="admin@example.com"), "email", "a user admin@example.com already exists"),
    (new_user(password="short", confirm="short"), "password", "must be at least 10 characters"),
    (new_user(confirm="something else"), "confirm", "Passwords differ."),
    (new_user(role="owner"), "role", "Not a valid choice."),
    (new_user(email=""), "email", "This field is required."),
])
def test_add_user_errors_are_shown_on_their_fields(app, client, data, field, message):
    before = accounts(app)
    resp = client.post("/users/new", data=data)
    page = resp.get_data(as_text=True)
    assert resp.status_code == 200
    assert any(message in e for e in errors_for(page, field)), errors_for(page, field)
    assert accounts(app) == before


def test_change_role_ends_that_users_sessions(app, client):
    editor = signed_in_client(app, E)
    uid = user_id(app, "editor@example.com")
    assert client.get(f"/users/{uid}").status_code == 200
    resp = client.post(f"/users/{uid}/role", data={"role": V})
    assert resp.status_code == 302 and resp.location == f"/users/{uid}"
    assert "editor@example.com is now viewer" in client.get(resp.location).get_data(as_text=True)
    assert not signed_in(editor)  # their old cookie stopped working
    again = signed_in_client(app, E)  # ensure_user finds the account: it signs in as viewer now
    assert again.get("/recipes/new").status_code == 403
    assert accounts(app)["editor@example.com"][0] == V
    assert signed_in(client)


def test_same_role_changes_nothing(app, client):
    editor = signed_in_client(app, E)
    before = accounts(app)
    resp = client.post(f"/users/{user_id(app, 'editor@example.com')}/role", data={"role": E}, follow_redirects=True)
    assert "already is editor" in resp.get_data(as_text=True)
    assert accounts(app) == before and signed_in(editor)


def test_reset_password_ends_sessions_and_replaces_the_password(app, client):
    viewer = signed_in_client(app, V)
    uid = user_id(app, "viewer@example.com")
    short = client.post(f"/users/{uid}/password", data={"password": "short", "confirm": "short"})
    assert "must be at least 10 characters" in errors_for(short.get_data(as_text=True), "password")
    mismatch = client.post(f"/users/{uid}/password", data={"password": NEW_PASSWORD, "confirm": "x"})
    assert errors_for(mismatch.get_data(as_text=True), "confirm") == ["Passwords differ."]
    assert signed_in(viewer)  # nothing happened yet
    resp = client.post(f"/users/{uid}/password", data={"password": NEW_PASSWORD, "confirm": NEW_PASSWORD})
    assert resp.status_code == 302
    assert not signed_in(viewer)
    assert login(app.test_client(), "viewer@example.com", PASSWORD).status_code == 200  # old: refused
    assert login(app.test_client(), "viewer@example.com", NEW_PASSWORD).status_code == 302


def test_delete_user_ends_their_sessions(app, client):
    editor = signed_in_client(app, E)
    uid = user_id(app, "editor@example.com")
    confirm = client.get(f"/users/{uid}/delete").get_data(as_text=True)
    assert "Delete editor@example.com?" in confirm
    resp = client.post(f"/users/{uid}/delete")
    assert resp.status_code == 302 and resp.location == "/users/"
    assert "editor@example.com" not in accounts(app)
    assert not signed_in(editor)
    assert login(app.test_client(), "editor@example.com").status_code == 200  # no such user now
    assert client.get(f"/users/{uid}").status_code == 404


def test_the_last_admin_cannot_be_demoted_or_deleted(app, client):
    uid = user_id(app, "admin@example.com")
    before = accounts(app)
    for role in (E, V):
        page = client.post(f"/users/{uid}/role", data={"role": role}).get_data(as_text=True)
        assert errors_for(page, "role")[0].startswith("admin@example.com is the last admin and cannot be demoted")
    page = client.post(f"/users/{uid}/delete").get_data(as_text=True)
    assert any("is the last admin and cannot be deleted" in e for e in form_errors(page)), form_errors(page)
    assert accounts(app) == before  # nothing changed, no session ended
    assert client.get("/users/").status_code == 200


def test_with_a_second_admin_an_admin_may_step_down(app, client):
    ensure_user(app, A, "second@example.com")
    second = app.test_client()
    assert login(second, "second@example.com").status_code == 302
    me = user_id(app, "admin@example.com")
    elsewhere = app.test_client()  # the first admin signed in in another browser too
    assert login(elsewhere, "admin@example.com").status_code == 302

    resp = client.post(f"/users/{me}/role", data={"role": E})
    assert resp.status_code == 302 and resp.location == "/"  # no longer allowed on the Users pages
    page = client.get("/recipes/").get_data(as_text=True)  # this browser keeps a fresh session ...
    assert "admin@example.com is now editor" in page and 'href="/users/"' not in page
    assert not signed_in(elsewhere)  # ... the other one ended
    assert client.get("/users/").status_code == 403

    # second@ is now the last admin: it cannot step down or delete itself
    sid = user_id(app, "second@example.com")
    page = second.post(f"/users/{sid}/role", data={"role": V}).get_data(as_text=True)
    assert "is the last admin" in errors_for(page, "role")[0]
    assert accounts(app)["second@example.com"][0] == A


def test_an_admin_may_delete_themselves_when_another_admin_remains(app, client):
    ensure_user(app, A, "second@example.com")
    resp = client.post(f"/users/{user_id(app, 'admin@example.com')}/delete")
    assert resp.status_code == 302 and resp.location == "/login"
    assert not signed_in(client)
    assert set(accounts(app)) == {"second@example.com"}


def test_an_admin_resetting_their_own_password_stays_signed_in(app, client):
    elsewhere = signed_in_client(app, A)
    resp = client.post(f"/users/{user_id(app, 'admin@example.com')}/password",
                       data={"password": NEW_PASSWORD, "confirm": NEW_PASSWORD})
    assert resp.status_code == 302
    assert signed_in(client) and not signed_in(elsewhere)


def test_last_admin_rule_in_the_engine(app):
    ensure_user(app, A)
    ensure_user(app, E)
    with app.app_context():
        admin = db.session.scalar(select(User).where(User.role == A))
        version = admin.session_version
        for attempt in (lambda: users.set_role(db.session, admin, V), lambda: users.delete_user(db.session, admin)):
            with pytest.raises(users.LastAdmin):
                attempt()
            db.session.rollback()
        with pytest.raises(users.UserInvalid, match="role: must be one of"):
            users.set_role(db.session, admin, "root")
        assert (admin.role, admin.session_version) == (A, version)
        editor = db.session.scalar(select(User).where(User.role == E))
        assert users.set_role(db.session, editor, A) is True
        assert users.set_role(db.session, editor, A) is False  # unchanged: sessions kept
        assert users.set_role(db.session, admin, V) is True  # editor@ is an admin now
        assert [u.email for u in users.all_users(db.session) if u.role == A] == ["editor@example.com"]


@pytest.mark.parametrize("role", (V, E))
def test_only_admins_reach_the_users_pages(app, role):
    client = signed_in_client(app, role)
    uid = user_id(app, f"{role}@example.com")
    before = accounts(app)
    for method, url, data in [("GET", "/users/", None), ("GET", "/users/new", None),
                              ("POST", "/users/new", new_user()), ("GET", f"/users/{uid}", None),
                              ("POST", f"/users/{uid}/role", {"role": A}),
                              ("POST", f"/users/{uid}/password", {"password": NEW_PASSWORD, "confirm": NEW_PASSWORD}),
                              ("GET", f"/users/{uid}/delete", None), ("POST", f"/users/{uid}/delete", {})]:
        resp = client.open(url, method=method, data=data)
        assert resp.status_code == 403, url
        assert "needs the <strong>admin</strong> role" in resp.get_data(as_text=True)
    assert accounts(app) == before


# --- Account: change my password ----------------------------------------------------------

def change(current=PASSWORD, password=NEW_PASSWORD, confirm=None):
    return {"current_password": current, "password": password,
            "confirm": password if confirm is None else confirm}


@pytest.mark.parametrize("data,field,message", [
    (change(current="not my password"), "current_password", "is not your current password"),
    (change(current=""), "current_password", "This field is required."),
    (change(password="short", confirm="short"), "password", "must be at least 10 characters"),
    (change(confirm="a different one"), "confirm", "Passwords differ."),
    (change(password=PASSWORD), "password", "is the same as the current password"),
])
def test_change_my_password_errors_on_their_fields(app, data, field, message):
    client = signed_in_client(app, V)
    elsewhere = signed_in_client(app, V)
    before = accounts(app)
    resp = client.post("/account", data=data)
    assert resp.status_code == 200
    assert errors_for(resp.get_data(as_text=True), field) == [message]
    assert accounts(app) == before and signed_in(elsewhere)
    assert login(app.test_client(), "viewer@example.com", PASSWORD).status_code == 302


@pytest.mark.parametrize("role", ROLES)
def test_change_my_password_ends_my_other_sessions(app, role):
    client = signed_in_client(app, role)
    elsewhere = signed_in_client(app, role)
    page = client.get("/account").get_data(as_text=True)
    assert f"{role}@example.com" in page and 'id="account-form"' in page
    resp = client.post("/account", data=change())
    assert resp.status_code == 302 and resp.location == "/account"
    assert "Password changed. You were signed out everywhere else." in client.get("/account").get_data(as_text=True)
    assert signed_in(client) and not signed_in(elsewhere)
    assert login(app.test_client(), f"{role}@example.com", PASSWORD).status_code == 200
    assert login(app.test_client(), f"{role}@example.com", NEW_PASSWORD).status_code == 302


def test_guessing_the_current_password_is_throttled(app):
    now = [1000.0]
    app.extensions["hookline_login_throttle"] = LoginThrottle(5, 900, clock=lambda: now[0])
    client = signed_in_client(app, E)
    for i in range(5):
        assert client.post("/account", data=change(current=f"guess {i}")).status_code == 200
    locked = client.post("/account", data=change())  # even the right one
    assert locked.status_code == 429
    assert "Too many wrong passwords" in " ".join(errors_for(locked.get_data(as_text=True), "current_password"))
    now[0] += 901
    assert client.post("/account", data=change()).status_code == 302


# --- CSRF ---------------------------------------------------------------------------------

def test_users_and_account_forms_need_the_csrf_token(tmp_path):
    app = make_app(tmp_path, WTF_CSRF_ENABLED=True)
    client = signed_in_client(app, A)  # login() posts the login form with its token
    ensure_user(app, V, "target@example.com")
    uid = user_id(app, "target@example.com")
    posts = [
        ("/users/new", new_user()),
        (f"/users/{uid}/role", {"role": E}),
        (f"/users/{uid}/password", {"password": NEW_PASSWORD, "confirm": NEW_PASSWORD}),
        (f"/users/{uid}/delete", {}),
        ("/account", change()),
    ]
    before = accounts(app)
    for url, data in posts:
        assert client.post(url, data=data).status_code == 400, url
        assert client.post(url, data={**data, "csrf_token": "forged"}).status_code == 400, url
    assert accounts(app) == before

    for page, (url, data) in zip(["/users/new", f"/users/{uid}", f"/users/{uid}", f"/users/{uid}/delete",
                                  "/account"], posts, strict=True):
        token = csrf_token_in(client.get(page).get_data(as_text=True))
        resp = client.post(url, data={**data, "csrf_token": token})
        assert resp.status_code == 302, (url, resp.get_data(as_text=True)[:2000])
    after = accounts(app)
    assert "target@example.com" not in after and after["new@example.com"][0] == E
    assert signed_in(client)  # the own password change kept this browser signed in


# --- two admins demoting each other at once (PostgreSQL: row locks) ------------------------

@pytest.mark.postgres
def test_two_admins_cannot_demote_each_other_at_once_on_postgres():
    from automations.db import make_engine, make_session_factory
    from automations.schema import create_schema
    from tests.pg import temp_database

    databases = temp_database()
    engine = make_engine(next(databases))
    try:
        create_schema(engine)
        sessions = make_session_factory(engine)
        with sessions() as s:
            for email in ("a@example.com", "b@example.com"):
                users.create_user(s, email, PASSWORD, A)
        first, second = sessions(), sessions()
        a = first.scalar(select(User).where(User.email == "a@example.com"))
        b = second.scalar(select(User).where(User.email == "b@example.com"))
        users._refuse_last_admin(first, a, "role", "demoted")  # a's demotion checked, not committed
        a.role = E
        first.flush()
        outcome: list[object] = []

        def demote_b() -> None:
            try:
                outcome.append(users.set_role(second, b, E))
            except users.UserInvalid as exc:
                outcome.append(exc)
                second.rollback()

        worker = threading.Thread(target=demote_b)
        worker.start()
        worker.join(0.5)
        assert worker.is_alive()  # waits for a's transaction instead of counting two admins
        first.commit()
        worker.join(10)
        assert len(outcome) == 1 and isinstance(outcome[0], users.LastAdmin), outcome
        first.close()
        second.close()
        with sessions() as s:
            assert {u.email: u.role for u in users.all_users(s)} == {"a@example.com": E, "b@example.com": A}
    finally:
        engine.dispose()
        next(databases, None)
