"""Server-sent events: what sessions do, as it happens.

``GET /sessions/{id}/events``: one session's ``state`` ({state, error, restarts}), ``activity``
(the whole of GET /sessions/{id}'s ``activity``, each time it changes) and ``run_finished``
(what the webhook gets). It opens with the current state (and activity, once read) and ends
after the session has stopped.

``GET /events``: the same events of every session, each with ``session_id`` added, for the
dashboard. A session that starts shows up with its first ``state``.

Both send a comment line every HEARTBEAT seconds, so that proxies keep them open.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Callable

from fastapi import APIRouter, Request
from fastapi.responses import StreamingResponse

from keepalive.api.deps import Authorized, ManagerDep
from keepalive.api.sessions import lookup
from keepalive.engine.events import Event, state_event
from keepalive.models import SessionState

router = APIRouter(tags=["events"], dependencies=[Authorized])

#: Seconds between comment lines on a quiet stream.
HEARTBEAT = 15.0


def sse(kind: str, data: dict) -> str:
    return f"event: {kind}\ndata: {json.dumps(data, separators=(',', ':'))}\n\n"


async def relay(
    queue: asyncio.Queue[Event], render: Callable[[Event], str], ended: Callable[[], bool] = lambda: False
) -> AsyncIterator[str]:
    """Events from ``queue`` as ``render`` writes them, with a comment line on a quiet stream,
    until ``ended()`` and nothing is left to send."""
    while not (ended() and queue.empty()):
        try:
            event = await asyncio.wait_for(queue.get(), HEARTBEAT)
        except TimeoutError:
            yield ": still here\n\n"
            continue
        yield render(event)


STREAM_HEADERS = {
    # no-transform and X-Accel-Buffering: proxies (nginx, the hub's) must not hold events back
    "Cache-Control": "no-store, no-transform", "X-Accel-Buffering": "no",
}


@router.get(
    "/events",
    response_class=StreamingResponse,
    responses={200: {"content": {"text/event-stream": {}}, "description": "Server-sent events, until the client goes."}},
    summary="Follow every session",
)
async def all_events(manager: ManagerDep) -> StreamingResponse:
    async def stream() -> AsyncIterator[str]:
        with manager.events.listen(None) as queue:
            yield ": following every session\n\n"
            async for chunk in relay(queue, lambda e: sse(e.kind, {"session_id": e.session_id, **e.data})):
                yield chunk

    return StreamingResponse(stream(), media_type="text/event-stream", headers=STREAM_HEADERS)


@router.get(
    "/sessions/{session_id}/events",
    response_class=StreamingResponse,
    responses={200: {"content": {"text/event-stream": {}}, "description": "Server-sent events until the session stops."}},
    summary="Follow a session's state and activity",
)
async def session_events(request: Request, manager: ManagerDep, session_id: str) -> StreamingResponse:
    session = lookup(manager, session_id)

    async def stream() -> AsyncIterator[str]:
        with manager.events.listen(session_id) as queue:
            yield sse("state", state_event(session.record))
            if (activity := manager.activity(session_id)) is not None:
                yield sse("activity", activity.model_dump(mode="json"))
            async for chunk in relay(queue, lambda e: sse(e.kind, e.data), lambda: session.state is SessionState.stopped):
                yield chunk

    return StreamingResponse(stream(), media_type="text/event-stream", headers=STREAM_HEADERS)
