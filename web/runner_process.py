"""The runner in a child process that ``hookline serve`` starts, watches and stops (its default
with two or more CPUs, and ``--runner-process``).

One Python process runs one thread at a time (the GIL), so web and runner threads in one
process share one core. With the runner in a child process, ``serve`` uses two cores while
staying one command to start and stop. The two share the instance folder (config, keys,
SQLite file, whose writers queue on ``WriterSlot``'s file lock).

The child writes through a group-commit writer of its own. On SQLite the two processes'
writers take turns at the database file (``WriterSlot``: a file lock that hands over the
moment it is free). The child used to send its writes over a socket to this process's
writer instead, so that one process held SQLite's lock; with each process on CPUs of its own
(web/cpu_affinity.py) that relay cost more than the turns it saved: this process's writer
spent half its time on the child's claims and results, on the CPU the acknowledgements wait
for (bench/README.md, "fifteenth session", has the figures).

The price of two writers is that a child stopped while it holds the lock (SIGSTOP, a
debugger, a hang inside SQLite) would hold up every webhook. So this process watches: when
its writer has waited LOCK_STALL_SECONDS for the lock and /proc/locks says the child holds
it, the child is killed; its runs are taken back and another child started, as after any
crash (at least once: a delivery it made but had not recorded is made again, with the same
Idempotency-Key).

A pipe joins them. The web process writes a byte after each commit that queues a run, so
the child starts it at once instead of at its next poll; the child reads its end in a
thread. When the web process dies, even by SIGKILL, the kernel closes the write end and the
child sees end-of-file: it stops as on SIGTERM (its runs in flight finish their current
step and are released) and exits, so no orphan keeps running. A child that dies is started
again after a short pause, and the runs it had leased are queued again at once: serve chose
the child's lease owner name.
"""
from __future__ import annotations

import contextlib
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from typing import Any

from automations.db import WriterSlot
from automations.runner import worker_id

from .config import FALSE_WORDS, TRUE_WORDS
from .cpu_affinity import format_cpu_list, usable_cpu_set

log = logging.getLogger("hookline.runner_process")

RESTART_DELAYS = (1.0, 2.0, 5.0, 10.0, 30.0)  # seconds before restart n (the last repeats)
STABLE_AFTER = 60.0  # a child that ran this long resets the restart delay
# A healthy child holds SQLite's lock for milliseconds per transaction; a sender gives up on
# a webhook after 5 to 30 s (Shopify 5, GitHub 10).
LOCK_STALL_SECONDS = 3.0


def runner_process_wanted(setting: Any, cpus: int | None = None) -> bool:
    """The RUNNER_PROCESS setting as a decision. ``auto`` takes the child process where it
    pays: a second core to run on (one Python process computes on one core at a time) and
    POSIX pipes to supervise it with. ``cpus``: the usable CPUs (default: this process's)."""
    if isinstance(setting, bool):
        return setting
    value = str(setting).strip().lower()
    if value in TRUE_WORDS:
        return True
    if value in FALSE_WORDS:
        return False
    if value != "auto":
        raise ValueError(f"RUNNER_PROCESS must be auto, true or false, not {setting!r}")
    return os.name == "posix" and (len(usable_cpu_set()) if cpus is None else cpus) >= 2


