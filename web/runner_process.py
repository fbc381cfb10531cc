"""The runner in a child process that ``hookline serve`` starts, watches and stops (its default
with two or more CPUs, and ``--runner-process``).

One Python process runs one thread at a time (the GIL), so web and runner threads in one
process share one core. With the runner in a child process, ``serve`` uses two cores while
staying one command to start and stop. The two share the instance folder (config, keys,
SQLite file, whose writers queue on ``WriterSlot``'s file lock).

On SQLite the child also writes nothing itself: a socket pair carries its units of work
(claims, step records, finished runs) to this process's group-commit writer, so one process
holds the database's single writer lock instead of two taking turns at it
(automations/remote_writer.py says why that matters).

A pipe joins them. The web process writes a byte after each commit that queues a run, so
the child starts it at once instead of at its next poll; the child reads its end in a
thread. When the web process dies, even by SIGKILL, the kernel closes the write end and the
child sees end-of-file: it stops claiming and exits, so no orphan keeps running (on SQLite
its in-flight runs cannot record their results without the web process's writer; their
leases bring them back). A child that dies is started again after a short pause, and the
runs it had leased are queued again at once: serve chose the child's lease owner name.
"""
from __future__ import annotations

import contextlib
import logging
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from typing import Any

from automations.remote_writer import WriterService
from automations.runner import worker_id
from automations.writer import BatchWriter

from .config import FALSE_WORDS, TRUE_WORDS
from .cpu_affinity import format_cpu_list, usable_cpu_set

log = logging.getLogger("hookline.runner_process")

RESTART_DELAYS = (1.0, 2.0, 5.0, 10.0, 30.0)  # seconds before restart n (the last repeats)
STABLE_AFTER = 60.0  # a child that ran this long resets the restart delay


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
                 writer: BatchWriter | None = None, on_exit: Callable[[str], None] | None = None,
                 cpus: frozenset[int] | None = None) -> None:
        """``writer``: this process's writer, to write for the child (SQLite); None lets the
        child write itself (PostgreSQL takes concurrent writers). ``on_exit(owner)``: called
        with the lease owner name its runner used after a child exited unasked, or was killed
        at shutdown for overrunning ``shutdown_timeout``: it takes back that child's runs.
        ``cpus``: the CPUs the child keeps to (web/cpu_affinity.py); None: any."""
        self.instance_path = instance_path
        self.shutdown_timeout = shutdown_timeout
        self.writer = writer
        self.on_exit = on_exit
        self.cpus = cpus
        self.owner: str | None = None
        self.proc: subprocess.Popen | None = None
        self._service: WriterService | None = None
        self._wake_w: int | None = None
        self._stopping = threading.Event()
        self._lock = threading.Lock()
        self._watcher: threading.Thread | None = None

    def start(self) -> RunnerProcess:
        self._spawn()
        self._watcher = threading.Thread(target=self._watch, name="hookline-runner-process", daemon=True)
        self._watcher.start()
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
        ours = theirs = None
        if self.writer is not None:
            ours, theirs = socket.socketpair()
            command += ["--writer-fd", str(theirs.fileno())]
        try:
            proc = subprocess.Popen(command, pass_fds=(read_fd,) + ((theirs.fileno(),) if theirs else ()),
                                    close_fds=True)
        except BaseException:
            os.close(write_fd)
            if ours is not None:
                ours.close()
            raise
        finally:
            os.close(read_fd)
            if theirs is not None:
                theirs.close()
        self._stop_service()
        if ours is not None and self.writer is not None:
            self._service = WriterService(ours, self.writer).start()
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
            self._stop_service()  # after the last of the child's writes the writer had queued
            if self.on_exit is not None and self.owner is not None:
                try:
                    self.on_exit(self.owner)
                except Exception:  # the database may be briefly unavailable: leases still expire
                    log.exception("could not take back the runs of runner child %s", proc.pid)
            failures = 1 if time.monotonic() - started >= STABLE_AFTER else failures + 1
            delay = RESTART_DELAYS[min(failures, len(RESTART_DELAYS)) - 1]
            log.error("runner child process %s exited with %s; starting another in %.0f s "
                      "(its claimed runs are taken back when their lease expires)", proc.pid, code, delay)
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
        self._stop_service()  # first: the take-back commits after every write the child sent
        if killed and self.on_exit is not None and self.owner is not None:
            try:  # its leases would otherwise keep its runs for up to LEASE_SECONDS after the restart
                self.on_exit(self.owner)
            except Exception:  # the database may be unavailable: the leases still expire
                log.exception("could not take back the runs of runner child %s", proc.pid)
        return code

    def _stop_service(self) -> None:
        service, self._service = self._service, None
        if service is not None:
            service.stop()


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
