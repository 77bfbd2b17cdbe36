"""Every session the service holds, whatever its state: one place to look one up.

A session is registered when it is admitted (a user's, or one made for the warm pool) or found
again from the store, and forgotten once it stopped. With it the registry keeps what the
manager runs for it: the start under way, and the watcher of its kernels' activity.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from keepalive.models import SessionState

if TYPE_CHECKING:  # the registry holds sessions; it never makes or drives one
    from keepalive.engine.activity import ActivityWatcher
    from keepalive.engine.session import Session


@dataclass
class Entry:
    session: Session
    #: Made for the warm pool and not taken yet: nobody's, never listed by the API.
    pool: bool = False
    start: asyncio.Task[None] | None = None
    watcher: ActivityWatcher | None = None


class SessionRegistry:
    def __init__(self) -> None:
        self._entries: dict[str, Entry] = {}

    def add(self, session: Session, pool: bool = False) -> Entry:
        entry = self._entries[session.id] = Entry(session, pool=pool)
        return entry

    def taken(self, session: Session) -> None:
        """A pool session became a user's."""
        self._entries[session.id].pool = False

    def remove(self, session_id: str) -> Entry | None:
        return self._entries.pop(session_id, None)

    def entry(self, session_id: str) -> Entry | None:
        return self._entries.get(session_id)

    def get(self, session_id: str) -> Session | None:
        entry = self._entries.get(session_id)
        return entry.session if entry is not None else None

    def is_pool(self, session_id: str) -> bool:
        entry = self._entries.get(session_id)
        return entry is not None and entry.pool

    def users(self) -> list[Session]:
        """The API's sessions (not the pool's), oldest first."""
        return sorted((e.session for e in self._entries.values() if not e.pool), key=lambda s: s.record.created_at)

    def live(self) -> list[Session]:
        """The API's sessions holding processes or a name: everything not stopped (a failed one
        may still run its Jupyter server and kernels, in its home, until it is deleted)."""
        return [s for s in self.users() if s.state is not SessionState.stopped]

    def awake(self) -> list[Session]:
        """The API's live sessions that count against MAX_SESSIONS: all but those in standby."""
        return [s for s in self.live() if s.state is not SessionState.standby]

    def holding(self) -> int:
        """Sessions (the API's and the pool's) that count against MAX_SESSIONS: not in standby."""
        return sum(1 for e in self._entries.values()
                   if e.session.state not in (SessionState.stopped, SessionState.standby))

    def uids(self) -> set[int]:
        """The Unix users of every session held (keepalive.engine.users)."""
        return {e.session.user.uid for e in self._entries.values() if e.session.user is not None}

    def starts(self) -> list[asyncio.Task[None]]:
        return [e.start for e in self._entries.values() if e.start is not None]

    def watchers(self) -> list[ActivityWatcher]:
        return [e.watcher for e in self._entries.values() if e.watcher is not None]

    def cdp_socket(self, session_id: str) -> Path | None:
        """Where the gateway reaches a session's browser: not once it stops."""
        session = self.get(session_id)
        if session is None or session.state in (SessionState.stopping, SessionState.stopped):
            return None
        return session.layout.cdp_socket
