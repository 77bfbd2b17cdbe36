"""/sessions: start, list, show, stop, screenshot."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from fastapi import APIRouter, HTTPException, Query, Request, Response, status
from fastapi.responses import JSONResponse
from playwright.async_api import Error as PlaywrightError

from keepalive.api import viewer
from keepalive.api.deps import Authorized, ManagerDep, SettingsDep
from keepalive.engine.containment import LimitRefused
from keepalive.engine.manager import NameTaken, SessionNotFound, TemplateUnavailable, TooManySessions
from keepalive.engine.standby import NoRoomToWake
from keepalive.engine.users import NoFreeUser
from keepalive.engine.session import InvalidTransition, Session, SessionStartError
from keepalive.models import SessionCreate, SessionList, SessionOut, SessionState, ViewerCounts

router = APIRouter(prefix="/sessions", tags=["sessions"], dependencies=[Authorized])


def base_url(request: Request) -> str:
    return str(request.base_url).rstrip("/")


def cdp_url(request: Request, session: Session) -> str:
    """The gateway's URL for ``session``, on the host name the caller used to reach the API."""
    host = request.url.hostname or "127.0.0.1"
    host = f"[{host}]" if ":" in host else host
    return f"ws://{host}:{request.app.state.manager.gateway.port}/sessions/{session.id}/cdp"


def session_out(request: Request, session: Session) -> SessionOut:
    base = base_url(request)
    return SessionOut(
        id=session.id,
        name=session.name,
        state=session.state,
        created_at=datetime.fromisoformat(session.record.created_at),
        width=session.width,
        height=session.height,
        viewer_url=viewer.viewer_url(base, session.id),
        screenshot_url=f"{base}/sessions/{session.id}/screenshot",
        cdp_url=cdp_url(request, session),
        health=session.health,
        restarts=session.record.restarts,
        error=session.record.error,
        activity=request.app.state.manager.activity(session.id),
        webhook=session.webhook_url is not None,
        viewers=ViewerCounts(**viewer.viewer_state(request.app).tracker.counts(session.id)),
    )


async def awake(manager: ManagerDep, session: Session) -> None:
    """Someone uses ``session`` now: woken if it is in standby (keepalive.engine.standby); 429
    when MAX_SESSIONS are awake and in use, 503 when it could not wake (its error says why)."""
    was = session.state
    try:
        await manager.standby.wake(session)
    except NoRoomToWake as error:
        raise HTTPException(status.HTTP_429_TOO_MANY_REQUESTS, f"session {session.id} stays in standby: {error}") from None
    if was is SessionState.standby and session.state is SessionState.failed:  # failed before: the caller says so
        raise HTTPException(status.HTTP_503_SERVICE_UNAVAILABLE, f"session {session.id} failed: {session.record.error}")


def lookup(manager: ManagerDep, session_id: str) -> Session:
    try:
        return manager.get(session_id)
    except SessionNotFound:
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"no session with id {session_id!r}") from None


@router.post(
    "",
    status_code=status.HTTP_201_CREATED,
    response_model=SessionOut,
    responses={
        202: {"description": "Accepted with ?wait=false: the session is starting."},
        409: {"description": "A live session has this name."},
        429: {"description": "MAX_SESSIONS sessions are running."},
        503: {"description": "The session could not start; the reason is in 'detail'."},
    },
    summary="Start a session",
)
async def create_session(
    request: Request,
    manager: ManagerDep,
    settings: SettingsDep,
    body: SessionCreate | None = None,
    wait: Annotated[bool, Query(description="Answer only once JupyterLab is on screen (201), else at once (202).")] = True,
) -> JSONResponse:
    body = body or SessionCreate()
    if body.heavyai is not None and settings.jupyter_url:
        raise HTTPException(
            status.HTTP_422_UNPROCESSABLE_ENTITY,
            [
                {
                    "loc": ["body", "heavyai"],
                    "msg": "the HeavyAI handoff needs the embedded Jupyter server; KEEPALIVE_JUPYTER_URL is set",
                    "type": "value_error",
                }
            ],
        )
    try:
        session = await manager.create(body)
    except LimitRefused as error:
        raise HTTPException(
            status.HTTP_422_UNPROCESSABLE_ENTITY,
            [{"loc": ["body", "limits", error.field], "msg": str(error), "type": "value_error"}],
        ) from None
    except NameTaken as error:
        raise HTTPException(status.HTTP_409_CONFLICT, str(error)) from None
    except TooManySessions as error:
        raise HTTPException(status.HTTP_429_TOO_MANY_REQUESTS, str(error)) from None
    except NoFreeUser as error:
        raise HTTPException(status.HTTP_503_SERVICE_UNAVAILABLE, f"session could not start: {error}") from None
    except TemplateUnavailable as error:
        raise HTTPException(status.HTTP_503_SERVICE_UNAVAILABLE, f"session could not start: {error}") from None
    if not wait:
        manager.start_in_background(session)
        return JSONResponse(session_out(request, session).model_dump(mode="json"), status.HTTP_202_ACCEPTED)
    try:
        await manager.start(session)
    except SessionStartError as error:
        raise HTTPException(status.HTTP_503_SERVICE_UNAVAILABLE, f"session could not start: {error}") from None
    return JSONResponse(session_out(request, session).model_dump(mode="json"), status.HTTP_201_CREATED)


