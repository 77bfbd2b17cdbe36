"""The status page on a phone-sized screen, with the real parts: a cell waits in ``input()``, the
page shows its prompt and its answer reaches the kernel as if typed in the kiosk (the kiosk's
page and the file on disk show it); a watch-only link shows the same and cannot answer."""

from __future__ import annotations

import re

import httpx
import pytest

from tests.conftest import TEST_ARTIFACTS
from tests.e2e.kiosk import kiosk_page, put_notebook
from tests.e2e.test_input import asking
from tests.e2e.test_outputs_survive import cell_outputs, open_alone_and_run_all, output_text, prompt_text, saved_notebook
from tests.waiting import wait_until

pytestmark = pytest.mark.e2e

PHONE = {"viewport": {"width": 390, "height": 844}, "device_scale_factor": 2, "is_mobile": True, "has_touch": True}


def open_status_link(browser, url: str):
    """A phone-sized browser that opened a status link as a user does (the link, then its button)."""
    context = browser.new_context(**PHONE)
    page = context.new_page()
    page.goto(url)
    page.locator("#open").click()
    page.wait_for_url(re.compile(r"/status$"))
    return context, page


def test_a_phone_answers_input_on_the_status_page(keepalive_service, browser, playwright):
    service = keepalive_service
    sid = service.start_session(name="phone")["id"]
    try:
        with kiosk_page(playwright, sid) as kiosk:
            put_notebook(kiosk, "ask.ipynb", ["name = input('name? ')\nprint('hello', name)"])
            open_alone_and_run_all(kiosk, "ask.ipynb")
            wait_until("input() waiting", lambda: "ask.ipynb" in asking(service, sid), timeout=90, every=0.25)

            # nothing without a pass; the link's answer names the page
            assert httpx.get(f"{service.url}/sessions/{sid}/status/state", trust_env=False).status_code == 401
            full = service.client.post(f"/sessions/{sid}/viewer-link").json()
            watch = service.client.post(f"/sessions/{sid}/viewer-link", json={"read_only": True}).json()
            assert full["status_url"].startswith(f"{service.url}/sessions/{sid}/status?ticket=")

            context, phone = open_status_link(browser, full["status_url"])
            cookie = next(c for c in context.cookies() if c["name"] == "keepalive_status")
            assert cookie["path"] == f"/sessions/{sid}/status" and cookie["httpOnly"]
            prompt = phone.locator(".question .prompt")
            prompt.wait_for(timeout=30_000)
            assert prompt.text_content() == "name? "
            assert phone.locator(".question .notebook").inner_text() == "ask.ipynb"
            # the page fits the phone: nothing wider than its screen
            assert phone.evaluate("document.documentElement.scrollWidth") <= 390
            TEST_ARTIFACTS["status-page-asking.png"] = phone.screenshot(full_page=True)

            phone.locator(".question input").fill("Grace")
            phone.locator(".question button").tap()
            phone.locator(".question .answered").wait_for(timeout=30_000)
            wait_until("the kiosk's cell done", lambda: re.fullmatch(r"\[\d+\]:", prompt_text(kiosk)), timeout=60,
                       every=0.25)
            shown = "\n".join(cell_outputs(kiosk))
            assert shown.count("hello Grace") == 1, shown
            ask_file = next(service.state_dir.rglob("ask.ipynb"))
            wait_until("the answer's output in the file on disk", lambda: "hello Grace" in "".join(
                output_text(o) for o in (saved_notebook(ask_file) or {"cells": [{"outputs": []}]})["cells"][0]["outputs"]),
                timeout=30, every=0.25)
            # the page follows: the question gone, the run and what it printed in the timeline
            wait_until("the page to drop the question", lambda: phone.locator("#asking").is_hidden(), timeout=30)
            phone.locator("#timeline pre.tail", has_text="hello Grace").wait_for(timeout=30_000)
            assert phone.locator("#rights").is_hidden(), "a full link's page says watch-only"
            TEST_ARTIFACTS["status-page-answered.png"] = phone.screenshot(full_page=True)
            context.close()

            # a watch-only link: the same page, no box, and its cookie cannot answer
            put_notebook(kiosk, "again.ipynb", ["again = input('again? ')"])
            open_alone_and_run_all(kiosk, "again.ipynb")
            wait_until("the second input() waiting", lambda: "again.ipynb" in asking(service, sid), timeout=90,
                       every=0.25)
        context, watcher = open_status_link(browser, watch["status_url"])
        watcher.locator(".question .prompt", has_text="again?").wait_for(timeout=30_000)
        assert watcher.locator("#rights").is_visible()
        assert watcher.locator(".question input").count() == 0
        refused = watcher.evaluate("""async () => (await fetch('status/input', {method: 'POST',
            headers: {'Content-Type': 'application/json'}, body: JSON.stringify({value: 'x'})})).status""")
        assert refused == 403
        assert "again.ipynb" in asking(service, sid), "a watch-only link answered"
        # its cookie opens the status page only: not the viewer, not the API
        assert watcher.evaluate(f"async () => (await fetch('/sessions/{sid}/viewer/')).status") == 401
        assert watcher.evaluate("async () => (await fetch('/sessions')).status") == 401
        context.close()
    finally:
        service.stop_session(sid)
