"""Turning one inbound HTTP request into a stored event and its run.

Parsing never rejects: whatever arrives is kept byte for byte; what can be parsed is parsed,
and a body that claims a type it is not is kept as text with ``parse_error`` set so the run
fails with a clear message instead of the request failing with a 500.
"""
from __future__ import annotations

import codecs
import encodings
import encodings.aliases
import json
import pkgutil
import re
from dataclasses import dataclass, field
from datetime import datetime
from functools import lru_cache
from typing import Any
from urllib.parse import parse_qsl
from xml.etree.ElementTree import Element, ParseError

from sqlalchemy import Connection, bindparam, insert, select, text

from . import content_encoding, dedupe
from .clock import Clock, system_clock
from .definitions import DefinitionCache
from .models import Event, Recipe, RecipeStatus, Run, RunStatus
from .redact import redact_headers
from .sqlite_rows import insert_rows, select_all
from .writer import STARTED_GRACE, BatchWriter


@dataclass
class InboundRequest:
    """The transport-neutral facts of one request (the web layer fills this in)."""

    method: str
    content_type: str | None
    body: bytes
    headers: dict[str, str] = field(default_factory=dict)  # lower-case names
    query: dict[str, Any] = field(default_factory=dict)
    remote_addr: str | None = None


@dataclass
class ParsedBody:
    kind: str  # json | form | multipart | xml | text | binary | empty
    value: Any
    error: str | None = None


def _mime(content_type: str | None) -> tuple[str, dict[str, str]]:
    if not content_type:
        return "", {}
    main, _, rest = content_type.partition(";")
    params = {}
    for part in rest.split(";"):
        k, _, v = part.strip().partition("=")
        if k:
            params[k.lower()] = v.strip().strip('"')
    return main.strip().lower(), params


# Codecs Python accepts as names but that are not character sets a sender can mean: they
# fail with a plain UnicodeError (punycode, idna, undefined), turn escapes into any string at
# all (unicode_escape), or can yield lone surrogates no database or page can hold (utf-7).
_NOT_CHARSETS = frozenset({"punycode", "idna", "unicode-escape", "raw-unicode-escape", "utf-7", "undefined"})
_MAX_CHARSET_NAME = 40


@lru_cache(maxsize=128)
def _known_charset(charset: str) -> str | None:
    try:
        info = codecs.lookup(charset)
    except LookupError:
        return None
    if not getattr(info, "_is_text_encoding", True) or info.name in _NOT_CHARSETS:
        return None  # base64, hex, zlib, rot13…: bytes-to-bytes or str-to-str, not text
    return info.name


# Every name Python's own codecs answer to. A name outside it is refused without asking
# ``codecs.lookup``: the ``encodings`` module remembers every unknown name it is asked about,
# for good, so senders making up a new charset per request would grow it without bound.
_CODEC_NAMES = frozenset({*encodings.aliases.aliases, *encodings.aliases.aliases.values(),
                          *(m.name for m in pkgutil.iter_modules(encodings.__path__))})


def _codec(charset: str | None) -> str | None:
    """The codec to decode a body the sender labelled ``charset`` with (UTF-8 when unlabelled),
    or None when the label names no real text encoding. O(1) per request: the verdict on a
    name is cached."""
    if not charset:
        return "utf-8"
    if len(charset) > _MAX_CHARSET_NAME:  # no real name is this long; keeps the cache small
        return None
    if encodings.normalize_encoding(charset).lower() not in _CODEC_NAMES:
        return None
    return _known_charset(charset)


def _decode_strict(raw: bytes, charset: str | None) -> str | None:
    """``raw`` decoded as the sender says, or None when that charset is refused or fails
    (UnicodeError: punycode and friends raise it rather than UnicodeDecodeError)."""
    codec = _codec(charset)
    if codec is None:
        return None
    try:
        return raw.decode(codec)
    except UnicodeError:
        return None


def _decode(raw: bytes, charset: str | None) -> str:
    text = _decode_strict(raw, charset)
    return raw.decode("utf-8", errors="replace") if text is None else text


