""""Delay for" / "Delay until": a step that holds the rest of a run back until a time
(Zapier's Delay, n8n's Wait). The run waits in the queue, not in a thread: time is moved
with the runner's clock, never slept through."""
from __future__ import annotations

import html
import re
import time
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import select

from automations import recipes
from automations.clock import FrozenClock
from automations.models import Recipe, Run
from automations.preview import preview
from connectors.base import PermanentError
from connectors.delay import delay_for_ends, delay_until_ends
from tests.conftest import make_app, signed_in_client
from tests.live import LiveServer, make_live_app
from tests.sinks import HttpSink, Reply
from tests.test_e2e import http_step, steps_of, wait_run
from tests.test_ui_recipes import errors_for, errors_summary, recipe_form
from web.extensions import db

NOW = datetime(2026, 11, 29, 12, 0, 0)


@pytest.fixture
def clock():
    return FrozenClock(NOW)


def _live(tmp_path, clock):
    app = make_live_app(tmp_path, POLL_INTERVAL=0.1)
    app.extensions["hookline"].clock = clock
    return LiveServer(app)


@pytest.fixture
def live(tmp_path, clock):
    server = _live(tmp_path, clock)
    yield server
    server.close()


def delay_step(key="wait", amount="10", unit="minutes"):
    return {"key": key, "action": "delay_for", "inputs": {"amount": amount, "unit": unit}}


def make(app, steps, fields=(), settings=None):
    with app.app_context():
        return recipes.create(db.session, "r", {"fields": list(fields), "steps": steps,
                                                "settings": settings or {}}).token


def run_row(app, run_id):
    with app.app_context():
        run = db.session.get(Run, run_id)
        db.session.expunge(run)
        return run


