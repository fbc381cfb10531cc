"""Attack table: credentials must not leak through log output or error messages.

Run history and exports have their own tests (test_outbound, test_ui_runs, test_cli). Here:
the text redactor every log record and error message goes through, the log record filter
(installed by the CLI and by the app factory), inbound tokens in Flask/waitress log lines,
outbound failures against real misbehaving servers on 127.0.0.1, the Slack and SMTP
connectors, the runner's crash log, and the ``hookline`` CLI.
"""
from __future__ import annotations

import base64
import logging
import os
import signal
import socket
import struct
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote, quote_plus

import pytest
import requests
from aiosmtpd.smtp import AuthResult, LoginPassword
from click.testing import CliRunner
from sqlalchemy import select

from automations import connections, inbound, logredact, recipes
from automations.models import Run, StepRun
from connectors import registry
from connectors.base import Action, ActionContext, ConnectorError, Field, PermanentError
from connectors.email import ACTIONS as EMAIL_ACTIONS
from connectors.outbound import OutboundClient
from connectors.redaction import redact_text
from connectors.slack import ACTIONS as SLACK_ACTIONS
from tests.conftest import make_app
from tests.live import LiveServer, make_live_app
from tests.sinks import HttpSink, RawTcpServer, Reply
from tests.smtp_server import SmtpServer
from tests.test_crash_recovery import HOOKLINE, ROOT, free_port
from tests.test_e2e import wait_run
from web.cli import main as cli_main
from web.extensions import db

# Characters that change under percent-encoding: a secret that only appears encoded in a
# message must not slip past a plain string search either.
SECRET = "sk+Zq8/w4Lm=2Xc"
LOCAL = ["127.0.0.0/8", "::1/128", "localhost"]


def forms(secret: str = SECRET) -> set[str]:
    return {secret, quote(secret, safe=""), quote_plus(secret), quote(secret)}


def assert_no_secret(text: str, secret: str = SECRET) -> None:
    for form in forms(secret):
        assert form not in text, f"{form!r} leaked in:\n{text}"


@pytest.fixture
def logs(caplog: pytest.LogCaptureFixture) -> pytest.LogCaptureFixture:
    """Every log record at DEBUG, redaction installed the way the app factory installs it."""
    logredact.install()
    caplog.set_level(logging.DEBUG)
    return caplog


# --- the text redactor --------------------------------------------------------------------

TOKEN = "AbCdEfGhIjKlMnOpQrStUvWxYz0123456789-_AbCd"


