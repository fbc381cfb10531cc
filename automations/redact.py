"""What must never reach the run history, logs or exports: one list of secret header names
and one scrubber of secret values, both in ``connectors.redaction`` (connectors use them too)."""
from __future__ import annotations

from connectors.redaction import REDACTED, redact_headers, redact_values  # noqa: F401 - re-exported
