"""A real SMTP server (aiosmtpd) on 127.0.0.1 for tests: optional STARTTLS or implicit TLS
with a self-signed certificate made at test time, optional AUTH LOGIN/PLAIN, scripted
failures, and every accepted message recorded as an ``EmailMessage``.

    with SmtpServer(tls="starttls", auth=("alice", "s3cret")) as smtp:
        ...send to smtp.host:smtp.port...
        [mail] = smtp.wait_for(1)
        assert mail.message["Subject"] == "Hi" and mail.rcpt_tos == ["bob@example.com"]

    smtp.reject("RCPT", "550 5.1.1 No such user", addresses=["ghost@example.com"])
    smtp.reject("DATA", "451 4.3.0 Try again later", times=1)
"""
from __future__ import annotations

import datetime as dt
import email
import email.policy
import ipaddress
import ssl
import tempfile
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from email.message import EmailMessage
from pathlib import Path
from typing import Any, Literal, Self

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, AuthResult, LoginPassword
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

Security = Literal["none", "starttls", "ssl"]
Stage = Literal["MAIL", "RCPT", "DATA"]


@dataclass(frozen=True)
class SelfSignedCert:
    """A certificate (its own CA) for ``localhost``, 127.0.0.1 and ::1 by default."""

    cert_pem: bytes
    key_pem: bytes

    @classmethod
    def make(cls, hostnames: Iterable[str] = ("localhost",),
             ips: Iterable[str] = ("127.0.0.1", "::1"), alt_names: bool = True) -> SelfSignedCert:
        """``alt_names=False``: the first hostname only in the subject's common name, as
        certificates were issued before subjectAltName was required."""
        key = ec.generate_private_key(ec.SECP256R1())
        names = list(hostnames)
        subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, names[0] if names else "test")])
        san = [x509.DNSName(h) for h in names] + [x509.IPAddress(ipaddress.ip_address(i)) for i in ips]
        now = dt.datetime.now(dt.UTC)
        builder = (x509.CertificateBuilder().subject_name(subject).issuer_name(subject)
                   .public_key(key.public_key()).serial_number(x509.random_serial_number())
                   .not_valid_before(now - dt.timedelta(minutes=5)).not_valid_after(now + dt.timedelta(days=1))
                   .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True))
        if alt_names:
            builder = builder.add_extension(x509.SubjectAlternativeName(san), critical=False)
        cert = builder.sign(key, hashes.SHA256())
        key_pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                    serialization.NoEncryption())
        return cls(cert.public_bytes(serialization.Encoding.PEM), key_pem)

    def write_ca(self, directory: str | Path) -> str:
        """Write the certificate as a CA bundle (for ``verify=<path>``); returns the path."""
        path = Path(directory) / "ca.pem"
        path.write_bytes(self.cert_pem)
        return str(path)

    def server_context(self) -> ssl.SSLContext:
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        with tempfile.TemporaryDirectory() as tmp:
            cert, key = Path(tmp) / "cert.pem", Path(tmp) / "key.pem"
            cert.write_bytes(self.cert_pem)
            key.write_bytes(self.key_pem)
            ctx.load_cert_chain(cert, key)
        return ctx


@dataclass
class ReceivedMail:
    mail_from: str
    rcpt_tos: list[str]
    message: EmailMessage
    raw: bytes
    tls: bool
    auth_login: str | None
    at: float = field(default_factory=time.monotonic)


@dataclass
class _Rule:
    stage: Stage
    reply: str
    addresses: frozenset[str] | None
    times: int | None

    def take(self, stage: str, address: str | None) -> str | None:
        if stage != self.stage or self.times == 0:
            return None
        if self.addresses is not None and (address or "").lower() not in self.addresses:
            return None
        if self.times is not None:
            self.times -= 1
        return self.reply


class _Handler:
    def __init__(self, server: SmtpServer) -> None:
        self.server = server

    async def handle_MAIL(self, smtp: SMTP, session: Any, envelope: Any, address: str,
                          options: list[str]) -> str:
        if reply := self.server._scripted("MAIL", address):
            return reply
        envelope.mail_from = address
        envelope.mail_options.extend(options)
        return "250 OK"

    async def handle_RCPT(self, smtp: SMTP, session: Any, envelope: Any, address: str,
                          options: list[str]) -> str:
        if reply := self.server._scripted("RCPT", address):
            return reply
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, smtp: SMTP, session: Any, envelope: Any) -> str:
        if reply := self.server._scripted("DATA", None):
            return reply
        raw = envelope.original_content or b""
        message = email.message_from_bytes(raw, policy=email.policy.default)
        login = session.auth_data.login.decode() if isinstance(session.auth_data, LoginPassword) else None
        self.server._record(ReceivedMail(envelope.mail_from, list(envelope.rcpt_tos), message, raw,  # type: ignore[arg-type]
                                         self.server.security == "ssl" or session.ssl is not None, login))
        return "250 2.0.0 Message accepted for delivery"


