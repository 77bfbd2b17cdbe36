"""/homes: a session name's home (notebooks, JupyterLab settings, the saved browser profile).

Homes outlive sessions: ``DELETE /sessions/{id}`` keeps the home, and the next session of the
same name opens it again. Deleting a home is this explicit request, refused while in use.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, HTTPException, Response, status
from fastapi import Path as PathParam
from pydantic import BaseModel

from keepalive.api.deps import Authorized, ManagerDep
from keepalive.engine.manager import HomeInUse, HomeNotFound
from keepalive.models import SESSION_NAME_PATTERN

router = APIRouter(prefix="/homes", tags=["homes"], dependencies=[Authorized])


class HomeList(BaseModel):
    homes: list[str]


@router.get("", response_model=HomeList, summary="List homes (one per session name)")
async def list_homes(manager: ManagerDep) -> HomeList:
    return HomeList(homes=manager.homes())


@router.delete(
    "/{name}",
    status_code=status.HTTP_204_NO_CONTENT,
    responses={404: {"description": "No such home."}, 409: {"description": "A session uses it."}},
    summary="Delete a home and everything in it",
)
async def delete_home(
    manager: ManagerDep, name: Annotated[str, PathParam(pattern=SESSION_NAME_PATTERN, description="A session name.")]
) -> Response:
    try:
        await manager.delete_home(name)
    except HomeNotFound:
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"no home named {name!r}") from None
    except HomeInUse as error:
        raise HTTPException(status.HTTP_409_CONFLICT, str(error)) from None
    return Response(status_code=status.HTTP_204_NO_CONTENT)
