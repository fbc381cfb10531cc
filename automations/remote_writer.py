"""Writing through another process's group-commit writer.

SQLite has one writer at a time. When ``serve`` runs web and runner in two processes, each
with its own :class:`~automations.writer.BatchWriter`, the two writers queue for the
database file's lock, and a writer holds it for far longer than its SQL takes: each
call into sqlite3 gives up its process's GIL, and getting it back means waiting behind that
process's busy threads (measured: 6–15 ms per transaction for well under 1 ms of SQL). So the
runner child does not write itself: it sends each unit of work over a socket to the web
process's writer (:class:`WriterService`), which commits it together with the webhooks it is
storing anyway, and sends back the result or the exception (``LeaseLost`` included).

Units cross as pickles: the channel is a socketpair between a parent and the child it
started, nothing else can connect. Every unit the runner sends is picklable (claims, run
writes, and partials of module functions for upkeep); one that is not (a closure) would run
through the child's own writer instead, which is as correct, only slower. If the parent goes
away, every pending and later submit raises ``ConnectionError``; the run that was writing
keeps its lease until it expires and is then taken back, as after any crash.

A caller that stops waiting (its timeout) withdraws its unit as with a local writer: the
child sends a *withdraw* frame (the request id with WITHDRAW set, no body); if the web
process's writer has not started the unit, it is dropped there and the answer is
:class:`~automations.writer.Abandoned`, else the unit's own outcome follows as usual. The
caller waits STARTED_GRACE seconds for either.
"""
from __future__ import annotations

import contextlib
import io
import itertools
import logging
import pickle
import queue
import socket
import struct
import threading
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

from .writer import STARTED_GRACE, Abandoned, BatchWriter, Waiter, abandoned_message

log = logging.getLogger("hookline.writer")

T = TypeVar("T")
_HEADER = struct.Struct("!I")
MAX_FRAME = 256 * 1024 * 1024  # a step record is capped far below this; anything larger is a bug
WITHDRAW = 1 << 63  # set in a request id: withdraw that unit if it has not started


class ChannelClosed(ConnectionError):
    """The other end of the writer channel is gone."""


def _read_frame(reader: io.BufferedReader) -> bytes | None:
    head = reader.read(_HEADER.size)
    if len(head) < _HEADER.size:
        return None
    (size,) = _HEADER.unpack(head)
    if size > MAX_FRAME:
        raise ChannelClosed(f"writer channel: a frame of {size} bytes")
    data = reader.read(size)
    return data if len(data) == size else None


def _frames(sock: socket.socket) -> Iterator[bytes]:
    """Each frame from ``sock`` until the other end closes it."""
    reader = sock.makefile("rb")
    while (data := _read_frame(reader)) is not None:
        yield data


def _frame(payload: Any) -> bytes:
    data = pickle.dumps(payload, pickle.HIGHEST_PROTOCOL)
    return _HEADER.pack(len(data)) + data


def _portable_exception(exc: BaseException) -> BaseException:
    """``exc`` if it survives pickling, else a RuntimeError that says what it was."""
    try:
        pickle.loads(pickle.dumps(exc))
        return exc
    except Exception:  # noqa: BLE001 - any exception that does not pickle is described instead
        return RuntimeError(f"{type(exc).__name__}: {exc}")


class RemoteWriter:
    """Stands in for a :class:`BatchWriter` in the runner child: ``submit`` sends the unit to
    the parent's writer and blocks until the parent has committed it (or the unit failed).
    ``remote`` tells callers that work done in a unit is done by the web process, so reads
    that need not be in the unit's transaction are better done here."""

    remote = True

    def __init__(self, sock: socket.socket, local: BatchWriter) -> None:
        self._sock = sock
        self._local = local  # for units that cannot be pickled
        self._ids = itertools.count(1)
        self._pending: dict[int, Waiter] = {}
        self._lock = threading.Lock()  # guards _pending, _closed and the socket's send side
        self._closed = False
        self._reader = threading.Thread(target=self._read_replies, name="hookline-remote-writer", daemon=True)
        self._reader.start()

    def submit(self, work: Callable[..., T], timeout: float = 60.0, grace: float = STARTED_GRACE) -> T:
        try:
            frame_body = pickle.dumps(work, pickle.HIGHEST_PROTOCOL)
        except (pickle.PicklingError, AttributeError, TypeError):
            return self._local.submit(work, timeout, grace)
        waiter = Waiter()
        with self._lock:
            if self._closed:
                raise ChannelClosed("the web process's writer is gone")
            rid = next(self._ids)
            self._pending[rid] = waiter
            try:
                self._sock.sendall(_HEADER.pack(len(frame_body) + 8) + struct.pack("!Q", rid) + frame_body)
            except OSError as exc:
                self._pending.pop(rid, None)
                raise ChannelClosed(f"the web process's writer is gone: {exc}") from exc
        if waiter.wait(timeout):
            return waiter.outcome()
        self._withdraw(rid)
        if waiter.wait(grace):  # Abandoned if it was withdrawn, else its own outcome
            try:
                return waiter.outcome()
            except Abandoned:
                raise Abandoned(abandoned_message(timeout)) from None
        with self._lock:
            self._pending.pop(rid, None)
        raise TimeoutError(f"the web process's writer began this but did not commit it within "
                           f"{timeout + grace:g} s; it may still commit")

    def _withdraw(self, rid: int) -> None:
        with self._lock:
            if self._closed:
                return  # the waiter has been failed (or is about to be) with ChannelClosed
            # A broken channel needs nothing here: the reader sees it close and fails the waiter.
            with contextlib.suppress(OSError):
                self._sock.sendall(_HEADER.pack(8) + struct.pack("!Q", rid | WITHDRAW))

    def _read_replies(self) -> None:
        try:
            for data in _frames(self._sock):
                rid, ok, value = pickle.loads(data)
                with self._lock:
                    waiter = self._pending.pop(rid, None)
                if waiter is None:
                    continue
                if ok:
                    waiter.set_result(value)
                else:
                    waiter.set_exception(value)
        except (OSError, ChannelClosed) as exc:
            log.warning("writer channel to the web process failed: %s", exc)
        except Exception:  # a reply that does not unpickle: a bug; fail what waits, loudly
            log.exception("writer channel to the web process: unreadable reply")
        finally:
            with self._lock:
                self._closed = True
                pending, self._pending = self._pending, {}
            for waiter in pending.values():
                waiter.set_exception(ChannelClosed("the web process's writer is gone"))

    def stop(self) -> None:
        with self._lock:
            self._closed = True
        with contextlib.suppress(OSError):
            self._sock.shutdown(socket.SHUT_RDWR)
        self._reader.join(5)
        self._sock.close()
        self._local.stop()


