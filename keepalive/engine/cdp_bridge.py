"""The kiosk Chromium's only DevTools door: a pipe, shared out over a private Unix socket.

The session starts this as its kiosk browser (``python -I cdp_bridge.py --socket PATH -- chromium
ARGS``); it starts Chromium with ``--remote-debugging-pipe``. Chromium then speaks CDP with this
process alone, over fds 3 and 4, and opens no TCP port: with a port, anyone on the machine
(another session's notebook too) could drive the browser, since Chromium's DevTools server has
no authentication at all.

This process listens on a Unix socket in the session's run dir (0700: only the session's user and
root get in). Each connection gets a browser-level CDP session of its own
(``Target.attachToBrowserTarget``), so several clients work side by side as they would over a TCP
port: the service's Playwright, and a user's own (keepalive.engine.cdp_gateway hands those out).
A connection is the service's when its first message is ``{"keepalive": {"role": "service"}}``;
any other is a guest, which may not close the browser, and whose pages and contexts are closed
when it goes.

Standard library only, and no asyncio: it runs under the session's user, from the service's
interpreter, with ``-I``; and it must stay small, since every session has one. Importing asyncio
alone costs about 8.6 MiB per process, so the loop here is a plain ``selectors`` one: a single
thread, non-blocking fds, and a byte buffer each way per connection.
"""

from __future__ import annotations

import fcntl
import itertools
import json
import os
import selectors
import signal
import socket
import sys

#: Chromium's pipe protocol and ours: one JSON message, then a NUL byte.
SEPARATOR = b"\0"
#: A single message can be a full-page screenshot in base64: allow big ones.
MESSAGE_LIMIT = 256 * 1024 * 1024
#: What a guest may not do: end the browser (an error answers it). Closing the kiosk page is
#: let through and handled by the service like a crash (the page is reopened): refusing it would
#: leave a Playwright client waiting forever for the page's close.
GUEST_REFUSED = frozenset({"Browser.close", "Browser.crash", "Browser.crashGpuProcess"})
GUEST_OWN_CONTEXT_ONLY = frozenset({"Target.disposeBrowserContext"})
#: The most one read takes from a socket or the pipe: big messages arrive over several reads.
CHUNK = 256 * 1024
#: Marks a client's Target.attachToBrowserTarget among the requests waiting for their replies.
ATTACH = object()

#: Set for the bridge alone by its command line (keepalive.engine.commands.bridge_command), and
#: kept from Chromium's environment.
OWN_ENVIRONMENT = ("MALLOC_MMAP_THRESHOLD_",)

USAGE = "usage: cdp_bridge.py --socket PATH -- BROWSER [ARG ...]"


def unix_path(path: str) -> str:
    """A path for bind/connect that fits AF_UNIX's 108 bytes however deep ``path`` is.

    ``/proc/self/fd/N/name`` resolves through an open handle on the folder; the returned path
    stays valid as long as that handle (leaked on purpose: one per process) is open.
    """
    if len(path.encode()) < 100:
        return path
    folder, name = os.path.split(path)
    handle = os.open(folder, os.O_PATH | os.O_CLOEXEC)
    return f"/proc/self/fd/{handle}/{name}"


def listen_at(socket_path: str) -> socket.socket:
    """A socket listening at ``socket_path``, which appears only once it listens: whoever waits
    for the file may connect at once (bound under a name of its own, listening, then renamed)."""
    binding = f"{socket_path}.binding"
    for stale in (socket_path, binding):  # a bridge before us died without cleaning up
        if os.path.exists(stale):
            os.unlink(stale)
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    old_umask = os.umask(0o177)  # the socket is born 0600
    try:
        listener.bind(unix_path(binding))
    finally:
        os.umask(old_umask)
    listener.listen(100)
    os.rename(binding, socket_path)
    return listener


def encode(message: dict) -> bytes:
    return json.dumps(message, separators=(",", ":")).encode() + SEPARATOR


def decode(raw: bytes | bytearray) -> dict | None:
    """The message, or None for one to skip (not JSON, or not an object)."""
    try:
        message = json.loads(raw)
    except (ValueError, RecursionError):  # RecursionError: absurdly nested JSON
        return None
    return message if isinstance(message, dict) else None


def write_some(write, data: bytes | bytearray) -> int | None:
    """What ``write`` (a non-blocking send) takes of ``data`` now; None when the peer is gone."""
    try:
        return write(data)
    except BlockingIOError:
        return 0
    except OSError:
        return None


