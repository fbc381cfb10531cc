"""End-to-end benchmark: inbound webhook → stored and acknowledged → delivered to a sink.

Run by hand from the project checkout (see bench/README.md); it prints figures and never
asserts:

    python bench/e2e.py [--duration 10] [--connections 32] [--rate R] [--runner-threads N] [--web-threads N]
                        [--fail-rate 0.3] [--with-secret] [--signed]
                        [--split | --runner-process | --in-process] [--json]
                        [--profile FILE]

1. a temporary instance folder (SQLite, the embedded default) and a recipe file: one recipe
   with a fixed token and one ``http_request`` step POSTing ``{"t": .., "n": ..}`` to the sink;
   imported with ``hookline import``;
2. the sink (bench/sink.py) in its own process;
3. the server started as the README says: ``hookline serve --instance DIR`` (its runner in a
   child process when the machine has two or more cores; ``--in-process``: ``serve
   --no-runner-process``, one process) with
   HOOKLINE_PORT, HOOKLINE_OUTBOUND_ALLOWLIST=127.0.0.0/8 (and the thread settings); with
   ``--split`` two processes on the same instance folder instead, ``hookline serve --no-worker``
   (web only) and ``hookline worker`` (runner only, HOOKLINE_POLL_INTERVAL=0.05 by default);
   with ``--runner-process``, ``hookline serve --runner-process`` (figures over its process tree,
   as whenever serve has a runner child);
4. a warm-up of a few events, then the load generator (bench/loadgen.py) in its own process
   for a fixed duration (closed loop, or with ``--rate`` open loop at R requests/s in all);
5. a bounded wait until the sink has every acknowledged event, then SIGTERM to the server
   (web first, then the worker) and the sink, and the figures.
"""
from __future__ import annotations

import argparse
import http.client
import json
import os
import platform
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
sys.path.insert(0, str(BENCH))
from httpio import github_signature, percentile

TOKEN = "bench-e2e-token-0123456789abcdefghijkl"  # fixed, 32+ URL-safe characters
BODY_TEMPLATE = '{"t": {{ t }}, "n": {{ n }}}'
CLK_TCK = os.sysconf("SC_CLK_TCK")
# --split: the worker notices the web process's runs only when it polls (default every 1 s)
SPLIT_POLL_INTERVAL = "0.05"


# --- small helpers ------------------------------------------------------------------------

def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def hookline_command(module: bool = False) -> list[str]:
    """The ``hookline`` console script next to this interpreter, else ``python -m web.cli``."""
    script = Path(sys.executable).with_name("hookline")
    if not module and script.exists() and os.access(script, os.X_OK):
        return [str(script)]
    return [sys.executable, "-m", "web.cli"]


def http_get(port: int, path: str, timeout: float = 5.0) -> tuple[int, bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request("GET", path)
        resp = conn.getresponse()
        return resp.status, resp.read()
    finally:
        conn.close()


def http_post_json(port: int, path: str, data: Any, timeout: float = 10.0,
                   github_secret: str | None = None) -> tuple[int, bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    body = json.dumps(data).encode()
    headers = {"Content-Type": "application/json"}
    if github_secret:
        headers["X-Hub-Signature-256"] = github_signature(github_secret, body)
    try:
        conn.request("POST", path, body=body, headers=headers)
        resp = conn.getresponse()
        return resp.status, resp.read()
    finally:
        conn.close()


def sink_stats(port: int, full: bool = False) -> dict[str, Any]:
    status, body = http_get(port, "/__stats?full=1" if full else "/__stats", timeout=30)
    if status != 200:
        raise RuntimeError(f"sink stats: HTTP {status}")
    return json.loads(body)


def proc_tree(pid: int) -> list[int]:
    """``pid`` and its descendants (``serve --runner-process`` has a child runner process)."""
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        for task in Path(f"/proc/{p}/task").glob("*"):  # each thread lists the children it started
            try:
                todo.extend(int(c) for c in (task / "children").read_text().split())
            except (OSError, ValueError):
                pass
    return out


def proc_cpu_seconds(pid: int) -> float | None:
    """CPU seconds of the process and its live descendants."""
    total = None
    for p in proc_tree(pid):
        try:
            stat = Path(f"/proc/{p}/stat").read_text()
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2:].split()
        total = (total or 0.0) + (int(fields[11]) + int(fields[12])) / CLK_TCK  # utime, stime (14, 15)
    return total


def _proc_sum(pid: int, file: str, key: str) -> int | None:
    """The ``key:`` figure of ``/proc/PID/<file>`` (KiB, or a count), summed over the process
    and its descendants; None when no process had it."""
    total = None
    for p in proc_tree(pid):
        try:
            for line in Path(f"/proc/{p}/{file}").read_text().splitlines():
                if line.startswith(key + ":"):
                    total = (total or 0) + int(line.split()[1])
                    break
        except OSError:
            continue
    return total


def proc_status_kib(pid: int, key: str) -> int | None:
    """A /proc/PID/status figure in KiB (or count), summed over the process and its descendants."""
    return _proc_sum(pid, "status", key)


def proc_pss_kib(pid: int) -> int | None:
    """Proportional set size of the process and its descendants: pages shared between them
    (the interpreter, shared libraries) are counted once in total, not once per process."""
    return _proc_sum(pid, "smaps_rollup", "Pss")


def proc_threads(pid: int) -> int | None:
    return proc_status_kib(pid, "Threads")


def tail(path: Path, lines: int = 40) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


def stop_process(proc: subprocess.Popen, timeout: float) -> int | None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)
    return proc.returncode


