"""Executing one claimed run: the single funnel every attempt goes through.

Order of business: load what the run needs and close the transaction (no database lock is
ever held across network I/O); extract fields; then for each step not yet done: render,
call the connector, and checkpoint the result. The ``except`` ladder decides the outcome:
``RetryableError`` → scheduled retry (or dead), ``PermanentError``/mapping/template errors
→ failed, anything else → a bug: logged with its traceback, failed, not retried.
Every write checks the lease, so a worker that lost its run cannot overwrite the new owner.
"""
from __future__ import annotations

import logging
import threading
import time
import traceback
from dataclasses import dataclass
from datetime import datetime
from functools import partial
from types import SimpleNamespace
from typing import Any

from sqlalchemy import Connection as DBConnection
from sqlalchemy import Engine, bindparam, select, update

from connectors.base import ActionContext, ActionResult, PermanentError, RetryableError
from connectors.registry import ACTIONS

from . import alerts, queue, run_if
from . import connections as connections_mod
from .core import Core
from .mapping import MappingError, extract
from .models import Connection, Event, Run, RunStatus, StepRun
from .redact import redact_values
from .retry import RetryPolicy, next_attempt_at
from .secrets import SecretsError
from .sqlite_rows import execute_many, insert_rows, read_each
from .templating import TemplateError, build_context, render_inputs

log = logging.getLogger("hookline.runner")

@dataclass
class _Loaded:
    run: Run
    event: Event
    definition: dict[str, Any] | None
    connections: dict[int, Connection]


class LeaseLost(Exception):
    """Another worker owns the run now (our lease expired); stop without writing."""


_RUN_COLS = (Run.id, Run.event_id, Run.recipe_id, Run.recipe_version, Run.status, Run.attempt,
             Run.lease_owner, Run.step_index, Run.outputs, Run.created_at, Run.started_at)
_EVENT_COLS = (Event.method, Event.headers, Event.query, Event.body, Event.parse_error, Event.received_at)
_LOAD = select(*_RUN_COLS, *_EVENT_COLS).join(Event, Event.id == Run.event_id).where(Run.id == bindparam("b_id"))


def read_claimed(engine: Engine, ids: list[int]) -> dict[int, Any]:
    """The rows of runs just claimed, read once the claim committed, so a run thread that gets
    its row with the run id starts without a database round trip of its own: each run with
    its event, one statement per run, on SQLite through the cursor outside a transaction
    (``sqlite_rows.read_each``: no writer lock held, no transaction's fixed cost)."""
    return {row.id: row for row in read_each(engine, _LOAD, [{"b_id": i} for i in ids])}


def _namespaces(row: Any) -> tuple[SimpleNamespace, SimpleNamespace]:
    # plain namespaces: ORM instances cost more than the query; a Core row or a named tuple
    return (SimpleNamespace(**{c.key: getattr(row, c.key) for c in _RUN_COLS}),
            SimpleNamespace(**{c.key: getattr(row, c.key) for c in _EVENT_COLS}))


def _connection_ids(definition: dict[str, Any] | None) -> set[int]:
    return {st["connection"] for st in (definition or {}).get("steps", []) if st.get("connection")}


def _load(core: Core, run_id: int, owner: str, claimed: Any = None) -> _Loaded | None:
    """The run joined with its event, its definition and its connections. ``claimed`` is the
    row :func:`read_claimed` read; with it, a cached definition and connections read less than
    a second ago, no database access is needed at all (the hot path of every run)."""
    if claimed is not None:
        definition = core.definitions.peek(claimed.recipe_id, claimed.recipe_version)
        if definition is not None:
            run, event = _namespaces(claimed)
            return _Loaded(run, event, definition, _connections(core, definition))
    with core.read_engine.connect() as conn:
        row = claimed if claimed is not None else conn.execute(_LOAD, {"b_id": run_id}).first()
        if row is None or row.status != RunStatus.RUNNING.value or row.lease_owner != owner:
            return None
        run, event = _namespaces(row)
        definition = core.definitions.get(conn, run.recipe_id, run.recipe_version)
        conn.commit()
    return _Loaded(run, event, definition, _connections(core, definition))