class Inbox:
    """Bytes read from one peer, cut into messages at each SEPARATOR."""

    __slots__ = ("partial",)

    def __init__(self) -> None:
        self.partial = bytearray()  # the start of a message whose separator has not come yet

    def feed(self, chunk: bytes) -> list[bytearray]:
        """The messages ``chunk`` completes, oldest first, without their separators."""
        # Only the new chunk needs searching: ``partial`` holds no separator. That keeps a message
        # arriving in many chunks (a screenshot) linear, not quadratic.
        last = chunk.rfind(SEPARATOR)
        if last < 0:
            self.partial += chunk
            return []
        self.partial += memoryview(chunk)[:last]
        messages = self.partial.split(SEPARATOR)
        self.partial = bytearray(memoryview(chunk)[last + 1:])
        return messages


class Client:
    """One connection on the Unix socket, and what it made in the browser."""

    __slots__ = (
        "sock", "inbox", "outbox", "closed", "stage", "role", "browser_session", "queued",
        "targets", "contexts",
    )

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.inbox = Inbox()
        self.outbox = bytearray()  # what the socket would not take yet
        self.closed = False  # the socket is closed (the clean-up may still be to come)
        #: "new" until its first message, "attaching" until the browser gives it a session,
        #: "attached", then "gone" once cleaned up after.
        self.stage = "new"
        self.role = "guest"
        self.browser_session: str | None = None
        self.queued: list[dict] = []  # what it sent while "attaching", forwarded once attached
        self.targets: set[str] = set()
        self.contexts: set[str] = set()

    @property
    def is_guest(self) -> bool:
        return self.role != "service"