@pytest.mark.parametrize("text, secret, kept", [
    # inbound tokens: Flask, waitress and werkzeug log the request path
    (f"Exception on /hooks/{TOKEN} [POST]", TOKEN, "Exception on /hooks/AbCd… [POST]"),
    (f"Exception while serving /hooks/{TOKEN}", TOKEN, "/hooks/AbCd…"),
    (f'127.0.0.1 - - "POST /hooks/{TOKEN}?x=1 HTTP/1.1" 500 -', TOKEN, "/hooks/AbCd…"),
    ("https://mattermost.example.com/hooks/mmIDxxsecretmmid", "xxsecretmmid", "/hooks/mmID…"),
    # Authorization headers, in header lines, dict reprs and JSON
    (f"Authorization: Bearer {SECRET}", SECRET, "Authorization: [redacted]"),
    ("{'Authorization': 'Basic dXNlcjpTM2tyMXQ=', 'Accept': '*/*'}", "dXNlcjpTM2tyMXQ=", "'Accept': '*/*'"),
    (f'{{"proxy-authorization": "Digest {SECRET}"}}', SECRET, '"proxy-authorization": "[redacted]"'),
    (f"sent Bearer {SECRET} to api", SECRET, "sent Bearer [redacted] to api"),
    (f"Cookie: session={SECRET}; theme=dark", SECRET, "Cookie: [redacted]"),
    (f"X-Hub-Signature-256: sha256={SECRET}", SECRET, "X-Hub-Signature-256: [redacted]"),
    (f"x-api-key: {SECRET}", SECRET, "x-api-key: [redacted]"),
    # api_key-style query parameters, wherever they appear
    (f"GET /v1/items?api_key={SECRET}&page=2", SECRET, "api_key=[redacted]&page=2"),
    (f"Max retries exceeded with url: /x?token={quote(SECRET)} (Caused by …)", quote(SECRET),
     "token=[redacted] (Caused"),
    (f"https://api.example.com/?access_token={SECRET}", SECRET, "access_token=[redacted]"),
    (f"https://api.example.com/?key={SECRET}&q=ok", SECRET, "key=[redacted]&q=ok"),
    (f"/oauth?client_id=abc&client_secret={SECRET}", SECRET, "client_id=abc&client_secret=[redacted]"),
    (f"/x?secret={SECRET}", SECRET, "secret=[redacted]"),
    (f"/x?password={SECRET}&sig={SECRET[::-1]}", SECRET[::-1], "password=[redacted]&sig=[redacted]"),
    # chat incoming webhooks: the URL path is the credential
    ("https://hooks.slack.com/services/T0001/B0002/SECRETxyz987", "SECRETxyz987", "https://hooks.slack.com/[redacted]"),
    ('https://hooks.slack.com:443 "POST /services/T0001ABC/B0002DEF/SECRETxyz987 HTTP/1.1" 200 2',
     "SECRETxyz987", '"POST /services/[redacted] HTTP/1.1" 200 2'),
    ("https://discord.com/api/webhooks/112233/SECRET-tok_en9", "SECRET-tok_en9", "discord.com/api/webhooks/[redacted]"),
    ("https://acme.webhook.office.com/webhookb2/a1@b2/IncomingWebhook/SECRETc3/d4", "SECRETc3",
     "acme.webhook.office.com/[redacted]"),
    ("POST /webhookb2/a1@b2/IncomingWebhook/SECRETc3/d4 HTTP/1.1", "SECRETc3", "/webhookb2/[redacted]"),
    # passwords in URLs and SMTP AUTH lines
    (f"postgresql+psycopg://hook:{quote(SECRET, safe='')}@db.internal/hookline", quote(SECRET, safe=""),
     "postgresql+psycopg://[redacted]@db"),
    ("send: 'AUTH PLAIN AGFsaWNlAHMzY3JldA==\\r\\n'", "AGFsaWNlAHMzY3JldA==", "AUTH PLAIN [redacted]"),
    ("AUTH LOGIN YWxpY2U=", "YWxpY2U=", "AUTH LOGIN [redacted]"),
])
def test_redact_text(text: str, secret: str, kept: str) -> None:
    out = redact_text(text)
    assert secret not in out
    assert kept in out
    assert redact_text(out) == out  # the log filter and the error messages may both apply it


@pytest.mark.parametrize("text", [
    "run 12 step a (http_request) crashed",
    "connection refused by 127.0.0.1:8080",
    "HTTP 404 Not Found: no hook at this address",
    "GET /hooks/none",
    "retention: purged 3 runs, 2 events, 0 delivery ids",
    "timestamp outside the 300 s window",
    "Bearer token required",
    "took back 2 runs whose lease had expired",
    "Hookline listening on http://127.0.0.1:8080 (inbound URLs shown as https://x.example/hooks/…; runner: on)",
    "SMTP server refused the login: 535 5.7.8 Authentication credentials invalid",
    "https://api.example.com/v1/orders?page=2&sort=desc",
])
def test_redact_text_leaves_ordinary_messages_alone(text: str) -> None:
    assert redact_text(text) == text


def test_redact_text_honours_extra_secret_names() -> None:
    assert redact_text(f"/v1?partner_code={SECRET}&q=1", ["partner_code"]) == "/v1?partner_code=[redacted]&q=1"


# --- the log record filter ----------------------------------------------------------------

