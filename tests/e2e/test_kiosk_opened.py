"""A kiosk Chromium started on the lab's address (a wake, a display's restart) in a real
Chromium: logged in by its cookies it goes straight on; sent to a login page (a cookie gone),
the service logs it in and loads the lab as on a first start."""

from __future__ import annotations

import asyncio
import threading
from concurrent.futures import ThreadPoolExecutor
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlsplit

import pytest
from playwright.async_api import async_playwright

from keepalive.engine.browser import LAB_SHELL_SELECTOR, KioskBrowser
from keepalive.engine.jupyter import JupyterEndpoint
from tests.conftest import CHROMIUM

TOKEN = "the-token"
LAB_PAGE = b'<html><body><div id="%s">lab</div></body></html>' % LAB_SHELL_SELECTOR[1:].encode()


class FakeJupyter(BaseHTTPRequestHandler):
    """Jupyter's login rules in small: /lab needs the login cookie, the kiosk login sets it."""

    logins: list[str] = []

    def do_GET(self) -> None:
        path = urlsplit(self.path).path
        if path == "/lab":
            if "login=yes" not in (self.headers.get("Cookie") or ""):
                self._answer(302, location="/login?next=%2Flab")
            else:
                self._answer(200, LAB_PAGE)
        elif path == "/login":
            self._answer(200, b"<html><body><form>password</form></body></html>")
        else:
            self._answer(404)

    def do_POST(self) -> None:
        if urlsplit(self.path).path == "/api/keepalive/kiosk-login":
            self.logins.append(self.headers.get("Authorization", ""))
            self._answer(204, cookie="login=yes; Path=/; Max-Age=3600")
        else:
            self._answer(404)

    def _answer(self, status: int, body: bytes = b"", location: str | None = None, cookie: str | None = None) -> None:
        self.send_response(status)
        if location:
            self.send_header("Location", location)
        if cookie:
            self.send_header("Set-Cookie", cookie)
        self.send_header("Content-Type", "text/html")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args) -> None:
        pass


@pytest.fixture
def jupyter():
    FakeJupyter.logins = []
    server = ThreadingHTTPServer(("127.0.0.1", 0), FakeJupyter)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield JupyterEndpoint(f"http://127.0.0.1:{server.server_address[1]}", TOKEN)
    server.shutdown()
    server.server_close()


@pytest.mark.parametrize("logged_in", [True, False])
def test_a_browser_started_on_the_lab_shows_it_logged_in_or_not(jupyter, logged_in):
    # KioskBrowser is the service's, on asyncio; a worker that ran pytest-playwright's sync
    # fixtures has their event loop running in its main thread, so this runs in a thread of its own
    with ThreadPoolExecutor(1) as thread:
        thread.submit(asyncio.run, open_the_lab(jupyter, logged_in)).result()


async def open_the_lab(jupyter: JupyterEndpoint, logged_in: bool) -> None:
    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(executable_path=CHROMIUM)
        try:
            context = await browser.new_context()
            if logged_in:  # what the profile kept from the last time
                await context.add_cookies([{"name": "login", "value": "yes", "url": jupyter.url}])
            page = await context.new_page()
            await page.goto(f"{jupyter.url}/lab", wait_until="commit")  # as Chromium does by itself
            kiosk = KioskBrowser(playwright)
            kiosk.browser, kiosk.page = browser, page

            await kiosk.open_jupyter(jupyter, 30, "/lab", opened=True)

            assert await page.locator(LAB_SHELL_SELECTOR).is_visible()
            assert urlsplit(page.url).path == "/lab"
            assert FakeJupyter.logins == ([] if logged_in else [f"token {TOKEN}"])
        finally:
            await browser.close()
