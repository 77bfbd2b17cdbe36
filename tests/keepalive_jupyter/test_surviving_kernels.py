"""Kernels outlive their Jupyter server, and the next server takes them back under their ids.

Real servers of the sessions' environment (``.venv-jupyter``) with keepalive's kernel manager, as
keepalive's Jupyter command configures them; real kernels. A server is ended the hard way
(SIGKILL) or the polite one (SIGTERM, its own shutdown); a new server on the same runtime dir
must then list the same kernel, with its variables, its pid, and the notebook's session.
"""

from __future__ import annotations

import json
import os
import secrets
import signal
import subprocess
import uuid
from pathlib import Path

import httpx
import pytest
from websockets.sync.client import connect

from keepalive.settings import default_jupyter_python
from keepalive_jupyter.surviving_kernels import BOOK_NAME, ForeignProcess
from tests.jupyter_port import ANY_PORT, served_url
from tests.waiting import wait_until

JUPYTER_PYTHON = default_jupyter_python()


class Server:
    """One Jupyter server of the sessions' environment on a runtime dir (kept across servers)."""

    def __init__(self, root: Path, runtime: Path, token: str) -> None:
        self.token = token
        env = {k: v for k, v in os.environ.items() if not k.startswith(("JUPYTER_", "JPY_"))}
        env.update(JUPYTER_TOKEN=token, JUPYTER_RUNTIME_DIR=str(runtime), JUPYTER_CONFIG_DIR=str(root / "config"))
        self.log = root / f"server-{uuid.uuid4().hex[:8]}.log"
        self.process = subprocess.Popen(
            [str(JUPYTER_PYTHON), "-m", "jupyter_server", "--no-browser", "--ip=127.0.0.1",
             *ANY_PORT, "--allow-root", f"--ServerApp.root_dir={root / 'notebooks'}",
             "--ServerApp.kernel_manager_class=keepalive_jupyter.surviving_kernels.SurvivingKernelManager",
             f"--SessionManager.database_filepath={runtime / 'sessions.db'}"],
            env=env, stdout=self.log.open("ab"), stderr=subprocess.STDOUT, start_new_session=True,
        )
        self.url = served_url(runtime, self.process, describe=self._log_tail, timeout=60)
        wait_until("the server to answer", self._answers, timeout=60, process=self.process, describe=self._log_tail)

    def _log_tail(self) -> str:
        return self.log.read_text()[-2000:]

    def _answers(self) -> bool:
        try:
            return self.get("/api/status").status_code == 200
        except httpx.HTTPError:
            return False

    def get(self, path: str) -> httpx.Response:
        return httpx.get(self.url + path, headers={"Authorization": f"token {self.token}"}, timeout=10)

    def post(self, path: str, body: dict | None = None) -> httpx.Response:
        return httpx.post(self.url + path, json=body or {}, headers={"Authorization": f"token {self.token}"},
                          timeout=60)

    def run(self, kernel_id: str, code: str, timeout: float = 30) -> str:
        """Run ``code`` on the kernel through this server's websocket; what it printed."""
        ws_url = f"ws{self.url.removeprefix('http')}/api/kernels/{kernel_id}/channels"
        msg_id = uuid.uuid4().hex
        request = {
            "header": {"msg_id": msg_id, "msg_type": "execute_request", "session": uuid.uuid4().hex,
                       "username": "test", "version": "5.3", "date": ""},
            "parent_header": {}, "metadata": {}, "channel": "shell", "buffers": [],
            "content": {"code": code, "silent": False, "store_history": True, "user_expressions": {},
                        "allow_stdin": False, "stop_on_error": True},
        }
        printed = []
        with connect(ws_url, additional_headers={"Authorization": f"token {self.token}"},
                     open_timeout=timeout) as websocket:
            websocket.send(json.dumps(request))
            while True:
                message = json.loads(websocket.recv(timeout=timeout))
                if message.get("parent_header", {}).get("msg_id") != msg_id:
                    continue
                kind = message["header"]["msg_type"]
                if kind == "stream":
                    printed.append(message["content"]["text"])
                elif kind == "error":
                    raise AssertionError("\n".join(message["content"]["traceback"]))
                elif kind == "status" and message["content"]["execution_state"] == "idle":
                    return "".join(printed)

    def end(self, signum: int) -> None:
        if self.process.poll() is None:
            os.kill(self.process.pid, signum)
        self.process.wait(timeout=30)


