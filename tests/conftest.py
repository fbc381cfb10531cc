"""Shared fixtures: every test gets its own app over a fresh SQLite file in ``tmp_path``.

The ``client`` fixture is signed in as an admin through the real login form; use
``signed_in_client(app, role)`` for other roles or clients of your own."""
from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient

import web.app
import web.cli
from automations import users
from tests.sinks import HttpSink
from web.extensions import db

# Every app a test builds (directly, through make_app or make_live_app, or through the CLI
# run in-process) is closed after the test: an app's writer thread keeps it alive, with its
# pool of SQLite connections (three descriptors each). Without this, the suite's process
# passes 1024 descriptors and waitress's select() fails in whichever test comes next.
_built_apps: list[Flask] = []
_create_app = web.app.create_app


def create_app(*args: Any, **kwargs: Any) -> Flask:
    app = _create_app(*args, **kwargs)
    _built_apps.append(app)
    return app


web.app.create_app = web.cli.create_app = create_app  # test modules import it after this


@pytest.fixture(autouse=True)
def _close_built_apps() -> Any:
    yield
    while _built_apps:
        core = _built_apps.pop().extensions.get("hookline")
        if core is not None:
            core.close()

TEST_CONFIG: dict[str, Any] = {
    "TESTING": True,
    "WTF_CSRF_ENABLED": False,
    "OUTBOUND_ALLOWLIST": ["127.0.0.0/8", "::1/128", "localhost"],
    "SECRET_KEY": "test",
    "HOST": "127.0.0.1",
    "PORT": 8080,
}
PASSWORD = "correct horse battery"


def make_app(tmp_path: Any, **overrides: Any) -> Flask:
    """An app over a database of its own; ``overrides`` change the test configuration."""
    return create_app({**TEST_CONFIG, **overrides}, instance_path=str(tmp_path / "instance"))


def ensure_user(app: Flask, role: str = "admin", email: str | None = None) -> str:
    email = email or f"{role}@example.com"
    with app.app_context():
        if users.authenticate(db.session, email, PASSWORD) is None:
            users.create_user(db.session, email, PASSWORD, role)
    return email


def login(client: FlaskClient, email: str, password: str = PASSWORD, **extra: Any) -> Any:
    """POST the login form the way a browser does (with its CSRF token when CSRF is on)."""
    page = client.get("/login").get_data(as_text=True)
    found = re.search(r'name="csrf_token" type="hidden" value="([^"]+)"', page)
    data = {"email": email, "password": password, **extra}
    if found:
        data["csrf_token"] = found.group(1)
    return client.post("/login", data=data)


def signed_in_client(app: Flask, role: str = "admin") -> FlaskClient:
    client = app.test_client()
    resp = login(client, ensure_user(app, role))
    assert resp.status_code == 302, resp.get_data(as_text=True)
    return client


@pytest.fixture
def sink() -> Iterator[HttpSink]:
    """An HTTP receiver on 127.0.0.1 that answers 200 and records what it gets."""
    with HttpSink() as receiver:
        yield receiver


@pytest.fixture
def app(tmp_path: Any) -> Flask:
    return make_app(tmp_path)


@pytest.fixture
def client(app: Flask) -> FlaskClient:
    return signed_in_client(app)


def csrf_token_in(page: str) -> str:
    """The CSRF token of the first form on the page (WTForms' or a hand-written hidden input)."""
    found = re.search(r'name="csrf_token"(?: type="hidden")? value="([^"]+)"', page)
    assert found, "no csrf_token on the page"
    return found.group(1)
