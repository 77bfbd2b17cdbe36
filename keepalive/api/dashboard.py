"""The dashboard: static HTML/CSS/JS from ``web/dashboard``, served at ``/``.

The page holds no secret and needs none to load; it asks the user for the API token and sends it
with every API call (unless a proxy in front adds it). Its addresses are relative to the page,
so that it works under a proxy's path prefix too. The files ship inside the wheel as
``keepalive/_dashboard`` (hatch force-include); an editable install finds them in the source
tree's ``web/dashboard``.
"""

from __future__ import annotations

import re
from functools import cache
from pathlib import Path

from fastapi import APIRouter, HTTPException, status
from fastapi.responses import FileResponse, RedirectResponse

router = APIRouter(tags=["dashboard"], include_in_schema=False)

_PACKAGE = Path(__file__).resolve().parent.parent
_NAME = re.compile(r"^[a-z0-9][a-z0-9_-]*\.(?:html|js|css|svg|png|ico)$")
_MEDIA = {".js": "text/javascript", ".css": "text/css", ".html": "text/html", ".svg": "image/svg+xml"}
_HEADERS = {
    # the page talks to this service only; thumbnails are blob: URLs made from API responses
    "Content-Security-Policy": "default-src 'self'; img-src 'self' blob: data:; style-src 'self'; "
    "script-src 'self'; connect-src 'self'; frame-ancestors 'none'; form-action 'none'; base-uri 'none'",
    "Referrer-Policy": "no-referrer",
    "X-Content-Type-Options": "nosniff",
    "Cache-Control": "no-cache",
}


@cache
def dashboard_dir() -> Path:
    """Where the dashboard's files are: inside the installed package, else in the source tree."""
    for candidate in (_PACKAGE / "_dashboard", _PACKAGE.parent / "web" / "dashboard"):
        if (candidate / "index.html").is_file():
            return candidate
    raise FileNotFoundError("the dashboard's files (web/dashboard) are missing from this installation")


def _file(name: str) -> FileResponse:
    if not _NAME.match(name):
        raise HTTPException(status.HTTP_404_NOT_FOUND, "no such dashboard file")
    try:
        path = dashboard_dir() / name
    except FileNotFoundError as exc:
        raise HTTPException(status.HTTP_500_INTERNAL_SERVER_ERROR, str(exc)) from None
    if not path.is_file():
        raise HTTPException(status.HTTP_404_NOT_FOUND, "no such dashboard file")
    return FileResponse(path, media_type=_MEDIA.get(path.suffix), headers=_HEADERS)


@router.get("/")
async def dashboard() -> FileResponse:
    return _file("index.html")


@router.get("/dashboard")
async def dashboard_slash() -> RedirectResponse:
    # relative, so that it also lands right under a proxy's path prefix
    return RedirectResponse("./", status_code=status.HTTP_307_TEMPORARY_REDIRECT)


@router.get("/dashboard/{name}")
async def dashboard_file(name: str) -> FileResponse:
    return _file(name)
