"""Secrets out of log output. Every log record is rewritten once, when it is created: its
message (with the arguments merged in), exception text and stack text go through
:func:`connectors.redaction.redact_text`, which drops credentials that have a recognisable
shape (inbound tokens after ``/hooks/``, Authorization values, api_key-style parameters,
chat webhook paths, passwords in URLs, SMTP AUTH lines). Values with no shape of their own
must be scrubbed by the caller, who knows them (``automations.redact.redact_values``).

:func:`install` is called by the CLI once logging is configured and by the app factory, so
WSGI servers are covered too; :class:`RedactingFilter` is for deployments that configure
logging themselves (``{"()": "automations.logredact.RedactingFilter"}`` in a dictConfig).
No Flask here: the engine and the web layer both use it.
"""
from __future__ import annotations

import logging
import threading
from typing import Any

from connectors.redaction import redact_text

_DONE = "_hookline_redacted"
_FORMATTER = logging.Formatter()
_LOCK = threading.Lock()


def redact_record(record: logging.LogRecord) -> logging.LogRecord:
    """Rewrite ``record`` in place (once): message with arguments merged, exception and stack
    text redacted. The exception stays readable as text; ``exc_info`` is dropped so no
    handler formats the unredacted original again."""
    if getattr(record, _DONE, None) is record.msg and not record.args and not record.exc_info:
        return record  # done, and not refilled since (logging.makeLogRecord updates after the factory)
    try:
        message = record.getMessage()
    except Exception:  # noqa: BLE001 - bad arguments: logging's handleError would print them raw
        message = f"{record.msg} (log arguments not shown: they do not fit the message)"
    record.msg, record.args = redact_text(str(message)), ()
    if record.exc_info:
        if isinstance(record.exc_info, tuple) and record.exc_info[0] is not None:
            record.exc_text = record.exc_text or _FORMATTER.formatException(record.exc_info)
        record.exc_info = None
    if record.exc_text:
        record.exc_text = redact_text(record.exc_text)
    if record.stack_info:
        record.stack_info = redact_text(record.stack_info)
    setattr(record, _DONE, record.msg)
    return record


class RedactingFilter(logging.Filter):
    """Attach to a handler: every record it emits is redacted (never dropped)."""

    def filter(self, record: logging.LogRecord) -> bool:
        redact_record(record)
        return True


def install() -> None:
    """Redact every log record of this process (idempotent): wraps the log record factory,
    adds :class:`RedactingFilter` to the root logger's handlers (for records made without
    the factory, e.g. ``logging.makeLogRecord``)."""
    with _LOCK:
        previous = logging.getLogRecordFactory()
        if not getattr(previous, _DONE, False):
            def factory(*args: Any, **kwargs: Any) -> logging.LogRecord:
                return redact_record(previous(*args, **kwargs))

            setattr(factory, _DONE, True)
            logging.setLogRecordFactory(factory)
        for handler in logging.getLogger().handlers:
            if not any(isinstance(f, RedactingFilter) for f in handler.filters):
                handler.addFilter(RedactingFilter())