def wait_for(app, run_id, predicate, timeout=10.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        run = run_row(app, run_id)
        if predicate(run):
            return run
        time.sleep(0.02)
    raise AssertionError(f"run {run_id}: {run.status} at step {run.step_index}")


def waiting(run):
    return run.status == "queued" and run.step_index == 2


def still_waiting_after_polls(app, run_id, sink, delivered):
    """Several runner polls (0.1 s) go by; the run is still waiting and nothing more arrived."""
    time.sleep(0.6)
    run = run_row(app, run_id)
    assert (run.status, run.step_index) == ("queued", 2)
    assert len(sink.requests) == delivered


# --- the time a delay names ---------------------------------------------------------------

@pytest.mark.parametrize("amount, unit, seconds", [
    ("10", "minutes", 600), (10, "minutes", 600), (1.5, "hours", 5400), (" 2 ", "days", 172800),
    ("90", "seconds", 90), (1, "weeks", 604800), ("0", "minutes", 0), (30, "days", 30 * 86400),
    ("5", None, 300),  # no unit: minutes
])
def test_delay_for_adds_the_amount_in_its_unit(amount, unit, seconds):
    assert delay_for_ends({"amount": amount, "unit": unit}, NOW) == NOW + timedelta(seconds=seconds)


@pytest.mark.parametrize("inputs, message", [
    ({"amount": "soon"}, "amount must be a number, not 'soon'"),
    ({"amount": None}, "amount must be a number, not NoneType"),
    ({"amount": True}, "amount must be a number, not bool"),
    ({"amount": "-1"}, "amount must be a number from 0 up, not '-1'"),
    ({"amount": "nan"}, "amount must be a number from 0 up, not 'nan'"),
    ({"amount": 31, "unit": "days"}, "a delay can last at most 30 days, not 31 days"),
    ({"amount": 1, "unit": "fortnights"}, "unit must be one of seconds, minutes, hours, days, weeks, not 'fortnights'"),
])
def test_delay_for_names_what_is_wrong(inputs, message):
    with pytest.raises(PermanentError) as exc:
        delay_for_ends(inputs, NOW)
    assert exc.value.message == message


@pytest.mark.parametrize("until, tz, expected", [
    ("2026-11-30T09:00:00+01:00", None, datetime(2026, 11, 30, 8, 0)),
    ("2026-11-30T09:00:00Z", "Europe/Paris", datetime(2026, 11, 30, 9, 0)),  # an offset wins over the zone
    ("2026-11-30 09:00", "Europe/Paris", datetime(2026, 11, 30, 8, 0)),  # none: read in the zone
    ("2026-11-30 09:00", None, datetime(2026, 11, 30, 9, 0)),  # UTC by default
    ("Mon, 30 Nov 2026 09:00:00 -0500", None, datetime(2026, 11, 30, 14, 0)),
    (int(datetime(2026, 12, 1, tzinfo=UTC).timestamp()) * 1000, None, datetime(2026, 12, 1)),  # JS milliseconds
    ("2026-11-29T11:00:00Z", None, datetime(2026, 11, 29, 11, 0)),  # past: as it is (the run goes on)
])
def test_delay_until_reads_dates_as_the_parse_datetime_filter_does(until, tz, expected):
    assert delay_until_ends({"until": until, "timezone": tz}, NOW) == expected


@pytest.mark.parametrize("until, message", [
    ("", "until is empty for this event: no time to wait for"),
    (None, "until is empty for this event: no time to wait for"),
    ("next tuesday-ish", "until: cannot read 'next tuesday-ish' as a date/time"),
    ("2027-02-01T00:00:00Z", "a delay can last at most 30 days; this one ends 2027-02-01T00:00:00Z"),
])
def test_delay_until_names_what_is_wrong(until, message):
    with pytest.raises(PermanentError) as exc:
        delay_until_ends({"until": until}, NOW)
    assert exc.value.message == message


# --- runs ---------------------------------------------------------------------------------

def test_the_steps_after_a_delay_run_when_it_ends_and_those_before_are_not_sent_again(live, clock, sink):
    token = make(live.app, [http_step("first", sink.url, "{}"), delay_step(),
                            http_step("second", sink.url, '{"after": {{ steps.wait.until | to_json }}}')])
    run_id = live.post(token, json={}).json()["run_id"]
    run = wait_for(live.app, run_id, waiting)
    assert len(sink.wait_for(1)) == 1
    # back in the queue, due when the delay ends, holding no lease; this attempt not counted
    assert (run.next_attempt_at, run.lease_owner, run.attempt, run.error) == (NOW + timedelta(minutes=10), None, 0, None)
    assert run.outputs["wait"] == {"until": "2026-11-29T12:10:00Z", "waited_seconds": 600.0}
    clock.advance(9 * 60)
    still_waiting_after_polls(live.app, run_id, sink, delivered=1)
    clock.advance(60)
    assert wait_run(live.app, run_id) == "succeeded"
    assert [r.json() for r in sink.wait_for(2)] == [{}, {"after": "2026-11-29T12:10:00Z"}]
    steps = steps_of(live.app, run_id)
    assert [(s["key"], s["status"], s["attempt"]) for s in steps] == [
        ("first", "succeeded", 1), ("wait", "succeeded", 1), ("second", "succeeded", 1)]
    assert steps[1]["input"] == {"amount": "10", "unit": "minutes"}


def test_a_waiting_run_survives_a_restart(tmp_path, clock, sink):
    first = _live(tmp_path, clock)
    try:
        token = make(first.app, [delay_step(amount="1", unit="hours"), http_step("later", sink.url, "{}")])
        run_id = first.post(token, json={}).json()["run_id"]
        wait_for(first.app, run_id, lambda r: r.status == "queued" and r.step_index == 1)
    finally:
        first.close()
    clock.advance(3600)
    second = _live(tmp_path, clock)  # the same instance folder, a new server and runner
    try:
        assert wait_run(second.app, run_id) == "succeeded"
        assert len(sink.wait_for(1)) == 1
    finally:
        second.close()


def test_pausing_holds_a_waiting_run_and_resuming_keeps_the_end_of_its_delay(live, clock, sink):
    token = make(live.app, [http_step("first", sink.url, "{}"), delay_step(amount="2", unit="hours"),
                            http_step("second", sink.url, "{}")])
    run_id = live.post(token, json={}).json()["run_id"]
    wait_for(live.app, run_id, waiting)
    with live.app.app_context():
        recipe = db.session.scalars(select(Recipe)).one()
        recipes.set_paused(db.session, recipe, True)
    assert run_row(live.app, run_id).status == "held"
    clock.advance(3600)
    with live.app.app_context():
        recipe = db.session.scalars(select(Recipe)).one()
        recipes.set_paused(db.session, recipe, False)
        assert recipes.release_held(db.session, recipe, clock) == 1
    run = run_row(live.app, run_id)
    assert (run.status, run.next_attempt_at) == ("queued", NOW + timedelta(hours=2))  # not sent on resume
    still_waiting_after_polls(live.app, run_id, sink, delivered=1)
    clock.advance(3600)
    assert wait_run(live.app, run_id) == "succeeded" and len(sink.wait_for(2)) == 2


def test_resuming_still_sends_a_held_retry_at_once(live, clock):
    """What resuming did before delays existed, for a run held while waiting to retry."""
    with HttpSink(lambda req: Reply(503, "down")) as down:
        token = make(live.app, [delay_step(amount="1"), http_step("crm", down.url, "{}")])
        run_id = live.post(token, json={}).json()["run_id"]
        wait_for(live.app, run_id, lambda r: r.status == "queued" and r.step_index == 1)
        clock.advance(60)
        run = wait_for(live.app, run_id, lambda r: r.status == "queued" and r.error is not None)
        assert run.next_attempt_at > clock.now()
    with live.app.app_context():
        recipe = db.session.scalars(select(Recipe)).one()
        recipes.set_paused(db.session, recipe, True)
        recipes.set_paused(db.session, recipe, False)
        recipes.release_held(db.session, recipe, clock)
    assert run_row(live.app, run_id).next_attempt_at == clock.now()


def test_retries_after_a_long_delay_have_their_whole_window(live, clock):
    """The retry policy's maximum age counts from the end of the delay: a step after a
    two-hour wait, with a one-hour window, is retried, not dead at its first failure."""
    settings = {"retry": {"schedule": [60], "max_attempts": 3, "max_age_seconds": 3600}}
    with HttpSink(lambda req: Reply(503, "down")) as down:
        token = make(live.app, [delay_step(amount="2", unit="hours"), http_step("crm", down.url, "{}")],
                     settings=settings)
        run_id = live.post(token, json={}).json()["run_id"]
        wait_for(live.app, run_id, lambda r: r.status == "queued" and r.step_index == 1)
        clock.advance(2 * 3600)
        run = wait_for(live.app, run_id, lambda r: r.status in ("queued", "dead") and r.error is not None)
    assert run.status == "queued" and run.attempt == 1
    assert timedelta(seconds=47) <= run.next_attempt_at - clock.now() <= timedelta(seconds=73)


def test_a_time_already_past_goes_on_at_once(live, sink):
    token = make(live.app, [{"key": "wait", "action": "delay_until", "inputs": {"until": "{{ at }}"}},
                            http_step("crm", sink.url, "{}")], fields=[{"name": "at", "path": "$.at"}])
    run_id = live.post(token, json={"at": "2026-11-29T11:00:00Z"}).json()["run_id"]
    assert wait_run(live.app, run_id) == "succeeded" and len(sink.wait_for(1)) == 1
    assert run_row(live.app, run_id).outputs["wait"] == {"until": "2026-11-29T11:00:00Z", "waited_seconds": 0.0}


def test_delay_until_a_time_from_the_payload(live, clock, sink):
    token = make(live.app, [{"key": "wait", "action": "delay_until",
                             "inputs": {"until": "{{ at }}", "timezone": "Europe/Paris"}},
                            http_step("remind", sink.url, "{}")], fields=[{"name": "at", "path": "$.at"}])
    run_id = live.post(token, json={"at": "2026-11-29 16:00"}).json()["run_id"]  # Paris: UTC+1
    run = wait_for(live.app, run_id, lambda r: r.status == "queued" and r.step_index == 1)
    assert run.next_attempt_at == datetime(2026, 11, 29, 15, 0)
    clock.advance(3 * 3600)
    assert wait_run(live.app, run_id) == "succeeded" and len(sink.wait_for(1)) == 1


def test_delay_until_an_hour_before_a_time_from_the_payload(live, clock, sink):
    """A date filter's result carries its offset, so the time zone is given to the filter."""
    token = make(live.app, [{"key": "wait", "action": "delay_until",
                             "inputs": {"until": "{{ at | parse_datetime('Europe/Paris') | add_time(hours=-1) }}"}},
                            http_step("remind", sink.url, "{}")], fields=[{"name": "at", "path": "$.at"}])
    run_id = live.post(token, json={"at": "2026-11-29 16:00"}).json()["run_id"]
    run = wait_for(live.app, run_id, lambda r: r.status == "queued" and r.step_index == 1)
    assert run.next_attempt_at == datetime(2026, 11, 29, 14, 0)
    assert steps_of(live.app, run_id)[0]["input"]["until"] == "2026-11-29T15:00:00+01:00"


def test_a_delay_that_names_no_time_for_an_event_fails_the_run_with_the_reason(live, sink):
    token = make(live.app, [delay_step(amount="{{ days }}", unit="days"), http_step("crm", sink.url, "{}")],
                 fields=[{"name": "days", "path": "$.days"}])
    run_id = live.post(token, json={"days": "a few"}).json()["run_id"]
    assert wait_run(live.app, run_id) == "failed"
    assert run_row(live.app, run_id).error == "step 'wait' (delay_for): amount must be a number, not 'a few'"
    assert sink.requests == []


def test_the_run_page_says_when_a_waiting_run_goes_on(live):
    token = make(live.app, [delay_step(amount="15"), {"key": "only", "action": "filter",
                                                       "inputs": {"condition": "{{ true }}"}}])
    run_id = live.post(token, json={}).json()["run_id"]
    wait_for(live.app, run_id, lambda r: r.status == "queued" and r.step_index == 1)
    page = html.unescape(signed_in_client(live.app, "viewer").get(f"/runs/{run_id}").get_data(as_text=True))
    status = re.sub(r"<[^>]+>", "", page[page.index("<dt>Status"):page.index("<dt>Attempt")])
    assert status.strip() == "Statusqueued · goes on in 15 min"


# --- the editor ---------------------------------------------------------------------------

def test_the_editor_offers_delays_and_checks_them_on_save(app, client):
    page = client.get("/recipes/new").get_data(as_text=True)
    assert 'value="delay_for"' in page and 'value="delay_until"' in page
    last = client.post("/recipes/new", data=recipe_form(steps=[
        {"action": "delay_for", "key": "wait", "inputs": {"amount": "5", "unit": "minutes"}}]))
    assert errors_summary(last.get_data(as_text=True)) == [(  # on the step
        "'Delay for' holds back the steps after it, and there are none: add the step that should wait, "
        "or remove the delay")]
    then = {"action": "filter", "key": "go", "inputs": {"condition": "{{ true }}"}}
    negative = client.post("/recipes/new", data=recipe_form(steps=[
        {"action": "delay_for", "key": "wait", "inputs": {"amount": "-5", "unit": "minutes"}}, then]))
    assert errors_for(negative.get_data(as_text=True), "steps-0-inputs-amount") == [
        "amount must be a number from 0 up, not '-5'"]
    zone = client.post("/recipes/new", data=recipe_form(steps=[
        {"action": "delay_until", "key": "wait", "inputs": {"until": "{{ at }}", "timezone": "Mars/Olympus"}}, then]))
    assert errors_for(zone.get_data(as_text=True), "steps-0-inputs-timezone") == [
        "unknown time zone 'Mars/Olympus' (use a name like 'Europe/Paris' or an offset like '+02:00')"]
    with app.app_context():
        assert db.session.scalars(select(Recipe)).all() == []  # nothing saved half-way
    ok = client.post("/recipes/new", data=recipe_form(steps=[
        {"action": "delay_for", "key": "wait", "inputs": {"amount": "{{ days }}", "unit": "days"}}, then]))
    assert ok.status_code == 302


def test_a_delay_cannot_be_the_dead_run_alert(tmp_path):
    app = make_app(tmp_path)
    with app.app_context(), pytest.raises(recipes.RecipeInvalid) as exc:
        recipes.create(db.session, "r", {"steps": [], "settings": {"alert": {
            "action": "delay_for", "inputs": {"amount": "1"}}}})
    assert [p.where for p in exc.value.problems] == ["settings.alert.action"]
    assert "sends nothing" in exc.value.problems[0].message


def _trigger(body):
    return {"body": body, "headers": {}, "query": {}, "method": "POST"}


def test_the_preview_says_how_long_the_run_would_wait():
    then = {"key": "go", "action": "filter", "inputs": {"condition": "{{ true }}"}}
    shown = preview({"steps": [delay_step(amount="90", unit="minutes"), then]}, _trigger({}))
    assert shown.steps[0].note.startswith("waits 1.5 hours for this event (if it ran now: until ")
    past = preview({"steps": [{"key": "w", "action": "delay_until", "inputs": {"until": "2001-01-01"}}, then]},
                   _trigger({}))
    assert past.steps[0].note == "the time has passed for this event: the run goes on at once"
    too_long = preview({"steps": [delay_step(amount="40", unit="days"), then]}, _trigger({}))
    assert too_long.steps[0].error == "a delay can last at most 30 days, not 40 days"
    later = preview({"steps": [{"key": "a", "action": "filter", "inputs": {"condition": "{{ true }}"}},
                               delay_step(amount="{{ steps.a.passed }}"), then]}, _trigger({}))
    assert later.steps[1].note == "decided during the run: the delay uses an earlier step's output"