def test_log_messages_arguments_and_tracebacks_are_redacted(logs: pytest.LogCaptureFixture) -> None:
    log = logging.getLogger("hookline.test")
    log.warning("calling %s with %r", f"https://api.example.com/x?api_key={SECRET}",
                {"Authorization": f"Bearer {SECRET}"})
    log.info("%(url)s", {"url": f"https://hooks.slack.com/services/T1/B2/{SECRET}"})
    try:
        raise RuntimeError(f"upstream rejected Authorization: Bearer {SECRET}")
    except RuntimeError:
        log.exception("step crashed")
    assert_no_secret(logs.text)
    assert "step crashed" in logs.text and "RuntimeError: upstream rejected" in logs.text
    assert "Traceback (most recent call last)" in logs.text
    assert all(SECRET not in r.getMessage() for r in logs.records)


def test_the_filter_class_works_on_any_handler() -> None:
    """For deployments that wire logging themselves (dictConfig): attach the filter."""
    import io

    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.addFilter(logredact.RedactingFilter())
    try:
        raise ValueError(f"token={SECRET}")
    except ValueError:
        import sys
        exc_info = sys.exc_info()
    record = logging.makeLogRecord({"name": "x", "levelno": logging.ERROR, "levelname": "ERROR",
                                    "msg": "got %s", "args": (f"/hooks/{TOKEN}",), "exc_info": exc_info})
    handler.handle(record)
    out = stream.getvalue()
    assert_no_secret(out)
    assert TOKEN not in out and "/hooks/AbCd…" in out and "ValueError: token=[redacted]" in out


def test_install_is_idempotent_and_covers_root_handlers() -> None:
    root = logging.getLogger()
    handler = logging.StreamHandler()
    root.addHandler(handler)
    try:
        logredact.install()
        factory = logging.getLogRecordFactory()
        logredact.install()
        assert logging.getLogRecordFactory() is factory
        assert sum(isinstance(f, logredact.RedactingFilter) for f in handler.filters) == 1
    finally:
        root.removeHandler(handler)


# --- inbound tokens in Flask and waitress log lines ----------------------------------------

def _boom(*args: Any, **kwargs: Any) -> Any:
    raise RuntimeError("database exploded")


def test_flask_500_log_line_does_not_carry_the_inbound_token(tmp_path: Path, monkeypatch: Any,
                                                            caplog: pytest.LogCaptureFixture) -> None:
    app = make_app(tmp_path, PROPAGATE_EXCEPTIONS=False)
    with app.app_context():
        token = recipes.create(db.session, "r", {"steps": []}).token
    monkeypatch.setattr(inbound, "accept", _boom)
    with caplog.at_level(logging.ERROR):
        assert app.test_client().post(f"/hooks/{token}", json={}).status_code == 500
    assert "Exception on /hooks/" in caplog.text and "database exploded" in caplog.text
    assert f"/hooks/{token[:4]}…" in caplog.text
    assert token not in caplog.text


def test_waitress_error_log_does_not_carry_the_inbound_token(tmp_path: Path, monkeypatch: Any,
                                                            caplog: pytest.LogCaptureFixture) -> None:
    live = LiveServer(make_live_app(tmp_path), with_runner=False)  # TESTING: errors reach waitress
    try:
        with live.app.app_context():
            token = recipes.create(db.session, "r", {"steps": []}).token
        monkeypatch.setattr(inbound, "accept", _boom)
        with caplog.at_level(logging.ERROR):
            assert live.post(token, json={}).status_code == 500
            deadline = time.monotonic() + 5
            while "Exception while serving" not in caplog.text and time.monotonic() < deadline:
                time.sleep(0.02)
    finally:
        live.close()
    assert "Exception while serving /hooks/" in caplog.text and "database exploded" in caplog.text
    assert token not in caplog.text


# --- outbound failures against real servers --------------------------------------------------

def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _reset(conn: socket.socket, head: bytes) -> None:
    conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    conn.close()


def _close(conn: socket.socket, head: bytes) -> None:
    conn.close()


def _echo(conn: socket.socket, head: bytes) -> None:
    """Not an HTTP server: like Redis, it repeats the command it did not understand."""
    first = head.split(b"\r\n", 1)[0]
    conn.sendall(b"-ERR unknown command '" + first + b"'\r\n")
    conn.close()


