"""FastAPI dependencies, as ``Annotated`` aliases for the routers."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, HTTPException, Request, status
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from keepalive.auth import token_matches
from keepalive.engine.manager import SessionManager
from keepalive.settings import Settings

_bearer = HTTPBearer(auto_error=False, description="The API token (KEEPALIVE_API_TOKEN or the state dir's api-token).")


# Every dependency and route is async: sync ones run in a thread pool, which would read
# session state while the event loop changes it.
async def get_settings(request: Request) -> Settings:
    return request.app.state.settings


async def get_manager(request: Request) -> SessionManager:
    return request.app.state.manager


async def require_token(
    request: Request,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> None:
    presented = credentials.credentials if credentials else None
    if not token_matches(request.app.state.api_token, presented):
        raise HTTPException(
            status_code=status.HTTP_401_UNAUTHORIZED,
            detail="missing or wrong API token (send 'Authorization: Bearer <token>')",
            headers={"WWW-Authenticate": "Bearer"},
        )


SettingsDep = Annotated[Settings, Depends(get_settings)]
ManagerDep = Annotated[SessionManager, Depends(get_manager)]
Authorized = Depends(require_token)
