"""From an inbound webhook to delivered actions, through a real server, runner and sinks."""
from __future__ import annotations

import json
import time
from datetime import datetime

import pytest
import requests
from sqlalchemy import select

from automations import connections, queue, recipes
from automations.models import Event, Run, StepRun
from tests.live import LiveServer, make_live_app
from tests.sinks import HttpSink, Reply
from web.extensions import db

STRIPE_EVENT = {
    "id": "evt_1", "type": "checkout.session.completed",
    "data": {"object": {"amount_total": 1999, "currency": "usd",
                        "customer_details": {"email": "ann@example.com", "name": "Ann Lee"}}},
}


@pytest.fixture
def live(tmp_path):
    server = LiveServer(make_live_app(tmp_path))
    yield server
    server.close()


def make_recipe(app, name="r", fields=(), steps=(), settings=None, paused=False):
    with app.app_context():
        r = recipes.create(db.session, name, {"fields": list(fields), "steps": list(steps),
                                              "settings": settings or {}}, paused=paused)
        return r.id, r.token


def wait_run(app, run_id, statuses=("succeeded", "failed", "dead"), timeout=10.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with app.app_context():
            run = db.session.get(Run, run_id)
            status = run.status
            db.session.rollback()
        if status in statuses:
            return status
        time.sleep(0.05)
    raise AssertionError(f"run {run_id} still {status}")


def steps_of(app, run_id):
    with app.app_context():
        return [{"key": s.step_key, "status": s.status, "input": s.input, "request": s.request,
                     "response": s.response, "error": s.error, "attempt": s.attempt}
                for s in db.session.scalars(select(StepRun).where(StepRun.run_id == run_id)
                                            .order_by(StepRun.id))]


def http_step(key, url, body, **inputs):
    return {"key": key, "action": "http_request",
            "inputs": {"method": "POST", "url": url, "body_type": "json", "body": body, **inputs}}


def test_stripe_event_is_mapped_and_delivered_with_history(live, sink):
    app = live.app
    _, token = make_recipe(app, fields=[
        {"name": "email", "path": "$.data.object.customer_details.email"},
        {"name": "amount", "path": "$.data.object.amount_total"},
    ], steps=[http_step("crm", sink.url + "/contacts",
                        '{"email": "{{ email }}", "cents": {{ amount }}, "who": "{{ trigger.headers["x-source"] }}"}')])
    resp = live.post(token, json=STRIPE_EVENT, headers={"X-Source": "stripe"})
    assert resp.status_code == 202
    run_id = resp.json()["run_id"]
    received = sink.wait_for(1)[0]
    assert received.path == "/contacts"
    assert received.json() == {"email": "ann@example.com", "cents": 1999, "who": "stripe"}
    assert received.headers["Idempotency-Key"] == f"hookline-{run_id}-crm"
    assert wait_run(app, run_id) == "succeeded"
    [step] = steps_of(app, run_id)
    assert step["status"] == "succeeded" and step["attempt"] == 1
    assert step["response"]["status"] == 200
    with app.app_context():
        event = db.session.get(Run, run_id).event
        assert event.method == "POST" and event.body == STRIPE_EVENT
        assert json.loads(event.body_raw) == STRIPE_EVENT
        assert event.headers["x-source"] == "stripe"


def test_later_steps_use_earlier_outputs(live):
    def responder(req):
        return Reply(201, {"id": 42}) if req.path == "/create" else Reply(200, "ok")

    with HttpSink(responder) as sink:
        _, token = make_recipe(live.app, steps=[
            http_step("create", sink.url + "/create", '{"n": 1}'),
            http_step("note", sink.url + "/note", '{"contact": {{ steps.create.body.id }}}'),
        ])
        run_id = live.post(token, json={}).json()["run_id"]
        _first, second = sink.wait_for(2)
        assert second.json() == {"contact": 42}
        assert wait_run(live.app, run_id) == "succeeded"


def test_an_input_that_renders_to_a_date_is_recorded_and_sent_once(live, sink):
    """The bug report: a header ``{{ now() }}`` left the run "running"; the log said "Object of
    type datetime is not JSON serializable" and the receiver got the request again at every
    lease expiry. A template that is one expression keeps its type, so the step's recorded
    input held a datetime that the JSON column could not store."""
    _, token = make_recipe(live.app, fields=[{"name": "price", "path": "$.price"}], steps=[http_step(
        "crm", sink.url, "{}", headers={"X-At": "{{ now() }}", "X-Price": "{{ price | to_number }}"},
        query={"day": "{{ '2026-11-29' | parse_datetime }}"})])
    run_id = live.post(token, json={"price": "12.50"}).json()["run_id"]
    assert wait_run(live.app, run_id) == "succeeded"
    [sent] = sink.wait_for(1)
    [step] = steps_of(live.app, run_id)
    recorded = step["input"]
    assert recorded["headers"]["X-At"] == sent.headers["X-At"]  # ISO 8601 text, sent and in the history
    assert datetime.fromisoformat(sent.headers["X-At"]).year >= 2026
    assert recorded["query"] == {"day": "2026-11-29T00:00:00+00:00"}
    assert sent.query == {"day": ["2026-11-29T00:00:00+00:00"]}
    assert recorded["headers"]["X-Price"] == 12.5 and sent.headers["X-Price"] == "12.5"


def test_retry_resumes_at_failed_step_without_resending_earlier_steps(live):
    answers = {"/b": [Reply(503, "busy"), Reply(200, "ok")]}

    def responder(req):
        queue_ = answers.get(req.path)
        return queue_.pop(0) if queue_ else Reply(200, "ok")

    with HttpSink(responder) as sink:
        _, token = make_recipe(live.app, steps=[http_step("a", sink.url + "/a", "{}"),
                                                 http_step("b", sink.url + "/b", "{}")],
                               settings={"retry": {"schedule": [0.2], "max_attempts": 3}})
        run_id = live.post(token, json={}).json()["run_id"]
        assert wait_run(live.app, run_id) == "succeeded"
        paths = [r.path for r in sink.requests]
        assert paths == ["/a", "/b", "/b"]
        b_keys = {r.headers["Idempotency-Key"] for r in sink.requests if r.path == "/b"}
        assert b_keys == {f"hookline-{run_id}-b"}
        history = [(s["key"], s["status"], s["attempt"]) for s in steps_of(live.app, run_id)]
        assert history == [("a", "succeeded", 1), ("b", "retrying", 1), ("b", "succeeded", 2)]


def test_permanent_error_fails_at_once_with_reason(live):
    with HttpSink(lambda req: Reply(422, {"error": "email invalid"})) as sink:
        _, token = make_recipe(live.app, steps=[http_step("a", sink.url, "{}")])
        run_id = live.post(token, json={}).json()["run_id"]
        assert wait_run(live.app, run_id) == "failed"
        assert len(sink.requests) == 1
        with live.app.app_context():
            run = db.session.get(Run, run_id)
            assert "422" in run.error and "email invalid" in run.error


def test_retries_exhausted_make_the_run_dead(live):
    with HttpSink(lambda req: Reply(500, "down")) as sink:
        _, token = make_recipe(live.app, steps=[http_step("a", sink.url, "{}")],
                               settings={"retry": {"schedule": [0.05], "max_attempts": 2}})
        run_id = live.post(token, json={}).json()["run_id"]
        assert wait_run(live.app, run_id) == "dead"
        assert len(sink.requests) == 2


def test_body_claiming_json_that_does_not_parse_is_stored_and_fails_with_mapping_error(live, sink):
    _, token = make_recipe(live.app, fields=[{"name": "a", "path": "$.a"}],
                           steps=[http_step("a", sink.url, "{}")])
    resp = live.post(token, data=b'{"a": 1,,}', headers={"Content-Type": "application/json"})
    assert resp.status_code == 202
    run_id = resp.json()["run_id"]
    assert wait_run(live.app, run_id) == "failed"
    with live.app.app_context():
        run = db.session.get(Run, run_id)
        assert run.error.startswith("mapping error: body is not valid JSON")
        assert run.event.body_raw == b'{"a": 1,,}'
    assert sink.requests == []


@pytest.mark.parametrize("kwargs, expected", [
    ({"data": "a=1&b=two", "headers": {"Content-Type": "application/x-www-form-urlencoded"}}, "two"),
    ({"data": "<r><b>two</b></r>", "headers": {"Content-Type": "application/xml"}}, "two"),
    ({"files": {"b": (None, "two")}}, "two"),
])
def test_every_body_type_maps(live, sink, kwargs, expected):
    path = "$.r.b" if "xml" in json.dumps(kwargs) else "$.b"
    _, token = make_recipe(live.app, fields=[{"name": "b", "path": path}],
                           steps=[http_step("a", sink.url, '{"b": "{{ b }}"}')])
    assert live.post(token, **kwargs).status_code == 202
    assert sink.wait_for(1)[0].json() == {"b": expected}


def test_get_hook_maps_query_string(live, sink):
    _, token = make_recipe(live.app, fields=[{"name": "q", "path": "$.q"}],
                           steps=[http_step("a", sink.url, '{"q": "{{ q }}"}')])
    import requests
    assert requests.get(live.hook_url(token), params={"q": "hi"}, timeout=5).status_code == 202
    assert sink.wait_for(1)[0].json() == {"q": "hi"}


def test_unknown_content_type_is_stored_raw_not_rejected(live, sink):
    _, token = make_recipe(live.app, steps=[http_step("a", sink.url, "{}")])
    blob = bytes(range(256))
    resp = live.post(token, data=blob, headers={"Content-Type": "application/x-weird"})
    assert resp.status_code == 202
    with live.app.app_context():
        event = db.session.get(Run, resp.json()["run_id"]).event
        assert (event.body_raw, event.body_kind, event.content_type) == (blob, "binary", "application/x-weird")


def test_unknown_token_is_404_and_stores_nothing(live):
    resp = live.post("x" * 32, json={"a": 1})
    assert resp.status_code == 404
    with live.app.app_context():
        assert db.session.scalars(select(Event)).all() == []


def test_body_over_the_limit_is_413(tmp_path, sink):
    server = LiveServer(make_live_app(tmp_path, MAX_BODY_BYTES=1024))
    try:
        _, token = make_recipe(server.app, steps=[http_step("a", sink.url, "{}")])
        assert server.post(token, data=b"x" * 1025).status_code == 413

        def chunks():
            for _ in range(10):
                yield b"y" * 512
        assert server.post(token, data=chunks()).status_code == 413  # chunked, no Content-Length
        assert server.post(token, data=b"x" * 1024).status_code == 202

        def small_chunks():
            yield from (b"a" * 400, b"b" * 400, b"c" * 224)
        assert server.post(token, data=small_chunks()).status_code == 202  # chunked, exactly at the limit
        with server.app.app_context():
            bodies = sorted(e.body_raw for e in db.session.scalars(select(Event)))
        assert bodies == [b"a" * 400 + b"b" * 400 + b"c" * 224, b"x" * 1024]
    finally:
        server.close()


def test_paused_recipe_holds_events_until_released(live, sink):
    app = live.app
    rid, token = make_recipe(app, steps=[http_step("a", sink.url, '{"n": {{ trigger.body.n }}}')], paused=True)
    runs = [live.post(token, json={"n": n}).json() for n in (1, 2)]
    assert {r["status"] for r in runs} == {"held"}
    time.sleep(0.5)  # the runner is running: held runs must not be claimed
    assert sink.requests == []
    with app.app_context():
        recipe = db.session.get(recipes.Recipe, rid)
        recipes.set_paused(db.session, recipe, False)
        assert recipes.release_held(db.session, recipe) == 2
    live.runner.notify()
    assert sorted(r.json()["n"] for r in sink.wait_for(2)) == [1, 2]


def test_new_run_starts_at_once_not_at_next_poll(tmp_path, sink):
    server = LiveServer(make_live_app(tmp_path, POLL_INTERVAL=60.0))
    try:
        _, token = make_recipe(server.app, steps=[http_step("a", sink.url, "{}")])
        server.post(token, json={})
        sink.wait_for(1, timeout=5)  # a poll-only runner would wait 60 s
    finally:
        server.close()


def test_run_whose_worker_died_is_picked_up_again(tmp_path, sink):
    app = make_live_app(tmp_path)
    _, token = make_recipe(app, steps=[http_step("a", sink.url, '{"n": 7}')])
    server = LiveServer(app, with_runner=False)
    run_id = server.post(token, json={}).json()["run_id"]
    core = app.extensions["hookline"]
    with core.session_factory() as s:  # a worker claims it with a short lease, then "dies"
        assert queue.claim(s, "dead-worker", 10, core.clock.now(), lease_seconds=-1) == [run_id]
    from web.server import start_runner
    runner = start_runner(app)
    try:
        assert sink.wait_for(1)[0].json() == {"n": 7}
        assert wait_run(app, run_id) == "succeeded"
        with app.app_context():
            assert db.session.get(Run, run_id).attempt == 2
    finally:
        runner.stop(5)
        server.close()


def test_connection_secrets_never_reach_the_history(live):
    with HttpSink(lambda req: Reply(200, {"echo": req.headers.get("Authorization")})) as sink:
        with live.app.app_context():
            conn = connections.create(db.session, live.app.extensions["hookline"].secret_box, "api",
                                      "http_auth", {"scheme": "bearer", "token": "sk_live_SECRET123"})
            conn_id = conn.id
        step = http_step("a", sink.url, '{"t": "x"}')
        step["connection"] = conn_id
        _, token = make_recipe(live.app, steps=[step])
        run_id = live.post(token, json={}, headers={"Authorization": "Bearer inbound-secret"}).json()["run_id"]
        assert sink.wait_for(1)[0].headers["Authorization"] == "Bearer sk_live_SECRET123"
        assert wait_run(live.app, run_id) == "succeeded"
        history = steps_of(live.app, run_id)
        with live.app.app_context():
            run = db.session.get(Run, run_id)
            stored = json.dumps([history, run.event.headers], default=str)
            raw_conn = db.session.get(connections.Connection, conn_id)
            assert b"sk_live_SECRET123" not in (raw_conn.secret_blob or b"")
        assert "sk_live_SECRET123" not in stored
        assert "inbound-secret" not in stored


def test_chat_and_email_steps_run_in_order(live):
    from tests.smtp_server import SmtpServer

    with HttpSink() as slack, SmtpServer(security="none") as smtp:
        with live.app.app_context():
            box = live.app.extensions["hookline"].secret_box
            slack_conn = connections.create(db.session, box, "slack", "slack_webhook",
                                            {"webhook_url": slack.url + "/services/T0/B0/x"}).id
            smtp_conn = connections.create(db.session, box, "mail", "smtp", {
                "host": smtp.host, "port": smtp.port, "security": "none",
                "from_address": "hookline@example.com"}).id
        _, token = make_recipe(live.app, fields=[
            {"name": "email", "path": "$.data.object.customer_details.email"},
            {"name": "name", "path": "$.data.object.customer_details.name"},
        ], steps=[
            {"key": "chat", "action": "slack_message", "connection": slack_conn,
             "inputs": {"text": "{{ name }} <{{ email }}> paid"}},
            {"key": "mail", "action": "email_send", "connection": smtp_conn,
             "inputs": {"to": "{{ email }}", "subject": "Thanks, {{ name | first_name }}",
                        "text": "We got your order."}},
        ])
        run_id = live.post(token, json=STRIPE_EVENT).json()["run_id"]
        assert slack.wait_for(1)[0].json()["text"] == "Ann Lee <ann@example.com> paid"
        mail = smtp.wait_for(1)[0]
        assert mail.rcpt_tos == ["ann@example.com"]
        assert mail.message["Subject"] == "Thanks, Ann"
        assert wait_run(live.app, run_id) == "succeeded"
        assert [s["key"] for s in steps_of(live.app, run_id)] == ["chat", "mail"]


def test_rotated_or_deleted_recipe_url_answers_404_even_after_being_cached(live):
    rid, token = make_recipe(live.app, steps=[])
    assert live.post(token, json={}).status_code == 202  # the token is now cached
    with live.app.app_context():
        recipe = db.session.get(recipes.Recipe, rid)
        new = recipes.rotate_token(db.session, recipe)
    assert live.post(token, json={}).status_code == 404
    assert live.post(new, json={}).status_code == 202
    with live.app.app_context():
        recipes.delete(db.session, db.session.get(recipes.Recipe, rid))
    assert live.post(new, json={}).status_code == 404


def test_deeply_nested_json_is_400_and_not_stored(live):
    _, token = make_recipe(live.app, steps=[])
    resp = live.post(token, data=b"[" * 5000 + b"]" * 5000, headers={"Content-Type": "application/json"})
    assert resp.status_code == 400 and "nested deeper" in resp.json()["error"]
    with live.app.app_context():
        assert db.session.scalars(select(Event)).all() == []


def test_methods_other_than_get_post_put_patch_store_nothing(live):
    """DELETE is refused with the methods that work; OPTIONS lists them; HEAD says whether
    the URL exists (senders and uptime monitors check it) without storing an event."""
    _, token = make_recipe(live.app)
    url = live.hook_url(token)
    deleted = requests.delete(url, timeout=5)
    assert deleted.status_code == 405 and deleted.json() == {"error": "method not allowed"}
    assert deleted.headers["Allow"] == "GET, POST, PUT, PATCH, HEAD, OPTIONS"
    options = requests.options(url, timeout=5)
    assert options.status_code == 200 and options.headers["Allow"] == deleted.headers["Allow"]
    head = requests.head(url, timeout=5)
    assert head.status_code == 200 and head.content == b""
    assert requests.head(live.hook_url("y" * 32), timeout=5).status_code == 404
    assert requests.post(url + "/extra", json={}, timeout=5).status_code == 404
    with live.app.app_context():
        assert db.session.scalars(select(Event)).all() == []
    for method in ("GET", "POST", "PUT", "PATCH"):
        assert requests.request(method, url, json={"m": method}, timeout=5).status_code == 202
    with live.app.app_context():
        assert sorted(e.method for e in db.session.scalars(select(Event))) == ["GET", "PATCH", "POST", "PUT"]


def test_query_and_headers_reach_the_event_as_the_sender_sent_them(live):
    _, token = make_recipe(live.app)
    resp = requests.post(live.hook_url(token) + "?a=1&b=x&b=y&empty=&caf%C3%A9=cr%C3%A8me", data=b"plain",
                         headers={"Content-Type": "text/plain", "X-Custom-Thing": "v1"}, timeout=5)
    assert resp.status_code == 202 and resp.headers["Content-Type"] == "application/json"
    with live.app.app_context():
        event = db.session.scalars(select(Event)).one()
        assert event.query == {"a": "1", "b": ["x", "y"], "empty": "", "café": "crème"}
        assert event.headers["x-custom-thing"] == "v1"
        assert event.headers["content-type"] == "text/plain"
        assert event.headers["content-length"] == "5"
        assert event.body == "plain" and event.method == "POST"


def test_an_input_the_step_does_not_use_is_neither_rendered_nor_recorded(live, sink):
    """Reported: "I switched a step to 'No body' and its runs failed on the old body's template,
    which nothing sends"; and the history showed a text/plain content type beside a JSON body
    that went out as application/json. The declaration says which inputs a run uses."""
    app = live.app
    _, token = make_recipe(app, steps=[
        http_step("json", sink.url + "/json", '{"n": {{ trigger.body.n }}}'),
        http_step("nobody", sink.url + "/nobody", "{{ trigger.body.gone.deeper }}", body_type="none"),
        http_step("raw", sink.url + "/raw", "n={{ trigger.body.n }}", body_type="raw", content_type="text/csv")])
    run_id = live.post(token, json={"n": 7}).json()["run_id"]
    assert wait_run(app, run_id) == "succeeded"
    got = {r.path: r for r in sink.wait_for(3)}
    assert got["/json"].json() == {"n": 7} and got["/nobody"].body == b"" and got["/raw"].body == b"n=7"
    assert got["/raw"].headers["Content-Type"] == "text/csv"
    recorded = {s["key"]: s["input"] for s in steps_of(app, run_id)}
    assert "content_type" not in recorded["json"] and recorded["json"]["body"] == '{"n": 7}'
    assert "body" not in recorded["nobody"] and "content_type" not in recorded["nobody"]
    assert recorded["raw"]["content_type"] == "text/csv"
