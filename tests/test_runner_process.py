"""``hookline serve --runner-process``: the runner in a child process that serve starts,
wakes through a pipe, restarts when it dies and stops with it; it never outlives a killed
web process."""
from __future__ import annotations

import os
import random
import select
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
import requests

from automations.db import WriterSlot
from tests.pg import temp_database
from tests.sinks import HttpSink, Reply
from tests.test_crash_recovery import HOOKLINE, ROOT, free_port, start_server, write_recipe
from tests.test_writer_slot import hold_in_another_process
from web.cpu_affinity import usable_cpu_set
from web.runner_process import LOCK_STALL_SECONDS, runner_process_wanted

pytestmark = pytest.mark.skipif(
    not sys.platform.startswith("linux"),
    reason="Linux only: these tests find serve's runner child process through /proc/<pid>/task/*/children")

# The runner's own tick every 60 s and its dispatcher's timeout at 5x that: a run delivered
# within seconds was started by the wake-up through the pipe, not by polling.
NO_POLLING = {"HOOKLINE_POLL_INTERVAL": "60"}


def children(pid: int) -> list[int]:
    """Each thread lists the children it started: the restarted runner is the watcher thread's."""
    out = []
    for task in Path(f"/proc/{pid}/task").glob("*"):
        try:
            out += [int(c) for c in (task / "children").read_text().split()]
        except OSError:
            pass
    return out


def runner_child(server: subprocess.Popen, not_pid: int | None = None, timeout: float = 20.0) -> int:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        kids = [c for c in children(server.pid) if c != not_pid]
        if kids:
            assert len(kids) == 1, kids
            return kids[0]
        time.sleep(0.05)
    raise AssertionError("no runner child process")


def task_state(stat: Path) -> str | None:
    """The state letter in a /proc/…/stat file (R, S, T, Z…), None if it is gone."""
    try:
        return stat.read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return None


def alive(pid: int) -> bool:
    return task_state(Path(f"/proc/{pid}/stat")) not in (None, "Z")


def wait_gone(pid: int, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not alive(pid):
            return True
        time.sleep(0.05)
    return False


def post(port: int, token: str, n: int, timeout: float = 5) -> None:
    r = requests.post(f"http://127.0.0.1:{port}/hooks/{token}", json={"n": n}, timeout=timeout)
    assert r.status_code == 202, r.text


def stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)


def read_until(proc: subprocess.Popen, needle: str, timeout: float) -> str:
    """The server's output up to the first line containing ``needle`` (the child writes to it too)."""
    deadline, seen = time.monotonic() + timeout, []
    while time.monotonic() < deadline:
        ready, _, _ = select.select([proc.stdout], [], [], max(0.0, deadline - time.monotonic()))
        if not ready:
            break
        line = proc.stdout.readline().decode(errors="replace")
        if not line:
            break
        seen.append(line)
        if needle in line:
            return "".join(seen)
    raise AssertionError(f"no {needle!r} within {timeout} s:\n{''.join(seen)}")


@contextmanager
def serving_a_recipe(tmp_path: Path, args: tuple[str, ...] = ("--runner-process",), env: dict[str, str] | None = None,
                     responder: Callable[[Any], Reply] | None = None,
                     ) -> Iterator[tuple[HttpSink, subprocess.Popen, int, str]]:
    """A sink, a recipe delivering to it, and ``serve ARGS`` (default: ``--runner-process``,
    without polling) on the recipe's instance; SIGTERMed at the end."""
    with HttpSink(responder) as sink:
        instance = tmp_path / "instance"
        token = write_recipe(instance, sink.url)
        port = free_port()
        server = start_server(instance, port, *args, env=NO_POLLING if env is None else env)
        try:
            yield sink, server, port, token
        finally:
            stop(server)


def kill_web_process(server: subprocess.Popen, child: int) -> None:
    """SIGKILL serve; its runner child must notice (the pipe's write end closed) and stop."""
    try:
        server.send_signal(signal.SIGKILL)
        server.wait(10)
        assert wait_gone(child, 20), "the runner child outlived its web process"
    finally:
        if alive(child):
            os.kill(child, signal.SIGKILL)


