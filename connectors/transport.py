"""Kept-alive HTTP/1.1 connections to checked addresses. The request head is written and
the answer's head read here; the body is read by the standard library's
``http.client.HTTPResponse`` (chunked, Content-Length, or to the end of the connection). The
outbound client (``outbound.py``) encodes requests, checks every destination and follows
redirects itself; this module only sends one request to one address and streams the answer
back.

Why not urllib3's pool, which it replaced: its layers over ``http.client`` (the pool
manager, ``urlopen``'s retry and timeout objects, its response wrapper) cost CPU for features
the client does not use (retries, redirects, proxies). Measured (bench/README.md, ninth
session): a POST to the bench sink through the outbound client took 376–396 µs of CPU with
urllib3 and 267–281 µs with this module; the runner's CPU per run fell by about a tenth.

What is kept from urllib3's behaviour: a connection goes to exactly the address it was given
while TLS (SNI and the certificate check) uses the hostname; idle connections are reused per
(scheme, address, port, hostname), at most ``per_origin`` of them, for at most ``max_origins``
origins (least recently used dropped); a kept connection the server has closed meanwhile is
noticed before it is used; gzip and deflate bodies are decoded as they stream, never more
than ``DECODE_STEP`` bytes at a time, so a compression bomb meets the caller's size cap
instead of filling memory; an answer sent before the request body was read is read.

What it does beyond urllib3: every read and send of an exchange is bounded by one deadline
(a server trickling its headers or chunk trailers one line at a time cannot hold a run past
it); interim answers (103 Early Hints) are skipped to the final one; conflicting or
malformed Content-Length values, and transfer codings it cannot decode, fail the exchange
instead of framing the body wrongly.
"""
from __future__ import annotations

import http.client
import io
import os
import re
import select
import socket
import ssl
import threading
import time
import zlib
from collections import OrderedDict
from collections.abc import Iterator
from dataclasses import dataclass

import certifi
from urllib3 import HTTPHeaderDict

DECODE_STEP = 64 * 1024
ACCEPT_ENCODING = "gzip, deflate"  # exactly what ContentDecoder decodes
_DECODABLE = frozenset({"gzip", "x-gzip", "deflate", "identity", ""})


class ConnectError(OSError):
    """The TCP connection to the address could not be made: nothing was sent, so another
    address of the same host may be tried. The cause is the OSError that said why."""


class BodyDecodeError(Exception):
    """A gzip or deflate body that does not decode."""


@dataclass(frozen=True, slots=True)
class Origin:
    """Where one connection goes: ``address`` is the checked IP address (no brackets),
    ``hostname`` what the URL names (TLS server name and certificate check)."""

    scheme: str
    address: str
    port: int
    hostname: str


class _DeadlineReader(io.RawIOBase):
    """The socket's reads, each given only what is left of the exchange's deadline."""

    def __init__(self, sock: socket.socket, deadline: float) -> None:
        self._raw = sock.makefile("rb", buffering=0)  # keeps the socket open while in use, as http.client expects
        self._sock = sock
        self.deadline = deadline

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: bytearray | memoryview) -> int:  # type: ignore[override]
        left = self.deadline - time.monotonic()
        if left <= 0:
            raise TimeoutError("the deadline passed")
        self._sock.settimeout(left)
        return self._raw.readinto(buffer)  # type: ignore[attr-defined]

    def close(self) -> None:
        self._raw.close()
        super().close()


class _DeadlineSocket:
    """What ``http.client.HTTPResponse`` is given instead of the socket: its ``makefile``
    is one buffered reader per exchange, shared by the interim answers and the final one
    (bytes of the final answer may already sit in the buffer)."""

    def __init__(self, sock: socket.socket, deadline: float) -> None:
        self._file = io.BufferedReader(_DeadlineReader(sock, deadline))

    def makefile(self, mode: str, *args: object, **kwargs: object) -> io.BufferedReader:
        return self._file


# The request's checks, as http.client makes them in putrequest and putheader (same errors,
# same messages: the outbound client turns them into "invalid request" for the history).
_LEGAL_HEADER_NAME = re.compile(rb"[^:\s][^:\r\n]*").fullmatch
_ILLEGAL_HEADER_VALUE = re.compile(rb"\n(?![ \t])|\r(?![ \t\n])").search
_ILLEGAL_METHOD = re.compile(r"[\x00-\x1f]").search
_ILLEGAL_TARGET = re.compile(r"[\x00-\x20\x7f]").search
_ONE_SEND = 64 * 1024  # a body up to this size goes out in the same send as the head


