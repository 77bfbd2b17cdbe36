"""In-process route tests: the API's own behaviour, with the session engine replaced by a stand-in."""

from __future__ import annotations

import inspect

import pytest
from fastapi.routing import APIRoute, APIWebSocketRoute
from fastapi.testclient import TestClient
from playwright.async_api import Error as PlaywrightError

from keepalive.app import create_app
from keepalive.engine.record import InvalidTransition
from keepalive.models import SessionState
from keepalive.settings import Settings


def _dependencies(dependant):
    for sub in dependant.dependencies:
        yield sub
        yield from _dependencies(sub)


def _api_routes(routes):
    """Every route, also inside included routers (FastAPI may wrap them: ``original_router``)."""
    for route in routes:
        if isinstance(route, APIRoute | APIWebSocketRoute):
            yield route
        inner = getattr(route, "original_router", None) or getattr(route, "router", None)
        if inner is not None and hasattr(inner, "routes"):
            yield from _api_routes(inner.routes)


def test_every_route_and_dependency_runs_on_the_event_loop(tmp_path):
    """Sync routes run in a thread pool, reading session state while the loop changes it."""
    app = create_app(Settings(state_dir=tmp_path, api_token="t"))
    routes = list(_api_routes(app.routes))
    assert {"/sessions", "/health", "/sessions/{session_id}/viewer/{path:path}"} <= {r.path for r in routes}
    sync = [r.path for r in routes if not inspect.iscoroutinefunction(r.endpoint)]
    sync += [
        f"{r.path}: {d.call.__name__}"
        for r in routes
        for d in _dependencies(r.dependant)
        if d.call is not None and inspect.isfunction(d.call) and not inspect.iscoroutinefunction(d.call)
    ]
    assert not sync, sync


class CrashingPageSession:
    """A ready session whose page goes away while it is being captured."""

    id = "abc123abc123"
    state = SessionState.ready

    async def screenshot(self) -> bytes:
        raise PlaywrightError("Target page, context or browser has been closed")


class NoStandby:
    """Sessions that never sleep: a wake has nothing to do."""

    async def wake(self, session) -> None:
        pass

    def wake_soon(self, session, why: str) -> None:
        pass


class StandInManager:
    def __init__(self, session) -> None:
        self.session = session
        self.standby = NoStandby()

    async def open(self) -> None:
        pass

    async def close(self, stop_sessions: bool = False) -> None:
        pass

    def list(self):
        return []

    def get(self, session_id):
        return self.session


@pytest.fixture
def client(tmp_path):
    app = create_app(Settings(state_dir=tmp_path, api_token="t"))
    app.state.manager = StandInManager(CrashingPageSession())
    with TestClient(app, headers={"Authorization": "Bearer t"}) as client:
        yield client


def test_a_screenshot_of_a_page_that_just_died_is_409_not_500(client):
    response = client.get("/sessions/abc123abc123/screenshot")
    assert response.status_code == 409
    assert "cannot be captured now" in response.json()["detail"]


# --- the event streams, in process ------------------------------------------------------------

from types import SimpleNamespace  # noqa: E402

from keepalive.engine.events import EventHub  # noqa: E402
from keepalive.engine.manager import SessionNotFound  # noqa: E402


class StoppingSession:
    """A session that has just stopped: its stream must tell so and end."""

    id = "abc123abc123"
    record = SimpleNamespace(state="stopped", error=None, restarts=2)
    state = SessionState.stopped


class EventsManager(StandInManager):
    def __init__(self, session) -> None:
        super().__init__(session)
        self.events = EventHub()

    def get(self, session_id):
        if session_id != self.session.id:
            raise SessionNotFound(session_id)
        return self.session

    def activity(self, session_id):
        return None


@pytest.fixture
def events_client(tmp_path):
    app = create_app(Settings(state_dir=tmp_path, api_token="t"))
    app.state.manager = EventsManager(StoppingSession())
    with TestClient(app) as client:
        yield client


def test_the_event_streams_need_the_token(events_client):
    assert events_client.get("/events").status_code == 401
    assert events_client.get("/sessions/abc123abc123/events").status_code == 401
    assert events_client.get("/events", headers={"Authorization": "Bearer wrong"}).status_code == 401


def test_an_unknown_sessions_stream_is_404(events_client):
    response = events_client.get("/sessions/nope/events", headers={"Authorization": "Bearer t"})
    assert response.status_code == 404 and "nope" in response.json()["detail"]


