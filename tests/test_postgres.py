"""The scale-out store: the same engine on PostgreSQL, with several workers sharing the queue."""
from __future__ import annotations

import threading

import pytest
from sqlalchemy import func, select

from automations import queue, recipes
from automations.inbound import InboundRequest, accept
from automations.models import Run
from automations.runner import Runner
from tests.live import LiveServer, make_live_app
from tests.pg import temp_database
from tests.sinks import HttpSink
from web.extensions import db

pytestmark = pytest.mark.postgres


@pytest.fixture(scope="module")
def pg_url():
    yield from temp_database()


@pytest.fixture
def pg_app(tmp_path, pg_url):
    app = make_live_app(tmp_path, DATABASE_URL=pg_url)
    yield app
    with app.app_context():
        db.session.remove()
        db.drop_all()
        db.engine.dispose()


def test_webhook_delivered_on_postgres(tmp_path, pg_app):
    with HttpSink() as sink:
        with pg_app.app_context():
            token = recipes.create(db.session, "pg", {"fields": [{"name": "n", "path": "$.n"}], "steps": [
                {"key": "a", "action": "http_request",
                 "inputs": {"method": "POST", "url": sink.url, "body_type": "json", "body": '{"n": {{ n }}}'}}]}).token
        server = LiveServer(pg_app)
        try:
            assert server.post(token, json={"n": 5}).status_code == 202
            assert sink.wait_for(1)[0].json() == {"n": 5}
        finally:
            server.close()


def test_a_step_input_postgres_json_cannot_hold_is_recorded_and_sent_once(pg_app):
    """A rendered input holding NaN or a date (``{{ x | float }}`` of "nan", ``{{ now() }}``)
    was refused by PostgreSQL's json after the request went out: the run stayed "running"
    and was sent again at each lease expiry. Now it is recorded (NaN as text) and sent once."""
    from tests.test_e2e import steps_of, wait_run

    with HttpSink() as sink:
        with pg_app.app_context():
            token = recipes.create(db.session, "pg", {"fields": [{"name": "x", "path": "$.x"}], "steps": [
                {"key": "a", "action": "http_request",
                 "inputs": {"method": "POST", "url": sink.url, "body_type": "json", "body": "{}",
                            "headers": {"X-Ratio": "{{ x | float }}", "X-At": "{{ now() }}"},
                            "query": {"r": "{{ [x | float, -(x | float)] }}"}}}]}).token
        server = LiveServer(pg_app)
        try:
            run_id = server.post(token, json={"x": "inf"}).json()["run_id"]
            assert wait_run(pg_app, run_id) == "succeeded"
            assert len(sink.wait_for(1)) == 1
            [step] = steps_of(pg_app, run_id)
            assert step["input"]["headers"]["X-Ratio"] == "Infinity"
            assert step["input"]["query"] == {"r": ["Infinity", "-Infinity"]}
            assert step["input"]["headers"]["X-At"] == sink.requests[0].headers["X-At"]
        finally:
            server.close()


def test_concurrent_workers_never_claim_the_same_run(pg_app):
    core = pg_app.extensions["hookline"]
    with pg_app.app_context():
        recipe = recipes.create(db.session, "q", {"steps": []})
        recipe_id, token = recipe.id, recipe.token
    for n in range(300):
        accept(core.writer, core.definitions, recipe_id, token, InboundRequest("POST", "application/json", b'{"n": %d}' % n))
    claimed: list[list[int]] = []
    lock = threading.Lock()

    def worker(owner: str) -> None:
        while True:
            with core.session_factory() as s:
                ids = queue.claim(s, owner, 7, core.clock.now(), 60)
            if not ids:
                return
            with lock:
                claimed.append(ids)

    threads = [threading.Thread(target=worker, args=(f"w{i}",)) for i in range(6)]
    [t.start() for t in threads]
    [t.join() for t in threads]
    flat = [i for batch in claimed for i in batch]
    assert len(flat) == 300 and len(set(flat)) == 300


def test_two_runners_share_the_work_on_postgres(pg_app):
    with HttpSink() as sink:
        with pg_app.app_context():
            recipe = recipes.create(db.session, "share", {"fields": [{"name": "n", "path": "$.n"}], "steps": [
                {"key": "a", "action": "http_request",
                 "inputs": {"method": "POST", "url": sink.url, "body_type": "json", "body": '{"n": {{ n }}}'}}]})
            recipe_id, token = recipe.id, recipe.token
        core = pg_app.extensions["hookline"]
        for n in range(60):
            accept(core.writer, core.definitions, recipe_id, token, InboundRequest("POST", "application/json", b'{"n": %d}' % n))
        runners = [Runner(core, threads=3).start() for _ in range(2)]
        try:
            sink.wait_for(60, timeout=30)
        finally:
            for r in runners:
                r.stop(5)
        assert sorted(r.json()["n"] for r in sink.requests) == list(range(60))
        with pg_app.app_context():
            succeeded = db.session.scalar(select(func.count()).select_from(Run).where(Run.status == "succeeded"))
            assert succeeded == 60


