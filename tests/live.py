"""A real Hookline on a real port: waitress in a thread plus the in-process runner, the way
``hookline serve`` runs it, over a database in the test's temporary folder."""
from __future__ import annotations

import threading
from typing import Any

import requests
from flask import Flask

from web.app import create_app
from web.server import make_server, start_runner

TEST_ALLOWLIST = ["127.0.0.0/8", "::1/128", "localhost"]


def live_config(**overrides: Any) -> dict[str, Any]:
    cfg: dict[str, Any] = {
        "TESTING": True,
        "WTF_CSRF_ENABLED": False,
        "SECRET_KEY": "test",
        "OUTBOUND_ALLOWLIST": TEST_ALLOWLIST,
        "OUTBOUND_TIMEOUT": 5.0,
        "HOST": "127.0.0.1",
        "PORT": 8080,
        "RUNNER_THREADS": 4,
        "WEB_THREADS": 4,
        "POLL_INTERVAL": 0.2,
    }
    cfg.update(overrides)
    return cfg


class LiveServer:
    def __init__(self, app: Flask, with_runner: bool = True) -> None:
        self.app = app
        self.runner = start_runner(app) if with_runner else None
        self.server = make_server(app, "127.0.0.1", 0)
        self.url = f"http://127.0.0.1:{self.server.effective_port}"
        self._closing = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        try:
            self.server.run()
        except (OSError, ValueError):  # close() from this thread's outside: select() saw a closed socket
            if not self._closing.is_set():
                raise

    def hook_url(self, token: str) -> str:
        return f"{self.url}/hooks/{token}"

    def post(self, token: str, **kw: Any) -> requests.Response:
        return requests.post(self.hook_url(token), timeout=10, **kw)

    def close(self) -> None:
        self._closing.set()
        self.server.close()
        if self.runner is not None:
            self.runner.stop(timeout=5)


def make_live_app(tmp_path: Any, **overrides: Any) -> Flask:
    return create_app(live_config(**overrides), instance_path=str(tmp_path / "instance"))
