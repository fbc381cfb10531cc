"""Connection secrets at rest (automations/secrets.py): keys checked at start, rotation, and
``cryptography`` loaded only when a secret is first touched."""
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