class Bridge:
    """Shares one CDP pipe among many clients (see the module's docstring)."""

    def __init__(self, listener: socket.socket, to_browser: int, from_browser: int) -> None:
        self._listener = listener
        self._to_browser = to_browser
        self._from_browser = from_browser
        self._browser_inbox = Inbox()
        self._browser_outbox = bytearray()  # what the pipe would not take yet
        self._ids = itertools.count(1)
        # our id -> (the client, or None for the bridge's own; the client's id, or ATTACH; method)
        self._pending: dict[int, tuple[Client | None, object, object]] = {}
        # CDP session id -> the client it belongs to
        self._session_owner: dict[str, Client] = {}
        self._clients: set[Client] = set()
        self._browser_gone = False
        listener.setblocking(False)
        os.set_blocking(to_browser, False)
        os.set_blocking(from_browser, False)
        self._selector = selectors.DefaultSelector()
        self._selector.register(listener, selectors.EVENT_READ, self._accept)
        self._selector.register(from_browser, selectors.EVENT_READ, self._read_browser)

    def serve(self) -> None:
        """Route messages until Chromium's pipe closes (Chromium is gone)."""
        while not self._browser_gone:
            for key, events in self._selector.select():
                if self._browser_gone:
                    break
                if isinstance(key.data, Client):
                    self._client_event(key.data, events)
                else:
                    key.data()
        self._selector.close()
        os.close(self._to_browser)
        os.close(self._from_browser)

    # -- the browser side --------------------------------------------------------------------

    def _send_to_browser(self, message: dict) -> None:
        if self._browser_gone:
            return
        data = encode(message)
        if self._browser_outbox:  # behind what is already waiting: order matters
            self._browser_outbox += data
            return
        written = write_some(lambda data: os.write(self._to_browser, data), data)
        if written is None:
            self._lose_browser()
        elif written < len(data):
            self._browser_outbox += memoryview(data)[written:]
            self._selector.register(self._to_browser, selectors.EVENT_WRITE, self._write_browser)

    def _write_browser(self) -> None:
        written = write_some(lambda data: os.write(self._to_browser, data), self._browser_outbox)
        if written is None:
            self._lose_browser()
            return
        del self._browser_outbox[:written]
        if not self._browser_outbox:
            self._selector.unregister(self._to_browser)

    def _tell_browser(self, method: str, params: dict) -> None:
        """A request of the bridge's own, on the browser's root session; its reply is dropped."""
        number = next(self._ids)
        self._pending[number] = (None, None, method)
        self._send_to_browser({"id": number, "method": method, "params": params})

    def _read_browser(self) -> None:
        try:
            chunk = os.read(self._from_browser, CHUNK)
        except BlockingIOError:
            return
        except OSError:
            chunk = b""
        if not chunk:
            self._lose_browser()
            return
        for raw in self._browser_inbox.feed(chunk):
            message = decode(raw)
            if message is None:
                continue
            if "id" in message:
                self._route_reply(message)
            else:
                self._route_event(message)
            if self._browser_gone:  # a write to the pipe failed while routing
                return

    def _lose_browser(self) -> None:
        """Chromium is gone: every client hears so now, not when this process ends.

        Waiting requests would otherwise wait for their timeouts, and a client connected to a
        dead browser (the service's own, reconnecting during a recovery) for its own.
        """
        self._browser_gone = True
        for client in self._clients:
            self._close_socket(client)
        self._clients.clear()

    def _route_reply(self, message: dict) -> None:
        entry = self._pending.pop(message["id"], None)
        if entry is None:
            return
        client, their_id, method = entry
        if client is None:
            return  # the bridge's own request: nobody waits for its reply
        if their_id is ATTACH:
            self._attached(client, message)
            return
        result = message.get("result")
        result = result if isinstance(result, dict) else {}
        if client.stage == "gone":  # it left before this came: nobody to tell
            if client.is_guest:  # and what a guest made must not outlive it
                self._close_made(method, result)
            return
        self._remember(client, method, result)
        message["id"] = their_id
        self._deliver(client, message)

    def _close_made(self, method: object, result: dict) -> None:
        """Close the target or context that a late reply says was made."""
        if method == "Target.createTarget" and isinstance(result.get("targetId"), str):
            self._tell_browser("Target.closeTarget", {"targetId": result["targetId"]})
        elif method == "Target.createBrowserContext" and isinstance(result.get("browserContextId"), str):
            self._tell_browser("Target.disposeBrowserContext", {"browserContextId": result["browserContextId"]})

    def _remember(self, client: Client, method: object, result: dict) -> None:
        if method == "Target.createTarget" and "targetId" in result:
            client.targets.add(result["targetId"])
        elif method == "Target.createBrowserContext" and "browserContextId" in result:
            client.contexts.add(result["browserContextId"])
        elif method == "Target.attachToTarget" and "sessionId" in result:
            self._session_owner[result["sessionId"]] = client

    def _route_event(self, message: dict) -> None:
        client = self._session_owner.get(message.get("sessionId", ""))
        method, params = message.get("method"), message.get("params") or {}
        if method == "Target.attachedToTarget" and client is not None:
            self._session_owner[params["sessionId"]] = client
        elif method == "Target.detachedFromTarget":
            self._session_owner.pop(params.get("sessionId", ""), None)
        if client is not None:
            self._deliver(client, message)

    def _deliver(self, client: Client, message: dict) -> None:
        # The client's own browser session is its "root": it never sees that session's id.
        if message.get("sessionId") == client.browser_session:
            message.pop("sessionId", None)
        self._send_to_client(client, message)

    # -- the clients' side -------------------------------------------------------------------

    def _accept(self) -> None:
        try:
            sock, _ = self._listener.accept()
        except OSError:  # BlockingIOError (another wake-up took it), or the caller gave up
            return
        sock.setblocking(False)
        client = Client(sock)
        self._clients.add(client)
        self._selector.register(sock, selectors.EVENT_READ, client)

    def _client_event(self, client: Client, events: int) -> None:
        if client.closed:  # closed by an earlier event of the same wake-up
            return
        try:
            if events & selectors.EVENT_WRITE:
                self._write_client(client)
            if events & selectors.EVENT_READ and not client.closed:
                self._read_client(client)
        except Exception as error:  # one client's oddity must not end the others' connections
            sys.stderr.write(f"cdp_bridge: dropping a client after {error!r}\n")
            self._end(client)

    def _read_client(self, client: Client) -> None:
        try:
            chunk = client.sock.recv(CHUNK)
        except BlockingIOError:
            return
        except OSError:
            chunk = b""
        if not chunk:
            self._end(client)
            return
        for raw in client.inbox.feed(chunk):
            if len(raw) > MESSAGE_LIMIT:
                self._end(client)
                return
            message = decode(raw)
            if message is not None:
                self._from_client(client, message)
                if client.closed:
                    return
        if len(client.inbox.partial) > MESSAGE_LIMIT:
            self._end(client)

    def _from_client(self, client: Client, message: dict) -> None:
        if client.stage == "new":
            client.stage = "attaching"
            number = next(self._ids)
            self._pending[number] = (client, ATTACH, "Target.attachToBrowserTarget")
            self._send_to_browser({"id": number, "method": "Target.attachToBrowserTarget", "params": {}})
            hello = message.get("keepalive")
            if isinstance(hello, dict):
                client.role = "service" if hello.get("role") == "service" else "guest"
                return
        if client.stage == "attaching":
            client.queued.append(message)
        else:
            self._forward(client, message)

    def _attached(self, client: Client, reply: dict) -> None:
        """The browser answered a client's attach: forward what it sent meanwhile, in order."""
        client.stage = "attached"
        result = reply.get("result")
        session = result.get("sessionId") if isinstance(result, dict) else None
        if session is None:
            refused = {"code": -32000, "message": "the browser refused a session"}
            self._send_to_client(client, {"id": 0, "error": refused})
            self._end(client)
            return
        client.browser_session = session
        self._session_owner[session] = client
        queued, client.queued = client.queued, []
        for message in queued:
            if client.stage == "gone":
                break
            self._forward(client, message)
        if client.closed:  # it left while attaching: its clean-up waited for this
            self._end(client)

    def _forward(self, client: Client, message: dict) -> None:
        their_id = message.get("id")
        session = message.get("sessionId") or client.browser_session
        refusal = self._refusal(client, session, message)
        if refusal is not None:
            reply = {"id": their_id, "error": {"code": -32000, "message": refusal}}
            if "sessionId" in message:  # a reply goes back on the session it was asked on
                reply["sessionId"] = message["sessionId"]
            self._send_to_client(client, reply)
            return
        number = next(self._ids)
        self._pending[number] = (client, their_id, message.get("method"))
        self._send_to_browser({**message, "id": number, "sessionId": session})

    def _refusal(self, client: Client, session: object, message: dict) -> str | None:
        if not isinstance(session, str) or self._session_owner.get(session) is not client:
            return f"no session {session} on this connection"
        if not client.is_guest:
            return None
        method = message.get("method")
        params = message.get("params")
        if not isinstance(params, dict):
            params = {}
        if isinstance(method, str) and method in GUEST_REFUSED:
            return f"{method} is refused: the kiosk browser belongs to its keepalive session"
        if isinstance(method, str) and method in GUEST_OWN_CONTEXT_ONLY:
            context = params.get("browserContextId")
            if not isinstance(context, str) or context not in client.contexts:
                return f"{method} is refused for a context this connection did not create"
        return None

    def _send_to_client(self, client: Client, message: dict) -> None:
        if client.closed:
            return
        data = encode(message)
        if client.outbox:  # behind what is already waiting: order matters
            client.outbox += data
            if len(client.outbox) > MESSAGE_LIMIT:
                # It stopped reading: holding more for it would let one stuck client grow the
                # session's bridge without end.
                self._end(client)
            return
        written = write_some(client.sock.send, data)
        if written is None:
            self._end(client)
        elif written < len(data):
            client.outbox += memoryview(data)[written:]
            self._selector.modify(client.sock, selectors.EVENT_READ | selectors.EVENT_WRITE, client)

    def _write_client(self, client: Client) -> None:
        written = write_some(client.sock.send, client.outbox)
        if written is None:
            self._end(client)
            return
        del client.outbox[:written]
        if not client.outbox:
            self._selector.modify(client.sock, selectors.EVENT_READ, client)

    def _close_socket(self, client: Client) -> None:
        """Close at once: one last try at what is still to send, but never a wait for it."""
        if client.closed:
            return
        client.closed = True
        if client.outbox:
            write_some(client.sock.send, client.outbox)
            client.outbox = bytearray()
        self._selector.unregister(client.sock)
        client.sock.close()

    def _end(self, client: Client) -> None:
        """The connection is over (closed, broken, or over the limit): close it and clean up.

        A client still waiting for its browser session is cleaned up once that comes (its
        queued messages forwarded first, as they would have been had it stayed).
        """
        self._close_socket(client)
        self._clients.discard(client)
        if client.stage in ("attaching", "gone"):
            return
        client.stage = "gone"
        self._clean_up(client)

    def _clean_up(self, client: Client) -> None:
        """Forget the client; close what a guest opened; end its browser session.

        The requests go without waiting for their replies: the pipe keeps them in order. The
        client's own requests still on their way stay pending: their replies are dropped, and
        what they made for a guest is closed then (``_route_reply``).
        """
        for session in [s for s, owner in self._session_owner.items() if owner is client]:
            del self._session_owner[session]
        if client.is_guest:
            for target in client.targets:
                self._tell_browser("Target.closeTarget", {"targetId": target})
            for context in client.contexts:
                self._tell_browser("Target.disposeBrowserContext", {"browserContextId": context})
        if client.browser_session is not None:
            self._tell_browser("Target.detachFromTarget", {"sessionId": client.browser_session})


