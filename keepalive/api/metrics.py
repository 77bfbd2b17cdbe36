"""``GET /metrics``: Prometheus text, for the API token or the metrics token."""

from __future__ import annotations

import asyncio
from typing import Annotated

from fastapi import APIRouter, Depends, HTTPException, Request, Response, status
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from prometheus_client import CONTENT_TYPE_LATEST

from keepalive.auth import token_matches

router = APIRouter(tags=["metrics"])
_bearer = HTTPBearer(auto_error=False, description="The API token, or KEEPALIVE_METRICS_TOKEN.")


async def scraper(
    request: Request, credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)]
) -> None:
    presented = credentials.credentials if credentials else None
    metrics_token = request.app.state.settings.metrics_token
    if token_matches(request.app.state.api_token, presented) or (
        metrics_token is not None and token_matches(metrics_token.get_secret_value(), presented)
    ):
        return
    raise HTTPException(status.HTTP_401_UNAUTHORIZED, "missing or wrong token (the API token or the metrics token)",
                        headers={"WWW-Authenticate": "Bearer"})


@router.get("/metrics", dependencies=[Depends(scraper)], summary="Prometheus metrics",
            response_class=Response, responses={200: {"content": {CONTENT_TYPE_LATEST: {}}}})
async def metrics(request: Request) -> Response:
    state = request.app.state
    viewer = getattr(state, "viewer", None)
    facts = state.metrics.facts(state.manager, viewer.tracker if viewer is not None else None)
    pool = state.metrics.pool_facts(state.manager.pool)
    body = await asyncio.to_thread(state.metrics.render, facts, pool)
    return Response(body, media_type=CONTENT_TYPE_LATEST)
