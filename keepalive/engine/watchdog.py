"""A session's watchdog and its restart policy.

An exit is heard at once (keepalive.engine.process watches each child's pidfd); a hang is not.
So while a session is ready, its page and its Jupyter server are asked every ``probe_interval``
seconds (a setting) whether they answer, within that same time; PROBE_MISSES misses in a row
count as hung, and a hung part is handled like a crashed one. The watchdog also saves the
browser profile now and then. The restart policy decides how long a recovery waits, and when
a session that keeps crashing gives up instead; ``bring_back`` is what a recovery does.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING

from keepalive.engine.errors import first_line

if TYPE_CHECKING:
    from keepalive.engine.display import Display
    from keepalive.engine.jupyter_side import JupyterSide

log = logging.getLogger(__name__)

#: After this many automatic recoveries within RESTART_WINDOW seconds a session gives up (a
#: crash once a day never adds up to that), waiting RESTART_BACKOFF[n] seconds before the n-th.
MAX_RESTARTS = 3
RESTART_WINDOW = 600.0
RESTART_BACKOFF = (0.0, 2.0, 5.0)
#: Seconds a recovery gives a browser that still runs to take a new CDP connection. A live
#: local Chromium answers in well under one; one that is dying may never answer, and Playwright
#: can then wait for its whole timeout, so the whole display is restarted after this instead.
RECONNECT_TIMEOUT = 15.0
#: Probes missed in a row before a part counts as hung.
PROBE_MISSES = 3
#: How often a running session's browser profile is saved into its home (and at every stop).
PROFILE_SAVE_INTERVAL = 600.0

Probe = Callable[[float], Awaitable[bool]]


class RestartPolicy:
    """How long the next recovery waits, or None: give up (too many within the window)."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._recent: list[float] = []  # times of the restarts within the window

    def next_delay(self) -> float | None:
        now = self._clock()
        self._recent = [t for t in self._recent if now - t < RESTART_WINDOW]
        if len(self._recent) >= MAX_RESTARTS:
            return None
        delay = RESTART_BACKOFF[len(self._recent)]
        self._recent.append(now)
        return delay

    @staticmethod
    def give_up_reason(why: str) -> str:
        return (
            f"{why}; gave up after {MAX_RESTARTS} restarts within {RESTART_WINDOW / 60:.0f} minutes "
            "(the Jupyter server and its kernels keep running)"
        )


class Watchdog:
    def __init__(
        self,
        session_id: str,
        *,
        interval: float,
        ready: Callable[[], bool],
        probes: dict[str, Probe],
        on_hung: Callable[[str, str], Awaitable[None]],
        save_profile: Callable[[], Awaitable[None]],
    ) -> None:
        """``probes``: part name -> ``probe(timeout)``, whether the part answers; ``ready()``:
        whether the session is ready (nothing is probed otherwise); ``on_hung(part, why)``:
        a part missed PROBE_MISSES probes in a row."""
        self.session_id = session_id
        self.interval = interval
        self._ready = ready
        self._probes = probes
        self._on_hung = on_hung
        self._save_profile = save_profile
        self._task: asyncio.Task[None] | None = None

    @property
    def running(self) -> bool:
        return self._task is not None

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._watch(), name=f"watch-{self.session_id}")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None

    async def _watch(self) -> None:
        """Probe the page and Jupyter while ready; save the browser profile now and then."""
        misses = dict.fromkeys(self._probes, 0)
        last_save = time.monotonic()
        while True:
            await asyncio.sleep(self.interval)
            if not self._ready():
                misses = dict.fromkeys(misses, 0)
                continue
            for part, answers in self._probes.items():
                misses[part] = 0 if await answers(self.interval) else misses[part] + 1
                if misses[part] >= PROBE_MISSES and self._ready():
                    misses[part] = 0
                    silent = f"{PROBE_MISSES * self.interval:.0f} s"
                    log.error("session %s: the %s did not answer for %s; handling it as a crash",
                              self.session_id, part, silent)
                    await self._on_hung(part, f"the {part} did not answer for {silent}")
            if time.monotonic() - last_save >= PROFILE_SAVE_INTERVAL and self._ready():
                last_save = time.monotonic()
                await self._save_profile()


async def bring_back(
    display: Display, jupyter: JupyterSide, env: dict[str, str], session_id: str, new_jupyter: bool = False
) -> None:
    """Bring back what died; the Jupyter server is kept if it still runs, unless ``new_jupyter``
    (a restart on request). The kernels run on either way: a new server takes them back."""
    new_jupyter = new_jupyter or jupyter.lost
    if new_jupyter:
        await jupyter.restart(env)
    if display.browser_connected and display.running and await display.bridge_answers():
        # only the page (or Jupyter) died: a new CDP connection and a fresh load may do. The
        # browser may be on its way out too (its page closes first, before Playwright hears
        # of the disconnect): then, within RECONNECT_TIMEOUT, the whole display.
        if new_jupyter:
            await jupyter.carry_drafts(await display.unsent_drafts())
        await display.close_page()
        try:
            await display.open_page(jupyter.endpoint, jupyter.lab_path, connect_timeout=RECONNECT_TIMEOUT)
            return
        except Exception as error:
            log.warning("session %s: the browser did not come back by itself (%s); restarting the display",
                        session_id, first_line(error))
    await display.stop()
    assert jupyter.endpoint is not None
    # Chromium opens the lab by itself, logged in by its profile's cookies, while the service
    # connects to it: a wake waits for JupyterLab's load alone, not for that and the connection
    await display.restart(env, start_url=jupyter.endpoint.url + jupyter.lab_path)
    await display.open_page(jupyter.endpoint, jupyter.lab_path, opened=True)
