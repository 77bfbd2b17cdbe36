"""Each session's DevTools, as an authenticated websocket: ``ws://HOST:PORT/sessions/{id}/cdp``.

A session's Chromium speaks CDP only to its bridge (keepalive.engine.cdp_bridge), which serves a
Unix socket that only the session's user and root can open. This gateway is the one way in over
the network: it checks the caller's key before any byte reaches the browser, then relays
websocket frames to the bridge's socket and back.

Keys: the service's own (made per run, held in memory: the service's Playwright uses it), and
whatever ``guests`` accepts for others: the API token as a bearer header, or a DevTools link's
own key (a header, or ``?key=`` for clients that cannot send one). Guests per session and their
idle time are bounded. It listens on
the service's host, on a port of its own (``cdp_port``), since the service must reach its
sessions' browsers while adopting them, before the API answers requests.
"""

from __future__ import annotations

import asyncio
import hmac
import logging
import os
import re
import secrets
import socket
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.datastructures import Headers
from websockets.exceptions import ConnectionClosed
from websockets.http11 import Request, Response

from keepalive.engine.cdp_bridge import MESSAGE_LIMIT, SEPARATOR

log = logging.getLogger(__name__)

PATH = re.compile(r"^/sessions/(?P<session_id>[0-9a-f]{1,32})/cdp$")
#: What the bridge takes as "this connection is the service's own" (see cdp_bridge).
SERVICE_HELLO = b'{"keepalive":{"role":"service"}}' + SEPARATOR


@dataclass(frozen=True)
class Admission:
    """Who a caller is: the service itself, or a guest allowed into one session."""

    session_id: str
    role: str  # "service" or "guest"
    who: str  # for the log: "service", "api token", "link ..."; never a secret


#: (session id, the bearer secret given, or None) -> a description of the guest, or None to refuse
GuestCheck = Callable[[str, str | None], str | None]
#: session id -> the bridge's socket path, or None when there is no such session (or no browser)
SocketLookup = Callable[[str], Path | None]


