"""Review fixes to the runner: leases are renewed while a run executes (a run longer than its
lease is never executed twice), and shutting down releases runs at their checkpoint instead
of starting further steps, or, for a runner child killed at shutdown, takes its runs back
at once. Real SQLite, real HTTP sinks, real processes."""
from __future__ import annotations

import logging
import os
import signal
import sqlite3
import sys
import time
from functools import partial

import pytest
import requests
from sqlalchemy import select

from automations import queue, recipes
from automations.db import writer_slot
from automations.models import Run, StepRun
from tests.live import LiveServer, make_live_app
from tests.sinks import HttpSink, Reply
from tests.test_e2e import wait_run
from tests.test_runner_process import NO_POLLING, read_until, serving_a_recipe
from web.extensions import db
from web.runner_process import RunnerProcess
from web.server import _take_back, start_runner


def http_step(key, url):
    return {"key": key, "action": "http_request",
            "inputs": {"method": "POST", "url": url, "body_type": "json", "body": "{}"}}


def make_recipe(live, *steps):
    with live.app.app_context():
        return recipes.create(db.session, "r", {"steps": list(steps)}).token


def run_of(app, run_id):
    with app.app_context():
        run = db.session.get(Run, run_id)
        steps = db.session.scalars(select(StepRun).where(StepRun.run_id == run_id).order_by(StepRun.id)).all()
        db.session.expunge_all()
        db.session.rollback()
        return run, steps


def lease_lost(records):
    return [r.getMessage() for r in records if "lease lost" in r.getMessage()]


# --- A. a run longer than its lease ----------------------------------------------------------

def test_a_run_longer_than_its_lease_keeps_it_and_is_delivered_once(tmp_path, caplog):
    caplog.set_level(logging.INFO, logger="hookline")
    app = make_live_app(tmp_path, LEASE_SECONDS=2, POLL_INTERVAL=0.1, OUTBOUND_TIMEOUT=15.0)
    core = app.extensions["hookline"]
    assert core.lease_seconds == 2  # LEASE_SECONDS is a whole number of seconds
    with HttpSink(lambda req: Reply(200, "ok", delay=5)) as sink:
        live = LiveServer(app)
        try:
            run_id = live.post(make_recipe(live, http_step("a", sink.url)), json={}).json()["run_id"]
            sink.wait_for(1)
            time.sleep(3)  # the lease taken at the claim has run out by now, unless renewed
            # Another worker's sweep, and this runner's own: neither takes the run back.
            others = core.writer.submit(partial(queue.recover_expired, now=core.clock.now()))
            own = live.runner.recover_leases()
            run, _ = run_of(app, run_id)
            assert run.status == "running"
            assert run.lease_expires_at > core.clock.now()  # renewed, not merely spared
            assert wait_run(app, run_id) == "succeeded"
            time.sleep(0.5)  # a second attempt, if there were one, would have been sent at 3 s
            assert len(sink.requests) == 1
            assert (others, own) == (0, 0)
        finally:
            live.close()
    run, steps = run_of(app, run_id)
    assert run.attempt == 1 and [s.status for s in steps] == ["succeeded"]
    assert lease_lost(caplog.records) == []


