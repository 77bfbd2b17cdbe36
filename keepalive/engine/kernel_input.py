"""Answering a kernel's ``input()`` or ``getpass()`` from outside the kiosk (``POST /sessions/{id}/input``).

When the kiosk shows the cell's input box, the answer is typed into it (``kiosk``): the page
sends it and shows the answered line as if the user had typed it. Otherwise (the notebook is
not open there, the session is in standby) it goes to the kernel as that box would send it: an
``input_reply`` on the kernel's stdin channel, over a websocket to the session's Jupyter
server, with the request the server extension recorded as its parent; the extension notes it
like any page's reply, so the notebook shows the answered line when it opens (a password's as
dots). The service holds the value only while it sends it: never logged, stored or returned.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime

import httpx
from websockets.asyncio.client import connect

from keepalive.engine.activity import UNTRACKED
from keepalive.engine.httpclient import new_client
from keepalive.engine.jupyter import JupyterEndpoint

#: Seconds the Jupyter server has to take the answer in (its record then shows the request answered).
DELIVERY_TIMEOUT = 10.0


class NoInputWaiting(LookupError):
    """No kernel of the session waits for input (or not the one named)."""


class KernelNotFound(LookupError):
    """The session has no kernel with that id."""


class WhichKernel(ValueError):
    """More than one kernel waits for input and the request names none."""


@dataclass(frozen=True)
class InputRequest:
    kernel_id: str
    prompt: str
    password: bool
    header: dict  #: the kernel's input_request header: the reply's parent


async def waiting(endpoint: JupyterEndpoint, client: httpx.AsyncClient) -> list[InputRequest]:
    """Every kernel of the server that waits for input now, with what it asked."""
    kernels = await client.get(f"{endpoint.url}/api/kernels", headers=endpoint.auth_headers, params=UNTRACKED)
    kernels.raise_for_status()
    requests = []
    for kernel in kernels.json():
        record = await client.get(f"{endpoint.url}/api/keepalive/executions", headers=endpoint.auth_headers,
                                  params={"kernel_id": kernel["id"], "since": "999999999999", **UNTRACKED})
        if record.status_code == 404:  # it ended meanwhile
            continue
        record.raise_for_status()
        for execution in record.json().get("executions", []):
            asked = execution.get("input_request")
            if execution.get("state") == "running" and isinstance(asked, dict) and isinstance(asked.get("header"), dict):
                requests.append(InputRequest(kernel["id"], str(asked.get("prompt", "")), bool(asked.get("password")),
                                             asked["header"]))
    return requests


async def answer(endpoint: JupyterEndpoint, value: str, kernel_id: str | None = None,
                 kiosk: Callable[[str, str], Awaitable[bool]] | None = None) -> InputRequest:
    """Send ``value`` to the kernel that waits for input (``kernel_id``: which one, needed when
    several wait; ``kiosk(kernel_id, value)``: types it into the kiosk's box, if it shows one);
    returns what was answered once the Jupyter server took it in."""
    async with new_client(timeout=10.0) as client:
        if kernel_id is not None:
            known = await client.get(f"{endpoint.url}/api/kernels/{kernel_id}", headers=endpoint.auth_headers,
                                     params=UNTRACKED)
            if known.status_code == 404:
                raise KernelNotFound(f"the session has no kernel {kernel_id!r}")
            known.raise_for_status()
        asking = [r for r in await waiting(endpoint, client) if kernel_id in (None, r.kernel_id)]
        if not asking:
            raise NoInputWaiting(f"kernel {kernel_id} does not wait for input" if kernel_id
                                 else "no kernel of the session waits for input")
        if len(asking) > 1:
            raise WhichKernel("several kernels wait for input: name one with kernel_id "
                              f"({', '.join(r.kernel_id for r in asking)})")
        request = asking[0]
        if kiosk is not None and await kiosk(request.kernel_id, value):
            await _until_answered(endpoint, client, request)
        else:
            await _send_reply(endpoint, client, request, value)
    return request


async def _until_answered(endpoint: JupyterEndpoint, client: httpx.AsyncClient, request: InputRequest) -> None:
    """Wait until the server's record shows ``request`` answered."""
    deadline = time.monotonic() + DELIVERY_TIMEOUT
    while any(r.header.get("msg_id") == request.header.get("msg_id") for r in await waiting(endpoint, client)):
        if time.monotonic() > deadline:
            raise TimeoutError(f"the Jupyter server did not take the answer in within {DELIVERY_TIMEOUT:.0f} s")
        await asyncio.sleep(0.1)


async def _send_reply(endpoint: JupyterEndpoint, client: httpx.AsyncClient, request: InputRequest, value: str) -> None:
    session = uuid.uuid4().hex
    ws_url = endpoint.url.replace("http://", "ws://", 1).replace("https://", "wss://", 1)
    reply = {
        "header": {"msg_id": uuid.uuid4().hex, "msg_type": "input_reply", "username": "keepalive",
                   "session": session, "date": datetime.now(UTC).isoformat(), "version": "5.3"},
        "parent_header": request.header,
        "metadata": {},
        "content": {"status": "ok", "value": value},
        "channel": "stdin",
        "buffers": [],
    }
    async with connect(f"{ws_url}/api/kernels/{request.kernel_id}/channels?session_id={session}",
                       additional_headers=endpoint.auth_headers, open_timeout=10, proxy=None) as socket:
        await socket.send(json.dumps(reply))
        # closing at once could drop the answer before the server passed it on
        await _until_answered(endpoint, client, request)
