"""DevTools links: keys that open one session's browser over the CDP gateway for a while.

Made on request (``POST /sessions/{id}/devtools-link``), kept in memory only (a restarted
service forgets them), and each named in the log by its number, never by its key.
"""

from __future__ import annotations

import hmac
import itertools
import secrets
import time


class DevToolsLinks:
    def __init__(self) -> None:
        # key -> (link number for the log, session id, monotonic expiry)
        self._links: dict[str, tuple[int, str, float]] = {}
        self._numbers = itertools.count(1)

    def create(self, session_id: str, ttl: float) -> tuple[str, int]:
        """A new key for ``session_id``, valid ``ttl`` seconds; returns it and its number."""
        key = secrets.token_urlsafe(24)
        number = next(self._numbers)
        self._links[key] = (number, session_id, time.monotonic() + ttl)
        return key, number

    def holder(self, session_id: str, secret: str) -> str | None:
        """``"link #N"`` if ``secret`` is an unexpired link of that very session, else None."""
        now = time.monotonic()
        self._links = {k: v for k, v in self._links.items() if v[2] > now}
        for key, (number, linked_session, _) in self._links.items():
            if hmac.compare_digest(secret.encode(), key.encode()) and linked_session == session_id:
                return f"link #{number}"
        return None
