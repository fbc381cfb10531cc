"""CPU_AFFINITY: ``serve`` keeps its web process and its runner child on CPUs of their own
(web/cpu_affinity.py says why), and every thread of each, including those started later,
stays there."""
from __future__ import annotations

import os
import signal
from pathlib import Path

import pytest

from tests.test_runner_process import (
    post,
    read_until,
    runner_child,
    serve_refused,
    serving_a_recipe,
    wait_gone,
)
from web.config import ConfigError
from web.cpu_affinity import (
    CpuPlan,
    cpu_plan,
    format_cpu_list,
    parse_cpu_list,
    pin_process,
    supported,
    usable_cpu_set,
)

TWO = frozenset({0, 1})


@pytest.mark.parametrize(("text", "cpus"), [
    ("0", {0}), ("0,2", {0, 2}), ("0-3", {0, 1, 2, 3}), ("1-2,5,7-8", {1, 2, 5, 7, 8}), (" 3 , 4 ", {3, 4}),
])
def test_cpu_lists_read_as_taskset_writes_them(text, cpus):
    assert parse_cpu_list(text) == cpus
    assert parse_cpu_list(format_cpu_list(cpus)) == cpus


def test_cpu_lists_are_written_with_ranges():
    assert format_cpu_list({5, 0, 1, 2, 7, 8}) == "0-2,5,7-8"


@pytest.mark.parametrize("text", ["", "a", "1-", "-1", "3-1", "1..2", "0;1"])
def test_a_cpu_list_that_is_not_one_is_refused(text):
    with pytest.raises(ValueError, match="is not a CPU number or range"):
        parse_cpu_list(text)


@pytest.mark.parametrize(("usable", "web", "runner"), [
    (TWO, {0}, {1}),
    (frozenset({3, 7}), {3}, {7}),                      # a cpuset or taskset's CPUs, whatever their numbers
    (frozenset({0, 1, 2}), {0}, {1, 2}),
    (frozenset(range(8)), {0, 1, 2, 3}, {4, 5, 6, 7}),
])
def test_auto_splits_the_usable_cpus_in_two(usable, web, runner):
    assert cpu_plan("auto", usable, can_pin=True) == CpuPlan(frozenset(web), frozenset(runner))
    for same in (" AUTO ", "true", "on", True):
        assert cpu_plan(same, usable, can_pin=True) == CpuPlan(frozenset(web), frozenset(runner))


def test_auto_leaves_one_cpu_or_a_system_without_pinning_alone():
    assert cpu_plan("auto", frozenset({0}), can_pin=True) is None
    assert cpu_plan("auto", TWO, can_pin=False) is None


@pytest.mark.parametrize("setting", ["off", "false", "0", "no", "none", "OFF", False])
def test_off_leaves_the_placement_to_the_kernel(setting):
    assert cpu_plan(setting, TWO, can_pin=True) is None


def test_explicit_lists_name_each_process_cpus():
    assert cpu_plan("1/0", TWO, can_pin=True) == CpuPlan(frozenset({1}), frozenset({0}))
    assert cpu_plan("0-1/2-3", frozenset(range(4)), can_pin=True) == CpuPlan(frozenset({0, 1}), frozenset({2, 3}))


@pytest.mark.parametrize(("setting", "message"), [
    ("sometimes", "expected auto, off, or WEB/RUNNER CPU lists like 0/1"),
    ("0/x", "'x' is not a CPU number or range"),
    ("0/", "'' is not a CPU number or range"),
    ("0/5", "CPU 5 is not one this process may use (0-1)"),
    ("4-5/0", "CPU 4-5 is not one this process may use (0-1)"),
])
def test_a_setting_that_cannot_be_followed_is_refused(setting, message):
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)")):
        cpu_plan(setting, TWO, can_pin=True)


def test_explicit_lists_on_a_system_that_cannot_pin_are_refused():
    with pytest.raises(ConfigError, match="cannot pin processes to CPUs"):
        cpu_plan("0/1", TWO, can_pin=False)


# --- the real serve ---------------------------------------------------------------------

needs_two_cpus = pytest.mark.skipif(
    not supported() or len(usable_cpu_set()) < 2,
    reason="serve pins its processes only on Linux with two or more usable CPUs; this machine has "
           f"{len(usable_cpu_set())} usable, pinning {'supported' if supported() else 'unsupported'}")


