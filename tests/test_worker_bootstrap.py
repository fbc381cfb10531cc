"""``hookline worker`` builds the engine without the Flask app (web/worker.py): it must read
the same configuration and open the same database as the web app, and stay Flask-free."""
from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

from web.app import create_app
from web.worker import worker_core

ROOT = Path(__file__).resolve().parents[1]


def test_worker_reads_the_same_configuration_as_the_web_app(tmp_path, monkeypatch):
    instance = tmp_path / "instance"
    instance.mkdir()
    (instance / "config.py").write_text(textwrap.dedent("""
        DATABASE_URL = "sqlite:///data/hook.db"   # relative: to the instance folder
        RUNNER_THREADS = 3
        LEASE_SECONDS = 77
        lower_case_is_ignored = 1
    """))
    (instance / "data").mkdir()
    monkeypatch.setenv("HOOKLINE_RETENTION_DAYS", "5")
    monkeypatch.setenv("HOOKLINE_LEASE_SECONDS", "88")  # the environment wins over config.py
    monkeypatch.delenv("HOOKLINE_DATABASE_URL", raising=False)
    app = create_app(instance_path=str(instance))
    web_core = app.extensions["hookline"]
    core = worker_core(instance)
    try:
        assert str(core.engine.url) == str(web_core.engine.url) == f"sqlite:///{instance / 'data' / 'hook.db'}"
        assert (core.runner_threads, core.lease_seconds, core.retention_days) == (3, 88, 5.0)
        assert (web_core.runner_threads, web_core.lease_seconds, web_core.retention_days) == (3, 88, 5.0)
        assert "lower_case_is_ignored" not in app.config
        # one instance key: what the web app encrypts, the worker decrypts
        assert core.secret_box.decrypt(web_core.secret_box.encrypt({"k": "s3cret"})) == {"k": "s3cret"}
    finally:
        core.engine.dispose()


def test_a_worker_never_imports_the_web_framework(tmp_path):
    script = textwrap.dedent(f"""
        import sys
        from web.worker import worker_core
        from automations.runner import Runner
        runner = Runner(worker_core({str(tmp_path / 'instance')!r}), threads=2).start()
        runner.stop(5)
        web = sorted(m for m in sys.modules
                     if m.split('.')[0] in {{'flask', 'flask_sqlalchemy', 'flask_wtf', 'wtforms', 'waitress'}})
        print('web modules:', web)
    """)
    proc = subprocess.run([sys.executable, "-c", script], check=False, cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert "web modules: []" in proc.stdout, proc.stdout


OPTIONAL_LIBRARIES = ("regex", "babel.numbers", "dateutil", "html.parser", "defusedxml", "smtplib",
                      "email.headerregistry", "yaml", "cryptography")


def test_the_libraries_of_features_a_recipe_does_not_use_stay_unloaded(tmp_path):
    """Each costs memory in every process that loads it (about 5 MiB together, 7 more for
    cryptography): a runner delivering plain JSON webhooks loads none of them, a web process
    storing them none but Babel (which Flask-WTF imports), and the first use of each feature
    loads what it needs, in a fresh process."""
    from tests.sinks import HttpSink
    from tests.test_crash_recovery import write_recipe

    with HttpSink() as sink:
        instance = tmp_path / "instance"
        token = write_recipe(instance, sink.url)
        app = create_app(instance_path=str(instance))
        assert app.test_client().post(f"/hooks/{token}", json={"n": 41}).status_code == 202
        app.extensions["hookline"].close()
        script = textwrap.dedent(f"""
            import sys, time
            from sqlalchemy import text
            from automations.runner import Runner
            from web.worker import worker_core
            OPTIONAL = {OPTIONAL_LIBRARIES!r}
            loaded = lambda: sorted(m for m in OPTIONAL if m in sys.modules)
            core = worker_core({str(instance)!r})
            runner = Runner(core, threads=2).start()
            deadline, status = time.monotonic() + 20, None
            while status != 'succeeded' and time.monotonic() < deadline:
                time.sleep(0.05)
                with core.engine.connect() as c:
                    status = c.execute(text("select status from runs")).scalar()
            runner.stop(5)
            assert status == 'succeeded', status
            print('delivered:', loaded(), flush=True)
            from web.app import create_app
            app = create_app(instance_path={str(instance)!r})
            assert app.test_client().post('/hooks/{token}', json={{'n': 42}}).status_code == 202
            print('stored:', loaded(), flush=True)
            from automations.filters import FILTERS
            from automations import inbound, portability
            from connectors import email
            assert FILTERS['regex_replace']('a-b', '-', '+') == 'a+b'
            assert FILTERS['strip_html']('<p>x</p>') == 'x'
            assert FILTERS['format_number'](1234.5, 1, 'de_DE') == '1.234,5'
            assert FILTERS['format_datetime']('28 November 2026 10:00', '%Y-%m-%d') == '2026-11-28'
            assert FILTERS['add_time']('2026-01-31T00:00:00', months=1).month == 2
            assert inbound.parse_body('application/xml', b'<a><b>1</b></a>').value == {{'a': {{'b': '1'}}}}
            msg, _, _ = email.build_message({{'to': 'x@example.com', 'subject': 's', 'text': 't'}},
                                            {{'from_address': 'me@example.com'}}, 'k')
            assert msg['To'] == 'x@example.com'
            assert 'recipes: []' in portability.dumps({{'recipes': []}})
            core.secret_box.encrypt({{'k': 'v'}})
            print('used:', loaded(), flush=True)
        """)
        proc = subprocess.run([sys.executable, "-c", script], check=False, cwd=ROOT, capture_output=True, text=True,
                              timeout=90, env={**os.environ, "HOOKLINE_OUTBOUND_ALLOWLIST": "127.0.0.0/8"})
        assert proc.returncode == 0, proc.stdout + proc.stderr
        assert [r.json() for r in sink.wait_for(1)] == [{"n": 41}]
    assert "delivered: []" in proc.stdout, proc.stdout
    assert "stored: ['babel.numbers']" in proc.stdout, proc.stdout
    sent_no_email = sorted(set(OPTIONAL_LIBRARIES) - {"smtplib"})  # sending needs a server: test_connector_email
    assert f"used: {sent_no_email!r}" in proc.stdout, proc.stdout
