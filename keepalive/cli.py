"""``keepalive`` command line: ``serve`` runs the service; every setting is also a flag."""

from __future__ import annotations

import argparse
import logging
import re
import signal
import sys
from pathlib import Path
from typing import Any

from pydantic import SecretStr, ValidationError

from keepalive import __version__
from keepalive.api_client import default_url, token_file_for
from keepalive.client_commands import add_client_commands, run_client_command
from keepalive.settings import Settings


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


#: Settings that are secrets: no flag takes their value (``ps`` shows every command line to
#: every user); ``--NAME-file`` reads it from a file instead, or the environment variable is used.
SECRET_SETTINGS = {"api_token", "metrics_token", "webhook_url"}


def _add_settings_flags(parser: argparse.ArgumentParser) -> None:
    """One flag per settings field, with its description and environment variable in the help."""
    for name, field in Settings.model_fields.items():
        if name in SECRET_SETTINGS:
            parser.add_argument(
                _flag(name) + "-file", dest=f"{name}_file", default=None, metavar="FILE",
                help=f"{field.description} Read from FILE (a value on the command line would show in ps). "
                f"Env: KEEPALIVE_{name.upper()}.",
            )
            continue
        default = field.get_default(call_default_factory=True)
        shown = default
        help_text = f"{field.description} Env: KEEPALIVE_{name.upper()}. Default: {shown}."
        annotation = field.annotation
        if annotation is bool:
            parser.add_argument(_flag(name), dest=name, action=argparse.BooleanOptionalAction, default=None, help=help_text)
        else:
            metavar = "DIR" if annotation in (Path, Path | None) else name.upper()
            parser.add_argument(_flag(name), dest=name, default=None, metavar=metavar, help=help_text)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="keepalive",
        description="Keep JupyterLab browser sessions alive on the server (kiosk Chromium on its own display, xpra for viewers).",
    )
    parser.add_argument("--version", action="version", version=f"keepalive {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    serve = commands.add_parser(
        "serve",
        help="run the service in the foreground (Ctrl-C or SIGTERM stops it; sessions keep running)",
        description="Run the keepalive service in the foreground. Flags win over KEEPALIVE_* variables.",
    )
    _add_settings_flags(serve)
    add_client_commands(commands)
    return parser


class SecretFileError(ValueError):
    pass


def settings_from_args(args: argparse.Namespace) -> Settings:
    overrides: dict[str, Any] = {
        name: getattr(args, name) for name in Settings.model_fields if getattr(args, name, None) is not None
    }
    for name in SECRET_SETTINGS:
        path = getattr(args, f"{name}_file", None)
        if path is not None:
            try:
                value = Path(path).read_text().strip()
            except OSError as error:
                raise SecretFileError(f"{_flag(name)}-file: cannot read {path}: {error.strerror}") from None
            if not value:
                raise SecretFileError(f"{_flag(name)}-file: {path} is empty")
            overrides[name] = SecretStr(value)
    return Settings(**overrides)


def start_examples(settings: Settings, url: str) -> list[str]:
    """Commands that start a session when pasted into a shell as they are printed.

    The token comes from its file (never onto a command line, where ``ps`` shows it); the
    client command names the URL and token file only where its own defaults would miss them.
    """
    from_file = settings.api_token is None  # generated once and kept in the state dir
    token_line = f"TOKEN=$(cat {settings.token_file})" if from_file else "TOKEN=...  # the API token you configured"
    client = ["keepalive start"]
    if url != default_url():
        client.append(f"--url {url}")
    if from_file and settings.token_file != token_file_for(None):
        client.append(f"--token-file {settings.token_file}")
    return [
        token_line,
        f'curl --json \'{{"name": "alice"}}\' -H "Authorization: Bearer $TOKEN" {url}/sessions',
        "# or: " + " ".join([*client, "--name alice"]),
    ]


#: The banner's first line names where the service listens, once it is bound: with port 0, the
#: one way for whoever started it to learn which port it got (tests, the pytest plugin).
SERVING_LINE = re.compile(r"^keepalive \S+ serving the API at (http://\S+) \(docs: ", re.M)


def _print_banner(settings: Settings, token: str, created: bool, url: str) -> None:
    lines = [f"keepalive {__version__} serving the API at {url} (docs: {url}/docs)"]
    if created:
        lines.append(f"API token (shown once, stored in {settings.token_file}):\n    {token}")
    else:
        lines.append(f"API token: configured, or in {settings.token_file}")
    lines.append("Start a session:\n" + "\n".join(f"    {line}" for line in start_examples(settings, url)))
    print("\n".join(lines), flush=True)


def serve(settings: Settings) -> int:
    import uvicorn

    from keepalive.app import create_app
    from keepalive.engine.statelock import StateDirBusy, StateDirLock
    from keepalive.health import missing_prerequisites

    logging.basicConfig(
        level=settings.log_level.upper(),
        format="%(asctime)s %(levelname)-7s %(name)s: %(message)s",
    )
    # httpx logs every readiness probe at INFO: noise that hides the lifecycle lines
    logging.getLogger("httpx").setLevel(logging.WARNING)
    missing = missing_prerequisites(settings)
    if missing:
        for check in missing:
            print(f"keepalive: cannot run sessions: {check.detail}", file=sys.stderr)
        return 2
    try:  # before anything listens: a second service on one state dir would fight the first
        state_lock = StateDirLock(settings.state_dir).acquire()
    except StateDirBusy as error:
        print(f"keepalive: {error}", file=sys.stderr)
        return 2
    if settings.per_session_users:
        from keepalive.engine.users import unreachable_reason

        problem = unreachable_reason(settings.state_dir)
        if problem is not None:
            print(f"keepalive: {problem}", file=sys.stderr)
            state_lock.release()
            return 2
    from keepalive.engine.containment import protect_service

    protect_service()  # as root: the OOM killer takes a session's kernel, never the service
    app = create_app(settings, state_lock)
    config = uvicorn.Config(app, host=settings.host, port=settings.port, log_level=settings.log_level.lower())
    server = uvicorn.Server(config)

    original_startup = server.startup

    async def startup(sockets=None) -> None:
        await original_startup(sockets)
        bound = server.servers[0].sockets[0].getsockname()[1] if server.servers else settings.port
        host = settings.host if ":" not in settings.host else f"[{settings.host}]"
        _print_banner(settings, app.state.api_token, app.state.token_created, f"http://{host}:{bound}")

    server.startup = startup  # print the banner only once the port is really bound
    # uvicorn handles SIGINT/SIGTERM itself (graceful shutdown, sessions stopped), then
    # re-raises the signal under the handlers it found: make those end the process with 0.
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, _exit_after_shutdown)
    server.run()
    return 0


def _exit_after_shutdown(signum: int, frame: object) -> None:
    raise SystemExit(0)


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 2
    if args.command != "serve":
        return run_client_command(args)
    try:
        settings = settings_from_args(args)
    except SecretFileError as error:
        print(f"keepalive: {error}", file=sys.stderr)
        return 2
    except ValidationError as error:
        for problem in error.errors():
            field = problem["loc"][0] if problem["loc"] else "?"
            print(f"keepalive: --{str(field).replace('_', '-')}: {problem['msg']}", file=sys.stderr)
        return 2
    return serve(settings)


if __name__ == "__main__":
    sys.exit(main())
