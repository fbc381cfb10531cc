"""Payload search and bulk replay. Events arrive through the real inbound endpoint; the runner
is not running here, so the replays stay queued (or held)."""
from __future__ import annotations

import re
from datetime import datetime

import pytest
from sqlalchemy import select

from automations import bulk, history, recipes
from automations.history import RunFilter
from automations.models import Recipe, Run
from tests.conftest import make_app, signed_in_client
from tests.pg import temp_database
from web.extensions import db


@pytest.fixture(scope="module")
def pg_url():
    yield from temp_database()


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def any_app(request, tmp_path):
    """The same app over SQLite and over PostgreSQL (skipped when no server answers)."""
    if request.param == "sqlite":
        yield make_app(tmp_path)
        return
    app = make_app(tmp_path, DATABASE_URL=request.getfixturevalue("pg_url"))
    yield app
    with app.app_context():
        db.session.remove()
        db.drop_all()
        db.engine.dispose()


def make_recipe(app, name: str, paused: bool = False) -> tuple[int, str]:
    with app.app_context():
        r = recipes.create(db.session, name, {"fields": [{"name": "x", "path": "$.x"}]}, paused=paused)
        return r.id, r.token


def post(client, token: str, **kw) -> int:
    resp = client.post(f"/hooks/{token}", **kw)
    assert resp.status_code == 202, resp.get_data(as_text=True)
    return resp.get_json()["run_id"]


def run_ids(page: str) -> list[int]:
    return [int(n) for n in re.findall(r'<a href="/runs/(\d+)">#', page)]


BODIES = [
    {"json": {"customer": "Alice Smith", "amount": 500}},                          # 1
    {"json": {"customer": "bob", "note": "50% off"}},                              # 2
    {"data": 'Hello WORLD, order_42 "quoted"\nline two', "content_type": "text/plain"},  # 3
    {"data": {"customer": "alice"}},                                               # 4 form
    {"json": {"city": "Zürich", "path": "C:\\temp"}},                              # 5
    {"data": b"\x00\xff\xfe", "content_type": "application/octet-stream"},        # 6 binary
    {"data": "{not json at all alice", "content_type": "application/json"},        # 7 unparseable
]


@pytest.mark.parametrize("text, expected", [
    ("alice", [1, 4, 7]),
    ("ALICE smith", [1]),
    ("500", [1]),
    ("50%", [2]),              # "%" is literal: "500" does not match
    ("%", [2]),
    ("Alic_", []),             # so is "_"
    ("world", [3]),
    ('"quoted"', [3]),         # quotes inside a text body (stored JSON-escaped)
    ("order_42", [3]),
    ("zürich", [5]),           # non-ASCII (stored as \\u escapes)
    ("C:\\temp", [5]),         # backslash
    ("nowhere", []),
])
def test_text_filter_searches_the_payload(any_app, text, expected):
    client = signed_in_client(any_app)
    _id, token = make_recipe(any_app, "A")
    for body in BODIES:
        post(client, token, **body)
    with any_app.app_context():
        found = db.session.scalars(history.runs_query(RunFilter(text=text))).all()
        assert sorted(r.id for r in found) == expected
        assert history.count_runs(db.session, RunFilter(text=text)) == len(expected)
    page = client.get("/runs/", query_string={"text": text}).get_data(as_text=True)
    assert run_ids(page) == sorted(expected, reverse=True)


def test_text_filter_combines_with_the_other_filters(app, client):
    a, token_a = make_recipe(app, "A")
    _b, token_b = make_recipe(app, "B", paused=True)
    post(client, token_a, json={"who": "alice"})
    post(client, token_b, json={"who": "alice"})
    post(client, token_a, json={"who": "bob"})
    assert run_ids(client.get(f"/runs/?text=alice&recipe={a}").get_data(as_text=True)) == [1]
    assert run_ids(client.get("/runs/?text=alice&status=held").get_data(as_text=True)) == [2]


