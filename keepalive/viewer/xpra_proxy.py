"""Reverse proxy from the service's viewer path to one session's xpra (HTTP and websocket).

xpra listens on a loopback port only; the service checks who is asking before it opens any
connection to it. HTTP requests are plain GETs for the HTML5 client's static files; the websocket
carries xpra's own protocol, relayed byte for byte in both directions.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import defaultdict
from collections.abc import Awaitable, Callable

import httpx
from starlette.websockets import WebSocket, WebSocketDisconnect
from websockets.asyncio.client import connect as ws_connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidStatus

log = logging.getLogger(__name__)

# Request headers worth passing to xpra's static file server; nothing else (no cookies, no tokens).
_FORWARD_REQUEST = ("accept", "if-none-match", "if-modified-since", "range")
# Response headers worth passing back to the viewer.
_FORWARD_RESPONSE = ("content-type", "etag", "last-modified", "content-range", "accept-ranges", "cache-control")


class XpraUnavailable(Exception):
    """xpra did not answer (the session is starting, recovering or gone)."""


async def fetch(port: int, path: str, headers: dict[str, str]) -> httpx.Response:
    """GET ``path`` from the xpra on 127.0.0.1:``port`` (the files are small: read whole)."""
    wanted = {k: v for k, v in headers.items() if k.lower() in _FORWARD_REQUEST}
    try:
        async with httpx.AsyncClient(timeout=httpx.Timeout(15.0, connect=3.0), trust_env=False) as client:
            return await client.get(f"http://127.0.0.1:{port}/{path}", headers=wanted)
    except httpx.HTTPError as exc:
        raise XpraUnavailable(f"xpra is not answering ({type(exc).__name__})") from exc


def response_headers(upstream: httpx.Response) -> dict[str, str]:
    return {k: v for k, v in upstream.headers.items() if k.lower() in _FORWARD_RESPONSE}


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


async def relay(websocket: WebSocket, port: int) -> None:
    """Connect to xpra's websocket, accept the viewer's and pump frames until either side closes.

    The viewer's websocket is accepted only once xpra's is open, so a viewer never sees a
    connection that leads nowhere.
    """
    url = f"ws://127.0.0.1:{port}/"
    try:
        upstream = await ws_connect(
            url,
            subprotocols=["binary"],
            compression=None,
            max_size=None,
            open_timeout=10,
            # xpra pings inside its own protocol; websocket-level keepalive pings are not needed
            ping_interval=None,
        )
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