def _partial_then_reset(conn: socket.socket, head: bytes) -> None:
    conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\npartial")
    time.sleep(0.05)
    _reset(conn, head)


def _hang(conn: socket.socket, head: bytes) -> None:
    """Read the request, answer nothing: the connection stays open until the server closes."""


BEHAVIOURS = {"reset": _reset, "close": _close, "echo": _echo, "partial": _partial_then_reset, "hang": _hang}


@pytest.fixture(params=["closed", *BEHAVIOURS])
def destination(request: pytest.FixtureRequest) -> Iterator[str]:
    if request.param == "closed":
        yield f"127.0.0.1:{closed_port()}"
        return
    server = RawTcpServer(BEHAVIOURS[request.param])
    try:
        yield f"127.0.0.1:{server.port}"
    finally:
        server.close()


PLACEMENTS: dict[str, Callable[[str], dict[str, Any]]] = {
    "api_key param": lambda d: {"url": f"http://{d}/v1/items", "params": [("api_key", SECRET)]},
    "custom param": lambda d: {"url": f"http://{d}/v1/items", "params": [("pcode", SECRET)],
                               "secret_names": ["pcode"]},
    "token in url": lambda d: {"url": f"http://{d}/v1/items?access_token={quote(SECRET, safe='')}&page=2"},
    "userinfo": lambda d: {"url": f"http://bob:{quote(SECRET, safe='')}@{d}/v1/items"},
    "bearer": lambda d: {"url": f"http://{d}/v1/items", "headers": {"Authorization": f"Bearer {SECRET}"}},
    "slack path": lambda d: {"url": f"http://{d}/services/T0ABC/B0DEF/{quote(SECRET, safe='')}",
                             "secret_url": True},
    "other secret path": lambda d: {"url": f"http://{d}/notify/{quote(SECRET, safe='')}", "secret_url": True},
}


@pytest.mark.parametrize("placement", PLACEMENTS)
def test_outbound_failures_never_show_credentials(destination: str, placement: str,
                                                  logs: pytest.LogCaptureFixture) -> None:
    client = OutboundClient(allowlist=LOCAL, timeout=0.5)
    kw = PLACEMENTS[placement](destination)
    with pytest.raises(ConnectorError) as info:
        client.request("POST", kw.pop("url"), json={"a": 1}, **kw)
    err = info.value
    assert "127.0.0.1" in err.message
    assert_no_secret(f"{err.message}\n{err}\n{err.request!r}\n{err.response!r}\n{logs.text}")


@pytest.mark.parametrize("placement", PLACEMENTS)
def test_successful_requests_leave_no_credentials_in_debug_logs(placement: str,
                                                                logs: pytest.LogCaptureFixture) -> None:
    with HttpSink() as sink:
        kw = PLACEMENTS[placement](sink.url.removeprefix("http://"))
        resp = OutboundClient(allowlist=LOCAL, timeout=2).request("POST", kw.pop("url"), json={}, **kw)
    assert resp.status == 200
    assert_no_secret(f"{resp.request!r}\n{logs.text}")


@pytest.mark.parametrize("headers", [
    {"Authorization": f"Bearer {SECRET}\n"},          # a token pasted with its line break
    {"X-Api-Key": f" {SECRET}"},                       # ... or with a leading space
    {"X-Partner-Token": f"{SECRET}\r\nX-Evil: 1"},
])
def test_invalid_header_values_are_not_echoed(headers: dict[str, str], logs: pytest.LogCaptureFixture) -> None:
    with pytest.raises(PermanentError) as info:
        OutboundClient(allowlist=LOCAL, timeout=0.5).request("GET", f"http://127.0.0.1:{closed_port()}/",
                                                             headers=headers)
    assert info.value.message.startswith("invalid request: ")
    assert "header" in info.value.message
    assert_no_secret(f"{info.value.message}\n{info.value.request!r}\n{logs.text}")


