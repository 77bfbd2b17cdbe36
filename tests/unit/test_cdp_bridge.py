"""The CDP bridge (keepalive.engine.cdp_bridge) against a stand-in browser on its pipe.

The stand-in speaks just enough CDP (a browser session per attach, ids for what is created, an
empty result for most other requests, and a few ``Test.*`` methods of its own: echo, a big reply,
an event, and the list of what it received) for the bridge's own rules to be checked: what a guest
may not do and what is closed after it, that each client hears only its own, big messages, and
that everyone hears at once when the browser dies, which a recovery depends on.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import stat
import subprocess
import sys
import textwrap
from pathlib import Path

import psutil
import pytest

from keepalive.engine import cdp_bridge
from tests.waiting import wait_until

FAKE_BROWSER = textwrap.dedent(
    r"""
    import json, os, time
    inbox, outbox = os.fdopen(3, "rb", 0), os.fdopen(4, "wb")
    here = os.path.dirname(os.path.abspath(__file__))
    counters = {}
    received = []  # [method, sessionId, params (Target.* only)] of every request, for Test.received


    def next_number(kind):
        counters[kind] = counters.get(kind, 0) + 1
        return counters[kind]


    def send(message):
        outbox.write(json.dumps(message).encode() + b"\0")
        outbox.flush()


    def answer(message):
        method, session = message.get("method"), message.get("sessionId")
        params = message.get("params") or {}
        received.append([method, session, params if str(method).startswith("Target.") else None])
        result = {}
        if method == "Target.attachToBrowserTarget":
            delay = os.path.join(here, "attach_delay")  # a test's way to hold attach replies back
            if os.path.exists(delay):
                seconds = float(open(delay).read())
                open(os.path.join(here, "attach_held"), "w").close()  # the test's sign it is here
                time.sleep(seconds)
            result = {"sessionId": f"browser-session-{next_number('browser')}"}
        elif method == "Target.createTarget":
            delay = os.path.join(here, "create_delay")  # a test's way to hold creations back
            if os.path.exists(delay):
                seconds = float(open(delay).read())
                open(os.path.join(here, "create_held"), "w").close()
                time.sleep(seconds)
            result = {"targetId": f"target-{next_number('target')}"}
        elif method == "Target.createBrowserContext":
            result = {"browserContextId": f"context-{next_number('context')}"}
        elif method == "Target.attachToTarget":
            result = {"sessionId": f"page-session-{next_number('page')}"}
        elif method == "Target.setAutoAttach":
            event = {"method": "Target.attachedToTarget",
                     "params": {"sessionId": f"auto-session-{next_number('auto')}", "targetInfo": {}}}
            if session is not None:
                event["sessionId"] = session
            send(event)
        elif method == "Test.event":  # an event on the request's session, then the reply
            send({"method": "Test.happened", "params": params, "sessionId": session})
        elif method == "Test.echo":
            result = params
        elif method == "Test.big":
            result = {"data": "x" * params["size"]}
        elif method == "Test.received":
            result = {"received": received}
        reply = {"id": message["id"], "result": result}
        if session is not None:
            reply["sessionId"] = session
        send(reply)


    buffer = b""
    while True:
        chunk = inbox.read(65536)
        if not chunk:
            break
        buffer += chunk
        while b"\0" in buffer:
            raw, buffer = buffer.split(b"\0", 1)
            answer(json.loads(raw))
    """
)
#: Runs the bridge with a smaller MESSAGE_LIMIT: sending 256 MiB in a unit test would be slow.
WITH_LIMIT = (
    "import sys; sys.path.insert(0, {folder!r}); import cdp_bridge; "
    "cdp_bridge.MESSAGE_LIMIT = {limit}; sys.exit(cdp_bridge.main(sys.argv[1:]))"
)


class Connection:
    """A client of the bridge's Unix socket."""

    def __init__(self, path: Path, role: str | None = None) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(5)
        self.sock.connect(cdp_bridge.unix_path(str(path)))
        self.buffer = b""
        self.next_id = 1
        if role is not None:
            self.send({"keepalive": {"role": role}})

    def send(self, message: dict) -> None:
        self.sock.sendall(json.dumps(message).encode() + b"\0")

    def call(self, method: str, params: dict | None = None, session: str | None = None) -> dict:
        self.next_id += 1
        message = {"id": self.next_id, "method": method, "params": params or {}}
        if session is not None:
            message["sessionId"] = session
        self.send(message)
        return self.receive()

    def receive(self) -> dict:
        chunks = [self.buffer]
        while b"\0" not in chunks[-1]:
            chunk = self.sock.recv(1 << 20)
            if not chunk:
                raise ConnectionError("the bridge closed the connection")
            chunks.append(chunk)
        raw, self.buffer = b"".join(chunks).split(b"\0", 1)
        return json.loads(raw)

    def assert_nothing_more(self) -> None:
        self.sock.settimeout(0.3)
        with pytest.raises(TimeoutError):
            self.receive()
        self.sock.settimeout(5)


