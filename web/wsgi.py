"""WSGI entry point for an external server, e.g. ``gunicorn -w 4 'web.wsgi:app'``.
It serves the UI and the inbound endpoint only; run ``hookline worker`` for the runner."""
from .app import create_app

app = create_app()
