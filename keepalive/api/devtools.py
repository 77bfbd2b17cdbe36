"""DevTools links: a short-lived key to one session's browser, for handing out.

The session's ``cdp_url`` opens with the API token as a bearer header; a link is for someone (or
a tool) that should reach this one browser for a few minutes and nothing else.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from fastapi import APIRouter, HTTPException, Request, status
from pydantic import BaseModel, Field

from keepalive.api.deps import Authorized, ManagerDep
from keepalive.api.sessions import cdp_url
from keepalive.engine.manager import SessionNotFound

router = APIRouter(tags=["devtools"])


class DevToolsLink(BaseModel):
    cdp_url: str = Field(description="The session's DevTools websocket with the link's key (?key=...).")
    expires_at: datetime


@router.post(
    "/sessions/{session_id}/cdp-link", dependencies=[Authorized], response_model=DevToolsLink,
    status_code=status.HTTP_201_CREATED, summary="A short-lived DevTools link to one session's browser",
)
async def create_cdp_link(session_id: str, request: Request, manager: ManagerDep) -> DevToolsLink:
    try:
        session = manager.get(session_id)
        key, ttl = manager.create_cdp_link(session_id)
    except SessionNotFound:
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"no session {session_id}") from None
    return DevToolsLink(
        cdp_url=f"{cdp_url(request, session)}?key={key}",
        expires_at=datetime.now(UTC) + timedelta(seconds=ttl),
    )