class _Controller(Controller):
    """Binds port 0 (a free port chosen by the OS) and counts client connections."""

    def __init__(self, owner: SmtpServer, *args: Any, **kwargs: Any) -> None:
        self.owner = owner
        super().__init__(*args, **kwargs)

    def factory(self) -> SMTP:
        owner = self.owner

        class CountingSMTP(SMTP):
            def connection_made(self, transport: Any) -> None:
                if self.transport is None:  # not the STARTTLS re-entry
                    owner._connections += 1
                super().connection_made(transport)

        return CountingSMTP(self.handler, **self.SMTP_kwargs)

    async def _bind(self) -> Any:
        server = await self.loop.create_server(self._factory_invoker, host=self.hostname, port=0,
                                               ssl=self.ssl_context)
        self.port = server.sockets[0].getsockname()[1]
        return server

    def _create_server(self) -> Any:
        return self._bind()


class SmtpServer:
    """``security``: "none", "starttls" (offered, not required) or "ssl" (implicit TLS).
    ``auth=(user, password)`` enables AUTH LOGIN/PLAIN (only after TLS in starttls mode)
    and, with ``auth_required``, refuses mail from clients that did not log in."""

    def __init__(self, *, security: Security = "none", auth: tuple[str, str] | None = None,
                 auth_required: bool = False, cert: SelfSignedCert | None = None) -> None:
        self.security = security
        self.host = "127.0.0.1"
        self.messages: list[ReceivedMail] = []
        self.cert = cert or (SelfSignedCert.make() if security != "none" else None)
        self._auth = auth
        self._rules: list[_Rule] = []
        self._cond = threading.Condition()
        self._connections = 0
        self._baseline = 0
        kwargs: dict[str, Any] = {"auth_require_tls": security == "starttls", "auth_required": auth_required}
        if auth is not None:
            kwargs["authenticator"] = self._authenticate
        if security == "starttls":
            kwargs["tls_context"] = self.cert.server_context()  # type: ignore[union-attr]
        if security == "ssl":
            kwargs["ssl_context"] = self.cert.server_context()  # type: ignore[union-attr]
        self._controller = _Controller(self, _Handler(self), hostname=self.host, port=0, **kwargs)

    @property
    def port(self) -> int:
        return self._controller.port

    @property
    def connections(self) -> int:
        """Client connections since start (0 proves a connector refused before connecting)."""
        return self._connections - self._baseline

    def start(self) -> Self:
        self._controller.start()
        self._baseline = self._connections  # the controller's own readiness probe
        return self

    def stop(self) -> None:
        self._controller.stop()

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def reject(self, stage: Stage, reply: str, *, addresses: Iterable[str] | None = None,
               times: int | None = None) -> None:
        """Answer ``reply`` (e.g. "451 4.3.0 Try later") at ``stage``; for MAIL/RCPT only for
        ``addresses`` when given; only ``times`` times when given (else until cleared)."""
        addrs = frozenset(a.lower() for a in addresses) if addresses is not None else None
        self._rules.append(_Rule(stage, reply, addrs, times))

    def clear_rejections(self) -> None:
        self._rules.clear()

    def wait_for(self, count: int, timeout: float = 10.0) -> list[ReceivedMail]:
        """Block until ``count`` messages were accepted; fail loudly instead of hanging."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while len(self.messages) < count:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError(f"SMTP server got {len(self.messages)} messages, expected {count}")
                self._cond.wait(left)
            return list(self.messages)

    def _scripted(self, stage: str, address: str | None) -> str | None:
        return next((r for r in (rule.take(stage, address) for rule in self._rules) if r), None)

    def _record(self, mail: ReceivedMail) -> None:
        with self._cond:
            self.messages.append(mail)
            self._cond.notify_all()

    def _authenticate(self, smtp: SMTP, session: Any, envelope: Any, mechanism: str,
                      auth_data: Any) -> AuthResult:
        ok = (isinstance(auth_data, LoginPassword) and self._auth is not None
              and (auth_data.login.decode(), auth_data.password.decode()) == self._auth)
        return AuthResult(success=ok, handled=False, auth_data=auth_data if ok else None)  # 535 on failure
