"""Serves the service under the path prefix a proxy names in ``X-Forwarded-Prefix``.

jupyter-server-proxy serves keepalive under ``{base_url}keepalive/`` and strips that prefix
before passing a request on, saying what it was in ``X-Forwarded-Prefix``. Set as the ASGI
``root_path``, it goes into every address the service makes: the session objects' URLs, the
viewer's paths and cookie. The dashboard uses relative addresses and needs nothing.

The header changes only the addresses in the answer to the request that carries it, so it is
taken from anyone; a value that is not a plain path is ignored.
"""

from __future__ import annotations

import re

from starlette.types import ASGIApp, Receive, Scope, Send

HEADER = b"x-forwarded-prefix"
#: An absolute path of plain segments: no "//" (another host), "..", query or odd characters.
_PLAIN_PATH = re.compile(r"^(?:/[A-Za-z0-9._~%@!$&'()*+,;=:-]+)+/?$")


def forwarded_prefix(value: str) -> str:
    """The prefix to serve under, without its trailing slash; "" when ``value`` is not one."""
    if not _PLAIN_PATH.match(value) or any(part in (".", "..") for part in value.split("/")):
        return ""
    return value.rstrip("/")


class ForwardedPrefix:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] in ("http", "websocket"):
            value = dict(scope["headers"]).get(HEADER)
            prefix = forwarded_prefix(value.decode("latin-1")) if value else ""
            if prefix:
                scope = {**scope, "root_path": scope.get("root_path", "") + prefix}
        await self.app(scope, receive, send)
