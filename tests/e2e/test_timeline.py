"""A home's timeline with the real parts: a run that ends in an error is there with its error, its
last lines and a thumbnail of the kiosk showing the traceback; the history stays with the name
when its session is stopped and started again."""

from __future__ import annotations

import io
import os
import subprocess
import sys

from PIL import Image
from playwright.sync_api import expect

from tests.e2e.kiosk import kiosk_page, open_and_run_all, put_notebook
from tests.e2e.test_dashboard import sign_in
from tests.e2e.viewer_helpers import ocr
from tests.waiting import wait_until


def timeline(service, path: str) -> list[dict]:
    response = service.client.get(path)
    assert response.status_code == 200, response.text
    return response.json()["events"]


def readable(jpeg: bytes) -> bytes:
    """The thumbnail in grey, twice as large, as a PNG: OCR reads a traceback's small type (red on
    pink) so."""
    image = Image.open(io.BytesIO(jpeg)).convert("L")
    out = io.BytesIO()
    image.resize((image.width * 2, image.height * 2), Image.LANCZOS).save(out, "PNG")
    return out.getvalue()


def test_a_failed_run_is_kept_with_its_traceback_on_screen_across_sessions_of_the_name(
    keepalive_service, playwright, browser, tmp_path
):
    artifacts = tmp_path
    service = keepalive_service
    first = service.start_session(name="timeline")
    with kiosk_page(playwright, first["id"]) as page:
        put_notebook(page, "failing.ipynb", ["print('warming up')", "print('about to fail')\n1 / 0"])
        open_and_run_all(page, "failing.ipynb")

    def failed_run():
        runs = [e for e in timeline(service, f"/sessions/{first['id']}/timeline") if e["kind"] == "run"]
        return runs[0] if runs and "shot_url" in runs[0] else None

    run = wait_until("the failed run in the timeline, with its thumbnail", failed_run, timeout=90, every=0.5)
    assert run["notebook"] == "failing.ipynb" and run["outcome"] == "error" and run["cells"] == 2
    assert run["error"] == {"ename": "ZeroDivisionError", "evalue": "division by zero"}
    assert run["tail"][-2:] == ["about to fail", "ZeroDivisionError: division by zero"]
    shot = service.client.get(run["shot_url"])
    assert shot.status_code == 200 and shot.headers["content-type"] == "image/jpeg"
    text = ocr(readable(shot.content))
    assert "Traceback" in text and "division by zero" in text, f"the thumbnail does not show the traceback: {text}"

    service.stop_session(first["id"])
    second = service.start_session(name="timeline")
    events = timeline(service, f"/sessions/{second['id']}/timeline")
    kinds = [(e["kind"], e["session"]) for e in events]
    # newest first: this session's start, the first one's stop, its failed run, its start
    assert kinds[0] == ("started", second["id"]), kinds
    assert ("stopped", first["id"]) in kinds and ("started", first["id"]) == kinds[-1], kinds
    assert [e["seq"] for e in events] == sorted((e["seq"] for e in events), reverse=True)
    assert timeline(service, "/homes/timeline/timeline") == events

    printed = subprocess.run(
        [sys.executable, "-m", "keepalive", "timeline", "timeline", "--url", service.url],
        env={**os.environ, "KEEPALIVE_API_TOKEN": service.token}, capture_output=True, text=True, timeout=60)
    assert printed.returncode == 0, printed.stderr
    lines = printed.stdout.splitlines()
    assert "started" in lines[0] and any(
        "failing.ipynb: error (ZeroDivisionError: division by zero)" in line and "[screenshot]" in line for line in lines
    ), printed.stdout

    # the dashboard shows it per session, newest first, with the thumbnail
    page = browser.new_page(viewport={"width": 1280, "height": 900})
    sign_in(page, service)
    card = page.locator(f'li.session[data-id="{second["id"]}"]')
    card.locator(".timeline summary").click()
    failed = card.locator(".timeline .event.run.failed").first
    expect(failed).to_contain_text("failing.ipynb: error (ZeroDivisionError: division by zero)", timeout=30_000)
    expect(failed.locator(".tail")).to_contain_text("about to fail")
    wait_until("the run's thumbnail drawn", lambda: failed.locator("img.event-shot").evaluate(
        "img => img.complete && img.naturalWidth > 0"), timeout=30)
    assert card.locator(".timeline .event").first.locator("strong").inner_text() == "started"
    card.screenshot(path=str(artifacts / "dashboard-timeline.png"))
    page.close()
    service.stop_session(second["id"])
