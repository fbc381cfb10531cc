"""The engine's shared parts, built once per process from configuration.

The web app, the worker and the CLI all construct one ``Core``; nothing in the engine reads
Flask configuration or imports ``web/``.
"""
from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, bindparam, select
from sqlalchemy.orm import Session

from connectors.outbound import OutboundClient

from . import recipes as recipes_mod
from . import wakeup
from .clock import Clock, system_clock
from .db import configure_engine, for_reading, make_session_factory
from .definitions import DefinitionCache
from .models import Connection, Recipe
from .schema import create_schema
from .secrets import SecretBox, load_or_create_key
from .ttlcache import TtlCache
from .writer import BatchWriter

SETTINGS_TTL = 1.0
CONNECTIONS_TTL = 1.0
_CONNECTIONS = select(Connection.id, Connection.name, Connection.kind, Connection.settings,
                      Connection.secret_blob).where(Connection.id.in_(bindparam("ids", expanding=True)))


@dataclass
class Core:
    engine: Engine
    secret_box: SecretBox
    http: OutboundClient
    clock: Clock = system_clock
    lease_seconds: int = 300
    poll_interval: float = 1.0
    runner_threads: int = 32
    retention_days: float = 30.0
    shutdown_seconds: float = 20.0  # on SIGTERM, how long runs in flight may take to finish their step
    pg_notify: bool = True  # on PostgreSQL: wake runners in other processes (automations/wakeup.py)
    definitions: DefinitionCache = field(default_factory=DefinitionCache)
    session_factory: Callable[[], Session] = field(init=False)
    read_session_factory: Callable[[], Session] = field(init=False)
    read_engine: Engine = field(init=False)
    writer: BatchWriter = field(init=False)
    broadcaster: wakeup.Broadcaster | None = field(init=False)
    _tokens: dict[str, int] = field(default_factory=dict, init=False)
    _versions: TtlCache[int, int | None] = field(init=False)
    _connections: TtlCache[int, Any] = field(init=False)
    _signing: dict[int, tuple[bytes, dict[str, Any]]] = field(default_factory=dict, init=False)

    def __post_init__(self) -> None:
        configure_engine(self.engine)
        self.session_factory = make_session_factory(self.engine)
        self.read_session_factory = make_session_factory(self.engine, read_only=True)
        self.read_engine = for_reading(self.engine)
        self.writer = BatchWriter(self.engine)
        self.broadcaster = wakeup.Broadcaster(self.engine) if self.wakes_other_processes else None
        self._versions = TtlCache(self._read_versions, lambda: SETTINGS_TTL)
        self._connections = TtlCache(self._read_connections, lambda: CONNECTIONS_TTL)

    def recipe_id_for_token(self, token: str, fresh: bool = False) -> int | None:
        """Token → recipe id. The mapping never changes for a recipe's life, so it is cached;
        a deleted recipe or rotated URL is caught when the event is stored (and evicted here).
        ``fresh`` reads the database even on a hit (and updates the cache), for answers that
        store nothing and so would never notice another process revoking the URL (HEAD,
        handshakes): they are rare, so the read costs nothing that matters."""
        rid = None if fresh else self._tokens.get(token)
        if rid is None:
            with self.read_session_factory() as s:
                recipe = recipes_mod.by_token(s, token)
                rid = recipe.id if recipe else None
            if rid is not None:
                self._tokens[token] = rid
            else:
                self._tokens.pop(token, None)
        return rid

    def current_settings(self, recipe_id: int) -> dict[str, Any]:
        """The settings of the recipe's current version. The version number is re-read at most
        every SETTINGS_TTL seconds (a saved change applies within that), not on every webhook."""
        version = self._versions.get(recipe_id)
        if version is None:
            return {}
        d = self.definitions.peek(recipe_id, version)
        if d is None:
            with self.read_engine.connect() as conn:
                d = self.definitions.get(conn, recipe_id, version)
        return (d or {}).get("settings") or {}

    def _read_versions(self, ids: list[int]) -> dict[int, int | None]:
        with self.read_engine.connect() as conn:
            found = dict(conn.execute(select(Recipe.id, Recipe.current_version).where(Recipe.id.in_(ids))).all())
        return {i: found.get(i) for i in ids}  # a deleted recipe is remembered as having none

    def connection_rows(self, ids: Iterable[int]) -> dict[int, Any]:
        """Connections by id (the ones that exist), each re-read at most every CONNECTIONS_TTL
        seconds (a saved change applies within that), not for every run and every signed
        webhook: reading them per run cost a fifth to a quarter of the CPU per delivery."""
        return self._connections.get_many(ids)

    def _read_connections(self, ids: list[int]) -> dict[int, Any]:
        with self.read_engine.connect() as conn:
            return {row.id: row for row in conn.execute(_CONNECTIONS, {"ids": ids})}

    def forget_connection(self, connection_id: int) -> None:
        """A connection was saved or deleted here: this process reads it again at once."""
        self._connections.forget(connection_id)
        self._signing.pop(connection_id, None)

    def signing_secrets(self, connection_id: Any) -> dict[str, Any]:
        """The decrypted secrets of a signing-secret connection ({} if there is none), for
        verifying signed webhooks. Decrypted once per stored value, not per webhook (signed
        ingest in-process, 16 threads: 211-223 -> 164-182 us of CPU per webhook). The
        plaintext is kept beside the connection's cached row, like the row itself: replaced
        when the stored value changes, dropped when a lookup finds the connection gone or
        when it is saved or deleted here."""
        try:
            cid = int(connection_id)
        except (TypeError, ValueError):
            return {}
        row = self.connection_rows([cid]).get(cid)
        if row is None or not row.secret_blob:
            self._signing.pop(cid, None)
            return {}
        blob = bytes(row.secret_blob)
        hit = self._signing.get(cid)
        if hit is None or hit[0] != blob:
            hit = (blob, self.secret_box.decrypt(blob))
            self._signing[cid] = hit
        return hit[1]

    @property
    def wakes_other_processes(self) -> bool:
        return self.pg_notify and wakeup.supported(self.engine)

    def announce_runs(self) -> None:
        """Runs were just committed by a process without a runner of its own: wake the runners
        of other processes (PostgreSQL), which would otherwise find them at their next poll.
        Never blocks."""
        if self.broadcaster is not None:
            self.broadcaster.notify()

    def forget_token(self, token: str) -> None:
        self._tokens.pop(token, None)

    def create_schema(self) -> None:
        create_schema(self.engine)

    def close(self) -> None:
        """Stop the writer thread and close pooled connections. A process runs one Core for
        its lifetime; this is for those that build several (tests, tools embedding Hookline),
        where each would otherwise keep its thread and its SQLite files open."""
        self.writer.stop()
        if self.broadcaster is not None:
            self.broadcaster.stop()
        self.engine.dispose()


