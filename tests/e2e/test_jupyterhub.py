"""keepalive inside JupyterHub: installed in the user's image, served by jupyter-server-proxy
under ``/user/NAME/keepalive/`` behind the hub's login, its kiosk on the user's own server.

A real hub on loopback (configurable-http-proxy, a local spawner) starts alice's server; the
test talks to keepalive only through the hub's proxy, as a user's browser or script would, and
as a page of another site would (a form posted with alice's cookie starts nothing).
"""

from __future__ import annotations

import html
import json
import re
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx
import psutil
import pytest
from playwright.sync_api import Page, Playwright

from tests.conftest import OTHER_LOGS, OTHER_STATE_DIRS, make_passable, session_processes
from tests.e2e.hub import PASSWORD, Hub, start_hub
from tests.e2e.kiosk import open_and_run_all
from tests.e2e.viewer_helpers import canvas_pixels, looks_like_jupyterlab, ocr, png_size
from tests.waiting import wait_until

USER = "alice"
BUSY_INTERVAL = 1.0  # how often the server extension looks for busy kernels (60 s by default)


def keepalive_services(state_dir) -> list[psutil.Process]:
    """``keepalive serve`` processes that jupyter-server-proxy started for this test's hub."""
    found = []
    for process in psutil.process_iter(["cmdline"]):
        try:
            if "serve" in (process.info["cmdline"] or []) and process.environ().get("KEEPALIVE_STATE_DIR") == str(state_dir):
                found.append(process)
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
    return found


@pytest.fixture(scope="module")
def hub(tmp_path_factory, profile_template) -> Iterator[Hub]:
    folder = tmp_path_factory.mktemp("hub")
    make_passable(folder)  # as root, sessions run as users of their own: they must reach the state dir
    state_dir = folder / "keepalive-state"
    environment = {"KEEPALIVE_STATE_DIR": str(state_dir), "KEEPALIVE_PROFILE_TEMPLATE": str(profile_template)}
    hub = start_hub(folder, environment, [f"--ActivityPolicy.busy_interval={BUSY_INTERVAL}"])
    OTHER_LOGS["JupyterHub, its single-user servers and keepalive"] = hub.log_path
    OTHER_STATE_DIRS["keepalive under the hub"] = state_dir
    try:
        hub.spawn(USER)
        # the first request through the proxy starts the service itself
        started = time.monotonic()
        assert hub.client.get(keepalive_url(hub, "sessions")).json() == {"sessions": []}
        print(f"\nthe service, started by jupyter-server-proxy, answered in {time.monotonic() - started:.1f} s")
        yield hub
        hub.stop_server(USER)
        # keepalive and every session of it end with the user's server
        wait_until("keepalive to end with the user's server",
                 lambda: not keepalive_services(state_dir) and not session_processes(state_dir=state_dir), timeout=60)
    finally:
        hub.close()
        OTHER_LOGS.pop("JupyterHub, its single-user servers and keepalive", None)
        OTHER_STATE_DIRS.pop("keepalive under the hub", None)


def keepalive_url(hub: Hub, path: str = "") -> str:
    return f"{hub.url}/user/{USER}/keepalive/{path}"


def start_session(hub: Hub, name: str) -> dict:
    started = time.monotonic()
    response = hub.client.post(keepalive_url(hub, "sessions"), json={"name": name})
    assert response.status_code == 201, response.text
    print(f"\nPOST /user/{USER}/keepalive/sessions through the hub: 201 in {time.monotonic() - started:.1f} s")
    return response.json()


@contextmanager
def kiosk_of(playwright: Playwright, hub: Hub, session: dict) -> Iterator[Page]:
    """The session's kiosk page, through a DevTools link (the API token stays in the proxy)."""
    link = hub.client.post(keepalive_url(hub, f"sessions/{session['id']}/cdp-link"))
    assert link.status_code == 201, link.text
    browser = playwright.chromium.connect_over_cdp(link.json()["cdp_url"])
    try:
        (page,) = [p for context in browser.contexts for p in context.pages if p.url.startswith("http")]
        yield page
    finally:
        browser.close()


def log_in(page: Page, hub: Hub) -> None:
    page.goto(f"{hub.url}/hub/login")
    page.locator("#username_input").fill(USER)
    page.locator("#password_input").fill(PASSWORD)
    page.locator("#login_submit").click()
    page.wait_for_url(re.compile(r"/(hub/home|hub/spawn|user/)"))


