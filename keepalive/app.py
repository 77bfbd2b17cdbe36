"""The FastAPI application: settings, token, session manager, routers."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI
from playwright.async_api import async_playwright

from keepalive import __version__
from keepalive.api import (
    dashboard, devtools, events, health, homes, kernel_input, metrics, sessions, status_page, timeline, viewer,
)
from keepalive.api.body_limit import BodySizeLimit
from keepalive.api.forwarded_prefix import ForwardedPrefix
from keepalive.api.cross_site import CrossSiteWrites
from keepalive.api.json_body import JsonWithoutContentType
from keepalive.auth import load_or_create_token
from keepalive.engine.manager import SessionManager
from keepalive.engine.parts import real_parts
from keepalive.engine.statelock import StateDirLock
from keepalive.metrics import Metrics, RequestCounter
from keepalive.settings import Settings

log = logging.getLogger(__name__)


def create_app(settings: Settings | None = None, state_lock: StateDirLock | None = None) -> FastAPI:
    """The service. ``state_lock``: the state dir's lock, when the caller took it already."""
    settings = settings or Settings()
    token, created = load_or_create_token(
        settings.api_token.get_secret_value() if settings.api_token else None, settings.token_file
    )

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        await app.state.manager.open()
        try:
            yield
        finally:
            await app.state.manager.close(stop_sessions=settings.stop_sessions_on_exit)

    app = FastAPI(
        title="keepalive",
        version=__version__,
        description="Keeps JupyterLab browser sessions alive on the server.",
        lifespan=lifespan,
    )
    # curl -d sends JSON labelled as a form: take it as the JSON it is (README examples use either)
    app.add_middleware(JsonWithoutContentType)
    # a page of another site posting a form through jupyter-server-proxy, with the user's cookie
    app.add_middleware(CrossSiteWrites)
    app.state.metrics = Metrics()
    app.add_middleware(RequestCounter, metrics=app.state.metrics)
    app.add_middleware(ForwardedPrefix)
    app.add_middleware(BodySizeLimit)  # added last: runs first, before any body is read
    app.state.settings = settings
    app.state.api_token = token
    app.state.token_created = created
    app.state.manager = SessionManager(
        settings, state_lock, api_token=token, parts=real_parts, playwright=async_playwright
    )
    app.state.manager.start_observers.append(app.state.metrics.session_started)
    app.state.manager.standby.wake_observers.append(app.state.metrics.session_woke)
    app.include_router(health.router)
    app.include_router(sessions.router)
    app.include_router(kernel_input.router)
    app.include_router(events.router)
    app.include_router(homes.router)
    app.include_router(timeline.router)
    app.include_router(viewer.router)
    app.include_router(status_page.router)
    app.include_router(devtools.router)
    app.include_router(metrics.router)
    app.include_router(dashboard.router)
    return app
