"""Application factory. No module-level app: the CLI, the WSGI entry point and tests each
call ``create_app``."""
from __future__ import annotations

from typing import Any

from flask import Flask, Response
from werkzeug.middleware.proxy_fix import ProxyFix

from automations.core import build_core
from automations.db import engine_options
from automations.logredact import install as install_log_redaction

from . import config, extensions
from .extensions import db


def create_app(test_config: dict[str, Any] | None = None, instance_path: str | None = None) -> Flask:
    app = Flask(__name__, instance_relative_config=True, instance_path=instance_path)
    config.load(app, test_config)
    app.config.setdefault(
        "SQLALCHEMY_ENGINE_OPTIONS",
        engine_options(app.config["SQLALCHEMY_DATABASE_URI"],
                       pool_size=app.config["WEB_THREADS"] + app.config["RUNNER_THREADS"] + 4),
    )
    install_log_redaction()
    extensions.init_app(app)
    with app.app_context():
        app.extensions["hookline"] = build_core(db.engine, app.config, app.instance_path)
        app.extensions["hookline"].create_schema()
    _register_blueprints(app)
    app.after_request(_deny_framing)
    if app.config["TRUSTED_PROXIES"]:
        n = int(app.config["TRUSTED_PROXIES"])
        app.wsgi_app = ProxyFix(app.wsgi_app, x_for=n, x_proto=n, x_host=n)  # type: ignore[method-assign]
    return app


def _register_blueprints(app: Flask) -> None:
    from . import auth, connections, health, hooks, recipes, runs, ui, users

    hooks.install(app)  # /hooks/… in plain WSGI in front of Flask; the blueprints get the rest
    app.register_blueprint(auth.bp)
    app.register_blueprint(ui.bp)
    app.register_blueprint(recipes.bp)
    app.register_blueprint(connections.bp)
    app.register_blueprint(runs.bp)
    app.register_blueprint(users.bp)
    app.register_blueprint(health.bp)


def _deny_framing(response: Response) -> Response:
    """No page of the UI may be framed by another site (clickjacking): ``X-Frame-Options`` for
    old browsers, CSP ``frame-ancestors`` for current ones, added to any policy already set."""
    response.headers.setdefault("X-Frame-Options", "DENY")
    policy = response.headers.get("Content-Security-Policy", "").strip().rstrip(";").strip()
    directives = [d.strip().split(None, 1)[0].lower() for d in policy.split(";") if d.strip()]
    if "frame-ancestors" not in directives:
        response.headers["Content-Security-Policy"] = (
            f"{policy}; frame-ancestors 'none'" if policy else "frame-ancestors 'none'")
    return response