def _is_json_type(mime: str) -> bool:
    return mime == "application/json" or mime.endswith("+json") or mime == "text/json"


def _is_xml_type(mime: str) -> bool:
    return mime in ("application/xml", "text/xml") or mime.endswith("+xml")


MAX_JSON_DEPTH = 64
MAX_JSON_NODES = 200_000  # also the most fields a form, multipart body or query string may have
# A JSON escape of a UTF-16 surrogate (\uD800-\uDFFF). Usually one half of a pair, which
# json.loads joins into one character; a lone half stays a surrogate, which no database or
# page can hold. Only a body with such an escape is searched for lone ones.
_SURROGATE_ESCAPE = re.compile(r"\\u[dD][89a-fA-F]")
_SURROGATE = re.compile(r"[\ud800-\udfff]")


class BodyRejected(ValueError):
    """A body that can only be an attack on whatever processes it later (JSON or XML nested
    too deeply or with too many values, a form with too many fields, XML with a DTD or
    entities): answered 400, not stored."""


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON value")  # json.loads takes it; PostgreSQL's json does not


_JSON = json.JSONDecoder(parse_constant=_refuse_constant)  # built once: json.loads(…, hook) builds one per call


def _load_json(text: str) -> Any:
    """Parsed JSON; ValueError for what is not JSON as the databases take it (NaN, Infinity,
    lone surrogates), BodyRejected for abusive shapes. A leading byte order mark is skipped
    (RFC 8259 lets parsers ignore it; senders on .NET put one there)."""
    text = text.removeprefix("\ufeff")
    try:
        value = _JSON.decode(text)
    except RecursionError:
        raise BodyRejected(f"JSON nested deeper than {MAX_JSON_DEPTH} levels") from None
    _check_shape(value)
    if _SURROGATE_ESCAPE.search(text) and _has_lone_surrogate(value):
        raise ValueError("a string holds a lone UTF-16 surrogate (\\ud800-\\udfff escape without its pair)")
    return value


def _has_lone_surrogate(value: Any) -> bool:
    """Any string or key in ``value`` with a surrogate (the shape is already bounded)."""
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, str):
            if _SURROGATE.search(item):
                return True
        elif isinstance(item, dict):
            stack.extend(item.keys())
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
    return False


def _check_shape(value: Any) -> None:
    stack, nodes = [(value, 1)], 0
    while stack:
        item, depth = stack.pop()
        nodes += 1
        if nodes > MAX_JSON_NODES:
            raise BodyRejected(f"JSON with more than {MAX_JSON_NODES} values")
        if isinstance(item, (dict, list)):
            if depth > MAX_JSON_DEPTH:
                raise BodyRejected(f"JSON nested deeper than {MAX_JSON_DEPTH} levels")
            children = item.values() if isinstance(item, dict) else item
            stack.extend((child, depth + 1) for child in children)