@router.get("", response_model=SessionList, summary="List sessions")
async def list_sessions(request: Request, manager: ManagerDep) -> SessionList:
    return SessionList(sessions=[session_out(request, session) for session in manager.list()])


@router.get("/{session_id}", response_model=SessionOut, summary="Show one session")
async def get_session(request: Request, manager: ManagerDep, session_id: str) -> SessionOut:
    return session_out(request, lookup(manager, session_id))


@router.delete(
    "/{session_id}", status_code=status.HTTP_204_NO_CONTENT, summary="Stop a session (its home stays)"
)
async def delete_session(manager: ManagerDep, session_id: str) -> Response:
    lookup(manager, session_id)
    await manager.delete(session_id)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.post(
    "/{session_id}/wake",
    response_model=SessionOut,
    responses={429: {"description": "MAX_SESSIONS sessions are awake, and none of them is idle."},
               503: {"description": "The session could not wake: it failed, with the reason (its kernels run on)."}},
    summary="Wake a session from standby",
)
async def wake_session(request: Request, manager: ManagerDep, session_id: str) -> SessionOut:
    """Answered once the session is awake (at once when it was not in standby); counts as a use,
    so the session stays out of standby for STANDBY_AFTER seconds more."""
    session = lookup(manager, session_id)
    await awake(manager, session)
    return session_out(request, session)


@router.post(
    "/{session_id}/restart-jupyter",
    response_model=SessionOut,
    responses={409: {"description": "The session is not ready, or has no Jupyter server of its own."},
               503: {"description": "The new Jupyter server did not come up: the session failed, with the reason."}},
    summary="Restart the session's Jupyter server; its kernels run on and the kiosk reconnects",
)
async def restart_jupyter(request: Request, manager: ManagerDep, settings: SettingsDep, session_id: str) -> SessionOut:
    """Answered once the session is ready again, on a new server with the same kernels (e.g. after
    an upgrade of JupyterLab or keepalive's server extension)."""
    session = lookup(manager, session_id)
    if settings.jupyter_url:
        raise HTTPException(status.HTTP_409_CONFLICT, "this service's sessions use an external Jupyter server (JUPYTER_URL)")
    try:
        await session.recovery.restart_jupyter()
    except InvalidTransition:
        raise HTTPException(status.HTTP_409_CONFLICT, f"session {session_id} is {session.state.value}, not ready") from None
    if session.state is not SessionState.ready:
        raise HTTPException(status.HTTP_503_SERVICE_UNAVAILABLE,
                            f"the Jupyter server did not come back: {session.record.error}")
    return session_out(request, session)


@router.get(
    "/{session_id}/screenshot",
    response_class=Response,
    responses={200: {"content": {"image/png": {}}}, 409: {"description": "The session is not ready."},
               429: {"description": "In standby, and MAX_SESSIONS sessions are awake and in use."}},
    summary="PNG of what the kiosk browser shows",
)
async def screenshot(manager: ManagerDep, session_id: str) -> Response:
    session = lookup(manager, session_id)
    await awake(manager, session)  # a session in standby is woken for it, and answers once awake
    if session.state is not SessionState.ready:
        raise HTTPException(status.HTTP_409_CONFLICT, f"session {session_id} is {session.state.value}, not ready")
    try:
        png = await session.screenshot()
    except (RuntimeError, PlaywrightError) as error:  # the page went away while being captured
        raise HTTPException(status.HTTP_409_CONFLICT, f"session {session_id} cannot be captured now: {error}") from None
    return Response(png, media_type="image/png", headers={"Cache-Control": "no-store"})
