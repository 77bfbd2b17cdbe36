"""What a session is (its record) and the state changes it may make (its transition table).

The record is plain data without secrets, kept in the service's store (keepalive.engine.store)
and as ``session.json`` in the session's folder, so that a later service finds the session
again and adopts its parts. Only ``Session._set_state`` writes its ``state``, checked against
``ALLOWED`` (tests/unit/test_lifecycle.py holds every module to that).
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass, field
from datetime import UTC, datetime

from keepalive.models import SessionState

#: The state changes a session may make; everything else is a bug, refused by ``_set_state``.
ALLOWED: dict[SessionState, frozenset[SessionState]] = {
    SessionState.starting: frozenset({SessionState.ready, SessionState.pooled, SessionState.failed, SessionState.stopping}),
    # taken by a user (it starts again, as theirs), or let go
    SessionState.pooled: frozenset({SessionState.starting, SessionState.stopping}),
    SessionState.ready: frozenset({SessionState.recovering, SessionState.standby, SessionState.failed,
                                   SessionState.stopping}),
    # woken (ready), failed to wake (its kernels still run), or stopped
    SessionState.standby: frozenset({SessionState.ready, SessionState.failed, SessionState.stopping}),
    SessionState.recovering: frozenset({SessionState.ready, SessionState.failed, SessionState.stopping}),
    SessionState.failed: frozenset({SessionState.stopping}),
    SessionState.stopping: frozenset({SessionState.stopped}),
    SessionState.stopped: frozenset(),
}


class InvalidTransition(RuntimeError):
    pass


class SessionStartError(RuntimeError):
    """A session could not start; the message names the part and carries its log's last lines."""


def now_stamp() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass
class SessionRecord:
    """What a session is, without secrets: persisted as ``session.json``."""

    id: str
    name: str
    width: int
    height: int
    created_at: str = field(default_factory=now_stamp)
    state: str = SessionState.starting.value
    restarts: int = 0
    display: int | None = None
    xpra_port: int | None = None
    error: str | None = None
    # What a later service needs to adopt the running parts: each process's pid with its
    # start time (a recycled pid never passes for the process), and where Jupyter serves.
    jupyter_pid: int | None = None
    jupyter_started_at: float | None = None
    jupyter_url: str | None = None
    xvfb_pid: int | None = None
    xvfb_started_at: float | None = None
    #: The kiosk browser's process: its CDP bridge, Chromium's parent.
    browser_pid: int | None = None
    browser_started_at: float | None = None
    #: xpra, while it runs for a viewer (keepalive.engine.viewer_server).
    xpra_pid: int | None = None
    xpra_started_at: float | None = None
    #: The HeavyAI connection without its session ID (that is in the session's 0600 file).
    heavyai: dict | None = None
    #: The session's own Unix user (keepalive.engine.users), when the service runs as root.
    uid: int | None = None
    #: A run shorter than this does not call the webhook (None: the setting). The URL itself is
    #: a secret, kept in the session folder (SessionLayout.webhook_url_file).
    webhook_min_busy: float | None = None
    #: Started for the warm pool: its parts reach the home through SessionLayout.home_link.
    home_linked: bool = False
    #: Taken from the pool by a name whose home holds a saved browser profile. Its browser
    #: started from the template, so it never saves over that profile (see PoolHandover.keeps_profile).
    keep_saved_profile: bool = False
    #: The limits asked for (keepalive.engine.cgroups.Limits' fields), and the session's cgroup
    #: (SessionCgroup.to_record), when it has one.
    limits: dict | None = None
    cgroup: dict | None = None

    @classmethod
    def from_stored(cls, data: dict) -> SessionRecord:
        """A record as keepalive.engine.store.load returns it (already in today's format)."""
        return cls(**data)


def new_session_id() -> str:
    return secrets.token_hex(6)
