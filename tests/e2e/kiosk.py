"""Driving a session's own kiosk page from a test, over the session's CDP port on loopback.

What the user sees is that page: tests read its DOM here instead of guessing from pixels.
The CDP port is found the way Chromium announces it: ``DevToolsActivePort`` in the profile
named by ``--user-data-dir`` on the kiosk Chromium's command line.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import urlsplit

from playwright.sync_api import Page, Playwright

from tests.conftest import session_processes


def cdp_port(session_id: str) -> int:
    for process in session_processes(session_id):
        for arg in process.cmdline():
            if arg.startswith("--user-data-dir=") and "--type=" not in " ".join(process.cmdline()):
                port_file = Path(arg.split("=", 1)[1]) / "DevToolsActivePort"
                if port_file.exists():
                    return int(port_file.read_text().splitlines()[0])
    raise AssertionError(f"no kiosk Chromium with a CDP port found for session {session_id}")


@contextmanager
def kiosk_page(playwright: Playwright, session_id: str) -> Iterator[Page]:
    """The session's kiosk page; the CDP connection is dropped afterwards (the browser stays)."""
    browser = playwright.chromium.connect_over_cdp(f"http://127.0.0.1:{cdp_port(session_id)}")
    try:
        (page,) = [p for context in browser.contexts for p in context.pages if p.url.startswith("http")]
        yield page
    finally:
        browser.close()


def jupyter_base(page: Page) -> str:
    parts = urlsplit(page.url)
    path = parts.path.split("/lab")[0]
    return f"{parts.scheme}://{parts.netloc}{path}"


def put_notebook(page: Page, name: str, cells: list[str]) -> None:
    """Save a notebook of code cells into the session's Jupyter, with the page's own login."""
    notebook = {
        "nbformat": 4,
        "nbformat_minor": 5,
        "metadata": {"kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"}},
        "cells": [
            {"cell_type": "code", "id": f"cell-{i}", "metadata": {}, "source": source, "outputs": [],
             "execution_count": None}
            for i, source in enumerate(cells)
        ],
    }
    status = page.evaluate(
        """async ([url, body]) => {
            const xsrf = (document.cookie.match(/(?:^|; )_xsrf=([^;]*)/) || [])[1] || "";
            const response = await fetch(url, {method: "PUT", body, credentials: "same-origin",
                headers: {"Content-Type": "application/json", "X-XSRFToken": decodeURIComponent(xsrf)}});
            return response.status;
        }""",
        [f"{jupyter_base(page)}/api/contents/{name}", json.dumps({"type": "notebook", "content": notebook})],
    )
    assert status in (200, 201), f"saving {name} answered {status}"


def open_and_run_all(page: Page, name: str, timeout_ms: float = 90_000) -> None:
    """Open ``name`` in the kiosk's JupyterLab and run every cell from the Run menu, as a user would."""
    page.goto(f"{jupyter_base(page)}/lab/tree/{name}", wait_until="domcontentloaded", timeout=timeout_ms)
    page.locator(".jp-Notebook").first.wait_for(timeout=timeout_ms)
    # the status bar's kernel item ("Python 3 (ipykernel) | Idle"): running earlier would wait in a dialog
    page.locator(".jp-StatusBar-Widget", has_text=re.compile(r"\| Idle")).first.wait_for(timeout=timeout_ms)
    page.get_by_role("menuitem", name="Run", exact=True).click()
    page.get_by_role("menuitem", name="Run All Cells", exact=True).click()
