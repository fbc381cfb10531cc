"""Connection secrets at rest (automations/secrets.py): keys checked at start, rotation, and
``cryptography`` loaded only when a secret is first touched, connections read at most once a
second."""
from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from cryptography.fernet import Fernet

from automations.secrets import SecretBox, SecretsError, load_or_create_key
from web.app import create_app

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("key", ["", "not base64!", "A" * 44, Fernet.generate_key()[:-4]])
def test_a_bad_key_stops_the_server_at_start(tmp_path, key):
    with pytest.raises(ValueError, match="Fernet key must be 32 url-safe base64-encoded bytes"):
        create_app({"ENCRYPTION_KEYS": [Fernet.generate_key().decode(), key]}, instance_path=str(tmp_path))


def test_no_key_at_all_is_refused():
    with pytest.raises(SecretsError, match="no encryption key"):
        SecretBox([])


def test_rotation_the_first_key_encrypts_and_every_key_decrypts():
    old, new = Fernet.generate_key(), Fernet.generate_key()
    blob = SecretBox([old]).encrypt({"token": "s3cret"})
    rotated = SecretBox([new, old])
    assert rotated.decrypt(blob) == {"token": "s3cret"}
    assert SecretBox([new]).decrypt(rotated.encrypt({"a": 1})) == {"a": 1}
    with pytest.raises(SecretsError, match="does not match"):
        SecretBox([new]).decrypt(blob)


def test_the_generated_instance_key_is_a_fernet_key(tmp_path):
    key = load_or_create_key(tmp_path / "encryption.key")
    assert (tmp_path / "encryption.key").stat().st_mode & 0o077 == 0
    assert load_or_create_key(tmp_path / "encryption.key") == key  # created once
    assert Fernet(key).decrypt(SecretBox([key]).encrypt({"x": 1})) == b'{"x":1}'


def test_cryptography_is_loaded_only_when_a_secret_is_touched(tmp_path):
    script = textwrap.dedent(f"""
        import sys
        from web.worker import worker_core
        core = worker_core({str(tmp_path / 'instance')!r})
        print('before:', 'cryptography' in sys.modules)
        core.secret_box.decrypt(core.secret_box.encrypt({{'k': 'v'}}))
        print('after:', 'cryptography' in sys.modules)
    """)
    proc = subprocess.run([sys.executable, "-c", script], check=False, cwd=ROOT, capture_output=True, text=True,
                          timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert "before: False" in proc.stdout and "after: True" in proc.stdout, proc.stdout


def test_connections_are_read_at_most_once_a_second_and_a_saved_change_applies_here_at_once(
        tmp_path, monkeypatch):
    """Every run and every signed webhook needs its connection: read from the database at most
    every CONNECTIONS_TTL, except that a change saved in this process applies at once."""
    from sqlalchemy import update

    import automations.core as core_mod
    from automations import connections
    from automations.models import Connection
    from web.extensions import db

    app = create_app({"TESTING": True}, instance_path=str(tmp_path))
    core = app.extensions["hookline"]
    with app.app_context():
        conn = connections.create(db.session, core.secret_box, "api", "http_auth",
                                  {"scheme": "bearer", "token": "t1"})
        cid = conn.id
    assert core.connection_rows([cid])[cid].name == "api"
    with core.engine.begin() as c:  # changed behind this process's back (another process's UI)
        c.execute(update(Connection).where(Connection.id == cid).values(name="renamed"))
    assert core.connection_rows([cid])[cid].name == "api"  # within the TTL: no database read
    monkeypatch.setattr(core_mod, "CONNECTIONS_TTL", 0.0)
    assert core.connection_rows([cid])[cid].name == "renamed"  # once it is up
    monkeypatch.setattr(core_mod, "CONNECTIONS_TTL", 60.0)
    with core.engine.begin() as c:
        c.execute(update(Connection).where(Connection.id == cid).values(name="again"))
    core.forget_connection(cid)  # what the connections page does after saving
    assert core.connection_rows([cid])[cid].name == "again"
    assert core.connection_rows([cid, 999]) == {cid: core.connection_rows([cid])[cid]}  # unknown ids: absent
    core.close()


def test_signing_secrets_are_decrypted_once_per_stored_value_and_follow_its_changes(tmp_path, monkeypatch):
    """A signed webhook needs its sender's secret in plain text: decrypted once per stored
    value, not per webhook; a rotated secret is used once the row is read again, and a
    deleted connection's plaintext is dropped."""
    from sqlalchemy import delete, update

    import automations.core as core_mod
    from automations import connections
    from automations.models import Connection
    from web.extensions import db

    app = create_app({"TESTING": True}, instance_path=str(tmp_path))
    core = app.extensions["hookline"]
    decrypted = []
    real_decrypt = core.secret_box.decrypt
    monkeypatch.setattr(core.secret_box, "decrypt", lambda blob: decrypted.append(blob) or real_decrypt(blob))
    with app.app_context():
        cid = connections.create(db.session, core.secret_box, "github", "signing_secret", {"secret": "s1"}).id
    for _ in range(3):
        assert core.signing_secrets(str(cid)) == {"secret": "s1"}
    assert len(decrypted) == 1
    rotated = real_decrypt.__self__.encrypt({"secret": "s2", "previous_secret": "s1"})
    with core.engine.begin() as c:  # rotated in another process's UI
        c.execute(update(Connection).where(Connection.id == cid).values(secret_blob=rotated))
    monkeypatch.setattr(core_mod, "CONNECTIONS_TTL", 0.0)
    assert core.signing_secrets(cid) == {"secret": "s2", "previous_secret": "s1"}
    assert core.signing_secrets(cid) == {"secret": "s2", "previous_secret": "s1"}
    assert len(decrypted) == 2  # the new value once, however often the row is re-read
    with core.engine.begin() as c:
        c.execute(delete(Connection).where(Connection.id == cid))
    assert core.signing_secrets(cid) == {}
    assert cid not in core._signing  # no plaintext kept for a connection that is gone
    assert core.signing_secrets("not an id") == {} and core.signing_secrets(None) == {}
    core.close()


def test_recipe_settings_saved_elsewhere_apply_within_the_ttl(tmp_path, monkeypatch):
    """The same for the settings every webhook reads: re-read at most every SETTINGS_TTL."""
    import automations.core as core_mod
    from automations import recipes
    from automations.models import Recipe
    from web.extensions import db

    app = create_app({"TESTING": True}, instance_path=str(tmp_path))
    core = app.extensions["hookline"]
    with app.app_context():
        rid = recipes.create(db.session, "Orders", {"settings": {"dedupe": {"path": "$.id"}}}).id
    assert core.current_settings(rid)["dedupe"]["path"] == "$.id"
    with app.app_context():  # saved in another process's UI: a new version
        recipes.update_recipe(db.session, db.session.get(Recipe, rid),
                              definition={"settings": {"dedupe": {"path": "$.order_id"}}})
    assert core.current_settings(rid)["dedupe"]["path"] == "$.id"  # within the TTL
    monkeypatch.setattr(core_mod, "SETTINGS_TTL", 0.0)
    assert core.current_settings(rid)["dedupe"]["path"] == "$.order_id"
    assert core.current_settings(999) == {}  # no such recipe
    core.close()