# -- the process ------------------------------------------------------------------------------


def start_browser(argv: list[str]) -> tuple[int, int, int]:
    """Start Chromium with its CDP pipe on fds 3 (its input) and 4 (its output).

    Returns the pid and our ends of the two pipes.
    """
    to_browser_read, to_browser_write = os.pipe()
    from_browser_read, from_browser_write = os.pipe()
    # Move Chromium's ends above 4 first, so that placing them on 3 and 4 cannot clobber each other.
    high_in = fcntl.fcntl(to_browser_read, fcntl.F_DUPFD_CLOEXEC, 10)
    high_out = fcntl.fcntl(from_browser_write, fcntl.F_DUPFD_CLOEXEC, 10)
    os.close(to_browser_read)
    os.close(from_browser_write)
    environment = {key: value for key, value in os.environ.items() if key not in OWN_ENVIRONMENT}
    pid = os.posix_spawnp(
        argv[0], argv, environment,
        file_actions=[(os.POSIX_SPAWN_DUP2, high_in, 3), (os.POSIX_SPAWN_DUP2, high_out, 4)],
    )
    os.close(high_in)
    os.close(high_out)
    return pid, to_browser_write, from_browser_read


def run(socket_path: str, browser_argv: list[str]) -> int:
    """Serve Chromium's pipe on ``socket_path`` until Chromium exits; return its exit code."""
    pid = 0  # Chromium's once it runs; 0 before, and again once reaped (the pid may be reused)
    stop_asked = False

    def stop_browser(signum: int, frame: object) -> None:
        # Chromium's exit ends us too: its pipe closes, and the loop with it.
        nonlocal stop_asked
        stop_asked = True
        if pid:
            try:
                os.kill(pid, signal.SIGTERM)
            except ProcessLookupError:
                pass

    # Before Chromium starts, so that no signal can end the bridge and leave Chromium running;
    # one that comes while it starts is passed on as soon as its pid is known.
    for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(signum, stop_browser)
    pid, to_fd, from_fd = start_browser(browser_argv)
    if stop_asked:
        stop_browser(signal.SIGTERM, None)

    listener = listen_at(socket_path)
    try:
        Bridge(listener, to_fd, from_fd).serve()
    finally:
        listener.close()
        try:
            os.unlink(socket_path)
        except OSError:
            pass
    _, status = os.waitpid(pid, 0)
    pid = 0
    return os.waitstatus_to_exitcode(status) if os.WIFEXITED(status) else 128 + os.WTERMSIG(status)


