"""The viewer's websocket, relayed to one session's xpra; and who is watching which session.

xpra listens on a loopback port only; the service checks who is asking before it opens any
connection to it. The websocket carries xpra's own protocol, relayed byte for byte in both
directions. (The HTML5 client's files do not come through xpra: see ``html5_files``.)
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import defaultdict
from collections.abc import Awaitable, Callable

from starlette.websockets import WebSocket, WebSocketDisconnect
from websockets.asyncio.client import connect as ws_connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidMessage, InvalidStatus

log = logging.getLogger(__name__)

#: How often the service opens xpra's websocket when xpra drops the connection unanswered.
#: xpra peeks at a new connection's first bytes for one second at most and takes a silent one for
#: its own protocol, which drops an HTTP request that comes later (a busy machine); nothing was
#: said to xpra yet, so opening again is safe.
UPSTREAM_ATTEMPTS = 3


class ViewerTracker:
    """Counts the viewers connected to each session; runs a callback when the last one leaves."""

    def __init__(self) -> None:
        self._count: dict[str, int] = defaultdict(int)

    def count(self, session_id: str) -> int:
        return self._count.get(session_id, 0)

    @contextlib.asynccontextmanager
    async def viewing(self, session_id: str, on_last_leave: Callable[[], Awaitable[None]]):
        self._count[session_id] += 1
        try:
            yield
        finally:
            self._count[session_id] -= 1
            if self._count[session_id] <= 0:
                del self._count[session_id]
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


async def relay(websocket: WebSocket, port: int) -> None:
    """Connect to xpra's websocket, accept the viewer's and pump frames until either side closes.

    The viewer's websocket is accepted only once xpra's is open, so a viewer never sees a
    connection that leads nowhere.
    """
    try:
        upstream = await open_upstream(port)
    except (OSError, InvalidHandshake, InvalidStatus, TimeoutError) as exc:
        log.warning("viewer websocket: xpra on port %s refused or did not answer: %s", port, type(exc).__name__)
        await websocket.close(code=1011)
        return
    await websocket.accept(subprotocol="binary")

    async def viewer_to_xpra() -> None:
        while True:
            message = await websocket.receive()
            if message["type"] == "websocket.disconnect":
                return
            data = message.get("bytes")
            if data is None:
                data = (message.get("text") or "").encode()
            await upstream.send(data)

    async def xpra_to_viewer() -> None:
        async for data in upstream:
            if isinstance(data, str):
                await websocket.send_text(data)
            else:
                await websocket.send_bytes(data)

    tasks = [asyncio.create_task(viewer_to_xpra()), asyncio.create_task(xpra_to_viewer())]
    try:
        done, pending = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        for task in done:
            exc = task.exception()
            if exc and not isinstance(exc, (ConnectionClosed, WebSocketDisconnect, RuntimeError)):
                log.warning("viewer websocket relay ended: %r", exc)
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await upstream.close()
        with contextlib.suppress(Exception):
            await websocket.close()