def request_head(method: str, target: str, headers: dict[str, str]) -> bytes:
    """The request line and header fields, as bytes, refusing what http.client refuses (a
    control character in the method or target; a name with ":", a line break or leading
    whitespace; a value with a bare line break). Names are ASCII, values Latin-1."""
    if _ILLEGAL_METHOD(method):
        raise ValueError(f"method can't contain control characters. {method!r}")
    if _ILLEGAL_TARGET(target):
        raise ValueError(f"URL can't contain control characters. {target!r}")
    lines = [f"{method} {target} HTTP/1.1\r\n".encode("ascii")]
    for name, value in headers.items():
        raw_name = name.encode("ascii")
        if not _LEGAL_HEADER_NAME(raw_name):
            raise ValueError(f"Invalid header name {raw_name!r}")
        if isinstance(value, str):
            raw_value = value.encode("latin-1")
        elif isinstance(value, (bytes, bytearray)):
            raw_value = bytes(value)
        elif isinstance(value, int):  # as http.client: a number is sent as its digits
            raw_value = str(value).encode("ascii")
        else:
            raise TypeError(f"a header value of type {type(value).__name__} is not text")
        if _ILLEGAL_HEADER_VALUE(raw_value):
            raise ValueError(f"Invalid header value {raw_value!r}")
        lines.append(raw_name + b": " + raw_value + b"\r\n")
    lines.append(b"\r\n")
    return b"".join(lines)


class _Connection:
    """One socket to the origin's address (for https wrapped for its hostname). Every send
    and read of an exchange, and the connect, get what is left of ``deadline`` (set by
    :meth:`ConnectionPool.send` for each exchange).

    Why not ``http.client.HTTPConnection``: its request path (``putrequest``/``putheader``,
    two sends) and its header parser (the ``email`` package) cost about as much CPU as the
    rest of an exchange; :func:`request_head` and :class:`_Response` keep its checks and its
    body framing (bench/README.md, fourteenth session)."""

    def __init__(self, origin: Origin, tls: ssl.SSLContext | None) -> None:
        self.origin = origin
        self._tls = tls
        self.deadline = 0.0
        self.sock: socket.socket | None = None

    def request(self, method: str, target: str, headers: dict[str, str], body: bytes | None) -> None:
        """Send the request; as http.client, a Host (the origin's) and ``Accept-Encoding:
        identity`` are added when not given (no Accept-Encoding would accept any coding)."""
        names = {name.lower() for name in headers}
        if "host" not in names or "accept-encoding" not in names:
            extra = {} if "host" in names else {"Host": self._host_header()}
            if "accept-encoding" not in names:
                extra["Accept-Encoding"] = "identity"
            headers = {**extra, **headers}
        head = request_head(method, target, headers)
        if body and len(body) <= _ONE_SEND:
            self.send(head + body)
            return
        self.send(head)
        if body:
            self.send(body)

    def _host_header(self) -> str:
        origin = self.origin  # the hostname as the URL names it (the outbound client's IDNA form)
        host = f"[{origin.hostname}]" if ":" in origin.hostname else origin.hostname
        return host if origin.port == (443 if origin.scheme == "https" else 80) else f"{host}:{origin.port}"

    def final_response(self, method: str) -> _Response:
        """The final answer, its status line and header fields read (interim 1xx answers,
        100 Continue and 103 Early Hints, are read past on the same buffered reader)."""
        assert self.sock is not None
        raw = _Response(_DeadlineSocket(self.sock, self.deadline), method=method)  # type: ignore[arg-type]
        raw.begin()
        return raw

    def send(self, data: bytes) -> None:
        if self.sock is None:
            raise OSError("not connected")
        left = self.deadline - time.monotonic()
        if left <= 0:
            raise TimeoutError("the deadline passed")
        self.sock.settimeout(left)
        self.sock.sendall(data)

    def connect(self) -> None:
        origin = self.origin
        try:
            sock = socket.create_connection((origin.address, origin.port),
                                            max(self.deadline - time.monotonic(), 0.001))
        except OSError as exc:
            raise ConnectError(str(exc)) from exc
        try:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            if self._tls is not None:
                sock = self._tls.wrap_socket(sock, server_hostname=origin.hostname)
        except BaseException:
            sock.close()
            raise
        self.sock = sock

    def close(self) -> None:
        sock, self.sock = self.sock, None
        if sock is not None:
            sock.close()

    def dropped(self) -> bool:
        """True when the idle connection has anything to read (the server closed it, or
        sent what no request asked for): it cannot carry another request."""
        sock = self.sock
        if sock is None:
            return True
        if isinstance(sock, ssl.SSLSocket) and sock.pending():
            return True
        if not hasattr(select, "poll"):  # Windows
            return bool(select.select([sock], [], [], 0)[0])
        poller = select.poll()
        poller.register(sock, select.POLLIN)
        return bool(poller.poll(0))


