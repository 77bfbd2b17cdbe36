"""Telling someone what happened in a session (a run of cells ended, a kernel was stopped for
memory, the session was restored after a reboot): a POST to a URL, retried with backoff.

The URL is treated as a secret (a Slack or Teams webhook URL is one): it is never logged, never
shown by the API, and kept in the session folder readable by the service alone. The body holds
the session, the notebook and the outcome; never a token or a HeavyAI session ID.
"""

from __future__ import annotations

import asyncio
import logging

import httpx
from keepalive.engine.httpclient import new_client

log = logging.getLogger(__name__)

#: Seconds before each retry; a delivery gives up after the last.
BACKOFF = (1.0, 2.0, 4.0, 8.0, 16.0)
#: Seconds one attempt may take.
ATTEMPT_TIMEOUT = 10.0


async def deliver(url: str, payload: dict, session_id: str, backoff: tuple[float, ...] = BACKOFF) -> bool:
    """POST ``payload`` as JSON until the receiver answers 2xx; True if it did.

    Retried: network errors, timeouts, 5xx, 429. Not retried: other 4xx (the receiver refuses
    this request, and will again).
    """
    what = payload.get("event") or "an event"
    if "outcome" in payload:  # a run's end: how, and in which notebook
        what += f" ({payload['outcome']}, {payload.get('notebook') or 'no notebook'})"
    async with new_client(timeout=ATTEMPT_TIMEOUT, follow_redirects=False) as client:
        for attempt, delay in enumerate((0.0, *backoff), start=1):
            await asyncio.sleep(delay)
            try:
                response = await client.post(url, json=payload)
            except httpx.HTTPError as error:
                outcome = type(error).__name__
            else:
                if response.is_success:
                    log.info("session %s: webhook delivered: %s", session_id, what)
                    return True
                outcome = f"HTTP {response.status_code}"
                if response.status_code < 500 and response.status_code != 429:
                    log.warning("session %s: webhook refused %s: %s; not retried", session_id, what, outcome)
                    return False
            log.warning("session %s: webhook attempt %s for %s failed: %s", session_id, attempt, what, outcome)
    log.error("session %s: webhook gave up on %s after %s attempts", session_id, what, len(backoff) + 1)
    return False