def test_a_session_through_the_hub_shows_the_users_own_jupyterlab(hub: Hub, playwright: Playwright, page: Page):
    # without the hub's login nothing reaches keepalive
    anonymous = httpx.get(keepalive_url(hub, "sessions"), follow_redirects=False, trust_env=False)
    assert anonymous.status_code in (302, 403), (anonymous.status_code, anonymous.text[:300])
    assert "/hub/" in anonymous.headers.get("location", "/hub/") and '"sessions"' not in anonymous.text

    marker = "hubmarker.ipynb"
    (hub.homes / USER / marker).write_text(json.dumps({"nbformat": 4, "nbformat_minor": 5, "metadata": {}, "cells": []}))
    session = start_session(hub, "hubby")
    assert session["viewer_url"] == keepalive_url(hub, f"sessions/{session['id']}/viewer/")
    assert session["screenshot_url"] == keepalive_url(hub, f"sessions/{session['id']}/screenshot")

    # the kiosk shows the user's own server (their file is there) on a workspace of its own,
    # and no token in its address
    with kiosk_of(playwright, hub, session) as kiosk:
        assert kiosk.url.startswith(f"{hub.url.split(':')[0]}://127.0.0.1:")
        assert f"/user/{USER}/lab/workspaces/keepalive-hubby" in kiosk.url and "token" not in kiosk.url
        kiosk.locator(".jp-DirListing-item", has_text=marker).wait_for(timeout=60_000)

    def screenshot() -> bytes:
        response = hub.client.get(session["screenshot_url"])
        assert response.status_code == 200 and response.headers["content-type"] == "image/png", response.text
        return response.content

    assert png_size(screenshot()) == (session["width"], session["height"])
    wait_until("the user's notebook in the screenshot", lambda: "hubmarker" in ocr(screenshot()), timeout=60)

    # the viewer through both proxies, with the hub's login in the user's browser
    log_in(page, hub)
    page.goto(session["viewer_url"])
    wait_until("the viewer to paint JupyterLab", lambda: looks_like_jupyterlab(canvas_pixels(page)) or None)
    assert page.url == session["viewer_url"]

    # the dashboard under the prefix: no token to type, the session listed
    page.goto(keepalive_url(hub))
    page.locator("#sessions-panel").get_by_text("hubby").first.wait_for(timeout=30_000)
    assert page.locator("#token-panel").is_hidden()

    # the dashboard's own writes (same origin, the hub's cookie) go through
    made = page.evaluate(
        """async (url) => {
            const response = await fetch(url, {method: "POST", headers: {"Content-Type": "application/json"},
                                                body: JSON.stringify({name: "from-dashboard"})});
            return [response.status, await response.json()];
        }""", keepalive_url(hub, "sessions?wait=false"))
    assert made[0] == 202, made
    assert hub.client.delete(keepalive_url(hub, f"sessions/{made[1]['id']}")).status_code == 204

    # a page of another site posting a form with the user's cookie starts nothing
    with cross_site_form(keepalive_url(hub, "sessions")) as evil_url:
        # the form's POST: the dashboard, still open meanwhile, may list the sessions again at
        # the same URL (a GET, answered 200) when the delete above reaches its event stream
        target = keepalive_url(hub, "sessions")
        with page.expect_response(lambda r: r.url == target and r.request.method == "POST") as posted:
            page.goto(evil_url)
        assert posted.value.status == 403 and "cross-site request refused" in posted.value.text()
    names = [s["name"] for s in hub.client.get(keepalive_url(hub, "sessions")).json()["sessions"]]
    assert "csrf-victim" not in names and "hubby" in names

    assert hub.client.delete(keepalive_url(hub, f"sessions/{session['id']}")).status_code == 204
    assert not session_processes(session["id"])


@contextmanager
def cross_site_form(target: str) -> Iterator[str]:
    """A page on another origin (another port of this host: the same site, so the browser sends
    the hub's cookies along) that posts a JSON body as an enctype="text/plain" form at once."""
    field = html.escape('{"name": "csrf-victim", "pad": "', quote=True)
    body = (f'<form method="post" enctype="text/plain" action="{html.escape(target)}">'
            f'<input name="{field}" value=\'"}}\'></form><script>document.forms[0].submit()</script>').encode()

    class Page(BaseHTTPRequestHandler):
        def do_GET(self):
            self.send_response(200)
            self.send_header("Content-Type", "text/html")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Page)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/"
    finally:
        server.shutdown()
        server.server_close()