def encryption_keys(configured: list[str], instance_path: str | Path) -> list[str]:
    """Configured keys, or the instance's own key file (created on first start)."""
    return list(configured) or [load_or_create_key(Path(instance_path) / "encryption.key")]


def build_core(engine: Engine, config: dict[str, Any], instance_path: str | Path,
               clock: Clock = system_clock) -> Core:
    return Core(
        engine=engine,
        secret_box=SecretBox(encryption_keys(config.get("ENCRYPTION_KEYS") or [], instance_path)),
        http=OutboundClient(allowlist=config.get("OUTBOUND_ALLOWLIST") or [],
                            timeout=float(config.get("OUTBOUND_TIMEOUT", 30.0)),
                            dns_cache_seconds=float(config.get("DNS_CACHE_SECONDS", 30.0)),
                            extra_ca=config.get("OUTBOUND_EXTRA_CA_CERTS") or None),
        clock=clock,
        lease_seconds=int(config.get("LEASE_SECONDS", 300)),
        poll_interval=float(config.get("POLL_INTERVAL", 1.0)),
        runner_threads=int(config.get("RUNNER_THREADS", 32)),
        retention_days=float(config.get("RETENTION_DAYS", 30)),
        shutdown_seconds=float(config.get("SHUTDOWN_SECONDS", 20.0)),
        pg_notify=bool(config.get("PG_NOTIFY", True)),
    )
