"""Minimal HTTP/1.1 message reading over asyncio streams, shared by sink.py and loadgen.py
(and the GitHub-style signature e2e.py and loadgen.py put on signed webhooks).

Only what the benchmark needs: a start line, headers, and a body framed by Content-Length
or chunked transfer encoding. Limits keep a misbehaving peer from growing memory unbounded.
"""
from __future__ import annotations

import asyncio
import hashlib
import hmac
import math

MAX_HEAD = 64 * 1024
MAX_BODY = 16 * 1024 * 1024


def github_signature(secret: str, body: bytes) -> str:
    """The ``X-Hub-Signature-256`` value GitHub sends: the hex HMAC-SHA256 of the body."""
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


class ProtocolError(Exception):
    pass


async def read_message(reader: asyncio.StreamReader) -> tuple[str, dict[str, str], bytes] | None:
    """Read one request or response. Returns (start line, lower-case headers, body), or None
    when the peer closed the connection cleanly between messages."""
    try:
        head = await reader.readuntil(b"\r\n\r\n")
    except asyncio.IncompleteReadError as exc:
        if not exc.partial:
            return None
        raise ProtocolError("connection closed inside a message head") from None
    except asyncio.LimitOverrunError:
        raise ProtocolError("message head too large") from None
    if len(head) > MAX_HEAD:
        raise ProtocolError("message head too large")
    lines = head[:-4].decode("latin-1").split("\r\n")
    start = lines[0]
    headers: dict[str, str] = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    if "chunked" in headers.get("transfer-encoding", "").lower():
        body = bytearray()
        while True:
            size_line = await reader.readuntil(b"\r\n")
            size = int(size_line.split(b";", 1)[0].strip() or b"0", 16)
            if size == 0:
                while (await reader.readuntil(b"\r\n")) != b"\r\n":  # trailers
                    pass
                break
            if len(body) + size > MAX_BODY:
                raise ProtocolError("body too large")
            body += await reader.readexactly(size)
            await reader.readexactly(2)
        return start, headers, bytes(body)
    length = int(headers.get("content-length") or 0)
    if length > MAX_BODY:
        raise ProtocolError("body too large")
    body = await reader.readexactly(length) if length else b""
    return start, headers, body


def keep_alive(start: str, headers: dict[str, str]) -> bool:
    conn = headers.get("connection", "").lower()
    if start.endswith("HTTP/1.0") or start.startswith("HTTP/1.0"):
        return conn == "keep-alive"
    return conn != "close"


def percentile(sorted_values: list[float], q: float) -> float | None:
    """Nearest-rank percentile of an already sorted list (q in 0..100)."""
    if not sorted_values:
        return None
    k = max(0, min(len(sorted_values) - 1, math.ceil(q / 100.0 * len(sorted_values)) - 1))
    return sorted_values[k]