def start_bridge(folder: Path, message_limit: int | None = None) -> tuple[subprocess.Popen, Path]:
    fake = folder / "fake_browser.py"
    fake.write_text(FAKE_BROWSER)
    path = folder / "cdp.sock"
    browser = ["--", sys.executable, "-I", str(fake)]
    if message_limit is None:
        command = [sys.executable, "-I", cdp_bridge.__file__, "--socket", str(path), *browser]
    else:
        code = WITH_LIMIT.format(folder=str(Path(cdp_bridge.__file__).parent), limit=message_limit)
        command = [sys.executable, "-I", "-c", code, "--socket", str(path), *browser]
    process = subprocess.Popen(command)
    wait_until("the bridge to listen", path.exists, timeout=10, every=0.02, process=process)
    return process, path


@pytest.fixture
def bridge(request, tmp_path):
    """The bridge running the stand-in browser; yields (bridge process, socket path).

    ``indirect`` parameters: ``{"message_limit": N}``, ``{"folder": "sub/dir"}`` (under tmp_path).
    """
    options = getattr(request, "param", {})
    folder = tmp_path / options.get("folder", "")
    folder.mkdir(parents=True, exist_ok=True)
    process, path = start_bridge(folder, options.get("message_limit"))
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


def received_by_browser(client: Connection, wanted: set[str], count: int) -> list[list]:
    """The stand-in's record of the ``wanted`` methods, once it holds ``count`` of them.

    The bridge's clean-up after a client goes without waiting for replies, so it may still be on
    its way when the next client asks.
    """
    seen: list[list] = []

    def enough() -> bool:
        seen[:] = [entry for entry in client.call("Test.received")["result"]["received"] if entry[0] in wanted]
        return len(seen) >= count

    wait_until(f"{count} of {sorted(wanted)} at the browser", enough, timeout=5, every=0.05, describe=lambda: seen)
    return seen


@pytest.mark.parametrize("role", [None, "service"])
def test_messages_sent_before_the_session_is_attached_wait_for_it_and_keep_their_order(bridge, tmp_path, role):
    _, path = bridge
    (tmp_path / "attach_delay").write_text("0.3")  # the stand-in holds its attach replies back
    client = Connection(path, role=role)
    for number in range(2, 12):
        client.send({"id": number, "method": "Test.echo", "params": {"n": number}})
    assert [client.receive() for _ in range(10)] == [{"id": n, "result": {"n": n}} for n in range(2, 12)]
    client.assert_nothing_more()
    received = client.call("Test.received")["result"]["received"]
    echoes = [entry for entry in received if entry[0] == "Test.echo"]
    assert [session for _, session, _ in echoes] == ["browser-session-1"] * 10
    assert all(method is not None for method, _, _ in received), "the role message reached the browser"


