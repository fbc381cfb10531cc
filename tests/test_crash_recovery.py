"""Kill the real server with SIGKILL in the middle of a batch; after a restart every
acknowledged event is delivered."""
from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import requests

from tests.sinks import HttpSink, Reply

HOOKLINE = [sys.executable, "-m", "web.cli"]
ROOT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(instance: Path, port: int, *args: str, env: dict[str, str] | None = None) -> subprocess.Popen:
    env = {**os.environ, "HOOKLINE_PORT": str(port), "HOOKLINE_OUTBOUND_ALLOWLIST": "127.0.0.0/8",
           "HOOKLINE_LEASE_SECONDS": "2", "HOOKLINE_POLL_INTERVAL": "0.2", "HOOKLINE_RUNNER_THREADS": "2",
           **(env or {})}
    proc = subprocess.Popen([*HOOKLINE, "serve", "--instance", str(instance), *args], cwd=ROOT, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        try:
            requests.get(f"http://127.0.0.1:{port}/hooks/none", timeout=1)
            return proc
        except requests.ConnectionError:
            if proc.poll() is not None:
                raise AssertionError(proc.stdout.read().decode())
            time.sleep(0.1)
    proc.kill()
    raise AssertionError("server did not start")


def write_recipe(instance: Path, sink_url: str, env: dict[str, str] | None = None) -> str:
    """Imports the one-step recipe the process tests deliver with (``env``: e.g. another database)."""
    recipe_file = instance.parent / "recipe.yaml"
    token = "crash-test-token-0123456789abcdef"
    recipe_file.write_text(f"""
recipes:
  - name: crash test
    token: {token}
    fields: [{{name: n, path: $.n}}]
    steps:
      - key: deliver
        action: http_request
        inputs: {{method: POST, url: "{sink_url}/in", body_type: json, body: '{{"n": {{{{ n }}}}}}'}}
""")
    subprocess.run([*HOOKLINE, "import", "--instance", str(instance), str(recipe_file)], cwd=ROOT,
                   env=env, check=True, capture_output=True)
    return token


def test_sigkill_mid_batch_loses_nothing(tmp_path):
    slow = Reply(200, "ok", delay=0.3)  # deliveries are in flight when the kill lands
    with HttpSink(lambda req: slow) as sink:
        instance = tmp_path / "instance"
        token = write_recipe(instance, sink.url)
        port = free_port()
        proc = start_server(instance, port)
        acked = []
        for n in range(20):
            r = requests.post(f"http://127.0.0.1:{port}/hooks/{token}", json={"n": n}, timeout=5)
            assert r.status_code == 202
            acked.append(n)
        sink.wait_for(2, timeout=10)
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
        delivered_before = len(sink.requests)
        assert delivered_before < 20, "the kill came too late to test anything"
        proc = start_server(instance, port)
        try:
            got = sink.wait_for(20, timeout=40)
            time.sleep(0.5)
            numbers = [r.json()["n"] for r in sink.requests]
            assert set(numbers) == set(acked)
            # Only runs in flight at the kill may arrive twice, and then with the same key.
            dupes = {n for n in numbers if numbers.count(n) > 1}
            assert len(dupes) <= 2  # at most one per runner thread was in flight
            for n in dupes:
                keys = {r.headers["Idempotency-Key"] for r in got if r.json()["n"] == n}
                assert len(keys) == 1
        finally:
            proc.send_signal(signal.SIGTERM)
            proc.wait(20)
