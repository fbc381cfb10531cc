"""Run history pages. Events arrive through the real inbound endpoint; the runner is not
running here, so runs stay queued (or held) unless a test records steps itself."""
from __future__ import annotations

import html
import re
from datetime import datetime

import pytest
from sqlalchemy import select, update

from automations import recipes
from automations.models import Recipe, Run, StepRun
from tests.conftest import make_app, signed_in_client
from web.extensions import db


def make_recipe(app, name: str, paused: bool = False) -> tuple[int, str]:
    with app.app_context():
        r = recipes.create(db.session, name, {"fields": [{"name": "x", "path": "$.x"}]}, paused=paused)
        return r.id, r.token


def run_ids(page: str) -> list[int]:
    return [int(n) for n in re.findall(r'<a href="/runs/(\d+)">#', page)]


@pytest.fixture
def paged(tmp_path):
    """Two recipes, 5 queued runs for "A" and 2 held runs for "B", 3 runs per page."""
    app = make_app(tmp_path, RUNS_PER_PAGE=3)
    client = signed_in_client(app)
    a, token_a = make_recipe(app, "A")
    b, token_b = make_recipe(app, "B", paused=True)
    for i in range(5):
        assert client.post(f"/hooks/{token_a}", json={"x": i}).status_code == 202
    for i in range(2):
        client.post(f"/hooks/{token_b}", json={"x": i})
    return app, client, a, b


def test_list_is_newest_first_and_paginated(paged):
    _app, client, _a, _b = paged
    page = client.get("/runs/").get_data(as_text=True)
    assert run_ids(page) == [7, 6, 5] and "Page 1 of 3" in page
    assert run_ids(client.get("/runs/?page=3").get_data(as_text=True)) == [1]


@pytest.mark.parametrize("query, expected", [
    ("status=held", [7, 6]),
    ("status=queued", [5, 4, 3]),
    ("recipe={a}", [5, 4, 3]),
    ("recipe={b}&status=queued", []),
    ("status=bogus", [7, 6, 5]),  # unknown filter values are ignored
])
def test_list_filters(paged, query, expected):
    _app, client, a, b = paged
    page = client.get("/runs/?" + query.format(a=a, b=b)).get_data(as_text=True)
    assert run_ids(page) == expected


def test_pager_links_keep_the_filters(paged):
    _app, client, a, _b = paged
    page = client.get(f"/runs/?recipe={a}&status=queued").get_data(as_text=True)
    nxt = re.search(r'href="([^"]+)" rel="next"', page).group(1).replace("&amp;", "&")
    assert f"recipe={a}" in nxt and "status=queued" in nxt and "page=2" in nxt
    assert run_ids(client.get(nxt).get_data(as_text=True)) == [2, 1]


def date_runs(app) -> None:
    """Run i was created on 2024-01-0i at noon (UTC)."""
    with app.app_context():
        for i in range(1, 8):
            db.session.execute(update(Run).where(Run.id == i).values(created_at=datetime(2024, 1, i, 12)))
        db.session.commit()


@pytest.mark.parametrize("query, expected", [
    ("since=2024-01-02T12:00&until=2024-01-04T12:00", [3, 2]),  # from included, until excluded
    ("since=2024-01-06T00:00", [7, 6]),
    ("until=2024-01-02T12:00:01", [2, 1]),                       # seconds
    ("since=2024-01-05T13:00%2B01:00", [7, 6, 5]),               # an explicit offset is converted to UTC
    ("since=yesterday&until=", [7, 6, 5]),                        # garbage is ignored
    ("since=2024-01-02T00:00&status=held", [7, 6]),
])
def test_time_range_filter(paged, query, expected):
    app, client, _a, _b = paged
    date_runs(app)
    assert run_ids(client.get("/runs/?" + query).get_data(as_text=True)) == expected


def test_filter_form_shows_the_time_range_in_utc(paged):
    _app, client, _a, _b = paged
    page = client.get("/runs/?since=2024-01-02T12:00&text=a%22b").get_data(as_text=True)
    assert 'type="datetime-local" id="since" name="since" step="1" value="2024-01-02T12:00"' in page
    assert 'name="text" maxlength="200" value="a&#34;b"' in page
    assert "Times are UTC" in page


def test_pager_links_keep_every_filter(paged):
    app, client, a, _b = paged
    date_runs(app)
    page = client.get(f"/runs/?recipe={a}&since=2024-01-01T00:00&until=2024-02-01T00:00:30&text=x").get_data(as_text=True)
    nxt = re.search(r'href="([^"]+)" rel="next"', page).group(1).replace("&amp;", "&")
    for part in (f"recipe={a}", "since=2024-01-01T00:00", "until=2024-02-01T00:00:30", "text=x", "page=2"):
        assert part in nxt
    assert run_ids(client.get(nxt).get_data(as_text=True)) == [2, 1]


