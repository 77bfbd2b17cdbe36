"""Serving under a proxy's path prefix (X-Forwarded-Prefix), in process."""

from __future__ import annotations

import re

import pytest
from fastapi.testclient import TestClient

from keepalive.api.forwarded_prefix import forwarded_prefix
from keepalive.app import create_app
from keepalive.models import SessionState
from keepalive.settings import Settings

PREFIX = "/user/alice/keepalive"


@pytest.mark.parametrize(
    ("value", "prefix"),
    [
        ("/user/alice/keepalive", "/user/alice/keepalive"),
        ("/user/alice/keepalive/", "/user/alice/keepalive"),
        ("/user/al%40ice/keepalive", "/user/al%40ice/keepalive"),
        ("", ""),
        ("/", ""),
        ("//evil.example/x", ""),
        ("https://evil.example", ""),
        ("/user/../admin", ""),
        ("/user/a b", ""),
        ("/user/a?x=1", ""),
        ("user/alice", ""),
    ],
)
def test_only_a_plain_path_is_a_prefix(value, prefix):
    assert forwarded_prefix(value) == prefix


class ViewableSession:
    id = "abc123abc123"
    name = "alice"
    state = SessionState.ready


class OneSessionManager:
    async def open(self) -> None:
        pass

    async def close(self, stop_sessions: bool = False) -> None:
        pass

    def get(self, session_id):
        return ViewableSession()


@pytest.fixture
def client(tmp_path):
    app = create_app(Settings(state_dir=tmp_path, api_token="t"))
    app.state.manager = OneSessionManager()
    with TestClient(app, headers={"Authorization": "Bearer t"}, follow_redirects=False) as client:
        yield client


def test_the_viewer_redirect_stays_under_the_prefix(client):
    plain = client.get("/sessions/abc123abc123/viewer?keyboard_layout=de")
    assert plain.headers["location"] == "/sessions/abc123abc123/viewer/?keyboard_layout=de"
    proxied = client.get("/sessions/abc123abc123/viewer", headers={"X-Forwarded-Prefix": PREFIX})
    assert proxied.headers["location"] == f"{PREFIX}/sessions/abc123abc123/viewer/"
    ignored = client.get("/sessions/abc123abc123/viewer", headers={"X-Forwarded-Prefix": "//evil.example"})
    assert ignored.headers["location"] == "/sessions/abc123abc123/viewer/"


def test_the_dashboard_and_its_files_use_relative_addresses(client):
    assert client.get("/dashboard", headers={"X-Forwarded-Prefix": PREFIX}).headers["location"] == "./"
    page = client.get("/").text
    assert 'href="dashboard/style.css"' in page and 'src="dashboard/app.js"' in page
    assert 'href="/' not in page and 'src="/' not in page
    script = client.get("/dashboard/app.js").text
    assert re.findall(r'api\("[A-Z]+", [`"]/', script) == [] and "fetch(\"/" not in script