def test_a_refused_url_is_not_quoted_with_its_credentials() -> None:
    with pytest.raises(PermanentError) as info:  # an empty label in the host: a typo
        OutboundClient(allowlist=LOCAL).request("GET", "http://api..example.com/x", params=[("api_key", SECRET)])
    assert info.value.message.startswith("invalid URL")
    assert_no_secret(info.value.message)  # percent-encoded: the runner's scrub of the raw value misses it


# --- connectors: Slack and SMTP -------------------------------------------------------------

def slack(webhook_url: str) -> ActionContext:
    return ActionContext(inputs={"text": "hi"}, credentials={"webhook_url": webhook_url},
                         http=OutboundClient(allowlist=LOCAL, timeout=0.5), idempotency_key="k")


@pytest.mark.parametrize("webhook_url", [
    f"http://127.0.0.1:{closed_port()}/services/T0ABC/B0DEF/SECRETpath0123",
    "https://hooks..slack.example/services/T0ABC/B0DEF/SECRETpath0123",   # a typo in the host
    "http://chat..example.test/notify/SECRETpath0123",                     # a Slack-compatible service
    "  https://hooks..slack.example/services/T0ABC/B0DEF/SECRETpath0123\n",  # pasted with blanks
])
def test_slack_errors_never_show_the_webhook_url(webhook_url: str, logs: pytest.LogCaptureFixture) -> None:
    with pytest.raises(ConnectorError) as info:
        SLACK_ACTIONS[0].run(slack(webhook_url))
    text = f"{info.value.message}\n{info.value.request!r}\n{logs.text}"
    assert "SECRETpath0123" not in text, text


class EchoingSmtpServer(SmtpServer):
    """A server whose 535 reply repeats what the client sent (some relays echo the AUTH line)."""

    def _authenticate(self, smtp: Any, session: Any, envelope: Any, mechanism: str, auth_data: Any) -> AuthResult:
        assert isinstance(auth_data, LoginPassword)
        user, password = auth_data.login, auth_data.password
        plain = base64.b64encode(b"\0" + user + b"\0" + password).decode()
        login = base64.b64encode(password).decode()
        return AuthResult(success=False, handled=False,
                          message=f"535 5.7.8 {mechanism} {plain} {login} for {user.decode()}:{password.decode()} "
                                  "not accepted")


def test_smtp_login_failure_does_not_echo_the_password(logs: pytest.LogCaptureFixture) -> None:
    password = "Tr0ub4dor&3-smtp"
    with EchoingSmtpServer(auth=("alice", "other")) as server:
        ctx = ActionContext(inputs={"to": "bob@example.com", "subject": "s", "text": "t"},
                            credentials={"host": server.host, "port": server.port, "security": "none",
                                         "username": "alice", "password": password,
                                         "from_address": "robot@acme.example"},
                            http=OutboundClient(), idempotency_key="k", smtp_timeout=2)
        with pytest.raises(PermanentError) as info:
            EMAIL_ACTIONS[0].run(ctx)
    message = info.value.message
    assert message.startswith("SMTP server refused the login: 535")
    ours = "\n".join(logs.handler.format(r) for r in logs.records if not r.name.startswith("mail.log"))
    for needle in (password, base64.b64encode(password.encode()).decode(),
                   base64.b64encode(b"\0alice\0" + password.encode()).decode()):
        assert needle not in f"{message}\n{info.value.request!r}\n{ours}", needle
    assert "alice" in message  # the reply is still shown, minus the credentials


# --- the runner: stored errors and crash logs ----------------------------------------------

@pytest.fixture
def live(tmp_path: Path) -> Iterator[LiveServer]:
    server = LiveServer(make_live_app(tmp_path, POLL_INTERVAL=0.1))  # the default 5 s timeout: no test here waits it out
    yield server
    server.close()


def _connection(live: LiveServer, name: str, kind: str, values: dict[str, Any]) -> int:
    with live.app.app_context():
        return connections.create(db.session, live.app.extensions["hookline"].secret_box, name, kind, values).id


