"""End to end: a running cell keeps every output when the kiosk page reloads or its Chromium dies.

Real service, real Jupyter, real kiosk Chromium on its own display. A cell prints a numbered line every
half second; mid-run the kiosk page is reloaded (once while the server will not give out the
execution record for a moment), or its Chromium is killed with SIGKILL and the service recovers it. Then the page's DOM must show every line the kernel sent, once and in
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
from tests.e2e.kiosk import jupyter_base, kiosk_page, put_notebook
from tests.waiting import wait_until

pytestmark = pytest.mark.e2e

#: Enough lines, PERIOD apart, for a cell to outlast every wait of a test (120 s at most) however
#: slow the recovery it waits for: a cell that ended during the fault has no "running" left to
#: check (CI: a Chromium recovery under load outlasted the 20 s of a 40-line cell).
LINES = 300
PERIOD = 0.5
#: A running cell waits PERIOD between its lines until the test has seen what it waits for and
#: drops a file named HURRY beside the notebook (``hurry``): the rest of the lines then come at
#: once, and the test does not sit out the 150 s a cell would otherwise take.
HURRY = "hurry"


def pace(period: float) -> str:
    """The cell's expression for its wait between lines (see HURRY)."""
    return f"(0.005 if __import__('os').path.exists({HURRY!r}) else {period})"


PACE = pace(PERIOD)
CELLS = ".jp-NotebookPanel:not(.lm-mod-hidden) .jp-Cell"


def numbers(pattern: str, text: str) -> list[int]:
    return [int(n) for n in re.findall(pattern, text, re.M)]


def cell_outputs(page, index: int = 0) -> list[str]:
    """The texts of a cell's outputs, as the page shows them (one string per output)."""
    return page.locator(CELLS).nth(index).locator(".jp-OutputArea-output").all_inner_texts()


def prompt_text(page, index: int = 0) -> str:
    return page.locator(CELLS).nth(index).locator(".jp-InputPrompt").inner_text().strip()


