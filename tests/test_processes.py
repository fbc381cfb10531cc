"""The process layouts the README promises: ``serve --no-worker`` plus a separate ``worker``,
configuration from ``instance/config.py`` and ``HOOKLINE_*``, and a graceful SIGTERM."""
from __future__ import annotations

import os
import signal
import subprocess
import time

import pytest
import requests

from tests.sinks import HttpSink, Reply
from tests.test_crash_recovery import HOOKLINE, ROOT, free_port, start_server, write_recipe
from web.app import create_app


def test_web_without_worker_queues_and_a_separate_worker_delivers(tmp_path):
    with HttpSink() as sink:
        instance = tmp_path / "instance"
        token = write_recipe(instance, sink.url)
        port = free_port()
        web = start_server(instance, port, "--no-worker")
        worker = None
        try:
            r = requests.post(f"http://127.0.0.1:{port}/hooks/{token}", json={"n": 1}, timeout=5)
            assert r.status_code == 202
            time.sleep(1.0)
            assert sink.requests == []  # nobody runs it yet
            env = {**os.environ, "HOOKLINE_OUTBOUND_ALLOWLIST": "127.0.0.0/8", "HOOKLINE_POLL_INTERVAL": "0.2"}
            worker = subprocess.Popen([*HOOKLINE, "worker", "--instance", str(instance)], cwd=ROOT, env=env,
                                      stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
            assert sink.wait_for(1, timeout=20)[0].json() == {"n": 1}
            worker.send_signal(signal.SIGTERM)
            assert worker.wait(20) == 0
        finally:
            for proc in (web, worker):
                if proc is not None and proc.poll() is None:
                    proc.kill()
                    proc.wait(10)


def test_sigterm_stops_the_server_cleanly(tmp_path):
    instance = tmp_path / "instance"
    port = free_port()
    proc = start_server(instance, port)
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(30) == 0


def test_config_file_then_environment(tmp_path, monkeypatch):
    instance = tmp_path / "instance"
    instance.mkdir()
    (instance / "config.py").write_text('PUBLIC_URL = "https://hooks.example.com/"\nRUNNER_THREADS = 3\n'
                                        'MAX_BODY_BYTES = 2048\n')
    monkeypatch.setenv("HOOKLINE_RUNNER_THREADS", "5")
    monkeypatch.setenv("HOOKLINE_OUTBOUND_ALLOWLIST", "10.0.0.0/8, crm.internal")
    app = create_app(instance_path=str(instance))
    assert app.config["PUBLIC_URL"] == "https://hooks.example.com"
    assert app.config["RUNNER_THREADS"] == 5
    assert app.config["OUTBOUND_ALLOWLIST"] == ["10.0.0.0/8", "crm.internal"]
    assert app.config["MAX_CONTENT_LENGTH"] == 2048
    assert app.config["DATABASE_URL"] == f"sqlite:///{instance / 'hookline.db'}"
    secret = (instance / "secret_key").read_text().strip()
    assert app.config["SECRET_KEY"] == secret and len(secret) >= 40
    assert create_app(instance_path=str(instance)).config["SECRET_KEY"] == secret  # stable across starts


def test_sigterm_finishes_in_flight_runs_and_releases_the_rest(tmp_path):
    import sqlite3

    with HttpSink(lambda req: Reply(200, "ok", delay=1.0)) as sink:
        instance = tmp_path / "instance"
        token = write_recipe(instance, sink.url)
        port = free_port()
        proc = start_server(instance, port)  # 2 runner threads
        for n in range(6):
            assert requests.post(f"http://127.0.0.1:{port}/hooks/{token}", json={"n": n}, timeout=5).status_code == 202
        sink.wait_for(2, timeout=10)  # two deliveries are in flight, four wait
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(30) == 0
        db = sqlite3.connect(instance / "hookline.db")
        statuses = sorted(row[0] for row in db.execute("select status from runs"))
        attempts = {row[0] for row in db.execute("select attempt from runs where status = 'queued'")}
        db.close()
        assert statuses.count("running") == 0  # nothing left holding a lease
        assert statuses.count("succeeded") >= 2  # in-flight runs were allowed to finish
        assert set(statuses) <= {"succeeded", "queued"}
        assert attempts <= {0}  # released runs did not use up an attempt
        proc = start_server(instance, port)
        try:
            sink.wait_for(6, timeout=30)
            time.sleep(0.5)
            assert sorted(r.json()["n"] for r in sink.requests) == list(range(6))  # none twice
        finally:
            proc.send_signal(signal.SIGTERM)
            proc.wait(30)


def _statuses(instance):
    import sqlite3

    db = sqlite3.connect(instance / "hookline.db")
    try:
        return db.execute("select status, attempt from runs").fetchall()
    finally:
        db.close()


def _slow_first(delay: float):
    """A receiver whose first answer takes ``delay`` seconds, the rest none."""
    seen = []

    def handler(req):
        seen.append(req)
        return Reply(200, "ok", delay=delay if len(seen) == 1 else 0.0)
    return handler


@pytest.mark.parametrize("layout", [(), ("--no-runner-process",)], ids=["runner-child", "one-process"])
def test_shutdown_seconds_bounds_the_wait_and_a_run_still_in_flight_is_run_at_the_next_start(tmp_path, layout):
    """Reported: SIGTERM waited the full 30 s for a slow receiver (the orchestrator kills at
    10 s), and after the restart the run sat 'running' until its five-minute lease expired."""
    with HttpSink(_slow_first(8.0)) as sink:
        instance = tmp_path / "instance"
        token = write_recipe(instance, sink.url)
        port = free_port()
        env = {"HOOKLINE_SHUTDOWN_SECONDS": "1", "HOOKLINE_LEASE_SECONDS": "300"}
        proc = start_server(instance, port, *layout, env=env)
        try:
            assert requests.post(f"http://127.0.0.1:{port}/hooks/{token}", json={"n": 7}, timeout=5).status_code == 202
            sink.wait_for(1, timeout=10)  # the step is waiting on the receiver
            t0 = time.monotonic()
            proc.send_signal(signal.SIGTERM)
            assert proc.wait(30) == 0
            stopped_in = time.monotonic() - t0
            assert stopped_in < 6.0, stopped_in  # the receiver answers after 8 s
            assert _statuses(instance) == [("queued", 1)]  # not left 'running' under a live lease
            proc = start_server(instance, port, *layout, env=env)
            sink.wait_for(2, timeout=15)  # at once, not after LEASE_SECONDS
            deadline = time.monotonic() + 10
            while _statuses(instance) != [("succeeded", 2)] and time.monotonic() < deadline:
                time.sleep(0.1)
            assert _statuses(instance) == [("succeeded", 2)]
        finally:
            proc.send_signal(signal.SIGTERM)
            proc.wait(30)


@pytest.mark.parametrize("command, key, raw, expected", [
    ("serve", "PORT", "80a", "Error: HOOKLINE_PORT='80a': expected a whole number, like the default 8080"),
    ("worker", "SHUTDOWN_SECONDS", "ten",
     "Error: HOOKLINE_SHUTDOWN_SECONDS='ten': expected a number, like the default 20.0"),
])
def test_a_mistyped_setting_is_named_without_a_traceback(tmp_path, command, key, raw, expected):
    env = {**os.environ, f"HOOKLINE_{key}": raw}
    out = subprocess.run([*HOOKLINE, command, "--instance", str(tmp_path / "instance")], cwd=ROOT, env=env,
                         capture_output=True, text=True, timeout=60, check=False)
    assert out.returncode == 1
    assert out.stderr.strip() == expected and "Traceback" not in out.stdout + out.stderr


def test_a_yes_no_setting_refuses_other_words():
    from web.config import ConfigError, _coerce

    assert _coerce("X", "Yes", False) is True and _coerce("X", "off", True) is False
    with pytest.raises(ConfigError, match="HOOKLINE_X='maybe': expected one of 1, true, yes, on, 0, false"):
        _coerce("X", "maybe", False)


@pytest.mark.parametrize("raw, public_url, secure", [
    ("true", "http://hooks.example.com", True),     # behind a TLS-terminating proxy, as the README says
    ("no", "https://hooks.example.com", False),
    ("", "https://hooks.example.com", True),        # empty: from PUBLIC_URL
    ("", "http://hooks.example.com", False),
])
def test_secure_cookies_from_the_environment(tmp_path, monkeypatch, raw, public_url, secure):
    """A bug report: 'HOOKLINE_SECURE_COOKIES=true hookline serve' died with a TypeError."""
    monkeypatch.setenv("HOOKLINE_SECURE_COOKIES", raw)
    monkeypatch.setenv("HOOKLINE_PUBLIC_URL", public_url)
    app = create_app(instance_path=str(tmp_path / "instance"))
    assert app.config["SECURE_COOKIES"] is secure and app.config["SESSION_COOKIE_SECURE"] is secure


def test_a_mistyped_secure_cookies_is_named(tmp_path):
    env = {**os.environ, "HOOKLINE_SECURE_COOKIES": "sure"}
    out = subprocess.run([*HOOKLINE, "serve", "--instance", str(tmp_path / "instance")], cwd=ROOT, env=env,
                         capture_output=True, text=True, timeout=60, check=False)
    assert out.returncode == 1 and "Traceback" not in out.stdout + out.stderr
    assert out.stderr.strip().startswith("Error: HOOKLINE_SECURE_COOKIES='sure': expected one of 1, true, yes")