_MAX_LINE = 65536  # as http.client: one status or header line
_MAX_FIELDS = 100  # ... and header fields in one answer
_OWS = " \t"


def read_fields(fp: io.BufferedReader) -> list[tuple[str, str]]:
    """The header fields up to the empty line, as (name, value) in the order sent. A folded
    line (obs-fold) continues the field before it, joined by a space (RFC 9112 5.2); a line
    without a colon, or a name with whitespace in it ("Content-Length : 5"), is not a field
    and is skipped, so it can frame nothing. The end of the stream ends the fields."""
    fields: list[tuple[str, str]] = []
    count = 0
    while True:
        line = fp.readline(_MAX_LINE + 1)
        if len(line) > _MAX_LINE:
            raise http.client.LineTooLong("header line")
        if line in (b"\r\n", b"\n", b""):
            return fields
        count += 1
        if count > _MAX_FIELDS:
            raise http.client.HTTPException(f"got more than {_MAX_FIELDS} headers")
        text = line.decode("latin-1").rstrip("\r\n")
        if text[:1] in (" ", "\t"):
            if fields:
                name, value = fields[-1]
                fields[-1] = (name, f"{value} {text.strip(_OWS)}" if value else text.strip(_OWS))
            continue
        name, colon, value = text.partition(":")
        if not colon or not name or any(c in name for c in _OWS):
            continue
        fields.append((name, value.strip(_OWS)))


def _values(fields: list[tuple[str, str]], name: str) -> list[str]:
    """Every comma-separated element of the fields called ``name`` (any case), trimmed."""
    return [part.strip(_OWS) for key, value in fields if key.lower() == name for part in value.split(",")]


class _Response(http.client.HTTPResponse):
    """http.client's reader of a body (chunked, Content-Length, to the end of the
    connection) behind a head read here: :func:`read_fields` instead of the ``email``
    parser, and framing that refuses what cannot be trusted (RFC 9112 6.3) instead of
    guessing:

    * conflicting or malformed Content-Length values fail the exchange;
    * Transfer-Encoding chunked frames the body and overrides a Content-Length (the
      connection is then not kept); any other transfer coding fails the exchange, as this
      client cannot decode one.

    :attr:`fields` holds the final answer's header fields; :attr:`declared_length` its
    Content-Length (None: chunked, or not given)."""

    fields: list[tuple[str, str]]
    declared_length: int | None

    def begin(self) -> None:
        if self.headers is not None:
            return
        while True:
            version, status, reason = self._read_status()  # type: ignore[attr-defined]
            fields = read_fields(self.fp)  # type: ignore[arg-type]
            if not 100 <= status < 200 or status == 101:
                break
        self.code = self.status = status
        self.reason = reason.strip()
        if version in ("HTTP/1.0", "HTTP/0.9"):
            self.version = 10
        elif version.startswith("HTTP/1."):
            self.version = 11
        else:
            raise http.client.UnknownProtocol(version)
        self.fields = fields
        self.headers = self.msg = http.client.HTTPMessage()
        for name, value in fields:
            self.msg.set_raw(name, value)

        self.chunk_left = None
        if status in (204, 304) or 100 <= status < 200 or self._method == "HEAD":  # type: ignore[attr-defined]
            # No body, whatever the fields say: a HEAD's Content-Length or Transfer-Encoding
            # describes the GET's body, which is not coming (nor is its size a reason to refuse).
            self.chunked, self.length, self.declared_length, lengths = False, 0, None, []
        else:
            codings = [c.lower() for c in _values(fields, "transfer-encoding") if c.lower() not in ("", "identity")]
            if codings and codings != ["chunked"]:
                raise http.client.HTTPException(
                    f"a Transfer-Encoding this client cannot decode: {', '.join(codings)[:60]!r}")
            self.chunked = bool(codings)
            lengths = _values(fields, "content-length")
            if lengths and (len(set(lengths)) > 1 or not (lengths[0].isascii() and lengths[0].isdigit()
                                                         and len(lengths[0]) <= 18)):
                raise http.client.HTTPException(f"invalid Content-Length {', '.join(lengths)[:60]!r}")
            self.declared_length = int(lengths[0]) if lengths and not self.chunked else None
            self.length = self.declared_length

        connection = [c.lower() for c in _values(fields, "connection")]
        if self.version == 11:
            self.will_close = "close" in connection
        else:  # HTTP/1.0 keeps the connection only when it says so
            self.will_close = "keep-alive" not in connection and not _values(fields, "keep-alive")
        if self.chunked and lengths:  # both: a sign of smuggling; never reuse the connection
            self.will_close = True
        if not self.chunked and self.length is None:
            self.will_close = True


