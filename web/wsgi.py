"""WSGI entry point for an external server, e.g. ``gunicorn -w 4 'web.wsgi:app'``.
It serves the UI and the inbound endpoint only; run ``hookline worker`` for the runner. The
instance folder is found as the CLI finds it (``HOOKLINE_INSTANCE_PATH``, else ./instance)."""
from .app import create_app
from .config import default_instance_path

app = create_app(instance_path=default_instance_path())
