"""The outbound client's own transport (connectors/transport.py): what urllib3 used to do for
it, against real sockets on 127.0.0.1. Each server here answers with exact bytes, so the
framing (chunked, close-delimited, HEAD), encodings and connection reuse are the ones a real
receiver produces."""
from __future__ import annotations

import gzip
import socket
import threading
import time
import zlib
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Self

import pytest

from connectors.base import PermanentError, RetryableError
from connectors.outbound import OutboundClient, raise_for_status
from connectors.transport import DECODE_STEP, ContentDecoder, request_head
from tests.sinks import HttpSink, RawTcpServer, Reply
from tests.smtp_server import SelfSignedCert

LOCAL = ["127.0.0.0/8"]
Answer = Callable[[int, bytes], bytes]  # (request number on this server, request head) -> response bytes


class KeepAliveServer:
    """Serves any number of requests per connection, answering each with ``answer``; closes
    a connection after an answer that says ``Connection: close``, or ``idle_close`` seconds
    after its last answer (as servers with a keep-alive timeout do). Counts connections."""

    def __init__(self, answer: Answer, idle_close: float | None = None) -> None:
        self.answer = answer
        self.idle_close = idle_close
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen()
        self.port = self.sock.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}/"
        self.connections = 0
        self.requests = 0
        self._lock = threading.Lock()
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            with self._lock:
                self.connections += 1
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn: socket.socket) -> None:
        buf = b""
        with conn:
            while True:
                conn.settimeout(self.idle_close or 5)
                try:
                    while b"\r\n\r\n" not in buf:
                        data = conn.recv(65536)
                        if not data:
                            return
                        buf += data
                except OSError:  # the idle timeout: close, as the server would
                    return
                head, _, buf = buf.partition(b"\r\n\r\n")
                length = next((int(line.split(b":")[1]) for line in head.split(b"\r\n")
                               if line.lower().startswith(b"content-length:")), 0)
                while len(buf) < length:
                    buf += conn.recv(65536)
                buf = buf[length:]
                with self._lock:
                    self.requests += 1
                    n = self.requests
                reply = self.answer(n, head)
                conn.sendall(reply)
                if b"connection: close" in reply.split(b"\r\n\r\n")[0].lower():
                    return

    def close(self) -> None:
        self.sock.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def ok(body: bytes = b"ok", headers: str = "") -> bytes:
    return f"HTTP/1.1 200 OK\r\nContent-Length: {len(body)}\r\n{headers}\r\n".encode() + body


@pytest.fixture
def client() -> OutboundClient:
    return OutboundClient(allowlist=LOCAL, timeout=2)


def test_chunked_bodies_are_joined_and_the_connection_kept(client: OutboundClient) -> None:
    chunked = (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nContent-Type: application/json\r\n\r\n"
               b"5\r\n{\"a\":\r\n3\r\n 1}\r\n0\r\nX-Trailer: t\r\n\r\n")
    with KeepAliveServer(lambda n, head: chunked if n == 1 else ok()) as server:
        resp = client.request("GET", server.url)
        assert resp.json() == {"a": 1}
        assert client.request("GET", server.url).text == "ok"
        assert server.connections == 1


def test_a_body_ended_by_closing_the_connection(client: OutboundClient) -> None:
    """No Content-Length, not chunked: the body is everything until the server closes, and
    the next request needs a new connection."""
    def answer(conn: socket.socket, head: bytes) -> None:
        conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n\r\nall of ")
        time.sleep(0.05)
        conn.sendall(b"it")
        conn.close()
    with RawTcpServer(answer) as server:
        assert client.request("GET", server.url).text == "all of it"
        assert client.request("GET", server.url).text == "all of it"


def test_head_answers_carry_no_body_and_keep_the_connection(client: OutboundClient) -> None:
    with KeepAliveServer(lambda n, head: (b"HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n"
                                          if head.startswith(b"HEAD") else ok())) as server:
        resp = client.request("HEAD", server.url)
        assert resp.status == 200 and resp.body == b"" and resp.headers["Content-Length"] == "1000"
        assert client.request("GET", server.url).text == "ok"
        assert server.connections == 1