def _connections(core: Core, definition: dict[str, Any] | None) -> dict[int, Any]:
    ids = _connection_ids(definition)
    return core.connection_rows(ids) if ids else {}


def trigger_of(event: Event) -> dict[str, Any]:
    body = event.body
    if body is None and event.query:
        body = event.query  # GET hooks carry their data in the query string
    return {"body": body, "headers": event.headers or {}, "query": event.query or {},
            "method": event.method, "received_at": event.received_at.isoformat() + "Z"}


def execute(core: Core, run_id: int, owner: str, claimed: Any = None,
            stopping: threading.Event | None = None) -> str | None:
    """Run one claimed run to its next resting state; returns that status (None if not ours).
    ``claimed``: the run's row from :func:`read_claimed`, if the claimer read it. ``stopping``:
    set when the runner shuts down; the run then starts no further step: it is released at
    its last checkpoint (queued, due now, this attempt not counted) for whoever runs next."""
    loaded = _load(core, run_id, owner, claimed)
    if loaded is None:
        return None
    run, event, definition = loaded.run, loaded.event, loaded.definition
    if definition is None:
        return _finish(core, run, owner, RunStatus.FAILED, "the recipe of this run was deleted")
    if event.parse_error:
        return _finish(core, run, owner, RunStatus.FAILED, f"mapping error: {event.parse_error}")
    if run.attempt > 1 and run.attempt > (limit := RetryPolicy.from_settings(definition.get("settings")).max_attempts):
        # Every claim counts an attempt; one past the limit means earlier attempts never
        # recorded an outcome (their worker crashed or lost the run each time): stop the loop.
        error = (f"gave up: attempt {run.attempt} of at most {limit}, and the earlier ones did not finish "
                 "(the worker running them stopped or crashed each time; see the server log)")
        status = _finish(core, run, owner, RunStatus.DEAD, error)
        alerts.after_dead(core, run.id, run.recipe_id, definition.get("settings") or {}, error)
        return status
    trigger = trigger_of(event)
    try:
        fields = extract(definition.get("fields", []), trigger["body"])
    except MappingError as exc:
        return _finish(core, run, owner, RunStatus.FAILED, f"mapping error: {exc}")
    outputs = dict(run.outputs or {})
    steps = definition.get("steps", [])
    try:
        for index in range(run.step_index, len(steps)):
            if stopping is not None and stopping.is_set():
                return _release(core, run, owner)
            status = _execute_step(core, run, owner, index, steps[index], trigger, fields, outputs,
                                   loaded.connections, definition.get("settings") or {},
                                   last=index == len(steps) - 1, steps=steps)
            if status is not None:
                return status
    except LeaseLost:
        log.warning("run %s: lease lost to another worker; stopping", run.id)
        return None
    if run.step_index >= len(steps):  # no steps at all, or resumed after the last checkpoint
        return _finish(core, run, owner, RunStatus.SUCCEEDED, None)
    return RunStatus.SUCCEEDED.value


