"""The warm pool: sessions started ahead of demand, so that a start takes one instead of waiting.

A pool session runs everything a session runs (display, kiosk Chromium with a profile from the
template, its own Jupyter server, JupyterLab loaded) before anyone knows whose it will be. Its
processes reach their home through a symlink in the session's folder (SessionLayout.home_link),
which points at an empty home of nobody's until a user takes the session. Then the link is
swapped to the user's home (the pool's own becomes it when the name has none yet), the HeavyAI
connection is handed to the server for the kernels to come, and the page shows the home
without a reload (``Session.claim``, then keepalive.engine.handover).

What a pool session cannot become is a returning user's browser: Chromium cannot switch
profiles once started. Its profile starts from the template, as every new name's does, and it
never saves over a profile the user's home already holds.

Filling is polite: one session at a time, only while no other start is under way, never beyond
``MAX_SESSIONS`` together with the live sessions, and only while the machine has
POOL_MEMORY_RESERVE of memory left over. Pool sessions are the service's own: they are stopped
when it exits, and a service that finds some left by a crashed one stops them too.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING

import psutil

if TYPE_CHECKING:  # the pool holds sessions the manager makes and stops; it never builds one
    from keepalive.engine.session import Session

log = logging.getLogger(__name__)

#: Memory the machine must have left over (after the session itself) for the pool to grow:
#: a pool session is only worth its memory while running sessions are not short of it.
POOL_MEMORY_RESERVE = 2 * 1024**3
#: About what one idle session needs (bench/session_bench.py measures it).
SESSION_MEMORY = 600 * 1024**2
#: Seconds between looks at the pool: dead pool sessions are replaced, a refill that had to
#: wait (starts under way, memory short) is tried again.
LOOK_INTERVAL = 5.0
#: Seconds to wait after a pool session failed to start before the next try.
FAILURE_BACKOFF = 30.0
#: Seconds between a start ending and the pool's next session starting: a session's first steps
#: run on the service's event loop, and the user who just took one must get their answer first.
AFTER_START = 0.5


class WarmPool:
    """Keeps up to ``size`` sessions started and waiting; ``take`` hands one out."""

    def __init__(
        self,
        size: int,
        make: Callable[[], Awaitable[Session]],
        room: Callable[[], int],
        busy: Callable[[], bool],
        stop: Callable[[Session], Awaitable[None]],
        forget: Callable[[Session], None] | None = None,
    ) -> None:
        """``make`` admits a new pool session (not started); ``room`` says how many sessions
        may still be added besides the live and pool ones; ``busy`` whether other starts are
        under way; ``stop`` stops a pool session (the manager's one stop path); ``forget``
        drops one whose start was cancelled (it cleaned up after itself: nothing to stop)."""
        self.size = size
        self._make = make
        self._room = room
        self._busy = busy
        self._stop = stop
        self._forget = forget
        self._waiting: list[Session] = []  # started, healthy when last looked at, nobody's
        self._filling: Session | None = None  # the one being started now
        self._task: asyncio.Task[None] | None = None
        self._wake = asyncio.Event()
        self._start_ended = 0.0  # monotonic time the last start (of the API's) ended
        #: Starts served from the pool, and the ones that could not be, by reason.
        self.hits = 0
        self.misses: Counter[str] = Counter()

    # -- what the manager and the API see -------------------------------------------------

    @property
    def waiting(self) -> int:
        return len(self._waiting)

    @property
    def filling(self) -> int:
        return 1 if self._filling is not None else 0

    def sessions(self) -> list[Session]:
        """Every pool session: waiting, and the one being started."""
        return self._waiting + ([self._filling] if self._filling is not None else [])

    def uids(self) -> set[int]:
        return {s.user.uid for s in self.sessions() if s.user is not None}

    # -- taking ---------------------------------------------------------------------------

    def take(self, width: int, height: int) -> Session | None:
        """A waiting session of this screen size whose parts all run, or None (counted as a miss).

        Called inside the manager's admission lock: the session returned is the caller's.
        """
        if self.size == 0:
            return None
        healthy = [s for s in self._waiting if s.healthy]  # the next look replaces the others
        for session in healthy:
            if (session.width, session.height) == (width, height):
                self._waiting.remove(session)
                self.hits += 1
                self._wake.set()  # refill
                return session
        self.miss("screen size" if healthy else "empty")
        return None

    def miss(self, reason: str) -> None:
        self.misses[reason] += 1

    async def make_room(self) -> None:
        """Give up one pool session so that a cold start fits under MAX_SESSIONS."""
        if self._waiting:
            session = self._waiting.pop()
            log.info("pool: letting session %s go to make room for a start", session.id)
            await self._stop(session)
        elif self._filling is not None and self._task is not None:
            log.info("pool: giving up the session being started, to make room for a start")
            await self._cancel_filling()
            self.start()

    async def _cancel_filling(self) -> None:
        assert self._task is not None
        self._task.cancel()  # the session being started is cleaned up by its own start()
        await asyncio.gather(self._task, return_exceptions=True)
        self._task = None

    # -- filling --------------------------------------------------------------------------

    def start(self) -> None:
        if self.size > 0 and self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._keep_filled(), name="warm-pool")

    def wake(self, start_ended: bool = False) -> None:
        """Look now (a session stopped, a start ended): there may be room to fill."""
        if start_ended:
            self._start_ended = time.monotonic()
        self._wake.set()

    def _wanted(self) -> int:
        return min(self.size - len(self._waiting), self._room())

    async def _keep_filled(self) -> None:
        while True:
            await self._drop_dead()
            if self._wanted() > 0 and not self._busy() and self._memory_left():
                since = time.monotonic() - self._start_ended
                if since < AFTER_START:
                    await asyncio.sleep(AFTER_START - since)
                    continue  # and look again: another start may have begun meanwhile
                if not await self._fill_one():
                    await asyncio.sleep(FAILURE_BACKOFF)
                continue  # look again at once: more may be wanted
            self._wake.clear()
            # not asyncio.wait_for: on Python 3.11 it swallows a cancel that comes as the event
            # is set (close() right after a wake()), and the pool would never end
            try:
                async with asyncio.timeout(LOOK_INTERVAL):
                    await self._wake.wait()
            except TimeoutError:
                pass

    async def _fill_one(self) -> bool:
        try:
            session = await self._make()
        except Exception as error:  # no profile template, no free uid: try again later
            log.error("pool: cannot make a session for the pool: %s", error)
            return False
        self._filling = session
        try:
            await session.start()  # ends pooled, or raises having cleaned up
        except asyncio.CancelledError:
            if self._forget is not None:
                self._forget(session)
            raise
        except Exception as error:
            log.error("pool: a session for the pool failed to start: %s", error)
            self._filling = None  # before the stop's await: it is no longer the one being started
            await self._stop(session)  # its start cleaned up; this forgets it too
            return False
        finally:
            self._filling = None
        self._waiting.append(session)
        log.info("pool: %s of %s waiting", len(self._waiting), self.size)
        return True

    async def _drop_dead(self) -> None:
        for session in list(self._waiting):
            if not session.healthy:
                log.warning("pool: session %s lost a part while waiting; replacing it", session.id)
                self._waiting.remove(session)
                await self._stop(session)

    @staticmethod
    def _memory_left() -> bool:
        available = psutil.virtual_memory().available
        if available < POOL_MEMORY_RESERVE + SESSION_MEMORY:
            log.debug("pool: not growing, %.1f GiB of memory available", available / 1024**3)
            return False
        return True

    async def close(self) -> None:
        """Stop filling and stop every pool session: nobody asked for them to outlive the service."""
        if self._task is not None:
            await self._cancel_filling()
        waiting, self._waiting = self._waiting, []
        await asyncio.gather(*(self._stop(session) for session in waiting), return_exceptions=True)