def test_the_fields_of_an_answer_without_a_body_frame_nothing(client: OutboundClient) -> None:
    """A HEAD's Content-Length is the size of the GET's body: a large one is no reason to refuse
    the answer as too large (it was, before). Nor does a 204's or a HEAD's Transfer-Encoding
    promise chunks."""
    small = OutboundClient(allowlist=LOCAL, timeout=2, max_response_bytes=1000)

    def answer(n: int, head: bytes) -> bytes:
        if head.startswith(b"HEAD"):
            return b"HTTP/1.1 200 OK\r\nContent-Length: 10485760\r\nTransfer-Encoding: gzip, chunked\r\n\r\n"
        if b"/empty" in head.split(b"\r\n", 1)[0]:
            return b"HTTP/1.1 204 No Content\r\nTransfer-Encoding: chunked\r\n\r\n"
        return ok()
    with KeepAliveServer(answer) as server:
        head = small.request("HEAD", server.url)
        assert head.status == 200 and head.body == b"" and head.headers["Content-Length"] == "10485760"
        empty = small.request("DELETE", server.url + "empty")
        assert empty.status == 204 and empty.body == b""
        assert small.request("GET", server.url).text == "ok"
    assert server.connections == 1


def test_a_kept_connection_the_server_closed_meanwhile_is_not_used(client: OutboundClient) -> None:
    """Receivers close idle keep-alive connections (Node.js after 5 s, nginx after 75 s).
    The next delivery must go out on a new connection, not fail on the dead one."""
    with KeepAliveServer(lambda n, head: ok(), idle_close=0.1) as server:
        assert client.request("POST", server.url, json={"n": 1}).status == 200
        time.sleep(0.4)  # the server has closed it by now
        assert client.request("POST", server.url, json={"n": 2}).status == 200
        assert server.connections == 2 and server.requests == 2


def test_connection_close_from_the_server_is_honoured(client: OutboundClient) -> None:
    with KeepAliveServer(lambda n, head: ok(headers="Connection: close\r\n")) as server:
        for _ in range(3):
            assert client.request("GET", server.url).text == "ok"
        assert server.connections == 3


def test_idle_connections_are_bounded_per_destination_and_in_destinations() -> None:
    """``pool_size`` idle connections per destination, and as many destinations: beyond
    them, connections are closed after use instead of kept."""
    client = OutboundClient(allowlist=LOCAL, timeout=5, pool_size=2)
    def slow(n: int, head: bytes) -> bytes:
        time.sleep(0.3)  # the requests of a batch overlap
        return ok()
    with KeepAliveServer(slow) as a:
        with ThreadPoolExecutor(4) as pool:
            assert list(pool.map(lambda _: client.request("GET", a.url).status, range(4))) == [200] * 4
        assert a.connections == 4
        with ThreadPoolExecutor(3) as pool:  # 2 were kept: one more is needed
            assert list(pool.map(lambda _: client.request("GET", a.url).status, range(3))) == [200] * 3
        assert a.connections == 5
    with KeepAliveServer(lambda n, head: ok()) as b, KeepAliveServer(lambda n, head: ok()) as c, \
            KeepAliveServer(lambda n, head: ok()) as d:
        for server in (b, c, b, d, b, c):  # c is the least recently used when d arrives
            assert client.request("GET", server.url).status == 200
        assert (b.connections, c.connections, d.connections) == (1, 2, 1)


@pytest.mark.parametrize("encoding, encode", [
    ("gzip", gzip.compress),
    ("x-gzip", gzip.compress),
    ("deflate", zlib.compress),                                          # zlib-wrapped, as the RFC says
    ("deflate", lambda b: zlib.compress(b)[2:-4]),                       # raw, as some servers send it
    ("gzip, deflate", lambda b: zlib.compress(gzip.compress(b))),        # applied in that order
    ("gzip", lambda b: gzip.compress(b[:500]) + gzip.compress(b[500:])),  # two members
    ("gzip", lambda b: gzip.compress(b) + b"\0\0trailing"),              # bytes after the member
    ("gzip", lambda b: gzip.compress(b) + b"\n"),                         # a newline after it
    ("gzip", lambda b: gzip.compress(b) + b"\x1f\x8b"),                   # the start of a member that never came
    ("identity", lambda b: b),
], ids=["gzip", "x-gzip", "deflate", "raw deflate", "gzip then deflate", "two gzip members",
        "gzip with trailing bytes", "gzip and a newline", "gzip and a cut member", "identity"])
def test_encoded_bodies_are_decoded(client: OutboundClient, encoding: str, encode: Callable[[bytes], bytes]) -> None:
    plain = bytes(range(256)) * 8
    with KeepAliveServer(lambda n, head: ok(encode(plain), f"Content-Encoding: {encoding}\r\n")) as server:
        assert client.request("GET", server.url).body == plain
        assert client.request("GET", server.url).body == plain
        assert server.connections == 1