def thread_cpus(pid: int) -> dict[int, frozenset[int]]:
    """Each thread of ``pid`` and the CPUs it may run on."""
    out = {}
    for task in Path(f"/proc/{pid}/task").glob("*"):
        try:
            out[int(task.name)] = frozenset(os.sched_getaffinity(int(task.name)))
        except (OSError, ValueError):  # ended meanwhile
            continue
    return out


@needs_two_cpus
def test_serve_keeps_web_and_runner_on_cpus_of_their_own(tmp_path):
    plan = cpu_plan("auto")
    assert plan is not None and not plan.web & plan.runner
    with serving_a_recipe(tmp_path, args=(), env={}) as (sink, server, port, token):  # the README's command
        child = runner_child(server)
        line = read_until(server, "Hookline listening", 30)
        assert (f"runner: in child process {child}; CPUs: web {format_cpu_list(plan.web)}, "
                f"runner {format_cpu_list(plan.runner)}") in line
        read_until(server, "Hookline worker", 30)
        for n in range(3):  # the run threads and the request threads exist only from here on
            post(port, token, n)
        assert len(sink.wait_for(3, timeout=20)) == 3
        web, runner = thread_cpus(server.pid), thread_cpus(child)
        assert len(web) > 10 and len(runner) > 5  # waitress's threads, the writer; the run pool
        assert set(web.values()) == {plan.web}, web
        assert set(runner.values()) == {plan.runner}, runner

        os.kill(child, signal.SIGKILL)  # a restarted child keeps to its CPUs too
        assert wait_gone(child, 20)
        again = runner_child(server, not_pid=child, timeout=30)
        read_until(server, "Hookline worker", 30)
        assert set(thread_cpus(again).values()) == {plan.runner}
    assert server.returncode == 0


@needs_two_cpus
def test_off_leaves_every_thread_where_the_kernel_puts_it(tmp_path):
    usable = usable_cpu_set()
    with serving_a_recipe(tmp_path, args=(), env={"HOOKLINE_CPU_AFFINITY": "off"}) as (sink, server, port, token):
        child = runner_child(server)
        line = read_until(server, "Hookline listening", 30)
        assert "CPUs:" not in line
        post(port, token, 1)
        assert sink.wait_for(1, timeout=20)
        assert set(thread_cpus(server.pid).values()) == {usable}
        assert set(thread_cpus(child).values()) == {usable}


@needs_two_cpus
def test_explicit_cpus_are_kept(tmp_path):
    first, second = sorted(usable_cpu_set())[:2]
    with serving_a_recipe(tmp_path, args=(), env={"HOOKLINE_CPU_AFFINITY": f"{second}/{first}"}) as (
            sink, server, port, token):
        child = runner_child(server)
        read_until(server, "Hookline worker", 30)
        post(port, token, 1)
        assert sink.wait_for(1, timeout=20)
        assert set(thread_cpus(server.pid).values()) == {frozenset({second})}
        assert set(thread_cpus(child).values()) == {frozenset({first})}


def test_a_setting_that_cannot_be_followed_stops_serve_at_start(tmp_path):
    proc = serve_refused(tmp_path, CPU_AFFINITY="0/4096")
    assert "CPU_AFFINITY='0/4096'" in proc.stderr
    assert ("CPU 4096 is not one this process may use" in proc.stderr
            or "cannot pin processes to CPUs" in proc.stderr)


@pytest.mark.skipif(not supported(), reason="pinning needs Linux (sched_setaffinity and /proc)")
def test_a_mask_the_system_refuses_is_logged_and_changes_nothing(caplog):
    before = usable_cpu_set()
    with caplog.at_level("WARNING", logger="hookline"):
        assert pin_process(frozenset({4096}), "web process") is False
    assert "could not keep the web process on CPU 4096" in caplog.text
    assert usable_cpu_set() == before


def test_the_workers_cpu_list_is_checked_before_it_starts():
    from click.testing import CliRunner

    from web.cli import main

    result = CliRunner().invoke(main, ["worker", "--cpus", "1-"])
    assert result.exit_code == 2 and "'1-' is not a CPU number or range" in result.output
