"""End to end: a running cell keeps every output when the kiosk page reloads or its Chromium dies.

Real service, real Jupyter, real kiosk Chromium in xpra. A cell prints a numbered line every
half second; mid-run the kiosk page is reloaded, or its Chromium is killed with SIGKILL and the
service recovers it. Then the page's DOM must show every line the kernel sent, once and in
order, still growing, and the ``.ipynb`` on disk must follow within seconds.

Run with ``-s`` to see the figures (lines sent/shown, seconds to the first new line, file lag).
"""

from __future__ import annotations

import json
import os
import re
import signal
import time
from pathlib import Path

import pytest

from tests.conftest import session_processes
from tests.e2e.kiosk import kiosk_page, open_and_run_all, put_notebook
from tests.e2e.viewer_helpers import wait_for

pytestmark = pytest.mark.e2e

LINES = 60
PERIOD = 0.5
TICK = re.compile(r"^tick (\d+)$", re.M)
TICKS_CODE = (
    "import time\n"
    f"for i in range({LINES}):\n"
    "    print(f'tick {i}', flush=True)\n"
    f"    time.sleep({PERIOD})\n"
)


@pytest.fixture(scope="module")
def session(keepalive_service):
    created = keepalive_service.start_session(name="outputs-e2e")
    yield created
    keepalive_service.stop_session(created["id"])


def shown_ticks(page) -> list[int]:
    """The numbered lines in the first cell's output area, as the page shows them."""
    texts = page.locator(".jp-NotebookPanel:not(.lm-mod-hidden) .jp-Cell").first.locator(
        ".jp-OutputArea-output"
    ).all_inner_texts()
    return [int(n) for n in TICK.findall("\n".join(texts))]


def prompt_text(page) -> str:
    return page.locator(".jp-NotebookPanel:not(.lm-mod-hidden) .jp-Cell").first.locator(
        ".jp-InputPrompt"
    ).inner_text().strip()


def file_ticks(path: Path) -> list[int]:
    """The numbered lines in the first cell's outputs in the .ipynb on disk."""
    try:
        notebook = json.loads(path.read_text())
    except (OSError, ValueError):
        return []
    text = "".join(
        "".join(o.get("text", "")) for o in notebook["cells"][0].get("outputs", []) if o.get("output_type") == "stream"
    )
    return [int(n) for n in TICK.findall(text)]


def kiosk_chromium(session_id: str):
    """The kiosk's main Chromium process (the one with the profile, not a --type= child)."""
    for process in session_processes(session_id):
        argv = process.cmdline()
        if any(a.startswith("--user-data-dir=") for a in argv) and not any(a.startswith("--type=") for a in argv):
            return process
    raise AssertionError("no kiosk Chromium found")


def session_state(service, session_id: str) -> dict:
    response = service.client.get(f"/sessions/{session_id}")
    assert response.status_code == 200, response.text
    return response.json()


class Watch:
    """When each line was first seen on screen and in the file."""

    def __init__(self, notebook_file: Path):
        self.notebook_file = notebook_file
        self.on_screen: dict[int, float] = {}
        self.in_file: dict[int, float] = {}

    def sample(self, page) -> list[int]:
        now = time.monotonic()
        shown = shown_ticks(page)
        for n in shown:
            self.on_screen.setdefault(n, now)
        for n in file_ticks(self.notebook_file):
            self.in_file.setdefault(n, now)
        return shown

    def file_lag(self) -> float:
        """At most how long a line was on screen before it was in the file, in seconds."""
        return max(self.in_file[n] - t for n, t in self.on_screen.items() if n in self.in_file)


@pytest.mark.parametrize("fault", ["reload", "kill-chromium"])
def test_running_cell_keeps_every_line(keepalive_service, session, playwright, fault):
    sid = session["id"]
    name = f"ticks-{fault}.ipynb"
    with kiosk_page(playwright, sid) as page:
        put_notebook(page, name, [TICKS_CODE])
        open_and_run_all(page, name)
        notebook_file = wait_for(
            f"{name} on disk", lambda: next(iter(keepalive_service.state_dir.rglob(name)), None)
        )
        watch = Watch(notebook_file)
        wait_for("a few lines before the fault", lambda: len(watch.sample(page)) >= 6, timeout=120, every=0.25)
        before = watch.sample(page)
        assert before == list(range(len(before))), before
        restarts = session_state(keepalive_service, sid)["restarts"]
        fault_at = time.monotonic()
        if fault == "reload":
            page.reload(wait_until="domcontentloaded")
        else:
            os.kill(kiosk_chromium(sid).pid, signal.SIGKILL)

    if fault == "kill-chromium":
        wait_for(
            "the service to recover the browser",
            lambda: (s := session_state(keepalive_service, sid))["restarts"] > restarts and s["state"] == "ready",
            timeout=120,
        )

    with kiosk_page(playwright, sid) as page:
        # The notebook is open again (the saved workspace), and shows a line it had not shown.
        first_new = wait_for(
            "a line newer than the fault",
            lambda: (shown := watch.sample(page)) and max(shown) > max(before) and time.monotonic(),
            timeout=120,
            every=0.1,
        )
        recovered = watch.sample(page)
        assert recovered == list(range(len(recovered))), recovered  # everything before and during, once
        assert prompt_text(page) == "[*]:"  # still running
        # still growing, live
        wait_for("more lines", lambda: len(watch.sample(page)) > len(recovered) + 2, timeout=60, every=0.25)
        final = wait_for(
            "the last line", lambda: (s := watch.sample(page))[-1:] == [LINES - 1] and s, timeout=120, every=0.25
        )
        assert final == list(range(LINES)), final
        wait_for("the prompt's count", lambda: re.fullmatch(r"\[\d+\]:", prompt_text(page)), timeout=30)
        # The file on disk follows within seconds: every line, once, in order.
        wait_for(
            "every line in the file", lambda: (watch.sample(page), file_ticks(notebook_file))[1] == list(range(LINES)),
            timeout=30, every=0.25,
        )
    print(
        f"\n[{fault}] lines sent {LINES}, shown after recovery {len(final)} (each once, in order); "
        f"{first_new - fault_at:.1f} s from the fault to the first new line; "
        f"file on disk behind the screen by at most {watch.file_lag():.1f} s"
    )
