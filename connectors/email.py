"""Email through the user's SMTP server.

Everything that can be wrong with the input (header injection, bad or missing addresses,
no body) is refused before connecting. The Message-ID is derived from the idempotency key,
so a retried send carries the same Message-ID and receivers can spot the duplicate.
SMTP 4xx replies and network trouble are retried; 5xx replies are permanent. When some
recipients are refused but others accepted, the message WAS sent: the refused ones are
reported in the output and nothing is retried (that would duplicate it).

``smtplib`` and the ``email`` policy and address classes are imported by the first message
sent: a process whose recipes send no email need not load them.
"""
from __future__ import annotations

import base64
import hashlib
import re
import ssl
from collections.abc import Callable
from email.header import decode_header
from email.message import EmailMessage
from email.utils import formatdate, getaddresses
from functools import lru_cache
from typing import TYPE_CHECKING, Any, TypeVar

from .base import Action, ActionContext, ActionResult, CredentialType, Field, PermanentError, RetryableError
from .redaction import REDACTED, redact_text

T = TypeVar("T")

if TYPE_CHECKING:
    from email.policy import EmailPolicy

_ADDR = re.compile(r"^[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+(\.[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+)*"
                   r"@([A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?\.)+([A-Za-z]{2,63}|xn--[A-Za-z0-9-]{1,59})$")
SECURITY = (("starttls", "STARTTLS (usually port 587)"), ("ssl", "SSL/TLS (usually port 465)"),
            ("none", "None (plain text; only for local relays)"))


def _check_header(name: str, value: str) -> str:
    """Refuse CR, LF and NUL, also when hidden in RFC 2047 encoded words (=?utf-8?q?..=0D=0A?=)."""
    decoded = value
    if "=?" in value:
        try:
            decoded += "".join(part.decode(cs or "ascii", "replace") if isinstance(part, bytes) else part
                               for part, cs in decode_header(value))
        except (LookupError, ValueError):
            raise PermanentError(f"{name}: malformed encoded word") from None
    if any(c in decoded for c in "\r\n\0"):
        raise PermanentError(f"{name}: header injection refused (line break or NUL character)")
    return value


def _addresses(value: Any, name: str, *, required: bool = False) -> list[tuple[str, str]]:
    """Parse a comma-separated string or a list into validated (display name, address) pairs."""
    if value is None or value == "":
        items: list[str] = []
    elif isinstance(value, (list, tuple)):
        items = [str(v) for v in value if v not in (None, "")]
    else:
        items = [str(value)]
    for item in items:
        _check_header(name, item)
    joined = "\n".join(items)
    pairs = []
    for display, addr in getaddresses(items):
        if not display and not addr:  # "a@example.com, " from a template with an empty value
            continue
        if not _ADDR.match(addr) or len(addr) > 254 or addr not in joined:  # parser "repairs" refused
            raise PermanentError(f"{name}: {addr or display!r} is not a valid email address")
        pairs.append((_check_header(name, display), addr))
    if required and not pairs:
        raise PermanentError(f"{name}: at least one recipient is required")
    if len(pairs) != sum(item.count("@") for item in items) and "\"" not in "".join(items):
        raise PermanentError(f"{name}: could not read every address in {', '.join(items)!r}")
    return pairs


@lru_cache(maxsize=1)
def policy() -> EmailPolicy:
    """SMTP's policy, 7-bit: no 8BITMIME needed, non-ASCII bodies get quoted-printable or base64."""
    from email.policy import SMTP

    return SMTP.clone(cte_type="7bit")


def _format(pairs: list[tuple[str, str]]) -> str:
    from email.headerregistry import Address

    return ", ".join(str(Address(display_name=d, addr_spec=a)) for d, a in pairs)


def _sender(creds: dict[str, Any]) -> str:
    sender = str(creds.get("from_address") or "").strip()
    if not _ADDR.match(sender):
        raise PermanentError(f"from_address: {sender!r} is not a valid email address (check the connection)")
    return sender


def build_message(inputs: dict[str, Any], creds: dict[str, Any], idempotency_key: str
                  ) -> tuple[EmailMessage, str, list[str]]:
    """The message, the envelope sender and every envelope recipient (Bcc included)."""
    sender = _sender(creds)
    to = _addresses(inputs.get("to"), "to", required=True)
    cc, bcc = _addresses(inputs.get("cc"), "cc"), _addresses(inputs.get("bcc"), "bcc")
    reply_to = _addresses(inputs.get("reply_to"), "reply_to")
    subject = _check_header("subject", str(inputs.get("subject") or "")).strip()
    if not subject:
        raise PermanentError("subject: required")
    from_name = _check_header("from_name", str(inputs.get("from_name") or "")).strip()
    text, html = str(inputs.get("text") or ""), str(inputs.get("html") or "")
    if not text.strip() and not html.strip():
        raise PermanentError("text/html: give a plain-text body, an HTML body, or both")

    msg = EmailMessage(policy=policy())
    msg["From"] = _format([(from_name, sender)])
    msg["To"] = _format(to)
    if cc:
        msg["Cc"] = _format(cc)
    if reply_to:
        msg["Reply-To"] = _format(reply_to)
    msg["Subject"] = subject
    msg["Date"] = formatdate(localtime=False, usegmt=True)
    digest = hashlib.sha256(idempotency_key.encode()).hexdigest()[:32]
    msg["Message-ID"] = f"<hookline.{digest}@{sender.rsplit('@', 1)[1]}>"
    if text.strip():
        msg.set_content(text)
        if html.strip():
            msg.add_alternative(html, subtype="html")
    else:
        msg.set_content(html, subtype="html")
    rcpts = list(dict.fromkeys(a for _, a in to + cc + bcc))
    return msg, sender, rcpts


