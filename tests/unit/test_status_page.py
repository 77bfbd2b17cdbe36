"""The status page's passes and data, in-process (keepalive.api.status_page; the page itself in a
phone-sized browser: tests/e2e/test_status_page.py)."""

from __future__ import annotations

import re
from types import SimpleNamespace

import pytest
from fastapi.testclient import TestClient

from keepalive.app import create_app
from keepalive.engine.manager import SessionNotFound
from keepalive.engine.timeline import Timelines
from keepalive.models import SessionState
from keepalive.settings import Settings

SID = "abc123abc123"


class StatusManager:
    """What the status page and the viewer link ask of the manager, for one session in standby."""

    def __init__(self, settings: Settings) -> None:
        self.timeline = SimpleNamespace(timelines=Timelines(settings.timelines_dir, 100_000))
        self.session = SimpleNamespace(id=SID, name="grace", state=SessionState.standby, touch=lambda: None,
                                       endpoint=None)
        self.standby = SimpleNamespace(wake_soon=lambda session, why: None)

    async def open(self) -> None:
        pass

    async def close(self, stop_sessions: bool = False) -> None:
        pass

    def get(self, session_id):
        if session_id != SID:
            raise SessionNotFound(session_id)
        return self.session

    def activity(self, session_id):
        return None


@pytest.fixture
def app(tmp_path):
    settings = Settings(state_dir=tmp_path, api_token="t")
    app = create_app(settings)
    manager = app.state.manager = StatusManager(settings)
    manager.timeline.timelines.of("grace").add("input_requested", {"session": SID, "prompt": "name? "}, shot=b"\xff\xd8jpeg")
    return app


@pytest.fixture
def api(app):
    with TestClient(app, headers={"Authorization": "Bearer t"}) as client:
        yield client


def spend(app, link: str) -> TestClient:
    """A browser that opened ``link`` and pressed its button: it holds the page's cookie."""
    browser = TestClient(app)
    page = browser.get(link)
    assert page.status_code == 200 and "set-cookie" not in page.headers
    ticket = re.search(r'name="ticket" value="([^"]+)"', page.text)[1]
    spent = browser.post(link.split("?", 1)[0], data={"ticket": ticket})
    assert spent.status_code == 200, spent.text
    cookie = spent.headers["set-cookie"]
    assert f"Path=/sessions/{SID}/status;" in cookie + ";" and "HttpOnly" in cookie and "samesite=strict" in cookie.lower()
    again = TestClient(app).post(link.split("?", 1)[0], data={"ticket": ticket})
    assert again.status_code == 403 and "already used" in again.text
    return browser


def test_a_viewer_link_names_its_rights_and_its_status_page_and_refuses_unknown_fields(api):
    full = api.post(f"/sessions/{SID}/viewer-link").json()
    watch = api.post(f"/sessions/{SID}/viewer-link", json={"read_only": True}).json()
    assert (full["read_only"], watch["read_only"]) == (False, True)
    assert full["status_url"].startswith(f"http://testserver/sessions/{SID}/status?ticket=")
    typo = api.post(f"/sessions/{SID}/viewer-link", json={"readonly": True})
    assert typo.status_code == 422 and "readonly" in typo.text


def test_the_page_and_its_data_need_a_pass(app, api):
    anonymous = TestClient(app)
    assert anonymous.get(f"/sessions/{SID}/status").status_code == 401
    assert anonymous.get(f"/sessions/{SID}/status/state").status_code == 401
    assert anonymous.get(f"/sessions/{SID}/status/picture.jpg").status_code == 401
    assert TestClient(app, headers={"Authorization": "Bearer wrong"}).get(f"/sessions/{SID}/status/state").status_code == 401
    state = api.get(f"/sessions/{SID}/status/state").json()
    assert state["session"] == {"id": SID, "name": "grace", "state": "standby"} and state["watch_only"] is False
    (asked,) = state["timeline"]
    assert asked["prompt"] == "name? " and asked["shot_url"] == "status/shots/1.jpg" and state["picture"] is True
    # in standby, the picture is the timeline's last: the page never wakes a session for one
    assert api.get(f"/sessions/{SID}/status/picture.jpg").content == b"\xff\xd8jpeg"
    assert api.get(f"/sessions/{SID}/status/shots/1.jpg").content == b"\xff\xd8jpeg"
    assert api.get("/sessions/nope/status/state").status_code == 404


def test_a_watch_only_link_watches_and_its_cookie_opens_nothing_else(app, api):
    browser = spend(app, api.post(f"/sessions/{SID}/viewer-link", json={"read_only": True}).json()["status_url"])
    assert browser.get(f"/sessions/{SID}/status").status_code == 200
    assert browser.get(f"/sessions/{SID}/status/state").json()["watch_only"] is True
    refused = browser.post(f"/sessions/{SID}/status/input", json={"value": "x"})
    assert refused.status_code == 403 and "watch-only" in refused.text
    assert browser.get(f"/sessions/{SID}/viewer/").status_code == 401
    assert browser.get("/sessions").status_code == 401


def test_a_full_link_may_answer_and_a_viewer_cookie_does_not_open_the_page(app, api):
    browser = spend(app, api.post(f"/sessions/{SID}/viewer-link").json()["status_url"])
    assert browser.get(f"/sessions/{SID}/status/state").json()["watch_only"] is False
    # past the pass: the session in standby has no kernel to answer (the answer itself: e2e)
    assert browser.post(f"/sessions/{SID}/status/input", json={"value": "x"}).status_code == 409
    viewer_link = api.post(f"/sessions/{SID}/viewer-link").json()["url"]
    viewer = TestClient(app)
    ticket = re.search(r'name="ticket" value="([^"]+)"', viewer.get(viewer_link).text)[1]
    assert viewer.post(viewer_link.split("?", 1)[0], data={"ticket": ticket}).status_code == 200
    assert viewer.get(f"/sessions/{SID}/status/state").status_code == 401
