"""Driving a session's own kiosk page from a test, through the service's DevTools gateway.

What the user sees is that page: tests read its DOM here instead of guessing from pixels.
The gateway's URL is the session's ``cdp_url``; the API token opens it.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from contextlib import contextmanager
from urllib.parse import urlsplit

import httpx
from playwright.sync_api import Page, Playwright

from tests.conftest import LIVE_SERVICES


def cdp_endpoint(session_id: str) -> tuple[str, dict[str, str]]:
    """The session's DevTools URL and the header that opens it, from the service that runs it."""
    for service in LIVE_SERVICES:
        try:
            response = service.client.get(f"/sessions/{session_id}")
        except httpx.HTTPError:  # a service a test killed
            continue
        if response.status_code == 200:
            return response.json()["cdp_url"], {"Authorization": f"Bearer {service.token}"}
    raise AssertionError(f"no running service knows session {session_id}")


@contextmanager
def kiosk_page(playwright: Playwright, session_id: str) -> Iterator[Page]:
    """The session's kiosk page; the CDP connection is dropped afterwards (the browser stays)."""
    url, headers = cdp_endpoint(session_id)
    browser = playwright.chromium.connect_over_cdp(url, headers=headers)
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
    status = put_json(page, f"{jupyter_base(page)}/api/contents/{name}", {"type": "notebook", "content": notebook})
    assert status in (200, 201), f"saving {name} answered {status}"


def put_json(page: Page, url: str, body: dict) -> int:
    """PUT ``body`` to the session's Jupyter with the page's own login (its XSRF cookie); the status."""
    return page.evaluate(
        """async ([url, body]) => {
            const xsrf = (document.cookie.match(/(?:^|; )_xsrf=([^;]*)/) || [])[1] || "";
            const response = await fetch(url, {method: "PUT", body, credentials: "same-origin",
                headers: {"Content-Type": "application/json", "X-XSRFToken": decodeURIComponent(xsrf)}});
            return response.status;
        }""",
        [url, json.dumps(body)],
    )


def open_and_run_all(page: Page, name: str, timeout_ms: float = 90_000) -> None:
    """Open ``name`` in the kiosk's JupyterLab and run every cell from the Run menu, as a user would."""
    page.goto(f"{jupyter_base(page)}/lab/tree/{name}", wait_until="domcontentloaded", timeout=timeout_ms)
    page.locator(".jp-Notebook").first.wait_for(timeout=timeout_ms)
    # the status bar's kernel item ("Python 3 (ipykernel) | Idle"): running earlier would wait in a dialog
    page.locator(".jp-StatusBar-Widget", has_text=re.compile(r"\| Idle")).first.wait_for(timeout=timeout_ms)
    page.get_by_role("menuitem", name="Run", exact=True).click()
    page.get_by_role("menuitem", name="Run All Cells", exact=True).click()
