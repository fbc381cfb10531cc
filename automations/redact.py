"""What must never reach the run history, logs or exports."""
from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from connectors.redaction import REDACTED, redact_headers  # noqa: F401 - one list of secret names


def redact_values(value: Any, secrets: Iterable[str]) -> Any:
    """Replace any occurrence of a secret string inside ``value`` (recursively)."""
    needles = sorted({s for s in secrets if isinstance(s, str) and len(s) >= 4}, key=len, reverse=True)
    if not needles:
        return value
    return _walk(value, needles)


def _walk(value: Any, needles: list[str]) -> Any:
    if isinstance(value, str):
        for n in needles:
            if n in value:
                value = value.replace(n, REDACTED)
        return value
    if isinstance(value, dict):
        return {k: _walk(v, needles) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_walk(v, needles) for v in value]
    return value
