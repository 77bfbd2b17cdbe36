"""Driving the kiosk Chromium over CDP: log in, open the workspace, watch it, screenshot it."""

from __future__ import annotations

import asyncio
import base64
import logging
from collections.abc import Callable
from urllib.parse import urlsplit

from playwright.async_api import Browser, CDPSession, Page, Playwright
from playwright.async_api import Error as PlaywrightError

from keepalive.engine.errors import first_line
from keepalive.engine.jupyter import JupyterEndpoint

log = logging.getLogger(__name__)

#: The banner of show_notice: one at a time (a new notice replaces the text), closed by its button.
NOTICE_SCRIPT = """(text) => {
  let notice = document.getElementById("keepalive-notice");
  if (!notice) {
    notice = document.createElement("div");
    notice.id = "keepalive-notice";
    notice.setAttribute("role", "alert");
    notice.style.cssText = "position:fixed;top:8px;left:50%;transform:translateX(-50%);z-index:100000;" +
      "background:#b71c1c;color:#fff;padding:8px 12px 8px 16px;border-radius:4px;font:14px sans-serif;" +
      "box-shadow:0 2px 6px rgba(0,0,0,.4)";
    const message = document.createElement("span");
    const close = document.createElement("button");
    close.textContent = "\u00d7";
    close.title = "Close";
    close.style.cssText = "margin-left:12px;background:none;border:0;color:#fff;font-size:16px;cursor:pointer";
    close.onclick = () => notice.remove();
    notice.append(message, close);
    document.body.append(notice);
  }
  notice.firstChild.textContent = text;
}"""

#: Whether anyone watches the page, for the bundled extension (a page without it ignores this).
WATCHED_SCRIPT = "(watched) => window.keepaliveWatched ? window.keepaliveWatched(watched) : null"
#: A script's answer to a cell's input(), typed into the page's own box (false: it shows none).
ANSWER_SCRIPT = "([kernel, value]) => window.keepaliveAnswerInput ? window.keepaliveAnswerInput(kernel, value) : false"
#: Where the kiosk lands, after JupyterLab's address: the bundled extension turns ``heavyai``
#: into a ready workspace, ``reset`` makes JupyterLab drop whatever workspace was saved before.
HEAVYAI_WORKSPACE_QUERY = "?heavyai&reset"
#: A session with no HeavyAI connection: plain JupyterLab, no "no session" error toast.
PLAIN_WORKSPACE_QUERY = "?reset"
#: JupyterLab's main dock panel: present once the shell has rendered.
LAB_SHELL_SELECTOR = "#jp-main-dock-panel"
#: JupyterLab's loading screen: it covers the rendered shell until the workspace (the notebooks
#: left open, their outputs) is restored, then leaves the page.
LAB_SPLASH_ID = "jupyterlab-splash"
#: Whether JupyterLab shows: its shell is visible and no longer under the loading screen. Until
#: then a screenshot or a viewer would see a near-blank page.
LAB_SHOWN_SCRIPT = """([shell, splash]) => {
  const found = document.querySelector(shell);
  return Boolean(found && found.checkVisibility() && !document.getElementById(splash));
}"""
#: Milliseconds between two looks of LAB_SHOWN_SCRIPT or LANDED_SCRIPT.
LANDED_POLL_MS = 20
#: Where a page Chromium opened by itself has landed: "lab" once JupyterLab shows
#: (LAB_SHOWN_SCRIPT), "elsewhere" once the server sent it away from the lab (to its login page).
LANDED_SCRIPT = """([shell, splash, labRoot]) => {
  if (location.href === "about:blank") return false;
  if (!location.pathname.startsWith(labRoot)) return "elsewhere";
  const shown = (%s)([shell, splash]);
  return shown ? "lab" : false;
}""" % LAB_SHOWN_SCRIPT
#: PNG encoded for speed: for a JupyterLab at 1280x800, a median 33 ms against 36 ms with
#: Chromium's default compression, and far fewer slow ones; the file is half as big again.
SCREENSHOT_PARAMS = {"format": "png", "optimizeForSpeed": True}


def thumbnail_params(width: int, height: int, scale: float = 0.5) -> dict:
    """Page.captureScreenshot's parameters for a JPEG of the whole page at ``scale``."""
    return {"format": "jpeg", "quality": 70,
            "clip": {"x": 0, "y": 0, "width": width, "height": height, "scale": scale}}