def test_concurrent_duplicates_across_processes_make_one_run(tmp_path, pg_app, pg_url):
    other = make_live_app(tmp_path / "other", DATABASE_URL=pg_url)  # a second server on the same database
    cores = [pg_app.extensions["hookline"], other.extensions["hookline"]]
    with pg_app.app_context():
        recipe = recipes.create(db.session, "dd", {"settings": {"dedupe": {"path": "$.id"}}})
        recipe_id, token = recipe.id, recipe.token
    results = []
    start = threading.Barrier(20)

    def deliver(i: int) -> None:
        core = cores[i % 2]
        start.wait()
        results.append(accept(core.writer, core.definitions, recipe_id, token,
                              InboundRequest("POST", "application/json", b'{"id": "evt_1"}')))

    threads = [threading.Thread(target=deliver, args=(i,)) for i in range(20)]
    [t.start() for t in threads]
    [t.join() for t in threads]
    assert len(results) == 20
    assert sum(not r.duplicate for r in results) == 1
    assert len({r.run_id for r in results}) == 1
    with pg_app.app_context():
        assert db.session.scalar(select(func.count()).select_from(Run).where(Run.recipe_id == recipe_id)) == 1
    with other.app_context():
        db.engine.dispose()


def test_webhooks_stored_in_one_batch_keep_their_own_runs_on_postgres(pg_app):
    from automations.inbound import StoreUnit, event_values, store_many
    from automations.models import Event

    core = pg_app.extensions["hookline"]
    with pg_app.app_context():
        recipe = recipes.create(db.session, "r", {})
        rid, token = recipe.id, recipe.token
        db.session.commit()
        now = core.clock.now()
        units = []
        for n in range(40):
            req = InboundRequest("POST", "application/json", f'{{"n": {n}}}'.encode(),
                                 {"content-type": "application/json"})
            units.append(StoreUnit(core.definitions, rid, token, req.headers, event_values(rid, req, now), now))
        with core.engine.begin() as conn:
            accepted = store_many(conn, units)
        for n, a in enumerate(accepted):
            run = db.session.get(Run, a.run_id)
            assert db.session.get(Event, run.event_id).body == {"n": n} and run.status == "queued"


def test_webhooks_are_stored_after_the_writers_connection_was_killed(pg_app):
    """The writer keeps its connection between batches: one that PostgreSQL dropped meanwhile
    (a restart, an idle-connection reaper, an admin's pg_terminate_backend) must cost no write."""
    from sqlalchemy import create_engine, text

    from tests.pg import admin_url

    core = pg_app.extensions["hookline"]
    with pg_app.app_context():
        recipe = recipes.create(db.session, "r", {})
        rid, token = recipe.id, recipe.token
        db.session.commit()

    def store(n: int) -> int:
        req = InboundRequest("POST", "application/json", f'{{"n": {n}}}'.encode(), {"content-type": "application/json"})
        return accept(core.writer, core.definitions, rid, token, req).run_id

    def backend_pid() -> int:
        return core.writer.submit(lambda conn: conn.exec_driver_sql("select pg_backend_pid()").scalar())

    store(0)
    killed = backend_pid()
    assert backend_pid() == killed  # the same connection between batches
    admin = create_engine(admin_url(), isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as conn:
            assert conn.execute(text("select pg_terminate_backend(:p)"), {"p": killed}).scalar()
    finally:
        admin.dispose()
    run_id = store(1)  # the batch fails on the dead connection, and is run again on a new one
    assert backend_pid() != killed
    with pg_app.app_context():
        assert db.session.scalar(select(func.count()).select_from(Run).where(Run.recipe_id == rid)) == 2
        assert db.session.get(Run, run_id).status == "queued"


def test_claimed_runs_are_read_through_core_on_postgres(pg_app):
    """read_claimed (the runner child's read of what it claimed) takes Core's path here, with
    Core's rows: decoded JSON and dates, and nothing for an id that is not there."""
    from automations.executor import read_claimed

    core = pg_app.extensions["hookline"]
    with pg_app.app_context():
        recipe = recipes.create(db.session, "pg-read", {})
        rid, token = recipe.id, recipe.token
        db.session.commit()
    req = InboundRequest("POST", "application/json", b'{"n": 5}', {"content-type": "application/json", "X-N": "1"},
                         {"q": ["a"]})
    run_id = accept(core.writer, core.definitions, rid, token, req, core.clock).run_id
    rows = read_claimed(core.read_engine, [run_id, run_id + 1000])
    assert list(rows) == [run_id]
    row = rows[run_id]
    assert row.body == {"n": 5} and row.headers["X-N"] == "1" and row.query == {"q": ["a"]}
    assert row.received_at is not None and row.status == "queued"


def test_the_editors_sample_choices_read_on_postgres(pg_app):
    """The list of recent events the recipe editor offers (sizes from the stored bytes) and
    its default, the newest structured one, on PostgreSQL's types (bytea, not SQLite's blob)."""
    from automations import history
    from automations.models import Event
    from tests.conftest import signed_in_client

    client = signed_in_client(pg_app)
    with pg_app.app_context():
        recipe = recipes.create(db.session, "r", {"fields": [{"name": "n", "path": "$.n"}]})
        rid, token = recipe.id, recipe.token
    client.post(f"/hooks/{token}", json={"n": 1, "tier": "gold"})
    client.post(f"/hooks/{token}", data="{broken", content_type="application/json")
    with pg_app.app_context():
        choices = history.sample_choices(db.session, rid)
        assert [(c.body_kind, c.parse_failed) for c in choices] == [("text", True), ("json", False)]
        assert [c.size for c in choices] == [len(db.session.get(Event, c.id).body_raw) for c in choices] != [0, 0]
        assert history.sample_event(db.session, rid, choices).body == {"n": 1, "tier": "gold"}
    page = client.get(f"/recipes/{rid}/edit").get_data(as_text=True)
    assert 'data-path="$.tier"' in page
