"""Bounded load generator for the end-to-end benchmark.

asyncio, N keep-alive connections over raw sockets (no third-party client). Each connection
sends ``POST <url>`` with JSON body ``{"t": time.time(), "n": <unique int>}`` back to back
(closed loop: the next request leaves when the previous answer is in) for a fixed duration,
finishes the request in flight and stops. Only 127.0.0.1/localhost targets are accepted.

    python bench/loadgen.py http://127.0.0.1:8080/hooks/TOKEN [--duration 10] [--connections 32]
                            [--rate R] [--github-secret SECRET] [--out FILE] [--full]

``--rate R``: open loop instead, as SaaS senders are: R requests per second in all, each
connection sending on its own fixed schedule (every connections/R seconds, the connections
staggered). Latency then counts from when a request was *due*, not from when it left, so a
slow answer that delays the next request on its connection is counted against the server
(no coordinated omission, as in wrk2); ``service_ms`` is from when it left.

``--github-secret``: sign every body as GitHub does (``X-Hub-Signature-256: sha256=<hex
HMAC-SHA256>``), for a recipe that verifies signatures.

Prints (or writes to --out) one JSON object: counts, statuses, ack latency percentiles, the
load window (wall-clock start/end), acks per second and, with --full, the acknowledged n.
"""
from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import math
import resource
import sys
import time
from collections import Counter
from pathlib import Path
from urllib.parse import urlsplit

sys.path.insert(0, str(Path(__file__).resolve().parent))
from httpio import ProtocolError, github_signature, keep_alive, percentile, read_message

REQUEST_TIMEOUT = 30.0
MAX_REQUESTS = 10_000_000  # hard bound whatever the duration


