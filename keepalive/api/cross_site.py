"""Refuses writes that a browser makes on behalf of another site.

Behind jupyter-server-proxy the service never sees how a request was authenticated: the proxy
takes the hub user's cookie, and adds the service's own token to whatever it passes on (it
checks no XSRF token itself: it defers that to the proxied app). A page on any site the user
visits could then post a form (``enctype="text/plain"``, no preflight) to the proxied API and
start sessions. Such a request is told apart by what the browser says about it, not by its
credentials: ``Sec-Fetch-Site`` (every current browser sends it) or, from an older browser, an
``Origin`` that is not the address the request went to. Scripts (curl, a hub token) send
neither and pass, as do the dashboard's own same-origin requests.
"""

from __future__ import annotations

import json
from urllib.parse import urlsplit

from starlette.types import ASGIApp, Receive, Scope, Send

#: Methods that change nothing; everything else is a write.
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
#: What Sec-Fetch-Site says of a request another site's page made.
FOREIGN_FETCH_SITES = frozenset({b"cross-site", b"same-site"})


def foreign_reason(headers: dict[bytes, bytes]) -> str | None:
    """Why a write with these headers comes from another site's page; None if it does not."""
    fetch_site = headers.get(b"sec-fetch-site", b"").strip().lower()
    if fetch_site in FOREIGN_FETCH_SITES:
        return f"the browser says it was made by a {fetch_site.decode()} page"
    origin = headers.get(b"origin")
    if origin is None or fetch_site:  # a browser that sends Sec-Fetch-Site said enough above
        return None
    text = origin.decode("latin-1").strip()
    if text == "null":
        return "its Origin is null (a sandboxed or file page)"
    origin_host = urlsplit(text).netloc.lower()
    targets = {headers.get(name, b"").decode("latin-1").split(",")[0].strip().lower()
               for name in (b"host", b"x-forwarded-host")}
    if origin_host and origin_host in targets:
        return None
    return f"its Origin {text!r} is not this service's address"


class CrossSiteWrites:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["method"] not in SAFE_METHODS:
            reason = foreign_reason(dict(scope["headers"]))
            if reason is not None:
                body = json.dumps({"detail": f"cross-site request refused: {reason}"}).encode()
                await send({"type": "http.response.start", "status": 403,
                            "headers": [(b"content-type", b"application/json"),
                                        (b"content-length", str(len(body)).encode())]})
                await send({"type": "http.response.body", "body": body})
                return
        await self.app(scope, receive, send)