def saved_notebook(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def output_text(output: dict) -> str:
    if output.get("output_type") == "stream":
        return "".join(output.get("text", ""))
    if output.get("output_type") == "error":
        return f"{output.get('ename')}: {output.get('evalue')}"
    return "".join(output.get("data", {}).get("text/plain", ""))


class Case:
    """One kind of output. ``shown`` reads the page, ``saved`` the file: both return the
    progress (the newest number shown) after checking what must always hold."""

    cells: list[str]
    finished_early = False  # the run ends during the fault (nothing left to grow)

    def shown(self, page) -> int: ...
    def saved(self, notebook: dict) -> int: ...
    def check_final(self, page) -> str: ...
    def saved_final(self, notebook: dict) -> bool: ...


class Ticks(Case):
    """(1) a numbered line every half second: every line once, in order."""

    cells = [
        "import time\n"
        f"for i in range({LINES}):\n"
        "    print(f'tick {i}', flush=True)\n"
        f"    time.sleep({PACE})\n"
    ]

    def shown(self, page):
        ticks = numbers(r"^tick (\d+)$", "\n".join(cell_outputs(page)))
        assert ticks == list(range(len(ticks))), ticks
        return len(ticks) - 1

    def saved(self, notebook):
        text = "".join(output_text(o) for o in notebook["cells"][0]["outputs"])
        return len(numbers(r"^tick (\d+)$", text)) - 1

    def check_final(self, page):
        ticks = numbers(r"^tick (\d+)$", "\n".join(cell_outputs(page)))
        assert ticks == list(range(LINES)), ticks
        return f"lines sent {LINES}, shown {len(ticks)} (each once, in order)"

    def saved_final(self, notebook):
        return self.saved(notebook) == LINES - 1


class Display(Case):
    """(2) one display updated by its display_id: one output, the newest value."""

    cells = [
        "import time\n"
        "from IPython.display import display\n"
        "handle = display('value 0', display_id=True)\n"
        f"for i in range(1, {LINES}):\n"
        f"    time.sleep({PACE})\n"
        "    handle.update(f'value {i}')\n"
    ]

    def shown(self, page):
        outputs = cell_outputs(page)
        assert len(outputs) <= 1, outputs
        values = numbers(r"value (\d+)", "\n".join(outputs))
        assert len(values) <= 1, outputs
        return values[0] if values else -1

    def saved(self, notebook):
        outputs = notebook["cells"][0]["outputs"]
        assert len(outputs) <= 1, outputs
        values = numbers(r"value (\d+)", "".join(output_text(o) for o in outputs))
        return values[0] if values else -1

    def check_final(self, page):
        outputs = cell_outputs(page)
        assert len(outputs) == 1 and numbers(r"value (\d+)", outputs[0]) == [LINES - 1], outputs
        return f"updates sent {LINES - 1}, shown: one output with the last value ({outputs[0].strip()})"

    def saved_final(self, notebook):
        return self.saved(notebook) == LINES - 1


class Frames(Case):
    """(3) clear_output(wait=True) before each frame: only the last frame."""

    cells = [
        "import time\n"
        "from IPython.display import clear_output\n"
        f"for i in range({LINES}):\n"
        "    clear_output(wait=True)\n"
        "    print(f'frame {i}', flush=True)\n"
        f"    time.sleep({PACE})\n"
    ]

    def shown(self, page):
        frames = numbers(r"^frame (\d+)$", "\n".join(cell_outputs(page)))
        assert len(frames) <= 1, frames
        return frames[0] if frames else -1

    def saved(self, notebook):
        frames = numbers(r"^frame (\d+)$", "".join(output_text(o) for o in notebook["cells"][0]["outputs"]))
        assert len(frames) <= 1, frames
        return frames[0] if frames else -1

    def check_final(self, page):
        outputs = cell_outputs(page)
        assert numbers(r"^frame (\d+)$", "\n".join(outputs)) == [LINES - 1], outputs
        return f"frames sent {LINES}, shown: the last one only"

    def saved_final(self, notebook):
        return self.saved(notebook) == LINES - 1


ERROR_TICKS = 14


class ErrorQueued(Case):
    """(6) lines, then an error, with two cells queued after it: they never run."""

    finished_early = True
    cells = [
        "import time\n"
        f"for i in range({ERROR_TICKS}):\n"
        "    print(f'tick {i}', flush=True)\n"
        f"    time.sleep({PACE})\n"
        "raise ValueError('boom after the ticks')\n",
        "print('queued cell one ran')",
        "print('queued cell two ran')",
    ]

    def shown(self, page):
        ticks = numbers(r"^tick (\d+)$", "\n".join(cell_outputs(page)))
        assert ticks == list(range(len(ticks))), ticks
        for index in (1, 2):
            assert cell_outputs(page, index) == [], cell_outputs(page, index)
        return len(ticks) - 1

    def saved(self, notebook):
        text = "".join(output_text(o) for o in notebook["cells"][0]["outputs"])
        return len(numbers(r"^tick (\d+)$", text)) - 1

    def check_final(self, page):
        text = "\n".join(cell_outputs(page))
        assert numbers(r"^tick (\d+)$", text) == list(range(ERROR_TICKS)), text
        assert "ValueError" in text and "boom after the ticks" in text, text
        wait_until("the queued cells' empty prompts", lambda: [prompt_text(page, i) for i in (1, 2)] == ["[ ]:", "[ ]:"], timeout=30)
        for index in (1, 2):
            assert cell_outputs(page, index) == []
        return f"lines sent {ERROR_TICKS}, shown {ERROR_TICKS} then the error; the 2 queued cells did not run"

    def saved_final(self, notebook):
        cells = notebook["cells"]
        kinds = [o["output_type"] for o in cells[0]["outputs"]]
        return (
            self.saved(notebook) == ERROR_TICKS - 1 and "error" in kinds
            and cells[1]["outputs"] == [] and cells[2]["outputs"] == []
        )


class Widgets(Case):
    """(4) an IntSlider and a tqdm.notebook bar driven from a loop: live, at their final values."""

    cells = [
        "import time\n"
        "from ipywidgets import IntSlider\n"
        "from tqdm.notebook import tqdm\n"
        f"slider = IntSlider(value=0, max={LINES}, description='slider')\n"
        "display(slider)\n"
        f"for i in tqdm(range({LINES})):\n"
        "    slider.value = i + 1\n"
        f"    time.sleep({PACE})\n"
    ]

    def readout(self, page) -> int:
        texts = page.locator(CELLS).first.locator(".widget-readout").all_inner_texts()
        return int(texts[0]) if texts and texts[0].strip().isdigit() else -1

    def bar(self, page) -> str:
        return " ".join(page.locator(CELLS).first.locator(".widget-html-content").all_inner_texts())

    def shown(self, page):
        assert "Error" not in " ".join(cell_outputs(page)), cell_outputs(page)
        return self.readout(page)

    def saved(self, notebook):
        return -1  # the file holds the widget views, not their values

    def check_final(self, page):
        wait_until("the bar at its end", lambda: f"{LINES}/{LINES}" in self.bar(page), timeout=30)
        assert self.readout(page) == LINES
        return f"slider at {self.readout(page)} of {LINES}, bar '{LINES}/{LINES}'"

    def saved_final(self, notebook):
        views = [
            o for o in notebook["cells"][0]["outputs"]
            if "application/vnd.jupyter.widget-view+json" in o.get("data", {})
        ]
        return len(views) == 2


CASES = {"ticks": Ticks(), "display": Display(), "frames": Frames(), "error": ErrorQueued(), "widgets": Widgets()}


#: The burst test's IOPub limit (jupyter_server's own settings): low enough that any machine's
#: burst passes it. The default, 1000 messages/s over 3 s, is more than a slow machine's kernel
#: and server reach, and the burst then never met the limit it is about.
IOPUB_LIMIT = {"iopub_msg_rate_limit": 100, "rate_limit_window": 3}


def configure_jupyter(service, name: str, server_config: dict) -> None:
    """Settings for the Jupyter server of the session named ``name``, as its user would give them:
    ``~/.jupyter/jupyter_server_config.json`` in the session's home, written before it starts."""
    config = service.state_dir / "homes" / name / "home" / ".jupyter" / "jupyter_server_config.json"
    config.parent.mkdir(parents=True, exist_ok=True)
    config.write_text(json.dumps({"ServerApp": server_config}))


def hurry(notebook_file: Path) -> None:
    """Let the running cells of the notebook's folder print the rest of their lines at once."""
    (notebook_file.parent / HURRY).touch()


def end_kernels(playwright, session_id: str) -> None:
    """End every kernel of the session (through its Jupyter's own API, with the kiosk page's login)."""
    with kiosk_page(playwright, session_id) as page:
        page.evaluate(
            """async (url) => {
                const xsrf = (document.cookie.match(/(?:^|; )_xsrf=([^;]*)/) || [])[1] || "";
                const headers = {"X-XSRFToken": decodeURIComponent(xsrf)};
                for (const session of await (await fetch(url)).json()) {
                    await fetch(`${url}/${session.id}`, {method: "DELETE", headers, credentials: "same-origin"});
                }
            }""",
            f"{jupyter_base(page)}/api/sessions",
        )


@pytest.fixture(scope="module")
def shared_session(keepalive_service):
    """One session for the tests that leave it as it was (no fault, or a reload of the page)."""
    created = keepalive_service.start_session(name="outputs-shared")
    # first asked for inside a test's own fixture: not that test's to stop (see conftest's
    # _sessions_end_with_their_test); this fixture stops it
    keepalive_service.started.remove(created["id"])
    yield created
    keepalive_service.stop_session(created["id"])


@pytest.fixture
def session(keepalive_service, playwright, request):
    """The shared session for a test that neither kills nor changes it; else a session of its
    own: five kills of one session's browser within minutes would, rightly, make it give up as
    a crash loop. A test on the shared one leaves no kernel and no HURRY file behind."""
    params = request.node.callspec.params
    if params["fault"] in ("none", "reload", "reload-unreachable") and params["kind"] != "burst":
        created = request.getfixturevalue("shared_session")
        yield created
        end_kernels(playwright, created["id"])
        for leftover in keepalive_service.state_dir.glob(f"homes/{created['name']}/**/{HURRY}"):
            leftover.unlink()
        return
    name = f"outputs-{params['kind']}-{params['fault']}"
    if params["kind"] == "burst":
        configure_jupyter(keepalive_service, name, IOPUB_LIMIT)
    created = keepalive_service.start_session(name=name)
    yield created
    keepalive_service.stop_session(created["id"])


def open_alone_and_run_all(page, name: str, timeout_ms: float = 90_000) -> None:
    """Open ``name`` as the only notebook (``?reset``: a fresh workspace) and run all its cells."""
    page.goto(f"{jupyter_base(page)}/lab/tree/{name}?reset", wait_until="domcontentloaded", timeout=timeout_ms)
    page.locator(".jp-NotebookPanel:not(.lm-mod-hidden) .jp-Notebook").wait_for(timeout=timeout_ms)
    page.locator(".jp-StatusBar-Widget", has_text=re.compile(r"\| Idle")).first.wait_for(timeout=timeout_ms)
    page.get_by_role("menuitem", name="Run", exact=True).click()
    page.get_by_role("menuitem", name="Run All Cells", exact=True).click()


def kiosk_chromium(session_id: str):
    """The kiosk's main Chromium process: the one with the profile, not a ``--type=`` child.

    Chromium's own executable, not the CDP bridge, whose command line carries
    Chromium's; matching only the arguments picked whichever had the lowest pid, which after
    the kernel's pids wrap around was sometimes the browser and sometimes not.
    """
    for process in session_processes(session_id):
        argv = process.cmdline()
        if (
            argv
            and Path(argv[0]).name.startswith("chrom")
            and any(a.startswith("--user-data-dir=") for a in argv)
            and not any(a.startswith("--type=") for a in argv)
        ):
            return process
    raise AssertionError("no kiosk Chromium found")


def session_state(service, session_id: str) -> dict:
    response = service.client.get(f"/sessions/{session_id}")
    assert response.status_code == 200, response.text
    return response.json()


class Watch:
    """When each step of progress was first seen on screen and in the file."""

    def __init__(self, case: Case, notebook_file: Path):
        self.case = case
        self.notebook_file = notebook_file
        self.on_screen: dict[int, float] = {}
        self.in_file: dict[int, float] = {}

    def sample(self, page) -> int:
        now = time.monotonic()
        shown = self.case.shown(page)
        self.on_screen.setdefault(shown, now)
        notebook = saved_notebook(self.notebook_file)
        if notebook is not None:
            self.in_file.setdefault(self.case.saved(notebook), now)
        return shown

    def file_lag(self, since: float = 0.0) -> float:
        """At most how long a step (first shown after ``since``) was on screen before the file
        had it or a later one, in seconds."""
        lags = []
        for step, seen in self.on_screen.items():
            if seen < since:
                continue
            saved = [t for s, t in self.in_file.items() if s >= step]
            if saved:
                lags.append(max(0.0, min(saved) - seen))
        return max(lags, default=0.0)


def kiosk_xvfb(session_id: str):
    """The session's X server: Chromium's display, whose death takes the browser with it."""
    for process in session_processes(session_id):
        if process.name() == "Xvfb":
            return process
    raise AssertionError("no Xvfb found")


#: The requests a page makes for a kernel's execution record (keepalive_jupyter's handlers.py).
EXECUTIONS_REQUESTS = "**/api/keepalive/executions?*"


def reload_while_the_record_is_out_of_reach(page) -> None:
    """Reload the page while its Jupyter server will not give out the execution record (as if
    it answered an error for a moment), until the reloaded page has asked for it three times."""
    refused: list[str] = []

    def refuse(route) -> None:
        refused.append(route.request.url)
        route.fulfill(status=404, content_type="application/json", body='{"message": "No such kernel"}')

    page.route(EXECUTIONS_REQUESTS, refuse)
    page.reload(wait_until="domcontentloaded")
    # (the route's handler runs while Playwright is called: the pauses go through the page)
    wait_until("the reloaded page to ask for the record three times", lambda: len(refused) >= 3, timeout=90,
               pause=lambda seconds: page.wait_for_timeout(seconds * 1000))
    page.unroute(EXECUTIONS_REQUESTS)


#: Every case after a reload and after a Chromium crash; the whole display's death once; a reload
#: whose first looks at the record fail once.
FAULTS = ([(kind, fault) for fault in ("reload", "kill-chromium") for kind in CASES]
          + [("ticks", "kill-xvfb"), ("ticks", "reload-unreachable")])


@pytest.mark.parametrize(("kind", "fault"), FAULTS)
def test_running_cell_keeps_its_outputs(keepalive_service, session, playwright, kind, fault, request):
    case = CASES[kind]
    sid = session["id"]
    name = f"{kind}-{fault}.ipynb"
    with kiosk_page(playwright, sid) as page:
        put_notebook(page, name, case.cells)
        open_alone_and_run_all(page, name)
        notebook_file = wait_until(
            f"{name} on disk", lambda: next(iter(keepalive_service.state_dir.rglob(name)), None)
        )
        watch = Watch(case, notebook_file)
        wait_until("some output before the fault", lambda: watch.sample(page) >= 5, timeout=120, every=0.25)
        before = watch.sample(page)
        restarts = session_state(keepalive_service, sid)["restarts"]
        fault_at = time.monotonic()
        if fault == "reload":
            page.reload(wait_until="domcontentloaded")
        elif fault == "reload-unreachable":
            reload_while_the_record_is_out_of_reach(page)
        elif fault == "kill-xvfb":
            os.kill(kiosk_xvfb(sid).pid, signal.SIGKILL)
        else:
            os.kill(kiosk_chromium(sid).pid, signal.SIGKILL)

    if not fault.startswith("reload"):
        seen: dict = {}

        def recovered() -> bool:
            seen.update(session_state(keepalive_service, sid))
            return seen["restarts"] > restarts and seen["state"] == "ready"

        wait_until(
            "the service to recover the browser", recovered, timeout=120,
            describe=lambda: {key: seen.get(key) for key in ("state", "restarts", "error")},
        )

    with kiosk_page(playwright, sid) as page:
        # The notebook is open again (the saved workspace) and shows output newer than the fault.
        first_new = wait_until(
            "output newer than the fault",
            lambda: watch.sample(page) > before and time.monotonic(),
            timeout=120,
            every=0.1,
        )
        if not case.finished_early:
            # still running (the prompt may show the saved count for a moment, until re-attached)
            wait_until("the running prompt", lambda: prompt_text(page) == "[*]:", timeout=30, every=0.1,
                     describe=lambda: (prompt_text(page), cell_outputs(page)[-2:]))
            progress = watch.sample(page)
            wait_until("more output, live", lambda: watch.sample(page) > progress + 2, timeout=60, every=0.25)
            hurry(notebook_file)
        # (sampling on the way: the file's lag is measured against what the screen showed meanwhile)
        wait_until("the end of the run", lambda: (watch.sample(page), re.fullmatch(r"\[\d+\]:", prompt_text(page)))[1],
                 timeout=120, every=0.25)
        watch.sample(page)
        summary = case.check_final(page)
        # The file on disk follows within seconds.
        wait_until(
            "the file on disk to have the end",
            lambda: (watch.sample(page), (nb := saved_notebook(notebook_file)) is not None and case.saved_final(nb))[1],
            timeout=30, every=0.25,
        )
    print(
        f"\n[{kind}/{fault}] {summary}; {first_new - fault_at:.1f} s from the fault to the first new output "
        f"on screen; file on disk behind the screen by at most {watch.file_lag():.1f} s "
        f"(outage included), {watch.file_lag(since=first_new):.1f} s after recovery"
    )


INPUT_TICKS = 6
#: The file that lets the ``ask-later`` cell go on to ``input()`` (in the notebook's folder).
ASK_NOW = "ask-now"


def input_cell(ask_later: bool) -> str:
    """Ticks, then ``input()``; with ``ask_later`` the cell asks only once the test says so."""
    gate = f"while not os.path.exists('{ASK_NOW}'):\n    time.sleep(0.1)\n" if ask_later else ""
    return (
        "import os, time\n"
        f"for i in range({INPUT_TICKS}):\n"
        "    print(f'tick {i}', flush=True)\n"
        f"    time.sleep({PACE})\n"
        f"{gate}"
        "answer = input('Your name?')\n"
        "print(f'hello {answer}')\n"
    )


STDIN = ".jp-Stdin-input"


def kernel_connections(page) -> list[int]:
    """How many websockets each of the session's kernels has, as its Jupyter server says."""
    kernels = page.evaluate("async (url) => (await fetch(url)).json()", f"{jupyter_base(page)}/api/kernels")
    return [kernel["connections"] for kernel in kernels]


def pending_inputs(page) -> list:
    """The input requests the session's execution record holds, per kernel (keepalive_jupyter)."""
    return page.evaluate(
        """async (base) => {
            const pending = [];
            for (const kernel of await (await fetch(`${base}/api/kernels`)).json()) {
                const record = await (await fetch(`${base}/api/keepalive/executions?kernel_id=${kernel.id}`)).json();
                pending.push(record.executions.map(e => [e.state, e.input_request && e.input_request.prompt]));
            }
            return pending;
        }""",
        jupyter_base(page),
    )


@pytest.mark.parametrize("fault", ["reload", "kill-chromium", "kill-chromium-ask-later"])
@pytest.mark.parametrize("kind", ["input"])
def test_a_pending_input_is_asked_again_and_can_be_answered(keepalive_service, session, playwright, kind, fault):
    """(5) ``input()`` after a while. ``reload``: the page goes while the prompt is on screen.
    ``kill-chromium``: the browser dies before the kernel asks, so the request reaches the
    server while no page is connected. ``kill-chromium-ask-later``: the kernel asks only once
    the recovered page is connected (jupyter_server has closed the dead page's sockets by then,
    and the kernel addresses the request to that page's)."""
    sid = session["id"]
    name = f"{kind}-{fault}.ipynb"
    ask_later = fault.endswith("ask-later")
    with kiosk_page(playwright, sid) as page:
        put_notebook(page, name, [input_cell(ask_later)])
        open_alone_and_run_all(page, name)
        cell = page.locator(CELLS).first
        if fault == "reload":
            cell.locator(STDIN).wait_for(timeout=120_000)
            restarts = None
            page.reload(wait_until="domcontentloaded")
        else:
            wait_until("two ticks", lambda: len(numbers(r"^tick (\d+)$", "\n".join(cell_outputs(page)))) >= 2,
                     timeout=120, every=0.1)
            restarts = session_state(keepalive_service, sid)["restarts"]
            os.kill(kiosk_chromium(sid).pid, signal.SIGKILL)

    if restarts is not None:
        wait_until("the service to recover the browser",
                 lambda: (s := session_state(keepalive_service, sid))["restarts"] > restarts and s["state"] == "ready",
                 timeout=120)

    with kiosk_page(playwright, sid) as page:
        cell = page.locator(CELLS).first
        if ask_later:
            wait_until("the ticks re-attached", lambda: len(numbers(r"^tick (\d+)$", "\n".join(cell_outputs(page)))) == INPUT_TICKS,
                     timeout=120, every=0.25)
            wait_until("the recovered page's kernel websocket", lambda: kernel_connections(page) == [1], timeout=60,
                     describe=lambda: kernel_connections(page))
            assert cell.locator(STDIN).count() == 0  # not asked yet
            (next(keepalive_service.state_dir.rglob(name)).parent / ASK_NOW).touch()
        wait_until("the input box asked again", lambda: cell.locator(STDIN).count() == 1, timeout=120, every=0.1,
                   describe=lambda: {"outputs": cell_outputs(page), "prompt": prompt_text(page),
                                     "pending in the record": pending_inputs(page),
                                     "dialogs": page.locator(".jp-Dialog").all_inner_texts()})
        assert "Your name?" in cell.locator(".jp-Stdin-prompt").inner_text()
        assert prompt_text(page) == "[*]:"
        ticks = numbers(r"^tick (\d+)$", "\n".join(cell_outputs(page)))
        assert ticks == list(range(INPUT_TICKS)), ticks
        cell.locator(STDIN).fill("keepalive")
        cell.locator(STDIN).press("Enter")
        wait_until("the end of the run", lambda: re.fullmatch(r"\[\d+\]:", prompt_text(page)), timeout=60, every=0.25)
        text = "\n".join(cell_outputs(page))
        assert numbers(r"^tick (\d+)$", text) == list(range(INPUT_TICKS)), text
        assert text.count("Your name? keepalive") == 1, text
        assert text.count("hello keepalive") == 1, text
        # JupyterLab takes an answered box away half a second after the answer
        wait_until("the answered input box to go", lambda: cell.locator(STDIN).count() == 0, timeout=10,
                 describe=lambda: cell.locator(".jp-OutputArea-output").all_inner_texts())

        notebook_file = next(keepalive_service.state_dir.rglob(name))

        def saved_outputs() -> str:
            notebook = saved_notebook(notebook_file)
            return "" if notebook is None else "".join(output_text(o) for o in notebook["cells"][0]["outputs"])

        def saved_answer() -> bool:
            saved = saved_outputs()
            return "hello keepalive" in saved and numbers(r"^tick (\d+)$", saved) == list(range(INPUT_TICKS))

        wait_until("the answer and its output in the file on disk", saved_answer, timeout=30, every=0.25,
                 describe=lambda: {"file": saved_outputs(), "dialogs": page.locator(".jp-Dialog").all_inner_texts(),
                                   "dirty": page.locator(".jp-mod-dirty").count()})


TYPED_IN_CELL = "print('typed just before the crash')"
TYPED_NEW_CELL = "y = 'a new cell typed just before the crash'"


def editor_texts(page) -> list[str]:
    """The source of each cell, as its editor shows it."""
    return [t.replace("\u200b", "") for t in page.locator(CELLS).locator(".jp-InputArea-editor").all_inner_texts()]


def workspace_has(page, name: str) -> bool:
    """Whether JupyterLab has saved its workspace with ``name`` open (a recovered page reopens it)."""
    return name in page.evaluate(
        "async (url) => JSON.stringify(await (await fetch(url)).json())", f"{jupyter_base(page)}/lab/api/workspaces"
    )


def saved_sources(notebook_file: Path) -> list[str]:
    """The source of each cell, as the file on disk has it."""
    notebook = saved_notebook(notebook_file)
    return [] if notebook is None else ["".join(c["source"]) for c in notebook["cells"]]


def server_sources(page, name: str) -> set[str]:
    """The cell sources the session's Jupyter server would give a recovered page: its drafts of
    ``name`` (keepalive_jupyter/drafts.py) and the file's cells."""
    drafts = page.evaluate(
        "async (url) => (await (await fetch(url)).json()).cells || []",
        f"{jupyter_base(page)}/api/keepalive/drafts?path={name}",
    )
    # (a read that meets the server writing the file gets a 400, "Unreadable Notebook": jupyter_server
    # writes a notebook in place, after a backup copy; that look counts the drafts alone)
    saved = page.evaluate(
        "async (url) => { const r = await fetch(url); return r.ok ? (await r.json()).content.cells : []; }",
        f"{jupyter_base(page)}/api/contents/{name}?content=1",
    )
    return {d["source"] for d in drafts if "source" in d} | {"".join(c["source"]) for c in saved}


def jupyter_pid(service, session_id: str) -> int:
    """The session's Jupyter server, as the session's own record names it."""
    record = json.loads((service.state_dir / "sessions" / session_id / "session.json").read_text())
    return record["jupyter_pid"]


@pytest.mark.parametrize("fault", ["kill-chromium", "kill-jupyter"])
@pytest.mark.parametrize("kind", ["typing"])
def test_cells_typed_just_before_a_crash_survive_it(keepalive_service, session, playwright, kind, fault):
    """Text typed into a cell and into a new cell, then SIGKILL as soon as the text is on screen
    (a save may have caught the first keys, not the last) of the kiosk Chromium, or of the
    Jupyter server (the service starts a new one and reloads the kiosk page on it: the server's
    drafts come back from their file, and keys that never reached it are carried over from the
    page before the reload): the recovered page shows both, and the file on disk gets them."""
    sid = session["id"]
    name = f"{kind}-{fault}.ipynb"
    with kiosk_page(playwright, sid) as page:
        put_notebook(page, name, ["x = 1"])
        page.goto(f"{jupyter_base(page)}/lab/tree/{name}?reset", wait_until="domcontentloaded", timeout=90_000)
        page.locator(".jp-NotebookPanel:not(.lm-mod-hidden) .jp-Notebook").wait_for(timeout=90_000)
        page.locator(".jp-StatusBar-Widget", has_text=re.compile(r"\| Idle")).first.wait_for(timeout=90_000)
        wait_until("the workspace with the notebook open", lambda: workspace_has(page, name), timeout=30)
        notebook_file = next(keepalive_service.state_dir.rglob(name))
        expected = [f"x = 1\n{TYPED_IN_CELL}", TYPED_NEW_CELL]
        # found beforehand: nothing between the last key and the kill
        victim = jupyter_pid(keepalive_service, sid) if fault == "kill-jupyter" else kiosk_chromium(sid).pid
        restarts = session_state(keepalive_service, sid)["restarts"]

        first, new = page.locator(CELLS).nth(0), page.locator(CELLS).nth(1)
        first.locator(".cm-content").click()
        first.locator(".cm-focused").wait_for(timeout=10_000)
        page.keyboard.press("Control+End")
        page.keyboard.type(f"\n{TYPED_IN_CELL}")
        page.keyboard.press("Escape")
        page.keyboard.press("b")  # a new cell below, in command mode
        page.keyboard.press("Enter")
        new.locator(".cm-focused").wait_for(timeout=10_000)  # keys typed before that go nowhere
        page.keyboard.type(TYPED_NEW_CELL)
        # What the user sees when the browser dies: the text on screen (a DOM read, no save awaited).
        wait_until("the typed text on screen", lambda: editor_texts(page) == expected, timeout=10, every=0.02,
                 describe=lambda: editor_texts(page))
        on_screen_at = time.monotonic()
        looks: list[bool] = []  # whether the server had the typed text, at each look
        if fault == "kill-chromium":
            # Keys leave the page at once (a drafts request per change), yet not in no time: a
            # browser killed in between takes the last ones with it, and nothing could bring
            # them back. The kill comes as soon as the server has them, as a draft or saved.
            wait_until("the typed text with the server",
                       lambda: looks.append(set(expected) <= server_sources(page, name)) or looks[-1],
                       timeout=10, every=0.02, describe=lambda: server_sources(page, name))
        os.kill(victim, signal.SIGKILL)
    killed_at = time.monotonic()

    # (a steady save may have caught part of the typing, hardly the last keys)
    at_the_kill = saved_sources(notebook_file)

    seen: dict = {}

    def recovered() -> bool:
        seen.update(session_state(keepalive_service, sid))
        return seen["restarts"] > restarts and seen["state"] == "ready"

    wait_until("the service to recover the browser", recovered, timeout=120,
             describe=lambda: {key: seen.get(key) for key in ("state", "restarts", "error")})
    with kiosk_page(playwright, sid) as page:
        wait_until("the typed text back on screen", lambda: editor_texts(page) == expected, timeout=60, every=0.25,
                 describe=lambda: editor_texts(page))
        shown_after = time.monotonic() - killed_at
        wait_until("the typed text in the file on disk", lambda: saved_sources(notebook_file) == expected, timeout=30,
                   every=0.25, describe=lambda: saved_sources(notebook_file))
    print(f"\n[typing/{fault}] killed {killed_at - on_screen_at:.2f} s after the text showed; the server had "
          f"it at look {len(looks)} of the test's; "
          f"file at the kill: {at_the_kill}; typed text back on screen "
          f"{shown_after:.1f} s after the kill, on disk {time.monotonic() - killed_at:.1f} s after it")


# --- outputs over JupyterLab's own limits -------------------------------------------------------
#
# Each test also runs with no fault at all: the same checks then describe the page that never
# died, so that what a recovered page shows is held to what JupyterLab itself shows.

OVER_LIMIT_FAULTS = ["none", "reload", "kill-chromium"]


def fault_and_recover(service, playwright, sid: str, page, fault: str) -> None:
    """Reload the kiosk page, or SIGKILL its Chromium and wait for the service to recover it."""
    if fault == "none":
        return
    if fault == "reload":
        page.reload(wait_until="domcontentloaded")
        return
    restarts = session_state(service, sid)["restarts"]
    os.kill(kiosk_chromium(sid).pid, signal.SIGKILL)
    wait_until("the service to recover the browser",
             lambda: (s := session_state(service, sid))["restarts"] > restarts and s["state"] == "ready",
             timeout=120)


MANY = 80
#: JupyterLab's default ``maxNumberOutputs`` (notebook settings): the first 50 outputs are
#: rendered, then a "Show more outputs" button stands for the rest.
MAX_NUMBER_OUTPUTS = 50
TRIMMED = ".jp-TrimmedOutputs-button"


def items(texts: list[str]) -> list[int]:
    return numbers(r"^'item (\d+)'$", "\n".join(texts))


@pytest.mark.parametrize("fault", OVER_LIMIT_FAULTS)
@pytest.mark.parametrize("kind", ["many"])
def test_more_outputs_than_jupyterlab_shows(keepalive_service, session, playwright, kind, fault):
    """A cell that displays 80 separate outputs: after a reload or a browser crash mid-run the
    page shows what JupyterLab shows for it (the first 50, then "Show more outputs", which shows
    all 80, each once, in order), and the file on disk holds all 80."""
    sid = session["id"]
    name = f"{kind}-{fault}.ipynb"
    cell = (
        "import time\n"
        f"for i in range({MANY}):\n"
        "    display(f'item {i}')\n"
        f"    time.sleep({pace(0.25)})\n"
    )
    with kiosk_page(playwright, sid) as page:
        put_notebook(page, name, [cell])
        open_alone_and_run_all(page, name)
        at_fault = wait_until("a few outputs", lambda: (n := len(items(cell_outputs(page)))) >= 10 and n,
                              timeout=120, every=0.1)
        fault_and_recover(keepalive_service, playwright, sid, page, fault)
    with kiosk_page(playwright, sid) as page:
        wait_until("outputs newer than the fault", lambda: len(items(cell_outputs(page))) > at_fault, timeout=120,
                   every=0.1)
        hurry(next(keepalive_service.state_dir.rglob(name)))
        wait_until("the end of the run", lambda: re.fullmatch(r"\[\d+\]:", prompt_text(page)), timeout=120, every=0.25,
                 describe=lambda: (prompt_text(page), len(cell_outputs(page))))
        first = page.locator(CELLS).first
        shown = items(cell_outputs(page))
        assert shown == list(range(MAX_NUMBER_OUTPUTS)), shown
        assert first.locator(TRIMMED).count() == 1
        first.locator(TRIMMED).click()
        wait_until("every output after 'Show more outputs'", lambda: len(items(cell_outputs(page))) >= MANY, timeout=30,
                 describe=lambda: items(cell_outputs(page)))
        assert items(cell_outputs(page)) == list(range(MANY))
        assert first.locator(TRIMMED).count() == 0
    notebook_file = next(keepalive_service.state_dir.rglob(name))

    def saved_items() -> list[int]:
        notebook = saved_notebook(notebook_file)
        outputs = notebook["cells"][0]["outputs"] if notebook else []
        assert all(o["output_type"] == "display_data" for o in outputs), outputs
        return items([output_text(o) for o in outputs])

    wait_until("every output in the file on disk", lambda: saved_items() == list(range(MANY)), timeout=30, every=0.25,
             describe=saved_items)
    print(f"\n[many/{fault}] outputs sent {MANY}; shown {MAX_NUMBER_OUTPUTS} and 'Show more outputs', then "
          f"{MANY} (each once, in order); in the file {MANY}")


#: The burst: lines at a steady 250 a second (2.5 times IOPUB_LIMIT) for 3 s. Not as fast as
#: the kernel can: the server counts a message when it handles it, and a burst faster than the
#: server handles it leaves a backlog, with the ticks after it queued behind; on a slow machine
#: they then all came at once, still over the limit, and none was shown.
BURST = 750
BURST_PAUSE = 0.004
TICKS_BEFORE, TICKS_AFTER = 8, 16
RATE_NOTICE = "IOPub message rate exceeded"


def burst_lines(text: str) -> list[tuple[int, int]]:
    """The numbered lines of the burst cell, as (phase, number) in the order the kernel sent
    them: phase 0 the ticks before the burst, 1 the burst, 2 the ticks after."""
    lines = []
    for kind, number in re.findall(r"^(tick|burst) (\d+)$", text, re.M):
        n = int(number)
        lines.append((1, n) if kind == "burst" else (0 if n < TICKS_BEFORE else 2, n))
    return lines


@pytest.mark.parametrize("fault", OVER_LIMIT_FAULTS)
@pytest.mark.parametrize("kind", ["burst"])
def test_a_burst_over_the_iopub_rate_limit(keepalive_service, session, playwright, kind, fault):
    """A cell prints numbered ticks, then bursts 750 lines at 250 a second (over the session's
    IOPub rate limit, set to 100 messages/s over 3 s: IOPUB_LIMIT), then ticks on. The fault hits
    just before the burst. A page that never died shows the ticks, part of the burst and the
    server's "IOPub message rate exceeded" notice, then the ticks again once the rate is back
    under the limit; a recovered page must show the same, each line at most once and in order,
    and the file on disk what the page shows."""
    sid = session["id"]
    name = f"{kind}-{fault}.ipynb"
    cell = (
        "import time\n"
        f"for i in range({TICKS_BEFORE}):\n"
        "    print(f'tick {i}', flush=True)\n"
        "    time.sleep(0.5)\n"
        f"for j in range({BURST}):\n"
        "    print(f'burst {j}', flush=True)\n"
        f"    time.sleep({BURST_PAUSE})\n"
        f"for i in range({TICKS_BEFORE}, {TICKS_BEFORE + TICKS_AFTER}):\n"
        "    print(f'tick {i}', flush=True)\n"
        "    time.sleep(0.5)\n"
    )
    with kiosk_page(playwright, sid) as page:
        put_notebook(page, name, [cell])
        open_alone_and_run_all(page, name)
        wait_until("ticks before the burst", lambda: (0, TICKS_BEFORE - 2) in burst_lines("\n".join(cell_outputs(page))),
                 timeout=120, every=0.1)
        fault_and_recover(keepalive_service, playwright, sid, page, fault)
    with kiosk_page(playwright, sid) as page:
        wait_until("the end of the run", lambda: re.fullmatch(r"\[\d+\]:", prompt_text(page)), timeout=180, every=0.25,
                 describe=lambda: (prompt_text(page), [t[-200:] for t in cell_outputs(page)]))
        text = "\n".join(cell_outputs(page))
    lines = burst_lines(text)
    assert lines == sorted(set(lines)), "a line shown twice or out of order"
    burst = [n for phase, n in lines if phase == 1]
    after = [n for phase, n in lines if phase == 2]
    assert [n for phase, n in lines if phase == 0] == list(range(TICKS_BEFORE))
    assert RATE_NOTICE in text
    assert f"iopub_msg_rate_limit={IOPUB_LIMIT['iopub_msg_rate_limit']:.1f}" in text, "the session's own limit held"
    assert 0 < len(burst) < BURST, len(burst)  # the limit held part of the burst back
    # Once the limit's window (3 s) has passed after the burst, every tick is sent again: from
    # 6 s after it on (room for a server some way behind the kernel).
    settled = TICKS_BEFORE + 12
    assert [n for n in after if n >= settled] == list(range(settled, TICKS_BEFORE + TICKS_AFTER)), after
    notebook_file = next(keepalive_service.state_dir.rglob(name))

    def saved_text() -> str:
        notebook = saved_notebook(notebook_file)
        return "".join(output_text(o) for o in notebook["cells"][0]["outputs"]) if notebook else ""

    def difference() -> dict:
        """How the file differs from the page: which lines, and the file's outputs around them."""
        saved = burst_lines(saved_text())
        missing, extra = [n for n in lines if n not in set(saved)], [n for n in saved if n not in set(lines)]
        notebook = saved_notebook(notebook_file)
        outputs = [repr(output_text(o))[-160:] for o in notebook["cells"][0]["outputs"]] if notebook else []
        return {"file": len(saved), "page": len(lines), "missing": missing[:5], "extra": extra[:5],
                "the file's outputs (ends)": outputs}

    wait_until("the file on disk to hold what the page shows", lambda: burst_lines(saved_text()) == lines, timeout=30,
             every=0.25, describe=difference)
    assert saved_text().count(RATE_NOTICE) == text.count(RATE_NOTICE)
    print(f"\n[burst/{fault}] burst lines sent {BURST}, shown {len(burst)} (first {burst[0]}, last {burst[-1]}), "
          f"{text.count(RATE_NOTICE)} rate notice(s); ticks sent {TICKS_BEFORE + TICKS_AFTER}, shown "
          f"{TICKS_BEFORE + len(after)}; the file holds the same lines")
