"""The dashboard at /, in a real browser against the real service."""

from __future__ import annotations

import pytest
from playwright.sync_api import Page, expect

from tests.e2e.viewer_helpers import canvas_pixels, looks_like_jupyterlab
from tests.waiting import wait_until

pytestmark = pytest.mark.e2e


def sign_in(page: Page, service) -> None:
    page.goto(service.url + "/")
    page.fill("#token-input", service.token)
    page.click("#token-form button")
    expect(page.locator("#start-panel")).to_be_visible()


def test_dashboard_asks_for_the_token_and_keeps_it_for_the_tab_only(keepalive_service, page):
    page.goto(keepalive_service.url + "/")
    expect(page.locator("#token-panel")).to_be_visible()
    expect(page.locator("#start-panel")).to_be_hidden()
    sign_in(page, keepalive_service)
    assert keepalive_service.token not in page.url
    stored = page.evaluate("() => [sessionStorage.getItem('keepalive.token'), localStorage.length]")
    assert stored == [keepalive_service.token, 0]
    page.click("#forget-token")
    expect(page.locator("#token-panel")).to_be_visible()


def test_a_wrong_token_shows_a_readable_message(keepalive_service, page):
    page.goto(keepalive_service.url + "/")
    page.fill("#token-input", "not-the-token")
    page.click("#token-form button")
    expect(page.locator("#error")).to_contain_text("token")
    expect(page.locator("#token-panel")).to_be_visible()


def test_a_bad_name_shows_the_apis_message(keepalive_service, page):
    expected = keepalive_service.client.post("/sessions", json={"name": "Bad_Name!"})
    assert expected.status_code == 422
    message = expected.json()["detail"][0]["msg"]
    sign_in(page, keepalive_service)
    page.fill("#start-name", "Bad_Name!")
    page.click("#start-button")
    expect(page.locator("#error")).to_be_visible()
    expect(page.locator("#error")).to_contain_text(f"name: {message}")
    assert not [s for s in keepalive_service.client.get("/sessions").json()["sessions"] if s["name"] == "Bad_Name!"]


def test_start_see_open_and_stop_a_session(keepalive_service, page):
    sign_in(page, keepalive_service)
    expect(page.locator("#start-progress")).to_be_hidden()  # nothing is starting yet
    page.fill("#start-name", "from-dashboard")
    page.click("#start-button")
    # progress shows while the session starts, and goes once it is ready
    expect(page.locator("#start-progress")).to_be_visible()
    card = page.locator('li.session[data-name="from-dashboard"]')
    expect(card).to_have_attribute("data-state", "ready", timeout=180_000)
    expect(page.locator("#start-progress")).to_be_hidden()
    session_id = card.get_attribute("data-id")
    keepalive_service.started.append(session_id)  # stopped at teardown should the test fail

    thumb = card.locator(".thumb img")
    expect(thumb).to_be_visible(timeout=30_000)
    size = wait_until("a painted thumbnail", lambda: page.evaluate(
        "img => img.complete && img.naturalWidth", thumb.element_handle()))
    assert size > 600  # a real picture of the kiosk, not a placeholder
    expect(card.locator(".restarts")).to_have_text("0 restarts")
    expect(card.locator(".health .dot.ok")).to_have_count(4)

    with page.expect_popup() as popup_info:
        card.locator("button.open").click()
    viewer = popup_info.value
    viewer.wait_for_url(f"**/sessions/{session_id}/viewer/", timeout=30_000)
    assert "ticket" not in viewer.url
    wait_until("the viewer to paint JupyterLab", lambda: looks_like_jupyterlab(canvas_pixels(viewer)) or None)
    viewer.close()

    # watch-only links to hand on: the viewer's and the status page's, each of them watch-only
    card.locator("button.share").click()
    links = card.locator(".share-links a")
    expect(links).to_have_count(2, timeout=30_000)
    viewer_url, status_url = links.nth(0).get_attribute("href"), links.nth(1).get_attribute("href")
    assert f"/sessions/{session_id}/viewer/?ticket=" in viewer_url and f"/sessions/{session_id}/status?ticket=" in status_url
    status_page = page.context.new_page()
    status_page.goto(status_url)
    status_page.locator("#open").click()
    expect(status_page.locator("#rights")).to_be_visible(timeout=30_000)  # "watch-only"
    status_page.close()

    dialogs = []
    page.once("dialog", lambda dialog: (dialogs.append(dialog.message), dialog.accept()))
    card.locator("button.stop").click()
    expect(card).to_have_count(0, timeout=60_000)
    assert dialogs and "from-dashboard" in dialogs[0]
    assert keepalive_service.client.get(f"/sessions/{session_id}").status_code == 404


def test_stop_can_be_cancelled(keepalive_service, page):
    session = keepalive_service.start_session(name="keep-me")
    sign_in(page, keepalive_service)
    card = page.locator('li.session[data-name="keep-me"]')
    expect(card).to_be_visible()
    page.once("dialog", lambda dialog: dialog.dismiss())
    card.locator("button.stop").click()
    expect(card).to_be_visible()
    assert keepalive_service.client.get(f"/sessions/{session['id']}").json()["state"] == "ready"
    keepalive_service.stop_session(session["id"])


def test_dashboard_fits_a_narrow_window(keepalive_service, page):
    page.set_viewport_size({"width": 360, "height": 740})
    sign_in(page, keepalive_service)
    overflow = page.evaluate("() => document.documentElement.scrollWidth - window.innerWidth")
    assert overflow <= 0
    box = page.locator("#start-button").bounding_box()
    assert box and box["x"] >= 0 and box["x"] + box["width"] <= 360


def test_dashboard_files_are_served_with_a_strict_policy(keepalive_service):
    import httpx

    for path in ("/", "/dashboard/app.js", "/dashboard/style.css"):
        response = httpx.get(keepalive_service.url + path, trust_env=False)
        assert response.status_code == 200, path
        assert "default-src 'self'" in response.headers["content-security-policy"]
    assert httpx.get(keepalive_service.url + "/dashboard/../settings.py", trust_env=False).status_code == 404


def test_the_list_follows_the_event_stream_not_a_timer(keepalive_service, page):
    """A session started and stopped through the API shows up and goes without a reload: the
    dashboard reads GET /events, and re-reads the list only when something happened."""
    sign_in(page, keepalive_service)
    expect(page.locator("#service-status")).to_have_text("live", timeout=10_000)
    session = keepalive_service.start_session(name="from-the-api")
    card = page.locator('li.session[data-name="from-the-api"]')
    expect(card).to_have_attribute("data-state", "ready", timeout=30_000)
    # the first look at its kernels is an event too: let it pass
    wait_until("the first look at the session's kernels",
             lambda: keepalive_service.client.get(f"/sessions/{session['id']}").json()["activity"], timeout=30)
    page.wait_for_timeout(1_000)
    list_reads: list[str] = []
    page.on("request", lambda request: list_reads.append(request.url) if request.url.endswith("/sessions") else None)
    page.wait_for_timeout(7_000)  # a quiet spell: the old dashboard re-read the list every 3 s
    assert list_reads == []
    keepalive_service.stop_session(session["id"])
    expect(card).to_have_count(0, timeout=30_000)
    assert list_reads, "the stop was shown without re-reading the list?"