def test_a_stopped_sessions_stream_says_so_and_ends(events_client):
    with events_client.stream("GET", "/sessions/abc123abc123/events", headers={"Authorization": "Bearer t"}) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        body = response.read().decode()
    assert body == 'event: state\ndata: {"state":"stopped","error":null,"restarts":2}\n\n'


# --- the viewer and its on-demand xpra, in process ---------------------------------------------

from starlette.websockets import WebSocketDisconnect  # noqa: E402

from keepalive.engine.viewer_server import ViewerServerUnavailable  # noqa: E402
from keepalive.api.viewer import ViewerState  # noqa: E402
from keepalive.viewer import html5_client as html5  # noqa: E402
from keepalive.viewer.html5_files import Html5Files  # noqa: E402


class ViewerlessSession:
    """A ready session whose xpra cannot be started (its display is being restarted)."""

    id = "abc123abc123"
    state = SessionState.ready
    display = 100
    xpra_password = "pw"

    def __init__(self) -> None:
        self.asked = 0

    async def viewer_port(self, join: bool = False) -> int:
        self.asked += 1
        raise ViewerServerUnavailable("the session's display is not running (it is being restarted)")


@pytest.fixture
def viewer_client(tmp_path):
    app = create_app(Settings(state_dir=tmp_path, api_token="t"))
    session = ViewerlessSession()
    app.state.manager = StandInManager(session)
    www = tmp_path / "www"
    (www / "js").mkdir(parents=True)
    (www / "index.html").write_text('<html><script type="text/javascript" src="js/Utilities.js"></script></html>')
    (www / "js" / "Client.js").write_text("var XpraClient;")
    app.state.viewer = ViewerState(files=Html5Files(www))
    with TestClient(app, headers={"Authorization": "Bearer t"}) as client:
        yield client, session


def test_keepalives_own_viewer_files_and_bad_paths_never_start_xpra(viewer_client):
    client, session = viewer_client
    assert client.get(f"/sessions/abc123abc123/viewer/{html5.CONNECT_SCRIPT}").status_code == 200
    assert client.get(f"/sessions/abc123abc123/viewer/{html5.DISCONNECTED_PAGE}").status_code == 200
    assert client.get("/sessions/abc123abc123/viewer/server-info.json").status_code == 404
    assert session.asked == 0


def test_the_clients_files_are_the_services_own_to_serve(viewer_client):
    # only the page (index.html) starts xpra: its files never wait on it, nor fail with it
    client, session = viewer_client
    response = client.get("/sessions/abc123abc123/viewer/js/Client.js")
    assert response.status_code == 200 and response.text == "var XpraClient;"
    assert response.headers["content-type"].startswith("text/javascript")
    assert response.headers["x-content-type-options"] == "nosniff"
    assert client.get("/sessions/abc123abc123/viewer/js/Missing.js").status_code == 404
    assert session.asked == 0


def test_a_viewer_that_cannot_get_xpra_is_told_why(viewer_client):
    client, session = viewer_client
    response = client.get("/sessions/abc123abc123/viewer/")
    assert response.status_code == 503
    assert "being restarted" in response.text and session.asked == 1
    with pytest.raises(WebSocketDisconnect) as closed:
        with client.websocket_connect("/sessions/abc123abc123/viewer/") as websocket:
            websocket.receive_bytes()
    assert closed.value.code == 1013  # try again later
    assert session.asked == 2


class StopsMeanwhile:
    """A session that stops while a restart of its Jupyter server waits for its turn."""

    id = "abc123abc123"
    state = SessionState.stopping

    class recovery:  # noqa: N801 (the session's part, as keepalive.engine.recovery.Recovery)
        @staticmethod
        async def restart_jupyter() -> None:
            raise InvalidTransition("session abc123abc123 is stopping, not ready")


@pytest.mark.parametrize("jupyter_url", ["", "http://127.0.0.1:8888/?token=x"])
def test_a_jupyter_restart_that_cannot_be_done_is_409_and_says_why(tmp_path, jupyter_url):
    app = create_app(Settings(state_dir=tmp_path, api_token="t", jupyter_url=jupyter_url))
    app.state.manager = StandInManager(StopsMeanwhile())
    with TestClient(app, headers={"Authorization": "Bearer t"}) as client:
        response = client.post("/sessions/abc123abc123/restart-jupyter")
    assert response.status_code == 409
    expected = "external Jupyter server (JUPYTER_URL)" if jupyter_url else "is stopping, not ready"
    assert expected in response.json()["detail"]