def test_child_runs_what_the_web_process_stores_and_is_woken_at_once(tmp_path):
    with serving_a_recipe(tmp_path) as (sink, server, port, token):
        child = runner_child(server)
        out = read_until(server, "Hookline worker", 30)  # the child's runner is up and has looked once
        assert f"runner: in child process {child}" in out
        time.sleep(0.5)
        for n in (1, 2):
            post(port, token, n)
            assert sink.wait_for(n, timeout=15)[-1].json() == {"n": n}  # polling would take 60 s
    assert server.returncode == 0
    assert wait_gone(child, 5)


def runner_state(port: int) -> str:
    resp = requests.get(f"http://127.0.0.1:{port}/healthz/readiness", timeout=10)
    assert resp.status_code == 200, resp.text  # the runner's state never makes serve unready
    return resp.json()["runner"]


def wait_for_state(port: int, wanted: str, timeout: float = 20.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if runner_state(port) == wanted:
            return True
        time.sleep(0.02)
    return False


def test_a_runner_child_that_dies_is_started_again(tmp_path):
    with serving_a_recipe(tmp_path) as (sink, server, port, token):
        first = runner_child(server)
        assert runner_state(port) == "running"
        os.kill(first, signal.SIGKILL)
        assert wait_for_state(port, "restarting")  # restarted after 1 s: the health check shows the gap
        second = runner_child(server, not_pid=first)
        assert wait_for_state(port, "running")
        assert second != first
        post(port, token, 7)
        assert sink.wait_for(1, timeout=20)[0].json() == {"n": 7}
        assert server.poll() is None  # the web process carried on all along
    out = server.stdout.read().decode()
    assert "exited with -9" in out


def test_a_killed_web_process_leaves_no_runner_behind(tmp_path):
    instance = tmp_path / "instance"
    server = start_server(instance, free_port(), "--runner-process", env=NO_POLLING)
    kill_web_process(server, runner_child(server))


def test_sigterm_stops_web_and_runner_child(tmp_path):
    instance = tmp_path / "instance"
    port = free_port()
    server = start_server(instance, port, env={"HOOKLINE_RUNNER_PROCESS": "true"})  # the setting, not the flag
    child = runner_child(server)
    server.send_signal(signal.SIGTERM)
    assert server.wait(40) == 0
    assert not alive(child)


def test_runner_process_and_no_worker_exclude_each_other(tmp_path):
    proc = subprocess.run([*HOOKLINE, "serve", "--instance", str(tmp_path / "i"), "--no-worker", "--runner-process"],
                          check=False, cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2
    assert "exclude each other" in proc.stderr


@pytest.mark.parametrize(("setting", "cpus", "wanted"), [
    ("auto", 2, True), ("auto", 8, True), ("auto", 1, False), ("AUTO", 4, True),
    ("true", 1, True), (True, 1, True), ("on", 1, True), ("1", 1, True),
    ("false", 8, False), (False, 8, False), ("no", 8, False), ("0", 8, False),
])
def test_the_setting_decides_where_the_runner_goes(setting, cpus, wanted):
    assert runner_process_wanted(setting, cpus=cpus) is wanted


def serve_refused(tmp_path: Path, **settings: str) -> subprocess.CompletedProcess:
    """``hookline serve`` with these HOOKLINE_* settings, expected to stop at start (status 2)."""
    env = {**os.environ, **{f"HOOKLINE_{key}": value for key, value in settings.items()}}
    proc = subprocess.run([*HOOKLINE, "serve", "--instance", str(tmp_path / "i")], check=False, cwd=ROOT,
                          env=env, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    return proc


def test_an_unknown_setting_is_refused_at_start(tmp_path):
    proc = serve_refused(tmp_path, RUNNER_PROCESS="sometimes")
    assert "RUNNER_PROCESS must be auto, true or false, not 'sometimes'" in proc.stderr


@pytest.mark.skipif(len(usable_cpu_set()) < 2, reason="serve's default puts the runner in a child process only "
                                              "with two or more usable CPUs; this machine has one")
def test_serve_by_default_runs_its_runner_in_a_child_with_two_cores(tmp_path):
    with serving_a_recipe(tmp_path, args=(), env={}) as (sink, server, port, token):  # the README's command
        child = runner_child(server)
        assert f"runner: in child process {child}" in read_until(server, "Hookline listening", 30)
        post(port, token, 5)
        assert sink.wait_for(1, timeout=20)[0].json() == {"n": 5}
    assert server.returncode == 0


def test_no_runner_process_keeps_the_runner_in_serve(tmp_path):
    with serving_a_recipe(tmp_path, args=("--no-runner-process",), env={}) as (sink, server, port, token):
        assert "runner: in this process" in read_until(server, "Hookline listening", 30)
        assert runner_state(port) == "running"
        post(port, token, 6)
        assert sink.wait_for(1, timeout=20)[0].json() == {"n": 6}
        assert children(server.pid) == []
    assert server.returncode == 0


def test_runs_of_a_runner_child_that_died_are_taken_back_at_once(tmp_path):
    """The child is killed while its run waits for a slow receiver. Its lease would keep the
    run for LEASE_SECONDS (5 min here); serve knows the child is dead and queues it again."""
    answered = []

    def slow_first(req):
        answered.append(req)
        return Reply(200, "ok", delay=30 if len(answered) == 1 else 0)

    env = {**NO_POLLING, "HOOKLINE_LEASE_SECONDS": "300"}
    with serving_a_recipe(tmp_path, env=env, responder=slow_first) as (sink, server, port, token):
        first = runner_child(server)
        post(port, token, 9)
        sink.wait_for(1, timeout=15)  # the first attempt is in flight in the child
        os.kill(first, signal.SIGKILL)
        runner_child(server, not_pid=first)
        again = sink.wait_for(2, timeout=20)  # not after 5 minutes
        assert [r.json() for r in again] == [{"n": 9}, {"n": 9}]
        assert again[1].headers["Idempotency-Key"] == again[0].headers["Idempotency-Key"]
    out = server.stdout.read().decode()
    assert "took back 1 runs the runner child had in flight" in out


def holds_writer_lock(instance: Path, pid: int) -> bool:
    """Whether ``pid`` holds the SQLite database's writer slot, as serve's watch reads it."""
    return pid in (WriterSlot(str(instance / "hookline.db")).holders() or set())


def stopped(pid: int, timeout: float = 5.0) -> bool:
    """SIGSTOP ``pid`` and wait until every one of its threads is stopped (what it holds then
    stays held)."""
    os.kill(pid, signal.SIGSTOP)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        states = {task_state(task / "stat") for task in Path(f"/proc/{pid}/task").glob("*")} - {None}
        if states == {"T"}:
            return True
        time.sleep(0.001)
    return False


def stop_child(instance: Path, child: int, holding: bool, port: int, token: str, tries: int = 400) -> list[int]:
    """Stop the child at a moment it holds the writer lock (``holding``) or does not; before
    each try, a webhook gives it work (a run to claim, deliver and record). Returns the
    numbers of those webhooks."""
    for i in range(tries):
        post(port, token, i)
        time.sleep(random.uniform(0, 0.004))
        assert stopped(child)
        if holds_writer_lock(instance, child) == holding:
            return list(range(i + 1))
        os.kill(child, signal.SIGCONT)
    raise AssertionError(f"could not stop the child {'while' if holding else 'unless'} it held the lock "
                         f"in {tries} tries")


def delivered(sink: HttpSink, wanted: set[int], timeout: float = 30.0) -> set[int]:
    """The numbers the sink received, once it has every one ``wanted`` (or the timeout passed)."""
    deadline = time.monotonic() + timeout
    while True:
        got = {r.json()["n"] for r in list(sink.requests)}
        if wanted <= got or time.monotonic() > deadline:
            return got
        time.sleep(0.05)


def test_a_runner_child_stopped_between_writes_never_holds_up_webhooks(tmp_path):
    """A child frozen (SIGSTOP, a debugger) while it holds no lock: acknowledgements go on
    as before, and its runs are delivered once it carries on."""
    with serving_a_recipe(tmp_path) as (sink, server, port, token):
        child = runner_child(server)
        read_until(server, "Hookline worker", 30)
        sent = stop_child(tmp_path / "instance", child, False, port, token)
        try:
            for n in range(1000, 1020):
                started = time.monotonic()
                post(port, token, n)
                assert time.monotonic() - started < 3
        finally:
            os.kill(child, signal.SIGCONT)
        wanted = {*sent, *range(1000, 1020)}
        assert wanted <= delivered(sink, wanted)
        assert alive(child)  # nothing to kill it for
    out = server.stdout.read().decode()
    assert "writer lock" not in out


def test_a_runner_child_stopped_holding_the_writer_lock_is_killed_and_replaced(tmp_path):
    """Both processes write to the SQLite file, one at a time: a child frozen in the middle of
    a transaction would hold up every webhook (each answered 503 after 30 s). serve kills it
    after LOCK_STALL_SECONDS, takes back its runs and starts another; nothing is lost."""
    with serving_a_recipe(tmp_path) as (sink, server, port, token):
        child = runner_child(server)
        read_until(server, "Hookline worker", 30)
        sent = stop_child(tmp_path / "instance", child, True, port, token)
        started = time.monotonic()
        post(port, token, 9999, timeout=30)  # waits for the lock the stopped child holds
        waited = time.monotonic() - started
        assert LOCK_STALL_SECONDS <= waited < LOCK_STALL_SECONDS + 5
        assert wait_gone(child, 10)
        assert runner_child(server, not_pid=child) != child
        wanted = {*sent, 9999}
        assert wanted <= delivered(sink, wanted)  # the dead child's runs come back through its successor
    out = server.stdout.read().decode()
    assert f"runner child process {child} has held the database's writer lock" in out


def test_a_runner_child_is_not_killed_for_a_lock_another_process_holds(tmp_path):
    """Another program writing to the database (an import, a sqlite3 shell) holds webhooks up
    while it writes; the child, which holds nothing, is left alone."""
    with serving_a_recipe(tmp_path) as (sink, server, port, token):
        child = runner_child(server)
        read_until(server, "Hookline worker", 30)
        holder = hold_in_another_process(tmp_path / "instance" / "hookline.db.writer-lock", LOCK_STALL_SECONDS + 1.5)
        started = time.monotonic()
        post(port, token, 1, timeout=30)
        assert time.monotonic() - started >= LOCK_STALL_SECONDS + 1  # it did wait for that process
        holder.wait(10)
        assert sink.wait_for(1, timeout=20)[0].json() == {"n": 1}
        assert runner_child(server) == child and alive(child)
    assert "writer lock" not in server.stdout.read().decode()


def test_a_run_in_flight_when_the_web_process_dies_is_finished_and_recorded(tmp_path):
    """The child sees its web process gone and stops as on SIGTERM: the step in flight gets
    its answer and the run's outcome is recorded (the child writes itself), so the next serve
    does not send it again."""
    instance = tmp_path / "instance"
    with serving_a_recipe(tmp_path, responder=lambda req: Reply(200, "ok", delay=2)) as (sink, server, port, token):
        child = runner_child(server)
        post(port, token, 3)
        sink.wait_for(1, timeout=15)
        kill_web_process(server, child)
        out = server.stdout.read().decode()  # the child wrote to the same pipe until it exited
        assert "the web process that started this runner is gone" in out, out
        assert "Traceback" not in out
        with sqlite3.connect(instance / "hookline.db") as conn:
            assert conn.execute("SELECT status, lease_owner FROM runs").fetchall() == [("succeeded", None)]
        again = start_server(instance, port, "--runner-process", env=NO_POLLING)
        try:
            read_until(again, "Hookline worker", 30)  # its runner has claimed whatever was due
            post(port, token, 4)
            assert [r.json() for r in sink.wait_for(2, timeout=20)] == [{"n": 3}, {"n": 4}]
        finally:
            stop(again)


@pytest.fixture
def pg_url():
    yield from temp_database()


@pytest.mark.postgres
def test_on_postgres_the_runner_child_writes_itself(tmp_path, pg_url):
    """PostgreSQL takes concurrent writers: the child keeps its own writer there."""
    instance = tmp_path / "instance"
    instance.mkdir()
    (instance / "config.py").write_text(f"DATABASE_URL = {pg_url!r}\n")
    with serving_a_recipe(tmp_path) as (sink, server, port, token):
        out = read_until(server, "Hookline worker", 30)
        assert f"runner: in child process {runner_child(server)}" in out
        assert "writes through the web process" not in out
        for n in (1, 2):
            post(port, token, n)
        assert sorted(r.json()["n"] for r in sink.wait_for(2, timeout=20)) == [1, 2]
    assert server.returncode == 0