async def open_unix(path: Path) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """Connect to a Unix socket at any depth (AF_UNIX paths stop at 108 bytes)."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    folder = os.open(path.parent, os.O_PATH | os.O_CLOEXEC)
    try:
        sock.setblocking(False)
        await asyncio.get_running_loop().sock_connect(sock, f"/proc/self/fd/{folder}/{path.name}")
    except BaseException:
        sock.close()
        raise
    finally:
        os.close(folder)
    return await asyncio.open_unix_connection(sock=sock, limit=MESSAGE_LIMIT)


QUIET_WEBSOCKETS_LOG = logging.getLogger("keepalive.cdp.websockets")
QUIET_WEBSOCKETS_LOG.setLevel(logging.WARNING)


def link_key(path: str) -> str | None:
    """The ``?key=`` of a DevTools link (POST /sessions/{id}/cdp-link), for clients that cannot
    send a header."""
    values = parse_qs(urlsplit(path).query).get("key")
    return values[0] if values else None


async def bridge_answers(path: Path) -> bool:
    """True when a bridge accepts connections on ``path`` (not just a file left by a dead one)."""
    try:
        _, writer = await open_unix(path)
    except OSError:
        return False
    writer.close()
    return True


def bearer(headers: Headers) -> str | None:
    value = headers.get("Authorization", "")
    scheme, _, secret = value.partition(" ")
    return secret.strip() if scheme.lower() == "bearer" and secret.strip() else None


class CdpGateway:
    def __init__(
        self, host: str, port: int, sockets: SocketLookup, guests: GuestCheck,
        max_clients: int = 4, idle_timeout: float = 600.0,
        on_guest: Callable[[str], Awaitable[None]] | None = None,
    ) -> None:
        """``max_clients``: guest connections per session; ``idle_timeout``: seconds a guest
        connection may stay silent both ways before it is closed; ``on_guest(session_id)``:
        awaited when a guest connects (before it reaches the browser; ``clients`` counts it already)
        and when it leaves: a use of the session (keepalive.engine.standby wakes it, and tells its
        page whether anyone watches)."""
        self.host = host
        self._port = port
        self._sockets = sockets
        self._guests = guests
        self._max_clients = max_clients
        self._idle_timeout = idle_timeout
        self._on_guest = on_guest
        #: The service's own key: made per run, never written anywhere.
        self.service_key = secrets.token_urlsafe(32)
        self._server: Server | None = None
        self._connections: set[ServerConnection] = set()

    async def start(self) -> None:
        self._server = await serve(
            self._relay, self.host, self._port,
            process_request=self._admit, max_size=MESSAGE_LIMIT, compression=None,
            # CDP is chatty and latency-bound; a dead peer shows as a closed socket soon enough
            ping_interval=None,
            # its debug lines carry request lines (a link's key) and whole CDP frames: never logged
            logger=QUIET_WEBSOCKETS_LOG,
        )
        log.info("DevTools gateway on %s", self.base_url)

    @property
    def port(self) -> int:
        assert self._server is not None, "CdpGateway.start() was not called"
        return self._server.sockets[0].getsockname()[1]

    @property
    def base_url(self) -> str:
        """The gateway as the service itself reaches it (a wildcard address is reached on loopback)."""
        host = {"0.0.0.0": "127.0.0.1", "::": "::1", "": "127.0.0.1"}.get(self.host, self.host)
        host = f"[{host}]" if ":" in host else host
        return f"ws://{host}:{self.port}"

    def url(self, session_id: str) -> str:
        return f"{self.base_url}/sessions/{session_id}/cdp"

    @property
    def service_headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.service_key}"}

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None

    # -- admission: before the websocket handshake, so a refused caller reaches nothing -------

    def _admission(self, request: Request) -> Admission | Response:
        path = request.path.partition("?")[0]
        match = PATH.match(path)
        if match is None:
            return Response(404, "Not Found", Headers(), b"no such endpoint\n")
        session_id = match["session_id"]
        secret = bearer(request.headers) or link_key(request.path)
        if secret is not None and hmac.compare_digest(secret.encode(), self.service_key.encode()):
            admission = Admission(session_id, "service", "service")
        else:
            who = self._guests(session_id, secret)
            if who is None:
                return Response(401, "Unauthorized", Headers({"WWW-Authenticate": "Bearer"}), b"a valid key is needed\n")
            admission = Admission(session_id, "guest", who)
            if self.clients(session_id) >= self._max_clients:
                return Response(503, "Service Unavailable", Headers(),
                                f"this session already has {self._max_clients} DevTools clients\n".encode())
        if self._sockets(session_id) is None:
            return Response(404, "Not Found", Headers(), b"no such session, or its browser is not running\n")
        return admission

    def _admit(self, connection: ServerConnection, request: Request) -> Response | None:
        admission = self._admission(request)
        if isinstance(admission, Response):
            log.info("DevTools: refused %s for %s (%s)", request.path.partition("?")[0], connection.remote_address,
                     admission.status_code)
            return admission
        connection.admission = admission  # type: ignore[attr-defined]
        return None

    # -- the relay ------------------------------------------------------------------------------

    async def _relay(self, connection: ServerConnection) -> None:
        admission: Admission = connection.admission  # type: ignore[attr-defined]
        guest = admission.role == "guest"
        # Counted from here on, while the session wakes too: against max_clients, and as a watcher.
        self._connections.add(connection)
        try:
            if guest and self._on_guest is not None:
                try:
                    await self._on_guest(admission.session_id)
                except Exception as error:  # it could not wake: say why, reach nothing
                    await connection.close(1013, f"the session cannot wake now: {error}"[:120])
                    return
            await self._pump_to_browser(connection, admission)
        finally:
            self._connections.discard(connection)
            if guest and self._on_guest is not None:
                await self._on_guest(admission.session_id)

    async def _pump_to_browser(self, connection: ServerConnection, admission: Admission) -> None:
        path = self._sockets(admission.session_id)
        if path is None:
            await connection.close(1011, "the session's browser is gone")
            return
        try:
            reader, writer = await open_unix(path)
        except OSError as error:
            log.warning("session %s: DevTools bridge not reachable: %s", admission.session_id, error)
            await connection.close(1011, "the session's browser is not reachable")
            return
        if admission.role == "service":
            writer.write(SERVICE_HELLO)
        guest = admission.role == "guest"
        if guest:
            log.info("session %s: DevTools client connected (%s)", admission.session_id, admission.who)
        try:
            await _pump(connection, reader, writer, self._idle_timeout if guest else None)
        finally:
            writer.close()
            if guest:
                log.info("session %s: DevTools client disconnected (%s)", admission.session_id, admission.who)

    def clients(self, session_id: str) -> int:
        """Guest connections to one session now."""
        return sum(
            1 for c in self._connections
            if c.admission.session_id == session_id and c.admission.role == "guest"  # type: ignore[attr-defined]
        )


async def _pump(
    connection: ServerConnection, reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
    idle_timeout: float | None,
) -> None:
    """Frames to NUL-separated messages and back, until either side goes (or, with
    ``idle_timeout``, until nothing went either way for that long)."""
    loop = asyncio.get_running_loop()
    last_activity = loop.time()

    async def upstream() -> None:
        nonlocal last_activity
        async for frame in connection:
            last_activity = loop.time()
            writer.write((frame.encode() if isinstance(frame, str) else frame) + SEPARATOR)
            await writer.drain()

    async def downstream() -> None:
        nonlocal last_activity
        while True:
            raw = await reader.readuntil(SEPARATOR)
            last_activity = loop.time()
            await connection.send(raw[:-1].decode())

    async def idle_watch() -> None:
        assert idle_timeout is not None
        while (silent := loop.time() - last_activity) < idle_timeout:
            await asyncio.sleep(idle_timeout - silent)
        log.info("DevTools client idle for %.0f s: closing it", idle_timeout)

    tasks = [asyncio.create_task(upstream()), asyncio.create_task(downstream())]
    if idle_timeout is not None:
        tasks.append(asyncio.create_task(idle_watch()))
    try:
        await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in tasks:
            task.cancel()
        results = await asyncio.gather(*tasks, return_exceptions=True)
        for result in results:
            if isinstance(result, Exception) and not isinstance(
                result, (ConnectionClosed, asyncio.IncompleteReadError, ConnectionError, asyncio.CancelledError)
            ):
                log.warning("DevTools relay ended: %s", result)
        await connection.close()