def test_an_encoding_the_client_cannot_decode_is_kept_as_sent(client: OutboundClient) -> None:
    """It only offers gzip and deflate; a server sending br anyway gets its bytes kept."""
    with KeepAliveServer(lambda n, head: ok(b"\x8b\x02\x80ok\x03", "Content-Encoding: br\r\n")) as server:
        resp = client.request("GET", server.url)
        assert resp.body == b"\x8b\x02\x80ok\x03"
        assert client.request("GET", server.url).status == 200
        [accept] = [line for line in _last_head(server, client).split(b"\r\n") if line.lower().startswith(b"accept-enc")]
    assert accept.split(b":", 1)[1].strip() == b"gzip, deflate"


def _last_head(server: KeepAliveServer, client: OutboundClient) -> bytes:
    heads: list[bytes] = []
    server.answer = lambda n, head: (heads.append(head), ok())[1]
    client.request("GET", server.url)
    return heads[-1]


@pytest.mark.parametrize("encoding, body", [("gzip", b"not gzip at all"), ("deflate", b"\x78\x9cnot deflate"),
                                            ("gzip", gzip.compress(bytes(range(256)) * 20)[:-30])],
                         ids=["not gzip", "not deflate", "gzip cut short"])
def test_a_body_that_does_not_decode_fails_the_step(client: OutboundClient, encoding: str, body: bytes) -> None:
    with KeepAliveServer(lambda n, head: ok(body, f"Content-Encoding: {encoding}\r\n")) as server, \
            pytest.raises(PermanentError, match=f"could not decode the response from 127.0.0.1:{server.port}"):
        client.request("GET", server.url)


def test_a_compression_bomb_is_decoded_a_piece_at_a_time() -> None:
    """50 MB of zeros in 50 KB of gzip: no piece handed on is larger than DECODE_STEP, so the
    client's size cap stops it before it fills memory."""
    bomb = gzip.compress(b"\0" * 50_000_000)
    decoder = ContentDecoder.for_header("gzip")
    assert decoder is not None
    sizes = [len(piece) for piece in decoder.feed(bomb)] + [len(piece) for piece in decoder.finish()]
    assert sum(sizes) == 50_000_000 and max(sizes) <= DECODE_STEP
    small = OutboundClient(allowlist=LOCAL, timeout=5, max_response_bytes=1_000_000)
    with KeepAliveServer(lambda n, head: ok(bomb, "Content-Encoding: gzip\r\n")) as server, \
            pytest.raises(PermanentError, match="response too large"):
        small.request("GET", server.url)


@pytest.mark.parametrize("encode", [zlib.compress, lambda b: zlib.compress(b)[2:-4], gzip.compress],
                         ids=["deflate", "raw deflate", "gzip"])
def test_bodies_arriving_a_byte_at_a_time_decode(encode: Callable[[bytes], bytes]) -> None:
    plain = b"hookline " * 300
    decoder = ContentDecoder.for_header("gzip" if encode is gzip.compress else "deflate")
    assert decoder is not None
    data = encode(plain)
    out = b"".join(piece for i in range(len(data)) for piece in decoder.feed(data[i:i + 1]))
    assert out + b"".join(decoder.finish()) == plain


def test_a_server_that_does_not_speak_http(client: OutboundClient) -> None:
    with RawTcpServer(lambda conn, head: conn.sendall(b"SSH-2.0-OpenSSH_9.2\r\n")) as server, \
            pytest.raises(RetryableError, match=f"^invalid HTTP response from 127.0.0.1:{server.port}: BadStatusLine"):
        client.request("GET", server.url)


def test_a_server_that_closes_without_answering(client: OutboundClient) -> None:
    with RawTcpServer(lambda conn, head: conn.close()) as server, \
            pytest.raises(RetryableError, match=f"^connection reset by 127.0.0.1:{server.port}$"):
        client.request("POST", server.url, json={"a": 1})


def test_a_body_cut_short_is_retryable(client: OutboundClient) -> None:
    def answer(conn: socket.socket, head: bytes) -> None:
        conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nonly part")
        conn.close()
    with RawTcpServer(answer) as server, \
            pytest.raises(RetryableError, match=f"^invalid HTTP response from 127.0.0.1:{server.port}: IncompleteRead"):
        client.request("GET", server.url)