def test_a_guests_targets_and_contexts_are_closed_when_it_leaves(bridge):
    _, path = bridge
    guest = Connection(path)
    assert guest.call("Target.createBrowserContext")["result"] == {"browserContextId": "context-1"}
    created = guest.call("Target.createTarget", {"url": "about:blank", "browserContextId": "context-1"})
    assert created["result"] == {"targetId": "target-1"}
    other = Connection(path)
    refused = other.call("Target.disposeBrowserContext", {"browserContextId": "context-1"})
    assert "refused" in refused["error"]["message"]
    guest.sock.close()

    service = Connection(path, role="service")
    closing = {"Target.closeTarget", "Target.disposeBrowserContext", "Target.detachFromTarget"}
    assert received_by_browser(service, closing, 3) == [
        ["Target.closeTarget", None, {"targetId": "target-1"}],
        ["Target.disposeBrowserContext", None, {"browserContextId": "context-1"}],
        ["Target.detachFromTarget", None, {"sessionId": "browser-session-1"}],
    ]
    # The service's own targets stay when it goes: only its browser session ends.
    assert service.call("Target.createTarget", {"url": "about:blank"})["result"] == {"targetId": "target-2"}
    service.sock.close()
    watcher = Connection(path, role="service")
    assert received_by_browser(watcher, closing, 4)[3:] == [
        ["Target.detachFromTarget", None, {"sessionId": "browser-session-3"}],
    ]


def test_a_client_that_leaves_before_its_session_is_attached_still_has_its_messages_and_its_detach(bridge, tmp_path):
    _, path = bridge
    delay = tmp_path / "attach_delay"
    delay.write_text("0.3")
    guest = Connection(path)
    guest.send({"id": 7, "method": "Browser.getVersion", "params": {}})
    guest.sock.close()
    wait_until("the browser to hold the attach back", (tmp_path / "attach_held").exists)
    delay.unlink()
    watcher = Connection(path, role="service")
    wanted = {"Browser.getVersion", "Target.detachFromTarget"}
    assert received_by_browser(watcher, wanted, 2) == [
        ["Browser.getVersion", "browser-session-1", None],
        ["Target.detachFromTarget", None, {"sessionId": "browser-session-1"}],
    ]


def test_what_a_guest_made_after_it_left_is_closed_when_the_browser_answers(bridge, tmp_path):
    """Its Target.createTarget was on its way when it went: the target must not stay behind."""
    _, path = bridge
    guest = Connection(path)
    assert "result" in guest.call("Browser.getVersion")  # attached
    (tmp_path / "create_delay").write_text("0.3")
    guest.send({"id": 9, "method": "Target.createTarget", "params": {"url": "about:blank"}})
    wait_until("the request to be with the browser, its answer held back", (tmp_path / "create_held").exists)
    guest.sock.close()
    watcher = Connection(path, role="service")
    wanted = {"Target.createTarget", "Target.closeTarget", "Target.detachFromTarget"}
    assert received_by_browser(watcher, wanted, 3) == [
        ["Target.createTarget", "browser-session-1", {"url": "about:blank"}],
        ["Target.detachFromTarget", None, {"sessionId": "browser-session-1"}],
        ["Target.closeTarget", None, {"targetId": "target-1"}],
    ]


def test_big_messages_pass_whole_both_ways(bridge):
    _, path = bridge
    client = Connection(path)
    payload = "x" * (1 << 20)  # more than one read of the bridge's
    assert client.call("Test.echo", {"payload": payload}) == {"id": 2, "result": {"payload": payload}}
    screenshot = client.call("Test.big", {"size": 5 << 20})  # like a full-page screenshot
    assert screenshot["id"] == 3
    assert screenshot["result"]["data"] == "x" * (5 << 20)
    assert client.call("Browser.getVersion") == {"id": 4, "result": {}}


def test_interleaved_clients_each_hear_only_their_own_replies(bridge):
    _, path = bridge
    clients = {"guest": Connection(path), "service": Connection(path, role="service")}
    for number in range(2, 22):
        for who, client in clients.items():
            client.send({"id": number, "method": "Test.echo", "params": {"who": who, "n": number}})
    for who, client in clients.items():
        replies = [client.receive() for _ in range(20)]
        assert replies == [{"id": n, "result": {"who": who, "n": n}} for n in range(2, 22)]
        client.assert_nothing_more()


