"""GET /health: open to all, so probes need no token; it shows no secret."""

from __future__ import annotations

import asyncio

from fastapi import APIRouter
from fastapi.responses import JSONResponse

from keepalive import __version__
from keepalive.api.deps import ManagerDep, SettingsDep
from keepalive.health import service_checks
from keepalive.models import SessionState

router = APIRouter(tags=["health"])


@router.get("/health", summary="Can this service start and run sessions?")
async def health(settings: SettingsDep, manager: ManagerDep) -> JSONResponse:
    # the checks touch the disk and may run the Jupyter environment once: not on the event loop
    checks = await asyncio.to_thread(service_checks, settings)
    sessions = manager.list()
    ok = all(check.ok for check in checks)
    body = {
        "status": "ok" if ok else "failing",
        "version": __version__,
        "checks": {check.name: {"ok": check.ok, "detail": check.detail} for check in checks},
        "sessions": {
            "total": len(sessions),
            "ready": sum(s.state is SessionState.ready for s in sessions),
            "standby": sum(s.state is SessionState.standby for s in sessions),
            "failed": sum(s.state is SessionState.failed for s in sessions),
            # in standby the display is down on purpose: unhealthy only if its Jupyter server is
            "unhealthy": [s.id for s in sessions
                          if s.state in (SessionState.ready, SessionState.standby) and not s.healthy],
        },
        "pool": {"size": manager.pool.size, "waiting": manager.pool.waiting, "starting": manager.pool.filling},
        # what holds each session's processes together and ends them (keepalive.engine.containment)
        "containment": manager.containment,
    }
    if not ok:
        body["failing"] = [check.name for check in checks if not check.ok]
    return JSONResponse(body, status_code=200 if ok else 503)