def _execute_step(core: Core, run: Run, owner: str, index: int, step: dict[str, Any],
                  trigger: dict[str, Any], fields: dict[str, Any], outputs: dict[str, Any],
                  conns: dict[int, Connection], settings: dict[str, Any], last: bool,
                  steps: list[dict[str, Any]]) -> str | None:
    """Returns a final/retry/waiting status to stop at, or None to go on with the next step.
    ``steps``: the recipe's, for the retry policy's maximum age (see :func:`_age_from`)."""
    key, action_key = step["key"], step["action"]
    conn = conns.get(step.get("connection")) if step.get("connection") else None
    try:
        connections_mod.secret_values(core.secret_box, conn)  # this step's own must decrypt
        # Every connection of the recipe, not only this step's: an earlier step's output (an
        # API echoing its token) flows into this step's inputs, and is scrubbed from it too.
        secrets = _recipe_secrets(core, conns)
    except SecretsError as exc:  # else it escapes the run, which then loops on lease expiry unseen
        return _finish(core, run, owner, RunStatus.FAILED,
                       f"step '{key}' ({action_key}): the connection's secrets cannot be decrypted here ({exc}); "
                       "every process must share the same ENCRYPTION_KEYS (see README, Scale-out)")
    started, t0 = core.clock.now(), time.perf_counter()
    # A plain namespace, not an ORM instance: it is only ever inserted, and ORM attribute
    # instrumentation costs more than the insert.
    record = SimpleNamespace(run_id=run.id, step_key=key, position=index, action=action_key,
                             attempt=run.attempt, started_at=started, status=None, input=None,
                             request=None, response=None, error=None, duration_ms=None)
    context = build_context(trigger, fields, outputs)
    if (verdict := run_if.judge(step.get("run_if"), context)).skip:
        return _skip(core, run, owner, record, verdict, t0, secrets, outputs, index, last)
    inputs: dict[str, Any] | None = None
    retry_after: float | datetime | None = None
    halted: str | None = None  # why the run ends at this step ("only continue if")
    resume_at: datetime | None = None  # when the next step is due ("delay")
    action = ACTIONS.get(action_key)
    try:
        if action is None:
            raise PermanentError(f"unknown action '{action_key}'")
        if step.get("connection") and conn is None:
            raise PermanentError(f"connection {step['connection']} no longer exists")
        try:
            inputs = render_inputs(ACTIONS[action_key].fields, step.get("inputs") or {}, context)
        except TemplateError as exc:
            if action.halts is None:
                raise
            # a condition that cannot be worked out for this event (the value it compares is
            # missing): the event is not one this recipe acts on
            inputs, halted = {}, f"the condition could not be evaluated for this event ({exc})"
        if halted:
            result = ActionResult(output={"passed": False, "reason": halted})
        else:
            ctx = ActionContext(inputs=inputs, credentials=connections_mod.credentials_for(core.secret_box, conn),
                                http=core.http, idempotency_key=f"hookline-{run.id}-{key}", now=started)
            result = action.run(ctx)
            if action.halts is not None and action.halts(inputs):
                halted = "the condition was false"
            if action.waits is not None:
                resume_at = action.waits(inputs, started)
    except RetryableError as exc:
        outcome, retry_after = "retrying", exc.retry_after
        record.error, record.request, record.response = exc.message, exc.request, exc.response
    except (PermanentError, TemplateError, MappingError) as exc:
        outcome = "failed"
        record.error = getattr(exc, "message", None) or str(exc)
        record.request, record.response = getattr(exc, "request", None), getattr(exc, "response", None)
    except Exception as exc:  # a bug in a connector or in our code: never retried
        log.exception("run %s step %s (%s) crashed\n%s", run.id, key, action_key,  # traceback as text, the
                      redact_values(traceback.format_exc(), secrets).rstrip(), exc_info=False)  # secrets out
        outcome = "failed"
        record.error = f"internal error ({type(exc).__name__}): {exc}\n" + traceback.format_exc(limit=8)
    else:
        outcome = "succeeded"
        record.request, record.response = result.request, result.response
        outputs[key] = result.output
    record.status = outcome
    record.duration_ms = int((time.perf_counter() - t0) * 1000)
    record.input = inputs
    _scrub(record, secrets)
    if outcome == "succeeded":
        if halted and action is not None:  # an "Only continue if" said no: the later steps do not run
            later = "" if last else "; the later steps did not run"
            return _finish(core, run, owner, RunStatus.FILTERED,
                           f"stopped at step '{key}' ({action.label}): {halted}{later}",
                           record, outputs, index + 1)
        if last:
            return _finish(core, run, owner, RunStatus.SUCCEEDED, None, record, outputs, index + 1)
        if resume_at is not None and resume_at > core.clock.now():
            return _wait(core, run, owner, record, outputs, index + 1, resume_at)
        _checkpoint(core, run, owner, record, outputs, index + 1)
        return None
    error = f"step '{key}' ({action_key}): {record.error}"
    if outcome == "failed":
        return _finish(core, run, owner, RunStatus.FAILED, error, record, outputs, index)
    policy = RetryPolicy.from_settings(settings)
    now = core.clock.now()
    when = next_attempt_at(policy, run.attempt, _age_from(run.created_at, steps, outputs), now, retry_after)
    if when is None:
        error += f" (gave up after {run.attempt} attempts)"
        status = _finish(core, run, owner, RunStatus.DEAD, error, record, outputs, index)
        alerts.after_dead(core, run.id, run.recipe_id, settings, error)
        return status
    _write(core, run, owner, record, status=RunStatus.QUEUED.value, error=error, next_attempt_at=when,
           lease_owner=None, lease_expires_at=None, step_index=index, outputs=outputs)
    if core.writer.submit(partial(queue.hold_if_paused, run_id=run.id)):  # paused meanwhile
        return RunStatus.HELD.value
    return RunStatus.QUEUED.value