def test_https_connections_are_kept_alive_too(tmp_path: Path) -> None:
    """TLS 1.3 servers send session tickets after the handshake: a kept connection must not
    mistake them for the server closing it."""
    cert = SelfSignedCert.make()
    with HttpSink(lambda r: Reply(200, "tls ok"), ssl_context=cert.server_context()) as sink:
        client = OutboundClient(allowlist=LOCAL, timeout=2, verify=cert.write_ca(tmp_path))
        for _ in range(3):
            assert client.request("POST", sink.url, json={"a": 1}).text == "tls ok"
            time.sleep(0.05)
        assert sink.connections == 1


def test_an_answer_sent_before_the_body_was_read_is_the_answer(client: OutboundClient) -> None:
    """A receiver with a body limit answers 413 as soon as it has read the headers and
    closes, while the client is still sending the body. The step must fail with that 413
    (permanent: retrying cannot help), not with the broken pipe it causes (retried)."""
    def answer(conn: socket.socket, head: bytes) -> None:
        conn.sendall(b"HTTP/1.1 413 Payload Too Large\r\nContent-Length: 9\r\nConnection: close\r\n\r\ntoo large")
        conn.close()
    with RawTcpServer(answer) as server, pytest.raises(PermanentError, match="^HTTP 413 [A-Za-z ]+: too large$"):
        resp = client.request("POST", server.url, data=b"x" * 8_000_000)
        raise_for_status(resp)


def test_a_certificate_naming_the_host_only_in_its_common_name_is_refused(tmp_path: Path) -> None:
    """subjectAltName is what names a TLS server (RFC 6125); the common-name fallback is
    gone from browsers and urllib3, and is refused here too."""
    cn_only = SelfSignedCert.make(hostnames=["localhost"], ips=[], alt_names=False)
    with HttpSink(ssl_context=cn_only.server_context()) as sink:
        client = OutboundClient(allowlist=LOCAL + ["localhost"], timeout=2, verify=cn_only.write_ca(tmp_path))
        with pytest.raises(PermanentError, match="TLS certificate of localhost:.* could not be verified"):
            client.request("GET", f"https://localhost:{sink.port}/")


