"""Standby: a session nobody needs right now costs next to nothing, and keeps everything.

A ready session goes into standby (``Session.sleep``) once nobody has used it for
``standby_after`` seconds (``Session.touch``: a viewer, a screenshot, a DevTools client, a
wake) and, at that moment, no viewer or DevTools client is connected and no kernel of it is
busy (the activity watcher's last look; a session not looked at yet stays awake). Its display
and kiosk browser stop after the page saved its notebooks; its Jupyter server and kernels run
on, their outputs kept by the server extension's execution record.

It wakes (``Session.wake``, the display-recovery path: the same JupyterLab comes back, with the
outputs of what ran meanwhile) when something needs its page: a viewer, a screenshot, a DevTools
client, ``POST /sessions/{id}/wake``, or one of its kernels going busy (the Jupyter side tells
the activity watcher, which holds one look open: nothing polls a session in standby).
``MAX_SESSIONS`` counts the sessions that are awake: a wake that would pass it first puts the
least recently used idle session into standby.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

from keepalive.models import SessionState

if TYPE_CHECKING:
    from keepalive.engine.session import Session

log = logging.getLogger(__name__)

#: Longest time between two looks for sessions to put into standby (a quarter of
#: ``standby_after`` when that is shorter, so a session sleeps at most that much late).
CHECK_EVERY = 30.0


class NoRoomToWake(RuntimeError):
    """MAX_SESSIONS sessions are awake and none of them is idle: a wake has to wait."""


class StandbyKeeper:
    def __init__(
        self,
        after: float,
        *,
        sessions: Callable[[], list[Session]],
        awake: Callable[[], list[Session]],
        busy: Callable[[Session], bool | None],
        guests: Callable[[Session], int],
        max_awake: int,
    ) -> None:
        """``after``: the setting (0: never); ``sessions()``: the API's sessions; ``awake()``:
        those counted against ``max_awake`` (MAX_SESSIONS); ``busy(s)``:
        whether a kernel of ``s`` is busy (None: not known yet); ``guests(s)``: its DevTools
        clients now."""
        self.after = after
        self._sessions = sessions
        self._awake = awake
        self._busy = busy
        self._guests = guests
        self.max_awake = max_awake
        #: Called with the seconds each wake took, the room-making included (keepalive.metrics).
        self.wake_observers: list[Callable[[float], None]] = []
        self._wakes: set[asyncio.Task[None]] = set()  # the background ones, held until done
        self._task: asyncio.Task[None] | None = None
        # One wake's room-making at a time: two wakes never both count the same free place.
        self._room_lock = asyncio.Lock()

    @property
    def enabled(self) -> bool:
        return self.after > 0

    def start(self) -> None:
        if self.enabled and self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._keep(), name="standby")

    async def stop(self) -> None:
        tasks = [*self._wakes, *([self._task] if self._task else [])]
        self._task = None
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    # -- who sleeps --------------------------------------------------------------------------

    def in_use(self, session: Session) -> bool:
        """Someone is connected to it, or one of its kernels is (or may be) computing."""
        return self.watched(session) or self._busy(session) is not False

    def watched(self, session: Session) -> bool:
        return session.viewer_server.viewers > 0 or self._guests(session) > 0

    async def watchers_changed(self, session: Session) -> None:
        """A viewer or DevTools client came or left: the page rests while nobody watches it
        (JupyterLab's polls stand by, as in a hidden tab: web/heavyai/src/unwatched.ts)."""
        await session.parts.display.set_watched(self.watched(session))

    def idle(self, session: Session, now: float | None = None) -> bool:
        """Due for standby: ready, unused for ``after`` seconds, and nobody uses it now."""
        unused = (now if now is not None else time.monotonic()) - session.last_used
        return session.state is SessionState.ready and unused >= self.after and not self.in_use(session)

    async def check(self) -> list[Session]:
        """Put every session that is due into standby; returns those that went."""
        went = []
        for session in self._sessions():
            if self.idle(session) and await session.sleep(unused_for=self.after):
                went.append(session)
        return went

    async def _keep(self) -> None:
        interval = min(CHECK_EVERY, self.after / 4)
        while True:
            await asyncio.sleep(interval)
            try:
                await self.check()
            except Exception:  # one session's failure must not end standby for all
                log.exception("standby: a look for idle sessions failed")

    # -- waking ------------------------------------------------------------------------------

    async def wake(self, session: Session) -> None:
        """Wake ``session`` if it is in standby, making room under MAX_SESSIONS first; the
        session says afterwards whether it woke (``ready``) or could not (``failed``, its error).
        NoRoomToWake when every awake session is in use."""
        session.touch()  # first: no standby begins for it from here on
        if session.state is not SessionState.standby:
            return
        async with self._room_lock:
            awake = self._awake()
            if len(awake) >= self.max_awake and session.state is SessionState.standby:
                await self._make_room(awake)
            began = time.monotonic()
            await session.wake()
        if session.state is SessionState.ready:
            for observe in self.wake_observers:
                observe(time.monotonic() - began)

    async def _make_room(self, awake: list[Session]) -> None:
        for candidate in sorted(awake, key=lambda s: s.last_used):  # the least recently used first
            if candidate.state is SessionState.ready and not self.in_use(candidate):
                if await candidate.sleep(unused_for=0):
                    log.info("session %s (%s): put into standby to make room for a wake (MAX_SESSIONS %s)",
                             candidate.id, candidate.name, self.max_awake)
                    return
        raise NoRoomToWake(f"{len(awake)} sessions are awake and in use; the limit is {self.max_awake}")

    def wake_soon(self, session: Session, why: str) -> None:
        """Wake ``session`` in the background (a kernel of it went busy)."""
        if session.state is not SessionState.standby:
            return
        log.info("session %s (%s): waking: %s", session.id, session.name, why)

        async def waking() -> None:
            try:
                await self.wake(session)
            except NoRoomToWake as error:
                log.warning("session %s: stays in standby: %s", session.id, error)

        task = asyncio.get_running_loop().create_task(waking(), name=f"wake-{session.id}")
        self._wakes.add(task)
        task.add_done_callback(self._wakes.discard)