def _skip(core: Core, run: Run, owner: str, record: SimpleNamespace, verdict: run_if.Verdict, t0: float,
          secrets: list[str], outputs: dict[str, Any], index: int, last: bool) -> str | None:
    """A step whose "only run if" said no: recorded as skipped, with why; the run goes on."""
    record.status, record.error, record.input = "skipped", verdict.skip, {"run_if": verdict.value}
    record.duration_ms = int((time.perf_counter() - t0) * 1000)
    _scrub(record, secrets)
    if last:
        return _finish(core, run, owner, RunStatus.SUCCEEDED, None, record, outputs, index + 1)
    _checkpoint(core, run, owner, record, outputs, index + 1)
    return None


def _recipe_secrets(core: Core, conns: dict[int, Any]) -> list[str]:
    secrets: list[str] = []
    for other in conns.values():
        try:
            secrets += connections_mod.secret_values(core.secret_box, other)
        except SecretsError:  # another step's connection: that step fails with the reason
            continue
    return secrets


def _scrub(record: SimpleNamespace, secrets: list[str]) -> None:
    if not secrets:
        return
    record.input = redact_values(record.input, secrets)
    record.request = redact_values(record.request, secrets)
    record.response = redact_values(record.response, secrets)
    record.error = redact_values(record.error, secrets)


def _checkpoint(core: Core, run: Run, owner: str, record: SimpleNamespace, outputs: dict[str, Any],
                step_index: int) -> None:
    _write(core, run, owner, record, step_index=step_index, outputs=outputs)


def _wait(core: Core, run: Run, owner: str, record: SimpleNamespace, outputs: dict[str, Any],
          step_index: int, resume_at: datetime) -> str:
    """A delay step: the run goes back to the queue, due at ``resume_at``, checkpointed after
    the delay, with no lease and this attempt not counted (the claim that resumes it counts it
    again), so no thread waits and a restart loses nothing. Held at once if the recipe was
    paused meanwhile, as a retry is."""
    _write(core, run, owner, record, status=RunStatus.QUEUED.value, error=None, next_attempt_at=resume_at,
           lease_owner=None, lease_expires_at=None, step_index=step_index, outputs=outputs,
           attempt=run.attempt - 1)
    if core.writer.submit(partial(queue.hold_if_paused, run_id=run.id)):
        return RunStatus.HELD.value
    return RunStatus.QUEUED.value


def _age_from(created_at: datetime, steps: list[dict[str, Any]], outputs: dict[str, Any]) -> datetime:
    """When the retry policy's maximum age starts: the run's creation, or the end of the last
    delay it came out of, so a step after a week's delay has the whole retry window (its
    ``until``, naive UTC with a Z, is in the delay step's output)."""
    latest = created_at
    for step in steps:
        action, out = ACTIONS.get(step.get("action", "")), outputs.get(step.get("key", ""))
        if action is None or action.waits is None or not isinstance(out, dict) or not isinstance(out.get("until"), str):
            continue
        try:
            latest = max(latest, datetime.fromisoformat(out["until"].removesuffix("Z")))
        except (ValueError, TypeError):  # naive and aware cannot compare: an output not written by us
            continue
    return latest