class RunnerProcess:
    """Stands in for an in-process :class:`~automations.runner.Runner` in the web process:
    :meth:`notify` wakes the child."""

    def __init__(self, instance_path: str, shutdown_timeout: float = 20.0,
                 on_exit: Callable[[str], None] | None = None, cpus: frozenset[int] | None = None,
                 writer_slot: WriterSlot | None = None) -> None:
        """``on_exit(owner)``: called with the lease owner name its runner used after a child
        exited unasked, or was killed (at shutdown for overrunning ``shutdown_timeout``, or
        holding the writer slot): it takes back that child's runs. ``cpus``: the CPUs the child
        keeps to (web/cpu_affinity.py); None: any. ``writer_slot``: this process's SQLite
        writer slot, watched for a child that holds it too long (None: nothing to watch)."""
        self.instance_path = instance_path
        self.shutdown_timeout = shutdown_timeout
        self.on_exit = on_exit
        self.cpus = cpus
        self.writer_slot = writer_slot
        self.owner: str | None = None
        self.proc: subprocess.Popen | None = None
        self._wake_w: int | None = None
        self._stopping = threading.Event()
        self._lock = threading.Lock()
        self._watcher: threading.Thread | None = None

    def start(self) -> RunnerProcess:
        self._spawn()
        self._watcher = threading.Thread(target=self._watch, name="hookline-runner-process", daemon=True)
        self._watcher.start()
        if self.writer_slot is not None:
            threading.Thread(target=self._watch_lock, args=(self.writer_slot,), name="hookline-lock-watch",
                             daemon=True).start()
        return self

    def _spawn(self) -> None:
        read_fd, write_fd = os.pipe()
        os.set_blocking(write_fd, False)  # a full pipe already holds a wake-up; never block a request
        verbose = ["-v"] if logging.getLogger().getEffectiveLevel() <= logging.DEBUG else []  # as serve -v
        owner = worker_id()
        command = [sys.executable, "-m", "web.cli", *verbose, "worker", "--instance", self.instance_path,
                   "--wake-fd", str(read_fd), "--owner", owner, "--shutdown-seconds", str(self.shutdown_timeout)]
        if self.cpus:
            command += ["--cpus", format_cpu_list(self.cpus)]
        try:
            proc = subprocess.Popen(command, pass_fds=(read_fd,), close_fds=True)
        except BaseException:
            os.close(write_fd)
            raise
        finally:
            os.close(read_fd)
        with self._lock:  # closed under the lock: notify never writes to a reused descriptor number
            if self._wake_w is not None:
                os.close(self._wake_w)
            self._wake_w, self.proc, self.owner = write_fd, proc, owner
        log.info("runner started in child process %s", proc.pid)

    def notify(self) -> None:
        with self._lock:
            # Full pipe: a wake-up is pending anyway. Child gone: the watcher starts another,
            # which claims everything due when it starts.
            if self._wake_w is not None:
                with contextlib.suppress(OSError):
                    os.write(self._wake_w, b"\x01")

    @property
    def state(self) -> str:
        """``running`` while the child lives, ``restarting`` between its death and the next
        start, ``stopped`` once serve is stopping (for health checks)."""
        proc = self.proc
        if self._stopping.is_set():
            return "stopped"
        return "running" if proc is not None and proc.poll() is None else "restarting"

    def _watch(self) -> None:
        failures = 0
        while not self._stopping.is_set():
            proc = self.proc
            assert proc is not None
            started = time.monotonic()
            code = proc.wait()
            if self._stopping.is_set():
                return
            runs = "its claimed runs are taken back when their lease expires"
            if self.on_exit is not None and self.owner is not None:
                try:
                    self.on_exit(self.owner)
                    runs = "its runs in flight are queued again"
                except Exception:  # the database may be briefly unavailable: leases still expire
                    log.exception("could not take back the runs of runner child %s", proc.pid)
            failures = 1 if time.monotonic() - started >= STABLE_AFTER else failures + 1
            delay = RESTART_DELAYS[min(failures, len(RESTART_DELAYS)) - 1]
            log.error("runner child process %s exited with %s; starting another in %.0f s (%s)",
                      proc.pid, code, delay, runs)
            if self._stopping.wait(delay):
                return
            try:
                self._spawn()
            except OSError:
                log.exception("could not start the runner child process")

    def stop(self, timeout: float | None = None) -> int | None:
        """SIGTERM the child (its runs in flight finish their current step and are released at
        that checkpoint, the rest are released), then wait. A child still busy ``timeout``
        (+5) seconds later is killed, and the runs it held are queued again at once."""
        timeout = self.shutdown_timeout if timeout is None else timeout
        self._stopping.set()
        proc, code, killed = self.proc, None, False
        if proc is not None and proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                code = proc.wait(timeout + 5)
            except subprocess.TimeoutExpired:
                log.warning("runner child process %s still busy after %.0f s: killed; its runs are "
                            "queued again", proc.pid, timeout)
                proc.kill()
                code, killed = proc.wait(), True
        elif proc is not None:
            code = proc.returncode
        with self._lock:  # after the child is gone, so it does not take end-of-file for our death
            if self._wake_w is not None:
                os.close(self._wake_w)
                self._wake_w = None
        if killed and self.on_exit is not None and self.owner is not None:
            try:  # its leases would otherwise keep its runs for up to LEASE_SECONDS after the restart
                self.on_exit(self.owner)
            except Exception:  # the database may be unavailable: the leases still expire
                log.exception("could not take back the runs of runner child %s", proc.pid)
        return code

    def _watch_lock(self, slot: WriterSlot, every: float = 0.25) -> None:
        """Kill a child that keeps this process's writer waiting for SQLite's lock (see the
        module's docstring); the watcher then takes back its runs and starts another. The
        child must be seen holding it twice in a row: one look could fall on a transaction
        that just began after someone else's long one."""
        seen = 0
        while not self._stopping.wait(every):
            proc = self.proc
            if (slot.waited() < LOCK_STALL_SECONDS or proc is None
                    or proc.pid not in (slot.holders() or ())):  # another process holds it: not ours to stop
                seen = 0
                continue
            seen += 1
            if seen < 2:
                continue
            log.error("runner child process %s has held the database's writer lock for over %.0f s "
                      "(stopped or hung?): killing it so webhooks can be stored", proc.pid, LOCK_STALL_SECONDS)
            with contextlib.suppress(OSError):
                proc.kill()  # the kernel drops a dead process's locks: one kill per stall
            seen = 0


def watch_wake_pipe(fd: int, on_wake: Callable[[], None], on_parent_gone: Callable[[], None]) -> threading.Thread:
    """In the child: each byte from the web process wakes the runner; end-of-file (the web
    process exited or was killed) stops this process."""

    def loop() -> None:
        while True:
            try:
                data = os.read(fd, 4096)
            except InterruptedError:
                continue
            except OSError:
                data = b""
            if not data:
                on_parent_gone()
                return
            on_wake()

    thread = threading.Thread(target=loop, name="hookline-wake-pipe", daemon=True)
    thread.start()
    return thread
