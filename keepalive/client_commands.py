"""The client subcommands: ``keepalive start|list|show|stop|screenshot|viewer-link|homes|delete-home|doctor``.

Each is a thin client of a running service's REST API (keepalive.api_client). Results go to stdout
(``--json`` where a script wants them whole), progress and errors to stderr, one line per error.
Exit codes: 0 done; 1 the service said no (or the session failed); 2 bad usage; 3 no service
answers at the URL; 4 no API token, or a wrong one; 130 interrupted (Ctrl-C).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

from keepalive.api_client import Client, ClientError, default_url, find_token

#: Health parts of a starting session, and what to call them while waiting for them.
WAITING_FOR = {"jupyter": "Jupyter server", "xpra": "display", "browser": "browser", "page": "JupyterLab page"}
#: The exit code of a command stopped by Ctrl-C (128 + SIGINT, as shells report it).
INTERRUPTED = 130
#: How often a waiting ``start`` asks for the session's state.
POLL_SECONDS = 0.5


def add_client_commands(commands: argparse._SubParsersAction) -> None:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--url", default=None, help=f"the service (env KEEPALIVE_URL; default {default_url()})")
    common.add_argument(
        "--token-file", type=Path, default=None, metavar="FILE",
        help="file holding the API token (default: KEEPALIVE_API_TOKEN, else the state dir's api-token)",
    )
    common.add_argument("--state-dir", type=Path, default=None, metavar="DIR",
                        help="the service's state dir, where its api-token is (env KEEPALIVE_STATE_DIR)")

    start = commands.add_parser("start", parents=[common], help="start a session (shows progress until it is ready)")
    start.add_argument("--name", help="1-63 of a-z, 0-9 and '-'; unique among live sessions")
    start.add_argument("--width", type=int, help="screen width (default: the service's)")
    start.add_argument("--height", type=int, help="screen height (default: the service's)")
    start.add_argument("--heavyai-host", help="HeavyDB host to hand the session")
    start.add_argument("--heavyai-port", type=int, help="HeavyDB port (default 6278)")
    start.add_argument("--heavyai-protocol", choices=["http", "https", "binary"], help="default https")
    start.add_argument("--heavyai-session-id-file", type=Path, metavar="FILE",
                       help="file holding the HeavyDB session ID ('-': standard input); never on the command line")
    start.add_argument("--heavyai-query", help="SQL to place in the workspace")
    start.add_argument("--no-wait", action="store_true", help="return as soon as the service accepted the session")
    start.add_argument("--timeout", type=float, default=300.0, help="seconds to wait for ready (default 300)")
    start.add_argument("--json", action="store_true", help="print the session as JSON")
    start.set_defaults(handler=cmd_start)

    listing = commands.add_parser("list", parents=[common], help="list sessions (a table, or --json)")
    listing.add_argument("--json", action="store_true", help="print the sessions as JSON")
    listing.set_defaults(handler=cmd_list)

    show = commands.add_parser("show", parents=[common], help="show one session")
    show.add_argument("session", metavar="ID|NAME")
    show.add_argument("--json", action="store_true", help="print the session as JSON")
    show.set_defaults(handler=cmd_show)

    stop = commands.add_parser("stop", parents=[common], help="stop sessions (their homes stay)")
    stop.add_argument("sessions", metavar="ID|NAME", nargs="*")
    stop.add_argument("--all", action="store_true", help="stop every session")
    stop.set_defaults(handler=cmd_stop)

    restart_jupyter = commands.add_parser(
        "restart-jupyter", parents=[common],
        help="restart a session's Jupyter server (e.g. after an upgrade); its kernels run on",
    )
    restart_jupyter.add_argument("session", metavar="ID|NAME")
    restart_jupyter.add_argument("--json", action="store_true", help="print the session as JSON")
    restart_jupyter.set_defaults(handler=cmd_restart_jupyter)

    shot = commands.add_parser("screenshot", parents=[common], help="save a PNG of what the kiosk shows")
    shot.add_argument("session", metavar="ID|NAME")
    shot.add_argument("-o", "--output", type=Path, required=True, metavar="FILE", help="where to write the PNG")
    shot.set_defaults(handler=cmd_screenshot)

    link = commands.add_parser("viewer-link", parents=[common], help="print a single-use link to the viewer")
    link.add_argument("session", metavar="ID|NAME")
    link.add_argument("--keyboard-layout", help="e.g. de, fr, gb")
    link.add_argument("--read-only", action="store_true",
                      help="a watch-only link: the session shows live, nothing typed or clicked reaches it")
    link.set_defaults(handler=cmd_viewer_link)

    homes = commands.add_parser("homes", parents=[common], help="list the homes (one per session name)")
    homes.set_defaults(handler=cmd_homes)

    timeline = commands.add_parser(
        "timeline", parents=[common], help="what a home's sessions did: events and runs, newest first"
    )
    timeline.add_argument("name", metavar="NAME")
    timeline.add_argument("--since", help="only events at or after this ISO time (e.g. 2026-12-05T08:00Z)")
    timeline.add_argument("--limit", type=int, default=50, help="events to show, at most (default 50)")
    timeline.add_argument("--json", action="store_true", help="the API's JSON instead of lines")
    timeline.set_defaults(handler=cmd_timeline)

    delete_home = commands.add_parser(
        "delete-home", parents=[common], help="delete a home: its notebooks, settings and browser profile"
    )
    delete_home.add_argument("name", metavar="NAME")
    delete_home.set_defaults(handler=cmd_delete_home)

    token = commands.add_parser(
        "token", parents=[common], help="print the API token (for scripts: TOKEN=$(keepalive token))"
    )
    token.set_defaults(handler=cmd_token)

    doctor = commands.add_parser("doctor", parents=[common], help="check this machine and the running service")
    doctor.set_defaults(handler=cmd_doctor)


def run_client_command(args: argparse.Namespace) -> int:
    try:
        return args.handler(args)
    except ClientError as error:
        print(f"keepalive {args.command}: {error}", file=sys.stderr)
        return error.exit_code
    except KeyboardInterrupt:
        print(f"keepalive {args.command}: interrupted", file=sys.stderr)
        return INTERRUPTED


def _client(args: argparse.Namespace, timeout: float = 30.0) -> Client:
    url = (args.url or default_url()).rstrip("/")
    return Client(url, find_token(args.token_file, args.state_dir), timeout=timeout)


def _print_json(value: object) -> None:
    print(json.dumps(value, indent=2))


def _age(created_at: str) -> str:
    seconds = int((datetime.now(UTC) - datetime.fromisoformat(created_at.replace("Z", "+00:00"))).total_seconds())
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds // size}{unit}"
    return f"{max(seconds, 0)}s"


def _health(session: dict) -> str:
    health = session.get("health", {})
    if health.get("standby"):  # the display's parts are down on purpose: only Jupyter has to run
        return "asleep" if health.get("jupyter") else "asleep, down: jupyter"
    bad = [part for part, ok in health.items() if not ok]
    return "ok" if not bad else "down: " + ",".join(bad)


# -- the commands ---------------------------------------------------------------------------


def cmd_start(args: argparse.Namespace) -> int:
    body: dict = {k: v for k, v in (("name", args.name), ("width", args.width), ("height", args.height)) if v}
    heavyai = {
        k: v
        for k, v in (("host", args.heavyai_host), ("port", args.heavyai_port),
                     ("protocol", args.heavyai_protocol), ("query", args.heavyai_query))
        if v is not None
    }
    if args.heavyai_session_id_file is not None:
        source = args.heavyai_session_id_file
        try:
            heavyai["session_id"] = (sys.stdin.read() if str(source) == "-" else source.read_text()).strip()
        except OSError as error:
            raise ClientError(f"--heavyai-session-id-file: cannot read {source}: {error.strerror}", ClientError.USAGE) from None
    if heavyai:
        if "host" not in heavyai:
            raise ClientError("--heavyai-host is needed for a HeavyAI handoff", ClientError.USAGE)
        body["heavyai"] = heavyai
    client = _client(args)
    try:
        session = client.start(body, wait=False)
        if args.no_wait:
            return _report(session, args.json)
        try:
            ready = _wait_until_ready(client, session, args.timeout)
        except KeyboardInterrupt:
            # the service goes on starting it: say which session is left, and how to end it
            raise ClientError(
                f"interrupted; session {session['id']} goes on starting (keepalive stop {session['id']})",
                INTERRUPTED,
            ) from None
        return _report(ready, args.json)
    finally:
        client.close()


def _wait_until_ready(client: Client, session: dict, timeout: float) -> dict:
    """Poll until the session is ready or failed, saying on stderr what it still waits for."""
    started = time.monotonic()
    said = ""
    interactive = sys.stderr.isatty()
    while True:
        state = session["state"]
        if state == "ready":
            break
        if state in ("failed", "stopped", "stopping"):
            raise ClientError(f"session {session['id']} {state}: {session.get('error') or 'no reason given'}")
        elapsed = time.monotonic() - started
        if elapsed > timeout:
            raise ClientError(f"session {session['id']} was not ready after {timeout:.0f} s (still {state})")
        waiting = [WAITING_FOR[p] for p, ok in session.get("health", {}).items() if not ok and p in WAITING_FOR]
        line = f"{session['id']} {state}" + (f": waiting for {', '.join(waiting)}" if waiting else "")
        if line != said or interactive:
            print(("\r" if interactive else "") + f"{line} ({elapsed:.0f} s)", end="" if interactive else "\n",
                  file=sys.stderr, flush=True)
            said = line
        time.sleep(POLL_SECONDS)
        session = client.request("GET", f"/sessions/{session['id']}").json()
    print(("\r" if interactive else "") + f"{session['id']} ready in {time.monotonic() - started:.1f} s",
          file=sys.stderr, flush=True)
    return session


def _report(session: dict, as_json: bool) -> int:
    if as_json:
        _print_json(session)
    else:
        print(f"{session['id']}  {session['name']}  {session['state']}  viewer: {session['viewer_url']}")
    return 0


def cmd_list(args: argparse.Namespace) -> int:
    client = _client(args)
    try:
        sessions = client.sessions()
    finally:
        client.close()
    if args.json:
        _print_json({"sessions": sessions})
        return 0
    rows = [("ID", "NAME", "STATE", "AGE", "RESTARTS", "HEALTH")]
    rows += [(s["id"], s["name"], s["state"], _age(s["created_at"]), str(s["restarts"]), _health(s)) for s in sessions]
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    for row in rows:
        print("  ".join(cell.ljust(width) for cell, width in zip(row, widths)).rstrip())
    if not sessions:
        print("(no sessions)", file=sys.stderr)
    return 0


def cmd_show(args: argparse.Namespace) -> int:
    client = _client(args)
    try:
        session = client.session(args.session)
    finally:
        client.close()
    if args.json:
        _print_json(session)
        return 0
    for key in ("id", "name", "state", "created_at", "width", "height", "restarts", "error", "viewer_url"):
        print(f"{key + ':':<12}{session.get(key) if session.get(key) is not None else '-'}")
    print(f"{'health:':<12}{_health(session)}")
    return 0


def cmd_stop(args: argparse.Namespace) -> int:
    if args.all == bool(args.sessions):
        raise ClientError("name the sessions to stop, or --all (not both)", ClientError.USAGE)
    client = _client(args, timeout=120)
    try:
        targets = client.sessions() if args.all else [client.session(name) for name in args.sessions]
        for session in targets:
            print(f"stopping {session['id']} ({session['name']})", file=sys.stderr, flush=True)
            client.stop(session["id"])
            print(session["id"])
    finally:
        client.close()
    return 0


def cmd_restart_jupyter(args: argparse.Namespace) -> int:
    client = _client(args, timeout=300)  # answered once the session is ready again
    try:
        session = client.session(args.session)
        print(f"restarting the Jupyter server of {session['id']} ({session['name']}); its kernels run on",
              file=sys.stderr, flush=True)
        session = client.restart_jupyter(session["id"])
    finally:
        client.close()
    return _report(session, args.json)


def cmd_screenshot(args: argparse.Namespace) -> int:
    client = _client(args)
    try:
        png = client.screenshot(client.session(args.session)["id"])
    finally:
        client.close()
    try:
        args.output.write_bytes(png)
    except OSError as error:
        raise ClientError(f"cannot write {args.output}: {error.strerror}") from None
    print(f"{args.output} ({len(png)} bytes)", file=sys.stderr)
    return 0


def cmd_viewer_link(args: argparse.Namespace) -> int:
    client = _client(args)
    try:
        link = client.viewer_link(client.session(args.session)["id"], args.keyboard_layout, args.read_only)
    finally:
        client.close()
    print(link["url"])
    print(f"{'watch-only; ' if link.get('read_only') else ''}works once, until {link['expires_at']}", file=sys.stderr)
    return 0


def cmd_homes(args: argparse.Namespace) -> int:
    client = _client(args)
    try:
        for name in client.request("GET", "/homes").json()["homes"]:
            print(name)
    finally:
        client.close()
    return 0


def describe_event(event: dict) -> str:
    """One timeline event as a line: when, what, and what its kind tells."""
    at = event["at"][:19].replace("T", " ")
    kind = event["kind"]
    if kind == "run":
        what = f"{event.get('notebook') or 'a kernel'}: {event.get('outcome')}"
        error = event.get("error") or {}
        if error:
            what += f" ({error.get('ename')}: {error.get('evalue')})"
        what += f", {event.get('cells')} cell(s) in {event.get('busy_seconds', 0):.1f} s"
        tail = event.get("tail") or []
        if tail:
            what += f"; last: {tail[-1]}"
    elif kind == "busy":
        what = ", ".join(f"{k.get('notebook') or 'a kernel'} busy" for k in event.get("running", []))
    else:
        what = event.get("message") or event.get("error") or (f"from: {event['from']}" if event.get("from") else "")
    shot = "  [screenshot]" if event.get("shot_url") else ""
    return f"{at}  {kind:<11} {what}{shot}".rstrip()


def cmd_timeline(args: argparse.Namespace) -> int:
    client = _client(args)
    params: dict[str, object] = {"limit": args.limit}
    if args.since:
        params["since"] = args.since
    try:
        page = client.request("GET", f"/homes/{args.name}/timeline", params=params).json()
    finally:
        client.close()
    if args.json:
        _print_json(page)
    else:
        for event in page["events"]:
            print(describe_event(event))
    return 0


def cmd_delete_home(args: argparse.Namespace) -> int:
    client = _client(args, timeout=120)
    try:
        client.request("DELETE", f"/homes/{args.name}", ok=(204,))
    finally:
        client.close()
    print(f"home {args.name} deleted", file=sys.stderr)
    return 0


def cmd_doctor(args: argparse.Namespace) -> int:
    from keepalive import doctor
    from keepalive.settings import Settings

    overrides = {"state_dir": args.state_dir} if args.state_dir else {}
    settings = Settings(**overrides)
    url = (args.url or default_url()).rstrip("/")
    return doctor.run(settings, url, args.token_file, explicit_url=args.url is not None)


def cmd_token(args: argparse.Namespace) -> int:
    """The token the other commands would use: from --token-file, the environment or the state dir."""
    print(find_token(args.token_file, args.state_dir))
    return 0
