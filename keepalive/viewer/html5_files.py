"""The HTML5 client's files, read by the service from xpra's own install (only the websocket goes to xpra).

Why not through xpra's HTTP server: xpra tells what a new connection is by peeking at its first
bytes, for one second at most; a request that arrives later (on a busy machine, while the page
fetches some forty files at once) is taken for xpra's own protocol and dropped ("invalid packet
format, HTTP GET request" in xpra's log). The viewer then answered 502 for one script
(jquery-ui.js, forge.js), and the client never drew a window or never answered xpra's challenge.
xpra also gzips every file anew for every request. The files are root's, installed with xpra, and
do not change while the service runs: they are read once.
"""

from __future__ import annotations

import re
import shutil
from dataclasses import dataclass
from pathlib import Path

#: Paths of xpra's www dir a viewer needs; nothing else is served from it.
CLIENT_PATH = re.compile(r"^(?:index\.html|favicon\.(?:ico|png)|(?:css|js|icons)/[A-Za-z0-9_.+-]+(?:/[A-Za-z0-9_.+-]+)*)$")

_CONTENT_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".png": "image/png",
    ".ico": "image/x-icon",
    ".svg": "image/svg+xml",
    ".map": "application/json",
    ".wasm": "application/wasm",
}

#: What the viewer page may run: its own scripts (and the inline ones of xpra's index.html) and
#: workers, no plugins, no framing by other sites, forms posted only to itself.
CONTENT_SECURITY_POLICY = (
    "script-src 'self' 'unsafe-inline'; worker-src 'self'; object-src 'none'; "
    "frame-ancestors 'self'; form-action 'self'"
)


class ClientMissing(Exception):
    """xpra's HTML5 client is not installed where xpra keeps it."""


@dataclass(frozen=True)
class ClientFile:
    content: bytes
    content_type: str


def www_dirs(xpra: str) -> list[Path]:
    """Where xpra's HTML5 client may be, best first: beside the xpra executable's prefix
    (``/usr/bin/xpra`` has ``/usr/share/xpra/www``), then the usual system places."""
    candidates = []
    found = shutil.which(xpra)
    if found:
        prefix = Path(found).resolve().parent.parent
        candidates.append(prefix / "share" / "xpra" / "www")
    for prefix in (Path("/usr"), Path("/usr/local")):
        candidate = prefix / "share" / "xpra" / "www"
        if candidate not in candidates:
            candidates.append(candidate)
    return candidates


class Html5Files:
    """The files of one www dir, by their path in it; read on first use, then kept (a few MiB
    at most: only files that exist are kept, whatever paths are asked for)."""

    def __init__(self, www_dir: Path) -> None:
        self.www_dir = www_dir
        self._cache: dict[str, ClientFile] = {}

    @classmethod
    def of_xpra(cls, xpra: str) -> Html5Files:
        return cls.first_of(www_dirs(xpra))

    @classmethod
    def first_of(cls, candidates: list[Path]) -> Html5Files:
        """The first candidate that holds an index.html; ClientMissing names them all if none does."""
        for candidate in candidates:
            if (candidate / "index.html").is_file():
                return cls(candidate)
        looked = ", ".join(str(path) for path in candidates)
        raise ClientMissing(f"xpra's HTML5 client is not installed (no index.html in {looked})")

    def get(self, path: str) -> ClientFile | None:
        """The file at ``path`` (relative, as the page asks for it), or None if it is not a client file."""
        found = self._cache.get(path)
        if found is None:
            found = self._read(path)
            if found is not None:
                self._cache[path] = found
        return found

    def _read(self, path: str) -> ClientFile | None:
        # the path stays inside the www dir by its letters (no "..", no leading "/"); symlinks
        # are followed: Debian's package links jquery.js to /usr/share/javascript
        if ".." in path or not CLIENT_PATH.match(path):
            return None
        target = self.www_dir / path
        try:
            content = target.read_bytes()
        except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
            return None
        return ClientFile(content, _CONTENT_TYPES.get(target.suffix.lower(), "application/octet-stream"))
