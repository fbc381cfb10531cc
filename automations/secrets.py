"""Connection secrets encrypted at rest (Fernet: AES-128-CBC + HMAC-SHA256).

Several keys may be configured; the first encrypts, all decrypt, so a key can be rotated.
The keys are checked when the box is made (a bad key stops the server at start), but
``cryptography`` is imported at the first encryption or decryption: it costs a process
about 7 MiB, which a process that never touches a secret (a runner whose recipes use no
connection, a web process receiving unsigned webhooks) need not pay.
"""
from __future__ import annotations

import base64
import binascii
import json
import os
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from cryptography.fernet import MultiFernet


class SecretsError(Exception):
    pass


class SecretBox:
    def __init__(self, keys: list[str | bytes]) -> None:
        if not keys:
            raise SecretsError("no encryption key configured")
        for key in keys:
            _check_key(key)
        self._keys = list(keys)
        self._fernet: MultiFernet | None = None
        self._lock = threading.Lock()

    def _box(self) -> MultiFernet:
        if self._fernet is None:
            with self._lock:
                if self._fernet is None:
                    from cryptography.fernet import Fernet, MultiFernet

                    self._fernet = MultiFernet([Fernet(k) for k in self._keys])
        return self._fernet

    def encrypt(self, values: dict[str, Any]) -> bytes:
        return self._box().encrypt(json.dumps(values, separators=(",", ":")).encode())

    def decrypt(self, blob: bytes | None) -> dict[str, Any]:
        if not blob:
            return {}
        box = self._box()
        from cryptography.fernet import InvalidToken

        try:
            return json.loads(box.decrypt(bytes(blob)))
        except InvalidToken:
            raise SecretsError(
                "cannot decrypt connection secrets: the encryption key does not match "
                "the one they were saved with"
            ) from None


def load_or_create_key(path: Path) -> str:
    """The instance's key file, created (mode 0600) on first start."""
    if path.exists():
        return path.read_text().strip()
    path.parent.mkdir(parents=True, exist_ok=True)
    key = base64.urlsafe_b64encode(os.urandom(32)).decode()  # what Fernet.generate_key() does
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(key + "\n")
    return key


def _check_key(key: str | bytes) -> None:
    """Refuse what ``Fernet(key)`` would refuse, with its message, without importing it."""
    try:
        raw = base64.urlsafe_b64decode(key)
    except (binascii.Error, TypeError, ValueError) as exc:
        raise ValueError("Fernet key must be 32 url-safe base64-encoded bytes.") from exc
    if len(raw) != 32:
        raise ValueError("Fernet key must be 32 url-safe base64-encoded bytes.")