def read_first_line(proc: subprocess.Popen, timeout: float) -> str:
    import selectors

    sel = selectors.DefaultSelector()
    sel.register(proc.stdout, selectors.EVENT_READ)
    try:
        if not sel.select(timeout):
            raise RuntimeError("no output in time")
        return proc.stdout.readline().decode().strip()
    finally:
        sel.close()


class Abort(Exception):
    """The benchmark could not run; the message says why (printed, not raised further)."""


# --- the hookline processes -----------------------------------------------------------------

@dataclass
class Hookline:
    """One ``hookline`` process of the benchmark and its ``/proc`` samples.

    ``name`` is ``server`` (the embedded default, web + runner), ``web`` (``serve --no-worker``)
    or ``worker``; ``args`` is the subcommand after ``hookline``, without ``--instance DIR``.
    """

    name: str
    args: list[str]
    log: Path
    lockstats: Path | None = None
    proc: subprocess.Popen | None = None
    cpu0: float | None = None
    cpu_load_end: float | None = None
    cpu_end: float | None = None
    threads_at_load_end: int | None = None
    hwm_kib: int | None = None
    rss_kib: int | None = None
    pss_kib: int | None = None  # the larger of the samples at load end and when drained
    processes_at_load_end: int | None = None  # 2: serve ran its runner in a child process
    exit_code: int | None = None

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def command(self, hookline: list[str]) -> str:
        return " ".join([*hookline, *self.args, "--instance", "DIR"])

    def exited(self) -> bool:
        return self.proc is not None and self.proc.poll() is not None

    def sample_load_start(self) -> None:
        self.cpu0 = proc_cpu_seconds(self.pid)

    def sample_load_end(self) -> None:
        self.cpu_load_end = proc_cpu_seconds(self.pid)
        self.pss_kib = proc_pss_kib(self.pid)
        self.threads_at_load_end = proc_threads(self.pid)
        self.processes_at_load_end = len(proc_tree(self.pid))

    def sample_drained(self) -> None:
        self.cpu_end = proc_cpu_seconds(self.pid)
        self.hwm_kib = proc_status_kib(self.pid, "VmHWM")
        self.rss_kib = proc_status_kib(self.pid, "VmRSS")
        self.pss_kib = max(filter(None, [self.pss_kib, proc_pss_kib(self.pid)]), default=None)


def start_hookline(h: Hookline, hookline: list[str], instance: Path, env: dict[str, str],
                   lock_probe: bool) -> subprocess.Popen:
    proc_env = dict(env)
    if lock_probe and h.lockstats is not None:
        proc_env["PYTHONPATH"] = os.pathsep.join(
            [str(BENCH / "lockprobe"), *filter(None, [env.get("PYTHONPATH")])])
        proc_env["HOOKLINE_BENCH_LOCKSTATS"] = str(h.lockstats)
    with open(h.log, "wb") as log_fh:  # the child keeps its own copy of the descriptor
        h.proc = subprocess.Popen([*hookline, *h.args, "--instance", str(instance)], cwd=ROOT,
                                  env=proc_env, stdout=log_fh, stderr=subprocess.STDOUT)
    return h.proc


