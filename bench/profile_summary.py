"""Summarise a py-spy ``--format raw`` profile (folded stacks) by subsystem.

    py-spy record --pid PID --duration 8 --rate 100 --format raw -o prof.txt --nonblocking [--idle]
    python bench/profile_summary.py prof.txt [--top 25]

(``python bench/e2e.py --profile prof.txt`` records one during the load.)

Prints, as percentages of all samples:
  * by thread role: inbound requests (waitress workers), runner pool, dispatcher, main loop…
  * by subsystem of the innermost frame ("self" time): where the CPU actually is;
  * by subsystem anywhere on the stack ("inclusive");
  * the top self functions and the top inclusive functions of our own code.
"""
from __future__ import annotations

import argparse
import re
import sys
from collections import Counter

FRAME = re.compile(r"^(?P<func>.*) \((?P<file>[^:()]*?)(?::(?P<line>\d+))?\)$")

# First match wins: (subsystem, substring of the frame's file path)
SUBSYSTEMS = [
    ("sqlite3 driver (execute/commit/fetch, incl. lock waits)", "sqlalchemy/engine/default.py"),
    ("sqlite3 driver (execute/commit/fetch, incl. lock waits)", "sqlite3/"),
    ("SQLAlchemy", "sqlalchemy/"),
    ("Flask-SQLAlchemy", "flask_sqlalchemy/"),
    ("waitress", "waitress/"),
    ("Flask / Werkzeug", "flask/"),
    ("Flask / Werkzeug", "werkzeug/"),
    ("Flask-WTF / WTForms", "flask_wtf/"),
    ("jsonpath-ng", "jsonpath_ng/"),
    ("jsonpath-ng (ply parser)", "ply/"),
    ("Jinja2", "jinja2/"),
    ("MarkupSafe", "markupsafe/"),
    ("requests", "requests/"),
    ("urllib3", "urllib3/"),
    ("http.client / socket / ssl", "http/client.py"),
    ("http.client / socket / ssl", "socket.py"),
    ("http.client / socket / ssl", "ssl.py"),
    ("email (header parsing)", "email/"),
    ("APScheduler", "apscheduler/"),
    ("logging", "logging/"),
    ("json", "json/"),
    ("cryptography", "cryptography/"),
    ("threading / queue / futures (waits)", "threading.py"),
    ("threading / queue / futures (waits)", "queue.py"),
    ("threading / queue / futures (waits)", "concurrent/futures/"),
    ("asyncore / select loop", "asyncore"),
    ("asyncore / select loop", "selectors.py"),
    ("our code: automations/", "automations/"),
    ("our code: connectors/", "connectors/"),
    ("our code: web/", "web/"),
]

ROLES = [
    ("inbound requests (waitress worker threads)", "ThreadedTaskDispatcher.handler_thread"),
    ("runner pool (executing runs)", "Runner._run"),
    ("runner dispatcher (claiming)", "Runner._dispatch_loop"),
    ("APScheduler", "apscheduler/"),
    ("waitress main loop (asyncore)", "BaseWSGIServer.run"),
    ("waitress main loop (asyncore)", "wasyncore"),
]


def subsystem(file: str) -> str:
    for name, needle in SUBSYSTEMS:
        if needle in file:
            return name
    return "other: " + file.rsplit("/", 1)[-1] if file else "other"


NATIVE_ADDR = re.compile(r"^0x[0-9a-f]+$")
SYSCALL_IO = ("send", "recv", "read", "write", "pread64", "pwrite64", "fdatasync", "fsync", "fcntl64",
              "fcntl", "poll", "__poll", "connect", "accept4", "getaddrinfo")


