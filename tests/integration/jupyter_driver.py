"""A session's own Jupyter server, driven as its kiosk would: a kernel running a cell that
writes a numbered line every half second (tests and bench/survival_bench.py use it)."""

from __future__ import annotations

import json
import uuid
from pathlib import Path

import httpx
import psutil
from websockets.sync.client import connect as ws_connect

from tests.waiting import wait_until


TICKER = """
import time, pathlib
out = pathlib.Path("ticks.txt")
for i in range(100000):
    with out.open("a") as f:
        f.write(f"{i}\\n")
    print(f"tick {i}", flush=True)
    time.sleep(0.5)
"""


class SessionJupyter:
    """The session's own Jupyter server, reached as its kiosk does: URL from the record, token
    from the Jupyter process's environment (the test runs as the same user)."""

    def __init__(self, state_dir: Path, session_id: str) -> None:
        record = json.loads((state_dir / "sessions" / session_id / "session.json").read_text())
        self.url = record["jupyter_url"]
        self.pid = record["jupyter_pid"]
        self.token = psutil.Process(self.pid).environ()["JUPYTER_TOKEN"]
        self.client = httpx.Client(base_url=self.url, headers={"Authorization": f"token {self.token}"},
                                   timeout=30, trust_env=False)

    def start_ticker(self) -> tuple[str, int]:
        """A kernel running TICKER; returns its id and the kernel process's pid."""
        return self.start_cell(TICKER)

    def start_cell(self, code: str) -> tuple[str, int]:
        """A new kernel running ``code``, left running; returns its id and the kernel process's pid."""
        kernel = self.client.post("/api/kernels", json={"name": "python3"}).json()
        ws_url = self.url.replace("http", "ws", 1) + f"/api/kernels/{kernel['id']}/channels"
        message = {
            "header": {"msg_id": uuid.uuid4().hex, "msg_type": "execute_request", "username": "test",
                       "session": uuid.uuid4().hex, "version": "5.3", "date": ""},
            "parent_header": {}, "metadata": {}, "channel": "shell",
            "content": {"code": code, "silent": False, "store_history": False, "user_expressions": {},
                        "allow_stdin": False, "stop_on_error": True},
        }
        with ws_connect(ws_url, additional_headers={"Authorization": f"token {self.token}"}, open_timeout=60) as ws:
            ws.send(json.dumps(message))
            # the cell runs once the kernel says so; the websocket may go: the kernel keeps going
            _until_started(ws)
        kernel_pid = next(
            p.pid for p in psutil.Process(self.pid).children(recursive=True) if kernel["id"] in " ".join(p.cmdline())
        )
        return kernel["id"], kernel_pid

    def run(self, code: str, timeout: float = 120) -> str:
        """Run ``code`` in a new kernel of the session's server (as the session's own kernels run:
        its user, its environment); returns what it printed. The kernel is shut down after."""
        kernel = self.client.post("/api/kernels", json={"name": "python3"}).json()
        try:
            return self.execute(kernel["id"], code, timeout)
        finally:
            self.client.delete(f"/api/kernels/{kernel['id']}")

    def execute(self, kernel_id: str, code: str, timeout: float = 120) -> str:
        """Run ``code`` on a kernel that already runs (as a scheduled job would, through the
        Jupyter API); returns what it printed."""
        ws_url = self.url.replace("http", "ws", 1) + f"/api/kernels/{kernel_id}/channels"
        request_id = uuid.uuid4().hex
        message = {
            "header": {"msg_id": request_id, "msg_type": "execute_request", "username": "test",
                       "session": uuid.uuid4().hex, "version": "5.3", "date": ""},
            "parent_header": {}, "metadata": {}, "channel": "shell",
            "content": {"code": code, "silent": False, "store_history": False, "user_expressions": {},
                        "allow_stdin": False, "stop_on_error": True},
        }
        printed: list[str] = []
        with ws_connect(ws_url, additional_headers={"Authorization": f"token {self.token}"},
                        open_timeout=60, max_size=None) as ws:
            ws.send(json.dumps(message))

            def finished() -> bool:
                """Reads the next message; true once the cell's kernel went idle."""
                reply = json.loads(ws.recv(timeout=timeout))
                if reply.get("parent_header", {}).get("msg_id") != request_id:
                    return False
                kind, content = reply["msg_type"], reply["content"]
                if kind == "stream":
                    printed.append(content["text"])
                elif kind == "error":
                    raise AssertionError(f"the cell failed: {content['ename']}: {content['evalue']}")
                return kind == "status" and content["execution_state"] == "idle"

            wait_until("the cell to finish", finished, timeout=timeout, every=0, describe=lambda: "".join(printed))
            return "".join(printed)

    def close(self) -> None:
        self.client.close()




def _until_started(ws, timeout: float = 60) -> None:
    wait_until("the cell to start", lambda: '"execute_input"' in ws.recv(timeout=timeout), timeout=timeout, every=0)


def ticks(home: Path) -> int:
    """How many lines the ticker cell wrote (into the session's notebooks folder)."""
    path = home / "notebooks" / "ticks.txt"
    return len(path.read_text().split()) if path.exists() else 0