def _reply(code: int, text: bytes | str) -> str:
    return f"{code} {text.decode('utf-8', 'replace') if isinstance(text, bytes) else text}".strip()


def _smtp_error(stage: str, code: int, text: bytes | str, **kw: Any) -> Exception:
    message = f"SMTP server refused {stage}: {_reply(code, text)}"
    return RetryableError(message, **kw) if 400 <= code < 500 else PermanentError(message, **kw)


def _session(creds: dict[str, Any], timeout: float, work: Callable[[Any], T]) -> T:
    """Connect as the connection says (SSL, STARTTLS, login), then ``work(smtp)``; every SMTP,
    TLS and network failure comes out as a RetryableError or PermanentError saying what
    failed where."""
    import smtplib

    host = str(creds.get("host") or "").strip()
    try:
        port = int(creds.get("port") or 587)
    except (TypeError, ValueError):
        raise PermanentError(f"port: {creds.get('port')!r} is not a number") from None
    security = creds.get("security") or "starttls"
    context = ssl.create_default_context()
    if creds.get("tls_verify") in (False, "false", "0", 0):
        context.check_hostname, context.verify_mode = False, ssl.CERT_NONE
    where = f"{host}:{port}"
    try:
        with (smtplib.SMTP_SSL(host, port, timeout=timeout, context=context) if security == "ssl"
              else smtplib.SMTP(host, port, timeout=timeout)) as smtp:
            if security == "starttls":
                smtp.ehlo()
                if not smtp.has_extn("starttls"):
                    raise PermanentError(f"{where} does not offer STARTTLS; choose another security setting")
                smtp.starttls(context=context)
            if creds.get("username"):
                smtp.login(str(creds["username"]), str(creds.get("password") or ""))
            return work(smtp)
    except smtplib.SMTPRecipientsRefused as exc:  # nothing was sent
        detail = "; ".join(f"{a}: {_reply(*r)}" for a, r in exc.recipients.items())
        permanent = all(code >= 500 for code, _ in exc.recipients.values())
        raise (PermanentError if permanent else RetryableError)(
            f"SMTP server refused every recipient: {detail}") from None
    except smtplib.SMTPAuthenticationError as exc:
        raise _smtp_error("the login", exc.smtp_code, exc.smtp_error) from None
    except smtplib.SMTPSenderRefused as exc:
        raise _smtp_error(f"the sender {exc.sender}", exc.smtp_code, exc.smtp_error) from None
    except smtplib.SMTPResponseException as exc:  # greeting, HELO or DATA
        stage = {smtplib.SMTPConnectError: "the connection", smtplib.SMTPHeloError: "the greeting"}
        raise _smtp_error(stage.get(type(exc), "the message"), exc.smtp_code, exc.smtp_error) from None
    except smtplib.SMTPNotSupportedError as exc:
        raise PermanentError(f"{where}: {exc} (does it need STARTTLS or SSL first?)") from None
    except ssl.SSLCertVerificationError as exc:
        raise PermanentError(f"TLS certificate of {where} could not be verified ({exc.verify_message}); "
                             "set tls_verify off only for a self-signed server you trust") from None
    except ssl.SSLError as exc:
        raise PermanentError(f"TLS error talking to {where}: {exc.reason or exc}; check security and port") from None
    except UnicodeEncodeError as exc:  # smtplib sends AUTH and MAIL FROM as ASCII
        raise PermanentError(f"{where}: the user name, password or an address is not ASCII, which this SMTP "
                             f"exchange cannot send ({exc.reason})") from None
    except TimeoutError:
        raise RetryableError(f"timed out after {timeout:g} s talking to {where}") from None
    except ConnectionRefusedError:
        raise RetryableError(f"connection refused by {where}") from None
    except (OSError, smtplib.SMTPException) as exc:
        raise RetryableError(f"could not talk to SMTP server {where}: {exc}") from None


def _send(creds: dict[str, Any], timeout: float, sender: str, rcpts: list[str], data: bytes) -> dict[str, Any]:
    refused = _session(creds, timeout, lambda smtp: smtp.sendmail(sender, rcpts, data))
    return {name: _reply(*reply) for name, reply in refused.items()}