def tls_context(verify: bool | str, extra_ca: str | None = None) -> ssl.SSLContext:
    """TLS 1.2 or newer, names checked against the certificate's subjectAltName only (no
    fallback to its common name, as urllib3 and browsers do); ``verify`` True (certifi's
    bundle), a CA file or directory, or False (no certificate or hostname check);
    ``extra_ca``, a CA file or directory trusted as well (a private CA's services). Only
    these CAs are trusted: not the system's store, not ``SSL_CERT_FILE``."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)  # not create_default_context: it adds the system's CAs
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.options |= ssl.OP_NO_COMPRESSION | ssl.OP_NO_TICKET
    ctx.hostname_checks_common_name = False
    ctx.set_alpn_protocols(["http/1.1"])
    if verify is False:
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
        return ctx
    _load_cas(ctx, certifi.where() if verify is True else verify)
    if extra_ca:
        _load_cas(ctx, extra_ca)
    return ctx


def _load_cas(ctx: ssl.SSLContext, path: str) -> None:
    if os.path.isdir(path):
        ctx.load_verify_locations(capath=path)
    else:
        ctx.load_verify_locations(cafile=path)


def ca_problem(path: str) -> str | None:
    """Why ``path`` cannot serve as CA certificates (missing, unreadable, no PEM
    certificate in it), or None: checked when the setting is read, not at the first
    delivery."""
    if not os.path.exists(path):
        return "no such file or folder"
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    no_certificate = "no CA certificate in it (PEM: -----BEGIN CERTIFICATE-----)"
    try:
        _load_cas(ctx, path)
    except ssl.SSLError:
        return no_certificate
    except (OSError, ValueError) as exc:
        return f"cannot be read ({getattr(exc, 'strerror', None) or exc})"
    if not os.path.isdir(path) and not ctx.get_ca_certs():
        return no_certificate
    return None


class ContentDecoder:
    """Streams a body through its Content-Encoding (gzip, x-gzip, deflate; several, in the
    order the server applied them), yielding at most ``DECODE_STEP`` bytes at a time."""

    def __init__(self, encodings: list[str]) -> None:
        self._stages = [_Inflater(e) for e in reversed(encodings) if e not in ("identity", "")]

    @staticmethod
    def for_header(value: str | None) -> ContentDecoder | None:
        """A decoder for a Content-Encoding value, or None when the body is to be kept as
        it came: no encoding, or one this client cannot decode (br, zstd, compress)."""
        encodings = [e.strip().lower() for e in (value or "").split(",")]
        if not all(e in _DECODABLE for e in encodings) or all(e in ("identity", "") for e in encodings):
            return None
        return ContentDecoder(encodings)

    def feed(self, data: bytes) -> Iterator[bytes]:
        return self._through(data, 0, final=False)

    def finish(self) -> Iterator[bytes]:
        return self._through(b"", 0, final=True)

    def _through(self, data: bytes, stage: int, final: bool) -> Iterator[bytes]:
        if stage == len(self._stages):
            if data:
                yield data
            return
        inflater = self._stages[stage]
        for piece in inflater.feed(data):
            yield from self._through(piece, stage + 1, final=False)
        if final:
            for piece in inflater.finish():
                yield from self._through(piece, stage + 1, final=False)
            yield from self._through(b"", stage + 1, final=True)


class _Inflater:
    """One gzip or deflate stage. Gzip may come in several members (each decoded; bytes
    after the first member that are not one are ignored, as browsers and urllib3 do).
    Deflate is zlib-wrapped or, as some servers send it, raw: its first two bytes tell."""

    def __init__(self, encoding: str) -> None:
        self._gzip = encoding in ("gzip", "x-gzip")
        self._head = b""  # deflate: held back until its first two bytes are known
        self._members = 1
        self._fed = False
        self._ended = False  # gzip: bytes that are not another member followed the last one
        self._trailer = b""  # gzip: bytes after a member, until they show whether another begins
        self._obj = zlib.decompressobj(16 + zlib.MAX_WBITS) if self._gzip else None

    def feed(self, data: bytes) -> Iterator[bytes]:
        self._fed = self._fed or bool(data)
        if self._ended:
            return
        if self._obj is None:
            self._head += data
            if len(self._head) < 2:
                return
            zlib_wrapped = self._head[0] & 0x0F == 8 and int.from_bytes(self._head[:2], "big") % 31 == 0
            self._obj = zlib.decompressobj(zlib.MAX_WBITS if zlib_wrapped else -zlib.MAX_WBITS)
            data, self._head = self._head, b""
        try:
            while data:
                if self._obj.eof:
                    if not self._gzip:
                        return  # bytes after the deflate stream
                    data = self._trailer + data
                    if len(data) < 2:
                        self._trailer = data
                        return
                    self._trailer = b""
                    if data[:2] != b"\x1f\x8b":  # not another member: trailing bytes, ignored
                        self._ended = True
                        return
                    self._obj = zlib.decompressobj(16 + zlib.MAX_WBITS)
                    self._members += 1
                out = self._obj.decompress(data, DECODE_STEP)
                data = self._obj.unconsumed_tail or (self._obj.unused_data if self._obj.eof else b"")
                if out:
                    yield out
        except zlib.error as exc:
            if self._members > 1:
                self._ended = True  # not another gzip member: trailing bytes, ignored
                return
            raise BodyDecodeError(f"{'gzip' if self._gzip else 'deflate'} data does not decode: {exc}") from None

    def finish(self) -> Iterator[bytes]:
        if self._ended:
            return
        if self._obj is None:
            if self._head:
                raise BodyDecodeError("deflate data does not decode: a body of one byte")
            return
        try:
            out = self._obj.flush()
        except zlib.error as exc:
            raise BodyDecodeError(f"{'gzip' if self._gzip else 'deflate'} data does not decode: {exc}") from None
        if out:
            yield out
        if self._members > 1:
            return  # a later member cut short: the first one, whole, is the body (as urllib3 took it)
        if self._fed and not self._obj.eof:  # a cut stream: what decoded so far is not the body
            raise BodyDecodeError(f"{'gzip' if self._gzip else 'deflate'} data ends before its stream does")


class Response:
    """One answer in flight: status and headers are read; the body streams through
    :meth:`read1`. Call :meth:`release` after reading it all (the connection goes back to
    the pool when it can carry another request) or :meth:`discard` to drop it."""

    def __init__(self, pool: ConnectionPool, conn: _Connection, raw: _Response) -> None:
        self._pool, self._conn, self._raw = pool, conn, raw
        self.declared_length = raw.declared_length
        self.status = raw.status
        self.received = 0  # body bytes read from the socket, before decoding
        merged: dict[str, tuple[str, str]] = {}  # one entry per name, repeats joined with ", "
        for name, value in raw.fields:
            key = name.lower()
            merged[key] = (merged[key][0], f"{merged[key][1]}, {value}") if key in merged else (name, value)
        self.headers = HTTPHeaderDict()
        for name, value in merged.values():
            self.headers[name] = value
        self._decoder = ContentDecoder.for_header(self.headers.get("Content-Encoding"))
        self._pending: Iterator[bytes] = iter(())
        self._read_all = False  # the socket side is at the end of the body
        self.done = False  # ... and every decoded piece has been handed out

    def read1(self, amount: int = DECODE_STEP) -> bytes:
        """The next piece of the (decoded) body, after at most one read from the socket;
        b"" when that read decoded to nothing yet, or at the end (then :attr:`done`)."""
        for piece in self._pending:
            return piece
        if self._read_all:
            self.done = True
            return b""
        raw = self._raw.read1(amount) if self._raw.length != 0 else b""
        self.received += len(raw)
        if not raw:
            if self._raw.length:  # the connection closed before Content-Length bytes came
                raise http.client.IncompleteRead(b"", self._raw.length)
            self._read_all = True
            if self._decoder is not None:
                self._pending = self._decoder.finish()
            return self.read1(amount)
        if self._decoder is None:
            return raw
        self._pending = self._decoder.feed(raw)
        for piece in self._pending:
            return piece
        return b""

    def release(self) -> None:
        """Done with the response: keep its connection for the next request to the same
        origin when the whole body was read and neither side asked to close."""
        raw, conn = self._raw, self._conn
        reusable = self.done and not raw.will_close and conn.sock is not None
        raw.close()
        if reusable:
            self._pool.put(conn)
        else:
            conn.close()

    def discard(self) -> None:
        self._raw.close()
        self._conn.close()


class ConnectionPool:
    """Idle kept-alive connections, by origin. Thread-safe; a connection is used by one
    thread at a time (taken out while in use)."""

    def __init__(self, verify: bool | str = True, per_origin: int = 32, max_origins: int = 32,
                 extra_ca: str | None = None) -> None:
        self._tls: ssl.SSLContext | None = None
        self._verify = verify
        self._extra_ca = extra_ca
        self.per_origin = per_origin
        self.max_origins = max_origins
        self._idle: OrderedDict[Origin, list[_Connection]] = OrderedDict()
        self._lock = threading.Lock()

    def _context(self) -> ssl.SSLContext:
        if self._tls is None:  # built on first use: loading the CA bundle costs milliseconds
            with self._lock:
                if self._tls is None:
                    self._tls = tls_context(self._verify, self._extra_ca)
        return self._tls

    def send(self, origin: Origin, method: str, target: str, body: bytes | None, headers: dict[str, str],
             timeout: float) -> Response:
        """Send one request to ``origin`` and read the status line and headers. Raises
        :class:`ConnectError` when no connection could be made, ``TimeoutError`` past the
        deadline (``timeout`` from now, for every send and read of the exchange, body
        included), other ``OSError``, ``ssl.SSLError`` and ``http.client.HTTPException``
        as they come."""
        deadline = time.monotonic() + timeout
        conn = self._take(origin)
        try:
            conn.deadline = deadline
            if conn.sock is None:
                conn.connect()
            try:
                conn.request(method, target, headers, body)
            except (BrokenPipeError, ConnectionResetError):
                pass  # it stopped reading, perhaps to answer early (413): what it said is the answer
            raw = conn.final_response(method)
        except BaseException:
            conn.close()
            raise
        return Response(self, conn, raw)

    def _take(self, origin: Origin) -> _Connection:
        while True:
            with self._lock:  # looked up and taken at once: put() may evict the origin meanwhile
                idle = self._idle.get(origin)
                if not idle:
                    break
                self._idle.move_to_end(origin)
                conn = idle.pop()
            if not conn.dropped():
                return conn
            conn.close()
        return _Connection(origin, self._context() if origin.scheme == "https" else None)

    def put(self, conn: _Connection) -> None:
        evicted: list[_Connection] = []
        with self._lock:
            idle = self._idle.get(conn.origin)
            if idle is None:
                idle = self._idle[conn.origin] = []
                while len(self._idle) > self.max_origins:
                    evicted.extend(self._idle.popitem(last=False)[1])
            self._idle.move_to_end(conn.origin)
            if len(idle) < self.per_origin:
                idle.append(conn)
            else:
                evicted.append(conn)
        for old in evicted:
            old.close()

    def clear(self) -> None:
        with self._lock:
            conns = [c for idle in self._idle.values() for c in idle]
            self._idle.clear()
        for conn in conns:
            conn.close()
