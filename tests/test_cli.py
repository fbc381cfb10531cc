"""``hookline`` import/export: recipes as files, URLs that survive a restore."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner

from automations import connections, recipes
from tests.live import make_live_app
from web.cli import main
from web.extensions import db

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
def source(tmp_path):
    app = make_live_app(tmp_path / "a")
    with app.app_context():
        box = app.extensions["hookline"].secret_box
        conn = connections.create(db.session, box, "Team Slack", "slack_webhook",
                                  {"webhook_url": "https://hooks.slack.com/services/T0/B0/SECRETxyz"})
        signing = connections.create(db.session, box, "GitHub secret", "signing_secret", {"secret": "s3cret-value"})
        recipes.create(db.session, "Signups → Slack", {
            "fields": [{"name": "email", "path": "$.email"}],
            "steps": [{"key": "tell", "name": "Tell the team", "action": "slack_message",
                       "connection": conn.id, "inputs": {"text": "New signup: {{ email }}"}}],
            "settings": {"retry": {"max_attempts": 3},
                         "alert": {"action": "slack_message", "connection": conn.id, "inputs": {"text": "dead"}},
                         "verify": {"preset": "github", "connection": signing.id}},
        })
        recipes.create(db.session, "Paused", {"steps": []}, paused=True)
    return app


def invoke(instance: Path, *args: str, input: str | None = None):
    result = CliRunner().invoke(main, [args[0], "--instance", str(instance), *args[1:]], input=input,
                                catch_exceptions=False)
    return result


def test_export_never_contains_secrets_and_import_restores_urls(source, tmp_path):
    out = tmp_path / "recipes.yaml"
    assert invoke(Path(source.instance_path), "export", str(out)).exit_code == 0
    text = out.read_text()
    assert "SECRETxyz" not in text
    data = yaml.safe_load(text)
    assert [r["name"] for r in data["recipes"]] == ["Signups → Slack", "Paused"]
    assert data["recipes"][0]["steps"][0]["connection"] == "Team Slack"
    assert data["recipes"][0]["settings"]["alert"]["connection"] == "Team Slack"
    assert data["recipes"][0]["settings"]["verify"]["connection"] == "GitHub secret"
    assert "s3cret-value" not in text
    tokens = [r["token"] for r in data["recipes"]]

    target = tmp_path / "b" / "instance"
    refused = invoke(target, "import", str(out))
    assert refused.exit_code != 0
    assert "no connection named 'Team Slack'" in refused.output
    app_b = make_live_app(tmp_path / "b")
    with app_b.app_context():
        assert db.session.scalars(db.select(recipes.Recipe)).all() == []  # all-or-nothing
        box_b = app_b.extensions["hookline"].secret_box
        connections.create(db.session, box_b, "Team Slack",
                           "slack_webhook", {"webhook_url": "https://hooks.slack.com/services/other"})
        signing_b = connections.create(db.session, box_b, "GitHub secret", "signing_secret", {"secret": "x" * 8}).id
    ok = invoke(target, "import", str(out))
    assert ok.exit_code == 0, ok.output
    for token in tokens:
        assert f"/hooks/{token}" in ok.output
    assert ok.output.count("created") == 2
    again = invoke(target, "import", str(out))
    assert again.output.count("unchanged") == 2
    with app_b.app_context():
        restored = {r.token: r for r in db.session.scalars(db.select(recipes.Recipe))}
        assert restored[tokens[1]].is_paused
        d = recipes.current_definition(restored[tokens[0]])
        assert d["steps"][0]["inputs"] == {"text": "New signup: {{ email }}"}
        slack_b = db.session.scalar(db.select(connections.Connection).where(connections.Connection.name == "Team Slack"))
        assert d["settings"] == {"retry": {"max_attempts": 3},
                                 "alert": {"action": "slack_message", "connection": slack_b.id, "inputs": {"text": "dead"}},
                                 "verify": {"preset": "github", "connection": signing_b}}


def test_json_export_and_import_from_stdin(source, tmp_path):
    result = invoke(Path(source.instance_path), "export", "--format", "json")
    data = json.loads(result.output)
    data["recipes"][1]["name"] = "Renamed"
    out = invoke(Path(source.instance_path), "import", "-", input=json.dumps(data))
    assert out.exit_code == 0, out.output
    assert "updated  Renamed" in out.output


@pytest.mark.parametrize("content, message", [
    ("recipes: [", "not valid YAML or JSON"),
    ("{}", "expected a mapping with a 'recipes' list"),
    ("recipes:\n  - name: x\n    token: short", "token must be 22-64"),
    ("recipes:\n  - name: x\n    fields: [{name: a, path: '$..['}]", "fields.0.path"),
    ("recipes:\n  - name: x\n    steps: [{key: s, action: nope}]", "unknown action 'nope'"),
])
def test_import_refuses_bad_files_with_a_reason(tmp_path, content, message):
    f = tmp_path / "bad.yaml"
    f.write_text(content)
    result = invoke(tmp_path / "instance", "import", str(f))
    assert result.exit_code != 0
    assert message in result.output


def test_console_script_runs_init_db(tmp_path):
    exe = Path(sys.executable).with_name("hookline")
    cmd = [str(exe)] if exe.exists() else [sys.executable, "-m", "web.cli"]
    instance = tmp_path / "inst"
    proc = subprocess.run([*cmd, "init-db", "--instance", str(instance)], check=False, cwd=ROOT,
                          capture_output=True,
                          text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert (instance / "hookline.db").exists()
    assert (instance / "encryption.key").stat().st_mode & 0o077 == 0
    assert (instance / "secret_key").exists()
