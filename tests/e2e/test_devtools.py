"""A session's DevTools endpoint (``cdp_url``): your own Playwright in the kept-alive browser.

Chromium has no DevTools port; the gateway admits the API token or a session's own short-lived
link, and refuses anything else before the websocket handshake, so no byte reaches the browser.
A client's own pages and contexts go when it does; it cannot end the browser; the session stays
ready and its kiosk page as it was.
"""

from __future__ import annotations

import json
import re

import httpx
import pytest
from playwright.sync_api import expect
from websockets.sync.client import connect as ws_connect

from tests.e2e.kiosk import kiosk_page, open_and_run_all, put_notebook
from tests.waiting import wait_until


@pytest.fixture(scope="module")
def session(keepalive_service):
    session = keepalive_service.start_session(name="devtools")
    yield session
    keepalive_service.stop_session(session["id"])


def handshake_status(url: str, headers: dict[str, str] | None = None) -> int:
    """What the gateway answers a websocket handshake (101 when it lets the caller in)."""
    try:
        with ws_connect(url, additional_headers=headers or {}, open_timeout=10):
            return 101
    except Exception as error:  # websockets' InvalidStatus carries the refusal
        response = getattr(error, "response", None)
        if response is None:
            raise
        return response.status_code


class RawClient:
    """A bare CDP client over the gateway: request by request, as any tool could speak it."""

    def __init__(self, url: str, headers: dict[str, str]):
        self.ws = ws_connect(url, additional_headers=headers, open_timeout=10, max_size=None)
        self.next_id = 0

    def call(self, method: str, **params) -> dict:
        self.next_id += 1
        self.ws.send(json.dumps({"id": self.next_id, "method": method, "params": params}))
        while True:
            message = json.loads(self.ws.recv(timeout=30))
            if message.get("id") == self.next_id:
                return message

    def drop(self) -> None:
        """Go away without any goodbye (a crashed script, a lost network)."""
        self.ws.socket.close()


def page_targets(url: str, headers: dict[str, str]) -> list[dict]:
    client = RawClient(url, headers)
    try:
        return [t for t in client.call("Target.getTargets")["result"]["targetInfos"] if t["type"] == "page"]
    finally:
        client.ws.close()


def test_playwright_through_cdp_url_runs_a_cell_in_the_kiosk(keepalive_service, keepalive_session, keepalive_page):
    # the pytest plugin's own fixtures (keepalive/pytest_plugin.py): a session for this test and
    # its kiosk page through cdp_url, exactly as a user's test would get them
    page = keepalive_page
    put_notebook(page, "devtools.ipynb", ["print('through the gateway', 6 * 7)"])
    open_and_run_all(page, "devtools.ipynb")
    expect(page.locator(".jp-OutputArea-output").first).to_have_text("through the gateway 42", timeout=60_000)
    state = keepalive_service.client.get(f"/sessions/{keepalive_session['id']}").json()
    assert state["state"] == "ready" and state["restarts"] == 0


def test_no_key_a_wrong_key_or_another_sessions_link_is_refused_before_the_browser(keepalive_service, session):
    url = session["cdp_url"]
    assert handshake_status(url) == 401
    assert handshake_status(url, {"Authorization": "Bearer not-the-token"}) == 401
    assert handshake_status(url + "?key=not-a-link") == 401
    other = keepalive_service.start_session(name="devtools-other")
    other_link = keepalive_service.client.post(f"/sessions/{other['id']}/cdp-link").json()["cdp_url"]
    assert handshake_status(url + "?key=" + other_link.split("?key=", 1)[1]) == 401
    assert handshake_status(other_link) == 101  # that link does open its own session
    keepalive_service.stop_session(other["id"])
    assert handshake_status(url.replace(session["id"], "0123456789ab"),
                            {"Authorization": f"Bearer {keepalive_service.token}"}) == 404
    log = keepalive_service.log_text()
    assert other_link.split("?key=", 1)[1] not in log and keepalive_service.token not in log