def test_a_killed_service_comes_back_with_its_sessions(hub: Hub):
    """jupyter-server-proxy supervises the service: killed, it is started again on the same port
    and adopts the sessions it had, whose browsers never stopped."""
    state_dir = hub.homes.parent / "keepalive-state"
    session = start_session(hub, "survivor")
    try:
        browsers = {p.pid for p in session_processes(session["id"])}
        (service,) = keepalive_services(state_dir)
        service.kill()
        service.wait(10)
        back = wait_until("the service to be back with the session", lambda: (
            (answer := hub.client.get(keepalive_url(hub, f"sessions/{session['id']}"))).status_code == 200
            and answer.json()["state"] == "ready" and answer.json()), timeout=90, every=1)
        assert back["restarts"] == session["restarts"]
        assert {p.pid for p in session_processes(session["id"])} == browsers
        assert [p.pid for p in keepalive_services(state_dir)] != [service.pid]
    finally:
        hub.client.delete(keepalive_url(hub, f"sessions/{session['id']}"))


def server_last_activity(hub: Hub) -> datetime:
    """What the user's server reports as its last activity (what the hub's culler goes by)."""
    status = hub.client.get(f"/user/{USER}/api/status")
    assert status.status_code == 200, status.text
    return datetime.fromisoformat(status.json()["last_activity"].replace("Z", "+00:00"))


def kiosk_api_requests(hub: Hub) -> int:
    """API requests the kiosk's JupyterLab made so far, as the user's server logged them."""
    return len(re.findall(rf"GET /user/{USER}/api/(?:kernels|sessions|contents)\S*(?<!no_track_activity=1) \({USER}@",
                          hub.log_text()))


@contextmanager
def event_stream_lines(hub: Hub) -> Iterator[list[str]]:
    """``GET /events`` through the hub, held open as a dashboard's tab holds it; the lines it
    brought so far (heartbeats included), read by a thread of its own."""
    lines: list[str] = []
    client = httpx.Client(headers=hub.client.headers, timeout=httpx.Timeout(10, read=None), trust_env=False)

    def read() -> None:
        try:
            # (the Accept header makes jupyter-server-proxy pass the stream on as it comes)
            with client.stream("GET", keepalive_url(hub, "events"), headers={"Accept": "text/event-stream"}) as response:
                lines.append(f"status {response.status_code}")
                for line in response.iter_lines():
                    lines.append(line)
        except (httpx.HTTPError, RuntimeError) as error:  # closed below
            lines.append(f"ended: {error}")

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    try:
        yield lines
    finally:
        client.close()
        reader.join(10)


def test_only_work_keeps_the_users_server_active(hub: Hub, playwright: Playwright):
    """The kiosk polling the server is not activity (the hub may cull it), nor is an event stream's
    heartbeat; a running cell is, even a silent one."""
    session = start_session(hub, "quiet")
    try:
        with event_stream_lines(hub) as stream:
            wait_until("the event stream to open", lambda: stream and stream[0] == "status 200" or None, timeout=30)
            # the start and the stream's opening came through the proxy, which counts them: from then on
            readings: list[datetime] = []
            before = wait_until("the server's activity to settle after the start", lambda: (
                readings.append(server_last_activity(hub)) or len(readings) > 1 and readings[-1] == readings[-2]
                and readings[-1]), timeout=30, every=1)
            polls, heard = kiosk_api_requests(hub), len(stream)
            wait_until("the kiosk to ask the server a few more things", lambda: kiosk_api_requests(hub) >= polls + 2, timeout=90)
            wait_until("a heartbeat on the event stream", lambda: ": still here" in stream[heard:], timeout=30)
            assert server_last_activity(hub) == before, "the kiosk's requests or the stream's heartbeat counted as activity"

        (hub.homes / USER / "silent.ipynb").write_text(json.dumps({
            "nbformat": 4, "nbformat_minor": 5,
            "metadata": {"kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"}},
            "cells": [{"cell_type": "code", "id": "silent", "metadata": {}, "outputs": [], "execution_count": None,
                       "source": "import time\ntime.sleep(20)\nprint('done')"}],
        }))
        with kiosk_of(playwright, hub, session) as kiosk:
            open_and_run_all(kiosk, "silent.ipynb")
            prompt = kiosk.locator(".jp-InputPrompt", has_text="[*]")
            prompt.first.wait_for(timeout=30_000)
            started = server_last_activity(hub)
            later = wait_until("the silent cell to count as activity",
                             lambda: (now := server_last_activity(hub)) > started + timedelta(seconds=3) and now,
                             timeout=15)
            assert prompt.count() == 1, "the cell ended before its activity could be seen"
            assert later > started
            # (the cell is left to run: the session and its kernel go below)
    finally:
        hub.client.delete(keepalive_url(hub, f"sessions/{session['id']}"))