def _history(live: LiveServer, run_id: int) -> str:
    with live.app.app_context():
        run = db.session.get(Run, run_id)
        steps = db.session.scalars(select(StepRun).where(StepRun.run_id == run_id)).all()
        return repr([run.error, *[(s.error, s.input, s.request, s.response) for s in steps]])


def test_stored_errors_hide_a_query_key_the_receiver_echoed(live: LiveServer, logs: pytest.LogCaptureFixture) -> None:
    server = RawTcpServer(_echo)
    try:
        conn = _connection(live, "partner", "http_auth",
                           {"scheme": "api_key_query", "key_name": "pk", "key_value": SECRET})
        with live.app.app_context():
            token = recipes.create(db.session, "r", {
                "steps": [{"key": "a", "action": "http_request", "connection": conn,
                           "inputs": {"method": "POST", "url": f"http://127.0.0.1:{server.port}/v1",
                                      "body_type": "json", "body": "{}"}}],
                "settings": {"retry": {"max_attempts": 1}}}).token
        run_id = live.post(token, json={}).json()["run_id"]
        assert wait_run(live.app, run_id) == "dead"
    finally:
        server.close()
    history = _history(live, run_id)
    assert "unknown command" in history
    assert_no_secret(f"{history}\n{logs.text}")


def test_a_connector_crash_log_does_not_show_connection_secrets(live: LiveServer, monkeypatch: Any,
                                                               logs: pytest.LogCaptureFixture) -> None:
    api_token = "zq8-plainword-credential"  # no shape a pattern could recognise

    def buggy(ctx: ActionContext) -> Any:
        raise RuntimeError(f"could not use {ctx.credentials['token']} for {ctx.inputs['x']}")

    monkeypatch.setitem(registry.ACTIONS, "buggy_creds", Action(
        key="buggy_creds", label="Buggy", description="crashes", run=buggy, credential="http_auth",
        fields=(Field("x", "X"),)))
    conn = _connection(live, "api", "http_auth", {"scheme": "bearer", "token": api_token})
    with live.app.app_context():
        token = recipes.create(db.session, "b", {"steps": [
            {"key": "a", "action": "buggy_creds", "connection": conn, "inputs": {"x": "order 7"}}]}).token
    run_id = live.post(token, json={}).json()["run_id"]
    assert wait_run(live.app, run_id) == "failed"
    crashed = [r for r in logs.records if "crashed" in r.getMessage()]
    assert crashed and "RuntimeError: could not use" in logs.text and "order 7" in logs.text
    assert api_token not in logs.text
    assert api_token not in _history(live, run_id)


def _dead_run_with_failed_alert(live: LiveServer, logs: pytest.LogCaptureFixture, alert: dict[str, Any]) -> None:
    """A run that goes dead at once, then waits until its alert has failed and been logged."""
    with live.app.app_context():
        token = recipes.create(db.session, "r", {
            "steps": [{"key": "a", "action": "http_request",
                       "inputs": {"method": "POST", "url": f"http://127.0.0.1:{closed_port()}/",
                                  "body_type": "json", "body": "{}"}}],
            "settings": {"retry": {"max_attempts": 1}, "alert": alert}}).token
    run_id = live.post(token, json={}).json()["run_id"]
    assert wait_run(live.app, run_id) == "dead"
    deadline = time.monotonic() + 5
    while "not delivered" not in logs.text and time.monotonic() < deadline:
        time.sleep(0.02)
    assert "alert for run" in logs.text


def test_a_failed_alert_logs_no_webhook_url(live: LiveServer, logs: pytest.LogCaptureFixture) -> None:
    hook = _connection(live, "chat", "slack_webhook", {"webhook_url": "http://chat..example.test/notify/SECRETpath0123"})
    _dead_run_with_failed_alert(live, logs, {"action": "slack_message", "connection": hook, "inputs": {"text": "dead"}})
    assert "SECRETpath0123" not in logs.text