def check_connection(ctx: ActionContext) -> str:
    """Signs in and offers the from address as a sender, then resets: the server's answer to
    everything a real send needs except the recipients, and no mail."""
    import smtplib

    creds = ctx.credentials
    if not str(creds.get("host") or "").strip():
        raise PermanentError("host: the SMTP connection has no host")
    sender = _sender(creds)  # the check a real send makes first

    def offer_sender(smtp: Any) -> None:
        smtp.ehlo_or_helo_if_needed()  # sendmail does this itself; mail() alone does not
        code, text = smtp.mail(sender)
        if code != 250:
            raise smtplib.SMTPSenderRefused(code, text, sender)
        smtp.rset()

    try:
        _session(creds, ctx.smtp_timeout, offer_sender)
    except (RetryableError, PermanentError) as exc:
        _hide_credentials(exc, creds)
        raise
    who = f" as {creds['username']}" if creds.get("username") else ""
    return (f"signed in to {creds.get('host')}:{creds.get('port') or 587}{who}; "
            f"the server accepts mail from {sender}")


def _hide_credentials(exc: RetryableError | PermanentError, creds: dict[str, Any]) -> None:
    """Server replies are quoted in errors, and some servers repeat what they were sent: take
    the password out, also as the base64 of AUTH LOGIN and AUTH PLAIN."""
    user, password = str(creds.get("username") or ""), str(creds.get("password") or "")
    message = exc.message
    if password:
        encoded = [base64.b64encode(raw.encode("utf-8", "replace")).decode()
                   for raw in (f"\0{user}\0{password}", password)]
        plain = [password] if len(password) >= 4 else []  # as redact_values: "pw" would mangle the text
        for needle in sorted({*encoded, *plain}, key=len, reverse=True):
            message = message.replace(needle, REDACTED)
    message = redact_text(message)
    exc.message, exc.args = message, (message,)


def run(ctx: ActionContext) -> ActionResult:
    creds = ctx.credentials
    if not str(creds.get("host") or "").strip():
        raise PermanentError("host: the SMTP connection has no host")
    msg, sender, rcpts = build_message(ctx.inputs, creds, ctx.idempotency_key)
    data = msg.as_bytes()
    request = {
        "smtp": f"{creds.get('host')}:{creds.get('port') or 587}", "security": creds.get("security") or "starttls",
        "username": creds.get("username") or None, "envelope": {"from": sender, "to": rcpts},
        "headers": {k: str(v) for k, v in msg.items() if k.lower() != "content-type"},
        "text_bytes": len(str(ctx.inputs.get("text") or "").encode()),
        "html_bytes": len(str(ctx.inputs.get("html") or "").encode()), "message_bytes": len(data),
    }
    try:
        refused = _send(creds, ctx.smtp_timeout, sender, rcpts, data)
    except (RetryableError, PermanentError) as exc:
        exc.request = request
        _hide_credentials(exc, creds)
        raise
    accepted = [r for r in rcpts if r not in refused]
    output = {"message_id": msg["Message-ID"], "accepted": accepted, "refused": refused}
    return ActionResult(output=output, request=request, response={"accepted": len(accepted), "refused": refused})


CREDENTIALS = (
    CredentialType(
        key="smtp", label="SMTP server", description="An outgoing mail server and the address mail is sent from.",
        test=check_connection,
        fields=(
            Field("host", "Host", required=True, template=False, placeholder="smtp.example.com",
                  help="The SMTP server's hostname."),
            Field("port", "Port", "number", required=True, default=587, template=False,
                  help="587 for STARTTLS, 465 for SSL/TLS, 25 for a local relay."),
            Field("security", "Security", "select", required=True, default="starttls", choices=SECURITY,
                  template=False, help="How the connection is encrypted; STARTTLS is refused if not offered."),
            Field("username", "Username", template=False, help="Login name; leave empty if the server needs none."),
            Field("password", "Password", secret=True, template=False, help="Login password or app password."),
            Field("from_address", "From address", required=True, template=False, placeholder="robot@example.com",
                  help="The sender address on every message (the envelope sender too)."),
            Field("tls_verify", "Verify TLS certificate", "boolean", default=True, template=False,
                  help="Check the server's certificate; turn off only for a self-signed server you trust."),
        ),
    ),
)

ACTIONS = (
    Action(
        key="email_send", label="Email: send (SMTP)", group="Email", run=run, credential="smtp",
        credential_required=True,
        description=("Send an email through your SMTP server. Temporary (4xx) failures are retried with the "
                     "same Message-ID; refused recipients are listed in the output."),
        fields=(
            Field("to", "To", "email_list", required=True, placeholder="{{ email }}",
                  help="Recipients, comma-separated or a list; every address is checked before sending."),
            Field("cc", "Cc", "email_list", help="Copy recipients, visible to everyone."),
            Field("bcc", "Bcc", "email_list", help="Hidden recipients: in the envelope only, never in the headers."),
            Field("reply_to", "Reply-To", help="Where replies go, if not to the sender."),
            Field("subject", "Subject", required=True, help="The subject line; line breaks are refused."),
            Field("text", "Plain-text body", "text", help="The plain-text body; give this, an HTML body, or both."),
            Field("html", "HTML body", "text",
                  help="The HTML body; with a plain-text body too, mail clients pick the best they can show."),
            Field("from_name", "From name", placeholder="Acme Orders",
                  help="Display name shown with the connection's from address."),
        ),
    ),
)