class WriterService:
    """In the web process: commits the units a runner child sends, through this process's
    writer (so they share its batches), and sends each result back. Replies are sent by a
    thread of their own, several per ``sendall``: the writer thread only queues them, since
    every socket call would hand the GIL away mid-batch."""

    def __init__(self, sock: socket.socket, writer: BatchWriter) -> None:
        self._sock = sock
        self._writer = writer
        self._replies: queue.SimpleQueue[bytes | None] = queue.SimpleQueue()
        # The units sent to the writer and not yet started there, by request id: taken out
        # (atomically) by whichever comes first, the writer starting one or the child withdrawing it.
        self._unstarted: dict[int, _Relay] = {}
        self._reader = threading.Thread(target=self._serve, name="hookline-writer-service", daemon=True)
        self._sender = threading.Thread(target=self._send_replies, name="hookline-writer-replies", daemon=True)

    def start(self) -> WriterService:
        self._sender.start()
        self._reader.start()
        return self

    def _serve(self) -> None:
        try:
            for data in _frames(self._sock):
                (rid,) = struct.unpack_from("!Q", data)
                if rid & WITHDRAW:
                    self._withdraw(rid & ~WITHDRAW)
                    continue
                try:
                    work = pickle.loads(data[8:])
                except Exception as exc:  # noqa: BLE001 - answered, not fatal
                    self._replies.put(_frame((rid, False, _portable_exception(exc))))
                    continue
                relay = _Relay(rid, self._replies, self._unstarted)
                self._unstarted[rid] = relay
                self._writer.submit_to(work, relay)
        except (OSError, ChannelClosed) as exc:
            log.warning("writer channel to the runner child failed: %s", exc)
        except Exception:  # a malformed frame: a bug; the child then sees the channel close
            log.exception("writer channel to the runner child: unreadable request")
        finally:
            self._replies.put(None)

    def _withdraw(self, rid: int) -> None:
        """The child gave up on unit ``rid``: drop it unless the writer has started it (or
        finished it: its answer is then on its way)."""
        if self._unstarted.pop(rid, None) is not None:  # the writer's start() now says False
            self._replies.put(_frame((rid, False, Abandoned("withdrawn before the web process's writer began it"))))

    def _send_replies(self) -> None:
        while True:
            item = self._replies.get()
            batch = []
            while item is not None:
                batch.append(item)
                try:
                    item = self._replies.get_nowait()
                except queue.Empty:
                    break
            if batch:
                with contextlib.suppress(OSError):  # the child is gone: _serve sees end-of-file and stops
                    self._sock.sendall(b"".join(batch))
            if item is None:  # _serve has stopped: close, so a child still waiting is told at once
                with contextlib.suppress(OSError):
                    self._sock.shutdown(socket.SHUT_RDWR)
                return

    def stop(self) -> None:
        with contextlib.suppress(OSError):
            self._sock.shutdown(socket.SHUT_RDWR)
        self._reader.join(5)
        self._sender.join(5)
        self._sock.close()


class _Relay:
    """The completion of a unit a runner child sent: its outcome, framed for the reply
    thread (framed here, in the writer thread, where it is ready at no extra hand-over).
    Started by taking itself out of ``unstarted`` (a withdrawal takes it out first)."""

    __slots__ = ("_replies", "_rid", "_unstarted")

    def __init__(self, rid: int, replies: queue.SimpleQueue[bytes | None], unstarted: dict[int, _Relay]) -> None:
        self._rid, self._replies, self._unstarted = rid, replies, unstarted

    def start(self) -> bool:
        return self._unstarted.pop(self._rid, None) is not None

    def gave_up(self) -> bool:
        return self._rid not in self._unstarted  # asked only before the writer starts the unit

    def set_result(self, value: Any) -> None:
        try:
            reply = _frame((self._rid, True, value))
        except Exception as err:  # noqa: BLE001 - a result that does not pickle
            reply = _frame((self._rid, False, _portable_exception(err)))
        self._replies.put(reply)

    def set_exception(self, exc: BaseException) -> None:
        self._replies.put(_frame((self._rid, False, _portable_exception(exc))))  # always pickles
