"""The issue's yardstick, measured on this machine: a bare Flask app under gunicorn that only
inserts each request body into SQLite.

Issue 2 gives its speed targets for "these 2-core machines", where this app acknowledged
about 4,600 requests/s. Machines here differ by several times from one session to the next
(nested virtualisation, neighbours), so a figure from ``bench/e2e.py`` means little alone.
Run this right before or after it: the ratio e2e / baseline compares across machines, and
``4600 / baseline`` scales a figure to the issue's machine.

    python bench/baseline.py [--duration 10] [--connections 32] [--workers 2] [--threads 4] [--json]

Needs gunicorn (``pip install -e '.[bench]'``). Same load generator as e2e (bench/loadgen.py,
closed loop, keep-alive where the server allows it; gunicorn's sync workers close each
connection, its threaded workers keep them). Prints figures; asserts nothing.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH))
from e2e import free_port, http_get, proc_cpu_seconds, proc_status_kib

ISSUE_REFERENCE_ACKS = 4600.0  # issue 2: "a bare Flask app under gunicorn ... about 4,600/s"

APP = '''
import os, sqlite3, threading
from flask import Flask, request

app = Flask(__name__)
DB = os.environ["BASELINE_DB"]
_local = threading.local()


def db():
    conn = getattr(_local, "conn", None)
    if conn is None:
        conn = _local.conn = sqlite3.connect(DB, timeout=30, isolation_level=None)
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=NORMAL")
    return conn


@app.route("/hooks/<token>", methods=["POST"])
def hook(token):
    db().execute("INSERT INTO events (token, body) VALUES (?, ?)", (token, request.get_data()))
    return {"ok": True}, 202
'''


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--duration", type=float, default=10.0)
    ap.add_argument("--connections", type=int, default=32)
    ap.add_argument("--workers", type=int, default=2, help="gunicorn worker processes")
    ap.add_argument("--threads", type=int, default=4, help="threads per worker (1: sync workers)")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    if not 0 < args.duration <= 600 or not 0 < args.connections <= 1000:
        ap.error("--duration in (0, 600], --connections in [1, 1000]")
    gunicorn = shutil.which("gunicorn") or str(Path(sys.executable).with_name("gunicorn"))
    if not os.access(gunicorn, os.X_OK):
        ap.error("gunicorn is not installed: pip install -e '.[bench]'")
    work = Path(tempfile.mkdtemp(prefix="hookline-baseline-"))
    (work / "baseline_app.py").write_text(APP)
    db = work / "baseline.db"
    import sqlite3
    with sqlite3.connect(db) as conn:
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("CREATE TABLE events (id INTEGER PRIMARY KEY, token TEXT, body BLOB)")
    port = free_port()
    env = {**os.environ, "BASELINE_DB": str(db)}
    server = subprocess.Popen([gunicorn, "-w", str(args.workers), "--threads", str(args.threads), "-b",
                               f"127.0.0.1:{port}", "--log-level", "warning", "baseline_app:app"],
                              cwd=work, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                http_get(port, "/", timeout=2)
                break
            except OSError:
                if server.poll() is not None or time.monotonic() > deadline:
                    print("gunicorn did not start", file=sys.stderr)
                    return 2
                time.sleep(0.1)
        cpu0 = proc_cpu_seconds(server.pid)
        out = work / "load.json"
        subprocess.run([sys.executable, str(BENCH / "loadgen.py"), f"http://127.0.0.1:{port}/hooks/baseline",
                        "--duration", str(args.duration), "--connections", str(args.connections), "--out", str(out)],
                       check=True, timeout=args.duration + 120)
        cpu1 = proc_cpu_seconds(server.pid)
        rss = proc_status_kib(server.pid, "VmRSS")
        load = json.loads(out.read_text())
    finally:
        server.send_signal(signal.SIGTERM)
        try:
            server.wait(20)
        except subprocess.TimeoutExpired:
            server.kill()
        shutil.rmtree(work, ignore_errors=True)
    acks = load["acks_per_s"]
    result = {
        "server": f"gunicorn -w {args.workers} --threads {args.threads} (bare Flask app, one SQLite INSERT per request)",
        "duration_s": args.duration, "connections": args.connections,
        "acks": load["acks"], "acks_per_s": acks, "ack_ms": load["ack_ms"], "non_202": load["non_202"],
        "errors": load["errors"], "server_cpu_s": (cpu1 - cpu0) if cpu0 is not None and cpu1 is not None else None,
        "server_rss_mib_at_end": rss / 1024 if rss else None,
        "issue_reference_acks_per_s": ISSUE_REFERENCE_ACKS,
        "scale_to_issue_machine": ISSUE_REFERENCE_ACKS / acks if acks else None,
    }
    if args.json:
        print(json.dumps(result, indent=2))
        return 0
    ms = result["ack_ms"]
    print(f"Baseline (the issue's yardstick): {result['server']}")
    print(f"  {args.duration} s, {args.connections} connections")
    print(f"  acks {result['acks']:,}  {acks:,.1f}/s   ack ms p50 {ms['p50']:.2f}  p99 {ms['p99']:.2f}"
          f"   non-202 {result['non_202'] or 'none'}   errors {result['errors'] or 'none'}")
    print(f"  server CPU s {result['server_cpu_s']:.2f}, RSS at end {result['server_rss_mib_at_end']:.1f} MiB"
          " (all gunicorn processes)")
    if acks:
        speed = acks / ISSUE_REFERENCE_ACKS
        print(f"  the issue measured about {ISSUE_REFERENCE_ACKS:,.0f}/s: this machine runs this load at "
              f"{speed:.2f}x the issue's machine's speed; to compare e2e figures with the issue's targets, "
              f"multiply throughputs by {result['scale_to_issue_machine']:.2f} and divide latencies by it "
              "(roughly: not every part scales alike)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
