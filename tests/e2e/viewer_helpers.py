"""Helpers shared by the viewer and dashboard end-to-end tests: reading screenshots, driving xpra."""

from __future__ import annotations

import os
import re
import shutil
import struct
import subprocess
import tempfile
import time
from datetime import datetime
from pathlib import Path

from playwright.sync_api import Page

from tests.e2e.kiosk import kiosk_page
from tests.waiting import wait_until


def png_size(png: bytes) -> tuple[int, int]:
    assert png[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG"
    return struct.unpack(">II", png[16:24])


def ocr(png: bytes) -> str:
    """The text in a screenshot (tesseract; installed with the test dependencies)."""
    tesseract = shutil.which("tesseract")
    assert tesseract, "tesseract-ocr is needed by the viewer tests (apt-get install tesseract-ocr)"
    with tempfile.TemporaryDirectory() as tmp:
        image = Path(tmp) / "shot.png"
        image.write_bytes(png)
        # psm 11: sparse text, finds short lines such as a cell's "42" among the UI. One thread:
        # tesseract's OpenMP threads spin while they wait; on 2 cores that cost several times
        # the CPU and the time of one thread, and the suite polls screenshots this way a lot
        done = subprocess.run([tesseract, str(image), "stdout", "--psm", "11"], capture_output=True, check=True,
                              env={**os.environ, "OMP_THREAD_LIMIT": "1"})
    return done.stdout.decode(errors="replace")


def screenshot(service, session_id: str) -> bytes:
    response = service.client.get(f"/sessions/{session_id}/screenshot")
    assert response.status_code == 200, response.text
    return response.content


def viewer_link(service, session_id: str, **body) -> str:
    response = service.client.post(f"/sessions/{session_id}/viewer-link", json=body or None)
    assert response.status_code == 200, response.text
    return response.json()["url"]


def expired_viewer_link(service, session_id: str) -> str:
    """A viewer link of one second's validity, once that second is over (by the expiry the
    service's answer states, on this machine's clock: the service's own)."""
    answer = service.client.post(f"/sessions/{session_id}/viewer-link", json={"ttl": 1})
    assert answer.status_code == 200, answer.text
    expires = datetime.fromisoformat(answer.json()["expires_at"]).timestamp()
    wait_until("the link's expiry", lambda: time.time() >= expires, every=0.1)
    return answer.json()["url"]


def canvas_pixels(page: Page) -> dict:
    """Colour statistics of what xpra's client painted: every canvas composited into one."""
    return page.evaluate(
        """() => {
        const canvases = Array.from(document.querySelectorAll('canvas'))
            .filter(c => c.width > 200 && c.height > 200);
        if (!canvases.length) return {count: 0};
        const c = canvases.reduce((a, b) => (a.width * a.height >= b.width * b.height ? a : b));
        const data = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
        let white = 0, dark = 0, blue = 0, orange = 0, n = 0;
        for (let i = 0; i < data.length; i += 4 * 7) {
            const r = data[i], g = data[i + 1], b = data[i + 2];
            n++;
            if (r > 240 && g > 240 && b > 240) white++;
            if (r < 80 && g < 80 && b < 80) dark++;
            if (b > 150 && r < 80 && g > 60 && g < 150) blue++;       // JupyterLab's brand blue
            if (r > 200 && g > 90 && g < 170 && b < 80) orange++;     // the Jupyter logo / notebook icon
        }
        return {count: canvases.length, width: c.width, height: c.height,
                white: white / n, dark: dark / n, blue: blue / n, orange: orange / n};
    }"""
    )


def open_viewer(page: Page, service, session_id: str, query: str = "", **link) -> None:
    """Open the session's viewer through a fresh link, as a user would (open the link, click the
    button), and wait until xpra painted JupyterLab. ``query`` is added to the link."""
    page.goto(viewer_link(service, session_id, **link) + query)
    page.locator("#open").click()
    page.wait_for_url(re.compile(r"/viewer/(\?(?!.*ticket=).*)?$"))
    wait_until("the viewer to paint JupyterLab", lambda: looks_like_jupyterlab(canvas_pixels(page)) or None)


def looks_like_jupyterlab(stats: dict) -> bool:
    """Mostly white, some dark text, a little of JupyterLab's blue and the orange logo."""
    return bool(
        stats.get("count")
        and stats["white"] > 0.5
        and stats["dark"] > 0.001
        and stats["blue"] > 0.0005
        and stats["orange"] > 0.00005
    )


def type_into_lab(page: Page, text: str) -> None:
    page.keyboard.type(text, delay=30)


def new_notebook(page: Page) -> None:
    """Through the viewer: focus the kiosk page, open the command palette, create a notebook."""
    width = page.viewport_size["width"]
    # the empty right part of JupyterLab's menu bar: focuses the page, triggers nothing
    page.mouse.click(width * 0.75, 12)
    page.keyboard.press("Control+Shift+C")
    page.wait_for_timeout(800)
    type_into_lab(page, "New Notebook")
    page.wait_for_timeout(500)
    page.keyboard.press("Enter")


class NewNotebookShown:
    """A condition for ``wait_until``: the new notebook is open and its kernel idle (status bar:
    "... | Idle"), read from the session's screenshot; ``str()`` is the text last read.

    Its tab shows up before the notebook takes keys; typing earlier loses them under load.
    """

    what = "a new notebook with an idle kernel"

    def __init__(self, service, session_id: str) -> None:
        self.service, self.session_id, self.text = service, session_id, ""

    def __call__(self) -> bool:
        self.text = ocr(screenshot(self.service, self.session_id))
        return "Untitled" in self.text and "Idle" in self.text

    def __str__(self) -> str:
        return f"the screenshot last read:\n{self.text}"


#: The text of the cell whose editor has the kiosk page's focus, or null when no cell editor has it.
EDITED_CELL_TEXT = """() => {
  const editor = document.activeElement?.closest('.jp-Cell .cm-editor');
  return editor ? editor.querySelector('.cm-content').innerText : null;
}"""


def run_in_new_cell(page: Page, code: str, playwright, session_id: str) -> None:
    """Through the viewer: type ``code`` into the new notebook's first cell and run it.

    As a user looks at the screen before the next key, the kiosk page is asked (over CDP) whether
    the cell took the Enter (its editor has the focus) and then the whole code, before it runs:
    a key that xpra or the page lost then fails here, naming what the cell holds.
    """
    page.keyboard.press("Enter")  # command mode -> edit mode in the new notebook's first cell
    with kiosk_page(playwright, session_id) as kiosk:
        wait_until("the new cell's editor to take the keys", lambda: kiosk.evaluate(EDITED_CELL_TEXT) is not None,
                   timeout=30, every=0.1)
        type_into_lab(page, code)
        typed: list = [None]

        def all_typed() -> bool:
            typed[0] = kiosk.evaluate(EDITED_CELL_TEXT)
            return typed[0] is not None and typed[0].strip() == code

        wait_until("the code typed in the cell", all_typed, timeout=30, every=0.1,
                   describe=lambda: f"the cell holds {typed[0]!r}")
    page.keyboard.press("Shift+Enter")