def test_a_client_leaves_nothing_behind_and_cannot_end_the_browser(keepalive_service, session):
    headers = {"Authorization": f"Bearer {keepalive_service.token}"}
    url = session["cdp_url"]
    before = keepalive_service.client.get(f"/sessions/{session['id']}/screenshot")
    assert before.status_code == 200
    kiosk = page_targets(url, headers)
    assert len(kiosk) == 1

    client = RawClient(url, headers)
    refused = client.call("Browser.close")
    assert "refused" in refused["error"]["message"]
    context = client.call("Target.createBrowserContext")["result"]["browserContextId"]
    client.call("Target.createTarget", url="about:blank")
    client.call("Target.createTarget", url="about:blank", browserContextId=context)
    assert len(page_targets(url, headers)) == 3
    client.drop()

    remaining = wait_until("the client's pages to close",
                         lambda: p if len(p := page_targets(url, headers)) == 1 else None)
    assert remaining[0]["targetId"] == kiosk[0]["targetId"]  # the kiosk page, untouched
    state = keepalive_service.client.get(f"/sessions/{session['id']}").json()
    assert state["state"] == "ready" and state["restarts"] == 0
    after = keepalive_service.client.get(f"/sessions/{session['id']}/screenshot")
    assert after.status_code == 200 and after.content[:4] == b"\x89PNG"


def test_links_expire_and_clients_are_bounded(service_factory):
    service = service_factory("devtools-limits", cdp_link_ttl=2, cdp_max_clients=1)
    session = service.start_session(name="limits")
    link = service.client.post(f"/sessions/{session['id']}/cdp-link")
    assert link.status_code == 201, link.text
    url = link.json()["cdp_url"]
    with ws_connect(url, open_timeout=10):
        # one client at most: a second is turned away while the first is connected
        assert handshake_status(session["cdp_url"], {"Authorization": f"Bearer {service.token}"}) == 503
    wait_until("the link to expire", lambda: handshake_status(url) == 401, timeout=30, every=0.5)
    assert httpx.post(f"{service.url}/sessions/{session['id']}/cdp-link", trust_env=False).status_code == 401
    assert "DevTools link #1 made" in service.log_text()


def test_the_kiosk_page_rests_while_nobody_watches_it(keepalive_service, session, playwright):
    """Unwatched, the page says it is hidden and JupyterLab's polls stand by (web/heavyai/src/
    unwatched.ts); a DevTools client (or a viewer) makes it a watched page again while it is
    connected. Resting, the page still opens a notebook and shows what its cells print."""

    def page_state(page):
        return page.evaluate("() => ({hidden: document.hidden, told: [...window.keepaliveWatchedLog]})")

    with kiosk_page(playwright, session["id"]) as page:
        first = page_state(page)
        # told unwatched after the page loaded, then watched when this client came
        assert first["hidden"] is False and first["told"][-2:] == [False, True], first
    with kiosk_page(playwright, session["id"]) as page:
        second = page_state(page)
        assert second["hidden"] is False
        # the client before this one left: the page was told, and rested until this one came
        assert second["told"][len(first["told"]):] == [False, True], second

        # the page's own side: resting, it says it is hidden, and a notebook still opens and runs
        put_notebook(page, "resting.ipynb", ["print('ran while resting', 6 * 7)"])
        page.evaluate("() => window.keepaliveWatched(false)")
        assert page.evaluate("() => [document.hidden, document.visibilityState]") == [True, "hidden"]
        page.get_by_role("menuitem", name="File", exact=True).click()
        page.get_by_role("menuitem", name=re.compile("^Open from Path")).click()
        page.get_by_placeholder("/path/relative/to/jlab/root").fill("resting.ipynb")
        page.keyboard.press("Enter")
        page.locator(".jp-StatusBar-Widget", has_text=re.compile(r"\| Idle")).first.wait_for(timeout=60_000)
        page.get_by_role("menuitem", name="Run", exact=True).click()
        page.get_by_role("menuitem", name="Run All Cells", exact=True).click()
        expect(page.locator(".jp-OutputArea-output").first).to_have_text("ran while resting 42", timeout=60_000)
        assert page.evaluate("() => document.hidden") is True
        page.evaluate("() => window.keepaliveWatched(true)")
        assert page.evaluate("() => [document.hidden, document.visibilityState]") == [False, "visible"]