def test_a_crashed_runner_stops_renewing_and_its_run_is_taken_back(tmp_path):
    """The other half of renewal: leases of a runner that is gone do expire. A runner whose
    process dies is simulated by a lease owner that no live runner renews."""
    app = make_live_app(tmp_path, LEASE_SECONDS=2, POLL_INTERVAL=0.1)
    core = app.extensions["hookline"]
    with HttpSink() as sink:
        live = LiveServer(app, with_runner=False)
        try:
            run_id = live.post(make_recipe(live, http_step("a", sink.url)), json={}).json()["run_id"]
            with core.engine.begin() as conn:
                assert queue.claim_in(conn, "dead-worker", 1, core.clock.now(), 2) == [run_id]
            live.runner = start_runner(app)  # a live runner beside it: sweeps, renews only its own
            time.sleep(1)
            assert sink.requests == []  # not before the lease runs out
            assert wait_run(app, run_id, timeout=15) == "succeeded"  # at the next sweep (every 5 s)
            assert len(sink.requests) == 1
        finally:
            live.close()


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="as tests/test_runner_process.py")
def test_a_runner_child_renews_its_leases_through_the_web_process(tmp_path):
    """serve's runner child renews through the web process's writer (the unit crosses the
    socket). Lease 2 s, a receiver that takes 8 s: one delivery, the run succeeded."""
    with serving_a_recipe(tmp_path, env={**NO_POLLING, "HOOKLINE_LEASE_SECONDS": "2",
                                         "HOOKLINE_OUTBOUND_TIMEOUT": "20"},
                          responder=lambda req: Reply(200, "ok", delay=8)) as (sink, server, port, token):
        read_until(server, "Hookline worker", 30)
        assert requests.post(f"http://127.0.0.1:{port}/hooks/{token}", json={"n": 1}, timeout=5).status_code == 202
        sink.wait_for(1, timeout=15)
        deadline = time.monotonic() + 20
        status = None
        while time.monotonic() < deadline:
            with sqlite3.connect(tmp_path / "instance" / "hookline.db") as conn:
                status = conn.execute("select status from runs").fetchone()[0]
            if status == "succeeded":
                break
            time.sleep(0.2)
        assert status == "succeeded"
        time.sleep(0.5)
        assert len(sink.requests) == 1
    out = server.stdout.read().decode()
    assert "lease lost" not in out and "took back" not in out, out


# --- B. shutting down ------------------------------------------------------------------------

def test_a_stopping_runner_starts_no_further_step_and_releases_the_run_at_its_checkpoint(tmp_path, caplog):
    caplog.set_level(logging.INFO, logger="hookline")
    app = make_live_app(tmp_path, LEASE_SECONDS=300, POLL_INTERVAL=0.1)
    with HttpSink(lambda req: Reply(200, "ok", delay=2)) as first, HttpSink() as second:
        live = LiveServer(app)
        try:
            token = make_recipe(live, http_step("one", first.url), http_step("two", second.url))
            run_id = live.post(token, json={}).json()["run_id"]
            first.wait_for(1)  # step one is in flight
            live.runner.stop(timeout=10)
            assert second.requests == []  # step two was not started by the stopping runner
            run, steps = run_of(app, run_id)
            assert (run.status, run.step_index, run.lease_owner, run.lease_expires_at) == ("queued", 1, None, None)
            assert run.attempt == 0  # released: the interrupted attempt is not counted
            assert run.next_attempt_at <= app.extensions["hookline"].clock.now()  # due now
            assert [(s.step_key, s.status) for s in steps] == [("one", "succeeded")]

            live.runner = start_runner(app)  # the next start continues at step two
            second.wait_for(1)
            assert wait_run(app, run_id) == "succeeded"
            time.sleep(0.3)
            assert len(first.requests) == 1 and len(second.requests) == 1
            run, steps = run_of(app, run_id)
            assert run.attempt == 1
            assert [(s.step_key, s.status) for s in steps] == [("one", "succeeded"), ("two", "succeeded")]
        finally:
            live.close()
    assert lease_lost(caplog.records) == []


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="a runner child process needs POSIX pipes")
@pytest.mark.parametrize("hung", [False, True], ids=["child-gives-up", "child-hung-and-killed"])
def test_a_runner_child_still_busy_at_shutdown_has_its_runs_queued_again_at_once(tmp_path, monkeypatch, hung):
    """The child's run is still waiting on its receiver when the drain time is over: the
    child queues it again itself and exits, or, hung (stopped here with SIGSTOP), it is
    killed and serve queues it again; either way at once, not 5 minutes later when its
    lease would expire."""
    for key, value in {"OUTBOUND_ALLOWLIST": "127.0.0.0/8", "LEASE_SECONDS": "300", "POLL_INTERVAL": "0.2",
                       "RUNNER_THREADS": "2", "OUTBOUND_TIMEOUT": "60"}.items():
        monkeypatch.setenv(f"HOOKLINE_{key}", value)  # read by the child (hookline worker)
    app = make_live_app(tmp_path, LEASE_SECONDS=300)
    core = app.extensions["hookline"]
    answered = []

    def slow_first(req):
        answered.append(req)
        return Reply(200, "ok", delay=30 if len(answered) == 1 else 0)

    with HttpSink(slow_first) as sink:
        live = LiveServer(app, with_runner=False)
        child = RunnerProcess(app.instance_path, shutdown_timeout=0.5, writer_slot=writer_slot(core.engine),
                              on_exit=lambda owner: _take_back(core, owner)).start()
        app.extensions["hookline_runner"] = child
        try:
            run_id = live.post(make_recipe(live, http_step("a", sink.url)), json={}).json()["run_id"]
            sink.wait_for(1, timeout=20)  # in flight in the child
            run, _ = run_of(app, run_id)
            assert run.status == "running" and run.lease_owner == child.owner
            started = time.monotonic()
            if hung:
                os.kill(child.proc.pid, signal.SIGSTOP)  # it cannot act on the SIGTERM
            assert child.stop() == (-9 if hung else 0)  # SIGTERM; hung: 0.5 + 5 s of grace, SIGKILL
            assert time.monotonic() - started < 15
            run, _ = run_of(app, run_id)
            assert (run.status, run.lease_owner, run.lease_expires_at) == ("queued", None, None)
            assert run.next_attempt_at <= core.clock.now()

            live.runner = start_runner(app)  # the next start runs it now, not in 5 minutes
            assert wait_run(app, run_id) == "succeeded"
            assert len(sink.requests) == 2
        finally:
            child.stop()
            live.close()


