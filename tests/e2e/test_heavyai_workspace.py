"""End to end: a real JupyterLab server + Chromium open `lab?heavyai&reset`.

The server is started the way keepalive's session engine starts it: `python -m jupyterlab`
from this environment, HEAVYAI_* in its environment, the session file given on the command
line, and nothing else: the server and lab extensions must be found because they are installed.
"""

from __future__ import annotations

import ast
import json
import os
import secrets
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import pytest
from playwright.sync_api import Page, expect

pytestmark = pytest.mark.e2e

NOTEBOOK = "HeavyAI.ipynb"
UI_TIMEOUT_MS = 60_000


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class LabServer:
    url: str
    token: str
    root: Path
    session_file: Path

    def lab(self, query: str = "heavyai&reset") -> str:
        return f"{self.url}/lab?{query}&token={self.token}"

    def notebook(self) -> dict:
        return json.loads((self.root / NOTEBOOK).read_text())

    def notebooks(self) -> list[str]:
        return sorted(p.name for p in self.root.glob("*.ipynb"))


def _start_lab(tmp: Path, env_extra: dict[str, str]):
    root = tmp / "root"
    root.mkdir()
    session_file = tmp / "heavyai-session.json"
    token = secrets.token_hex(16)
    port = _free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HEAVYAI_", "JUPYTER_"))}
    env.update(
        {
            "JUPYTER_CONFIG_DIR": str(tmp / "config"),
            "JUPYTER_DATA_DIR": str(tmp / "data"),
            "JUPYTER_RUNTIME_DIR": str(tmp / "runtime"),
            "IPYTHONDIR": str(tmp / "ipython"),
            **env_extra,
        }
    )
    log = open(tmp / "jupyter.log", "wb")
    proc = subprocess.Popen(
        [
            sys.executable, "-m", "jupyterlab", "--no-browser", "--ip=127.0.0.1",
            f"--port={port}", "--allow-root", f"--ServerApp.root_dir={root}",
            f"--IdentityProvider.token={token}",
            f"--HeavyAISessionManager.session_file={session_file}",
        ],
        env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 120
    while True:
        if proc.poll() is not None:
            log.close()
            raise RuntimeError(f"jupyter lab exited {proc.returncode}:\n{(tmp / 'jupyter.log').read_text()}")
        try:
            req = urllib.request.Request(f"{url}/api/status", headers={"Authorization": f"token {token}"})
            with urllib.request.urlopen(req, timeout=5) as r:
                if r.status == 200:
                    break
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            pass
        if time.monotonic() > deadline:
            proc.kill()
            raise RuntimeError("jupyter lab did not answer within 120 s")
        time.sleep(0.2)
    return proc, log, LabServer(url=url, token=token, root=root, session_file=session_file)


def _stop(proc, log):
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    log.close()


DEFAULT_ENV = {"HEAVYAI_PROTOCOL": "https", "HEAVYAI_HOST": "db.example", "HEAVYAI_PORT": "6278"}


@pytest.fixture
def heavyai_env():
    return dict(DEFAULT_ENV)


@pytest.fixture
def lab(tmp_path, heavyai_env):
    proc, log, server = _start_lab(tmp_path, heavyai_env)
    try:
        yield server
    finally:
        _stop(proc, log)
        log_text = (tmp_path / "jupyter.log").read_text(errors="replace")
        # The session ID travels only in the authenticated answer, never into the log.
        for sid in getattr(server, "secrets_written", []):
            assert sid not in log_text, "a session ID was logged"


def write_session(server: LabServer, session: str, query: str = "") -> None:
    server.session_file.write_text(json.dumps({"session": session, "query": query}))
    server.session_file.chmod(0o600)
    server.__dict__.setdefault("secrets_written", []).append(session)


def cell_editors(page: Page):
    return page.locator(".jp-NotebookPanel:not(.lm-mod-hidden) .jp-Cell .jp-InputArea-editor .cm-content")


def open_heavyai(page: Page, url: str) -> None:
    page.goto(url)
    expect(page.locator("#jp-main-dock-panel")).to_be_visible(timeout=UI_TIMEOUT_MS)


def heavyai_tabs(page: Page):
    return page.locator("#jp-main-dock-panel .lm-TabBar-tab", has_text=NOTEBOOK)


def parse_connection_cell(source: str) -> dict[str, str]:
    """The keyword arguments of heavyai.connect(...) in a cell, as source text."""
    tree = ast.parse(source)
    calls = [
        node for node in ast.walk(tree)
        if isinstance(node, ast.Call) and ast.unparse(node.func) == "heavyai.connect"
    ]
    assert len(calls) == 1, source
    return {kw.arg: ast.unparse(kw.value) for kw in calls[0].keywords}


# --- the workspace --------------------------------------------------------------------------


def test_workspace_connects_with_session_from_file(lab: LabServer, page: Page):
    first, second = "1f0e9a8b7c6d5e4f3a2b1c0d9e8f7a6b", "22aa33bb44cc55dd66ee77ff88009911"
    write_session(lab, first)
    open_heavyai(page, lab.lab())

    editors = cell_editors(page)
    expect(editors.first).to_contain_text(f'sessionid="{first}"', timeout=UI_TIMEOUT_MS)
    expect(editors.first).to_contain_text("heavyai.connect(")
    expect(editors).to_have_count(1)  # no query: the connection cell only

    # What the browser shows is the file's first cell: connection from the environment.
    source = "".join(lab.notebook()["cells"][0]["source"])
    assert parse_connection_cell(source) == {
        "sessionid": repr(first),
        "protocol": "os.environ['HEAVYAI_PROTOCOL']",
        "host": "os.environ['HEAVYAI_HOST']",
        "port": "int(os.environ['HEAVYAI_PORT'])",
    }
    for literal in DEFAULT_ENV.values():
        assert literal not in source, "connection values must come from the environment"

    # The status bar shows the connection, never the ID.
    status = page.locator(".jp-HeavyAIStatus")
    expect(status).to_have_text("HeavyAI: https://db.example:6278 · session ✓")

    # A new session is handed over: reloading uses it, in the same notebook.
    write_session(lab, second)
    page.reload()
    expect(cell_editors(page).first).to_contain_text(f'sessionid="{second}"', timeout=UI_TIMEOUT_MS)
    expect(cell_editors(page).first).not_to_contain_text(first)
    expect(heavyai_tabs(page)).to_have_count(1)

    # And once more through the full URL (reset clears the workspace, the file is reused).
    open_heavyai(page, lab.lab())
    expect(cell_editors(page).first).to_contain_text(f'sessionid="{second}"', timeout=UI_TIMEOUT_MS)
    expect(heavyai_tabs(page)).to_have_count(1)
    assert lab.notebooks() == [NOTEBOOK]
    assert second in "".join(lab.notebook()["cells"][0]["source"])


QUERY = 'SELECT "name", \'it\'\'s\' AS s, \'C:\\path\\n\' FROM "t"\nWHERE x LIKE \'%"""%\'\n  AND y = \'\'\'\' -- end\\'


def test_query_cell_is_valid_python(lab: LabServer, page: Page):
    write_session(lab, "0123456789abcdef0123456789abcdef", QUERY)
    open_heavyai(page, lab.lab())
    editors = cell_editors(page)
    expect(editors).to_have_count(2, timeout=UI_TIMEOUT_MS)
    expect(editors.nth(1)).to_contain_text("query = ")

    cells = lab.notebook()["cells"]
    assert [c["metadata"]["keepalive_heavyai"] for c in cells] == ["connect", "query"]
    tree = ast.parse("".join(cells[1]["source"]))
    assign = tree.body[0]
    assert isinstance(assign, ast.Assign) and ast.unparse(assign.targets[0]) == "query"
    assert ast.literal_eval(assign.value) == QUERY
    # The editor shows the same source the file holds (line by line).
    shown = editors.nth(1).inner_text()
    assert shown.splitlines()[0] == "".join(cells[1]["source"]).splitlines()[0]


def test_user_cells_survive_a_new_session(lab: LabServer, page: Page):
    write_session(lab, "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa", "SELECT 1")
    open_heavyai(page, lab.lab())
    expect(cell_editors(page)).to_have_count(2, timeout=UI_TIMEOUT_MS)

    # The user adds a cell of their own, and saves.
    nb = lab.notebook()
    nb["cells"].append({"cell_type": "markdown", "id": "mine", "metadata": {}, "source": "my notes"})
    (lab.root / NOTEBOOK).write_text(json.dumps(nb))

    write_session(lab, "bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb")  # no query this time
    open_heavyai(page, lab.lab())
    expect(cell_editors(page).first).to_contain_text("bbbbbbbb", timeout=UI_TIMEOUT_MS)
    cells = lab.notebook()["cells"]
    assert [c["cell_type"] for c in cells] == ["code", "markdown"]
    assert "".join(cells[1]["source"]) == "my notes"
    assert lab.notebooks() == [NOTEBOOK]


# --- degraded cases: plain JupyterLab, a clear notification ----------------------------------


@pytest.mark.parametrize("heavyai_env", [{}])  # what the engine does without a heavyai body
def test_no_session_shows_notification(lab: LabServer, page: Page):
    assert not lab.session_file.exists()
    open_heavyai(page, lab.lab())
    toast = page.locator(".Toastify__toast", has_text="HeavyAI session:")
    expect(toast).to_contain_text("No HeavyAI session: the session file does not exist", timeout=UI_TIMEOUT_MS)
    # The whole server message, with the file and the setting, is one click away.
    toast.get_by_role("button", name="Details").click()
    dialog = page.locator(".jp-Dialog")
    expect(dialog).to_contain_text(str(lab.session_file))
    expect(dialog).to_contain_text("c.HeavyAISessionManager.session_file")
    page.keyboard.press("Escape")
    expect(dialog).to_have_count(0)
    expect(page.locator(".jp-HeavyAIStatus")).to_have_text("HeavyAI: no session")
    expect(page.locator("body")).not_to_contain_text("undefined")
    assert lab.notebooks() == []
    # JupyterLab itself works: the launcher can open a notebook.
    expect(page.locator(".jp-Launcher")).to_be_visible()


def test_malformed_session_shows_server_message(lab: LabServer, page: Page):
    lab.session_file.write_text('{"session": ')
    open_heavyai(page, lab.lab())
    toast = page.locator(".Toastify__toast", has_text="HeavyAI session:")
    expect(toast).to_contain_text("is not valid JSON", timeout=UI_TIMEOUT_MS)
    assert lab.notebooks() == []


def test_plain_lab_is_untouched(lab: LabServer, page: Page):
    write_session(lab, "cccccccccccccccccccccccccccccccc")
    open_heavyai(page, lab.lab("reset"))
    expect(page.locator(".jp-Launcher")).to_be_visible(timeout=UI_TIMEOUT_MS)
    expect(page.locator(".jp-HeavyAIStatus")).to_have_count(0)
    assert lab.notebooks() == []
