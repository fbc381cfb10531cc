"""``TtlCache``: a value out of date is re-read by one thread while the others go on with the
one they have; a thread with nothing cached waits for the read (automations/ttlcache.py)."""
from __future__ import annotations

import threading

from automations.ttlcache import TtlCache


class Table:
    """What the loader reads: a dict standing in for rows, and every read it was asked for.
    ``gate`` (when set) holds each read until the test opens it."""

    def __init__(self, rows: dict[str, int]) -> None:
        self.rows = rows
        self.reads: list[list[str]] = []
        self.gate: threading.Event | None = None
        self.reading = threading.Event()

    def load(self, keys: list[str]) -> dict[str, int]:
        self.reads.append(keys)
        self.reading.set()
        if self.gate is not None:
            assert self.gate.wait(10)
        return {k: self.rows[k] for k in keys if k in self.rows}


def test_values_are_read_once_per_ttl_and_a_key_the_loader_leaves_out_is_absent():
    table, ttl = Table({"a": 1, "b": 2}), [60.0]
    cache = TtlCache(table.load, lambda: ttl[0])
    assert cache.get_many(["a", "b", "gone"]) == {"a": 1, "b": 2}
    table.rows["a"] = 10
    assert cache.get_many(["a", "b"]) == {"a": 1, "b": 2}  # within the TTL: no read
    assert table.reads == [["a", "b", "gone"]]
    ttl[0] = 0.0
    del table.rows["b"]
    assert cache.get_many(["a", "b"]) == {"a": 10}  # re-read: changed, and deleted
    ttl[0] = 60.0
    table.rows["a"] = 11
    cache.forget("a")  # changed here: read again at once
    assert cache.get("a") == 11 and cache.get("b") is None


def test_while_one_thread_re_reads_the_others_use_the_value_they_have_and_do_not_read():
    table = Table({"a": 1})
    ttl = [60.0]
    cache = TtlCache(table.load, lambda: ttl[0])
    assert cache.get("a") == 1
    table.rows["a"], ttl[0] = 2, 0.0
    table.gate, table.reading = threading.Event(), threading.Event()
    first: list[int | None] = []
    reader = threading.Thread(target=lambda: first.append(cache.get("a")))
    reader.start()
    assert table.reading.wait(10)  # the first thread is inside its read
    others = [cache.get("a") for _ in range(32)]
    assert others == [1] * 32 and len(table.reads) == 2  # the old value, at once, and no read of their own
    table.gate.set()
    reader.join(10)
    assert first == [2]


def test_a_thread_with_nothing_cached_waits_for_the_read_under_way():
    table = Table({"a": 1})
    table.gate = threading.Event()
    cache = TtlCache(table.load, lambda: 60.0)
    got: dict[str, list[int | None]] = {"first": [], "second": []}
    first = threading.Thread(target=lambda: got["first"].append(cache.get("a")))
    first.start()
    assert table.reading.wait(10)
    second = threading.Thread(target=lambda: got["second"].append(cache.get("a")))
    second.start()
    second.join(0.3)
    assert second.is_alive() and got["second"] == []  # nothing to go on with: it waits
    table.gate.set()
    first.join(10)
    second.join(10)
    assert got == {"first": [1], "second": [1]} and len(table.reads) == 1  # and reads nothing itself
