"""End to end: a running cell outlives its Jupyter server.

Real service, real Jupyter, real kiosk Chromium. A cell prints its kernel's pid, then a numbered
line every half second. Mid-run the session's Jupyter server is killed with SIGKILL, or ended with
SIGTERM, or restarted on request (``POST /sessions/{id}/restart-jupyter``), or killed together
with the kiosk Chromium. Afterwards the page's DOM must show the same kernel (same id, same pid)
still running the cell, every line once and in order, including the lines printed while no
server ran, and the ``.ipynb`` on disk must follow.

Run with ``-s`` to see the figures (seconds until ready, lines printed during the outage).
"""

from __future__ import annotations

import json
import os
import re
import signal
import time

import pytest

from tests.e2e.kiosk import jupyter_base, kiosk_page, put_notebook
from tests.e2e.test_outputs_survive import (
    CELLS,
    HURRY,
    PACE,
    cell_outputs,
    hurry,
    jupyter_pid,
    kiosk_chromium,
    numbers,
    open_alone_and_run_all,
    output_text,
    prompt_text,
    saved_notebook,
    session_state,
)
from tests.waiting import wait_until

pytestmark = pytest.mark.e2e

#: Enough lines to still run well after a recovery on a slow machine; the test lets the rest come
#: at once (``hurry``) once it has seen what it waits for.
LINES = 400

CELL = (
    "import os, time\n"
    "print(f'kernel pid {os.getpid()}', flush=True)\n"
    f"for i in range({LINES}):\n"
    "    print(f'tick {i}', flush=True)\n"
    f"    time.sleep({PACE})\n"
)


def shown(page) -> tuple[int | None, list[int]]:
    """The kernel pid the cell printed and its ticks, as the page shows them (each once, in order)."""
    text = "\n".join(cell_outputs(page))
    pids = numbers(r"^kernel pid (\d+)$", text)
    ticks = numbers(r"^tick (\d+)$", text)
    assert len(pids) <= 1, text
    assert ticks == list(range(len(ticks))), ticks
    return (pids[0] if pids else None), ticks


def saved_ticks(notebook_file) -> list[int]:
    notebook = saved_notebook(notebook_file)
    if notebook is None:
        return []
    return numbers(r"^tick (\d+)$", "".join(output_text(o) for o in notebook["cells"][0]["outputs"]))


def kernel_ids(page) -> list[str]:
    """The kernels the session's Jupyter server lists, with the page's own login."""
    return page.evaluate("async (url) => (await (await fetch(url)).json()).map(k => k.id)",
                         f"{jupyter_base(page)}/api/kernels")


def notebook_kernel(page, name: str) -> str | None:
    """The kernel of the notebook ``name``'s session on the session's Jupyter server."""
    return page.evaluate(
        "async ([url, name]) => ((await (await fetch(url)).json()).find(s => s.path === name) || {kernel: {}}).kernel.id",
        [f"{jupyter_base(page)}/api/sessions", name])


def book(service, session_id: str) -> dict:
    """The session's book of running kernels (keepalive_jupyter/surviving_kernels.py)."""
    path = service.state_dir / "sessions" / session_id / "run" / "jupyter" / "keepalive-kernels.json"
    return json.loads(path.read_text())


@pytest.fixture(scope="module")
def shared_session(keepalive_service):
    """One session for the faults that each count at most one restart (the restart policy gives
    up after three within ten minutes, rightly)."""
    created = keepalive_service.start_session(name="kernels-survive")
    keepalive_service.started.remove(created["id"])  # this fixture stops it (conftest)
    yield created
    keepalive_service.stop_session(created["id"])


@pytest.fixture
def session(keepalive_service, request):
    """The shared session, but for the fault that counts two crashes at once; a test on the
    shared one leaves no HURRY file behind (the next test's cell would race to its end)."""
    if request.node.callspec.params["fault"] != "kill-jupyter-and-chromium":
        shared = request.getfixturevalue("shared_session")
        yield shared
        for leftover in keepalive_service.state_dir.glob(f"homes/{shared['name']}/**/{HURRY}"):
            leftover.unlink()
        return
    created = keepalive_service.start_session(name="kernels-survive-both")
    yield created
    keepalive_service.stop_session(created["id"])