def test_events_and_sessions_belong_to_the_client_that_made_them(bridge):
    _, path = bridge
    owner, other = Connection(path), Connection(path)
    owner.next_id = 10
    owner.send({"id": 11, "method": "Target.setAutoAttach", "params": {}})
    event = owner.receive()  # on its browser session, whose id it never sees
    assert event == {"method": "Target.attachedToTarget", "params": {"sessionId": "auto-session-1", "targetInfo": {}}}
    assert owner.receive() == {"id": 11, "result": {}}
    owner.send({"id": 12, "method": "Test.event", "params": {"n": 1}, "sessionId": "auto-session-1"})
    assert owner.receive() == {"method": "Test.happened", "params": {"n": 1}, "sessionId": "auto-session-1"}
    assert owner.receive() == {"id": 12, "result": {}, "sessionId": "auto-session-1"}
    attached = owner.call("Target.attachToTarget", {"targetId": "page"})
    assert attached["result"] == {"sessionId": "page-session-1"}
    assert owner.call("Browser.getVersion", session="page-session-1")["sessionId"] == "page-session-1"
    refused = owner.call("Browser.close", session="page-session-1")  # refused on the session asked on
    assert refused["sessionId"] == "page-session-1" and "refused" in refused["error"]["message"]
    other.next_id = 20
    stranger = other.call("Browser.getVersion", session="auto-session-1")
    assert stranger["id"] == 21 and stranger["sessionId"] == "auto-session-1"
    assert "no session" in stranger["error"]["message"]
    other.assert_nothing_more()


def test_messages_that_are_no_json_object_are_skipped(bridge):
    _, path = bridge
    client = Connection(path)
    client.sock.sendall(b"not json\0[1, 2]\0" + b"[" * 100_000 + b"\0\xff\0")
    assert client.call("Browser.getVersion") == {"id": 2, "result": {}}


@pytest.mark.parametrize("bridge", [{"message_limit": 64 * 1024}], indirect=True)
def test_a_client_over_the_message_limit_is_disconnected_and_the_others_carry_on(bridge):
    _, path = bridge
    other = Connection(path)
    assert other.call("Test.echo", {"p": "x" * 60_000})["result"] == {"p": "x" * 60_000}  # under the limit
    endless = Connection(path)
    try:
        endless.sock.sendall(b"x" * (200 * 1024))  # no separator
    except OSError:
        pass  # the bridge may close it while this is still sending
    with pytest.raises(ConnectionError):
        endless.receive()
    oversized = Connection(path)
    try:
        oversized.call("Test.echo", {"p": "x" * (100 * 1024)})
    except ConnectionError:
        pass
    else:
        pytest.fail("a message over the limit was answered")
    assert other.call("Browser.getVersion") == {"id": 3, "result": {}}


@pytest.mark.parametrize("bridge", [{"message_limit": 64 * 1024}], indirect=True)
def test_a_client_that_stops_reading_is_dropped_once_a_message_limit_waits_for_it(bridge):
    _, path = bridge
    stuck = Connection(path)
    assert "result" in stuck.call("Browser.getVersion")
    for number in range(40):  # 40 x 32 KiB: more than the socket's buffer and the limit together
        stuck.send({"id": 100 + number, "method": "Test.big", "params": {"size": 32 * 1024}})
    other = Connection(path)
    assert len(received_by_browser(other, {"Test.big"}, 40)) == 40  # every answer is on its way
    stuck.sock.settimeout(5)
    received = 0
    while chunk := stuck.sock.recv(1 << 20):  # what was sent before the drop, then the end
        received += len(chunk)
    assert received < 40 * 32 * 1024
    assert "result" in other.call("Browser.getVersion")