def wait_http(h: Hookline, port: int, timeout: float) -> None:
    """Until the web process answers HTTP on ``port`` (any status), at most ``timeout`` s."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            http_get(port, "/hooks/none", timeout=2)
            return
        except OSError:
            if h.exited():
                raise Abort(f"{h.name} exited with {h.proc.returncode}:\n{tail(h.log)}") from None
            if time.monotonic() > deadline:
                raise Abort(f"{h.name} did not answer within {timeout:.0f} s:\n{tail(h.log)}") from None
            time.sleep(0.1)


def wait_log(h: Hookline, needle: str, timeout: float) -> None:
    """Until ``needle`` appears in the process's log, at most ``timeout`` s."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            if needle in h.log.read_text(errors="replace"):
                return
        except OSError:
            pass
        if h.exited():
            raise Abort(f"{h.name} exited with {h.proc.returncode}:\n{tail(h.log)}")
        if time.monotonic() > deadline:
            raise Abort(f"{h.name} did not log {needle!r} within {timeout:.0f} s:\n{tail(h.log)}")
        time.sleep(0.1)


def log_tails(hls: list[Hookline], lines: int) -> str:
    if len(hls) == 1:
        return tail(hls[0].log, lines)
    return "\n".join(f"--- {h.name} log:\n{tail(h.log, lines)}" for h in hls)


def process_figures(h: Hookline, hookline: list[str], with_probe: bool) -> dict[str, Any]:
    """The figures of one process, with the keys of the ``server`` figures (plus name, command)."""
    log_text = h.log.read_text(errors="replace") if h.log.exists() else ""
    figures: dict[str, Any] = {
        "name": h.name,
        "command": h.command(hookline),
        "pid": h.proc.pid if h.proc is not None else None,
        "peak_rss_mib": h.hwm_kib / 1024 if h.hwm_kib else None,
        "rss_at_end_mib": h.rss_kib / 1024 if h.rss_kib else None,
        "pss_mib": h.pss_kib / 1024 if h.pss_kib else None,
        "cpu_s_load": _delta(h.cpu0, h.cpu_load_end),
        "cpu_s_total": _delta(h.cpu0, h.cpu_end),
        "threads": h.threads_at_load_end,
        "exit_code": h.exit_code,
        "log_errors": sum(1 for ln in log_text.splitlines()
                          if (" ERROR " in ln or " WARNING " in ln) and "Task queue depth" not in ln),
        "waitress_queue_warnings": log_text.count("Task queue depth"),
        "log_tracebacks": log_text.count("Traceback"),
    }
    if with_probe and h.lockstats is not None:
        try:
            figures["write_lock"] = json.loads(h.lockstats.read_text())
        except (OSError, ValueError) as exc:
            figures["write_lock"] = {"error": f"no lock statistics ({exc})"}
    if figures["log_errors"] or h.exit_code not in (0, None):
        figures["log_tail"] = tail(h.log, 15)
    return figures


def _delta(start: float | None, end: float | None) -> float | None:
    return end - start if start is not None and end is not None else None


def _sum(values: list[Any]) -> Any:
    """The sum, or None if any value is missing (a partial sum would look like a real figure)."""
    return None if any(v is None for v in values) else sum(values)


def server_figures(processes: list[dict[str, Any]]) -> dict[str, Any]:
    """The ``server`` figures: those of the one process, or in split mode the sums over the
    processes (peak RSS: the sum of each process's peak; exit code: the first non-zero one)."""
    if len(processes) == 1:
        return {k: v for k, v in processes[0].items() if k not in ("name", "command", "pid", "write_lock")}
    summed = ("peak_rss_mib", "rss_at_end_mib", "pss_mib", "cpu_s_load", "cpu_s_total", "threads",
              "log_errors", "waitress_queue_warnings", "log_tracebacks")
    figures: dict[str, Any] = {k: _sum([p[k] for p in processes]) for k in summed}
    codes = [p["exit_code"] for p in processes]
    figures["exit_code"] = next((c for c in codes if c not in (0, None)), None if None in codes else 0)
    return figures


# --- the benchmark ------------------------------------------------------------------------

SECRET_CONNECTION = "bench bearer token"
SIGNING_CONNECTION = "bench signing secret"
SIGNING_SECRET = "bench-github-webhook-secret"
# Creates a connection in the instance, as the UI would: its secrets are encrypted at rest, so
# every use decrypts them (and the process using them loads cryptography, about 7 MiB).
# Arguments: instance folder, name, kind, the credentials as JSON.
_CREATE_CONNECTION = """
import json, sys
from automations import connections
from web.app import create_app
from web.extensions import db
app = create_app(instance_path=sys.argv[1])
with app.app_context():
    connections.create(db.session, app.extensions["hookline"].secret_box, sys.argv[2], sys.argv[3],
                       json.loads(sys.argv[4]))
"""