def test_list_marks_replays_with_a_link_to_the_original(app, client):
    _id, token = make_recipe(app, "A")
    client.post(f"/hooks/{token}", json={"x": 1})
    client.post("/runs/1/replay", data={"version": "current"})
    page = client.get("/runs/").get_data(as_text=True)
    assert run_ids(page) == [2, 1]
    assert re.search(r'href="/runs/2">#2</a> <a class="[^"]*replay-of" href="/runs/1" title="run again of #1">↻ #1</a>', page)
    assert run_ids(client.get("/runs/?replays=1").get_data(as_text=True)) == [2]


def test_detail_shows_the_request_escaped(app, client):
    _id, token = make_recipe(app, "A")
    evil = "<script>alert(1)</script>"
    client.post(f"/hooks/{token}?src={evil}", json={"name": evil, "n": 1},
                headers={"X-Evil": evil, "Authorization": "Bearer hidden-token-123"})
    resp = client.get("/runs/1")
    page = resp.get_data(as_text=True)
    assert resp.status_code == 200
    assert evil not in page and "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert "&#34;n&#34;: 1" in page  # JSON body indented for reading
    assert "x-evil" in page and "hidden-token-123" not in page  # headers table, secrets redacted
    assert "POST" in page and "application/json" in page and "badge-queued" in page


def test_detail_highlights_a_body_that_failed_to_parse(app, client):
    _id, token = make_recipe(app, "A")
    client.post(f"/hooks/{token}", data=b'{"broken": ', content_type="application/json")
    page = client.get("/runs/1").get_data(as_text=True)
    assert re.search(r'class="error-box"><strong>Could not parse the body:</strong> body is not valid JSON', page)
    assert "{&#34;broken&#34;: " in page and "11 bytes" in page


def test_detail_shows_each_step_pretty_printed(app, client):
    _id, token = make_recipe(app, "A")
    client.post(f"/hooks/{token}", json={})
    with app.app_context():
        db.session.add(StepRun(run_id=1, step_key="notify", position=0, action="slack_message", attempt=1,
                               status="failed", input={"text": "<b>hi</b>"}, duration_ms=1500,
                               request={"method": "POST", "url": "https://hooks.slack.com/[redacted]"},
                               response={"status": 400, "body": "invalid_payload"}, error="slack said no"))
        db.session.commit()
    page = client.get("/runs/1").get_data(as_text=True)
    assert "<code>notify</code>" in page and "slack_message" in page and "1.5 s" in page
    assert "&#34;text&#34;: &#34;&lt;b&gt;hi&lt;/b&gt;&#34;" in page
    assert "invalid_payload" in page and "slack said no" in page and "[redacted]" in page


@pytest.mark.parametrize("version, expected", [("current", 2), ("original", 1)])
def test_run_again_creates_a_linked_run(app, client, version, expected):
    recipe_id, token = make_recipe(app, "A")
    client.post(f"/hooks/{token}", json={"x": 1})
    with app.app_context():
        recipe = db.session.get(Recipe, recipe_id)
        recipes.update_recipe(db.session, recipe, definition={"fields": [{"name": "x", "path": "$.y"}]})
    page = client.get("/runs/1").get_data(as_text=True)
    assert "Run again (recipe as it is now)" in page and "Run again (version 1 as it was)" in page
    resp = client.post("/runs/1/replay", data={"version": version})
    assert resp.status_code == 302 and resp.location.endswith("/runs/2")
    with app.app_context():
        new = db.session.get(Run, 2)
        assert (new.replay_of, new.recipe_version, new.event_id, new.status) == (1, expected, 1, "queued")
    assert 'href="/runs/2">#2</a>' in client.get("/runs/1").get_data(as_text=True)
    assert 'href="/runs/1">#1</a>' in client.get("/runs/2").get_data(as_text=True)


def test_run_again_after_the_recipe_was_deleted_says_why(app, client):
    recipe_id, token = make_recipe(app, "A")
    client.post(f"/hooks/{token}", json={})
    client.post(f"/recipes/{recipe_id}/delete")
    resp = client.post("/runs/1/replay", data={"version": "current"}, follow_redirects=True)
    assert "Cannot run again: the recipe of this run was deleted" in resp.get_data(as_text=True)
    with app.app_context():
        assert db.session.scalar(select(Run.id).where(Run.id == 2)) is None


def test_run_held_needs_the_recipe_resumed(app, client):
    recipe_id, token = make_recipe(app, "A", paused=True)
    client.post(f"/hooks/{token}", json={})
    page = client.get("/runs/1").get_data(as_text=True)
    assert "Run now" not in page and 'id="held-note"' in page and f'href="/recipes/{recipe_id}"' in page
    resp = client.post("/runs/1/run-held", follow_redirects=True)  # a stale page's button: refused, said why
    assert "Cannot run this event now: resume the recipe first" in resp.get_data(as_text=True)
    client.post(f"/recipes/{recipe_id}/resume", data={"held": "keep"})
    resp = client.post("/runs/1/run-held", follow_redirects=True)
    assert "Run #1 queued" in resp.get_data(as_text=True)
    with app.app_context():
        assert db.session.get(Run, 1).status == "queued"


def test_unknown_run_is_404(client):
    assert client.get("/runs/99").status_code == 404


