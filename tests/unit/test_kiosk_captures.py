"""KioskBrowser.screenshot: one capture of the page at a time (two clipped captures at once came
out drawn at a quarter of their size on a real kiosk), and a page that went away."""

from __future__ import annotations

import asyncio
import base64
from types import SimpleNamespace

from keepalive.engine.browser import KioskBrowser, thumbnail_params


class CaptureSession:
    """A CDP session that takes a while per capture and notes captures that overlapped."""

    def __init__(self) -> None:
        self.running = 0
        self.most_at_once = 0
        self.sent: list[dict] = []

    async def send(self, method: str, params: dict) -> dict:
        assert method == "Page.captureScreenshot"
        self.running += 1
        self.most_at_once = max(self.most_at_once, self.running)
        await asyncio.sleep(0.02)
        self.running -= 1
        self.sent.append(params)
        return {"data": base64.b64encode(b"picture %d" % len(self.sent)).decode()}


def kiosk(session: CaptureSession) -> KioskBrowser:
    browser = KioskBrowser(playwright=None)
    sessions_made = []

    async def new_cdp_session(page):
        sessions_made.append(page)
        return session

    browser.browser = SimpleNamespace(is_connected=lambda: True)
    browser.page = SimpleNamespace(is_closed=lambda: False, context=SimpleNamespace(new_cdp_session=new_cdp_session))
    browser.sessions_made = sessions_made
    return browser


async def test_captures_of_one_page_take_turns():
    session = CaptureSession()
    browser = kiosk(session)
    shots = await asyncio.gather(browser.screenshot(), browser.screenshot(thumbnail_params(1280, 800)),
                                 browser.screenshot(thumbnail_params(1280, 800)))
    assert session.most_at_once == 1 and len(set(shots)) == 3
    assert len(browser.sessions_made) == 1  # one CDP session for all of them
    assert session.sent[1]["clip"] == {"x": 0, "y": 0, "width": 1280, "height": 800, "scale": 0.5}
