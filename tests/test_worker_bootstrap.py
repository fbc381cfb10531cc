"""``hookline worker`` builds the engine without the Flask app (web/worker.py): it must read
the same configuration and open the same database as the web app, and stay Flask-free."""
from __future__ import annotations

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
