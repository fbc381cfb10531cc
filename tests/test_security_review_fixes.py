"""Security review: recipe-file import limits, private export and database files, framing."""
from __future__ import annotations

import os
import sqlite3
import stat
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner

from automations import portability, recipes
from tests.conftest import ensure_user, make_app, signed_in_client
from tests.live import make_live_app
from web.cli import main
from web.extensions import db

ALIASES = "YAML aliases (*name) are not allowed in recipe files"
TOKEN = "a" * 32
LIMIT = 10 * 1024 * 1024  # portability.MAX_FILE_BYTES


def invoke(instance: Path, *args: str, input: str | bytes | None = None):
    return CliRunner().invoke(main, [args[0], "--instance", str(instance), *args[1:]], input=input,
                              catch_exceptions=False)


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.fixture
def umask_022():
    old = os.umask(0o022)  # the usual umask: files 0644 and folders 0755 unless we ask otherwise
    yield
    os.umask(old)


def _laughs(levels: int) -> str:
    lines = ['a: &a "lol"']
    for i in range(1, levels):
        prev = chr(ord("a") + i - 1)
        lines.append(f"{chr(ord('a') + i)}: &{chr(ord('a') + i)} [{', '.join([f'*{prev}'] * 10)}]")
    last = chr(ord("a") + levels - 1)
    return (
        "lol:\n" + "".join(f"  {line}\n" for line in lines)
        + f"recipes:\n- name: laughs\n  token: {TOKEN}\n  steps:\n"
        + "  - key: s\n    action: http_request\n    inputs:\n"
        + "      url: https://example.com/\n      method: POST\n      body_type: json\n"
        + f"      body: *{last}\n"
    )


# 1. import: no alias expansion, no unbounded file


def test_import_refuses_yaml_aliases(tmp_path):
    f = tmp_path / "laughs.yaml"
    f.write_text(_laughs(5))  # 10^4 strings from 300 bytes (the reported file: 10^8 from 1 KB)
    result = invoke(tmp_path / "instance", "import", str(f))
    assert result.exit_code != 0
    assert ALIASES in result.output
    app = make_live_app(tmp_path)
    with app.app_context():
        assert db.session.scalars(db.select(recipes.Recipe)).all() == []


def test_loads_refuses_an_alias_anywhere_even_a_harmless_one():
    with pytest.raises(portability.ImportProblem, match=r"aliases \(\*name\) are not allowed.*line 2"):
        portability.loads("x: &x 1\nrecipes: [{name: *x}]\n")


def test_import_refuses_a_file_over_the_size_limit_unparsed(tmp_path):
    f = tmp_path / "big.yaml"
    f.write_bytes(b"recipes: []\n" + b"#" * LIMIT + b"\n")
    result = invoke(tmp_path / "instance", "import", str(f))
    assert result.exit_code != 0
    assert "larger than 10 MiB" in result.output


def test_import_from_stdin_stops_reading_at_the_size_limit(tmp_path):
    result = invoke(tmp_path / "instance", "import", "-",
                    input=b"recipes: []\n" + b"#" * (LIMIT + 10))
    assert result.exit_code != 0
    assert "larger than 10 MiB" in result.output


def test_loads_refuses_text_over_the_size_limit():
    with pytest.raises(portability.ImportProblem, match="larger than 10 MiB"):
        portability.loads("recipes: []\n" + "#" * LIMIT)


def test_export_never_writes_anchors_and_reimports():
    shared = {"retry": {"max_attempts": 3}}
    steps = [{"key": "s", "action": "http_request", "inputs": {"url": "https://example.com/"}}]
    data = {"hookline": 1, "connections": [],
            "recipes": [{"name": "one", "token": "b" * 32, "steps": steps, "settings": shared},
                        {"name": "two", "token": "c" * 32, "steps": steps, "settings": shared}]}
    text = portability.dumps(data)
    assert "&id" not in text and "*id" not in text
    assert portability.loads(text) == data


