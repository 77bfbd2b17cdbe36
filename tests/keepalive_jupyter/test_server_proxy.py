"""The jupyter-server-proxy entry point (keepalive_jupyter/server_proxy.py)."""

from __future__ import annotations

import re
from importlib.metadata import entry_points
from urllib.parse import parse_qs, urlsplit

from keepalive_jupyter.server_proxy import setup_keepalive


def test_the_entry_point_is_registered():
    (entry,) = [e for e in entry_points(group="jupyter_serverproxy_servers") if e.name == "keepalive"]
    assert entry.load() is setup_keepalive


def test_the_proxy_and_the_service_share_a_fresh_token(jp_serverapp, monkeypatch):
    monkeypatch.delenv("JUPYTERHUB_API_TOKEN", raising=False)
    config = setup_keepalive()
    assert config["command"][-5:] == ["serve", "--host", "127.0.0.1", "--port", "{port}"]
    environment = config["environment"]()
    token = environment["KEEPALIVE_API_TOKEN"]
    assert len(token) >= 32 and config["request_headers_override"] == {"Authorization": f"Bearer {token}"}
    assert setup_keepalive()["request_headers_override"] != config["request_headers_override"]
    # the kiosk opens this very server, with its token (never on the command line)
    url = urlsplit(environment["KEEPALIVE_JUPYTER_URL"])
    assert (url.hostname, url.port, url.path) == ("127.0.0.1", jp_serverapp.port, jp_serverapp.base_url)
    assert parse_qs(url.query)["token"] == [jp_serverapp.identity_provider.token]
    assert not any(token in part or "token" in part for part in config["command"])


def test_under_jupyterhub_the_kiosk_logs_in_with_the_servers_hub_token(jp_serverapp, monkeypatch):
    monkeypatch.setenv("JUPYTERHUB_API_TOKEN", "hub-token-for-this-server")
    url = urlsplit(setup_keepalive()["environment"]()["KEEPALIVE_JUPYTER_URL"])
    assert parse_qs(url.query)["token"] == ["hub-token-for-this-server"]


def test_the_event_streams_heartbeat_is_not_the_servers_activity():
    patterns = [re.compile(p) for p in setup_keepalive()["exclude_last_activity_patterns"]]
    quiet = lambda path: any(p.match(path) for p in patterns)  # noqa: E731
    assert quiet("/user/alice/keepalive/events") and quiet("/user/alice/keepalive/sessions/0a1b2c/events")
    for counted in ("/user/alice/keepalive/sessions", "/user/alice/keepalive/sessions/0a1b2c/viewer/",
                    "/user/alice/keepalive/sessions/0a1b2c/screenshot", "/user/alice/keepalive/"):
        assert not quiet(counted), counted
