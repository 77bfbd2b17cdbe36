"""The status page: a session on a phone, without the remote desktop (``/sessions/{id}/status``).

It shows the session's kernels and their state, each running cell's last lines (the page asks
every few seconds), the home's timeline with its thumbnails, the kiosk's last picture and, when
a cell waits in ``input()`` or ``getpass()``, a box to answer it, which the kernel gets as if
typed in the kiosk (keepalive.engine.kernel_input).

Who may open it: a caller with the API token, or a browser holding the session's status
cookie. A viewer link's response carries ``status_url`` (made in keepalive.api.viewer): a
single-use link with the link's rights, watch-only or full, spent like a viewer link (a button
posts the ticket; a GET spends nothing); its cookie is limited to the status page's path, as the
viewer's to the viewer's. Only full rights answer input. The page's data and pictures come from paths under the page's own, which
the cookie opens; none of them wakes a session in standby or counts as using it.
"""

from __future__ import annotations

import asyncio
import logging
from datetime import UTC, datetime
from typing import Annotated, Any

from fastapi import APIRouter, Depends, HTTPException, Request, status
from fastapi import Path as PathParam
from fastapi.responses import FileResponse, HTMLResponse, Response

from keepalive.api import kernel_input
from keepalive.api.dashboard import dashboard_dir
from keepalive.api.deps import ManagerDep, SettingsDep
from keepalive.api.sessions import lookup
from keepalive.api.timeline import shot_file, with_shot_urls
from keepalive.api.viewer import (
    NO_STORE, Pass, Refused, ViewerStateDep, check_access, confirm_ticket, refused_page, spend_link,
)
from keepalive.engine.errors import first_line
from keepalive.models import InputAnswer, InputAnswered, SessionState

log = logging.getLogger(__name__)

router = APIRouter(tags=["status page"])

STATUS_PASS = Pass("status page", "keepalive_status", "status-link", "status-cookie")
#: The page's own files, from the dashboard's folder (web/dashboard).
FILES = {"status.js": "text/javascript", "status.css": "text/css"}
#: Timeline events the page shows, newest first.
TIMELINE_EVENTS = 30
_PAGE_HEADERS = {
    **NO_STORE,
    "Content-Security-Policy": "default-src 'self'; img-src 'self' blob:; style-src 'self'; script-src 'self'; "
    "connect-src 'self'; frame-ancestors 'none'; form-action 'self'; base-uri 'none'",
}
ShotName = Annotated[str, PathParam(pattern=r"^[0-9]{1,12}\.jpg$")]


def status_path(session_id: str, root_path: str = "") -> str:
    return f"{root_path}/sessions/{session_id}/status"


def _path(request: Request, session_id: str) -> str:
    return status_path(session_id, request.scope.get("root_path", ""))


def status_rights(request: Request, viewer: ViewerStateDep, session_id: str) -> bool:
    """Whether the caller may only watch; :class:`Refused` without the token or a status cookie."""
    return check_access(request.app.state.api_token, viewer.signer, session_id, request.headers, request.cookies,
                        STATUS_PASS)


async def watch_only_of(request: Request, viewer: ViewerStateDep, session_id: str) -> bool:
    try:
        return status_rights(request, viewer, session_id)
    except Refused as refusal:
        raise HTTPException(refusal.status_code, refusal.reason) from None


WatchOnly = Annotated[bool, Depends(watch_only_of)]


@router.get("/sessions/{session_id}/status", response_class=HTMLResponse, summary="The status page (for a phone)")
async def status_page(session_id: str, request: Request, manager: ManagerDep, viewer: ViewerStateDep) -> Response:
    ticket = request.query_params.get("ticket")
    if ticket is not None:
        return confirm_ticket(STATUS_PASS, viewer.signer, session_id, ticket, _path(request, session_id), request.cookies)
    try:
        status_rights(request, viewer, session_id)
    except Refused as refusal:
        return refused_page(refusal)
    lookup(manager, session_id)
    return HTMLResponse(_page_html(), headers=_PAGE_HEADERS)


