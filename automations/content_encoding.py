"""Undoing a webhook's ``Content-Encoding`` (gzip, deflate), within the body size limit.

Some senders compress their webhooks; a user expects the fields inside to map as if they had
not (Express's body-parser, under n8n and most Node receivers, inflates them). The limit
applies to what comes out, not to what was sent: a few kilobytes of gzip can inflate to
gigabytes, so output stops one byte past the limit and the request gets 413. An encoding
this module does not know (``br``, ``zstd``…) is left as sent: the event is stored raw, as
for an unknown content type, and the run says the body did not parse.
"""
from __future__ import annotations

import zlib

# zlib's wbits: gzip framing; zlib framing (what HTTP's "deflate" means); raw deflate (what
# some servers send as "deflate" anyway)
_GZIP, _ZLIB, _RAW_DEFLATE = 16 + zlib.MAX_WBITS, zlib.MAX_WBITS, -zlib.MAX_WBITS
_KNOWN = {"gzip": (_GZIP,), "x-gzip": (_GZIP,), "deflate": (_ZLIB, _RAW_DEFLATE), "identity": ()}
MAX_CODINGS = 4  # "gzip, gzip, gzip, …" nests compression; no sender needs more
MAX_MEMBERS = 16  # gzip members in one body (senders write one)


class ContentEncodingError(ValueError):
    """The body is not what its ``Content-Encoding`` says (corrupt or truncated)."""


def codings(header: str | None) -> list[str] | None:
    """The codings applied, in the order the sender applied them; ``[]`` for none, None when
    one is not known here (the body is then kept as sent)."""
    names = [c.strip().lower() for c in (header or "").split(",") if c.strip()]
    if len(names) > MAX_CODINGS or any(n not in _KNOWN for n in names):
        return None
    return [n for n in names if n != "identity"]


def decode(body: bytes, header: str | None, limit: int) -> bytes | None:
    """``body`` with its codings undone, last applied first; the body as sent when a coding is
    unknown; None when the result would be larger than ``limit`` bytes. Raises
    :class:`ContentEncodingError` for a corrupt body."""
    applied = codings(header)
    if not applied or not body:
        return body
    for name in reversed(applied):
        out = _inflate(body, _KNOWN[name], limit, name)
        if out is None:
            return None
        body = out
    return body


def _inflate(data: bytes, framings: tuple[int, ...], limit: int, name: str) -> bytes | None:
    error: zlib.error | None = None
    for wbits in framings:
        try:
            return _inflate_members(data, wbits, limit)
        except zlib.error as exc:
            error = exc
    raise ContentEncodingError(f"body is not valid {name} ({error})")


def _inflate_members(data: bytes, wbits: int, limit: int) -> bytes | None:
    """Every member (gzip allows several, one after another; at most MAX_MEMBERS, since each
    costs a copy of the rest and empty ones inflate to nothing), at most ``limit`` bytes out.
    Zero bytes after the last member are padding, as Python's gzip module takes them."""
    out = bytearray()
    for _member in range(MAX_MEMBERS):
        d = zlib.decompressobj(wbits)
        out += d.decompress(data, limit + 1 - len(out))
        if len(out) > limit or d.unconsumed_tail:
            return None
        if not d.eof:
            raise zlib.error("truncated")
        data = d.unused_data
        if wbits != _GZIP or not data.strip(b"\0"):
            return bytes(out)
    raise zlib.error(f"more than {MAX_MEMBERS} gzip members")
