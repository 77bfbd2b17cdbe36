"""A watch-only viewer: what its browser sends to xpra, screened by the service.

xpra 3.1 can make a whole server read-only, not one of its clients, so a watch-only link is
enforced here, in the service's relay, whatever the browser on the other end runs: of what it
sends, only the packets that concern its own picture pass (its hello, pings, acknowledgements of
what was drawn, its choice of encoding); keys, pointer, clipboard, window moves and resizes,
focus, keyboard layouts, printers, files and commands are dropped. Its hello is rewritten so
that it joins beside the other viewers (never takes a session over, nor disconnects another by
taking its uuid), brings no keyboard, clipboard or screen size of its own, and starts nothing.

xpra's packets come framed: an 8-byte header (``P``, protocol flags, compression level, chunk
index, payload size) and the payload. The HTML5 client sends plain bencode, uncompressed, in one
chunk; a watch-only client that sends anything else (compressed, encrypted, raw chunks, another
encoder, something that is not xpra's protocol) is disconnected, as nothing could be screened.
"""

from __future__ import annotations

import logging
import secrets
import struct
from collections import Counter

from keepalive.viewer import bencode

log = logging.getLogger(__name__)

HEADER = struct.Struct("!cBBBL")
#: No packet of a watch-only client is near this; its hello is the largest (tens of KiB).
MAX_PACKET = 4 * 1024 * 1024

#: What a watch-only client may say: all of it about its own connection and picture.
ALLOWED = frozenset({
    b"hello", b"ping", b"ping_echo", b"damage-sequence", b"connection-data", b"buffer-refresh",
    b"suspend", b"resume", b"disconnect", b"encoding", b"quality", b"min-quality", b"speed",
    b"min-speed", b"set_deflate",
})
#: Capabilities a watch-only hello is made to say, whatever it said.
FORCED = {
    # steal: without it xpra refuses a client while another is connected; with --sharing=yes,
    # which the service always gives it, it takes nobody's place
    b"share": 1, b"steal": 1, b"lock": 0, b"keyboard": 0, b"clipboard": 0, b"file-transfer": 0,
    b"printing": 0, b"sound.send": 0, b"sound.receive": 0, b"exit_with_client": 0, b"exit_with_children": 0,
}
#: Capabilities taken out of a watch-only hello: a screen size (the server sizes its screen for
#: its viewers), DPI and colour profile (the session's fonts and colours), commands to start,
#: requests (``request``, and every ``*_request``: detach the others, stop or exit the server, a
#: screenshot...).
REMOVED = frozenset({
    b"desktop_size", b"desktop_mode_size", b"screen_sizes", b"dpi", b"dpi.x", b"dpi.y", b"xdpi", b"ydpi",
    b"icc", b"request", b"start", b"start-child", b"start-new-session", b"start_new_session",
    b"start-new-commands", b"command", b"session-name",
})
#: ... and whole families: keyboard maps, clipboard and file options, printers, shared memory
#: (``mmap``: the server would write into a file the client names) and encryption.
REMOVED_PREFIXES = (b"xkbmap_", b"keymap", b"keyboard_", b"clipboard.", b"file-", b"printer", b"mmap",
                    b"cipher", b"encryption")


class NotScreenable(Exception):
    """The watch-only client sent something the service cannot screen; it is disconnected."""


def frame(packet: list) -> bytes:
    """A packet as xpra frames it: plain bencode, uncompressed, one chunk."""
    payload = bencode.encode(packet)
    return HEADER.pack(b"P", 0, 0, 0, len(payload)) + payload


class WatchOnlyFilter:
    """Screens one watch-only client's byte stream towards xpra (see the module's docstring)."""

    def __init__(self) -> None:
        self._buffer = bytearray()
        # one uuid of its own for the connection (the hello comes again after xpra's challenge)
        self._uuid = secrets.token_hex(16).encode()
        self.dropped: Counter[str] = Counter()

    def feed(self, data: bytes) -> list[bytes]:
        """The frames to pass on for ``data`` (which may hold part of a packet, or several)."""
        self._buffer += data
        passed = []
        while len(self._buffer) >= HEADER.size:
            magic, flags, level, index, size = HEADER.unpack_from(self._buffer)
            if magic != b"P":
                raise NotScreenable("not xpra's protocol")
            if flags or level or index:
                raise NotScreenable(f"a packet that is encoded, compressed or chunked (flags {flags}, level {level}, "
                                    f"chunk {index})")
            if size > MAX_PACKET:
                raise NotScreenable(f"a packet of {size} bytes")
            if len(self._buffer) < HEADER.size + size:
                break
            payload = bytes(self._buffer[HEADER.size:HEADER.size + size])
            del self._buffer[:HEADER.size + size]
            screened = self._screen(payload)
            if screened is not None:
                passed.append(screened)
        return passed

    def _screen(self, payload: bytes) -> bytes | None:
        try:
            packet = bencode.decode(payload)
        except bencode.BencodeError as error:
            raise NotScreenable(f"a packet that is not bencode: {error}") from None
        if not isinstance(packet, list) or not packet or not isinstance(packet[0], bytes):
            raise NotScreenable("a packet without a type")
        kind = packet[0]
        if kind not in ALLOWED:
            name = kind[:40].decode("ascii", "replace")
            if not self.dropped[name]:
                log.debug("watch-only viewer: dropped its first %r packet", name)
            self.dropped[name] += 1
            return None
        if kind == b"hello":
            if len(packet) < 2 or not isinstance(packet[1], dict):
                raise NotScreenable("a hello without capabilities")
            return frame([kind, self._watch_only_hello(packet[1]), *packet[2:]])
        return HEADER.pack(b"P", 0, 0, 0, len(payload)) + payload

    def _watch_only_hello(self, capabilities: dict) -> dict:
        kept = {key: value for key, value in capabilities.items()
                if key not in REMOVED and not key.startswith(REMOVED_PREFIXES) and not key.endswith(b"_request")}
        return {**kept, **FORCED, b"uuid": self._uuid}
