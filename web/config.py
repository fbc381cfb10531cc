"""Configuration: safe defaults < ``instance/config.py`` < ``HOOKLINE_*`` environment < test config.

Every key in DEFAULTS can be set from the environment as ``HOOKLINE_<KEY>``; values are
coerced to the default's type (lists are comma-separated).
"""
from __future__ import annotations

import os
import secrets
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from flask import Flask

DEFAULTS: dict[str, Any] = {
    "DATABASE_URL": "",            # empty: sqlite:///<instance>/hookline.db
    "SECRET_KEY": "",              # empty: generated once into instance/secret_key
    "ENCRYPTION_KEYS": [],         # Fernet keys, first encrypts; empty: instance/encryption.key
    "PUBLIC_URL": "",              # base of the inbound URLs shown to users; empty: http://HOST:PORT
    "HOST": "127.0.0.1",
    "PORT": 8080,
    "WEB_THREADS": 32,
    "RUNNER_THREADS": 32,
    # serve: the runner in a child process it supervises, so web and runner get a core each:
    # "auto" (when this process may use two or more cores, on Linux or macOS), "true", "false"
    "RUNNER_PROCESS": "auto",
    # serve with a runner child: which CPUs each process keeps to (web/cpu_affinity.py says why):
    # "auto" (half of the usable CPUs each: one each on two), "off", or "WEB/RUNNER" like "0/1"
    "CPU_AFFINITY": "auto",
    "MAX_BODY_BYTES": 10 * 1024 * 1024,
    "INBOUND_WRITE_TIMEOUT": 15.0,  # seconds a webhook waits for the database before 503 (senders time out at 10–30 s)
    "OUTBOUND_ALLOWLIST": [],      # CIDRs/hosts outbound calls may reach although not public
    "OUTBOUND_TIMEOUT": 30.0,
    # PEM file (or c_rehash'ed folder) of CA certificates trusted for outbound HTTPS besides
    # the public ones (certifi's), for services signed by a private CA; empty: none
    "OUTBOUND_EXTRA_CA_CERTS": "",
    "DNS_CACHE_SECONDS": 30.0,     # how long an outbound host name's addresses are reused; 0: look up every call
    "LEASE_SECONDS": 300,
    # On SIGTERM, how long serve and worker let runs in flight finish their current step
    # before exiting; runs still going then are queued again for the next start.
    "SHUTDOWN_SECONDS": 20.0,
    "POLL_INTERVAL": 1.0,
    # PostgreSQL: web processes without a runner NOTIFY, runners LISTEN, so a worker in another
    # process starts a new run at once instead of at its next poll (automations/wakeup.py).
    # Off behind a pooler in transaction mode (PgBouncer), where LISTEN cannot work.
    "PG_NOTIFY": True,
    "RUNS_PER_PAGE": 50,
    "INBOUND_RATE": 1000.0,        # requests per second per inbound URL (burst: 2 s worth); 0: off
    "NOT_FOUND_RATE": 1.0,         # requests per second per client address to unknown URLs (burst 30)
    "RETENTION_DAYS": 30.0,        # finished runs and their events older than this are purged; 0 keeps all
    # Session cookie sent over HTTPS only: "true"/"false"; empty: true when PUBLIC_URL starts
    # with https:// (set it to true behind a TLS-terminating proxy with an http PUBLIC_URL).
    "SECURE_COOKIES": "",
    "SESSION_HOURS": 12.0,         # a sign-in lasts this long
    "LOGIN_MAX_FAILURES": 5,       # failed sign-ins per client address and per email ...
    "LOGIN_LOCKOUT_SECONDS": 900,  # ... within this window lock further attempts until they age out
    # Reverse proxies in front of Hookline whose X-Forwarded-For/-Proto/-Host are trusted. 0:
    # none (the TCP peer is the client). Behind one nginx/Caddy/ALB, 1. Never more than there
    # are: a client could then forge its address and dodge throttling and rate limits.
    "TRUSTED_PROXIES": 0,
}


TRUE_WORDS = ("1", "true", "yes", "on")
FALSE_WORDS = ("0", "false", "no", "off")


class ConfigError(ValueError):
    """A setting that cannot be used, named as the person set it (the CLI shows it without a traceback)."""


def _coerce(key: str, raw: str, default: Any) -> Any:
    word = raw.strip().lower()
    if isinstance(default, bool):
        if word in TRUE_WORDS or word in FALSE_WORDS:
            return word in TRUE_WORDS
        raise ConfigError(f"HOOKLINE_{key}={raw!r}: expected one of {', '.join(TRUE_WORDS + FALSE_WORDS)}")
    try:
        if isinstance(default, int):
            return int(raw)
        if isinstance(default, float):
            return float(raw)
    except ValueError:
        kind = "a whole number" if isinstance(default, int) else "a number"
        raise ConfigError(f"HOOKLINE_{key}={raw!r}: expected {kind}, like the default {default!r}") from None
    if isinstance(default, list):
        return [part.strip() for part in raw.split(",") if part.strip()]
    return raw


def load(app: Flask, test_config: dict[str, Any] | None) -> None:
    app.config.update(settings(app.instance_path, test_config))


