"""The ``hookline`` command. Each subcommand builds the app from ``instance/`` and the
``HOOKLINE_*`` environment, exactly as the server does."""
from __future__ import annotations

import logging
import os
import re
import stat
import sys
from pathlib import Path

import click

from automations.logredact import install as install_log_redaction
from connectors.redaction import redact_text

from .config import ConfigError, default_instance_path


def _app(instance: str | None):
    from .app import create_app  # here, not at the top: ``worker`` never imports Flask

    return create_app(instance_path=_instance_path(instance))


def _instance_path(instance: str | None) -> str:
    return str(Path(instance).resolve()) if instance else default_instance_path()


instance_option = click.option("--instance", envvar="HOOKLINE_INSTANCE_PATH", default=None,
                               help="Instance folder (config.py, keys, SQLite file). Default: ./instance")


class _Main(click.Group):
    def invoke(self, ctx: click.Context) -> object:
        try:
            return super().invoke(ctx)
        except ConfigError as exc:  # a mistyped HOOKLINE_* value: say which, not a traceback
            raise click.ClickException(str(exc)) from None


@click.group(cls=_Main)
@click.option("-v", "--verbose", is_flag=True, help="Log debug messages.")
def main(verbose: bool) -> None:
    """Hookline: webhooks in, actions out, every run kept."""
    logging.basicConfig(level=logging.DEBUG if verbose else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    install_log_redaction()  # tokens, credentials and webhook paths never reach the log
    if not verbose:  # APScheduler logs every tick of the dispatcher at INFO
        logging.getLogger("apscheduler").setLevel(logging.WARNING)


@main.command()
@instance_option
@click.option("--host", default=None, help="Bind address (default: HOST setting, 127.0.0.1).")
@click.option("--port", type=int, default=None, help="Port (default: PORT setting, 8080).")
@click.option("--no-worker", is_flag=True, help="Serve the web UI and inbound endpoint only.")
@click.option("--runner-process/--no-runner-process", default=None,
              help="Run the runner in a child process this command starts, watches and stops, so web "
                   "and runner each get a core; or in this process. Default: the RUNNER_PROCESS setting "
                   "(auto: a child process when two or more cores are available).")
def serve(instance: str | None, host: str | None, port: int | None, no_worker: bool,
          runner_process: bool | None) -> None:
    """Run the web server and (unless --no-worker) the runner: in a child process that serve
    supervises (the default with two or more cores), or in this process."""
    from .config import ConfigError
    from .cpu_affinity import cpu_plan
    from .runner_process import runner_process_wanted
    from .server import serve as _serve

    if no_worker and runner_process:
        raise click.UsageError("--no-worker and --runner-process exclude each other")
    app = _app(instance)
    if runner_process is None:
        try:
            runner_process = runner_process_wanted(app.config["RUNNER_PROCESS"])
        except ValueError as exc:
            raise click.UsageError(str(exc)) from None
    try:
        cpus = cpu_plan(app.config["CPU_AFFINITY"])
    except ConfigError as exc:
        raise click.UsageError(str(exc)) from None
    _serve(app, with_worker=not no_worker, runner_process=runner_process, host=host, port=port,
           shutdown_timeout=float(app.config["SHUTDOWN_SECONDS"]), cpus=cpus)


def _cpu_list(_ctx: click.Context, _param: click.Parameter, value: str | None) -> frozenset[int] | None:
    from .cpu_affinity import parse_cpu_list

    try:
        return None if value is None else parse_cpu_list(value)
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from None


@main.command()
@instance_option
@click.option("--wake-fd", type=int, default=None, hidden=True,
              help="Pipe from serve --runner-process: wake-ups; end-of-file stops this worker.")
@click.option("--owner", default=None, hidden=True,
              help="Lease owner name chosen by serve --runner-process.")
@click.option("--shutdown-seconds", type=float, default=None, hidden=True,
              help="serve --runner-process's own SHUTDOWN_SECONDS, so the two wait alike.")
@click.option("--cpus", default=None, hidden=True, callback=_cpu_list,
              help="CPUs to keep to, as a list like 1 or 2-3 (serve's CPU_AFFINITY plan for its child).")
def worker(instance: str | None, wake_fd: int | None, owner: str | None,
           shutdown_seconds: float | None, cpus: frozenset[int] | None) -> None:
    """Run only the runner: claim and execute due runs until SIGTERM."""
    from .cpu_affinity import pin_process
    from .worker import run_worker, worker_core

    if cpus is not None:
        pin_process(cpus, "runner")

    core = worker_core(_instance_path(instance))
    timeout = core.shutdown_seconds if shutdown_seconds is None else shutdown_seconds
    run_worker(core, shutdown_timeout=timeout, wake_fd=wake_fd, owner=owner)


@main.command("init-db")
@instance_option
def init_db(instance: str | None) -> None:
    """Create the database schema and instance keys (also done on every start)."""
    app = _app(instance)
    click.echo(f"database ready: {app.config['DATABASE_URL']}")


@main.command("export")
@instance_option
@click.argument("file", required=False, type=click.Path(dir_okay=False))
@click.option("--format", "fmt", type=click.Choice(["yaml", "json"]), default=None,
              help="Default: from FILE's extension, else YAML.")
def export_cmd(instance: str | None, file: str | None, fmt: str | None) -> None:
    """Write every recipe (never secrets) to FILE, or to standard output."""
    from automations import portability

    from .extensions import db

    app = _app(instance)
    fmt = fmt or ("json" if file and file.endswith(".json") else "yaml")
    with app.app_context():
        text = portability.dumps(portability.export_all(db.session), fmt)
    if file:
        _write_private(file, text)
        click.echo(f"exported to {file}", err=True)
    else:
        sys.stdout.write(text)


def _write_private(file: str, text: str) -> None:
    """Write ``text`` to ``file`` readable by its owner only (0600): an export holds every
    inbound token, and a token is all a sender needs. An existing regular file is truncated
    and narrowed to 0600 before anything is written to it."""
    fd = os.open(file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        mode = os.fstat(fd).st_mode
        if stat.S_ISREG(mode) and mode & 0o077:
            try:
                os.fchmod(fd, 0o600)
            except OSError:  # another user's file we may write to: its owner chose its mode
                pass
        fh.write(text)


_YAML_EXCERPT = re.compile(r"(, column \d+):\n[^\n]*\n *\^")  # a quoted line of the file and its caret


def _safe_problem(text: str) -> str:
    """An import problem without the file's own lines (YAML errors quote them, credentials
    and all: a truncated excerpt cannot be redacted reliably), other secrets redacted."""
    return redact_text(_YAML_EXCERPT.sub(r"\1", text))


@main.command("import")
@instance_option
@click.argument("file", type=click.Path(exists=True, dir_okay=False, allow_dash=True))
def import_cmd(instance: str | None, file: str) -> None:
    """Create or update the recipes in FILE (matched by inbound token) and print their URLs."""
    from automations import portability

    from .extensions import db

    try:
        if file == "-":
            text = portability.read_limited(sys.stdin.buffer, "standard input")
        else:
            if os.stat(file).st_size > portability.MAX_FILE_BYTES:  # refused unread
                raise portability.ImportProblem(f"{file} is larger than "
                                                f"{portability.MAX_FILE_BYTES // (1024 * 1024)} MiB: refused")
            with open(file, "rb") as fh:
                text = portability.read_limited(fh, file)
    except portability.ImportProblem as exc:
        raise click.ClickException(str(exc)) from None
    app = _app(instance)
    with app.app_context():
        try:
            results = portability.import_all(db.session, portability.loads(text))
        except portability.ImportProblem as exc:
            raise click.ClickException(_safe_problem(str(exc))) from None
        base = app.config["PUBLIC_URL"]
        for r in results:
            click.echo(f"{r.action:8} {r.recipe.name}: {base}/hooks/{r.recipe.token}")


@main.command("create-user")
@instance_option
@click.argument("email")
@click.option("--role", type=click.Choice(["admin", "editor", "viewer"]), default="viewer", show_default=True,
              help="admin: everything, including connections (secrets); editor: recipes and "
                   "replays; viewer: read only.")
@click.option("--password-stdin", is_flag=True,
              help="Read the password from the first line of standard input (for scripts) "
                   "instead of prompting for it twice.")
def create_user_cmd(instance: str | None, email: str, role: str, password_stdin: bool) -> None:
    """Create a web UI user who signs in with EMAIL.

    The first admin must be created this way (or on the /setup page, which exists only while
    there is no user). Passwords need at least 10 characters and are stored hashed (scrypt).

    \b
    Examples:
      hookline create-user ann@example.com --role admin
      printf '%s\\n' "$PW" | hookline create-user ci@example.com --role editor --password-stdin
    """
    from automations import users

    from .extensions import db

    if password_stdin:
        password = sys.stdin.readline().rstrip("\r\n")
    else:
        password = click.prompt("Password", hide_input=True, confirmation_prompt=True)
    app = _app(instance)
    with app.app_context():
        try:
            user = users.create_user(db.session, email, password, role)
        except users.UserInvalid as exc:
            raise click.ClickException(str(exc)) from None
        click.echo(f"created {user.role} {user.email}")


@main.command("connectors")
def connectors_cmd() -> None:
    """Print the reference of every action and connection type (generated from their declarations)."""
    from connectors.docs import markdown

    click.echo(markdown())


if __name__ == "__main__":  # pragma: no cover
    main()
