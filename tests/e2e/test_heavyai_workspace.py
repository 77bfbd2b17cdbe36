"""End to end: a real JupyterLab server + Chromium open `lab?heavyai&reset`.

The server is a plain one, as a user's own would be: `python -m jupyterlab` (keepalive's sessions
start theirs as `python -m keepalive_jupyter.lean_jupyterlab`, which every session test runs)
from the Jupyter environment (``.venv-jupyter``), HEAVYAI_* in its environment, the session file given on the command
line, and nothing else: the server and lab extensions must be found because they are installed.
"""

from __future__ import annotations

import ast
import json
import os
import secrets
import socket
import subprocess
import threading
from http.server import HTTPServer
from dataclasses import dataclass
from pathlib import Path

import pytest
from playwright.sync_api import Page, expect

from keepalive.settings import default_jupyter_python
from tests.conftest import answers
from tests.jupyter_port import ANY_PORT, served_url
from tests.waiting import wait_until

pytestmark = pytest.mark.e2e

NOTEBOOK = "HeavyAI.ipynb"
UI_TIMEOUT_MS = 60_000


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
        # not ".~NAME": jupyter_server's copy of a file while a save of it is under way
        return sorted(p.name for p in self.root.glob("*.ipynb") if not p.name.startswith(".~"))


def _start_lab(tmp: Path, env_extra: dict[str, str]):
    root = tmp / "root"
    root.mkdir()
    session_file = tmp / "heavyai-session.json"
    token = secrets.token_hex(16)
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
            str(default_jupyter_python()), "-m", "jupyterlab", "--no-browser", "--ip=127.0.0.1",
            *ANY_PORT, "--allow-root", f"--ServerApp.root_dir={root}",
            f"--IdentityProvider.token={token}",
            f"--HeavyAISessionManager.session_file={session_file}",
        ],
        env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
    )
    try:
        url = served_url(tmp / "runtime", proc, describe=(tmp / "jupyter.log").read_text)
        wait_until("jupyter lab to answer", lambda: answers(f"{url}/api/status", Authorization=f"token {token}"),
                   timeout=120, every=0.1, describe=(tmp / "jupyter.log").read_text, process=proc)
    except AssertionError:
        proc.kill()
        log.close()
        raise
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
def lab_factory(tmp_path):
    """Start JupyterLab servers (each in its own folder) and always stop them."""
    started = []

    def start(env: dict[str, str]) -> LabServer:
        folder = tmp_path / f"lab{len(started)}"
        folder.mkdir()
        proc, log, server = _start_lab(folder, env)
        started.append((proc, log, server, folder))
        return server

    yield start
    for proc, log, server, folder in started:
        _stop(proc, log)
        log_text = (folder / "jupyter.log").read_text(errors="replace")
        # The session ID travels only in the authenticated answer, never into the log.
        for sid in server.__dict__.get("secrets_written", []):
            assert sid not in log_text, "a session ID was logged"


@pytest.fixture
def lab(lab_factory, heavyai_env):
    return lab_factory(heavyai_env)


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

    # A new session is handed over: Immerse opens lab?heavyai again, and the same notebook
    # uses it. (Not page.reload(): that reloads whatever URL JupyterLab left, and JupyterLab
    # drops the query when it puts the notebook's path in the URL, at a moment of its own; a
    # reload after that is a plain JupyterLab, seen once in a run of the suite.)
    write_session(lab, second)
    page.goto(lab.lab("heavyai"))
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


@pytest.mark.parametrize("heavyai_env", [{"HEAVYAI_PROTOCOL": "binary", "HEAVYAI_PORT": "6274"}])
def test_unset_host_is_reported_not_guessed(lab: LabServer, page: Page):
    write_session(lab, "dddddddddddddddddddddddddddddddd")
    open_heavyai(page, lab.lab())
    first = cell_editors(page).first
    expect(first).to_contain_text("# HEAVYAI_HOST is not set", timeout=UI_TIMEOUT_MS)
    toast = page.locator(".Toastify__toast", has_text="HeavyAI session:")
    expect(toast).to_contain_text("HEAVYAI_HOST not set")
    expect(page.locator(".jp-HeavyAIStatus")).to_have_text("HeavyAI: binary://?:6274 · session ✓")
    source = "".join(lab.notebook()["cells"][0]["source"])
    assert "host" not in parse_connection_cell(source)


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


# --- against a HeavyDB stand-in that speaks HeavyDB's Thrift protocol -------------------------


class HeavyDBStandIn:
    """Handler for heavydb.thrift.Heavy (pyheavydb's generated service): records sessions."""

    def __init__(self, valid_session: str):
        self.valid_session = valid_session
        self.sessions_seen: list[str] = []

    def get_tables(self, session):
        from heavydb.thrift.ttypes import TDBException

        self.sessions_seen.append(session)
        if session != self.valid_session:
            raise TDBException(error_msg="Session not valid.")
        return ["flights"]

    def get_version(self):
        return "8.0.0-standin"


