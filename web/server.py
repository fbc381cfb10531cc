"""Running Hookline: the web server (waitress) and the runner.

``serve`` is the embedded default, one command on one SQLite database. With two or more CPUs
it runs the runner in a child process it supervises (web/runner_process.py), so web and
runner each get a core; ``--no-runner-process`` keeps web threads and runner threads in one
process. For scale-out, run ``serve --no-worker`` (or gunicorn on ``web.wsgi:app``) for
ingestion and any number of ``worker`` processes against PostgreSQL (web/worker.py).
"""
from __future__ import annotations

import logging
import signal
import threading
from functools import partial
from typing import Any

from flask import Flask
from waitress.server import create_server

from automations import queue
from automations.core import Core
from automations.db import writer_slot
from automations.logredact import install as install_log_redaction
from automations.runner import Runner

from .cpu_affinity import CpuPlan, format_cpu_list, pin_process
from .runner_process import RunnerProcess
from .worker import exit_leaving_threads

log = logging.getLogger("hookline")


def start_runner(app: Flask, owner: str | None = None) -> Runner:
    runner = Runner(app.extensions["hookline"], owner=owner).start()
    app.extensions["hookline_runner"] = runner
    return runner


# Chunk framing waitress counts as body (size lines, CRLFs, trailers): room for it, so a chunked
# body that is within MAX_BODY_BYTES once decoded is never refused for its framing.
_CHUNK_FRAMING_ROOM = 64 * 1024


def max_request_body_size(limit: int) -> int:
    """waitress's own body cap for a MAX_BODY_BYTES of ``limit``. waitress reads a whole body
    (to a temp file past 512 KiB) before the app sees the request; its default cap is 1 GiB.
    With this one a declared Content-Length past the cap is answered 413 before any body is
    read, and a chunked body is cut off once it passes it. It counts chunked bodies on the
    wire and refuses a length equal to the cap, so it sits just above ``limit`` (plus room
    for framing); the exact limit on the body itself stays the endpoint's (its own 413)."""
    return limit + 1 + max(limit // 8, _CHUNK_FRAMING_ROOM)


def make_server(app: Flask, host: str, port: int) -> Any:
    # waitress warns "Task queue depth is N" on every request under load: noise, not news.
    logging.getLogger("waitress.queue").setLevel(logging.ERROR)
    install_log_redaction()  # waitress logs request paths: /hooks/<token> is a secret
    return create_server(app, host=host, port=port, threads=app.config["WEB_THREADS"],
                         connection_limit=1000, channel_timeout=60, ident="Hookline",
                         clear_untrusted_proxy_headers=True,
                         max_request_body_size=max_request_body_size(app.config["MAX_BODY_BYTES"]))


def serve(app: Flask, *, with_worker: bool = True, runner_process: bool = False, host: str | None = None,
          port: int | None = None, shutdown_timeout: float = 20.0, cpus: CpuPlan | None = None) -> None:
    """``cpus``: the CPUs of this process and of the runner child (web/cpu_affinity.py); used
    only with a runner child."""
    host = host or app.config["HOST"]
    port = port or app.config["PORT"]
    server = make_server(app, host, port)  # bind first: a taken port starts no child
    runner: Runner | RunnerProcess | None = None
    if with_worker and runner_process:
        core = app.extensions["hookline"]
        runner = RunnerProcess(app.instance_path, shutdown_timeout,
                               on_exit=lambda owner: _take_back(core, owner),
                               cpus=cpus.runner if cpus else None, writer_slot=writer_slot(core.engine)).start()
        app.extensions["hookline_runner"] = runner
        where = f"in child process {runner.proc.pid if runner.proc else '?'}"
        if cpus is not None and pin_process(cpus.web, "web process"):
            where += f"; CPUs: web {format_cpu_list(cpus.web)}, runner {format_cpu_list(cpus.runner)}"
    elif with_worker:
        runner = start_runner(app)
        where = "in this process"
    else:
        where = "off"
    stopping = threading.Event()

    def _stop(signum: int, _frame: Any) -> None:
        if not stopping.is_set():
            stopping.set()
            log.info("signal %s: shutting down", signum)
            raise SystemExit(0)  # waitress's run() catches it and closes the server

    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    print(f"Hookline listening on http://{host}:{server.effective_port} "
          f"(inbound URLs shown as {app.config['PUBLIC_URL']}/hooks/…; "
          f"runner: {where})", flush=True)
    try:
        server.run()
    except (OSError, ValueError):
        if not stopping.is_set():
            raise
    finally:
        # Runs still going after the timeout are queued again and their threads left behind;
        # exiting normally would wait for them. Not on a crash: its traceback and status count.
        # (Only a Runner answers False; a RunnerProcess answers its child's exit code.)
        if runner is not None and runner.stop(shutdown_timeout) is False and stopping.is_set():
            exit_leaving_threads()


def _take_back(core: Core, owner: str) -> None:
    """The runner child that leased runs as ``owner`` has exited: queue its runs again now
    rather than when their leases expire (LEASE_SECONDS, 5 min by default). The child is gone,
    so none of its writes can follow."""
    now = core.clock.now()
    n = core.writer.submit(partial(queue.take_back, owner=owner, now=now))
    if n:
        log.warning("took back %d runs the runner child had in flight", n)