def parse_body(content_type: str | None, raw: bytes) -> ParsedBody:
    """Raises :class:`BodyRejected` for abusive JSON; anything else is kept."""
    if not raw:
        return ParsedBody("empty", None)
    mime, params = _mime(content_type)
    charset = params.get("charset")
    if _is_json_type(mime):
        text = _decode(raw, charset)
        try:
            return ParsedBody("json", _load_json(text))
        except BodyRejected:
            raise
        except ValueError as exc:
            return ParsedBody("text", text, f"body is not valid JSON ({_json_error(exc)})")
    if mime == "application/x-www-form-urlencoded":
        # %XX escapes are bytes in the form's charset (old pages post Windows-1252); a byte that
        # is not valid there becomes U+FFFD in the fields, and the raw body keeps the original
        return ParsedBody("form", parse_form(_decode(raw, charset), errors="replace",
                                             encoding=_codec(charset) or "utf-8"))
    if mime == "multipart/form-data":
        return _parse_multipart(content_type or "", raw)
    if _is_xml_type(mime):
        from defusedxml import ElementTree as SafeET  # parsers for the rarer bodies load when first needed
        from defusedxml.common import DefusedXmlException

        # a charset in the header overrides the document's own declaration (RFC 7303)
        source: bytes | str = raw if not charset else _decode_strict(raw, charset) or raw
        try:
            return ParsedBody("xml", xml_to_dict(SafeET.fromstring(source, forbid_dtd=True)))
        except DefusedXmlException as exc:  # DTDs and entities: the stuff of XXE and billion laughs
            raise BodyRejected(f"XML with a DTD or entities is refused ({type(exc).__name__})") from None
        except BodyRejected:
            raise
        except (ParseError, ValueError, LookupError) as exc:  # LookupError: an unknown encoding="…"
            return ParsedBody("text", _decode(raw, charset), f"body is not acceptable XML ({exc})")
    text = _decode_strict(raw, charset)
    if text is None:
        return ParsedBody("binary", None)
    stripped = text.lstrip("\ufeff").lstrip()
    if mime in ("", "text/plain") and stripped[:1] in ("{", "["):
        try:  # many senders post JSON without saying so
            return ParsedBody("json", _load_json(text))
        except BodyRejected:
            raise
        except ValueError:
            pass
    return ParsedBody("text", text)


def _json_error(exc: Exception) -> str:
    if isinstance(exc, json.JSONDecodeError):
        return f"{exc.msg} at line {exc.lineno} column {exc.colno}"
    return str(exc)


def parse_form(text: str, errors: str = "strict", encoding: str = "utf-8") -> dict[str, Any]:
    """A form body or query string; at most MAX_JSON_NODES fields (counted before parsing).
    ``encoding`` decodes the %XX escapes."""
    try:
        pairs = parse_qsl(text, keep_blank_values=True, encoding=encoding, errors=errors,
                          max_num_fields=MAX_JSON_NODES)
    except UnicodeDecodeError as exc:  # only with errors="strict"
        raise BodyRejected(f"a form field is not valid {encoding} ({exc.reason})") from None
    except ValueError:  # "Max number of fields exceeded" (without strict_parsing, the only other)
        raise BodyRejected(f"more than {MAX_JSON_NODES} form fields") from None
    return multi_dict(pairs)


