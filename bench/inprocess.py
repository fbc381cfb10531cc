"""CPU per webhook and per run, measured inside one process, without the HTTP server or the load
generator in the way. Run by hand from the checkout; prints figures, asserts nothing.

    python bench/inprocess.py ingest [--events 3000] [--threads 8]
    python bench/inprocess.py runner [--runs 3000] [--runner-threads 16]

``ingest``: the app's WSGI callable (inbound endpoint, parsing, the group-commit writer) is
called directly from N threads with ready-made environ dicts for the bench recipe's URL; no
runner. Prints process CPU per webhook and the CPU of the writer thread.

``runner``: N runs are stored first (in batches, outside the measurement), then a
:class:`~automations.runner.Runner` is started and timed until every run has succeeded,
each delivering to ``bench/sink.py`` on 127.0.0.1. Prints process CPU per run and the CPU
of the run threads, the writer and the dispatcher.

Both use a temporary instance folder (SQLite) and the same recipe as ``bench/e2e.py``.
``--profile FILE`` writes a cProfile of the measured part (``ingest``: the calling threads
only; cProfile sees one thread at a time, so prefer ``--threads 1`` with it).
"""
from __future__ import annotations

import argparse
import cProfile
import io
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(BENCH))
from e2e import TOKEN, free_port, write_recipe

CLK_TCK = os.sysconf("SC_CLK_TCK")


def thread_cpu() -> dict[str, float]:
    """CPU seconds of this process's live threads, summed by name (``hookline-run_3`` → ``hookline-run``)."""
    out: dict[str, float] = {}
    for t in threading.enumerate():
        try:
            stat = Path(f"/proc/self/task/{t.native_id}/stat").read_text()
        except (OSError, TypeError):
            continue
        fields = stat[stat.rindex(")") + 2:].split()
        name = t.name.rsplit("_", 1)[0]
        out[name] = out.get(name, 0.0) + (int(fields[11]) + int(fields[12])) / CLK_TCK
    return out


def build_app(work: Path, sink_url: str) -> Any:
    os.environ["HOOKLINE_OUTBOUND_ALLOWLIST"] = "127.0.0.0/8"
    from web.app import create_app

    instance = work / "instance"
    recipe = write_recipe(work, sink_url, None)
    subprocess.run([sys.executable, "-m", "web.cli", "import", "--instance", str(instance), str(recipe)],
                   cwd=ROOT, check=True, capture_output=True)
    return create_app(instance_path=str(instance))


