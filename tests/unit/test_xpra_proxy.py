"""Opening xpra's websocket: a connection xpra drops unanswered is opened again (a real loopback server)."""

from __future__ import annotations

import asyncio
import base64
import hashlib

import pytest
from websockets.exceptions import InvalidMessage

from keepalive.viewer.xpra_proxy import UPSTREAM_ATTEMPTS, open_upstream

_GUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"  # RFC 6455's constant


class XpraLike:
    """Drops its first ``drops`` connections once their request has come (as xpra does with one
    that was silent through its peek), then answers the websocket handshake."""

    def __init__(self, drops: int) -> None:
        self.drops = drops
        self.connections = 0

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        request = await reader.readuntil(b"\r\n\r\n")
        if self.connections <= self.drops:
            writer.close()
            return
        key = next(line.split(b":", 1)[1].strip() for line in request.split(b"\r\n")
                   if line.lower().startswith(b"sec-websocket-key:"))
        accept = base64.b64encode(hashlib.sha1(key + _GUID.encode()).digest())
        writer.write(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                     b"Sec-WebSocket-Accept: " + accept + b"\r\nSec-WebSocket-Protocol: binary\r\n\r\n")
        await writer.drain()
        await reader.read(1)  # the client's close frame: answer it with one of ours (no payload)
        writer.write(b"\x88\x00")
        await writer.drain()
        writer.close()


async def _open_with(drops: int) -> tuple[XpraLike, object]:
    xpra = XpraLike(drops)
    server = await asyncio.start_server(xpra.handle, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        try:
            upstream = await open_upstream(port)
        except InvalidMessage as exc:
            return xpra, exc
        await upstream.close()
        return xpra, upstream
    finally:
        server.close()


async def test_a_connection_dropped_unanswered_is_opened_again():
    xpra, upstream = await _open_with(drops=UPSTREAM_ATTEMPTS - 1)
    assert not isinstance(upstream, Exception) and upstream.subprotocol == "binary"
    assert xpra.connections == UPSTREAM_ATTEMPTS


async def test_an_xpra_that_keeps_dropping_is_given_up_on():
    xpra, error = await _open_with(drops=UPSTREAM_ATTEMPTS)
    assert isinstance(error, InvalidMessage)
    assert xpra.connections == UPSTREAM_ATTEMPTS


async def test_a_port_nobody_listens_on_is_an_error_at_once():
    server = await asyncio.start_server(lambda r, w: None, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    server.close()
    await server.wait_closed()
    with pytest.raises(OSError):
        await open_upstream(port)
