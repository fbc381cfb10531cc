"""A fast HTTP sink for the end-to-end benchmark.

asyncio, raw HTTP/1.1 with keep-alive, on 127.0.0.1. Every request is answered at once:
``200 ok`` (or ``503`` for a ``--fail-rate`` fraction of them). For every 200 it records the
arrival wall time and the JSON body's ``t`` (the load generator's send time, time.time())
and ``n`` (the event's unique number).

Control (same port):
  GET /__stats         summary as JSON (count, unique, duplicates, delays)
  GET /__stats?full=1  the summary plus "events": [[n, first_arrival, t], ...] per unique n
  GET /__reset         forget everything recorded so far (after a warm-up)
On SIGTERM/SIGINT the summary is written to --stats-file (or stdout) and the sink exits.

    python bench/sink.py [--port 0] [--fail-rate 0.3] [--stats-file FILE]

The first line on stdout is ``sink listening on http://127.0.0.1:PORT``.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import resource
import signal
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from httpio import ProtocolError, keep_alive, percentile, read_message

OK = b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 2\r\n\r\nok"
OK_CLOSE = b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok"
FAIL = b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: text/plain\r\nContent-Length: 11\r\n\r\nunavailable"
IDLE_TIMEOUT = 120.0


class Sink:
    def __init__(self, fail_rate: float, seed: int | None) -> None:
        self.fail_rate = fail_rate
        self.rng = random.Random(seed)
        self.connections = 0
        self.reset()

    def reset(self) -> None:
        self.received = 0          # every request to the delivery path, whatever the answer
        self.failed = 0            # answered 503 on purpose
        self.bad = 0               # 200, but the body had no usable JSON n/t
        self.count = 0             # answered 200 with a usable body: deliveries
        self.first: dict[int, tuple[float, float]] = {}  # n -> (first arrival, t)
        self.duplicates = 0
        self.first_arrival: float | None = None
        self.last_arrival: float | None = None

    # -- recording ----------------------------------------------------------------------
    def record(self, body: bytes) -> bool:
        """Returns True when answered 200."""
        now = time.time()
        self.received += 1
        if self.fail_rate and self.rng.random() < self.fail_rate:
            self.failed += 1
            return False
        try:
            data = json.loads(body)
            n, t = int(data["n"]), float(data["t"])
        except (ValueError, KeyError, TypeError):
            self.bad += 1
            return True
        self.count += 1
        if self.first_arrival is None:
            self.first_arrival = now
        self.last_arrival = now
        if n in self.first:
            self.duplicates += 1
        else:
            self.first[n] = (now, t)
        return True

    def summary(self, full: bool = False) -> dict:
        delays = sorted((arr - t) * 1000.0 for arr, t in self.first.values())
        usage = resource.getrusage(resource.RUSAGE_SELF)
        out = {
            "received": self.received,
            "failed_503": self.failed,
            "bad_body": self.bad,
            "count": self.count,
            "unique": len(self.first),
            "duplicates": self.duplicates,
            "connections": self.connections,
            "first_arrival": self.first_arrival,
            "last_arrival": self.last_arrival,
            "last_first_arrival": max((a for a, _ in self.first.values()), default=None),
            "delay_ms": {
                "p50": percentile(delays, 50),
                "p99": percentile(delays, 99),
                "max": delays[-1] if delays else None,
                "mean": (sum(delays) / len(delays)) if delays else None,
            },
            "cpu_s": usage.ru_utime + usage.ru_stime,
        }
        if full:
            out["events"] = [[n, arr, t] for n, (arr, t) in self.first.items()]
        return out

    # -- serving ------------------------------------------------------------------------
    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        try:
            while True:
                try:
                    msg = await asyncio.wait_for(read_message(reader), IDLE_TIMEOUT)
                except (TimeoutError, ProtocolError, ConnectionError, ValueError, asyncio.IncompleteReadError):
                    return
                if msg is None:
                    return
                start, headers, body = msg
                parts = start.split(" ")
                target = parts[1] if len(parts) > 1 else "/"
                if target.startswith("/__reset"):
                    self.reset()
                    writer.write(OK)
                    await writer.drain()
                    continue
                if target.startswith("/__stats"):
                    payload = json.dumps(self.summary(full="full=1" in target)).encode()
                    writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: "
                                 + str(len(payload)).encode() + b"\r\n\r\n" + payload)
                    await writer.drain()
                    continue
                alive = keep_alive(start, headers)
                if self.record(body):
                    writer.write(OK if alive else OK_CLOSE)
                else:
                    writer.write(FAIL)
                await writer.drain()
                if not alive:
                    return
        finally:
            writer.close()


async def main_async(args: argparse.Namespace) -> None:
    sink = Sink(args.fail_rate, args.seed)
    server = await asyncio.start_server(sink.handle, "127.0.0.1", args.port, backlog=1024,
                                        limit=256 * 1024)
    port = server.sockets[0].getsockname()[1]
    print(f"sink listening on http://127.0.0.1:{port}", flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    # Bounded lifetime: a forgotten sink ends by itself.
    try:
        await asyncio.wait_for(stop.wait(), args.max_lifetime)
    except TimeoutError:
        pass
    server.close()
    text = json.dumps(sink.summary(full=args.full), indent=None if args.full else 2)
    if args.stats_file:
        tmp = args.stats_file + ".tmp"
        Path(tmp).write_text(text)
        os.replace(tmp, args.stats_file)
    else:
        print(text, flush=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--port", type=int, default=0, help="0: any free port (printed on the first line)")
    ap.add_argument("--fail-rate", type=float, default=0.0, help="fraction of deliveries answered 503")
    ap.add_argument("--seed", type=int, default=None, help="random seed for --fail-rate")
    ap.add_argument("--stats-file", default=None, help="write the summary here on SIGTERM (default: stdout)")
    ap.add_argument("--full", action="store_true", help="include every unique event in the final summary")
    ap.add_argument("--max-lifetime", type=float, default=3600.0, help="exit by itself after this many seconds")
    args = ap.parse_args()
    if not 0.0 <= args.fail_rate <= 1.0:
        ap.error("--fail-rate must be between 0 and 1")
    asyncio.run(main_async(args))


if __name__ == "__main__":
    main()
