"""What happens to sessions, for whoever listens: ``GET /sessions/{id}/events`` (server-sent
events) and the dashboard.

Each listener has a queue of its own, bounded: one that does not keep up loses its oldest
events, never slows the service or another listener.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

#: Events a listener may fall behind by before the oldest are dropped.
QUEUE_SIZE = 256


@dataclass(frozen=True)
class Event:
    session_id: str
    kind: str  # "state", "activity", "run_finished", "kernel_died", "session_restored"
    data: dict


def state_event(record) -> dict:
    """A session's ``state`` event, from its record (keepalive.engine.record.SessionRecord)."""
    return {"state": record.state, "error": record.error, "restarts": record.restarts}


class EventHub:
    def __init__(self) -> None:
        # session id (None: every session) -> its listeners' queues
        self._listeners: dict[str | None, set[asyncio.Queue[Event]]] = {}
        #: Called with every event as it is published (keepalive.engine.timeline_recorder).
        self.observers: list[Callable[[Event], None]] = []

    def publish(self, session_id: str, kind: str, data: dict) -> None:
        event = Event(session_id, kind, data)
        for observe in self.observers:
            observe(event)
        for queue in (*self._listeners.get(session_id, ()), *self._listeners.get(None, ())):
            if queue.full():
                queue.get_nowait()  # state and activity events carry whole snapshots: the next one catches up
            queue.put_nowait(event)

    def listeners(self, session_id: str | None) -> int:
        return len(self._listeners.get(session_id, ()))

    @contextmanager
    def listen(self, session_id: str | None) -> Iterator[asyncio.Queue[Event]]:
        """A queue of one session's events, or (``None``) of every session's."""
        queue: asyncio.Queue[Event] = asyncio.Queue(QUEUE_SIZE)
        self._listeners.setdefault(session_id, set()).add(queue)
        try:
            yield queue
        finally:
            listeners = self._listeners.get(session_id)
            if listeners is not None:
                listeners.discard(queue)
                if not listeners:
                    del self._listeners[session_id]
