"""Old finished history is purged in batches; unfinished runs are never touched."""
from __future__ import annotations

from sqlalchemy import func, select

from automations import recipes, retention
from automations.clock import FrozenClock
from automations.inbound import InboundRequest, accept
from automations.models import DedupeKey, Event, Run
from tests.live import make_live_app
from web.extensions import db


def counts(app):
    with app.app_context():
        return {m.__name__: db.session.scalar(select(func.count()).select_from(m)) for m in (Run, Event, DedupeKey)}


def test_purge_keeps_recent_and_unfinished_history(tmp_path):
    app = make_live_app(tmp_path)
    core = app.extensions["hookline"]
    clock = FrozenClock()
    with app.app_context():
        r = recipes.create(db.session, "r", {"settings": {"dedupe": {"path": "$.id", "window_seconds": 3600}}})
        rid, token = r.id, r.token
    old_ids = [accept(core.writer, core.definitions, rid, token,
                      InboundRequest("POST", "application/json", b'{"id": %d}' % n), clock).run_id
               for n in range(7)]
    with app.app_context():  # five old runs finished, two still queued
        for run_id in old_ids[:5]:
            db.session.get(Run, run_id).status = "succeeded"
        db.session.commit()
    clock.advance(40 * 86400)
    accept(core.writer, core.definitions, rid, token, InboundRequest("POST", "application/json", b'{"id": 99}'), clock)
    assert counts(app) == {"Run": 8, "Event": 8, "DedupeKey": 8}

    totals = retention.purge(core.writer, clock.now(), max_age_days=30, batch=2)

    assert totals == {"runs": 5, "events": 5, "dedupe_keys": 7}
    assert counts(app) == {"Run": 3, "Event": 3, "DedupeKey": 1}
    with app.app_context():
        left = sorted(db.session.scalars(select(Run.id)))
    assert left[:2] == old_ids[5:]
