"""Connection secrets encrypted at rest (Fernet: AES-128-CBC + HMAC-SHA256).

Several keys may be configured; the first encrypts, all decrypt, so a key can be rotated.
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from cryptography.fernet import Fernet, InvalidToken, MultiFernet


class SecretsError(Exception):
    pass


class SecretBox:
    def __init__(self, keys: list[str | bytes]) -> None:
        if not keys:
            raise SecretsError("no encryption key configured")
        self._fernet = MultiFernet([Fernet(k) for k in keys])

    def encrypt(self, values: dict[str, Any]) -> bytes:
        return self._fernet.encrypt(json.dumps(values, separators=(",", ":")).encode())

    def decrypt(self, blob: bytes | None) -> dict[str, Any]:
        if not blob:
            return {}
        try:
            return json.loads(self._fernet.decrypt(bytes(blob)))
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
    key = Fernet.generate_key().decode()
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(key + "\n")
    return key
