"""Fixes from a review of the PostgreSQL scale-out: runs that could never finish looped on
lease expiry with nothing in their history; missing indexes made purges crawl; processes
starting together raced on the schema; gunicorn ignored HOOKLINE_INSTANCE_PATH."""
from __future__ import annotations

import base64
import os
import subprocess
import sys

from sqlalchemy import inspect, update

from automations import connections, recipes
from automations.core import build_core
from automations.db import make_engine
from automations.models import Run
from automations.runner import Runner
from tests.pg import temp_database
from tests.test_e2e import http_step, wait_run
from web.extensions import db


def test_a_worker_that_cannot_decrypt_a_connection_fails_the_run_and_says_why(app, client, tmp_path):
    """A worker started with another instance folder has another encryption key: the run
    failed invisibly and was claimed again after every lease, forever."""
    with app.app_context():
        conn_id = connections.create(db.session, app.extensions["hookline"].secret_box, "crm", "http_auth",
                                     {"scheme": "bearer", "token": "s3cret"}).id
        step = {**http_step("s", "http://127.0.0.1:9/x", "{}"), "connection": conn_id}
        token = recipes.create(db.session, "r", {"steps": [step]}).token
    run_id = client.post(f"/hooks/{token}", json={}).get_json()["run_id"]
    other_key = base64.urlsafe_b64encode(os.urandom(32)).decode()
    engine = make_engine(app.config["SQLALCHEMY_DATABASE_URI"])
    worker = build_core(engine, {"ENCRYPTION_KEYS": [other_key], "OUTBOUND_ALLOWLIST": ["127.0.0.0/8"]},
                        tmp_path / "other-instance")
    runner = Runner(worker, threads=2).start()
    try:
        assert wait_run(app, run_id) == "failed"
    finally:
        runner.stop(5)
        worker.close()
    with app.app_context():
        error = db.session.get(Run, run_id).error
    assert "cannot be decrypted" in error and "ENCRYPTION_KEYS" in error


def test_a_run_whose_attempts_never_finish_goes_dead_instead_of_looping(app, client):
    with app.app_context():
        token = recipes.create(db.session, "r", {"steps": [http_step("s", "http://127.0.0.1:9/x", "{}")],
                                                 "settings": {"retry": {"max_attempts": 2}}}).token
    run_id = client.post(f"/hooks/{token}", json={}).get_json()["run_id"]
    with app.app_context():  # two claims whose worker crashed before recording anything
        db.session.execute(update(Run).where(Run.id == run_id).values(attempt=2))
        db.session.commit()
    runner = Runner(app.extensions["hookline"], threads=2).start()
    try:
        assert wait_run(app, run_id) == "dead"
    finally:
        runner.stop(5)
    with app.app_context():
        run = db.session.get(Run, run_id)
        assert run.attempt == 3 and run.error.startswith("gave up: attempt 3 of at most 2")


def test_foreign_keys_of_runs_are_indexed_also_in_a_database_made_before(app):
    """Deleting a run looks up the runs replaying it, deleting an event its runs: without
    these indexes each purged row scanned the whole runs table (23 s per 500 on PostgreSQL)."""
    engine = app.extensions["hookline"].engine
    with engine.begin() as conn:  # a database made before the indexes existed
        conn.exec_driver_sql("DROP INDEX ix_runs_event")
        conn.exec_driver_sql("DROP INDEX ix_runs_replay_of")
    from automations.schema import create_schema
    create_schema(engine)
    names = {i["name"] for i in inspect(engine).get_indexes("runs")}
    assert {"ix_runs_event", "ix_runs_replay_of"} <= names


def test_gunicorn_entry_point_uses_hookline_instance_path(tmp_path):
    folder = tmp_path / "elsewhere"
    code = "import web.wsgi as w; print(w.app.instance_path)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, cwd=tmp_path,
                         check=False,
                         env={**os.environ, "HOOKLINE_INSTANCE_PATH": str(folder)})
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == str(folder)
    assert (folder / "hookline.db").exists() and (folder / "encryption.key").exists()


def test_processes_starting_together_on_an_empty_postgresql_database_all_start():
    """Four `hookline init-db` at once against a fresh database: create_all raced (a duplicate
    type name) and some of them crashed."""
    gen = temp_database()
    url = next(gen)
    try:
        env = {**os.environ, "HOOKLINE_DATABASE_URL": url}
        code = ("import sys; from automations.db import make_engine; from automations.schema import create_schema; "
                "create_schema(make_engine(sys.argv[1]))")
        procs = [subprocess.Popen([sys.executable, "-c", code, url], env=env, stdout=subprocess.PIPE,
                                  stderr=subprocess.PIPE, text=True) for _ in range(4)]
        results = [(p.wait(60), p.stderr.read()) for p in procs]
        assert all(rc == 0 for rc, _err in results), [err[-500:] for rc, err in results if rc]
        assert {"ix_runs_event", "ix_runs_replay_of"} <= {
            i["name"] for i in inspect(make_engine(url)).get_indexes("runs")}
    finally:
        gen.close()


def test_a_postgresql_process_keeps_few_connections_whatever_its_thread_count():
    """Pools sized by thread count (68 + 20 for the web tier, 36 + 20 per worker) used up
    PostgreSQL's 100 connections with three workers."""
    from automations.db import PG_POOL_MAX, engine_options
    options = engine_options("postgresql+psycopg://postgres@127.0.0.1/x", pool_size=68)
    assert options["pool_size"] + options["max_overflow"] == PG_POOL_MAX == 15
    assert engine_options("sqlite:///x.db", pool_size=68)["pool_size"] == 68  # SQLite: one file, no budget


def test_a_connections_secret_echoed_by_an_api_is_scrubbed_from_the_later_steps_that_use_it(tmp_path):
    """The security review's report: step a authenticates (bearer, and basic), the API echoes
    the credential, and step b sends `{{ steps | to_json }}` on: b's recorded input and
    request showed the token and the password's base64 form in the run history."""
    import json as jsonlib

    from tests.live import LiveServer, make_live_app
    from tests.sinks import HttpSink, Reply
    from tests.test_e2e import steps_of

    live = LiveServer(make_live_app(tmp_path))
    try:
        app = live.app

        def echo(req):
            return Reply(200, {"you_sent": req.headers.get("Authorization", "")})
        with HttpSink(echo) as sink:
            with app.app_context():
                box = app.extensions["hookline"].secret_box
                bearer = connections.create(db.session, box, "bearer", "http_auth",
                                            {"scheme": "bearer", "token": "SECRETBEARER_abcdef123456"}).id
                basic = connections.create(db.session, box, "basic", "http_auth",
                                           {"scheme": "basic", "username": "bob", "password": "SECRETBASICPW_55555"}).id
                token = recipes.create(db.session, "r", {"steps": [
                    {**http_step("a", sink.url + "/echo", "{}"), "connection": bearer},
                    {**http_step("b", sink.url + "/echo", "{}"), "connection": basic},
                    http_step("c", sink.url + "/on", "{{ steps | to_json }}"),
                ]}).token
            run_id = live.post(token, json={}).json()["run_id"]
            assert wait_run(app, run_id) == "succeeded"
            recorded = jsonlib.dumps(steps_of(app, run_id))
        assert "SECRETBEARER_abcdef123456" not in recorded
        assert "SECRETBASICPW_55555" not in recorded
        assert base64.b64encode(b"bob:SECRETBASICPW_55555").decode() not in recorded
        assert "[redacted]" in recorded
    finally:
        live.close()
