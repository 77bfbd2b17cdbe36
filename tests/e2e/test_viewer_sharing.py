"""Two viewers of one session at once: the second takes over (default) or both share it."""

from __future__ import annotations

import pytest

from tests.e2e.kiosk import kiosk_page
from tests.e2e.viewer_helpers import canvas_pixels, looks_like_jupyterlab, open_viewer
from tests.waiting import wait_until

pytestmark = pytest.mark.e2e

#: A dark cover over the whole kiosk page: a canvas showing it does not look like JupyterLab.
COVER = ("() => { const d = document.createElement('div'); d.id = 'keepalive-test-cover';"
         " d.style.cssText = 'position:fixed;inset:0;z-index:99999;background:rgb(20,20,20)';"
         " document.body.appendChild(d); }")


def test_second_viewer_takes_over_by_default(keepalive_service, browser):
    session = keepalive_service.start_session(name="takeover")
    first_ctx, second_ctx = browser.new_context(), browser.new_context()
    first, second = first_ctx.new_page(), second_ctx.new_page()
    open_viewer(first, keepalive_service, session["id"])
    open_viewer(second, keepalive_service, session["id"])
    # the first viewer lands on keepalive's page that says why, not on xpra's connect form
    first.wait_for_url("**/viewer/connect.html", timeout=30_000)
    assert "disconnected" in first.locator("h1").inner_text().lower()
    assert first.evaluate("() => sessionStorage.getItem('password')") is None
    assert looks_like_jupyterlab(canvas_pixels(second))
    assert keepalive_service.client.get(f"/sessions/{session['id']}").json()["state"] == "ready"
    first_ctx.close()
    second_ctx.close()
    keepalive_service.stop_session(session["id"])


def test_viewers_share_when_configured(service_factory, browser, playwright):
    service = service_factory("shared", viewer_sharing="share")
    session = service.start_session(name="shared")
    first_ctx, second_ctx = browser.new_context(), browser.new_context()
    first, second = first_ctx.new_page(), second_ctx.new_page()
    open_viewer(first, service, session["id"])
    open_viewer(second, service, session["id"])  # painted: its hello, which a takeover answers, is long past
    # Both stay connected: a change on the kiosk page reaches both canvases, and so does its undoing.
    with kiosk_page(playwright, session["id"]) as kiosk:
        kiosk.evaluate(COVER)
        wait_until("both viewers painting the change", lambda: not looks_like_jupyterlab(canvas_pixels(first))
                   and not looks_like_jupyterlab(canvas_pixels(second)))
        kiosk.evaluate("() => document.getElementById('keepalive-test-cover').remove()")
    wait_until("both viewers painting JupyterLab again", lambda: looks_like_jupyterlab(canvas_pixels(first))
             and looks_like_jupyterlab(canvas_pixels(second)))
    assert first.url.endswith("/viewer/") and second.url.endswith("/viewer/")
    assert service.client.get(f"/sessions/{session['id']}").json()["state"] == "ready"
    first_ctx.close()
    second_ctx.close()
