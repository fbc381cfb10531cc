"""``hookline worker``: the runner alone, as a process of its own (the runner child of
``serve``, or a scale-out worker beside ``serve --no-worker``).

It never imports Flask, Flask-SQLAlchemy, WTForms or waitress: it needs the engine, not the
web app, and those imports and the app they build cost the process about 8 MiB of memory.
It reads the same configuration as the web app (web/config.py ``settings``) and builds the
same engine core from it.
"""
from __future__ import annotations

import contextlib
import logging
import os
import signal
import sys
import threading
from pathlib import Path

from sqlalchemy import create_engine

from automations.core import Core, build_core
from automations.db import engine_options
from automations.logredact import install as install_log_redaction
from automations.runner import Runner

from . import config
from .runner_process import watch_wake_pipe

log = logging.getLogger("hookline")


def worker_core(instance_path: str | Path) -> Core:
    """The engine core of an instance folder, as ``create_app`` builds it, without the app."""
    settings = config.settings(instance_path)
    url = settings["DATABASE_URL"]
    options = settings.get("SQLALCHEMY_ENGINE_OPTIONS") or engine_options(
        url, pool_size=settings["RUNNER_THREADS"] + 4)
    install_log_redaction()
    core = build_core(create_engine(url, **options), settings, instance_path)
    core.create_schema()
    return core


def run_worker(core: Core, shutdown_timeout: float = 20.0, wake_fd: int | None = None,
               owner: str | None = None) -> None:
    """``wake_fd``: the read end of the pipe from ``serve --runner-process``; ``owner``: the
    lease owner name serve chose, so it can take back this runner's runs if it dies."""
    runner = Runner(core, owner=owner).start()
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    if wake_fd is not None:
        def parent_gone() -> None:
            log.warning("the web process that started this runner is gone: stopping")
            stop.set()

        watch_wake_pipe(wake_fd, runner.notify, parent_gone)
    print(f"Hookline worker {runner.owner} running ({runner.threads} threads)", flush=True)
    stop.wait()
    if not runner.stop(shutdown_timeout):
        exit_leaving_threads()


def exit_leaving_threads() -> None:
    """Exit now, status 0, after the runner gave up waiting for its runs (they are queued
    again): a normal exit would join the pool's threads, each still waiting on a receiver for
    up to OUTBOUND_TIMEOUT, and overrun the SHUTDOWN_SECONDS an orchestrator was promised."""
    logging.shutdown()
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):
            stream.flush()
    os._exit(0)