def multi_dict(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """A name given once maps to its value, a repeated one to the list of its values (linear:
    appended in place, never copied)."""
    if len(pairs) > MAX_JSON_NODES:
        raise BodyRejected(f"more than {MAX_JSON_NODES} form fields")
    out: dict[str, Any] = {}
    lists: set[str] = set()  # names whose value is a list made here (a value itself is never one)
    for k, v in pairs:
        if k not in out:
            out[k] = v
        elif k in lists:
            out[k].append(v)
        else:
            out[k] = [out[k], v]
            lists.add(k)
    return out


def _parse_multipart(content_type: str, raw: bytes) -> ParsedBody:
    try:
        return _parse_multipart_parts(content_type, raw)
    except (UnicodeError, LookupError) as exc:  # the email package decodes name*=charset''… itself
        return ParsedBody("text", _decode(raw, None), f"multipart part headers cannot be decoded ({exc})")


def _parse_multipart_parts(content_type: str, raw: bytes) -> ParsedBody:
    from email.parser import BytesParser
    from email.policy import HTTP

    msg = BytesParser(policy=HTTP).parsebytes(
        b"Content-Type: " + content_type.encode("latin-1", "replace") + b"\r\n\r\n" + raw
    )
    if not msg.is_multipart():
        return ParsedBody("text", _decode(raw, None), "multipart body has no valid boundary")
    pairs: list[tuple[str, Any]] = []
    for part in msg.iter_parts():
        name = part.get_param("name", header="content-disposition")
        if name is None:
            continue
        payload = part.get_payload(decode=True) or b""
        filename = part.get_filename()
        if filename is not None:
            pairs.append((name, {"filename": filename, "content_type": part.get_content_type(),
                                 "size": len(payload)}))
        else:
            pairs.append((name, _decode(payload, part.get_content_charset())))
    return ParsedBody("multipart", multi_dict(pairs))


def xml_to_dict(el: Element) -> dict[str, Any]:
    """``<a x="1"><b>t</b><b>u</b></a>`` → ``{"a": {"@x": "1", "b": ["t", "u"]}}``; text
    around child elements goes to ``#text``.

    Raises :class:`BodyRejected` past JSON's limits (elements nested deeper than
    MAX_JSON_DEPTH, more than MAX_JSON_NODES elements and attributes), so the recursion
    below is bounded and the result is no bigger than a JSON body may be."""
    return {_strip_ns(el.tag): _xml_value(el, 1, [0])}


def _strip_ns(tag: str) -> str:
    return tag.rsplit("}", 1)[-1]


def _xml_value(el: Element, depth: int, count: list[int]) -> Any:
    if depth > MAX_JSON_DEPTH:
        raise BodyRejected(f"XML nested deeper than {MAX_JSON_DEPTH} levels")
    count[0] += 1 + len(el.attrib)
    if count[0] > MAX_JSON_NODES:
        raise BodyRejected(f"XML with more than {MAX_JSON_NODES} values")
    children = list(el)
    # Mixed content (<a>hello <b>x</b> world</a>): the text around the children, joined.
    text = " ".join(t for t in (part.strip() for part in (el.text, *(c.tail for c in children)) if part) if t)
    if not children and not el.attrib:
        return text
    out: dict[str, Any] = {}
    for name, value in el.attrib.items():  # x="1" p:x="2": the second keeps its namespace
        key = f"@{_strip_ns(name)}"
        out[key if key not in out else f"@{name}"] = value
    lists: set[str] = set()  # keys whose value is a list made here: appended to, never copied
    for child in children:
        key, val = _strip_ns(child.tag), _xml_value(child, depth + 1, count)
        if key not in out:
            out[key] = val
        elif key in lists:
            out[key].append(val)
        else:
            out[key] = [out[key], val]
            lists.add(key)
    if text:
        out["#text"] = text
    return out


_CONTENT_TYPE_MAX = Event.__table__.c.content_type.type.length  # String(200)


def event_values(recipe_id: int | None, req: InboundRequest, now: datetime) -> dict[str, Any]:
    """The row of one received request (headers with credentials redacted). The content type
    is cut to its column's length (PostgreSQL refuses longer); the full header is kept in
    ``headers``."""
    parsed = parse_body(req.content_type, req.body)
    encoding = req.headers.get("content-encoding")
    if parsed.error and encoding and content_encoding.codings(encoding) is None:
        parsed.error += f"; it was sent with Content-Encoding: {encoding[:40]}, which Hookline does not decompress"
    content_type = req.content_type
    if content_type and len(content_type) > _CONTENT_TYPE_MAX:
        content_type = content_type[:_CONTENT_TYPE_MAX]
    return {
        "recipe_id": recipe_id, "received_at": now, "method": req.method,
        "headers": redact_headers(req.headers), "query": req.query, "remote_addr": req.remote_addr,
        "content_type": content_type, "body_raw": req.body, "body_kind": parsed.kind,
        "body": parsed.value, "parse_error": parsed.error,
    }


class RecipeGone(LookupError):
    """The token no longer belongs to the recipe (deleted, or its URL was rotated) — the
    cached lookup was stale; the request is answered 404."""


@dataclass
class Accepted:
    run_id: int
    status: str
    duplicate: bool = False


def store(conn: Connection, unit: StoreUnit, recipe: Any, spec: dedupe.DedupeSpec | None) -> Accepted:
    """Insert one event and its run (held when the recipe is paused) in the caller's
    transaction. ``recipe``: its recipe's state (status, version), read in that same
    transaction by :func:`store_many`, which checked the URL's token, so a pause, a rotated URL
    or a deletion committed before this event is always honoured; ``spec``: its
    de-duplication, as store_many found it. A repeat of a delivery the recipe de-duplicates
    returns the first run, storing nothing. A ``rejected`` request (failed verification) is
    stored with a final, never-run run that carries the reason."""
    key = spec.key_for(unit.raw_headers, unit.values["body"]) if spec and unit.rejected is None else None
    if key is not None:
        first = dedupe.first_run(conn, unit.recipe_id, key, unit.now)
        if first is not None:
            return Accepted(first, "duplicate", duplicate=True)
    event_id = conn.execute(_INSERT_EVENT, unit.values).scalar_one()
    run = _run_row(event_id, unit.recipe_id, recipe, unit.now, unit.rejected)
    run_id = conn.execute(_INSERT_RUN, run).scalar_one()
    if key is not None and spec is not None:
        dedupe.remember(conn, unit.recipe_id, key, run_id, unit.now, spec)
    return Accepted(run_id, run["status"])


def _dedupe_spec(conn: Connection, unit: StoreUnit, recipe: Any) -> dedupe.DedupeSpec | None:
    definition = unit.definitions.get(conn, unit.recipe_id, recipe.current_version) or {}
    return dedupe.DedupeSpec.from_settings(definition.get("settings"))


def _run_row(event_id: int, recipe_id: int, recipe: Any, now: datetime, rejected: str | None) -> dict[str, Any]:
    held = recipe.status == RecipeStatus.PAUSED.value
    status = (RunStatus.REJECTED if rejected else RunStatus.HELD if held else RunStatus.QUEUED).value
    return {
        "event_id": event_id, "recipe_id": recipe_id, "recipe_version": recipe.current_version, "status": status,
        "attempt": 0, "step_index": 0, "outputs": {}, "created_at": now,
        "next_attempt_at": None if held or rejected else now, "error": rejected,
        "finished_at": now if rejected else None,
    }


@dataclass
class StoreUnit:
    """One request to store, as a unit of the batch writer: stored by :func:`store_many`,
    alone or with the ones beside it (which hands each to :func:`store` when the common case
    does not apply)."""

    definitions: DefinitionCache
    recipe_id: int
    token: str
    raw_headers: dict[str, str]
    values: dict[str, Any]
    now: datetime
    rejected: str | None = None
    batch_key = "inbound.store"
    urgent = True  # a sender waits on the line for this commit

    def __call__(self, conn: Connection) -> Accepted:
        return store_many(conn, [self])[0]

    @staticmethod
    def run_many(conn: Connection, units: list[StoreUnit]) -> list[Accepted]:
        return store_many(conn, units)


def store_many(conn: Connection, units: list[StoreUnit]) -> list[Accepted]:
    """Several requests in the caller's transaction, with what :func:`store` guarantees for
    each. The common case (no de-duplication, nothing rejected) takes a few statements for
    the whole batch: the recipes' state, (SQLite) the last ids, the events, the runs. Anything
    else is stored one by one, in order. A unit whose URL is gone raises (the writer then re-runs each alone)."""
    states = _recipe_states(conn, sorted({u.recipe_id for u in units}))
    for u in units:
        row = states.get(u.recipe_id)
        if row is None or row.token != u.token:
            raise RecipeGone(u.recipe_id)
    specs = [_dedupe_spec(conn, u, states[u.recipe_id]) for u in units]
    if any(u.rejected is not None or spec is not None for u, spec in zip(units, specs, strict=True)):
        return [store(conn, u, states[u.recipe_id], spec) for u, spec in zip(units, specs, strict=True)]
    if conn.dialect.name == "sqlite":
        return _insert_numbered(conn, units, states)
    event_ids = conn.execute(_INSERT_EVENTS, [u.values for u in units]).scalars().all()
    runs = [_run_row(event_id, u.recipe_id, states[u.recipe_id], u.now, None)
            for event_id, u in zip(event_ids, units, strict=True)]
    run_ids = conn.execute(_INSERT_RUNS, runs).scalars().all()
    return [Accepted(run_id, run["status"]) for run_id, run in zip(run_ids, runs, strict=True)]


def _recipe_states(conn: Connection, ids: list[int]) -> dict[int, Any]:
    """The state of each recipe named, by id. On SQLite one lookup per recipe through the
    cursor (a batch names one or a few) costs less than Core's ``IN`` with its per-call SQL."""
    if conn.dialect.name == "sqlite":
        rows = [row for i in ids for row in select_all(conn, _RECIPE_STATE_BY_ID, {"b_id": i})]
    else:
        rows = select_all(conn, _RECIPE_STATES, {"ids": ids})
    return {row.id: row for row in rows}


def _insert_numbered(conn: Connection, units: list[StoreUnit], states: dict[int, Any]) -> list[Accepted]:
    """SQLite: the batch's ids are numbered here, as SQLite itself would (one past the last given),
    so each table takes one statement for the whole batch. (``INSERT … RETURNING`` cannot
    say which row got which id: SQLite returns rows in no promised order, so SQLAlchemy
    falls back to one statement per row, the very cost batching is for.) Safe because the
    writer's transaction began with ``BEGIN IMMEDIATE``: no other connection inserts until
    it commits."""
    [(last_event, last_run)] = select_all(conn, _LAST_IDS, {})
    first_event, first_run = (last_event or 0) + 1, (last_run or 0) + 1
    events = [{**u.values, "id": first_event + i} for i, u in enumerate(units)]
    runs = [{**_run_row(first_event + i, u.recipe_id, states[u.recipe_id], u.now, None), "id": first_run + i}
            for i, u in enumerate(units)]
    insert_rows(conn, Event.__table__, events)
    insert_rows(conn, Run.__table__, runs)
    return [Accepted(run["id"], run["status"]) for run in runs]


# Built once: every webhook runs these, and building statements costs more than running them.
_RECIPE_STATE_COLUMNS = (Recipe.id, Recipe.token, Recipe.status, Recipe.current_version)
_RECIPE_STATES = select(*_RECIPE_STATE_COLUMNS).where(Recipe.id.in_(bindparam("ids", expanding=True)))
_RECIPE_STATE_BY_ID = select(*_RECIPE_STATE_COLUMNS).where(Recipe.id == bindparam("b_id"))
_INSERT_EVENT = insert(Event).returning(Event.id)
_INSERT_RUN = insert(Run).returning(Run.id)
_INSERT_EVENTS = insert(Event).returning(Event.id, sort_by_parameter_order=True)
_INSERT_RUNS = insert(Run).returning(Run.id, sort_by_parameter_order=True)
# The last id each table gave, as SQLite's AUTOINCREMENT counts it (``sqlite_sequence``), not
# the largest id left: after retention purged the newest runs, numbering from what is left gave
# their ids (and so their Idempotency-Keys, hookline-<run>-<step>) to new events.
_LAST_IDS = text(
    "SELECT max(coalesce((SELECT seq FROM sqlite_sequence WHERE name = 'events'), 0),"
    " coalesce((SELECT max(id) FROM events), 0)),"
    " max(coalesce((SELECT seq FROM sqlite_sequence WHERE name = 'runs'), 0),"
    " coalesce((SELECT max(id) FROM runs), 0))")


def accept(writer: BatchWriter, definitions: DefinitionCache, recipe_id: int, token: str,
           req: InboundRequest, clock: Clock = system_clock, rejected: str | None = None,
           timeout: float = 60.0, grace: float = STARTED_GRACE) -> Accepted:
    """Store the request; returns once committed. The caller acknowledges only after this
    returns: the commit is the promise that the event will run to a final state. ``timeout``
    and ``grace``: as :meth:`BatchWriter.submit` (past them nothing is stored, or the outcome
    is unknown)."""
    now = clock.now()
    values = event_values(recipe_id, req, now)  # parsed here, outside the writer's transaction
    return writer.submit(StoreUnit(definitions, recipe_id, token, req.headers, values, now, rejected),
                         timeout, grace)