@router.post("/sessions/{session_id}/status", include_in_schema=False)
async def spend_status_ticket(session_id: str, request: Request, manager: ManagerDep, settings: SettingsDep,
                              viewer: ViewerStateDep) -> Response:
    """The user opened a status link: spend its ticket, set the page's cookie (limited to its path)."""
    path = _path(request, session_id)
    return await spend_link(STATUS_PASS, request, manager, settings, viewer.signer, session_id, path, path)


@router.get("/sessions/{session_id}/status/state", summary="What the status page shows, as JSON")
async def status_state(session_id: str, request: Request, manager: ManagerDep, watch_only: WatchOnly) -> dict[str, Any]:
    session = lookup(manager, session_id)
    activity = manager.activity(session_id)
    events = await _timeline(manager, session.name)
    has_shot = _last_shot(events) is not None
    return {
        "session": {"id": session.id, "name": session.name, "state": session.state.value},
        "watch_only": watch_only,
        "kernels": activity.model_dump(mode="json")["kernels"] if activity is not None else [],
        "timeline": with_shot_urls(events, "status/shots"),
        "picture": session.state is SessionState.ready or has_shot,
        "at": datetime.now(UTC).isoformat(),
    }


@router.get("/sessions/{session_id}/status/picture.jpg", response_class=Response,
            summary="The kiosk now (awake), else the timeline's last thumbnail")
async def status_picture(session_id: str, manager: ManagerDep, watch_only: WatchOnly) -> Response:
    session = lookup(manager, session_id)
    if session.state is SessionState.ready:  # never woken for it, nor kept awake
        try:
            shot = await asyncio.wait_for(session.parts.display.thumbnail(), 15)
            return Response(shot, media_type="image/jpeg", headers=NO_STORE)
        except Exception as error:  # the page is going away: the timeline's last picture will do
            log.info("status page of %s: no picture now: %s", session_id, first_line(error))
    last = _last_shot(await _timeline(manager, session.name))
    path = manager.timeline.timelines.of(session.name).shot(last) if last else None
    if path is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, "no picture of this session yet")
    return FileResponse(path, media_type="image/jpeg", headers=NO_STORE)


@router.get("/sessions/{session_id}/status/shots/{shot}", response_class=FileResponse,
            summary="A thumbnail of the session's timeline, for the status page")
async def status_shot(session_id: str, shot: ShotName, manager: ManagerDep, watch_only: WatchOnly) -> FileResponse:
    return shot_file(manager, lookup(manager, session_id).name, shot)


@router.post("/sessions/{session_id}/status/input", response_model=InputAnswered,
             summary="Answer a cell's input() from the status page (full links only)")
async def status_input(session_id: str, body: InputAnswer, manager: ManagerDep, watch_only: WatchOnly) -> InputAnswered:
    if watch_only:
        raise HTTPException(status.HTTP_403_FORBIDDEN, "a watch-only link cannot answer input")
    return await kernel_input.answer_input(manager, session_id, body)


@router.get("/sessions/{session_id}/status/{name}", include_in_schema=False)
async def status_file(session_id: str, name: str) -> FileResponse:
    if name not in FILES:
        raise HTTPException(status.HTTP_404_NOT_FOUND, "no such file")
    return FileResponse(dashboard_dir() / name, media_type=FILES[name], headers={"Cache-Control": "no-cache"})


async def _timeline(manager: ManagerDep, name: str) -> list[dict]:
    """The newest events of the home's timeline, as stored (read off the event loop)."""
    events, _ = await asyncio.to_thread(manager.timeline.timelines.of(name).page, None, None, TIMELINE_EVENTS)
    return events


def _last_shot(events: list[dict]) -> str | None:
    return next((e["shot"] for e in events if e.get("shot")), None)


def _page_html() -> str:
    return (dashboard_dir() / "status.html").read_text()

