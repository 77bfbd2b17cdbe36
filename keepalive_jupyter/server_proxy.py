"""keepalive as an app of the user's own Jupyter server, through jupyter-server-proxy.

Installing keepalive where a (JupyterHub single-user) Jupyter server runs adds a launcher entry
and serves the service under ``{base_url}keepalive/``: jupyter-server-proxy starts it on first
use, and every request reaches it only after the server's own authentication (the hub's login).
The kiosk browsers it starts open this very server, logged in with its token out of band.

The proxy and the service share an API token made here, at each start of the server: the proxy
adds it to every request it passes on, so the user never types it, and anything else on the
machine that reaches the service's loopback port without the proxy is refused.
"""

from __future__ import annotations

import os
import secrets
import shutil
import sys
from pathlib import Path
from urllib.parse import urlunsplit

#: How long jupyter-server-proxy waits for the service to answer after starting it. The service
#: itself answers in a few seconds; starting sessions happens later, per request.
SERVICE_START_TIMEOUT = 60.0
#: Paths the proxy must not count as the server's activity: the event streams. Their heartbeat
#: flows every few seconds whether or not anyone is there, and jupyter-server-proxy goes on
#: reading a stream after its client went away (until its own 2 h timeout): counted, a dashboard
#: closed long ago would keep the server from being culled. An open dashboard still counts, by
#: the pictures it asks for.
NOT_ACTIVITY = [r".*/keepalive/events$", r".*/keepalive/sessions/[^/]+/events$"]
ICON = Path(__file__).parent / "keepalive.svg"


def setup_keepalive() -> dict:
    """The ``jupyter_serverproxy_servers`` entry point: how to run keepalive behind the proxy."""
    api_token = secrets.token_urlsafe(32)
    return {
        "command": service_command() + ["serve", "--host", "127.0.0.1", "--port", "{port}"],
        "environment": lambda: service_environment(api_token),
        "request_headers_override": {"Authorization": f"Bearer {api_token}"},
        "timeout": SERVICE_START_TIMEOUT,
        "exclude_last_activity_patterns": NOT_ACTIVITY,
        "absolute_url": False,
        "new_browser_tab": True,
        "launcher_entry": {"title": "keepalive", "icon_path": str(ICON), "category": "Other"},
    }


def service_command() -> list[str]:
    """``keepalive`` on PATH (an image may keep the service in an environment of its own),
    else this Python's."""
    found = shutil.which("keepalive")
    return [found] if found else [sys.executable, "-m", "keepalive"]


def service_environment(api_token: str) -> dict[str, str]:
    """The service's settings: this server as every session's Jupyter server, the shared token.

    Evaluated when the proxy starts the service, so that the server's own port is known.
    """
    return {
        "KEEPALIVE_API_TOKEN": api_token,
        "KEEPALIVE_JUPYTER_URL": own_server_url(),
        # the user's server going away ends its kiosks too: they would show a dead server
        "KEEPALIVE_STOP_SESSIONS_ON_EXIT": "1",
    }


def own_server_url() -> str:
    """This Jupyter server's loopback URL, with the token its kiosks log in with.

    Under JupyterHub that is the server's own API token (its ``access:servers`` scope admits it
    to this server); elsewhere the server's own token.
    """
    from jupyter_server.serverapp import ServerApp

    app = ServerApp.instance()
    host = app.ip if app.ip not in ("", "0.0.0.0", "::", "localhost", "*") else "127.0.0.1"
    if ":" in host:
        host = f"[{host}]"
    scheme = "https" if app.certfile else "http"
    url = urlunsplit((scheme, f"{host}:{app.port}", app.base_url, "", ""))
    token = os.environ.get("JUPYTERHUB_API_TOKEN") or getattr(app.identity_provider, "token", "") or ""
    if token:
        url += "?token=" + token
    return url