@pytest.fixture
def mixed(app, client):
    """Runs 1-3 of "A" (since changed to version 2), 4 of "Paused", 5 of a deleted recipe,
    6 of "A" without the search text. All carry "match" but run 6."""
    a, token_a = make_recipe(app, "A")
    p, token_p = make_recipe(app, "Paused")
    d, token_d = make_recipe(app, "Doomed")
    for i in range(3):
        post(client, token_a, json={"x": i, "tag": "MATCH"})
    post(client, token_p, json={"tag": "match"})
    post(client, token_d, data="a text match", content_type="text/plain")
    post(client, token_a, json={"tag": "other"})
    with app.app_context():
        recipes.update_recipe(db.session, db.session.get(Recipe, a), definition={"fields": [{"name": "x", "path": "$.y"}]})
        recipes.set_paused(db.session, db.session.get(Recipe, p), True)
        recipes.delete(db.session, db.session.get(Recipe, d))
    return a, p


def confirm(client, query: str) -> tuple[int, dict[str, str]]:
    """The confirmation page's count and its form's fields."""
    resp = client.get("/runs/bulk-replay?" + query)
    assert resp.status_code == 200
    page = resp.get_data(as_text=True)
    count = int(re.search(r'id="bulk-count"><strong>(\d+)</strong>', page).group(1))
    fields = dict(re.findall(r'<input type="hidden" name="([^"]+)" value="([^"]*)">', page))
    return count, fields


def start(client, fields: dict[str, str], version: str) -> bulk.BulkJob:
    resp = client.post("/runs/bulk-replay", data={**fields, "version": version})
    assert resp.status_code == 302
    job_id = re.search(r"/runs/bulk/([0-9a-f]+)$", resp.location).group(1)
    job = bulk.jobs[job_id]
    assert job.wait(10)
    return job


def test_runs_page_offers_bulk_replay_only_when_filtered(mixed, client):
    assert "Replay all" not in client.get("/runs/").get_data(as_text=True)
    page = client.get("/runs/?text=match").get_data(as_text=True)
    assert 'href="/runs/bulk-replay?text=match">Replay all 5 matching runs' in page
    assert "Replay all" not in client.get("/runs/?text=nothing-like-this").get_data(as_text=True)
    resp = client.get("/runs/bulk-replay")
    assert resp.status_code == 302 and resp.location.endswith("/runs/")


def test_confirmation_shows_the_exact_count(mixed, client):
    a, _p = mixed
    assert confirm(client, "text=match")[0] == 5
    assert confirm(client, f"text=match&recipe={a}")[0] == 3
    assert confirm(client, "status=queued")[0] == 5  # pausing "Paused" held its queued run 4
    page = client.get("/runs/bulk-replay?text=absent").get_data(as_text=True)
    assert "nothing to replay" in page and "<button" not in page.split("<main>")[1]


@pytest.mark.parametrize("version, a_version", [("current", 2), ("original", 1)])
def test_bulk_replay_creates_linked_runs(app, client, mixed, version, a_version):
    a, p = mixed
    count, fields = confirm(client, "text=match")
    job = start(client, fields, version)
    assert (job.state, job.total, job.done, job.held, job.skipped) == ("finished", 5, 4, 1, 1)
    assert count == job.done + job.skipped
    with app.app_context():
        replays = db.session.scalars(select(Run).where(Run.replay_of.is_not(None)).order_by(Run.id)).all()
        got = [(r.replay_of, r.recipe_id, r.recipe_version, r.status, r.event_id) for r in replays]
    assert got == [(1, a, a_version, "queued", 1), (2, a, a_version, "queued", 2),
                   (3, a, a_version, "queued", 3), (4, p, 1, "held", 4)]
    page = client.get(f"/runs/bulk/{job.id}").get_data(as_text=True)
    assert "badge-finished" in page and 'http-equiv="refresh"' not in page
    assert 'id="bulk-done">4 (1 held' in page and 'id="bulk-skipped">1 (recipe deleted)' in page
    link = re.search(r'id="bulk-replays" href="([^"]+)"', page).group(1).replace("&amp;", "&")
    assert run_ids(client.get(link).get_data(as_text=True)) == [10, 9, 8, 7]


