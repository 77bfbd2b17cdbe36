"""The session display's X authority file: one MIT-MAGIC-COOKIE-1 that Xvfb demands and its clients show.

Xvfb reads the cookie from ``-auth FILE`` and refuses every client without it; clients (the kiosk
Chromium, xpra, xrandr) find it through ``XAUTHORITY``. The file format is libXau's: per entry,
a big-endian 16-bit family, then address, display number, auth name and data, each as a
16-bit length and its bytes.

Two entries with the same cookie: one for this host's local connections (FamilyLocal and the
host name, what ``xauth add`` writes and the only kind python-xlib looks for), one for any host
(FamilyWild, which libXau clients still match should the host name change). Nothing but the
local socket reaches the display either way: Xvfb runs with ``-nolisten tcp``.
"""

from __future__ import annotations

import secrets
import socket
import struct
from pathlib import Path

from keepalive.files import write_file

#: libXau's families: a local connection to the named host, and any address.
FAMILY_LOCAL = 256
FAMILY_WILD = 0xFFFF
COOKIE_NAME = b"MIT-MAGIC-COOKIE-1"


def _counted(data: bytes) -> bytes:
    return struct.pack(">H", len(data)) + data


def authority_entry(display: int, cookie: bytes, family: int = FAMILY_WILD, address: bytes = b"") -> bytes:
    """One entry of an X authority file: ``cookie`` for display ``:display``."""
    return (
        struct.pack(">H", family)
        + _counted(address)
        + _counted(str(int(display)).encode())
        + _counted(COOKIE_NAME)
        + _counted(cookie)
    )


def write_authority(path: Path, display: int, owner: tuple[int, int] | None = None) -> None:
    """A fresh cookie for ``:display`` in ``path`` (0600, ``owner``'s); any older file is replaced."""
    cookie = secrets.token_bytes(16)
    entries = (
        authority_entry(display, cookie, FAMILY_LOCAL, socket.gethostname().encode())
        + authority_entry(display, cookie, FAMILY_WILD)
    )
    write_file(path, entries, 0o600, owner)