def write_recipe(folder: Path, sink_url: str, retry_schedule: list[float] | None,
                 connection: str | None = None, signing_connection: str | None = None) -> Path:
    recipe: dict[str, Any] = {
        "name": "bench e2e",
        "token": TOKEN,
        "fields": [{"name": "t", "path": "$.t"}, {"name": "n", "path": "$.n"}],
        "steps": [{
            "key": "deliver",
            "action": "http_request",
            "inputs": {"method": "POST", "url": f"{sink_url}/in", "body_type": "json", "body": BODY_TEMPLATE},
        }],
    }
    recipe["settings"] = {}
    if retry_schedule:
        recipe["settings"]["retry"] = {"schedule": retry_schedule, "max_attempts": 50}
    if signing_connection:
        recipe["settings"]["verify"] = {"preset": "github", "connection": signing_connection}
    if connection:
        recipe["steps"][0]["connection"] = connection
    path = folder / "recipe.json"  # JSON is YAML: the import reads either
    path.write_text(json.dumps({"hookline": 1, "recipes": [recipe]}, indent=2))
    return path


def plan_processes(work: Path, split: bool, runner_process: bool | None = None) -> list[Hookline]:
    """What to start: ``serve`` as the README does (``runner_process`` None: its default, a
    runner child process with two or more cores; True: ``--runner-process``; False:
    ``--no-runner-process``, web and runner in one process; a child's figures are counted
    with its parent), or in split mode ``serve --no-worker`` and ``worker`` against the same
    instance folder. The web process comes first."""
    if not split:
        flag = {None: [], True: ["--runner-process"], False: ["--no-runner-process"]}[runner_process]
        return [Hookline("server", ["serve", *flag], work / "server.log", work / "lockstats.json")]
    return [Hookline("web", ["serve", "--no-worker"], work / "web.log", work / "lockstats-web.json"),
            Hookline("worker", ["worker"], work / "worker.log", work / "lockstats-worker.json")]