def _release(core: Core, run: Run, owner: str) -> str:
    """Give the run back before its next step (the runner is stopping), as ``queue.release``
    does for runs never started: due now, no lease, the attempt not counted. Its steps so far
    are checkpointed, so the next worker resumes at ``run.step_index``."""
    _write(core, run, owner, None, status=RunStatus.QUEUED.value, lease_owner=None, lease_expires_at=None,
           next_attempt_at=core.clock.now(), attempt=run.attempt - 1)
    log.info("run %s: released before step %d (the runner is stopping)", run.id, run.step_index + 1)
    return RunStatus.QUEUED.value


def _finish(core: Core, run: Run, owner: str, status: RunStatus, error: str | None,
            record: SimpleNamespace | None = None, outputs: dict[str, Any] | None = None,
            step_index: int | None = None) -> str:
    now = core.clock.now()
    started = run.started_at or now
    values: dict[str, Any] = {"status": status.value, "error": error, "finished_at": now,
                                  "duration_ms": int((now - started).total_seconds() * 1000),
                                  "lease_owner": None, "lease_expires_at": None, "next_attempt_at": None}
    if outputs is not None:
        values["outputs"] = outputs
    if step_index is not None:
        values["step_index"] = step_index
    _write(core, run, owner, record, **values)
    return status.value


_STEP_COLUMNS = tuple(c.key for c in StepRun.__table__.columns if c.key != "id")
# Built once; the SET clause comes from each call's parameter names.
_GUARDED_UPDATE = update(Run).where(Run.id == bindparam("b_id"), Run.lease_owner == bindparam("b_owner"),
                                    Run.status == RunStatus.RUNNING.value)
# The executor's writes are also fenced on the attempt: every claim counts one, so a stale
# attempt of a run taken back and claimed again, even by the same owner, writes nothing.
_FENCED_UPDATE = _GUARDED_UPDATE.where(Run.attempt == bindparam("b_attempt"))


def _write(core: Core, run: Run, owner: str, record: SimpleNamespace | None, **values: Any) -> None:
    """The step record and the run's new state, only if we still hold the lease. Returns
    once committed."""
    row = {k: getattr(record, k) for k in _STEP_COLUMNS} if record is not None else None
    core.writer.submit(RunWrite(run.id, {**values, "b_id": run.id, "b_owner": owner, "b_attempt": run.attempt},
                                row))
    for k, v in values.items():
        setattr(run, k, v)


class RunWrite:
    """One run's write, as a unit of the batch writer. Runs finishing together with the same
    columns to set are written with one executemany per statement; if any lease was lost the
    batch fails and the writer re-runs each unit alone, so only that run sees LeaseLost."""

    def __init__(self, run_id: int, params: dict[str, Any], row: dict[str, Any] | None) -> None:
        self.run_id, self.params, self.row = run_id, params, row
        self.batch_key = ("executor.write", tuple(sorted(params)), row is not None)

    @property
    def _update(self) -> Any:  # fenced on the attempt when the write names it (the executor's always do)
        return _FENCED_UPDATE if "b_attempt" in self.params else _GUARDED_UPDATE

    def __call__(self, conn: DBConnection) -> None:
        if execute_many(conn, self._update, [self.params]) != 1:
            raise LeaseLost(self.run_id)
        if self.row is not None:
            insert_rows(conn, StepRun.__table__, [self.row])

    @staticmethod
    def run_many(conn: DBConnection, units: list[RunWrite]) -> list[None]:
        if not conn.dialect.supports_sane_multi_rowcount:  # cannot tell whose lease was lost
            return [unit(conn) for unit in units]
        if execute_many(conn, units[0]._update, [u.params for u in units]) != len(units):  # one key: one form
            raise LeaseLost(units[0].run_id)  # someone's: the writer re-runs each unit alone
        insert_rows(conn, StepRun.__table__, [u.row for u in units if u.row is not None])
        return [None] * len(units)
