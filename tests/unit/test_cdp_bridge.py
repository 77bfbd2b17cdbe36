"""The CDP bridge (keepalive.engine.cdp_bridge) against a stand-in browser on its pipe.

The stand-in speaks just enough CDP (a browser session per attach, an empty result for any
other request) for the bridge's own rules to be checked: what a guest may not do, and that
everyone hears at once when the browser dies, which a recovery depends on.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from keepalive.engine import cdp_bridge

FAKE_BROWSER = textwrap.dedent(
    """
    import json, os, sys
    inbox, outbox = os.fdopen(3, "rb", 0), os.fdopen(4, "wb", 0)
    sessions = 0
    buffer = b""
    while True:
        chunk = inbox.read(65536)
        if not chunk:
            break
        buffer += chunk
        while b"\\0" in buffer:
            raw, buffer = buffer.split(b"\\0", 1)
            message = json.loads(raw)
            result = {}
            if message["method"] == "Target.attachToBrowserTarget":
                sessions += 1
                result = {"sessionId": f"browser-session-{sessions}"}
            reply = {"id": message["id"], "result": result}
            if "sessionId" in message:
                reply["sessionId"] = message["sessionId"]
            outbox.write(json.dumps(reply).encode() + b"\\0")
    """
)


class Connection:
    """A client of the bridge's Unix socket."""

    def __init__(self, path: Path, role: str | None = None) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(5)
        self.sock.connect(str(path))
        self.buffer = b""
        self.next_id = 1
        if role is not None:
            self.send({"keepalive": {"role": role}})

    def send(self, message: dict) -> None:
        self.sock.sendall(json.dumps(message).encode() + b"\0")

    def call(self, method: str) -> dict:
        self.next_id += 1
        self.send({"id": self.next_id, "method": method, "params": {}})
        return self.receive()

    def receive(self) -> dict:
        while b"\0" not in self.buffer:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise ConnectionError("the bridge closed the connection")
            self.buffer += chunk
        raw, self.buffer = self.buffer.split(b"\0", 1)
        return json.loads(raw)


@pytest.fixture
def bridge(tmp_path):
    """The bridge running the stand-in browser; yields (bridge process, socket path)."""
    fake = tmp_path / "fake_browser.py"
    fake.write_text(FAKE_BROWSER)
    path = tmp_path / "cdp.sock"
    process = subprocess.Popen(
        [sys.executable, "-I", cdp_bridge.__file__, "--socket", str(path), "--", sys.executable, "-I", str(fake)]
    )
    deadline = time.monotonic() + 10
    while not path.exists():
        assert process.poll() is None, "the bridge exited before listening"
        assert time.monotonic() < deadline, "the bridge never listened"
        time.sleep(0.02)
    yield process, path
    if process.poll() is None:
        process.kill()
    process.wait(5)


def browser_pid(bridge_pid: int) -> int:
    children = Path(f"/proc/{bridge_pid}/task/{bridge_pid}/children").read_text().split()
    assert len(children) == 1, children
    return int(children[0])


def test_a_guest_may_talk_to_the_browser_but_not_close_it(bridge):
    _, path = bridge
    guest = Connection(path)
    assert guest.call("Browser.getVersion") == {"id": 2, "result": {}}
    refused = guest.call("Browser.close")
    assert refused["id"] == 3
    assert "refused" in refused["error"]["message"]
    service = Connection(path, role="service")
    assert service.call("Browser.close") == {"id": 2, "result": {}}  # the service may


def test_when_the_browser_dies_every_client_hears_at_once_and_the_bridge_ends(bridge):
    process, path = bridge
    clients = [Connection(path, role="service"), Connection(path)]
    for client in clients:
        assert "result" in client.call("Browser.getVersion")
    os.kill(browser_pid(process.pid), signal.SIGKILL)
    for client in clients:
        # Not a timing target, a deadline: the bridge used to keep these open through its
        # clean-up's 5 s timeouts, and a client that connected meanwhile hung on its own.
        client.sock.settimeout(3)
        with pytest.raises(ConnectionError):
            client.receive()
    assert process.wait(5) == 128 + signal.SIGKILL
    assert not path.exists(), "the socket of a dead browser must not pass for a live one"