def test_a_claim_whose_answer_never_came_gives_its_runs_back_at_once(app, client):
    """The database stalls while a claim's batch is under way: the dispatcher stops waiting
    (TimeoutError, not a withdrawal: the claim had begun), so runs may now be leased to it
    that it never heard of. They are queued again right after the claim commits, not left
    to their lease (5 minutes by default)."""
    import threading

    from automations.runner import Runner
    from automations.writer import Abandoned

    with app.app_context():
        token = recipes.create(db.session, "r", {"steps": [http_step("s", "http://127.0.0.1:9/x")]}).token
    run_ids = [client.post(f"/hooks/{token}", json={"n": i}).get_json()["run_id"] for i in range(3)]
    core = app.extensions["hookline"]
    gate, blocked = threading.Event(), threading.Event()

    def blocker(conn):  # holds the writer so the next units queue up and share a batch
        blocked.set()
        gate.wait(5)

    def slow(conn):  # first in the claim's batch: the batch has begun, the claim waits behind it
        time.sleep(1.0)
    threading.Thread(target=core.writer.submit, args=(blocker,), daemon=True).start()
    assert blocked.wait(5)
    threading.Thread(target=core.writer.submit, args=(slow,), daemon=True).start()
    time.sleep(0.05)
    runner = Runner(core, threads=2)
    runner.claim_timeout, runner.claim_grace = 0.5, 0.1
    outcome: list[BaseException] = []

    def dispatch():
        try:
            runner.dispatch()
        except BaseException as exc:  # noqa: BLE001 - the test looks at it
            outcome.append(exc)
    thread = threading.Thread(target=dispatch)
    thread.start()
    time.sleep(0.2)
    gate.set()  # the batch [slow, claim] begins; the claim is started, then waits past 0.6 s
    thread.join(10)
    assert len(outcome) == 1 and isinstance(outcome[0], TimeoutError) and not isinstance(outcome[0], Abandoned)
    with app.app_context():
        runs = [db.session.get(Run, r) for r in run_ids]
        assert [(r.status, r.lease_owner, r.attempt) for r in runs] == [("queued", None, 0)] * 3
    runner._pool.shutdown()


def test_an_idle_runner_stopped_with_no_time_to_spare_says_it_finished(tmp_path, caplog):
    """SHUTDOWN_SECONDS=0: nothing was in flight, so nothing is taken back and the process
    may exit normally (the stop once answered "not finished" and logged 0 runs queued again)."""
    from automations.runner import Runner

    app = make_live_app(tmp_path)
    runner = Runner(app.extensions["hookline"], threads=2).start()
    with caplog.at_level(logging.WARNING, logger="hookline.runner"):
        assert runner.stop(0) is True
    assert "still in flight" not in caplog.text
