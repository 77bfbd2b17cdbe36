"""The kiosk Chromium's only DevTools door: a pipe, shared out over a private Unix socket.

xpra starts this as the session's child (``python -I cdp_bridge.py --socket PATH -- chromium
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

Standard library only: it runs under the session's user, from the service's interpreter, with
``-I``; and it must stay small, since every session has one.
"""

from __future__ import annotations

import argparse
import asyncio
import fcntl
import itertools
import json
import os
import signal
import socket
import sys
from dataclasses import dataclass, field

#: Chromium's pipe protocol and ours: one JSON message, then a NUL byte.
SEPARATOR = b"\0"
#: A single message can be a full-page screenshot in base64: allow big ones.
MESSAGE_LIMIT = 256 * 1024 * 1024
#: What a guest may not do: end the browser (an error answers it). Closing the kiosk page is
#: let through and handled by the service like a crash (the page is reopened): refusing it would
#: leave a Playwright client waiting forever for the page's close.
GUEST_REFUSED = frozenset({"Browser.close", "Browser.crash", "Browser.crashGpuProcess"})
GUEST_OWN_CONTEXT_ONLY = frozenset({"Target.disposeBrowserContext"})


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


@dataclass(eq=False)
class Client:
    """One connection on the Unix socket, and what it made in the browser."""

    number: int
    writer: asyncio.StreamWriter
    role: str = "guest"
    browser_session: str | None = None
    ready: asyncio.Event = field(default_factory=asyncio.Event)
    targets: set[str] = field(default_factory=set)
    contexts: set[str] = field(default_factory=set)

    @property
    def is_guest(self) -> bool:
        return self.role != "service"

    def send(self, message: dict) -> None:
        if self.writer.is_closing():
            return
        self.writer.write(json.dumps(message, separators=(",", ":")).encode() + SEPARATOR)


class Bridge:
    """Shares one CDP pipe among many clients (see the module's docstring)."""

    def __init__(self, to_browser: asyncio.StreamWriter, from_browser: asyncio.StreamReader) -> None:
        self._to_browser = to_browser
        self._from_browser = from_browser
        self._ids = itertools.count(1)
        self._numbers = itertools.count(1)
        # our id -> (client or None for the bridge's own, the client's id, the request)
        self._pending: dict[int, tuple[Client | None, object, dict]] = {}
        self._own_replies: dict[int, asyncio.Future[dict]] = {}
        # CDP session id -> the client it belongs to
        self._session_owner: dict[str, Client] = {}
        self._clients: set[Client] = set()
        self._browser_gone = False

    # -- the browser side --------------------------------------------------------------------

    def _to_chrome(self, message: dict) -> None:
        self._to_browser.write(json.dumps(message, separators=(",", ":")).encode() + SEPARATOR)

    async def _call(self, method: str, params: dict | None = None) -> dict:
        """A request of the bridge's own, on the browser's root session."""
        if self._browser_gone:
            raise ConnectionError("the browser is gone")
        number = next(self._ids)
        reply: asyncio.Future[dict] = asyncio.get_running_loop().create_future()
        self._own_replies[number] = reply
        self._pending[number] = (None, None, {"method": method})
        self._to_chrome({"id": number, "method": method, "params": params or {}})
        return await reply

    async def pump_from_browser(self) -> None:
        """Route what Chromium says; returns when the pipe closes (Chromium is gone)."""
        while True:
            try:
                raw = await self._from_browser.readuntil(SEPARATOR)
            except (asyncio.IncompleteReadError, ConnectionError):
                self._lose_browser()
                return
            try:
                message = json.loads(raw[:-1])
            except ValueError:
                continue
            if "id" in message:
                self._route_reply(message)
            else:
                self._route_event(message)

    def _lose_browser(self) -> None:
        """Chromium is gone: every client hears so now, not when this process ends.

        Waiting requests would otherwise wait for their timeouts, and a client connected to a
        dead browser (the service's own, reconnecting during a recovery) for its own.
        """
        self._browser_gone = True
        for reply in self._own_replies.values():
            if not reply.done():
                reply.set_exception(ConnectionError("the browser is gone"))
        self._own_replies.clear()
        for client in self._clients:
            client.writer.close()

    def _route_reply(self, message: dict) -> None:
        entry = self._pending.pop(message["id"], None)
        if entry is None:
            return
        client, their_id, request = entry
        if client is None:
            reply = self._own_replies.pop(message["id"], None)
            if reply is not None and not reply.done():
                reply.set_result(message)
            return
        self._remember(client, request, message.get("result") or {})
        message["id"] = their_id
        self._deliver(client, message)

    def _remember(self, client: Client, request: dict, result: dict) -> None:
        method = request.get("method")
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

    @staticmethod
    def _deliver(client: Client, message: dict) -> None:
        # The client's own browser session is its "root": it never sees that session's id.
        if message.get("sessionId") == client.browser_session:
            message.pop("sessionId", None)
        client.send(message)

    # -- the clients' side -------------------------------------------------------------------

    async def serve_client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        client = Client(next(self._numbers), writer)
        if self._browser_gone:
            writer.close()
            return
        self._clients.add(client)
        try:
            first = await self._read(reader)
            if first is None:
                return
            if isinstance(first.get("keepalive"), dict):
                client.role = "service" if first["keepalive"].get("role") == "service" else "guest"
                first = None
            attached = await self._call("Target.attachToBrowserTarget")
            client.browser_session = attached.get("result", {}).get("sessionId")
            if client.browser_session is None:
                client.send({"id": 0, "error": {"code": -32000, "message": "the browser refused a session"}})
                return
            self._session_owner[client.browser_session] = client
            if first is not None:
                self._forward(client, first)
            while (message := await self._read(reader)) is not None:
                self._forward(client, message)
        except ConnectionError:
            pass  # the browser went (or the client): the connection ends either way
        finally:
            self._clients.discard(client)
            await self._client_gone(client)
            writer.close()

    @staticmethod
    async def _read(reader: asyncio.StreamReader) -> dict | None:
        while True:
            try:
                raw = await reader.readuntil(SEPARATOR)
            except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, ConnectionError):
                return None
            try:
                message = json.loads(raw[:-1])
            except ValueError:
                continue
            if isinstance(message, dict):
                return message

    def _forward(self, client: Client, message: dict) -> None:
        their_id = message.get("id")
        session = message.get("sessionId") or client.browser_session
        refusal = self._refusal(client, session, message)
        if refusal is not None:
            reply = {"id": their_id, "error": {"code": -32000, "message": refusal}}
            if "sessionId" in message:  # a reply goes back on the session it was asked on
                reply["sessionId"] = message["sessionId"]
            client.send(reply)
            return
        number = next(self._ids)
        self._pending[number] = (client, their_id, message)
        self._to_chrome({**message, "id": number, "sessionId": session})

    def _refusal(self, client: Client, session: str, message: dict) -> str | None:
        if self._session_owner.get(session) is not client:
            return f"no session {session} on this connection"
        if not client.is_guest:
            return None
        method = message.get("method", "")
        params = message.get("params") or {}
        if method in GUEST_REFUSED:
            return f"{method} is refused: the kiosk browser belongs to its keepalive session"
        if method in GUEST_OWN_CONTEXT_ONLY and params.get("browserContextId") not in client.contexts:
            return f"{method} is refused for a context this connection did not create"
        return None

    async def _client_gone(self, client: Client) -> None:
        """Forget the client; close what a guest opened; end its browser session."""
        for number in [n for n, (owner, _, _) in self._pending.items() if owner is client]:
            del self._pending[number]
        for session in [s for s, owner in self._session_owner.items() if owner is client]:
            del self._session_owner[session]
        try:
            if client.is_guest:
                for target in client.targets:
                    await asyncio.wait_for(self._call("Target.closeTarget", {"targetId": target}), 5)
                for context in client.contexts:
                    await asyncio.wait_for(
                        self._call("Target.disposeBrowserContext", {"browserContextId": context}), 5
                    )
            if client.browser_session is not None:
                await asyncio.wait_for(
                    self._call("Target.detachFromTarget", {"sessionId": client.browser_session}), 5
                )
        except (TimeoutError, ConnectionError):
            pass


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
    pid = os.posix_spawnp(
        argv[0], argv, os.environ,
        file_actions=[(os.POSIX_SPAWN_DUP2, high_in, 3), (os.POSIX_SPAWN_DUP2, high_out, 4)],
    )
    os.close(high_in)
    os.close(high_out)
    return pid, to_browser_write, from_browser_read