def test_a_failed_alert_logs_no_secret_the_receiver_echoed(live: LiveServer,
                                                          logs: pytest.LogCaptureFixture) -> None:
    api_token = "zq8-alert-plainword"  # no shape a pattern could recognise
    alert_conn = _connection(live, "crm", "http_auth",
                             {"scheme": "api_key_header", "key_name": "X-Partner", "key_value": api_token})
    with HttpSink(lambda req: Reply(400, f"key {req.headers.get('X-Partner', '')} is not valid here")) as echo:
        _dead_run_with_failed_alert(live, logs, {
            "action": "http_request", "connection": alert_conn,
            "inputs": {"method": "POST", "url": echo.url, "body_type": "json", "body": "{}"}})
    assert echo.requests, "the alert was sent"
    assert "is not valid here" in logs.text
    assert api_token not in logs.text


# --- the hookline CLI -----------------------------------------------------------------------

HEAD = "recipes:\n  - name: x\n    steps: [{key: s, action: http_request, inputs: "  # the YAML error is on line 3

@pytest.mark.parametrize("content, secret", [
    (HEAD + "{url: 'https://a.example/x', headers: {Authorization: Bearer sk_live_PASTED123}}]\n",
     "sk_live_PASTED123"),
    (HEAD + "{url: 'https://a.example/x?api_key=PASTED123secret' }}]]\n", "PASTED123secret"),
    (HEAD + "{text: 'see https://hooks.slack.com/services/T0/B0/PASTEDslack1' }}]]\n", "PASTEDslack1"),
])
def test_import_errors_do_not_echo_secrets_from_the_file(tmp_path: Path, content: str, secret: str) -> None:
    f = tmp_path / "bad.yaml"
    f.write_text(content)
    result = CliRunner().invoke(cli_main, ["import", "--instance", str(tmp_path / "instance"), str(f)],
                                catch_exceptions=False)
    assert result.exit_code != 0
    assert "not valid YAML or JSON" in result.output and "line 3" in result.output
    assert secret not in result.output


def test_serve_verbose_logs_carry_no_credentials(tmp_path: Path) -> None:
    """The real ``hookline -v serve`` process, logging at DEBUG while it delivers to a URL with
    an API key in its query and to a Slack-shaped URL whose path is the secret."""
    slack_path = "/services/T0ABC/B0DEF/SECRETpath0123"
    with HttpSink() as sink:
        instance = tmp_path / "instance"
        token = "log-test-token-0123456789abcdef"
        recipe = tmp_path / "recipe.yaml"
        recipe.write_text(f"""
recipes:
  - name: logs
    token: {token}
    steps:
      - key: a
        action: http_request
        inputs: {{method: POST, url: "{sink.url}/in?api_key={quote(SECRET, safe='')}", body_type: json, body: "{{}}"}}
      - key: b
        action: http_request
        inputs: {{method: POST, url: "{sink.url}{slack_path}", body_type: json, body: "{{}}"}}
""")
        subprocess.run([*HOOKLINE, "import", "--instance", str(instance), str(recipe)], cwd=ROOT,
                       check=True, capture_output=True)
        port = free_port()
        env = {**os.environ, "HOOKLINE_PORT": str(port), "HOOKLINE_OUTBOUND_ALLOWLIST": "127.0.0.0/8",
               "HOOKLINE_POLL_INTERVAL": "0.2"}
        proc = subprocess.Popen([*HOOKLINE, "-v", "serve", "--instance", str(instance)], cwd=ROOT, env=env,
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        try:
            deadline = time.monotonic() + 20
            while True:
                try:
                    r = requests.post(f"http://127.0.0.1:{port}/hooks/{token}", json={}, timeout=2)
                    break
                except requests.ConnectionError:
                    assert proc.poll() is None and time.monotonic() < deadline, "server did not start"
                    time.sleep(0.1)
            assert r.status_code == 202
            sink.wait_for(2, timeout=20)
            time.sleep(0.5)  # the runner logs after the response
        finally:
            proc.send_signal(signal.SIGTERM)
            out = proc.communicate(timeout=30)[0].decode()
    assert "Hookline listening" in out and "DEBUG" in out, out
    assert_no_secret(out)
    assert "SECRETpath0123" not in out
