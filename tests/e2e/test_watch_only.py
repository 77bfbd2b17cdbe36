"""Watch-only viewer links through the real viewer: the session shows live, nothing sent changes it."""

from __future__ import annotations

import re

import pytest

from tests.e2e.kiosk import kiosk_page
from tests.e2e.test_viewer_e2e import NewNotebookShown
from tests.e2e.viewer_helpers import (
    canvas_pixels, looks_like_jupyterlab, new_notebook, ocr, open_viewer, png_size, screenshot,
)
from tests.waiting import wait_until

pytestmark = pytest.mark.e2e

CENTRE_OF = "(s) => { const r = document.querySelector(s).getBoundingClientRect(); return [r.x + r.width / 2, r.y + r.height / 2]; }"
FILE_MENU = ".lm-MenuBar-item"
CELL_EDITOR = ".jp-Notebook .jp-Cell .cm-content"
MENU_OPEN = "() => document.querySelector('.lm-Menu') !== null"
NOTEBOOK_TEXT = "() => Array.from(document.querySelectorAll('.jp-Notebook .jp-Cell')).map(c => c.innerText).join('\\n')"


def test_a_watch_only_viewer_sees_live_and_changes_nothing(keepalive_service, browser, playwright):
    service = keepalive_service
    sid = service.start_session(name="watch-only")["id"]
    made = service.client.post(f"/sessions/{sid}/viewer-link", json={"read_only": True})
    assert made.status_code == 200 and made.json()["read_only"] is True
    typo = service.client.post(f"/sessions/{sid}/viewer-link", json={"readonly": True})
    assert typo.status_code == 422 and "readonly" in typo.text, "a misspelt field gave a full link"

    driver_context = browser.new_context(viewport={"width": 1280, "height": 800})
    driver = driver_context.new_page()
    open_viewer(driver, service, sid)
    new_notebook(driver)
    shown = NewNotebookShown(service, sid)
    wait_until(shown.what, shown, timeout=120, describe=shown.__str__)
    kiosk_size = png_size(screenshot(service, sid))  # the driver's window's

    # the watcher's window is smaller: its size must not reach the session (the driver's does)
    watcher_context = browser.new_context(viewport={"width": 1000, "height": 700})
    watcher = watcher_context.new_page()
    watcher.goto(made.json()["url"])
    watcher.locator("#open").click()
    watcher.wait_for_url(re.compile(r"/viewer/$"))
    wait_until("the watch-only viewer to paint JupyterLab", lambda: looks_like_jupyterlab(canvas_pixels(watcher)) or None)
    assert service.client.get(f"/sessions/{sid}").json()["viewers"] == {"full": 1, "watch_only": 1}
    assert png_size(screenshot(service, sid)) == kiosk_size

    with kiosk_page(playwright, sid) as kiosk:
        menu, cell = kiosk.evaluate(CENTRE_OF, FILE_MENU), kiosk.evaluate(CENTRE_OF, CELL_EDITOR)
        # the watcher clicks the File menu, then into the notebook's cell, types and runs it
        watcher.mouse.click(*menu)
        watcher.keyboard.press("Escape")
        watcher.mouse.click(*cell)
        watcher.keyboard.type("print('sneaky-' + 'keys')", delay=20)
        watcher.keyboard.press("Shift+Enter")
        # the driver, after it, does the same: its click opens the menu, its cell runs
        driver.mouse.click(*menu)
        wait_until("the driver's click to open the File menu in the kiosk", lambda: kiosk.evaluate(MENU_OPEN), timeout=30)
        driver.keyboard.press("Escape")
        wait_until("the menu to close", lambda: not kiosk.evaluate(MENU_OPEN), timeout=30)
        driver.mouse.click(*cell)
        driver.keyboard.type("print('driver-' + 'typed')", delay=20)
        driver.keyboard.press("Shift+Enter")
        wait_until("the driver's cell to print in the kiosk", lambda: "driver-typed" in kiosk.evaluate(NOTEBOOK_TEXT),
                   timeout=60)
        # the watcher saw it live
        wait_until("the watch-only viewer to show the driver's output",
                   lambda: "driver-typed" in ocr(watcher.screenshot()), timeout=60)
        assert "sneaky" not in kiosk.evaluate(NOTEBOOK_TEXT)

    # another full viewer takes over from the driver (VIEWER_SHARING=takeover), not from the watcher
    second_context = browser.new_context(viewport={"width": 1280, "height": 800})
    open_viewer(second_context.new_page(), service, sid)
    driver.wait_for_url("**/viewer/connect.html", timeout=30_000)
    assert "took over" in driver.locator("body").inner_text()
    wait_until("one full viewer and the watcher", lambda: service.client.get(f"/sessions/{sid}").json()["viewers"]
               == {"full": 1, "watch_only": 1}, timeout=30)
    assert re.search(r"/viewer/$", watcher.url)
    second_context.close()
    driver_context.close()

    watcher_context.close()
    # what the watcher sent reached the service, which dropped it
    dropped = wait_until("the watcher's leaving in the log", lambda: re.search(
        r"watch-only viewer left; dropped what it sent: (\{.*\})", service.log_text()), timeout=30)
    assert "'key-action'" in dropped[1] and "'button-action'" in dropped[1], dropped[1]
    service.stop_session(sid)
