"""``POST /sessions/{id}/input``: answer a cell's ``input()`` or ``getpass()`` from a script
(keepalive.engine.kernel_input). The value is never logged, stored or echoed."""

from __future__ import annotations

import logging

import httpx
from fastapi import APIRouter, HTTPException, status
from websockets.exceptions import WebSocketException

from keepalive.api.deps import Authorized, ManagerDep
from keepalive.api.sessions import lookup
from keepalive.engine import kernel_input
from keepalive.models import InputAnswer, InputAnswered, SessionState

log = logging.getLogger(__name__)

router = APIRouter(prefix="/sessions", tags=["sessions"], dependencies=[Authorized])

#: States in which a session's Jupyter server runs (in standby too: its kernels go on).
SERVING = (SessionState.ready, SessionState.standby, SessionState.recovering)


@router.post(
    "/{session_id}/input",
    response_model=InputAnswered,
    responses={404: {"description": "No such session, or no such kernel in it."},
               409: {"description": "No kernel waits for input (or not the one named), or the session is not running."},
               422: {"description": "Bad body, or several kernels wait and kernel_id names none."},
               503: {"description": "The session's Jupyter server did not take the answer."}},
    summary="Answer a cell's input() or getpass(), as if typed in the kiosk",
)
async def answer_input(manager: ManagerDep, session_id: str, body: InputAnswer) -> InputAnswered:
    session = lookup(manager, session_id)
    endpoint = session.endpoint
    if session.state not in SERVING or endpoint is None:
        raise HTTPException(status.HTTP_409_CONFLICT, f"session {session_id} is {session.state.value}: no kernel to answer")
    try:
        kiosk = session.parts.display.answer_input if session.state is SessionState.ready else None
        answered = await kernel_input.answer(endpoint, body.value, body.kernel_id, kiosk=kiosk)
    except kernel_input.KernelNotFound as error:
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"kernel_id: {error}") from None
    except kernel_input.NoInputWaiting as error:
        raise HTTPException(status.HTTP_409_CONFLICT, str(error)) from None
    except kernel_input.WhichKernel as error:
        raise HTTPException(status.HTTP_422_UNPROCESSABLE_ENTITY, f"kernel_id: {error}") from None
    except (httpx.HTTPError, WebSocketException, OSError, TimeoutError) as error:
        log.warning("session %s: an answer to input() did not go through: %s", session_id, type(error).__name__)
        raise HTTPException(status.HTTP_503_SERVICE_UNAVAILABLE,
                            "the session's Jupyter server did not take the answer; try again") from None
    log.info("session %s: answered the input() of kernel %s", session_id, answered.kernel_id)
    return InputAnswered(kernel_id=answered.kernel_id, prompt=answered.prompt)