def server_env(args: argparse.Namespace, port: int) -> dict[str, str]:
    """The environment of the hookline processes (the same for all of them)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("HOOKLINE_")}
    env.update({"HOOKLINE_PORT": str(port), "HOOKLINE_OUTBOUND_ALLOWLIST": "127.0.0.0/8"})
    if args.split:  # the worker sees runs of the web process only when it polls (see README)
        env["HOOKLINE_POLL_INTERVAL"] = SPLIT_POLL_INTERVAL
    if args.runner_threads:
        env["HOOKLINE_RUNNER_THREADS"] = str(args.runner_threads)
    if args.web_threads:
        env["HOOKLINE_WEB_THREADS"] = str(args.web_threads)
    for item in args.env:
        key, _, value = item.partition("=")
        env[key] = value
    return env


def run(args: argparse.Namespace) -> dict[str, Any]:
    work = Path(tempfile.mkdtemp(prefix="hookline-bench-"))
    instance = work / "instance"
    instance.mkdir()
    hookline = hookline_command(args.module)
    hls = plan_processes(work, args.split, args.runner_process)
    web, runner_side = hls[0], hls[-1]  # the same process unless split
    procs: list[subprocess.Popen] = []
    result: dict[str, Any] = {"work_dir": str(work)}
    port = free_port()
    env = server_env(args, port)
    sink = None
    try:
        # 1. the sink, in its own process
        sink_cmd = [sys.executable, str(BENCH / "sink.py"), "--port", "0", "--fail-rate", str(args.fail_rate),
                    "--stats-file", str(work / "sink-final.json"),
                    "--max-lifetime", str(args.duration + args.drain_timeout + 600)]
        sink = subprocess.Popen(sink_cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        procs.append(sink)
        line = read_first_line(sink, 10)
        if "listening on" not in line:
            raise Abort(f"sink did not start: {line!r}")
        sink_url = line.rsplit(" ", 1)[-1]
        sink_port = int(sink_url.rsplit(":", 1)[-1])

        # 2. the recipe, imported with the CLI
        schedule = [float(x) for x in args.retry_schedule.split(",")] if args.retry_schedule else (
            [1.0, 2.0, 4.0] if args.fail_rate else None)
        wanted = ([(SECRET_CONNECTION, "http_auth", {"scheme": "bearer", "token": "bench-secret-token"})]
                  if args.with_secret else []) + (
                  [(SIGNING_CONNECTION, "signing_secret", {"secret": SIGNING_SECRET})] if args.signed else [])
        for name, kind, credentials in wanted:
            made = subprocess.run([sys.executable, "-c", _CREATE_CONNECTION, str(instance), name, kind,
                                   json.dumps(credentials)],
                                  cwd=ROOT, env=env, capture_output=True, text=True, timeout=120, check=False)
            if made.returncode != 0:
                raise Abort(f"creating the connection {name!r} failed:\n{made.stdout}{made.stderr}")
        signing_secret = SIGNING_SECRET if args.signed else None
        recipe_file = write_recipe(work, sink_url, schedule, SECRET_CONNECTION if args.with_secret else None,
                                   SIGNING_CONNECTION if args.signed else None)
        imp = subprocess.run([*hookline, "import", "--instance", str(instance), str(recipe_file)], cwd=ROOT,
                             env=env, capture_output=True, text=True, timeout=120, check=False)
        if imp.returncode != 0:
            raise Abort(f"import failed (exit {imp.returncode}):\n{imp.stdout}{imp.stderr}")

        # 3. the server, as the README starts it: one process, or web then worker (split)
        procs.append(start_hookline(web, hookline, instance, env, args.lock_probe))
        wait_http(web, port, 60)
        if runner_side is not web:
            procs.append(start_hookline(runner_side, hookline, instance, env, args.lock_probe))
            wait_log(runner_side, "Hookline worker ", 60)  # printed once its runner has started
        hook_path = f"/hooks/{TOKEN}"

        # 4a. warm-up: a few events end to end, then forget them at the sink
        warm = args.warmup
        for i in range(warm):
            status, body = http_post_json(port, hook_path, {"t": time.time(), "n": -1 - i},
                                          github_secret=signing_secret)
            if status != 202:
                raise Abort(f"warm-up request answered {status}: {body[:500]!r}\n{tail(web.log)}")
        deadline = time.monotonic() + 30
        while warm and time.monotonic() < deadline and sink_stats(sink_port)["unique"] < warm:
            time.sleep(0.05)
        warm_delivered = sink_stats(sink_port)["unique"] if warm else 0
        if warm and warm_delivered < warm:
            print(f"warning: only {warm_delivered}/{warm} warm-up events delivered in 30 s; "
                  f"server log tail:\n{log_tails(hls, 20)}", file=sys.stderr)
        http_get(sink_port, "/__reset")

        # 4b. the load, in its own process (optionally profiled with py-spy)
        for h in hls:
            h.sample_load_start()
        load_out = work / "load.json"
        load = subprocess.Popen([sys.executable, str(BENCH / "loadgen.py"), f"http://127.0.0.1:{port}{hook_path}",
                                 "--duration", str(args.duration), "--connections", str(args.connections),
                                 "--out", str(load_out), "--full",
                                 *(["--rate", str(args.rate)] if args.rate else []),
                                 *(["--github-secret", signing_secret] if signing_secret else [])])
        procs.append(load)
        profiler = None
        if args.profile:
            pyspy = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
            fmt = args.profile_format
            profiler = subprocess.Popen([pyspy, "record", "--pid", str(web.pid), "--duration",
                                         str(max(1, int(args.duration) - 1)), "--rate", "100", "--format", fmt,
                                         "--output", args.profile, "--nonblocking", *args.profile_arg],
                                        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        try:
            load.wait(args.duration + 90)
        except subprocess.TimeoutExpired:
            load.kill()
            raise Abort("load generator did not stop in time") from None
        for h in hls:
            h.sample_load_end()
        if load.returncode != 0 or not load_out.exists():
            raise Abort(f"load generator failed (exit {load.returncode})")
        lg = json.loads(load_out.read_text())
        acked = set(lg.pop("acked_n"))
        lg.pop("unanswered_n", None)

        # 5. wait (bounded) until the sink has every acknowledged event
        wait_start = time.monotonic()
        deadline = wait_start + args.drain_timeout
        missing: set[int] = set(acked)
        full: dict[str, Any] = {}
        while True:
            brief = sink_stats(sink_port)
            if brief["unique"] >= len(acked) or time.monotonic() >= deadline:
                full = sink_stats(sink_port, full=True)
                missing = acked - {e[0] for e in full["events"]}
                if not missing or time.monotonic() >= deadline:
                    break
            if any(h.exited() for h in hls):
                full = sink_stats(sink_port, full=True)
                missing = acked - {e[0] for e in full["events"]}
                break
            time.sleep(0.2)
        waited = time.monotonic() - wait_start
        for h in hls:
            h.sample_drained()
        if profiler is not None:
            try:
                _, err = profiler.communicate(timeout=60)
                if profiler.returncode != 0:
                    print(f"py-spy failed: {err.decode(errors='replace')[-2000:]}", file=sys.stderr)
            except subprocess.TimeoutExpired:
                profiler.kill()

        # stop everything: the web process first, then the runner (it may still be
        # delivering; in split mode the worker), then the sink
        for h in hls:
            h.exit_code = stop_process(h.proc, 45)
        stop_process(sink, 10)

        # --- figures --------------------------------------------------------------------
        events = [e for e in full.get("events", []) if e[0] >= 0]
        arrivals = sorted(e[1] for e in events)
        delays = sorted((e[1] - e[2]) * 1000.0 for e in events)
        window = lg["window_s"]
        in_window = sum(1 for a in arrivals if a <= lg["end"])
        first_arr = arrivals[0] if arrivals else None
        last_arr = arrivals[-1] if arrivals else None
        span = (last_arr - first_arr) if arrivals and len(arrivals) > 1 else None
        processes = [process_figures(h, hookline, args.lock_probe) for h in hls]
        result.update({
            "config": {
                "duration_s": args.duration,
                "connections": args.connections,
                "rate": args.rate,
                "runner_threads": args.runner_threads or "default",
                "web_threads": args.web_threads or "default",
                "fail_rate": args.fail_rate,
                "with_secret": args.with_secret,
                "signed": args.signed,
                "retry_schedule": schedule,
                "extra_env": args.env,
                "split": args.split,
                "runner_process": not args.split and (hls[0].processes_at_load_end or 1) > 1,
                "poll_interval": env.get("HOOKLINE_POLL_INTERVAL", "default"),
                "python": platform.python_version(),
                "sqlite": sqlite3.sqlite_version,
                "cpus": os.cpu_count(),
                "machine": _cpu_model(),
                "command": " + ".join(h.command(hookline) for h in hls),
            },
            "acks": {
                "count": lg["acks"],
                "per_s": lg["acks_per_s"],
                "latency_ms": lg["ack_ms"],
                "service_ms": lg.get("service_ms"),
                "non_202": lg["non_202"],
                "errors": lg["errors"],
                "unanswered": lg["unanswered"],
                "each_second": lg["acks_each_second"],
                "p99_ms_each_second": lg.get("ack_p99_ms_each_second"),
            },
            "deliveries": {
                "count": full.get("count"),
                "unique": len(events),
                "duplicates": (full.get("count") or 0) - (full.get("unique") or 0),
                "missing_acked": len(missing),
                "failed_503_answers": full.get("failed_503"),
                "bad_bodies": full.get("bad_body"),
                "delivered_during_load": in_window,
                "backlog_at_load_end": len(acked) - in_window,
                "per_s_load_window": in_window / window if window else None,
                "per_s_first_to_last": (len(events) - 1) / span if span else None,
                "per_s_load_start_to_last": len(events) / (last_arr - lg["start"]) if arrivals else None,
                "delay_ms": {"p50": percentile(delays, 50), "p90": percentile(delays, 90),
                             "p99": percentile(delays, 99), "max": delays[-1] if delays else None},
                "drain_s": max(0.0, last_arr - lg["end"]) if arrivals else None,
                "waited_s": waited,
                "sink_connections": full.get("connections"),
            },
            "server": server_figures(processes),
            "processes": processes,
            "helpers_cpu_s": {"loadgen": lg.get("cpu_s"), "sink": full.get("cpu_s")},
        })
        if args.lock_probe and not args.split:  # split mode: per process, under "processes"
            result["write_lock"] = processes[0]["write_lock"]
        return result
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait(10)
        if args.keep:
            print(f"kept {work}", file=sys.stderr)
        else:
            shutil.rmtree(work, ignore_errors=True)


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


# --- output -------------------------------------------------------------------------------

def _f(value: Any, digits: int = 1) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:,.{digits}f}"
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)


def print_text(r: dict[str, Any]) -> None:
    c, a, d, s = r["config"], r["acks"], r["deliveries"], r["server"]
    lat, dl = a["latency_ms"], d["delay_ms"]
    print(f"Hookline end-to-end benchmark: {c['duration_s']} s, {c['connections']} connections, "
          + (f"open loop at {_f(c['rate'])} requests/s offered, " if c.get("rate") else "")
          + f"runner threads {c['runner_threads']}, web threads {c['web_threads']}"
          + (f", sink fail rate {c['fail_rate']}" if c["fail_rate"] else "")
          + (", the step authenticates with a connection" if c.get("with_secret") else "")
          + (", every webhook signed (GitHub HMAC) and verified" if c.get("signed") else "")
          + (f", split (web + worker), poll interval {c['poll_interval']} s" if c.get("split") else "")
          + (", runner in a child process (figures: both processes)" if c.get("runner_process") else ""))
    print(f"  python {c['python']}, sqlite {c['sqlite']}, {c['cpus']} CPUs ({c['machine']})")
    print(f"  server: {c['command']}" + (f"  env: {' '.join(c['extra_env'])}" if c["extra_env"] else ""))
    print("acks")
    print(f"  count {_f(a['count'])}   {_f(a['per_s'])} acks/s")
    print(f"  latency ms: p50 {_f(lat['p50'], 2)}  p90 {_f(lat['p90'], 2)}  p99 {_f(lat['p99'], 2)}  "
          f"max {_f(lat['max'], 2)}" + ("  (from when each request was due)" if c.get("rate") else ""))
    if c.get("rate"):
        sv = a["service_ms"]
        print(f"  from when each request left: p50 {_f(sv['p50'], 2)}  p99 {_f(sv['p99'], 2)}")
    if a.get("p99_ms_each_second"):  # one bad second, or a tail spread over the run?
        print("  p99 ms by second (when due): " + " ".join(_f(x, 1) for x in a["p99_ms_each_second"]))
    non = ", ".join(f"{k}: {v}" for k, v in sorted(a["non_202"].items())) or "none"
    errs = ", ".join(f"{k}: {v}" for k, v in sorted(a["errors"].items())) or "none"
    print(f"  non-202: {non}   connection errors: {errs}   unanswered: {a['unanswered']}")
    if a["non_202"].get("429") or a["non_202"].get(429):
        print("  (429: more than the per-URL INBOUND_RATE, 1,000/s by default, reached the one URL; "
              "--env HOOKLINE_INBOUND_RATE=0 measures what the server itself takes)")
    print("deliveries")
    print(f"  count {_f(d['count'])}  unique {_f(d['unique'])}  duplicates {_f(d['duplicates'])}  "
          f"missing (acked, never delivered) {_f(d['missing_acked'])}"
          + (f"  503 answers {_f(d['failed_503_answers'])}" if d["failed_503_answers"] else ""))
    print(f"  per s: load window {_f(d['per_s_load_window'])}   first→last arrival "
          f"{_f(d['per_s_first_to_last'])}   load start→last arrival {_f(d['per_s_load_start_to_last'])}")
    print(f"  delivered during load {_f(d['delivered_during_load'])}, backlog at load end "
          f"{_f(d['backlog_at_load_end'])}, drain after load {_f(d['drain_s'], 2)} s")
    print(f"  delay send→arrival ms: p50 {_f(dl['p50'])}  p90 {_f(dl['p90'])}  p99 {_f(dl['p99'])}  "
          f"max {_f(dl['max'])}")
    processes = r.get("processes") or []
    split = len(processes) > 1
    print("server" + (f" (sums over {len(processes)} processes)" if split else ""))
    print(f"  peak RSS {_f(s['peak_rss_mib'])} MiB (at end {_f(s['rss_at_end_mib'])} MiB), "
          f"PSS {_f(s.get('pss_mib'))} MiB (shared pages counted once), threads {s['threads']}")
    print(f"  CPU s: during load {_f(s['cpu_s_load'], 2)}, load + drain {_f(s['cpu_s_total'], 2)}  "
          f"(loadgen {_f(r['helpers_cpu_s']['loadgen'], 2)}, sink {_f(r['helpers_cpu_s']['sink'], 2)})")
    print(f"  exit code {s['exit_code']}, log warnings/errors {s['log_errors']}, tracebacks {s['log_tracebacks']}, "
          f"waitress 'Task queue depth' warnings {s['waitress_queue_warnings']}")
    if split:
        for p in processes:
            print(f"  {p['name']:6}  peak RSS {_f(p['peak_rss_mib'])} MiB, threads {p['threads']}, "
                  f"CPU s: during load {_f(p['cpu_s_load'], 2)}, load + drain {_f(p['cpu_s_total'], 2)}, "
                  f"exit code {p['exit_code']}, log warnings/errors {p['log_errors']}, "
                  f"tracebacks {p['log_tracebacks']}")
        for p in processes:
            print_write_lock(p.get("write_lock"), f"{p['name']} process")
    else:
        print_write_lock(r.get("write_lock"), "server")
    for p in processes if split else [{"name": "server", **s}]:
        if p.get("log_tail"):
            print(f"  {p['name']} log tail:\n    " + p["log_tail"].replace("\n", "\n    "))


def print_write_lock(wl: dict[str, Any] | None, whose: str) -> None:
    if wl and "callers" in wl:
        rows = sorted(wl["callers"].items(), key=lambda kv: -kv[1]["hold_s"])
        held = sum(v["hold_s"] for _, v in rows)
        print(f"SQLite write lock (automations/db.py), over {wl['elapsed_s']:.1f} s of {whose} life: "
              f"held {held:.2f} s in total")
        print(f"  {'taken by (first project frame)':50} {'count':>6} {'held s':>7} {'mean ms':>8} "
              f"{'max ms':>7} {'CPU s held':>10} {'waited s':>9}")
        for caller, v in rows[:12]:
            print(f"  {caller[:50]:50} {v['count']:6d} {v['hold_s']:7.2f} {v['mean_hold_ms']:8.2f} "
                  f"{v['max_hold_ms']:7.1f} {v.get('cpu_while_held_s', 0):10.2f} {v['wait_s']:9.1f}")
    elif wl:
        print(f"SQLite write lock ({whose}): {wl.get('error')}")

def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--duration", type=float, default=10.0, help="seconds of load (default 10)")
    ap.add_argument("--connections", type=int, default=32, help="concurrent keep-alive connections (default 32)")
    ap.add_argument("--rate", type=float, default=None,
                    help="open loop: webhooks per second offered in all (default: closed loop, back to back)")
    ap.add_argument("--runner-threads", type=int, default=None, help="HOOKLINE_RUNNER_THREADS (default: server's)")
    ap.add_argument("--web-threads", type=int, default=None, help="HOOKLINE_WEB_THREADS (default: server's)")
    ap.add_argument("--fail-rate", type=float, default=0.0, help="fraction of deliveries the sink answers 503")
    ap.add_argument("--with-secret", action="store_true",
                    help="the step authenticates with a connection (a bearer token encrypted at rest), as "
                         "most real recipes do: every run decrypts it")
    ap.add_argument("--signed", action="store_true",
                    help="the recipe verifies signatures (GitHub preset, its secret in a connection) and the "
                         "load generator signs every body")
    ap.add_argument("--retry-schedule", default=None,
                    help="recipe retry schedule, seconds, comma-separated (default with --fail-rate: 1,2,4)")
    ap.add_argument("--drain-timeout", type=float, default=120.0, help="max seconds to wait for deliveries")
    ap.add_argument("--warmup", type=int, default=5, help="events sent and delivered before the load")
    ap.add_argument("--env", action="append", default=[], metavar="KEY=VALUE",
                    help="extra environment for the server, e.g. HOOKLINE_DATABASE_URL=... (repeatable)")
    ap.add_argument("--split", action="store_true",
                    help="two processes on the same instance: `hookline serve --no-worker` (web) and "
                         f"`hookline worker` (runner; HOOKLINE_POLL_INTERVAL={SPLIT_POLL_INTERVAL} "
                         "unless --env sets it)")
    layout = ap.add_mutually_exclusive_group()
    layout.add_argument("--runner-process", dest="runner_process", action="store_true", default=None,
                        help="`hookline serve --runner-process`: the runner in a child process that serve "
                             "supervises (the default with two or more cores; server figures cover both)")
    layout.add_argument("--in-process", dest="runner_process", action="store_false",
                        help="`hookline serve --no-runner-process`: web and runner threads in one process")
    ap.add_argument("--profile", default=None, metavar="FILE",
                    help="py-spy record the server during the load (single process only)")
    ap.add_argument("--profile-format", default="raw", choices=["raw", "flamegraph", "speedscope"])
    ap.add_argument("--profile-arg", action="append", default=[], help="extra py-spy argument, e.g. --profile-arg=--idle")
    ap.add_argument("--module", action="store_true",
                    help="start the server as `python -m web.cli` from this checkout, not the `hookline` script")
    ap.add_argument("--lock-probe", action="store_true",
                    help="diagnostic: time who holds the in-process SQLite write lock (bench/lockprobe)")
    ap.add_argument("--keep", action="store_true", help="keep the temporary folder (instance, logs)")
    ap.add_argument("--json", action="store_true", help="print the figures as one JSON object")
    args = ap.parse_args()
    if not 0 < args.duration <= 3600 or not 0 < args.connections <= 1000 or not 0 <= args.fail_rate <= 1:
        ap.error("--duration in (0, 3600], --connections in [1, 1000], --fail-rate in [0, 1]")
    if args.split and args.runner_process:
        ap.error("--split and --runner-process are two different layouts: choose one")
    if args.split and args.profile:
        ap.error("--profile records one process and is not supported with --split; record the web or the "
                 "worker process by hand with `py-spy record --pid PID` (see bench/README.md)")
    try:
        result = run(args)
    except Abort as exc:
        print(f"benchmark aborted: {exc}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        print_text(result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
