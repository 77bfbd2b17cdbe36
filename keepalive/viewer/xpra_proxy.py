"""The viewer's websocket, relayed to one session's xpra; and who is watching which session.

xpra listens on a loopback port only; the service checks who is asking before it opens any
connection to it. The websocket carries xpra's own protocol, relayed byte for byte in both
directions, but for a watch-only viewer's (``watch_only``). (The HTML5 client's files do not
come through xpra: see ``html5_files``.)
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import defaultdict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from starlette.websockets import WebSocket, WebSocketDisconnect
from websockets.asyncio.client import connect as ws_connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidMessage, InvalidStatus

from keepalive.viewer.watch_only import NotScreenable, WatchOnlyFilter, frame

log = logging.getLogger(__name__)

#: How often the service opens xpra's websocket when xpra drops the connection unanswered.
#: xpra peeks at a new connection's first bytes for one second at most and takes a silent one for
#: its own protocol, which drops an HTTP request that comes later (a busy machine); nothing was
#: said to xpra yet, so opening again is safe.
UPSTREAM_ATTEMPTS = 3
#: Seconds a viewer that was told to go (another took over) has to close its connection itself.
CLIENT_CLOSE_WAIT = 5.0


@dataclass(eq=False)
class Viewer:
    """One viewer's connection: its rights, and how to end it (set ``ended``, say why)."""

    watch_only: bool
    ended: asyncio.Event = field(default_factory=asyncio.Event)
    why: str = ""

    def end(self, why: str) -> None:
        self.why = why
        self.ended.set()


class ViewerTracker:
    """The viewers connected to each session; runs a callback when the last one leaves.

    With ``take_over``, a full viewer that arrives ends the full viewers that were there
    (VIEWER_SHARING=takeover, done here rather than by xpra, whose sharing is all or nothing:
    watch-only viewers stay beside whoever drives).
    """

    def __init__(self) -> None:
        self._viewers: dict[str, list[Viewer]] = defaultdict(list)

    def count(self, session_id: str) -> int:
        return len(self._viewers.get(session_id, ()))

    def counts(self, session_id: str) -> dict[str, int]:
        """``{"full": n, "watch_only": m}``."""
        viewers = self._viewers.get(session_id, ())
        watch_only = sum(1 for viewer in viewers if viewer.watch_only)
        return {"full": len(viewers) - watch_only, "watch_only": watch_only}

    @contextlib.asynccontextmanager
    async def viewing(self, session_id: str, on_last_leave: Callable[[], Awaitable[None]], watch_only: bool = False,
                      take_over: bool = False):
        viewer = Viewer(watch_only)
        if take_over and not watch_only:
            for other in self._viewers.get(session_id, ()):
                if not other.watch_only:
                    other.end("another viewer took over this session")
        self._viewers[session_id].append(viewer)
        try:
            yield viewer
        finally:
            self._viewers[session_id].remove(viewer)
            if not self._viewers[session_id]:
                del self._viewers[session_id]
                try:
                    await on_last_leave()
                except Exception:  # a failed clean-up must not turn into a viewer error
                    log.exception("clean-up after the last viewer of %s failed", session_id)


async def open_upstream(port: int, attempts: int = UPSTREAM_ATTEMPTS):
    """xpra's websocket on 127.0.0.1:``port``; opened again if xpra dropped it unanswered."""
    attempt = 1
    while True:
        try:
            return await ws_connect(
                f"ws://127.0.0.1:{port}/",
                subprotocols=["binary"],
                compression=None,
                max_size=None,
                open_timeout=10,
                # xpra pings inside its own protocol; websocket-level keepalive pings are not needed
                ping_interval=None,
            )
        except InvalidMessage:  # closed before any answer: not a refusal
            if attempt >= attempts:
                raise
            attempt += 1
            log.info("viewer websocket: xpra on port %s dropped the connection unanswered; opening it again", port)


async def relay(websocket: WebSocket, port: int, viewer: Viewer | None = None) -> None:
    """Connect to xpra's websocket, accept the viewer's and pump frames until either side closes,
    or ``viewer`` is ended (then the viewer is told why, in xpra's own words).

    The viewer's websocket is accepted only once xpra's is open, so a viewer never sees a
    connection that leads nowhere. A watch-only viewer's packets are screened on their way.
    """
    viewer = viewer or Viewer(watch_only=False)
    try:
        upstream = await open_upstream(port)
    except (OSError, InvalidHandshake, InvalidStatus, TimeoutError) as exc:
        log.warning("viewer websocket: xpra on port %s refused or did not answer: %s", port, type(exc).__name__)
        await websocket.close(code=1011)
        return
    await websocket.accept(subprotocol="binary")
    screen = WatchOnlyFilter() if viewer.watch_only else None

    async def viewer_to_xpra() -> None:
        while True:
            message = await websocket.receive()
            if message["type"] == "websocket.disconnect":
                return
            data = message.get("bytes")
            if data is None:
                data = (message.get("text") or "").encode()
            if screen is None:
                await upstream.send(data)
                continue
            try:
                for passed in screen.feed(data):
                    await upstream.send(passed)
            except NotScreenable as refused:
                log.warning("watch-only viewer disconnected: it sent %s", refused)
                return

    async def xpra_to_viewer() -> None:
        async for data in upstream:
            if isinstance(data, str):
                await websocket.send_text(data)
            else:
                await websocket.send_bytes(data)

    inbound, outbound = asyncio.create_task(viewer_to_xpra()), asyncio.create_task(xpra_to_viewer())
    ended = asyncio.create_task(viewer.ended.wait())
    tasks = [inbound, outbound, ended]
    try:
        done, pending = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        for task in done - {ended}:
            exc = task.exception()
            if exc and not isinstance(exc, (ConnectionClosed, WebSocketDisconnect, RuntimeError)):
                log.warning("viewer websocket relay ended: %r", exc)
        if ended in done:
            await _tell_and_part(websocket, upstream, inbound, outbound, viewer.why)
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await upstream.close()
        if screen is not None and screen.dropped:
            log.info("watch-only viewer left; dropped what it sent: %s", dict(screen.dropped.most_common(8)))
        with contextlib.suppress(Exception):
            await websocket.close()


async def _tell_and_part(websocket: WebSocket, upstream, inbound: asyncio.Task, outbound: asyncio.Task,
                         why: str) -> None:
    """End a viewer's connection the way xpra would: with a ``disconnect`` packet saying why, after
    which the client closes the connection itself and does not connect again.

    The order matters. xpra drops this client first, and what it had sent reaches the viewer whole
    before the reason does (a packet cut in the middle would garble the one after it). Then the
    client must get to the packet before it sees the connection close: the HTML5 client reads in
    a worker, and a close that overtakes the packet reads as a lost connection, which it opens again.
    """
    inbound.cancel()
    await upstream.close()
    await asyncio.wait([outbound], timeout=5)
    if not outbound.done():
        return
    try:
        await websocket.send_bytes(frame([b"disconnect", b"new-client", why.encode()]))
        async with asyncio.timeout(CLIENT_CLOSE_WAIT):
            while (await websocket.receive())["type"] != "websocket.disconnect":
                pass
    except (TimeoutError, WebSocketDisconnect, RuntimeError):
        pass