def test_cli_export_of_recipes_with_equal_structures_reimports(tmp_path):
    app = make_live_app(tmp_path)
    definition = {"fields": [{"name": "email", "path": "$.email"}],
                  "steps": [{"key": "s", "name": "Call", "action": "http_request",
                             "inputs": {"method": "POST", "url": "https://example.com/x", "body_type": "json",
                                        "body": '{"e": "{{ email }}"}'}}],
                  "settings": {"retry": {"max_attempts": 3}}}
    with app.app_context():
        recipes.create(db.session, "one", definition)
        recipes.create(db.session, "two", definition)
    instance = Path(app.instance_path)
    out = tmp_path / "recipes.yaml"
    assert invoke(instance, "export", str(out)).exit_code == 0
    assert "&id" not in out.read_text()
    again = invoke(instance, "import", str(out))
    assert again.exit_code == 0, again.output
    assert again.output.count("unchanged") == 2


# 2. export: owner-only file


def test_export_file_is_created_owner_only(tmp_path, umask_022):
    app = make_live_app(tmp_path)
    with app.app_context():
        recipes.create(db.session, "one", {"steps": []}, token=TOKEN)
    out = tmp_path / "recipes.yaml"
    assert invoke(Path(app.instance_path), "export", str(out)).exit_code == 0
    assert mode(out) == 0o600
    assert TOKEN in out.read_text()

    existing = tmp_path / "old.json"
    existing.write_text("stale " * 100)
    existing.chmod(0o644)
    assert invoke(Path(app.instance_path), "export", str(existing)).exit_code == 0
    assert mode(existing) == 0o600
    assert yaml.safe_load(existing.read_text())["recipes"][0]["token"] == TOKEN


# 3. instance folder and SQLite database: owner-only when Hookline creates them


def test_fresh_instance_folder_and_database_are_owner_only(tmp_path, umask_022):
    app = make_app(tmp_path)
    instance = Path(app.instance_path)
    ensure = signed_in_client(app)  # a write: a user and a session
    assert ensure.get("/").status_code in (200, 302)
    assert mode(instance) == 0o700
    database = instance / "hookline.db"
    assert mode(database) == 0o600
    wal = instance / "hookline.db-wal"
    assert wal.exists()
    assert mode(wal) == 0o600
    shm = instance / "hookline.db-shm"
    if shm.exists():
        assert mode(shm) == 0o600


def test_an_existing_folder_and_database_keep_their_mode(tmp_path, umask_022):
    instance = tmp_path / "instance"
    instance.mkdir(mode=0o750)
    instance.chmod(0o750)
    sqlite3.connect(instance / "hookline.db").close()
    (instance / "hookline.db").chmod(0o640)
    app = make_app(tmp_path)
    signed_in_client(app)
    assert mode(instance) == 0o750
    assert mode(instance / "hookline.db") == 0o640


# 4. framing


def test_ui_pages_refuse_framing(tmp_path):
    app = make_app(tmp_path)
    ensure_user(app)
    login = app.test_client().get("/login")
    assert login.status_code == 200
    assert login.headers["X-Frame-Options"] == "DENY"
    assert login.headers.get_all("Content-Security-Policy") == ["frame-ancestors 'none'"]
    signed_in = signed_in_client(app).get("/recipes/")
    assert signed_in.status_code == 200
    assert signed_in.headers["X-Frame-Options"] == "DENY"
    assert signed_in.headers["Content-Security-Policy"] == "frame-ancestors 'none'"


def test_a_policy_already_set_is_extended_not_replaced(tmp_path):
    app = make_app(tmp_path)

    @app.after_request  # registered later, so it runs before Hookline's own hook
    def _policy(response):
        response.headers["Content-Security-Policy"] = "default-src 'self';"
        return response

    merged = app.test_client().get("/login").headers.get_all("Content-Security-Policy")
    assert merged == ["default-src 'self'; frame-ancestors 'none'"]
