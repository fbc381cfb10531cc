"""The SMTP email action against a real aiosmtpd server (plain, STARTTLS, implicit TLS)."""
from __future__ import annotations

import socket
from typing import Any

import pytest

from connectors.base import ActionContext, PermanentError, RetryableError
from connectors.email import ACTIONS
from connectors.outbound import OutboundClient
from tests.smtp_server import SmtpServer

ACTION = ACTIONS[0]
MESSAGE = {"to": "Bob <bob@example.com>", "subject": "Order 42", "text": "Thanks!", "from_name": "Acme"}


def creds(server: SmtpServer, **extra: Any) -> dict[str, Any]:
    return {"host": server.host, "port": server.port, "security": server.security, "tls_verify": False,
            "from_address": "robot@acme.example", **extra}


def send(credentials: dict[str, Any], inputs: dict[str, Any] | None = None, key: str = "run-1-step-a"):
    ctx = ActionContext(inputs=inputs or MESSAGE, credentials=credentials, http=OutboundClient(),
                        idempotency_key=key, smtp_timeout=2)
    return ACTION.run(ctx)


@pytest.fixture
def smtp():
    with SmtpServer() as server:
        yield server


def test_plain_send(smtp: SmtpServer) -> None:
    result = send(creds(smtp), {**MESSAGE, "cc": ["carol@example.com"], "bcc": "dan@example.com",
                                "reply_to": "help@acme.example"})
    [mail] = smtp.wait_for(1)
    msg = mail.message
    assert mail.mail_from == "robot@acme.example" and not mail.tls
    assert mail.rcpt_tos == ["bob@example.com", "carol@example.com", "dan@example.com"]
    assert msg["From"] == "Acme <robot@acme.example>" and msg["To"] == "Bob <bob@example.com>"
    assert msg["Cc"] == "carol@example.com" and msg["Reply-To"] == "help@acme.example"
    assert msg["Bcc"] is None and b"dan@example.com" not in mail.raw
    assert msg["Subject"] == "Order 42" and msg["Date"] and msg.get_content_type() == "text/plain"
    assert msg.get_content().strip() == "Thanks!"
    assert result.output == {"message_id": msg["Message-ID"], "accepted": mail.rcpt_tos, "refused": {}}
    assert result.request["envelope"]["to"] == mail.rcpt_tos


def test_text_and_html_make_alternative_and_message_id_is_stable(smtp: SmtpServer) -> None:
    inputs = {**MESSAGE, "subject": "Café ✓", "text": "Grüße", "html": "<p>Grüße</p>"}
    first = send(creds(smtp), inputs)
    again = send(creds(smtp), inputs)           # a retry of the same step
    other = send(creds(smtp), inputs, key="run-2-step-a")
    one, two, three = smtp.wait_for(3)
    assert one.message.get_content_type() == "multipart/alternative"
    assert [p.get_content_type() for p in one.message.iter_parts()] == ["text/plain", "text/html"]
    assert one.message["Subject"] == "Café ✓" and "Grüße" in one.message.get_body(("html",)).get_content()
    assert one.message["Message-ID"] == two.message["Message-ID"] == first.output["message_id"]
    assert three.message["Message-ID"] != one.message["Message-ID"] == again.output["message_id"]
    assert other.output["message_id"].endswith("@acme.example>")
    assert all(b < 128 for b in one.raw)  # 7-bit clean: no 8BITMIME needed


def test_html_only(smtp: SmtpServer) -> None:
    send(creds(smtp), {"to": "bob@example.com", "subject": "s", "html": "<b>hi</b>"})
    assert smtp.wait_for(1)[0].message.get_content_type() == "text/html"


def test_starttls_with_self_signed_cert_and_auth() -> None:
    with SmtpServer(security="starttls", auth=("alice", "s3cret"), auth_required=True) as server:
        result = send(creds(server, username="alice", password="s3cret"))
        [mail] = server.wait_for(1)
    assert mail.tls and mail.auth_login == "alice"
    assert "s3cret" not in repr(result.request) and result.request["username"] == "alice"


def test_implicit_ssl() -> None:
    with SmtpServer(security="ssl", auth=("alice", "pw")) as server:
        send(creds(server, username="alice", password="pw"))
        assert server.wait_for(1)[0].tls


def test_self_signed_cert_refused_when_verifying() -> None:
    with SmtpServer(security="starttls") as server, pytest.raises(PermanentError, match="certificate"):
        send(creds(server, tls_verify=True))
    assert server.messages == []


def test_starttls_required_but_not_offered(smtp: SmtpServer) -> None:
    with pytest.raises(PermanentError, match="does not offer STARTTLS"):
        send(creds(smtp, security="starttls"))


def test_wrong_password_is_permanent() -> None:
    with SmtpServer(security="starttls", auth=("alice", "s3cret")) as server:
        with pytest.raises(PermanentError, match="535") as info:
            send(creds(server, username="alice", password="wrong"))
        assert "wrong" not in str(info.value) and "wrong" not in repr(info.value.request)
        assert server.messages == []