def ingest(args: argparse.Namespace, work: Path) -> None:
    app = build_app(work, "http://127.0.0.1:9/unused")
    path = f"/hooks/{TOKEN}"
    statuses: dict[str, int] = {}

    def environ(n: int) -> dict[str, Any]:
        body = json.dumps({"t": time.time(), "n": n}).encode()
        return {"REQUEST_METHOD": "POST", "PATH_INFO": path, "QUERY_STRING": "", "SERVER_NAME": "127.0.0.1",
                "SERVER_PORT": "8080", "SERVER_PROTOCOL": "HTTP/1.1", "wsgi.url_scheme": "http",
                "wsgi.input": io.BytesIO(body), "CONTENT_LENGTH": str(len(body)), "CONTENT_TYPE": "application/json",
                "REMOTE_ADDR": "127.0.0.1", "HTTP_HOST": "127.0.0.1:8080", "HTTP_USER_AGENT": "bench",
                "HTTP_ACCEPT": "*/*", "wsgi.errors": sys.stderr, "wsgi.multithread": True,
                "wsgi.multiprocess": False, "wsgi.run_once": False, "wsgi.version": (1, 0),
                "wsgi.input_terminated": True}

    def start_response(status: str, _headers: list, _exc: Any = None) -> None:
        statuses[status] = statuses.get(status, 0) + 1

    def call(first: int) -> None:
        for n in range(first, args.events, args.threads):
            b"".join(app(environ(n), start_response))

    for n in range(50):  # warm-up: caches, statement compilation, the writer thread
        b"".join(app(environ(10**6 + n), start_response))
    statuses.clear()
    before = thread_cpu()
    profiler = cProfile.Profile() if args.profile else None
    c0, w0 = time.process_time(), time.perf_counter()
    if profiler:
        profiler.enable()
    threads = [threading.Thread(target=call, args=(k,)) for k in range(args.threads)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if profiler:
        profiler.disable()
        profiler.dump_stats(args.profile)
    c1, w1 = time.process_time(), time.perf_counter()
    writer = thread_cpu().get("hookline-writer", 0.0) - before.get("hookline-writer", 0.0)
    n = args.events
    print(f"ingest: {n} webhooks from {args.threads} threads, answers {statuses}")
    print(f"  CPU per webhook {1e6 * (c1 - c0) / n:.0f} us (of which the writer thread {1e6 * writer / n:.0f} us), "
          f"wall per webhook {1e6 * (w1 - w0) / n:.0f} us")
    app.extensions["hookline"].close()


def runner(args: argparse.Namespace, work: Path) -> None:
    port = free_port()
    sink = subprocess.Popen([sys.executable, str(BENCH / "sink.py"), "--port", str(port)],
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    try:
        if "listening on" not in (sink.stdout.readline().decode() if sink.stdout else ""):
            raise SystemExit("the sink did not start")
        if args.runner_threads:
            os.environ["HOOKLINE_RUNNER_THREADS"] = str(args.runner_threads)
        app = build_app(work, f"http://127.0.0.1:{port}/sink")
        _run_runner(app, args.runs, args.profile)
    finally:
        sink.kill()
        sink.wait(10)


def _run_runner(app: Any, n: int, profile: str | None) -> None:
    from sqlalchemy import func, select

    from automations import inbound
    from automations.models import Run
    from automations.runner import Runner
    from automations.writer import run_units

    core = app.extensions["hookline"]
    recipe_id = core.recipe_id_for_token(TOKEN)
    headers = {"host": "127.0.0.1:8080", "content-type": "application/json", "user-agent": "bench", "accept": "*/*"}
    units = []
    for i in range(n):
        req = inbound.InboundRequest("POST", "application/json", json.dumps({"t": time.time(), "n": i}).encode(),
                                     headers, {}, "127.0.0.1")
        now = core.clock.now()
        units.append(inbound.StoreUnit(core.definitions, recipe_id, TOKEN, req.headers,
                                       inbound.event_values(recipe_id, req, now), now))
    for k in range(0, n, 64):
        with core.engine.begin() as conn:
            run_units(conn, units[k:k + 64])
    pending = select(func.count()).select_from(Run).where(Run.status != "succeeded")
    before = thread_cpu()
    profiler = cProfile.Profile() if profile else None
    c0, w0 = time.process_time(), time.perf_counter()
    run = Runner(core).start()
    if profiler:
        profiler.enable()  # this thread only: it mostly waits; see --help
    deadline = w0 + 600
    while time.perf_counter() < deadline:
        with core.engine.connect() as conn:
            if conn.scalar(pending) == 0:
                break
        time.sleep(0.05)
    if profiler:
        profiler.disable()
        profiler.dump_stats(profile)
    c1, w1 = time.process_time(), time.perf_counter()
    after = thread_cpu()
    run.stop(10)
    per_thread = {k: after.get(k, 0.0) - before.get(k, 0.0) for k in after}
    print(f"runner: {n} runs with {run.threads} runner threads in {w1 - w0:.1f} s ({n / (w1 - w0):.0f} runs/s)")
    print(f"  CPU per run {1e6 * (c1 - c0) / n:.0f} us: " + ", ".join(
        f"{name} {1e6 * cpu / n:.0f} us" for name, cpu in sorted(per_thread.items(), key=lambda kv: -kv[1])
        if cpu * 1e6 / n >= 5))
    core.close()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="mode", required=True)
    i = sub.add_parser("ingest", help="CPU per webhook through the app (no HTTP server, no runner)")
    i.add_argument("--events", type=int, default=3000)
    i.add_argument("--threads", type=int, default=8)
    r = sub.add_parser("runner", help="CPU per run through the runner, delivering to bench/sink.py")
    r.add_argument("--runs", type=int, default=3000)
    r.add_argument("--runner-threads", type=int, default=None, help="default: the server default")
    for p in (i, r):
        p.add_argument("--profile", default=None, metavar="FILE", help="cProfile output (pstats format)")
    args = ap.parse_args()
    if getattr(args, "events", 1) < 1 or getattr(args, "runs", 1) < 1 or not 1 <= getattr(args, "threads", 1) <= 64:
        ap.error("--events/--runs at least 1, --threads in [1, 64]")
    with tempfile.TemporaryDirectory(prefix="hookline-inprocess-") as tmp:
        (ingest if args.mode == "ingest" else runner)(args, Path(tmp))
    return 0


if __name__ == "__main__":
    sys.exit(main())