@pytest.mark.parametrize("bridge", [{"folder": "deep/" + "d" * 120}], indirect=True)
def test_the_socket_is_private_and_may_be_deep(bridge):
    _, path = bridge
    assert len(str(path).encode()) > 108
    assert path.stat().st_mode & 0o777 == 0o600
    assert Connection(path).call("Browser.getVersion") == {"id": 2, "result": {}}


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT, signal.SIGHUP])
def test_a_signal_to_the_bridge_ends_the_browser_and_the_bridge_with_it(bridge, signum):
    process, path = bridge
    client = Connection(path, role="service")
    assert client.call("Browser.getVersion") == {"id": 2, "result": {}}
    process.send_signal(signum)
    assert process.wait(5) == 128 + signal.SIGTERM  # Chromium is sent SIGTERM whatever came
    assert not path.exists()
    with pytest.raises(ConnectionError):
        client.receive()


def test_the_bridge_wants_a_browser_command(tmp_path):
    for arguments in (["--socket", str(tmp_path / "s")], ["--socket", str(tmp_path / "s"), "--"]):
        done = subprocess.run(
            [sys.executable, "-I", cdp_bridge.__file__, *arguments], capture_output=True, text=True, timeout=10
        )
        assert done.returncode == 2
        assert "no browser command" in done.stderr
    assert not (tmp_path / "s").exists()


def test_the_bridge_stays_small_no_asyncio(bridge):
    # asyncio alone would cost every session's bridge about 8.6 MiB.
    process, _ = bridge
    assert "_asyncio" not in Path(f"/proc/{process.pid}/maps").read_text()
    heavy = ["asyncio", "dataclasses", "argparse", "concurrent", "ssl", "typing", "threading"]
    code = (
        "import sys; sys.path.insert(0, sys.argv[1]); import cdp_bridge; "
        f"print(sorted(set({heavy!r}) & set(sys.modules)))"
    )
    folder = str(Path(cdp_bridge.__file__).parent)
    done = subprocess.run([sys.executable, "-I", "-c", code, folder], capture_output=True, text=True, timeout=10)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"


def test_the_bridges_malloc_setting_is_its_own_not_chromiums(tmp_path):
    """bridge_command fixes the bridge's mmap threshold (big messages give their memory back);
    Chromium, started by the bridge, keeps glibc's default."""
    from keepalive.engine.commands import bridge_command
    from keepalive.engine.layout import SessionLayout

    layout = SessionLayout(tmp_path / "session")
    layout.cdp_socket.parent.mkdir(parents=True)
    fake = tmp_path / "fake_browser.py"
    fake.write_text(FAKE_BROWSER)
    process = subprocess.Popen(bridge_command(sys.executable, layout, [sys.executable, "-I", str(fake)]))
    try:
        wait_until("the bridge to listen", layout.cdp_socket.exists, timeout=10, every=0.02, process=process)
        assert "cdp_bridge.py" in " ".join(Path(f"/proc/{process.pid}/cmdline").read_text().split("\0"))
        assert psutil.Process(process.pid).environ().get("MALLOC_MMAP_THRESHOLD_") == "131072"
        assert "MALLOC_MMAP_THRESHOLD_" not in psutil.Process(browser_pid(process.pid)).environ()
        assert "result" in Connection(layout.cdp_socket).call("Browser.getVersion")
    finally:
        process.kill()
        process.wait(5)


def test_the_socket_appears_only_once_it_listens(tmp_path, monkeypatch):
    """Whoever waits for the socket's file may connect at once (a connect between bind and
    listen is refused: seen in this file's tests on a busy machine)."""
    path = tmp_path / "cdp.sock"
    path.write_text("left by a bridge that died")
    there_when_listening = []
    real_listen = socket.socket.listen

    def listen(self, backlog):
        there_when_listening.append(path.is_socket())
        return real_listen(self, backlog)

    monkeypatch.setattr(socket.socket, "listen", listen)
    listener = cdp_bridge.listen_at(str(path))
    try:
        assert there_when_listening == [False] and path.is_socket()
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
        client = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        client.connect(str(path))
        client.close()
        assert [p.name for p in tmp_path.iterdir()] == ["cdp.sock"]
    finally:
        listener.close()