def test_bulk_replay_counts_only_runs_shown_on_the_confirmation(mixed, client):
    count, fields = confirm(client, "text=match&status=queued")
    assert count == 4  # runs 1-3 and 5 (run 4 was held when its recipe was paused)
    with client.application.app_context():
        token = db.session.scalar(select(Recipe.token).where(Recipe.name == "A"))
    post(client, token, json={"tag": "match, arrived later"})
    job = start(client, fields, "current")
    assert (job.total, job.done, job.skipped) == (4, 3, 1)
    # the late run and the queued replays match now, but were never part of the job's snapshot
    assert confirm(client, "text=match&status=queued")[0] == 4 + 1 + 3


def test_replay_matching_works_in_chunks_and_wakes_the_runner(app, client, monkeypatch):
    _a, token = make_recipe(app, "A")
    for i in range(5):
        post(client, token, json={"x": i})
    monkeypatch.setattr(bulk, "CHUNK", 2)
    wakes: list[int] = []
    core = app.extensions["hookline"]
    job = bulk.BulkJob(id="chunks", current_version=True)
    bulk.replay_matching(core, RunFilter(status="queued"), True, job, notify=lambda: wakes.append(job.done))
    assert (job.state, job.total, job.done, job.skipped) == ("finished", 5, 5, 0)
    assert wakes == [2, 4, 5]


def test_a_failing_job_reports_its_error(app, client, monkeypatch):
    _a, token = make_recipe(app, "A")
    post(client, token, json={})

    def boom(*_args):
        raise RuntimeError("disk full")

    monkeypatch.setattr(bulk, "replay_chunk", boom)
    job = bulk.start_replay(app.extensions["hookline"], RunFilter(status="queued"), True)
    assert job.wait(10) and job.state == "failed"
    page = client.get(f"/runs/bulk/{job.id}").get_data(as_text=True)
    assert "badge-failed" in page and "RuntimeError: disk full" in page


def test_progress_page_refreshes_while_running_and_explains_unknown_jobs(client):
    job = bulk.BulkJob(id="feedbeef", current_version=False, total=10, done=3,
                       started_at=datetime(2024, 1, 1))
    bulk._register(job)
    page = client.get("/runs/bulk/feedbeef").get_data(as_text=True)
    assert '<meta http-equiv="refresh" content="1">' in page
    assert 'value="30"' in page and "each run&#39;s original version" in page
    resp = client.get("/runs/bulk/0000")
    assert resp.status_code == 404 and "lost on a restart" in resp.get_data(as_text=True)


def test_job_registry_keeps_the_last_jobs():
    for i in range(bulk.KEEP_JOBS + 5):
        bulk._register(bulk.BulkJob(id=f"old{i}", current_version=True, state="finished"))
    assert len(bulk.jobs) <= bulk.KEEP_JOBS and f"old{bulk.KEEP_JOBS + 4}" in bulk.jobs


def test_bulk_replay_post_needs_the_csrf_token(tmp_path):
    app = make_app(tmp_path, WTF_CSRF_ENABLED=True)
    client = signed_in_client(app)
    _a, token = make_recipe(app, "A")
    post(client, token, json={"x": 1})
    _count, fields = confirm(client, "status=queued")
    without = {k: v for k, v in fields.items() if k != "csrf_token"}
    assert client.post("/runs/bulk-replay", data={**without, "version": "current"}).status_code == 400
    with app.app_context():
        assert db.session.scalar(select(Run.id).where(Run.replay_of.is_not(None))) is None
    job = start(client, fields, "current")
    assert job.done == 1