@pytest.fixture
def servers(tmp_path):
    """Start servers on one runtime dir; every server and kernel is gone afterwards."""
    (tmp_path / "notebooks").mkdir()
    runtime = tmp_path / "runtime"
    token = secrets.token_urlsafe(16)
    started: list[Server] = []

    def start() -> Server:
        server = Server(tmp_path, runtime, token)
        started.append(server)
        return server

    start.runtime = runtime
    yield start
    for server in started:
        server.end(signal.SIGKILL)
    book = runtime / BOOK_NAME
    if book.exists():
        for entry in json.loads(book.read_text()).values():
            try:
                os.killpg(entry["pid"], signal.SIGKILL)
            except ProcessLookupError:
                pass


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def _notebook_session(server: Server) -> tuple[str, int]:
    """A notebook's session with a kernel; returns its kernel id and the kernel's pid."""
    response = server.post("/api/sessions", {"path": "a.ipynb", "type": "notebook", "name": "a.ipynb",
                                             "kernel": {"name": "python3"}})
    assert response.status_code == 201, response.text
    kernel_id = response.json()["kernel"]["id"]
    pid = int(server.run(kernel_id, "import os; print(os.getpid())"))
    return kernel_id, pid


@pytest.mark.parametrize("how", ["SIGKILL", "SIGTERM"])
def test_a_kernel_outlives_its_server_and_the_next_one_takes_it_back(servers, how):
    first = servers()
    kernel_id, pid = _notebook_session(first)
    first.run(kernel_id, "x = 41")

    first.end(getattr(signal, how))
    assert _alive(pid), f"the kernel died with a server ended by {how}"

    second = servers()
    assert [k["id"] for k in second.get("/api/kernels").json()] == [kernel_id]
    sessions = second.get("/api/sessions").json()
    assert [(s["path"], s["kernel"]["id"]) for s in sessions] == [("a.ipynb", kernel_id)]
    assert second.run(kernel_id, "print(x + 1, os.getpid())").split() == ["42", str(pid)]


def test_an_adopted_kernel_can_be_restarted_and_shut_down(servers):
    first = servers()
    kernel_id, pid = _notebook_session(first)
    first.end(signal.SIGKILL)
    second = servers()

    assert second.post(f"/api/kernels/{kernel_id}/restart").status_code == 200
    wait_until("the old kernel process to end", lambda: not _alive(pid))
    new_pid = int(second.run(kernel_id, "import os; print(os.getpid())"))
    assert new_pid != pid
    book = json.loads((servers.runtime / BOOK_NAME).read_text())
    assert book[kernel_id]["pid"] == new_pid

    response = httpx.delete(f"{second.url}/api/kernels/{kernel_id}",
                            headers={"Authorization": f"token {second.token}"}, timeout=30)
    assert response.status_code == 204
    wait_until("the restarted kernel to end", lambda: not _alive(new_pid))
    assert json.loads((servers.runtime / BOOK_NAME).read_text()) == {}


def test_a_kernel_that_died_meanwhile_is_reported_not_replaced(servers):
    first = servers()
    kernel_id, pid = _notebook_session(first)
    first.end(signal.SIGKILL)
    os.killpg(pid, signal.SIGKILL)
    wait_until("the kernel to be gone", lambda: not _alive(pid))

    second = servers()
    assert second.get("/api/kernels").json() == []
    assert second.get("/api/sessions").json() == []  # its notebook has no kernel now, visibly
    log = second.log.read_text()
    assert f"kernel {kernel_id} (python3, pid {pid}) is gone: its process ended" in log
    (lost,) = second.get("/api/keepalive/activity").json()["lost"]
    assert (lost["kernel_id"], lost["pid"], lost["why"]) == (kernel_id, pid, "its process ended")
    assert lost["notebook"].endswith("a.ipynb")
    assert json.loads((servers.runtime / BOOK_NAME).read_text()) == {}


def test_a_reused_pid_is_not_adopted(servers, tmp_path):
    """The book names a pid that now belongs to another process: that process is left alone."""
    first = servers()
    kernel_id, pid = _notebook_session(first)
    first.end(signal.SIGKILL)
    os.killpg(pid, signal.SIGKILL)
    stranger = subprocess.Popen(["sleep", "600"])
    try:
        book_path = servers.runtime / BOOK_NAME
        book = json.loads(book_path.read_text())
        book[kernel_id]["pid"] = stranger.pid
        book_path.write_text(json.dumps(book))

        second = servers()
        assert second.get("/api/kernels").json() == []
        assert "the pid now belongs to another process" in second.log.read_text()
        assert stranger.poll() is None
    finally:
        stranger.kill()
        stranger.wait()


def test_a_foreign_process_is_watched_and_signalled_by_its_pidfd():
    sleeper = subprocess.Popen(["sleep", "600"])
    watched = ForeignProcess(sleeper.pid)
    assert watched.poll() is None
    with pytest.raises(TimeoutError):
        watched.wait(timeout=0.1)
    watched.kill()
    assert watched.wait(timeout=10) == -1
    assert sleeper.wait(timeout=10) == -signal.SIGKILL
    watched.kill()  # a second kill of an ended process is no error
