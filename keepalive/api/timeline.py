"""A home's timeline (keepalive.engine.timeline): by the session (``/sessions/{id}/timeline``,
the history of its name, its earlier sessions included) or by the home (``/homes/{name}/timeline``,
also when no session of it runs). Newest first, a page at a time; thumbnails by URL."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, HTTPException, Query, Request, status
from fastapi import Path as PathParam
from fastapi.responses import FileResponse
from pydantic import BaseModel, Field

from keepalive.api.deps import Authorized, ManagerDep
from keepalive.api.sessions import base_url, lookup
from keepalive.engine.timeline import MAX_PAGE
from keepalive.models import SESSION_NAME_PATTERN

router = APIRouter(tags=["timeline"], dependencies=[Authorized])

HomeName = Annotated[str, PathParam(pattern=SESSION_NAME_PATTERN, description="A session name.")]
ShotName = Annotated[str, PathParam(pattern=r"^[0-9]{1,12}\.jpg$", description="A thumbnail, as an event names it.")]
Since = Annotated[datetime | None, Query(description="Only events at or after this time (ISO 8601, with its zone).")]
Before = Annotated[int | None, Query(ge=1, description="A page's `next`: the events older than that page.")]
Limit = Annotated[int, Query(ge=1, le=MAX_PAGE, description="Events in this page, at most.")]


class TimelinePage(BaseModel):
    events: list[dict[str, Any]] = Field(
        description="Newest first. Each has seq, at, kind (started, adopted, recovering, recovered, standby, awake, "
        "restored, failed, stopped, run, busy, kernel_died), session, and what its kind tells; shot_url when a "
        "thumbnail of the kiosk is kept with it.")
    next: int | None = Field(description="Pass as `before` for the next (older) page; null on the last page.")


def timeline_page(request: Request, manager: ManagerDep, name: str, since: datetime | None, before: int | None,
                  limit: int) -> TimelinePage:
    if since is not None and since.tzinfo is None:
        raise HTTPException(status.HTTP_422_UNPROCESSABLE_ENTITY, "since: give the time with its zone, e.g. ...Z")
    events, cursor = manager.timeline.timelines.of(name).page(since, before, limit)
    return TimelinePage(events=with_shot_urls(events, f"{base_url(request)}/homes/{name}/timeline/shots"), next=cursor)


def with_shot_urls(events: list[dict], shots: str) -> list[dict]:
    """``events`` as stored, each thumbnail named by its address under ``shots`` (``shot_url``)."""
    for event in events:
        shot = event.pop("shot", None)
        if shot:
            event["shot_url"] = f"{shots}/{shot}"
    return events


def shot_file(manager: ManagerDep, name: str, shot: str) -> FileResponse:
    path = manager.timeline.timelines.of(name).shot(shot)
    if path is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"no thumbnail {shot!r} in the timeline of {name!r}")
    return FileResponse(path, media_type="image/jpeg", headers={"Cache-Control": "private, max-age=86400"})


@router.get("/sessions/{session_id}/timeline", response_model=TimelinePage,
            summary="What the session's home saw: its sessions' events and runs, newest first")
async def session_timeline(request: Request, manager: ManagerDep, session_id: str, since: Since = None,
                           before: Before = None, limit: Limit = 100) -> TimelinePage:
    return timeline_page(request, manager, lookup(manager, session_id).name, since, before, limit)


@router.get("/homes/{name}/timeline", response_model=TimelinePage,
            summary="A home's timeline, whether a session of it runs or not")
async def home_timeline(request: Request, manager: ManagerDep, name: HomeName, since: Since = None,
                        before: Before = None, limit: Limit = 100) -> TimelinePage:
    if name not in manager.homes() and not manager.timeline.timelines.exists(name):
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"no home named {name!r}")
    return timeline_page(request, manager, name, since, before, limit)


@router.get("/sessions/{session_id}/timeline/shots/{shot}", response_class=FileResponse,
            summary="A thumbnail of the kiosk kept in the timeline (JPEG)")
async def session_timeline_shot(manager: ManagerDep, session_id: str, shot: ShotName) -> FileResponse:
    return shot_file(manager, lookup(manager, session_id).name, shot)


@router.get("/homes/{name}/timeline/shots/{shot}", response_class=FileResponse,
            summary="A thumbnail of the kiosk kept in a home's timeline (JPEG)")
async def home_timeline_shot(manager: ManagerDep, name: HomeName, shot: ShotName) -> FileResponse:
    return shot_file(manager, name, shot)
