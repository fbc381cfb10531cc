"""Scale-out on PostgreSQL: a run that ``serve --no-worker`` queues starts at once in a
``hookline worker`` (LISTEN/NOTIFY), not at the worker's next poll, and keeps doing so after
the database drops the connections that carry the wake-ups. The workers here poll once a
minute, longer than any wait below: only a wake-up can start a run in time."""
from __future__ import annotations

import os
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TypeVar

import pytest
import requests
from sqlalchemy import create_engine, text

from tests.pg import temp_database
from tests.sinks import HttpSink
from tests.test_crash_recovery import HOOKLINE, ROOT, free_port, start_server, write_recipe

pytestmark = pytest.mark.postgres

SLOW_POLL = "60"
LISTENER, SENDER = "hookline wake-up listener", "hookline wake-up sender"
T = TypeVar("T")


@pytest.fixture
def pg_url() -> Iterator[str]:
    yield from temp_database()


def _env(pg_url: str, **settings: str) -> dict[str, str]:
    return {**os.environ, "HOOKLINE_DATABASE_URL": pg_url, "HOOKLINE_OUTBOUND_ALLOWLIST": "127.0.0.0/8",
            "HOOKLINE_POLL_INTERVAL": SLOW_POLL, "HOOKLINE_RUNNER_THREADS": "2",
            **{f"HOOKLINE_{k}": v for k, v in settings.items()}}


def _backends(pg_url: str, application_name: str) -> list[int]:
    engine = create_engine(pg_url)
    try:
        with engine.connect() as conn:
            return list(conn.execute(text(
                "SELECT pid FROM pg_stat_activity WHERE datname = current_database() AND application_name = :a"),
                {"a": application_name}).scalars())
    finally:
        engine.dispose()


def _terminate(pg_url: str, pids: list[int]) -> None:
    engine = create_engine(pg_url)
    try:
        with engine.connect() as conn:
            for pid in pids:
                conn.execute(text("SELECT pg_terminate_backend(:p)"), {"p": pid})
    finally:
        engine.dispose()


def _wait_for(what: str, check: Callable[[], T], timeout: float = 20.0) -> T:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = check()
        if found:
            return found
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")