def test_only_the_configured_certificates_are_trusted(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """verify=<bundle> trusts that bundle, not also the system's store or SSL_CERT_FILE
    (where a corporate interception CA would be)."""
    server_ca, other_ca = SelfSignedCert.make(), SelfSignedCert.make()
    (tmp_path / "server").mkdir()
    (tmp_path / "other").mkdir()
    monkeypatch.setenv("SSL_CERT_FILE", server_ca.write_ca(tmp_path / "server"))
    with HttpSink(ssl_context=server_ca.server_context()) as sink:
        client = OutboundClient(allowlist=LOCAL, timeout=2, verify=other_ca.write_ca(tmp_path / "other"))
        with pytest.raises(PermanentError, match="TLS certificate of localhost:.* could not be verified"):
            client.request("GET", sink.url)


@pytest.mark.parametrize("lengths", ["Content-Length: 2\r\nContent-Length: 27", "Content-Length: 2, 27",
                                     "Content-Length: \u00b2".encode().decode("latin-1"), "Content-Length: " + "9" * 40])
def test_a_content_length_that_cannot_be_trusted_fails_the_exchange(client: OutboundClient, lengths: str) -> None:
    """Framed by the first of two lengths, a body would be silently cut (RFC 9112 6.3)."""
    answer = f"HTTP/1.1 200 OK\r\n{lengths}\r\n\r\n" + '{"whole": "body"}' + " " * 10
    with RawTcpServer(lambda conn, head: conn.sendall(answer.encode("latin-1"))) as server, \
            pytest.raises(RetryableError, match=f"^invalid HTTP response from 127.0.0.1:{server.port}: "
                                                f"HTTPException: invalid Content-Length"):
        client.request("GET", server.url)


def trickle(first: bytes, lines: list[bytes], last: bytes) -> Callable[[socket.socket, bytes], None]:
    def behaviour(conn: socket.socket, head: bytes) -> None:
        conn.sendall(first)
        for line in lines:
            time.sleep(0.3)
            conn.sendall(line)
        conn.sendall(last)
    return behaviour


@pytest.mark.parametrize("behaviour", [
    trickle(b"HTTP/1.1 200 OK\r\n", [b"X-%d: y\r\n" % i for i in range(10)], b"Content-Length: 2\r\n\r\nok"),
    trickle(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nok\r\n0\r\n",
            [b"X-%d: y\r\n" % i for i in range(10)], b"\r\n"),
], ids=["headers a line at a time", "chunk trailer a line at a time"])
def test_the_deadline_bounds_the_whole_exchange(behaviour: Callable[[socket.socket, bytes], None]) -> None:
    """Each line arrives well within the timeout; the exchange as a whole does not."""
    quick = OutboundClient(allowlist=LOCAL, timeout=1)
    started = time.monotonic()
    with RawTcpServer(behaviour) as server, pytest.raises(RetryableError, match=r"timed out after 1 s"):
        quick.request("GET", server.url)
    assert time.monotonic() - started < 1.6


def test_a_body_that_decodes_to_nothing_meets_the_size_cap() -> None:
    """Empty deflate blocks, streamed: nothing decoded ever reaches the cap, the bytes do."""
    def behaviour(conn: socket.socket, head: bytes) -> None:
        conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Encoding: deflate\r\nConnection: close\r\n\r\n\x78\x9c")
        for _ in range(100):
            conn.sendall(b"\x00\x00\x00\xff\xff" * 2000)
            time.sleep(0.01)
    small = OutboundClient(allowlist=LOCAL, timeout=3, max_response_bytes=1000)
    started = time.monotonic()
    with RawTcpServer(behaviour) as server, pytest.raises(PermanentError, match="response too large"):
        small.request("GET", server.url)
    assert time.monotonic() - started < 1


def test_interim_answers_are_skipped_to_the_final_one(client: OutboundClient) -> None:
    """103 Early Hints comes before the answer; taking it as the answer would also leave the
    real one on the connection, to be read as the answer to the next request."""
    def behaviour(conn: socket.socket, head: bytes) -> None:
        conn.sendall(b"HTTP/1.1 103 Early Hints\r\nLink: </a.css>; rel=preload\r\n\r\n")
        time.sleep(0.2)
        conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nfirst")
        conn.recv(65536)
        conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 6\r\n\r\nsecond")
    with RawTcpServer(behaviour) as server:
        assert client.request("POST", server.url, json={"n": 1}).text == "first"
        assert client.request("POST", server.url, json={"n": 2}).text == "second"


def test_a_private_ca_can_be_trusted_besides_the_public_ones(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """HOOKLINE_OUTBOUND_EXTRA_CA_CERTS: an internal CRM signed by the company's own CA is
    reached; without the setting it is refused, and a path that holds no certificate is
    named when the server starts, not at the first delivery."""
    from web.app import create_app
    from web.config import ConfigError

    private = SelfSignedCert.make()
    instance = tmp_path / "instance"
    instance.mkdir()
    private.write_ca(instance)  # instance/ca.pem: a relative setting is read from the instance folder
    monkeypatch.setenv("HOOKLINE_OUTBOUND_ALLOWLIST", "127.0.0.0/8, localhost")
    with HttpSink(lambda r: Reply(200, "internal ok"), ssl_context=private.server_context()) as sink:
        plain = create_app(instance_path=str(instance)).extensions["hookline"].http
        with pytest.raises(PermanentError, match="could not be verified"):
            plain.request("GET", sink.url)
        monkeypatch.setenv("HOOKLINE_OUTBOUND_EXTRA_CA_CERTS", "ca.pem")
        app = create_app(instance_path=str(instance))
        assert app.config["OUTBOUND_EXTRA_CA_CERTS"] == str(instance / "ca.pem")
        assert app.extensions["hookline"].http.request("GET", sink.url).text == "internal ok"
    (instance / "not-a-ca.pem").write_text("just text\n")
    for value, problem in (("missing.pem", "no such file or folder"), ("not-a-ca.pem", "no CA certificate in it")):
        monkeypatch.setenv("HOOKLINE_OUTBOUND_EXTRA_CA_CERTS", value)
        with pytest.raises(ConfigError, match=f"^HOOKLINE_OUTBOUND_EXTRA_CA_CERTS='.*{value}': {problem}"):
            create_app(instance_path=str(instance))


def test_a_malformed_header_line_does_not_hide_the_fields_after_it(client: OutboundClient) -> None:
    """A line without a colon used to end the header fields for http.client's parser, so the
    Content-Length after it was lost and the client waited for the server to close a
    kept-alive connection: every delivery to such a server timed out."""
    server = KeepAliveServer(lambda n, head: b"HTTP/1.1 200 OK\r\nX-Trace abc\r\nX-Folded: one\r\n  two\r\n"
                                             b"Content-Length: 2\r\nContent-Type: text/plain\r\n\r\nok")
    with server:
        started = time.monotonic()
        first = client.request("GET", server.url)
        second = client.request("GET", server.url)
    assert time.monotonic() - started < 1.5  # not the 2 s deadline
    assert first.body == second.body == b"ok" and first.headers["Content-Type"] == "text/plain"
    assert first.headers["X-Folded"] == "one two"  # obs-fold: joined by a space (RFC 9112 5.2)
    assert "X-Trace abc" not in first.headers and server.connections == 1


def test_a_field_name_with_whitespace_frames_nothing(client: OutboundClient) -> None:
    """"Content-Length : 100" is not a Content-Length (RFC 9112 5.1): reading 100 bytes would
    swallow the next answer on the connection."""
    def behaviour(conn: socket.socket, head: bytes) -> None:
        conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length : 100\r\nConnection: close\r\n\r\nshort")
        conn.close()
    with RawTcpServer(behaviour) as server:
        resp = client.request("GET", server.url)
    assert resp.body == b"short" and "Content-Length" not in resp.headers


def test_chunked_framing_overrides_a_content_length_and_the_connection_is_not_kept(client: OutboundClient) -> None:
    body = b"5\r\nhello\r\n0\r\n\r\n"
    server = KeepAliveServer(lambda n, head: b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n"
                                             b"Content-Length: 3\r\n\r\n" + body)
    with server:
        assert client.request("GET", server.url).body == b"hello"
        assert client.request("GET", server.url).body == b"hello"
    assert server.connections == 2  # both framings on one answer: a smuggling sign, never reused


def test_a_transfer_coding_the_client_cannot_decode_fails_the_exchange(client: OutboundClient) -> None:
    """http.client took "gzip, chunked" as no chunking at all and handed back the raw chunks."""
    payload = gzip.compress(b"hello")
    chunked = f"{len(payload):x}\r\n".encode() + payload + b"\r\n0\r\n\r\n"
    server = KeepAliveServer(lambda n, head: b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\n\r\n" + chunked)
    with server, pytest.raises(RetryableError, match="Transfer-Encoding this client cannot decode: 'gzip, chunked'"):
        client.request("GET", server.url)


@pytest.mark.parametrize("method, target, headers, why", [
    ("GET", "/a b", {}, "URL can't contain control characters"),
    ("GET", "/a\r\nX-Injected: 1", {}, "URL can't contain control characters"),
    ("GE\nT", "/", {}, "method can't contain control characters"),
    ("GET", "/", {"X-A": "1\r\nX-Injected: 1"}, "Invalid header value"),
    ("GET", "/", {"X-A\r\nX-Injected": "1"}, "Invalid header name"),
    ("GET", "/", {"Bad:Name": "1"}, "Invalid header name"),
])
def test_the_request_head_refuses_what_would_split_it(method: str, target: str, headers: dict[str, str],
                                                       why: str) -> None:
    """The outbound client checks headers before they get here; the transport refuses a
    line break on its own too, as http.client did, so no caller can inject a request."""
    with pytest.raises(ValueError, match=why):
        request_head(method, target, headers)


def test_the_request_head_is_what_http_client_wrote() -> None:
    """Byte for byte what http.client's request path sends for the same request."""
    import http.client

    class Recording(http.client.HTTPConnection):
        sent = b""

        def send(self, data: bytes) -> None:  # type: ignore[override]
            self.sent += data

    headers = {"Host": "h:8", "Accept-Encoding": "gzip", "X-Bytes": b"\xe9", "X-Text": "caf\xe9",
               "Content-Length": 12, "X-Folded": "a\r\n b"}
    conn = Recording("h", 8)
    conn.sock = object()  # "connected": http.client only sends
    conn.request("POST", "/p?q=1", headers=headers)
    assert conn.sent == request_head("POST", "/p?q=1", headers)
    assert conn.sent.startswith(b"POST /p?q=1 HTTP/1.1\r\nHost: h:8\r\n")
    with pytest.raises(UnicodeEncodeError):
        request_head("GET", "/", {"X-Text": "\u2019"})  # not Latin-1: refused, never sent mangled
    with pytest.raises(TypeError, match="float is not text"):
        request_head("GET", "/", {"X-N": 1.5})