class KioskBrowser:
    """A Playwright connection to one session's Chromium, and its one page."""

    def __init__(self, playwright: Playwright, on_lost: Callable[[str], None] | None = None) -> None:
        self._playwright = playwright
        self._on_lost = on_lost
        self.browser: Browser | None = None
        self.page: Page | None = None
        self.page_crashed = False
        self._closing = False
        self._capture: CDPSession | None = None  #: the page's own CDP session for screenshots
        # One capture at a time: Chromium scales a clipped capture by emulating another size
        # for its duration, and two at once (a timeline thumbnail, a status page's picture, a
        # screenshot) came out drawn at a quarter of their size.
        self._capturing = asyncio.Lock()

    async def connect(self, cdp_url: str, headers: dict[str, str], timeout: float) -> None:
        """Connect through the session's DevTools gateway (keepalive.engine.cdp_gateway)."""
        self.browser = await self._playwright.chromium.connect_over_cdp(
            cdp_url, headers=headers, timeout=timeout * 1000
        )
        self.browser.on("disconnected", lambda _: self._lost("browser disconnected"))
        context = self.browser.contexts[0]
        self.page = context.pages[0] if context.pages else await context.new_page()
        self.page.on("crash", lambda _: self._on_page_crash())
        # a DevTools client may close the kiosk page: handled like a crash, the page comes back
        self.page.on("close", lambda _: self._on_page_crash())

    def _on_page_crash(self) -> None:
        self.page_crashed = True
        self._lost("page crashed")

    def _lost(self, why: str) -> None:
        if not self._closing and self._on_lost is not None:
            self._on_lost(why)

    async def open_jupyter(self, endpoint: JupyterEndpoint, timeout: float, path: str, opened: bool = False) -> None:
        """Log in with the token out of band, then load the workspace with a clean URL.

        ``opened``: Chromium was started on ``path`` (a wake, a display's restart), logged in by
        its profile's cookies, and loads it while the service connects; nothing more to do once
        the lab shows there. A page the server sent elsewhere (a cookie gone) goes the usual way.
        """
        assert self.page is not None
        page = self.page
        if opened and await self._landed_in_lab(endpoint, timeout):
            return
        if endpoint.token:
            # The login cookie the server answers with lands in the browser's own jar, so the
            # page itself never carries the token. keepalive_jupyter's kiosk login also works under
            # JupyterHub and marks the kiosk's requests as not the user's activity; a server
            # without keepalive_jupyter sets its cookie on any token-authenticated request.
            request = page.context.request
            auth = endpoint.auth_headers
            login = f"{endpoint.url}/api/keepalive/kiosk-login"
            response = await request.post(login, headers=auth, timeout=timeout * 1000)
            if response.status == 404:
                response = await request.get(f"{endpoint.url}/api/status", headers=auth, timeout=timeout * 1000)
            if not response.ok:
                raise RuntimeError(f"Jupyter at {endpoint.url} refused the session's token ({response.status})")
        await self._load_lab(f"{endpoint.url}{path}", timeout)

    async def _landed_in_lab(self, endpoint: JupyterEndpoint, timeout: float) -> bool:
        assert self.page is not None
        lab_root = urlsplit(endpoint.url).path + "/lab"
        try:  # (re-run by Playwright in each document the page loads on its way)
            landed = await self.page.wait_for_function(
                LANDED_SCRIPT, arg=[LAB_SHELL_SELECTOR, LAB_SPLASH_ID, lab_root], polling=LANDED_POLL_MS, timeout=timeout * 1000
            )
            where = await landed.json_value()
        except PlaywrightError as error:
            log.warning("the page Chromium opened by itself did not show the lab: %s", first_line(error))
            return False
        if where != "lab":
            log.info("the page Chromium opened by itself was sent to %s: logging in", self.page.url.split("?")[0])
        return where == "lab"

    async def _load_lab(self, url: str, timeout: float) -> None:
        """Load JupyterLab at ``url`` and wait until it shows (LAB_SHOWN_SCRIPT)."""
        assert self.page is not None
        await self.page.goto(url, wait_until="domcontentloaded", timeout=timeout * 1000)
        await self.page.wait_for_function(LAB_SHOWN_SCRIPT, arg=[LAB_SHELL_SELECTOR, LAB_SPLASH_ID],
                                          polling=LANDED_POLL_MS, timeout=timeout * 1000)

    async def take_over(
        self, endpoint: JupyterEndpoint, path: str, heavyai: bool, settings: list[str], timeout: float
    ) -> None:
        """A pool page becomes a user's: the bundled extension shows the home now behind the
        server's paths (files, the ``settings`` plugins' user settings, the HeavyAI workspace when
        ``heavyai``) without a reload. A page without that extension loads ``path`` instead."""
        assert self.page is not None
        request = {"heavyai": heavyai, "settings": settings}
        has_hook = await self.page.evaluate("typeof window.keepaliveTakeOver === 'function'")
        if not has_hook:
            log.warning("the kiosk page has no keepaliveTakeOver (extension missing?): reloading it")
            await self._load_lab(f"{endpoint.url}{path}", timeout)
            return
        await self.page.evaluate("request => window.keepaliveTakeOver(request)", request)

    @property
    def connected(self) -> bool:
        return self.browser is not None and self.browser.is_connected()

    @property
    def page_alive(self) -> bool:
        return self.connected and self.page is not None and not self.page.is_closed() and not self.page_crashed

    async def page_shows_lab(self, within: float = 0) -> bool:
        """Whether the page shows JupyterLab (LAB_SHOWN_SCRIPT), now or, given ``within``
        seconds, by then (a page still restoring its workspace)."""
        if not self.page_alive:
            return False
        shown = [LAB_SHELL_SELECTOR, LAB_SPLASH_ID]
        try:
            if within:
                await self.page.wait_for_function(LAB_SHOWN_SCRIPT, arg=shown, polling=LANDED_POLL_MS,
                                                  timeout=within * 1000)
                return True
            return bool(await self.page.evaluate(LAB_SHOWN_SCRIPT, shown))
        except PlaywrightError:  # (a timeout too)
            return False

    async def unsent_drafts(self) -> list[dict]:
        """Every open notebook with unsaved changes, as drafts requests for a Jupyter server
        (``window.keepaliveUnsentDrafts``, web/heavyai/src/drafts.ts); none if the page cannot say."""
        if not self.page_alive:
            return []
        try:
            drafts = await asyncio.wait_for(
                self.page.evaluate("() => (window.keepaliveUnsentDrafts ? window.keepaliveUnsentDrafts() : [])"), 5
            )
        except (PlaywrightError, TimeoutError) as error:
            log.warning("the kiosk page could not hand over its unsaved cells: %s", first_line(error))
            return []
        return [d for d in drafts if isinstance(d, dict)] if isinstance(drafts, list) else []

    async def save_all(self, timeout: float = 15.0) -> int:
        """Save every open notebook with unsaved changes into its file (``window.keepaliveSaveAll``,
        web/heavyai/src/drafts.ts); returns how many. 0 if the page cannot."""
        if not self.page_alive:
            return 0
        try:
            saved = await asyncio.wait_for(
                self.page.evaluate("() => (window.keepaliveSaveAll ? window.keepaliveSaveAll() : 0)"), timeout
            )
        except (PlaywrightError, TimeoutError) as error:
            log.warning("the kiosk page could not save its notebooks: %s", first_line(error))
            return 0
        return saved if isinstance(saved, int) else 0

    async def set_watched(self, watched: bool) -> None:
        """Tell the page whether anyone watches it (``window.keepaliveWatched``,
        web/heavyai/src/unwatched.ts): unwatched, JupyterLab's polls rest as in a hidden tab.
        A page without the extension is left as it is."""
        if not self.page_alive:
            return
        try:
            await asyncio.wait_for(self.page.evaluate(WATCHED_SCRIPT, watched), 5)
        except (PlaywrightError, TimeoutError) as error:
            log.debug("the kiosk page was not told it is %swatched: %s", "" if watched else "un",
                      first_line(error))

    async def answer_input(self, kernel_id: str, value: str) -> bool:
        """Type ``value`` into the input box the page shows for ``kernel_id``'s ``input()`` and
        press Enter (``window.keepaliveAnswerInput``, web/heavyai/src/answer.ts); whether it did."""
        if not self.page_alive:
            return False
        try:
            return bool(await asyncio.wait_for(self.page.evaluate(ANSWER_SCRIPT, [kernel_id, value]), 5))
        except (PlaywrightError, TimeoutError) as error:
            log.warning("the kiosk page could not answer an input box: %s", first_line(error))
            return False

    async def show_notice(self, text: str) -> None:
        """A banner over JupyterLab, until the user closes it: what happened while they were away."""
        await self.page.evaluate(NOTICE_SCRIPT, text)

    async def screenshot(self, params: dict | None = None) -> bytes:
        """The page as an image: a PNG (SCREENSHOT_PARAMS) unless ``params`` say otherwise."""
        if not self.page_alive:
            raise RuntimeError("the kiosk page is not available")
        # Straight to CDP: Playwright's page.screenshot() first injects a style to hide the caret
        # and removes it after, two more round trips and a re-render that double its time.
        async with self._capturing:
            if self._capture is None:
                self._capture = await self.page.context.new_cdp_session(self.page)
            try:
                shot = await asyncio.wait_for(self._capture.send("Page.captureScreenshot", params or SCREENSHOT_PARAMS), 15)
            except PlaywrightError:
                self._capture = None  # a session of a page that went away: the next call makes a new one
                raise
            except TimeoutError:
                self._capture = None
                raise RuntimeError("the kiosk page did not answer within 15 s") from None
        return base64.b64decode(shot["data"])

    async def quit(self) -> None:
        """Ask Chromium to close itself (CDP ``Browser.close``): it writes its cookies out on the
        way, which a SIGTERM does not let it do, so that its next start on this profile is still
        logged in to Jupyter. Its exit is not a loss (no ``on_lost``)."""
        self._closing = True
        if not self.connected:
            raise RuntimeError("the kiosk browser is not connected")
        assert self.browser is not None
        session = await self.browser.new_browser_cdp_session()
        try:
            await session.send("Browser.close")
        except PlaywrightError:
            pass  # the connection may end before the answer comes

    async def close(self) -> None:
        """Drop the CDP connection; the browser process itself is the session's (Session.browser_process)."""
        self._closing = True
        if self.browser is not None:
            try:
                await self.browser.close()
            except PlaywrightError:
                pass