def _usage_error(problem: str) -> None:
    sys.stderr.write(f"{USAGE}\ncdp_bridge.py: error: {problem}\n")
    raise SystemExit(2)


def parse_args(argv: list[str]) -> tuple[str, list[str]]:
    """``--socket PATH -- BROWSER ARGS`` into the path and the browser's command line.

    By hand rather than with argparse, whose import would cost every session's bridge 0.6 MiB.
    """
    socket_path = None
    index = 0
    while index < len(argv):
        arg = argv[index]
        if arg == "--":
            index += 1
            break
        if arg in ("-h", "--help"):
            sys.stdout.write(f"{USAGE}\n\n{__doc__.splitlines()[0]}\n")
            raise SystemExit(0)
        if arg == "--socket":
            if index + 1 == len(argv):
                _usage_error("--socket needs a path")
            socket_path = argv[index + 1]
            index += 2
        elif arg.startswith("--socket="):
            socket_path = arg.partition("=")[2]
            index += 1
        elif arg.startswith("-"):
            _usage_error(f"unrecognized argument: {arg}")
        else:
            break  # the browser's command line, given without a "--" before it
    if not socket_path:
        _usage_error("the following argument is required: --socket")
    browser = argv[index:]
    if not browser:
        _usage_error("no browser command given after --")
    return socket_path, browser


def main(argv: list[str] | None = None) -> int:
    socket_path, browser = parse_args(sys.argv[1:] if argv is None else argv)
    return run(socket_path, browser)


if __name__ == "__main__":
    sys.exit(main())