async def run(socket_path: str, browser_argv: list[str]) -> int:
    loop = asyncio.get_running_loop()
    pid, to_fd, from_fd = start_browser(browser_argv)
    for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        loop.add_signal_handler(signum, os.kill, pid, signal.SIGTERM)  # Chromium's exit ends us too

    from_browser = asyncio.StreamReader(limit=MESSAGE_LIMIT)
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(from_browser), os.fdopen(from_fd, "rb", 0))
    transport, protocol = await loop.connect_write_pipe(asyncio.streams.FlowControlMixin, os.fdopen(to_fd, "wb", 0))
    to_browser = asyncio.StreamWriter(transport, protocol, None, loop)
    bridge = Bridge(to_browser, from_browser)

    if os.path.exists(socket_path):
        os.unlink(socket_path)  # a bridge before us died without cleaning up
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    old_umask = os.umask(0o177)  # the socket is born 0600
    try:
        listener.bind(unix_path(socket_path))
    finally:
        os.umask(old_umask)
    server = await asyncio.start_unix_server(bridge.serve_client, sock=listener, limit=MESSAGE_LIMIT)
    try:
        await bridge.pump_from_browser()
    finally:
        server.close()
        try:
            os.unlink(socket_path)
        except OSError:
            pass
    _, status = await asyncio.to_thread(os.waitpid, pid, 0)
    return os.waitstatus_to_exitcode(status) if os.WIFEXITED(status) else 128 + os.WTERMSIG(status)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--socket", required=True, help="the Unix socket to serve CDP on")
    parser.add_argument("browser", nargs=argparse.REMAINDER, help="-- then Chromium's command line")
    args = parser.parse_args(argv)
    browser = args.browser[1:] if args.browser[:1] == ["--"] else args.browser
    if not browser:
        parser.error("no browser command given after --")
    return asyncio.run(run(args.socket, browser))


if __name__ == "__main__":
    sys.exit(main())