@pytest.mark.parametrize("stage, reply, error", [
    ("MAIL", "451 4.3.0 Try again later", RetryableError),
    ("RCPT", "451 4.3.0 Greylisted", RetryableError),
    ("DATA", "451 4.3.0 Queue full", RetryableError),
    ("DATA", "552 5.3.4 Message too big", PermanentError),
    ("MAIL", "550 5.7.1 Sender rejected", PermanentError),
    ("RCPT", "550 5.1.1 No such user", PermanentError),
])
def test_smtp_replies(smtp: SmtpServer, stage: str, reply: str, error: type) -> None:
    smtp.reject(stage, reply)  # type: ignore[arg-type]
    with pytest.raises(error) as info:
        send(creds(smtp))
    assert reply.split()[0] in info.value.message and reply.split()[-1] in info.value.message
    assert info.value.request["envelope"]["from"] == "robot@acme.example"
    assert smtp.messages == []


def test_partial_recipient_refusal_is_reported_not_retried(smtp: SmtpServer) -> None:
    smtp.reject("RCPT", "550 5.1.1 No such user", addresses=["ghost@example.com"])
    result = send(creds(smtp), {**MESSAGE, "to": "bob@example.com, ghost@example.com"})
    [mail] = smtp.wait_for(1)
    assert mail.rcpt_tos == ["bob@example.com"]
    assert result.output["accepted"] == ["bob@example.com"]
    assert result.output["refused"] == {"ghost@example.com": "550 5.1.1 No such user"}


def test_temporary_failure_then_success(smtp: SmtpServer) -> None:
    smtp.reject("DATA", "421 4.7.0 Slow down", times=1)
    with pytest.raises(RetryableError):
        send(creds(smtp))
    send(creds(smtp))
    assert len(smtp.wait_for(1)) == 1


def test_connection_refused_is_retryable() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(RetryableError, match=f"connection refused by 127.0.0.1:{port}"):
        send({"host": "127.0.0.1", "port": port, "security": "none", "from_address": "a@acme.example"})


@pytest.mark.parametrize("field, value", [
    ("subject", "Hi\r\nBcc: victim@example.com"),
    ("subject", "Hi\nX-Evil: 1"),
    ("subject", "Hi\rX"),
    ("subject", "Hi\0there"),
    ("subject", "=?utf-8?q?a=0D=0ABcc:x@evil.example?="),
    ("subject", "=?utf-8?b?aGkNCkJjYzogeEBldmlsLmV4YW1wbGU=?="),
    ("from_name", "Acme\r\nBcc: x@evil.example"),
    ("from_name", "=?utf-8?q?Acme=0ABcc:x@evil.example?="),
    ("to", "Bob\r\nBcc: x@evil.example <bob@example.com>"),
    ("to", "=?utf-8?q?Bob=0D=0A?= <bob@example.com>"),
    ("cc", ["ok@example.com", "x@example.com\r\nBcc: y@evil.example"]),
    ("reply_to", "r@example.com\nBcc: x@evil.example"),
])
def test_header_injection_refused_before_connecting(smtp: SmtpServer, field: str, value: Any) -> None:
    with pytest.raises(PermanentError, match=f"{field}: header injection refused"):
        send(creds(smtp), {**MESSAGE, field: value})
    assert smtp.connections == 0 and smtp.messages == []


@pytest.mark.parametrize("inputs, message", [
    ({"to": ""}, "to: at least one recipient"),
    ({"to": []}, "to: at least one recipient"),
    ({"to": "not an address"}, "to: 'not' is not a valid email address"),
    ({"to": "bob@"}, "to:"),
    ({"to": "@example.com"}, "to:"),
    ({"to": "bob@example"}, "to:"),
    ({"to": "bob@@example.com"}, "to:"),
    ({"to": "bob example.com"}, "to:"),
    ({"to": "a@example.com b@example.com"}, "to:"),
    ({"to": ["ok@example.com", "bad@-example.com"]}, "to:"),
    ({"cc": "ok@example.com, nope"}, "cc:"),
    ({"bcc": "x@exa mple.com"}, "bcc:"),
    ({"reply_to": "nobody"}, "reply_to:"),
    ({"subject": ""}, "subject: required"),
    ({"text": "", "html": ""}, "text/html"),
])
def test_invalid_input_refused_before_connecting(smtp: SmtpServer, inputs: dict[str, Any], message: str) -> None:
    with pytest.raises(PermanentError, match=message):
        send(creds(smtp), {**MESSAGE, **inputs})
    assert smtp.connections == 0


@pytest.mark.parametrize("bad", [{"from_address": "robot"}, {"host": ""}, {"port": "smtp"}])
def test_invalid_connection_refused(smtp: SmtpServer, bad: dict[str, Any]) -> None:
    with pytest.raises(PermanentError):
        send(creds(smtp, **bad))
    assert smtp.connections == 0
