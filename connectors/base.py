"""How a connector is declared. One declaration per action drives the form builder,
validation, the API schema, the docs and the runner; nothing outside a connector's own
module may branch on its key.

A connector's ``run`` raises :class:`RetryableError` (network trouble, 408/425/429/5xx)
or :class:`PermanentError` (anything retrying cannot fix). Any other exception is a bug:
the runner logs it with its traceback and fails the run without retrying.
"""
from __future__ import annotations

import json
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import TYPE_CHECKING, Any, Literal
from urllib.parse import SplitResult, urlsplit

if TYPE_CHECKING:
    from .outbound import OutboundClient

FieldType = Literal["string", "text", "json", "keyvalue", "select", "boolean", "number", "email_list"]


@dataclass(frozen=True)
class Field:
    """One input of an action or one field of a credential type. The props *are* the form."""

    name: str
    label: str
    type: FieldType = "string"
    required: bool = False
    help: str = ""
    default: Any = None
    choices: tuple[tuple[str, str], ...] = ()  # (value, label) for "select"
    template: bool = True   # rendered with Jinja2 against the run's context
    secret: bool = False    # never shown again once saved; redacted in history
    placeholder: str = ""
    check: Callable[[Any], str | None] | None = None  # a saved value's problem, or None (credentials)
    # Whether a run uses this input, given the step's inputs as saved (not rendered); None:
    # always. An input a run ignores (a raw body's content type beside a JSON body) is not
    # rendered, cannot fail the run, and is left out of the history and the preview.
    applies: Callable[[Mapping[str, Any]], bool] | None = None

    def used_with(self, inputs: Mapping[str, Any]) -> bool:
        return self.applies is None or self.applies(inputs)


@dataclass(frozen=True)
class CredentialType:
    """A kind of stored connection (an SMTP login, a Slack webhook URL, an API token)."""

    key: str
    label: str
    fields: tuple[Field, ...]
    description: str = ""
    # "Test" on the connection's page: checks the credentials against the service without
    # anything anyone would see (no message posted, no mail sent); returns what it found, or
    # raises a ConnectorError saying what is wrong. ``ctx.inputs`` is empty.
    test: Callable[[ActionContext], str] | None = None
    # The test posts something people see (a chat webhook can only be tried by posting): the
    # page then offers "Send a test message" and says so, instead of "Test the saved connection".
    test_posts: bool = False

    @property
    def secret_names(self) -> frozenset[str]:
        return frozenset(f.name for f in self.fields if f.secret)


@dataclass
class ActionContext:
    """Everything a connector's ``run`` may use. Credentials are decrypted here only."""

    inputs: dict[str, Any]
    credentials: dict[str, Any]
    http: OutboundClient
    idempotency_key: str
    logger: logging.Logger = field(default_factory=lambda: logging.getLogger("hookline.connector"))
    smtp_timeout: float = 30.0
    now: datetime | None = None  # the runner's clock (naive UTC), for actions that reason about time


@dataclass
class ActionResult:
    """What the run history shows and what later steps see as ``steps.<key>``."""

    output: Any = None
    request: dict[str, Any] | None = None   # what was sent (method, url, headers, body), redacted
    response: dict[str, Any] | None = None  # status, headers, body (truncated)


@dataclass(frozen=True)
class Action:
    key: str
    label: str
    description: str
    fields: tuple[Field, ...]
    run: Callable[[ActionContext], ActionResult]
    credential: str | None = None        # CredentialType.key
    credential_required: bool = False
    group: str = ""                      # e.g. "Chat", "Email", "HTTP", "CRM"
    # Flow control: from the rendered inputs, whether the run ends at this step (as
    # ``filtered``); asked by the executor after the step ran and by the preview.
    halts: Callable[[dict[str, Any]], bool] | None = None
    # Flow control: from the rendered inputs and now (naive UTC), when the run's next step is
    # due; the run waits in the queue till then, holding no thread and no lease (a time not
    # after now: it goes on at once). Raises PermanentError for inputs that name no time.
    # Asked by the executor after the step ran and by the preview.
    waits: Callable[[dict[str, Any], datetime], datetime] | None = None
    # When a recipe is saved: problems of its literal inputs given the chosen connection's
    # non-secret settings, as {input name: problem} (a URL outside the connection's hosts).
    check_inputs: Callable[[dict[str, Any], dict[str, Any]], dict[str, str]] | None = None

    def field(self, name: str) -> Field | None:
        return next((f for f in self.fields if f.name == name), None)

    @property
    def controls_flow(self) -> bool:
        """Sends nothing: it only decides whether and when the later steps run (no alert can use it)."""
        return self.halts is not None or self.waits is not None


class ConnectorError(Exception):
    """Base for errors a connector raises on purpose. ``response`` goes to the run history."""

    def __init__(self, message: str, *, response: dict[str, Any] | None = None,
                 request: dict[str, Any] | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.response = response
        self.request = request


class RetryableError(ConnectorError):
    """Try again later. ``retry_after`` is the receiver's hint, if it gave one: seconds, or
    an absolute time (a Retry-After HTTP-date) that the runner measures on its own clock."""

    def __init__(self, message: str, *, retry_after: float | datetime | None = None, **kw: Any) -> None:
        super().__init__(message, **kw)
        self.retry_after = retry_after


class PermanentError(ConnectorError):
    """Retrying cannot help (bad input, 4xx, rejected credentials)."""


def json_input(name: str, value: Any) -> Any:
    """A JSON input's value: None when left empty (None, blank text, [] or {}), text parsed
    (a template renders to text), anything else as it is. Invalid JSON fails the step with
    the input's name, before anything is sent."""
    if value is None or value == [] or value == {}:
        return None
    if isinstance(value, str):
        if not value.strip():
            return None
        try:
            return json.loads(value)
        except ValueError as exc:
            raise PermanentError(f"{name}: invalid JSON ({exc})") from None
    return value


def split_http_url(url: str) -> SplitResult | None:
    """``urlsplit`` of an http(s) URL with a host; None for anything else, including what
    ``urlsplit`` cannot split at all (an unclosed IPv6 bracket raises ValueError, which a
    connector would otherwise report as an internal error instead of the field's problem)."""
    try:
        parts = urlsplit(url)
        host = parts.hostname
    except ValueError:
        return None
    return parts if host and parts.scheme.lower() in ("http", "https") else None


TEST_MESSAGE = "Hookline: a test message sent from this connection's page. The webhook works."


def message_test(run: Callable[[ActionContext], ActionResult], service: str) -> Callable[[ActionContext], str]:
    """A chat webhook's connection test: posting is the only way to learn whether a webhook URL
    works (none of these services has a read call for it), so it posts :data:`TEST_MESSAGE`
    through the action's own ``run``, with its checks and its error hints."""

    def test(ctx: ActionContext) -> str:
        run(replace(ctx, inputs={"text": TEST_MESSAGE}))
        return f"{service} accepted a test message: look for it where this webhook posts"

    test.__doc__ = (f"Posts a short test message through the webhook (a {service} incoming webhook "
                    "can only be tried by posting), so it appears where the webhook posts.")
    return test
