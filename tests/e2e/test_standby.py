"""End to end: a session nobody uses goes into standby, keeps everything, and wakes on use.

Real service (STANDBY_AFTER a few seconds), real Jupyter, real kiosk Chromium. The user's
notebook holds a variable, a slider moved to a value and a background thread that goes on
printing. Left alone, the session goes into standby: its Xvfb and Chromium are gone, its kernel
runs on (the thread's lines go on reaching a file). A new service (the first one SIGKILLed)
leaves it asleep. A screenshot wakes it; the page then shows the notebook with its outputs, the
slider's value and the lines the thread printed while nobody had a page. A cell running on
never lets it sleep; a cell run through the Jupyter API alone wakes it.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from tests.conftest import session_processes
from tests.e2e.kiosk import kiosk_page, open_and_run_all, put_notebook
from tests.e2e.test_activity import EventStream
from tests.integration.jupyter_driver import SessionJupyter
from tests.integration.test_sessions import assert_jupyterlab_png
from tests.waiting import wait_until

pytestmark = pytest.mark.e2e

AFTER = 6  # STANDBY_AFTER: seconds unused before standby
NOTEBOOK = "asleep.ipynb"
CELLS = ".jp-NotebookPanel:not(.lm-mod-hidden) .jp-Cell"
#: A background thread: a numbered line every half second, the newest number also in a file
#: beside the notebook (what the test reads while no page shows the cell).
THREAD = (
    "import threading, time, pathlib\n"
    "def tick():\n"
    "    for i in range(1200):\n"
    "        print(f'bg {i}', flush=True)\n"
    "        pathlib.Path('bg-ticks').write_text(str(i))\n"
    "        time.sleep(0.5)\n"
    "threading.Thread(target=tick, daemon=True).start()\n"
)
SOURCES = [
    "x = 41 + 1\nprint('x is', x)",
    "from ipywidgets import IntSlider\nslider = IntSlider(value=7, max=100)\ndisplay(slider)",
    "slider.value = 33",
    THREAD,
]


def outputs(page, index: int) -> str:
    return "\n".join(page.locator(CELLS).nth(index).locator(".jp-OutputArea-output").all_inner_texts())


def thread_lines(page) -> list[int]:
    return [int(n) for n in re.findall(r"^bg (\d+)$", outputs(page, 3), re.M)]


def slider_value(page) -> str:
    return " ".join(page.locator(CELLS).nth(1).locator(".widget-readout").all_inner_texts()).strip()


def newest_tick(notebooks: Path) -> int:
    try:
        return int((notebooks / "bg-ticks").read_text())
    except (OSError, ValueError):
        return -1


def state(service, session_id: str) -> dict:
    return service.client.get(f"/sessions/{session_id}").json()


def display_processes(session_id: str) -> list:
    """The session's Xvfb and Chromium processes (what standby stops)."""
    return [p for p in session_processes(session_id) if re.search(r"Xvfb|chrom", " ".join(p.cmdline()), re.I)]


def test_standby_keeps_the_kernel_and_the_page_and_wakes_on_use(service_factory, playwright):
    first = service_factory("standby", standby_after=AFTER)
    session_id = first.start_session(name="sleeper")["id"]
    notebooks = first.state_dir / "homes" / "sleeper" / "notebooks"

    with kiosk_page(playwright, session_id) as page:  # a DevTools client: awake while connected
        put_notebook(page, NOTEBOOK, SOURCES)
        open_and_run_all(page, NOTEBOOK)
        wait_until("the thread's lines on the page", lambda: len(thread_lines(page)) >= 3, timeout=90)
        assert "x is 42" in outputs(page, 0) and slider_value(page) == "33"
    kernel_pid = wait_until("the kernel", lambda: next(
        (p.pid for p in session_processes(session_id) if "ipykernel" in " ".join(p.cmdline())), None), timeout=30)

    # nobody uses it: standby, with the display gone and the kernel's thread still going
    events = EventStream(first, session_id)
    asleep = wait_until("standby", lambda: state(first, session_id)["state"] == "standby" and state(first, session_id),
                        timeout=AFTER + 60, every=0.5)
    assert asleep["health"]["standby"] is True and asleep["health"]["jupyter"] is True
    assert not asleep["health"]["browser"] and not asleep["health"]["display"]
    assert "standby" in [e["state"] for e in events.of("state")]
    events.close()
    wait_until("Xvfb and Chromium to end", lambda: not display_processes(session_id), timeout=30)
    during = newest_tick(notebooks)
    wait_until("the thread to go on printing in standby", lambda: newest_tick(notebooks) >= during + 4, timeout=30)
    assert kernel_pid in {p.pid for p in session_processes(session_id)}

    # a new service (the first one killed) leaves it asleep, and does not poll it awake
    first.process.kill()
    first.process.wait(30)
    second = service_factory("standby", standby_after=AFTER)
    second.started.append(session_id)  # the second service stops it at the end
    adopted = wait_until("the session adopted", lambda: state(second, session_id), timeout=60)
    assert adopted["state"] == "standby", adopted
    assert not display_processes(session_id), "the new service started a display for a session in standby"

    # a screenshot wakes it and shows JupyterLab: the request waits for it
    printed_asleep = newest_tick(notebooks)
    shot = second.client.get(f"/sessions/{session_id}/screenshot")
    assert shot.status_code == 200, shot.text
    assert_jupyterlab_png(shot.content, 1280, 800)
    assert state(second, session_id)["state"] == "ready"
    with kiosk_page(playwright, session_id) as page:
        page.locator(CELLS).nth(3).wait_for(timeout=90_000)
        wait_until("the thread's lines from standby on the page",
                   lambda: len(thread_lines(page)) > printed_asleep + 1, timeout=90)
        lines = thread_lines(page)
        assert lines == list(range(len(lines))), f"lines lost or repeated: {lines}"
        assert "x is 42" in outputs(page, 0)
        wait_until("the slider at its value", lambda: slider_value(page) == "33", timeout=60)
    assert kernel_pid in {p.pid for p in session_processes(session_id)}, "waking lost the kernel"

    # a cell that runs for longer than STANDBY_AFTER keeps it awake, then it sleeps
    jupyter = SessionJupyter(second.state_dir, session_id)
    long_kernel, _ = jupyter.start_cell(
        "import time, pathlib\n"
        f"for i in range({AFTER * 6}):\n"
        "    time.sleep(0.5)\n"
        "    pathlib.Path('long-run').write_text(str(i))\n"
    )
    events = EventStream(second, session_id)
    run_ends = notebooks / "long-run"
    wait_until("the long cell to end", lambda: run_ends.exists() and run_ends.read_text() == str(AFTER * 6 - 1),
               timeout=120)
    assert "standby" not in [e["state"] for e in events.of("state")], "a running cell let the session sleep"
    wait_until("standby after the cell ended", lambda: state(second, session_id)["state"] == "standby",
               timeout=AFTER + 60, every=0.5)
    events.close()
    assert jupyter.client.delete(f"/api/kernels/{long_kernel}").status_code == 204

    # a cell run through the Jupyter API wakes it by itself; the kernel still has its variable
    kernel_id = next(k["id"] for k in jupyter.client.get("/api/kernels").json())
    assert jupyter.execute(kernel_id, "print('still', x)").strip() == "still 42"
    wait_until("the busy kernel to wake the session", lambda: state(second, session_id)["state"] == "ready",
               timeout=90)
    wait_until("a display again", lambda: display_processes(session_id), timeout=30)
