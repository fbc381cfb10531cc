"""Keeping ``serve``'s two processes on CPUs of their own (the CPU_AFFINITY setting).

With the runner in a child process, the web process and the child each run Python on one
core at a time (the GIL) and hand the GIL between their own threads thousands of times a
second: the webhook's request thread, the writer thread, waitress's loop. Left to the
kernel, the threads of either process are spread over both cores, so each hand-over wakes a
thread on the other core (a cross-core wake-up into a cold cache, often while the other
process runs there), and the woken thread often finds the GIL taken again before it got to
run: the GIL's well-known convoy on several cores. Each process on a core of its own hands
the GIL over on one core, where waking the next thread is a plain context switch.

Measured on a 2-core machine (bench/README.md, "eleventh session"), same code, interleaved
(``taskset`` first, then this setting): at 1,000 webhooks/s offered the ack p99 went from
19.6–40.1 ms to 10.6–19.2 ms, and in a closed loop the server acknowledged 2,740–2,900
instead of 1,630–1,670 webhooks/s and delivered 1,570–1,660 instead of 970–985 per second.

``auto`` (or ``true``/``on``) splits the CPUs this process may use (its affinity mask: a
container's cpuset or ``taskset``'s limit) in two halves, the first for the web process, the
rest for the runner child; with fewer than two there is nothing to split. ``WEB/RUNNER``
names the CPUs of each in Linux's list syntax (``0/1``, ``0-1/2-3``); ``off`` leaves the
placement to the kernel.
Linux only (``sched_setaffinity``); elsewhere ``auto`` does nothing.
"""
from __future__ import annotations

import logging
import os
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from .config import FALSE_WORDS, TRUE_WORDS, ConfigError

log = logging.getLogger("hookline")


@dataclass(frozen=True)
class CpuPlan:
    """Which CPUs the web process and the runner child may use."""

    web: frozenset[int]
    runner: frozenset[int]


def supported() -> bool:
    """Whether this system can pin a process's threads (Linux: sched_setaffinity and /proc)."""
    return hasattr(os, "sched_setaffinity") and os.path.isdir("/proc/self/task")


def usable_cpu_set() -> frozenset[int]:
    """The CPUs this process may run on: its affinity mask (a container's cpuset or taskset's
    limit); where there are no masks (macOS), every CPU."""
    if hasattr(os, "sched_getaffinity"):
        return frozenset(os.sched_getaffinity(0))
    return frozenset(range(os.cpu_count() or 1))


def parse_cpu_list(text: str) -> frozenset[int]:
    """``0-2,5`` as {0, 1, 2, 5} (the syntax of ``taskset -c`` and /proc's Cpus_allowed_list)."""
    cpus: set[int] = set()
    for part in text.split(","):
        part = part.strip()
        low, dash, high = part.partition("-")
        try:
            first, last = int(low), int(high if dash else low)
        except ValueError:
            raise ValueError(f"{part!r} is not a CPU number or range (like 0, 2-3)") from None
        if first < 0 or last < first:
            raise ValueError(f"{part!r} is not a CPU number or range (like 0, 2-3)")
        cpus.update(range(first, last + 1))
    return frozenset(cpus)


def format_cpu_list(cpus: Iterable[int]) -> str:
    """{0, 1, 2, 5} as ``0-2,5``."""
    ranges: list[list[int]] = []
    for cpu in sorted(cpus):
        if ranges and cpu == ranges[-1][1] + 1:
            ranges[-1][1] = cpu
        else:
            ranges.append([cpu, cpu])
    return ",".join(str(a) if a == b else f"{a}-{b}" for a, b in ranges)


def cpu_plan(setting: Any, usable: frozenset[int] | None = None, can_pin: bool | None = None) -> CpuPlan | None:
    """The CPU_AFFINITY setting as a plan for ``serve`` with a runner child, or None to leave
    the placement to the kernel. ``usable``/``can_pin``: this process's (for tests). Raises
    :class:`ConfigError` for a setting that cannot be followed, so serve refuses to start."""
    usable = usable_cpu_set() if usable is None else usable
    can_pin = supported() if can_pin is None else can_pin
    value = str(setting).strip().lower()
    if value in FALSE_WORDS or value == "none":
        return None
    if value == "auto" or value in TRUE_WORDS:
        if not can_pin or len(usable) < 2:
            return None
        cpus = sorted(usable)
        half = len(cpus) // 2
        return CpuPlan(frozenset(cpus[:half]), frozenset(cpus[half:]))
    web_text, slash, runner_text = value.partition("/")
    if not slash:
        raise ConfigError(f"CPU_AFFINITY={setting!r}: expected auto, off, or WEB/RUNNER CPU lists like 0/1")
    try:
        plan = CpuPlan(parse_cpu_list(web_text), parse_cpu_list(runner_text))
    except ValueError as exc:
        raise ConfigError(f"CPU_AFFINITY={setting!r}: {exc}") from None
    if not can_pin:
        raise ConfigError(f"CPU_AFFINITY={setting!r}: this system cannot pin processes to CPUs; use auto or off")
    outside = (plan.web | plan.runner) - usable
    if outside:
        raise ConfigError(f"CPU_AFFINITY={setting!r}: CPU {format_cpu_list(outside)} is not one this process "
                          f"may use ({format_cpu_list(usable)})")
    return plan


def pin_process(cpus: frozenset[int], who: str) -> bool:
    """Keep every thread of this process on ``cpus``, and so the threads they start later (a
    new thread inherits its creator's mask); ``who`` names the process in the log. A mask the
    system refuses (a cpuset changed under us) is logged, not fatal: the process runs, anywhere.
    Returns whether it is pinned. A thread that ends meanwhile is skipped."""
    try:
        for tid in os.listdir("/proc/self/task"):
            try:
                os.sched_setaffinity(int(tid), cpus)
            except ProcessLookupError:
                continue
    except OSError as exc:
        log.warning("could not keep the %s on CPU %s: %s", who, format_cpu_list(cpus), exc)
        return False
    return True