def test_a_page_being_rendered_does_not_hold_up_webhooks(tmp_path):
    """A GET page reads a snapshot: while it renders (a long run history, a big event), a
    webhook is still stored and acknowledged at once. Before, every page's transaction held
    SQLite's write lock until the page was done, and webhooks waited behind it."""
    import time

    from tests.live import LiveServer, make_live_app

    live = LiveServer(make_live_app(tmp_path, INBOUND_WRITE_TIMEOUT=1.0), with_runner=False)
    try:
        _rid, token = make_recipe(live.app, "A")
        assert live.post(token, json={"x": 1}).status_code == 202
        with live.app.test_request_context("/runs", method="GET"):
            assert len(db.session.scalars(select(Run)).all()) == 1  # the page's transaction is open
            started = time.monotonic()
            resp = live.post(token, json={"x": 2})
            waited = time.monotonic() - started
            assert len(db.session.scalars(select(Run)).all()) == 1  # still its snapshot
            db.session.rollback()
        assert resp.status_code == 202 and waited < 0.9, (resp.status_code, waited)
        with live.app.app_context():
            assert len(db.session.scalars(select(Run)).all()) == 2
    finally:
        live.close()


def test_the_list_says_why_runs_failed_and_when_a_failing_one_tries_again(tmp_path):
    """Reported: "the run history shows a run that failed and waits for its retry as 'queued',
    like a new one, and I have to open every run to see why it failed." Real runner, real
    receiver: one recipe's receiver is busy (503: retried), the other's refuses (422: failed)."""
    from tests.live import LiveServer, make_live_app
    from tests.sinks import HttpSink, Reply
    from tests.test_e2e import wait_run

    def receiver(req):
        if req.path.startswith("/busy"):
            return Reply(503, "busy, try later")
        return Reply(422, {"error": "email invalid", "detail": "x" * 300})

    with HttpSink(receiver) as sink:
        app = make_live_app(tmp_path)
        tokens = {}
        with app.app_context():
            for path in ("busy", "bad"):
                tokens[path] = recipes.create(db.session, path, {"steps": [
                    {"key": "send", "action": "http_request",
                     "inputs": {"method": "POST", "url": f"{sink.url}/{path}", "body_type": "json", "body": "{}"}}]}).token
        server = LiveServer(app)
        try:
            busy = server.post(tokens["busy"], json={}).json()["run_id"]
            bad = server.post(tokens["bad"], json={}).json()["run_id"]
            assert wait_run(app, bad) == "failed"
            sink.wait_for(2)
            wait_run(app, busy, statuses=("queued",))
            with app.app_context():  # the busy run's first attempt is recorded: it waits for its retry
                assert db.session.get(Run, busy).error
        finally:
            server.close()
        page = signed_in_client(app).get("/runs/").get_data(as_text=True)

    rows = {int(m.group(1)): m.group(0) for m in re.finditer(r'<a href="/runs/(\d+)">#.*?</tr>', page, re.DOTALL)}
    waiting = re.search(r'run-waiting">retry in (\d+) s<', rows[busy])
    assert waiting and 10 <= int(waiting.group(1)) <= 36  # the first retry: 30 s ± 20 % after the attempt
    assert "HTTP 503" in rows[busy] and "busy, try later" in rows[busy]
    assert "run-waiting" not in rows[bad]
    whole, shown = map(html.unescape, re.search(r'class="small run-error" title="([^"]*)">([^<]*)<', rows[bad]).groups())
    assert shown.startswith("step 'send' (http_request): HTTP 422") and '"email invalid"' in shown
    assert len(shown) <= 100 and shown.endswith("…")
    assert whole.startswith(shown[:-1]) and len(whole) > 200  # the whole message on hover


def test_the_list_says_when_a_delayed_run_resumes_and_when_a_retry_is_due(app):
    """The other waits a queued run shows: the end of a "Delay for" step (no error: nothing
    failed), and a retry whose time has come but no runner has claimed yet."""
    from datetime import timedelta
    from types import SimpleNamespace

    from web.extensions import core
    from web.ui import waiting_note

    with app.app_context():
        now = core().clock.now()

        def note(status, in_seconds, error=None):
            return waiting_note(SimpleNamespace(status=status, error=error,
                                                next_attempt_at=now + timedelta(seconds=in_seconds)))

        assert note("queued", 330) == "resumes in 5 min"
        assert note("queued", 330, error="HTTP 503") == "retry in 5 min"
        assert note("queued", 3, error="HTTP 503") == "retry in a few seconds"
        assert note("queued", -2, error="HTTP 503") == "retry due now"
        assert note("queued", -2) == ""  # a new run: due since it was stored, waiting its turn
        assert note("running", 300, error="HTTP 503") == ""
        assert waiting_note(SimpleNamespace(status="queued", error=None, next_attempt_at=None)) == ""


def test_new_runs_carry_no_waiting_note(paged):
    """A new run is due from the moment it is stored: nothing to say under its badge."""
    _app, client, _a, _b = paged
    page = client.get("/runs/?status=queued").get_data(as_text=True)
    assert run_ids(page) and "run-waiting" not in page