class _Layout:
    """``serve --no-worker`` and one ``worker`` on the test's database, as the README's
    scale-out section runs them."""

    def __init__(self, tmp_path: Path, pg_url: str, sink_url: str, **settings: str) -> None:
        self.instance = tmp_path / "instance"
        self.env = _env(pg_url, **settings)
        self.token = write_recipe(self.instance, sink_url, self.env)
        self.port = free_port()
        self.web = start_server(self.instance, self.port, "--no-worker", env=self.env)
        self.worker: subprocess.Popen | None = None
        self.start_worker()

    def start_worker(self) -> None:
        """Returns once the worker says it runs: its start-up claim is behind it."""
        self.worker = subprocess.Popen([*HOOKLINE, "worker", "--instance", str(self.instance)], cwd=ROOT,
                                       env=self.env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        self.lines: list[str] = []
        self.reader = threading.Thread(target=self.lines.extend, args=(self.worker.stdout,), daemon=True)
        self.reader.start()
        _wait_for("the worker to start", lambda: any("Hookline worker" in line for line in self.lines))

    def stop_worker(self) -> str:
        """SIGTERM, as an orchestrator stops it; its whole log."""
        self.worker.send_signal(signal.SIGTERM)
        assert self.worker.wait(30) == 0
        self.reader.join(10)  # to the end of its output
        return "".join(self.lines)

    def post(self, n: int) -> None:
        r = requests.post(f"http://127.0.0.1:{self.port}/hooks/{self.token}", json={"n": n}, timeout=10)
        assert r.status_code == 202, r.text

    def close(self) -> None:
        for proc in (self.web, self.worker):
            if proc is not None and proc.poll() is None:
                proc.kill()
                proc.wait(10)


def test_a_worker_on_postgres_starts_a_run_the_web_process_queued_at_once(tmp_path, pg_url):
    with HttpSink() as sink:
        layout = _Layout(tmp_path, pg_url, sink.url)
        try:
            _wait_for("the worker to listen", lambda: _backends(pg_url, LISTENER))
            for n in range(3):
                layout.post(n)
            got = sink.wait_for(3, timeout=20)  # a third of the worker's poll interval
            assert sorted(r.json()["n"] for r in got) == [0, 1, 2]
            assert _backends(pg_url, SENDER)  # the web process's one connection for NOTIFY
        finally:
            layout.close()


def test_wake_ups_resume_after_the_database_drops_their_connections(tmp_path, pg_url):
    """A database restart or failover drops every session, the listening one included: a
    worker that did not notice would go back to finding runs by its poll alone."""
    with HttpSink() as sink:
        layout = _Layout(tmp_path, pg_url, sink.url)
        try:
            listener = _wait_for("the worker to listen", lambda: _backends(pg_url, LISTENER))
            layout.post(1)
            sink.wait_for(1, timeout=20)
            sender = _wait_for("the web process's sender", lambda: _backends(pg_url, SENDER))

            _terminate(pg_url, listener + sender)
            _wait_for("the worker to listen again",
                      lambda: [p for p in _backends(pg_url, LISTENER) if p not in listener])
            layout.post(2)  # its NOTIFY finds the sender's connection dead, reconnects, sends
            assert [r.json()["n"] for r in sink.wait_for(2, timeout=20)] == [1, 2]
            assert [p for p in _backends(pg_url, SENDER) if p not in sender]
            log = layout.stop_worker()
            assert "wake-up listener: " in log and "found by polling" in log
            assert "wake-up listener: connected to the database again" in log
        finally:
            layout.close()


def test_with_pg_notify_off_a_worker_finds_runs_by_polling_only(tmp_path, pg_url):
    """The setting for a pooler in transaction mode (PgBouncer), where LISTEN cannot work:
    nothing listens, nothing is sent, and a queued run waits for a poll, or a worker's start."""
    with HttpSink() as sink:
        layout = _Layout(tmp_path, pg_url, sink.url, PG_NOTIFY="false")
        try:
            time.sleep(1.0)  # the worker's start-up claim, which could take the run, is behind it
            layout.post(1)
            time.sleep(2.0)
            assert sink.requests == []
            assert _backends(pg_url, LISTENER) == [] and _backends(pg_url, SENDER) == []
            layout.stop_worker()
            layout.start_worker()  # a worker claims what is due when it starts: nothing was lost
            assert sink.wait_for(1, timeout=20)[0].json() == {"n": 1}
        finally:
            layout.close()


def test_serve_with_its_own_runner_wakes_it_without_notify(tmp_path, pg_url):
    """``serve`` wakes its runner child through a pipe; NOTIFYs on top cost it CPU and ack
    latency for nobody. Its child still listens, for web processes without a runner."""
    with HttpSink() as sink:
        instance = tmp_path / "instance"
        env = _env(pg_url)
        token = write_recipe(instance, sink.url, env)
        port = free_port()
        serve = start_server(instance, port, env=env)
        try:
            _wait_for("the runner child to listen", lambda: _backends(pg_url, LISTENER))
            for n in range(3):
                r = requests.post(f"http://127.0.0.1:{port}/hooks/{token}", json={"n": n}, timeout=10)
                assert r.status_code == 202
            assert len(sink.wait_for(3, timeout=20)) == 3
            assert _backends(pg_url, SENDER) == []
        finally:
            serve.kill()
            serve.wait(10)


def test_connections_find_a_silent_peer_and_the_url_can_say_otherwise(pg_url):
    """A partition leaves no RST: without keepalives and a TCP user timeout, a statement (the
    writer's, a NOTIFY) would block for the kernel's retransmission timeout (~15 min), and an
    idle listener would never notice. Both the engine's pooled connections and the wake-up
    connections carry them; what the URL sets wins (a site may need longer)."""
    from automations.db import PG_TCP_SETTINGS, engine_options
    from automations.wakeup import Listener

    for url, expected in ((pg_url, PG_TCP_SETTINGS),
                          (f"{pg_url}?keepalives_idle=120", {**PG_TCP_SETTINGS, "keepalives_idle": 120})):
        engine = create_engine(url, **engine_options(url))
        listener = Listener(engine, lambda: None)
        listener.start()
        try:
            assert listener.listening.wait(10)
            with engine.connect() as conn:
                pooled = conn.connection.driver_connection.info.get_parameters()
            for settings in (pooled, listener.conn.info.get_parameters()):
                assert {k: settings[k] for k in expected} == {k: str(v) for k, v in expected.items()}
        finally:
            listener.stop()
            engine.dispose()


def test_a_closed_cores_sender_is_not_started_again_by_a_late_request(pg_url):
    """A request that finishes after its process's Core was closed (a test app torn down, a
    tool that embeds Hookline) must not leave a new thread and connection behind."""
    from automations.wakeup import Broadcaster

    engine = create_engine(pg_url)
    try:
        sender = Broadcaster(engine)
        sender.notify()
        _wait_for("the sender to connect", lambda: _backends(pg_url, SENDER))
        sender.stop()
        _wait_for("the sender's connection to close", lambda: not _backends(pg_url, SENDER))
        sender.notify()
        time.sleep(0.5)
        assert _backends(pg_url, SENDER) == [] and not sender._thread.is_alive()
    finally:
        engine.dispose()