@pytest.mark.parametrize("fault", ["kill-jupyter", "term-jupyter", "restart-jupyter", "kill-jupyter-and-chromium"])
def test_a_running_cell_outlives_its_jupyter_server(keepalive_service, session, playwright, fault):
    sid = session["id"]
    name = f"survive-{fault}.ipynb"
    with kiosk_page(playwright, sid) as page:
        put_notebook(page, name, [CELL])
        open_alone_and_run_all(page, name)
        notebook_file = wait_until(f"{name} on disk", lambda: next(iter(keepalive_service.state_dir.rglob(name)), None))
        wait_until("a few ticks before the fault", lambda: len(shown(page)[1]) >= 4, timeout=120, every=0.25)
        kernel_pid, ticks_before = shown(page)
        kernel_id = notebook_kernel(page, name)
        assert kernel_id is not None
        assert book(keepalive_service, sid)[kernel_id]["pid"] == kernel_pid
    restarts = session_state(keepalive_service, sid)["restarts"]
    server = jupyter_pid(keepalive_service, sid)
    fault_at = time.monotonic()
    if fault == "restart-jupyter":
        response = keepalive_service.client.post(f"/sessions/{sid}/restart-jupyter", timeout=300)
        assert response.status_code == 200, response.text
        assert response.json()["state"] == "ready"
    else:
        if fault == "kill-jupyter-and-chromium":
            os.kill(kiosk_chromium(sid).pid, signal.SIGKILL)
        os.kill(server, signal.SIGTERM if fault == "term-jupyter" else signal.SIGKILL)
        seen: dict = {}

        def recovered() -> bool:
            seen.update(session_state(keepalive_service, sid))
            return seen["restarts"] > restarts and seen["state"] == "ready"

        wait_until("the service to bring the session back", recovered, timeout=120,
                   describe=lambda: {key: seen.get(key) for key in ("state", "restarts", "error")})
    ready_after = time.monotonic() - fault_at
    assert jupyter_pid(keepalive_service, sid) != server
    os.kill(kernel_pid, 0)  # the kernel process runs on (raises if it is gone)

    with kiosk_page(playwright, sid) as page:
        # the same kernel, re-attached: its lines keep coming, after those of the outage
        wait_until("the running prompt", lambda: prompt_text(page) == "[*]:", timeout=60, every=0.1,
                   describe=lambda: (prompt_text(page), cell_outputs(page)[-2:]))
        assert notebook_kernel(page, name) == kernel_id
        assert book(keepalive_service, sid)[kernel_id]["pid"] == kernel_pid
        def grown():
            now = shown(page)
            return now if len(now[1]) > len(ticks_before) + 2 else None

        pid_shown, ticks_after = wait_until("more lines than before the fault", grown, timeout=60, every=0.25)
        assert pid_shown == kernel_pid
        hurry(notebook_file)
        wait_until("the end of the run", lambda: re.fullmatch(r"\[\d+\]:", prompt_text(page)), timeout=120, every=0.25)
        assert shown(page) == (kernel_pid, list(range(LINES)))
        assert page.locator(CELLS).count() == 1
    wait_until("the file on disk to have every line", lambda: saved_ticks(notebook_file) == list(range(LINES)),
               timeout=30, every=0.25, describe=lambda: saved_ticks(notebook_file))
    print(f"\n[{fault}] ready again {ready_after:.1f} s after the fault; kernel {kernel_pid} kept; "
          f"{len(ticks_after) - len(ticks_before)} lines came while the page was away; every line on screen "
          f"and on disk once, in order")


def test_a_kernel_that_ended_with_its_server_is_told_not_silently_replaced(keepalive_service, shared_session,
                                                                            playwright):
    """The Jupyter server is killed, then its kernel, before any new server could take it back:
    the new server reports it lost, and the user reads so over JupyterLab, in the session's
    activity and as a ``kernel_died`` event (JupyterLab then starts a new kernel, with nothing
    in memory)."""
    sid = shared_session["id"]
    name = "lost-kernel.ipynb"
    with kiosk_page(playwright, sid) as page:
        put_notebook(page, name, ["import os, time\nprint(f'kernel pid {os.getpid()}', flush=True)\ntime.sleep(600)"])
        open_alone_and_run_all(page, name)
        kernel_pid = wait_until("the kernel's pid on screen", lambda: shown(page)[0], timeout=120, every=0.25)
        kernel_id = notebook_kernel(page, name)
        assert kernel_id is not None
    restarts = session_state(keepalive_service, sid)["restarts"]
    server = jupyter_pid(keepalive_service, sid)
    os.kill(server, signal.SIGKILL)
    os.killpg(kernel_pid, signal.SIGKILL)  # well before a new server reads the book: it takes seconds to start

    def told() -> dict | None:
        state = session_state(keepalive_service, sid)
        death = (state.get("activity") or {}).get("kernel_died") or {}
        return death if state["restarts"] > restarts and death.get("kernel_id") == kernel_id else None

    death = wait_until("the lost kernel in the session's activity", told, timeout=120,
                       describe=lambda: session_state(keepalive_service, sid).get("activity"))
    assert death["reason"] == "ended while its Jupyter server was down"
    assert death["notebook"].endswith(name)
    with kiosk_page(playwright, sid) as page:
        notice = page.locator("#keepalive-notice")
        notice.wait_for(timeout=30_000)
        assert f"the kernel of {death['notebook']} ended while the Jupyter server was down" in notice.inner_text()
        assert kernel_id not in kernel_ids(page)