class Load:
    def __init__(self, host: str, port: int, path: str, connections: int, duration: float,
                 github_secret: str | None = None, rate: float | None = None) -> None:
        self.host, self.port, self.path = host, port, path
        self.connections = connections
        self.duration = duration
        self.rate = rate
        self.service: list[float] = []     # seconds from send to answer, 202 only (open loop)
        self.counter = itertools.count()
        self.latencies: list[float] = []   # seconds, 202 answers only
        self.all_latencies: list[float] = []
        self.statuses: Counter[str] = Counter()
        self.errors: Counter[str] = Counter()
        self.acked: list[int] = []
        self.ack_times: list[float] = []   # wall time of each 202
        self.due_offsets: list[float] = []  # seconds from the load's start to when each 202's request was due
        self.unknown: list[int] = []       # sent, no answer (connection error/timeout)
        self.connects = 0
        self.start_wall = self.end_wall = 0.0
        self.start_perf = 0.0
        self.head = (f"POST {path} HTTP/1.1\r\nHost: {host}:{port}\r\nUser-Agent: hookline-bench\r\n"
                     "Content-Type: application/json\r\nAccept: */*\r\n").encode()
        self.secret = github_secret

    def request(self, body: bytes) -> bytes:
        head = self.head
        if self.secret:
            head += f"X-Hub-Signature-256: {github_signature(self.secret, body)}\r\n".encode()
        return head + b"Content-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body

    async def connection(self, start: float, deadline: float, index: int) -> None:
        reader = writer = None
        interval = self.connections / self.rate if self.rate else 0.0
        due = start + index * interval / self.connections
        try:
            while time.perf_counter() < deadline:
                if self.rate:
                    if due >= deadline:
                        return
                    wait = due - time.perf_counter()
                    if wait > 0:
                        await asyncio.sleep(wait)
                if writer is None:
                    try:
                        reader, writer = await asyncio.wait_for(
                            asyncio.open_connection(self.host, self.port, limit=256 * 1024), REQUEST_TIMEOUT)
                        self.connects += 1
                    except (TimeoutError, OSError) as exc:
                        self.errors[f"connect: {type(exc).__name__}"] += 1
                        await asyncio.sleep(0.05)
                        continue
                n = next(self.counter)
                if n >= MAX_REQUESTS:
                    return
                body = json.dumps({"t": time.time(), "n": n}, separators=(",", ":")).encode()
                t0 = time.perf_counter()
                scheduled = due if self.rate else t0
                due += interval
                try:
                    writer.write(self.request(body))
                    msg = await asyncio.wait_for(read_message(reader), REQUEST_TIMEOUT)
                    if msg is None:
                        raise ConnectionResetError("closed by server")
                except (TimeoutError, OSError, asyncio.IncompleteReadError, ProtocolError, ValueError) as exc:
                    self.errors[type(exc).__name__] += 1
                    self.unknown.append(n)
                    writer.close()
                    reader = writer = None
                    continue
                answered = time.perf_counter()
                lat = answered - scheduled
                start, headers, _body = msg
                parts = start.split(" ", 2)
                status = parts[1] if len(parts) > 1 else "?"
                self.statuses[status] += 1
                self.all_latencies.append(lat)
                if status == "202":
                    self.latencies.append(lat)
                    self.service.append(answered - t0)
                    self.acked.append(n)
                    self.ack_times.append(time.time())
                    self.due_offsets.append(scheduled - self.start_perf)
                if not keep_alive(start, headers):
                    writer.close()
                    reader = writer = None
        finally:
            if writer is not None:
                writer.close()

    async def run(self) -> None:
        self.start_wall = time.time()
        start = self.start_perf = time.perf_counter()
        deadline = start + self.duration
        await asyncio.gather(*(self.connection(start, deadline, i) for i in range(self.connections)))
        self.end_wall = time.time()

    def _p99_each_second(self, seconds: int) -> list[float | None]:
        by_second: list[list[float]] = [[] for _ in range(seconds)]
        for due, lat in zip(self.due_offsets, self.latencies, strict=True):
            by_second[min(max(int(due), 0), seconds - 1)].append(lat * 1000.0)
        return [percentile(sorted(xs), 99) for xs in by_second]

    def result(self, full: bool) -> dict:
        lat = sorted(x * 1000.0 for x in self.latencies)
        service = sorted(x * 1000.0 for x in self.service)
        window = max(self.end_wall - self.start_wall, 1e-9)
        per_second = Counter(int(t - self.start_wall) for t in self.ack_times)
        usage = resource.getrusage(resource.RUSAGE_SELF)
        out = {
            "connections": self.connections,
            "duration": self.duration,
            "rate": self.rate,
            "start": self.start_wall,
            "end": self.end_wall,
            "window_s": window,
            "sent": sum(self.statuses.values()) + len(self.unknown),
            "acks": len(self.acked),
            "acks_per_s": len(self.acked) / window,
            "statuses": dict(self.statuses),
            "non_202": {k: v for k, v in self.statuses.items() if k != "202"},
            "errors": dict(self.errors),
            "unanswered": len(self.unknown),
            "connects": self.connects,
            "ack_ms": {
                "p50": percentile(lat, 50),
                "p90": percentile(lat, 90),
                "p99": percentile(lat, 99),
                "max": lat[-1] if lat else None,
                "mean": (sum(lat) / len(lat)) if lat else None,
            },
            "service_ms": {"p50": percentile(service, 50), "p99": percentile(service, 99)},
            "acks_each_second": [per_second.get(i, 0) for i in range(int(window) + 1)],
            # is the tail spread over the run or bunched into a few stalls?
            "ack_p99_ms_each_second": self._p99_each_second(max(1, math.ceil(self.duration))),
            "cpu_s": usage.ru_utime + usage.ru_stime,
        }
        if full:
            out["acked_n"] = self.acked
            out["unanswered_n"] = self.unknown
        return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("url", help="http://127.0.0.1:PORT/hooks/TOKEN")
    ap.add_argument("--duration", type=float, default=10.0, help="seconds of load (max 3600)")
    ap.add_argument("--connections", type=int, default=32, help="concurrent keep-alive connections (max 1000)")
    ap.add_argument("--rate", type=float, default=None,
                    help="open loop: requests per second in all (default: closed loop, back to back)")
    ap.add_argument("--github-secret", default=None, help="sign each body as GitHub does, with this secret")
    ap.add_argument("--out", default=None, help="write the JSON result here instead of stdout")
    ap.add_argument("--full", action="store_true", help="include the list of acknowledged n")
    args = ap.parse_args()
    u = urlsplit(args.url)
    if u.scheme != "http" or u.hostname not in ("127.0.0.1", "localhost"):
        ap.error("only http://127.0.0.1 (or localhost) targets")
    if not 0 < args.duration <= 3600 or not 0 < args.connections <= 1000:
        ap.error("--duration must be in (0, 3600] and --connections in [1, 1000]")
    if args.rate is not None and not 0 < args.rate <= 100_000:
        ap.error("--rate must be in (0, 100000]")
    path = u.path + (f"?{u.query}" if u.query else "")
    load = Load("127.0.0.1", u.port or 80, path, args.connections, args.duration, args.github_secret, args.rate)
    asyncio.run(load.run())
    text = json.dumps(load.result(args.full))
    if args.out:
        Path(args.out).write_text(text)
    else:
        print(text, flush=True)


if __name__ == "__main__":
    main()