def native_state(frames: list[tuple[str, str]]) -> str | None:
    """For --native profiles: what the thread was doing, from its innermost native frames.
    None means running (on CPU, or about to be)."""
    names = [fn for fn, _ in reversed(frames) if not NATIVE_ADDR.match(fn)]
    if not names:
        return None
    leaf = names[0]
    python = next((f"{fn} ({fl})" for fn, fl in reversed(frames) if fl.endswith(".py") or ".py:" in fl
                   or fl.startswith(("automations/", "connectors/", "web/")) or "/" in fl and ".so" not in fl
                   and ".c" not in fl and ".h" not in fl), "?")
    if leaf in ("pthread_cond_timedwait", "pthread_cond_wait", "pthread_mutex_lock"):
        return "waiting for the GIL"
    if leaf in ("PyThread_acquire_lock_timed", "sem_clockwait", "sem_timedwait", "sem_wait", "do_futex_wait"):
        if "automations/db.py" in python:
            return "waiting for the SQLite write lock (automations/db.py write_lock.acquire)"
        if "SimpleQueue" in "".join(names[:4]) or "concurrent/futures" in python:
            return "idle: thread pool waiting for work"
        if "waitress/task.py" in python:
            return "idle: waitress worker waiting for a request"
        return f"waiting on a threading lock/condition in {python}"
    if leaf in ("select", "epoll_wait"):
        return "idle: waitress main loop in select()"
    if leaf in SYSCALL_IO:
        return f"in syscall {leaf}()"
    return None


def parse(path: str) -> list[tuple[list[tuple[str, str]], int]]:
    samples = []
    with open(path, encoding="utf-8", errors="replace") as fh:
        for line in fh:
            line = line.rstrip("\n")
            if not line:
                continue
            stack_text, _, count = line.rpartition(" ")
            try:
                n = int(count)
            except ValueError:
                continue
            frames = []
            for raw in stack_text.split(";"):
                m = FRAME.match(raw.strip())
                frames.append((m["func"], m["file"]) if m else (raw.strip(), ""))
            samples.append((frames, n))
    return samples


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("profile")
    ap.add_argument("--top", type=int, default=25)
    args = ap.parse_args()
    samples = parse(args.profile)
    native = any(".so" in fl for frames, _ in samples[:200] for _, fl in frames)
    if native:
        states: Counter[str] = Counter()
        running = []
        for frames, n in samples:
            st = native_state(frames)
            states[st or "running (CPU)"] += n
            if st is None:
                running.append(([f for f in frames if not NATIVE_ADDR.match(f[0]) and ".so" not in f[1]
                                 and not re.search(r"\.[ch]:\d+|\.[ch]$", f[1])] or frames, n))
        all_total = sum(states.values())
        print(f"{all_total} thread samples (native); thread states:")
        for k, v in states.most_common(20):
            print(f"  {100.0 * v / all_total:5.1f}%  {k}")
        print("the rest of this report covers the running samples only (Python frames, C frames dropped)")
        samples = running
    total = sum(n for _, n in samples)
    if not total:
        sys.exit("no samples")
    roles: Counter[str] = Counter()
    self_sub: Counter[str] = Counter()
    incl_sub: Counter[str] = Counter()
    self_fn: Counter[str] = Counter()
    ours_incl: Counter[str] = Counter()
    role_sub: dict[str, Counter[str]] = {}
    for frames, n in samples:
        joined = ";".join(f"{fn} {fl}" for fn, fl in frames)
        role = next((r for r, needle in ROLES if needle in joined), "other / truncated stacks")
        roles[role] += n
        leaf_fn, leaf_file = frames[-1]
        sub = subsystem(leaf_file)
        self_sub[sub] += n
        role_sub.setdefault(role, Counter())[sub] += n
        self_fn[f"{leaf_fn} ({leaf_file})"] += n
        # Thread bootstrap and the executor's worker loop sit at the root of every stack:
        # count waits/"other" only where they are the innermost frame.
        for s in {subsystem(fl) for _, fl in frames[:-1]
                  if not subsystem(fl).startswith(("threading", "other"))} | {sub}:
            incl_sub[s] += n
        for fn in {f"{fn} ({fl})" for fn, fl in frames
                   if fl.startswith(("automations/", "connectors/", "web/"))}:
            ours_incl[fn] += n

    def show(title: str, counter: Counter[str], top: int) -> None:
        print(f"\n{title}")
        for key, n in counter.most_common(top):
            print(f"  {100.0 * n / total:5.1f}%  {key}")

    print(f"{total} samples from {args.profile}")
    show("by thread role", roles, 20)
    for role, _ in roles.most_common(3):
        show(f"  self time inside {role}", role_sub[role], 8)
    show("by subsystem, innermost frame (self)", self_sub, 30)
    show("by subsystem, anywhere on the stack (inclusive)", incl_sub, 30)
    show("top self functions", self_fn, args.top)
    show("our code, inclusive", ours_incl, args.top)


if __name__ == "__main__":
    main()
