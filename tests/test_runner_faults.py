"""Fault injection against the runner: receivers that throttle, hang, reset, and connectors
with bugs. Time is moved with an injectable clock, not by sleeping through retry delays."""
from __future__ import annotations

import socket
import struct
import threading
import time
from datetime import UTC, timedelta
from email.utils import format_datetime

import pytest
from sqlalchemy import select

from automations import recipes
from automations.clock import FrozenClock
from automations.models import Run, StepRun
from connectors import registry
from connectors.base import Action, Field
from tests.live import LiveServer, make_live_app
from tests.sinks import HttpSink, Reply
from tests.test_e2e import wait_run
from web.extensions import db


@pytest.fixture
def clock():
    return FrozenClock()


@pytest.fixture
def live(tmp_path, clock):
    # Long enough that a busy machine never times out a sink that answers at once (the
    # Retry-After tests would then see the schedule's delay); the slow-receiver test shortens it.
    app = make_live_app(tmp_path, OUTBOUND_TIMEOUT=5.0, POLL_INTERVAL=0.1)
    app.extensions["hookline"].clock = clock
    server = LiveServer(app)
    yield server
    server.close()


def make(live, url, **settings):
    with live.app.app_context():
        return recipes.create(db.session, "r", {
            "steps": [{"key": "a", "action": "http_request",
                       "inputs": {"method": "POST", "url": url, "body_type": "json", "body": "{}"}}],
            "settings": settings}).token


def run_of(live, run_id):
    with live.app.app_context():
        run = db.session.get(Run, run_id)
        steps = db.session.scalars(select(StepRun).where(StepRun.run_id == run_id).order_by(StepRun.id)).all()
        db.session.expunge_all()
        return run, steps


def wait_queued_for_retry(live, run_id, timeout=10.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        run, steps = run_of(live, run_id)
        if run.status == "queued" and steps:
            return run, steps
        time.sleep(0.02)
    raise AssertionError(f"run {run_id} is {run.status}")


@pytest.mark.parametrize("retry_after, low, high", [
    ("120", 120, 120),
    (None, 24, 36),          # no hint: the schedule's first delay, 30 s ± 20 % jitter
    ("soon", 24, 36),        # garbage is ignored
    ("-5", 24, 36),
    ("999999999", 6 * 3600, 6 * 3600),  # clamped
])
def test_retry_after_is_honoured_and_clamped(live, clock, retry_after, low, high):
    headers = {"Retry-After": retry_after} if retry_after else {}
    with HttpSink(lambda req: Reply(429, "slow down", headers)) as sink:
        run_id = live.post(make(live, sink.url), json={}).json()["run_id"]
        run, steps = wait_queued_for_retry(live, run_id)
        delay = (run.next_attempt_at - clock.now()).total_seconds()
        assert low - 0.01 <= delay <= high + 0.01
        assert steps[0].status == "retrying" and steps[0].response["status"] == 429


def test_retry_after_http_date(live, clock):
    date = format_datetime(clock.now().replace(tzinfo=UTC) + timedelta(seconds=300), usegmt=True)
    with HttpSink(lambda req: Reply(503, "", {"Retry-After": date})) as sink:
        run_id = live.post(make(live, sink.url), json={}).json()["run_id"]
        run, _ = wait_queued_for_retry(live, run_id)
        # An HTTP date has whole seconds: the retry is due at that instant, not 300 s from now.
        due = (clock.now() + timedelta(seconds=300)).replace(microsecond=0)
        assert abs((run.next_attempt_at - due).total_seconds()) < 0.01


def test_retry_waits_for_its_time_on_the_clock(live, clock):
    answers = [Reply(429, "", {"Retry-After": "120"}), Reply(200, "ok")]
    with HttpSink(lambda req: answers.pop(0)) as sink:
        run_id = live.post(make(live, sink.url), json={}).json()["run_id"]
        wait_queued_for_retry(live, run_id)
        clock.advance(119)
        live.runner.notify()
        time.sleep(0.3)  # the runner polls every 0.1 s: it had its chances to (wrongly) run it
        assert len(sink.requests) == 1
        clock.advance(2)
        live.runner.notify()
        sink.wait_for(2)
        assert wait_run(live.app, run_id) == "succeeded"


def test_slow_receiver_times_out_and_is_retried(live):
    live.app.extensions["hookline"].http.timeout = 0.5
    with HttpSink(lambda req: Reply(200, "late", delay=2)) as sink:
        run_id = live.post(make(live, sink.url), json={}).json()["run_id"]
        _, steps = wait_queued_for_retry(live, run_id)
        assert "timed out after 0.5 s" in steps[0].error


def test_connection_refused_and_reset_are_retried(live):
    closed = socket.socket()
    closed.bind(("127.0.0.1", 0))
    port = closed.getsockname()[1]
    closed.close()
    run_id = live.post(make(live, f"http://127.0.0.1:{port}/"), json={}).json()["run_id"]
    _, steps = wait_queued_for_retry(live, run_id)
    assert "refused" in steps[0].error

    resetter = socket.socket()
    resetter.bind(("127.0.0.1", 0))
    resetter.listen()

    def reset_after_partial_response():
        conn, _ = resetter.accept()
        conn.recv(65536)
        conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\npartial")
        conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        conn.close()  # RST mid-body

    threading.Thread(target=reset_after_partial_response, daemon=True).start()
    run_id = live.post(make(live, f"http://127.0.0.1:{resetter.getsockname()[1]}/"), json={}).json()["run_id"]
    run, steps = wait_queued_for_retry(live, run_id)
    resetter.close()
    assert run.attempt == 1 and steps[0].status == "retrying"


def test_a_connector_bug_fails_the_run_once_with_its_traceback(live, monkeypatch, caplog):
    calls = []

    def buggy(ctx):
        calls.append(ctx.idempotency_key)
        return {}["missing"]

    monkeypatch.setitem(registry.ACTIONS, "buggy", Action(
        key="buggy", label="Buggy", description="raises KeyError", run=buggy,
        fields=(Field("x", "X"),)))
    with live.app.app_context():
        token = recipes.create(db.session, "b", {"steps": [{"key": "a", "action": "buggy", "inputs": {}}]}).token
    run_id = live.post(token, json={}).json()["run_id"]
    assert wait_run(live.app, run_id) == "failed"
    run, steps = run_of(live, run_id)
    assert len(calls) == 1 and run.attempt == 1
    assert "internal error (KeyError)" in run.error and "Traceback" in steps[0].error
    assert any("crashed" in r.message for r in caplog.records)