def settings(instance_path: str | Path, test_config: dict[str, Any] | None = None) -> dict[str, Any]:
    """The resolved configuration of an instance folder. Flask-free, so the runner child
    (``hookline worker``) reads exactly what the web app reads without importing Flask."""
    config: dict[str, Any] = dict(DEFAULTS)
    instance = Path(instance_path)
    if test_config is None:
        config.update(_read_pyfile(instance / "config.py"))
        for key, default in DEFAULTS.items():
            raw = os.environ.get(f"HOOKLINE_{key}")
            if raw is not None:
                config[key] = _coerce(key, raw, default)
    else:
        config.update(test_config)
    # 0700 when created here (keys, password hashes, event bodies); an existing folder keeps
    # the mode its admin gave it.
    instance.mkdir(mode=0o700, parents=True, exist_ok=True)
    config["DATABASE_URL"] = _database_url(config["DATABASE_URL"], instance)
    _create_private_sqlite_file(config["DATABASE_URL"])
    if not config["SECRET_KEY"]:
        config["SECRET_KEY"] = _instance_secret(instance / "secret_key")
    if not config["PUBLIC_URL"]:
        config["PUBLIC_URL"] = f"http://{config['HOST']}:{config['PORT']}"
    config["PUBLIC_URL"] = config["PUBLIC_URL"].rstrip("/")
    secure = config["SECURE_COOKIES"]
    if isinstance(secure, str):
        secure = (_coerce("SECURE_COOKIES", secure, False) if secure.strip()
                  else config["PUBLIC_URL"].lower().startswith("https://"))
    config["SECURE_COOKIES"] = bool(secure)
    config["SESSION_COOKIE_SECURE"] = bool(secure)
    config["SESSION_COOKIE_HTTPONLY"] = True
    config["SESSION_COOKIE_SAMESITE"] = "Lax"
    config["PERMANENT_SESSION_LIFETIME"] = timedelta(hours=float(config["SESSION_HOURS"]))
    config["SQLALCHEMY_DATABASE_URI"] = config["DATABASE_URL"]
    config["MAX_CONTENT_LENGTH"] = config["MAX_BODY_BYTES"]
    extra_ca = str(config["OUTBOUND_EXTRA_CA_CERTS"] or "").strip()
    if extra_ca:
        from connectors.transport import ca_problem

        extra_ca = str(instance / extra_ca) if not Path(extra_ca).is_absolute() else extra_ca
        problem = ca_problem(extra_ca)
        if problem:
            raise ConfigError(f"HOOKLINE_OUTBOUND_EXTRA_CA_CERTS={extra_ca!r}: {problem}")
    config["OUTBOUND_EXTRA_CA_CERTS"] = extra_ca
    return config


def _read_pyfile(path: Path) -> dict[str, Any]:
    """The upper-case names ``instance/config.py`` defines (as Flask's ``from_pyfile``)."""
    try:
        source = path.read_bytes()
    except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
        return {}
    namespace: dict[str, Any] = {"__file__": str(path)}
    exec(compile(source, str(path), "exec"), namespace)  # noqa: S102 - the operator's own config file
    return {k: v for k, v in namespace.items() if k.isupper()}


def _database_url(url: str, instance: Path) -> str:
    """Empty: the instance's SQLite file. A relative SQLite path is relative to the instance
    folder (as Flask-SQLAlchemy resolves it), made absolute here so the runner child, which
    builds its engine without Flask-SQLAlchemy, opens the same file."""
    if not url:
        return f"sqlite:///{instance / 'hookline.db'}"
    from sqlalchemy.engine import make_url

    parsed = make_url(url)
    if parsed.get_backend_name() != "sqlite" or parsed.database in (None, "", ":memory:"):
        return url
    if parsed.query.get("uri") or Path(parsed.database).is_absolute():
        return url
    return parsed.set(database=str(instance / parsed.database)).render_as_string(hide_password=False)


def _create_private_sqlite_file(url: str) -> None:
    """Create a new SQLite database file empty and 0600 before SQLite first opens it (SQLite
    would create it 0644, and gives its -wal and -shm files the database file's mode). An
    existing file, an in-memory or URI database and other databases are left alone."""
    if not url.startswith("sqlite"):
        return
    from sqlalchemy.engine import make_url

    parsed = make_url(url)
    database = parsed.database
    if (parsed.get_backend_name() != "sqlite" or database in (None, "", ":memory:")
            or parsed.query.get("uri") or database.startswith("file:")):
        return
    try:
        fd = os.open(database, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except OSError:  # exists already (the admin's mode stands), or a folder SQLite will report
        return
    os.close(fd)  # an empty file is a valid empty SQLite database


def _instance_secret(path: Path) -> str:
    if path.exists():
        return path.read_text().strip()
    value = secrets.token_urlsafe(48)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(value + "\n")
    return value


def default_instance_path() -> str:
    """``HOOKLINE_INSTANCE_PATH``, else ``./instance`` of the current directory (the project
    checkout when run from it): for the CLI and for ``web.wsgi`` under gunicorn alike."""
    return str(Path(os.environ.get("HOOKLINE_INSTANCE_PATH") or Path.cwd() / "instance").resolve())
