"""Real HTTP servers on 127.0.0.1 that record what they receive and answer as scripted.

Used by connector tests (each vendor contract is a ``responder``) and end-to-end tests.
"""
from __future__ import annotations

import json
import socket
import ssl
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Self
from urllib.parse import parse_qs, urlsplit


@dataclass
class Received:
    method: str
    path: str
    query: dict[str, list[str]]
    headers: dict[str, str]
    body: bytes
    at: float = field(default_factory=time.monotonic)

    def json(self) -> Any:
        return json.loads(self.body)


@dataclass
class Reply:
    status: int = 200
    body: bytes | str | dict | list = b""
    headers: dict[str, str] = field(default_factory=dict)
    delay: float = 0.0          # before the status line
    body_delay: float = 0.0     # before each body part (headers already sent)
    body_parts: int = 1         # split the body to trickle it

    def encoded(self) -> tuple[bytes, dict[str, str]]:
        headers = dict(self.headers)
        body = self.body
        if isinstance(body, (dict, list)):
            body = json.dumps(body).encode()
            headers.setdefault("Content-Type", "application/json")
        elif isinstance(body, str):
            body = body.encode()
            headers.setdefault("Content-Type", "text/plain; charset=utf-8")
        return body, headers


Responder = Callable[[Received], Reply]


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False  # a client's idle keep-alive connection must not hang shutdown

    def handle_error(self, request: Any, client_address: Any) -> None:
        """A client that hung up early (timeouts are tested on purpose) is not news."""
        if not isinstance(sys.exc_info()[1], (ConnectionError, ssl.SSLError, TimeoutError)):
            super().handle_error(request, client_address)


class HttpSink:
    """``responder`` decides each answer (default 200 ``ok``); every request is recorded, and
    ``connections`` counts the connections clients opened (keep-alive reuse shows there).
    ``host`` may be any 127.0.0.0/8 address; ``ssl_context`` (a server context) makes it
    HTTPS, and then ``url`` names ``localhost`` so certificates can be checked."""

    def __init__(self, responder: Responder | None = None, *, host: str = "127.0.0.1",
                 ssl_context: ssl.SSLContext | None = None) -> None:
        self.responder: Responder = responder or (lambda req: Reply(200, "ok"))
        self.requests: list[Received] = []
        self.connections = 0
        self._cond = threading.Condition()
        sink = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def setup(self) -> None:
                with sink._cond:
                    sink.connections += 1
                super().setup()

            def _handle(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                parts = urlsplit(self.path)
                req = Received(self.command, parts.path, parse_qs(parts.query),
                               {k: v for k, v in self.headers.items()}, body)
                with sink._cond:
                    sink.requests.append(req)
                    sink._cond.notify_all()
                reply = sink.responder(req)
                if reply.delay:
                    time.sleep(reply.delay)
                payload, headers = reply.encoded()
                self.send_response(reply.status)
                for k, v in headers.items():
                    self.send_header(k, v)
                self.send_header("Content-Length", str(len(payload)))
                if reply.body_parts <= 1 and not reply.body_delay:
                    # Headers and body in one write: two small writes would wait out the
                    # client's delayed ACK (Nagle), 40 ms per request.
                    self._headers_buffer.append(b"\r\n" + payload)
                    self.flush_headers()
                    return
                self.end_headers()
                step = -(-len(payload) // max(reply.body_parts, 1)) or 1
                for start in range(0, max(len(payload), 1), step):
                    if reply.body_delay:
                        self.wfile.flush()
                        time.sleep(reply.body_delay)
                    self.wfile.write(payload[start:start + step])

            do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = _handle

            def log_message(self, *args: Any) -> None:
                pass

        self.server = _Server((host, 0), Handler)
        self.port = self.server.server_address[1]
        self.url = f"http://{host}:{self.port}"
        if ssl_context is not None:
            self.server.socket = ssl_context.wrap_socket(self.server.socket, server_side=True,
                                                         do_handshake_on_connect=False)
            self.url = f"https://localhost:{self.port}"
        self._thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05},
                                        daemon=True)

    def __enter__(self) -> Self:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()

    def wait_for(self, count: int, timeout: float = 10.0) -> list[Received]:
        """Block until ``count`` requests arrived; fail loudly instead of hanging."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while len(self.requests) < count:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError(f"sink got {len(self.requests)} requests, expected {count}")
                self._cond.wait(left)
            return list(self.requests)


class RawTcpServer:
    """A TCP server on 127.0.0.1 for receivers no HTTP server would be: it hands each
    connection, with the first bytes the client sent, to ``behaviour(conn, head)`` (reset it,
    echo the request line, answer raw bytes, hang...). Connections the behaviour leaves open
    stay open until :meth:`close`."""

    def __init__(self, behaviour: Callable[[socket.socket, bytes], None]) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen()
        self.port = self.sock.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}/"
        self.behaviour = behaviour
        self.held: list[socket.socket] = []
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            conn.settimeout(5)
            try:
                self.behaviour(conn, conn.recv(65536))
            except OSError:
                pass
            self.held.append(conn)

    def close(self) -> None:
        self.sock.close()
        for conn in self.held:
            conn.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
