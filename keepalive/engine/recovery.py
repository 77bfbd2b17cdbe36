"""A session's recovery: what happens when one of its parts is lost (a crash, a hang).

What died is brought back (``bring_back``: the Jupyter server is kept if it still runs, so the
kernels compute on), after the backoff keepalive.engine.watchdog.RestartPolicy gives; a session
that keeps crashing gives up instead: its display goes, its Jupyter server and kernels run on
until a DELETE. Recovery never changes the session's state by itself: the session hands it its
one door (``set_state``) and the lock that door needs.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Coroutine

from keepalive.engine.display import Display
from keepalive.engine.errors import first_line
from keepalive.engine.jupyter_side import JupyterSide
from keepalive.engine.record import InvalidTransition, SessionRecord
from keepalive.engine.watchdog import RestartPolicy, bring_back
from keepalive.models import SessionState

log = logging.getLogger(__name__)

SetState = Callable[[SessionState, str | None], None]


class Recovery:
    def __init__(
        self,
        record: SessionRecord,
        *,
        lock: asyncio.Lock,
        state: Callable[[], SessionState],
        set_state: SetState,
        display: Display,
        jupyter: JupyterSide,
        environment: Callable[[], dict[str, str]],
        pids: Callable[[], dict[str, int | None]],
    ) -> None:
        """``lock``: the session's, held by every state change; ``state()`` and ``set_state``:
        its state and its one door; ``environment()``: what a new child starts with."""
        self.record = record
        self._lock = lock
        self._state = state
        self._set_state = set_state
        self._display = display
        self._jupyter = jupyter
        self._environment = environment
        self._pids = pids
        self._policy = RestartPolicy()
        #: The recovery (or the standby wake a lost part started) under way, if any.
        self.task: asyncio.Task[None] | None = None

    @property
    def id(self) -> str:
        return self.record.id

    @property
    def under_way(self) -> bool:
        return self.task is not None and not self.task.done()

    def run(self, work: Coroutine[None, None, None]) -> None:
        """Run ``work`` as the session's recovery (``cancel`` ends it)."""
        self.task = asyncio.get_running_loop().create_task(work)

    def lost(self, why: str) -> None:
        """A part of a ready session was lost: recover it, or give up after a burst of crashes."""
        if self._state() is not SessionState.ready or self.under_way:
            return
        delay = self._policy.next_delay()
        if delay is None:
            # A burst of crashes: stop trying, but never at the cost of the computation. The
            # display goes; the Jupyter server and its kernels keep running until a DELETE.
            self.run(self._give_up(RestartPolicy.give_up_reason(why)))
        else:
            self.run(self._recover(why, delay))

    async def cancel(self) -> None:
        if self.under_way:
            assert self.task is not None
            self.task.cancel()
            await asyncio.gather(self.task, return_exceptions=True)

    async def _give_up(self, reason: str) -> None:
        async with self._lock:
            if self._state() is not SessionState.ready:
                return  # stopped meanwhile
            log.error("session %s (%s): %s", self.id, self.record.name, reason)
            self._set_state(SessionState.failed, reason)
            await self._display.stop()

    async def _recover(self, why: str, delay: float = 0.0) -> None:
        """Bring back what died; the Jupyter server (and its kernels) is kept if it still runs."""
        async with self._lock:
            if self._state() is not SessionState.ready:
                return  # stopped meanwhile
            self._count_restart(why, delay)
        await asyncio.sleep(delay)  # backoff: a part that keeps crashing gets time to stop doing so
        await self._bring_back(why)

    def _count_restart(self, why: str, delay: float) -> None:
        self.record.restarts += 1
        self._set_state(SessionState.recovering, why)
        log.warning("session %s: recovering (restart %s) in %.0f s after: %s", self.id, self.record.restarts, delay, why)

    async def restart_jupyter(self) -> None:
        """A new Jupyter server on request (after an upgrade of JupyterLab or the extension): the
        kernels run on, the page reconnects to them. Not a crash: no restart is counted."""
        async with self._lock:
            if self._state() is not SessionState.ready:
                raise InvalidTransition(f"session {self.id} is {self._state().value}, not ready")
            self._set_state(SessionState.recovering, why := "the Jupyter server restarts on request")
        await self._bring_back(why, new_jupyter=True)

    async def _bring_back(self, why: str, new_jupyter: bool = False) -> None:
        """A failed attempt (a part died meanwhile, e.g. the Jupyter server the new page was
        to log in to) counts as a crash of its own: retried as RestartPolicy says, or failed."""
        while True:
            async with self._lock:
                if self._state() is not SessionState.recovering:
                    return  # stopped meanwhile
                try:
                    await bring_back(self._display, self._jupyter, self._environment(), self.id, new_jupyter)
                except Exception as error:  # retried or failed, never left half-up
                    delay = self._policy.next_delay()
                    if delay is None:
                        log.error("session %s: recovery failed: %s", self.id, error)
                        await self._display.stop()  # the display only: kernels keep computing
                        self._set_state(SessionState.failed, f"recovery after '{why}' failed: {error}")
                        return
                    new_jupyter = False  # a server started by the attempt stays; a lost one is seen again
                    self._count_restart(f"recovery failed: {first_line(error)}", delay)
                else:
                    self.record.error = None
                    self._set_state(SessionState.ready)
                    log.info("session %s: recovered, pids %s", self.id, self._pids())
                    return
            await asyncio.sleep(delay)