class ThriftStandIn:
    """A HeavyDB stand-in on a free loopback port, binary (TCP) or http (TJSONProtocol)."""

    def __init__(self, protocol: str, handler: HeavyDBStandIn):
        from heavydb.thrift import Heavy

        self.protocol = protocol
        self.handler = handler
        self.processor = Heavy.Processor(handler)
        self._stop = threading.Event()
        if protocol == "binary":
            self.sock = socket.create_server(("127.0.0.1", 0))
            self.sock.settimeout(0.2)
            self.port = self.sock.getsockname()[1]
            self.thread = threading.Thread(target=self._serve_binary, daemon=True)
        else:
            from thrift.protocol import TJSONProtocol
            from thrift.server.THttpServer import THttpServer

            self.http = THttpServer(
                self.processor, ("127.0.0.1", 0), TJSONProtocol.TJSONProtocolFactory(),
                server_class=HTTPServer,
            )
            self.port = self.http.httpd.server_address[1]
            self.thread = threading.Thread(target=self.http.serve, daemon=True)
        self.thread.start()

    def _serve_binary(self):
        while not self._stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except (TimeoutError, OSError):
                continue
            threading.Thread(target=self._handle, args=(conn,), daemon=True).start()

    def _handle(self, conn):
        from thrift.protocol import TBinaryProtocol
        from thrift.transport import TSocket, TTransport

        conn.settimeout(None)
        sock = TSocket.TSocket()
        sock.setHandle(conn)
        transport = TTransport.TBufferedTransport(sock)
        protocol = TBinaryProtocol.TBinaryProtocol(transport)
        try:
            while True:
                self.processor.process(protocol, protocol)
        except (TTransport.TTransportException, EOFError, OSError):
            pass
        finally:
            transport.close()

    def stop(self):
        self._stop.set()
        if self.protocol == "binary":
            self.sock.close()
        else:
            self.http.httpd.shutdown()
            self.http.httpd.server_close()
        self.thread.join(timeout=10)


@pytest.fixture
def standin_factory():
    started = []

    def start(protocol: str, handler: HeavyDBStandIn) -> ThriftStandIn:
        server = ThriftStandIn(protocol, handler)
        started.append(server)
        return server

    yield start
    for server in started:
        server.stop()


@pytest.mark.parametrize("protocol", ["binary", "http"])
def test_connection_cell_reaches_heavydb_with_session(lab_factory, standin_factory, page: Page, protocol):
    session_id = "5e55104d0000000000000000c0ffee01"
    handler = HeavyDBStandIn(valid_session=session_id)
    db = standin_factory(protocol, handler)
    lab = lab_factory(
        {"HEAVYAI_PROTOCOL": protocol, "HEAVYAI_HOST": "127.0.0.1", "HEAVYAI_PORT": str(db.port)}
    )
    write_session(lab, session_id, "SELECT carrier FROM flights")
    open_heavyai(page, lab.lab())
    first = cell_editors(page).first
    expect(first).to_contain_text(f'sessionid="{session_id}"', timeout=UI_TIMEOUT_MS)

    # Run the connection cell in the notebook's kernel (this environment's Python), once the
    # kernel is up: a cell run before that is silently not executed.
    expect(page.locator(".jp-StatusBar-Widget", has_text="| Idle").first).to_be_visible(
        timeout=UI_TIMEOUT_MS * 2
    )
    first.click()
    page.keyboard.press("Shift+Enter")
    output = page.locator(".jp-NotebookPanel:not(.lm-mod-hidden) .jp-Cell").first.locator(".jp-OutputArea-output")
    expect(output).to_contain_text("Connection(heavydb://", timeout=UI_TIMEOUT_MS * 2)
    expect(output).to_contain_text(f"127.0.0.1:{db.port}")
    # The stand-in saw the handed-over session: heavyai validated it with get_tables.
    assert handler.sessions_seen == [session_id]


def test_an_omnisci_era_deployment_opens_the_same_workspace(lab_factory, page: Page):
    """`lab?omnisci&reset` and OMNISCI_* variables, as the OmniSci documents set them up."""
    server = lab_factory({"OMNISCI_PROTOCOL": "binary", "OMNISCI_HOST": "omnisci.example", "OMNISCI_PORT": "6274"})
    session = "0a1b2c3d4e5f60718293a4b5c6d7e8f9"
    write_session(server, session)
    open_heavyai(page, server.lab("omnisci&reset"))
    expect(cell_editors(page).first).to_contain_text(f'sessionid="{session}"', timeout=UI_TIMEOUT_MS)
    expect(heavyai_tabs(page)).to_have_count(1)
    source = "".join(server.notebook()["cells"][0]["source"])
    # the kernel reads the variables that are really set
    assert parse_connection_cell(source) == {
        "sessionid": repr(session),
        "protocol": "os.environ['OMNISCI_PROTOCOL']",
        "host": "os.environ['OMNISCI_HOST']",
        "port": "int(os.environ['OMNISCI_PORT'])",
    }
    expect(page.locator(".jp-HeavyAIStatus")).to_have_text("HeavyAI: binary://omnisci.example:6274 · session ✓")
