"""One session: its record, its state machine, and the order in which its parts start and stop.

The parts do the work: the display (Xvfb, the kiosk Chromium, its page, xpra for viewers:
keepalive.engine.display), the Jupyter side (keepalive.engine.jupyter_side), the pool's
hand-over (keepalive.engine.handover) and the watchdog (keepalive.engine.watchdog). The
session decides when each runs, and is the one door every state change goes through
(``_set_state``, checked against keepalive.engine.record.ALLOWED, under the session's lock).
Sessions outlive the service: a later one finds them in the store and adopts them (``adopt``).
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import shutil
import time
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path

from keepalive.engine import framebuffer
from keepalive.engine.cgroups import Limits
from keepalive.engine.containment import Containment
from keepalive.engine.handover import PoolHandover
from keepalive.engine.layout import SessionLayout
from keepalive.engine.parts import PartHooks, PartsFactory
from keepalive.engine.process import ChildProcess
from keepalive.engine.record import ALLOWED, InvalidTransition, SessionRecord, SessionStartError  # noqa: F401
from keepalive.engine.users import SessionUser, ids_of
from keepalive.engine.recovery import Recovery
from keepalive.engine.watchdog import Watchdog, bring_back
from keepalive.files import write_private
from keepalive.models import HeavyAIConnection, SessionHealth, SessionState
from keepalive.settings import Settings

log = logging.getLogger(__name__)

class Session:
    def __init__(
        self,
        record: SessionRecord,
        settings: Settings,
        parts: PartsFactory,
        profile_template: Path | None = None,
        heavyai: HeavyAIConnection | None = None,
        persist: Callable[[dict], None] | None = None,
    ) -> None:
        self.record = record
        self.settings = settings
        folder = settings.sessions_dir / record.id
        self.layout = SessionLayout(
            folder, SessionLayout(folder).home_link if record.home_linked else settings.homes_dir / record.name
        )
        self._persist = persist
        # Held by every sequence that changes the state (start, adoption, claim, recovery,
        # standby, give-up, stop): no two of them interleave, and _set_state refuses to run without it.
        self._lock = asyncio.Lock()
        self._profile_template = profile_template
        self._heavyai = heavyai
        if heavyai is not None:
            record.heavyai = {"protocol": heavyai.protocol, "host": heavyai.host, "port": heavyai.port}
        #: The session's Unix user, or None: it shares the service's (see keepalive.engine.users).
        self.user = SessionUser(record.uid) if record.uid is not None else None
        self.parts = parts(PartHooks(
            record=record, settings=settings, user=self.user, layout=lambda: self.layout,
            environment=self.environment, spawn=self._spawn, on_exit=self._child_exited,
            on_browser_lost=self._browser_lost, niceness=self._niceness, persist=self._save_record,
        ))
        self.containment = self.parts.containment or Containment(record.id, None, self.user)
        self.handover = PoolHandover(
            record, settings, layout=lambda: self.layout, user=self.user,
            display=self.parts.display, jupyter=self.parts.jupyter, persist=self._save_record,
        )
        self.watchdog = Watchdog(
            record.id, interval=settings.probe_interval, ready=lambda: self.state is SessionState.ready,
            probes={"page": self.parts.display.page_answers, "jupyter": self.parts.jupyter.answers},
            on_hung=self._hung, save_profile=self._save_profile,
        )
        self.recovery = Recovery(
            record, lock=self._lock, state=lambda: self.state, set_state=self._set_state,
            display=self.parts.display, jupyter=self.parts.jupyter, environment=self.environment, pids=self.pids,
        )
        #: Set by the manager when the home is new or was someone else's: all of it goes to ``user``.
        self.give_home = False
        #: Seconds from start() to ready, once it is.
        self.start_seconds: float | None = None
        #: Where a run's end is announced (keepalive.engine.webhook); set before start().
        self.webhook_url: str | None = None
        #: Called after every state change, with the session (the manager's events and watchers).
        self.state_observers: list[Callable[[Session], None]] = []
        self._ending = False  # a stop began: no lost part starts a recovery any more
        #: When someone last used the session (a viewer, a screenshot, DevTools: ``touch``), on
        #: the monotonic clock: what standby goes by (keepalive.engine.standby).
        self.last_used = time.monotonic()

    # -- what the API shows -------------------------------------------------------------

    @property
    def id(self) -> str:
        return self.record.id

    @property
    def name(self) -> str:
        return self.record.name

    @property
    def width(self) -> int:
        return self.record.width

    @property
    def height(self) -> int:
        return self.record.height

    @property
    def display(self) -> int | None:
        return self.record.display

    @property
    def state(self) -> SessionState:
        return SessionState(self.record.state)

    def _set_state(self, state: SessionState, error: str | None = None) -> None:
        """The one door of every state change, checked against ALLOWED: a start can never end
        ``ready`` after a stop began, a recovery never revives a stopped session."""
        assert self._lock.locked(), "a state change outside the session's lock"
        if state is not self.state and state not in ALLOWED[self.state]:
            raise InvalidTransition(f"session {self.id}: {self.state.value} -> {state.value} is not allowed")
        self.record.state = state.value
        if error is not None:
            self.record.error = error
        self._save_record()
        for observe in self.state_observers:
            try:
                observe(self)
            except Exception:  # a listener's fault must never stop a transition
                log.exception("session %s: a state observer failed", self.id)

    @property
    def health(self) -> SessionHealth:
        display, jupyter = self.parts.display, self.parts.jupyter
        return SessionHealth(
            display=display.shows,  # Xvfb, and xpra whenever a viewer needed it
            xpra=display.shows,  # the older name of the same fact, kept for clients that read it
            browser=display.browser_connected,
            page=display.page_alive,
            jupyter=jupyter.healthy,
            standby=self.state is SessionState.standby or None,  # then the display's parts are down on purpose
        )

    @property
    def healthy(self) -> bool:
        """Every part that should run does (what the pool and /health's "unhealthy" go by)."""
        health = self.health
        return health.jupyter if health.standby else all(health.model_dump().values())

    @property
    def endpoint(self):
        """Where the session's Jupyter server answers (keepalive.engine.jupyter.JupyterEndpoint)."""
        return self.parts.jupyter.endpoint

    @property
    def viewer_server(self):
        return self.parts.display.viewer_server

    @property
    def xpra_password(self) -> str:
        return self.parts.display.xpra_password

    @property
    def from_pool(self) -> bool:
        return self.handover.from_pool

    @property
    def webhook_min_busy(self) -> float:
        return self.settings.webhook_min_busy if self.record.webhook_min_busy is None else self.record.webhook_min_busy

    def pids(self) -> dict[str, int | None]:
        return {"jupyter": self.parts.jupyter.pid, **self.parts.display.pids()}

    def environment(self) -> dict[str, str]:
        """What every child of the session starts with (see SessionLayout.environment)."""
        return self.layout.environment(self.id, user=self.user)

    def _save_record(self) -> None:
        record = asdict(self.record)
        if self._persist is not None:
            self._persist(record)
        if self.layout.folder.is_dir():  # a copy for people looking into the folder
            write_private(self.layout.record_file, json.dumps(record, indent=2))

    def _niceness(self) -> int:
        return self.handover.niceness(starting=self.state is SessionState.starting)

    def _spawn(self, name: str, argv: list[str], env: dict[str, str],
               on_exit: Callable[[ChildProcess, int | None], None] | None = None) -> ChildProcess:
        """One of the session's processes, not started: as its user, at its priority, in its home,
        logging to ``logs/NAME.log``; an exit nobody asked for is a lost part, unless ``on_exit``."""
        return ChildProcess(
            name, argv, env=env, cwd=self.layout.home, log_path=self.layout.log(name),
            on_exit=on_exit or self._child_exited, user=ids_of(self.user),
            niceness=self._niceness(), **self.containment.launch_options(name),
        )

    # -- use ------------------------------------------------------------------------------

    def touch(self) -> None:
        """Someone uses the session now: it stays out of standby for STANDBY_AFTER seconds more."""
        self.last_used = time.monotonic()

    async def viewer_port(self, join: bool = False) -> int:
        """The port of the session's xpra, started for a viewer if needed (see Display.viewer_port)."""
        return await self.parts.display.viewer_port(join)

    async def fit_screen(self) -> bool:
        return await self.parts.display.fit_screen()

    async def screenshot(self) -> bytes:
        return await self.parts.display.screenshot()

    async def notify(self, text: str) -> None:
        await self.parts.display.notify(text)

    # -- start ------------------------------------------------------------------------

    async def start(self) -> None:
        """Start every part and wait until JupyterLab is on screen, or clean up and raise.

        A session made for the warm pool ends ``pooled``, waiting; one taken from the pool
        (``claim``) takes its running parts over and ends ``ready``, as a user's.
        """
        timeout = self.settings.start_timeout
        began = time.monotonic()
        async with self._lock:
            try:
                await asyncio.wait_for(self._take_over_or_start_cold() if self.from_pool else self._start_parts(),
                                       timeout)
            except TimeoutError:
                reason = f"session did not become ready within {timeout:.0f} s"
                await self._fail_start(reason)
                raise SessionStartError(reason) from None
            except Exception as error:  # whatever failed (a child, Playwright, the disk): leave nothing behind
                reason = str(error) or type(error).__name__
                await self._fail_start(reason)
                raise SessionStartError(reason) from error
            except asyncio.CancelledError:
                await self._fail_start("start was cancelled")
                raise
            if self.record.home_linked and not self.from_pool:
                self._set_state(SessionState.pooled)
                log.info("session %s: waiting in the pool, ready in %.1f s", self.id, time.monotonic() - began)
                return
            self._set_state(SessionState.ready)
        self.start_seconds = time.monotonic() - began
        self.touch()  # standby counts from the first ready
        self.watchdog.start()
        log.info("session %s (%s): ready in %.2f s%s, pids %s", self.id, self.name, self.start_seconds,
                 " (from the pool)" if self.from_pool else "", self.pids())

    async def _start_parts(self) -> None:
        # first of all: every process from here on is born inside it
        self.record.cgroup = await asyncio.to_thread(self.containment.create, Limits(**(self.record.limits or {})))
        if self.record.home_linked:  # for the pool: a home of nobody's, reached through the link
            SessionLayout(self.layout.folder, self.layout.pool_home).create(self.user, give_home=True)
            os.symlink(self.layout.pool_home.name, self.layout.home_link)
        else:
            self.layout.create(self.user, give_home=self.give_home)
        self._save_record()
        if self.webhook_url is not None:
            write_private(self.layout.webhook_url_file, self.webhook_url)
        env = self.environment()
        assert self._profile_template is not None
        used = await self.parts.display.restore_profile(self._profile_template)
        log.info("session %s (%s): browser profile from %s", self.id, self.name, used)
        if self._heavyai is not None:
            self.parts.jupyter.write_heavyai_handoff(self._heavyai)
        # Jupyter and the display do not need each other, only the browser needs both: start
        # them side by side. A failure of one cancels the other; start() then cleans up.
        try:
            async with asyncio.TaskGroup() as group:
                jupyter = group.create_task(self.parts.jupyter.start(env))
                group.create_task(self.parts.display.start(env))
        except BaseExceptionGroup as failures:
            raise failures.exceptions[0] from None
        await self.parts.display.open_page(jupyter.result(), await self.parts.jupyter.landing_path())

    async def claim(self, name: str, heavyai: HeavyAIConnection | None) -> None:
        """Make this waiting pool session ``name``'s (the record only, inside the manager's
        admission); ``start()`` then takes its parts over: the home, the handoff, the page."""
        async with self._lock:
            assert self.state is SessionState.pooled, self.state
            self.handover.claim(name, heavyai)
            self._heavyai = heavyai
            self._set_state(SessionState.starting)

    async def _take_over_or_start_cold(self) -> None:
        """Take the pool session over; if that fails (a part can break unseen while it waits: a
        server that stopped answering, a page that hangs), start the user's session cold in its
        place, under the same id, as if the pool had been empty. The pool's profile is not saved."""
        try:
            await self.handover.take_over(self._heavyai, self.webhook_url)
            return
        except Exception as error:
            log.warning("session %s: taking it over from the pool failed (%s); starting %s's session cold",
                        self.id, str(error) or type(error).__name__, self.name)
        await self._end()  # the pool's folder: its link, its profile, its home if nobody's moved in
        self.layout, self.give_home = self.handover.cold_instead()
        await self._start_parts()

    async def _fail_start(self, reason: str) -> None:
        log.error("session %s (%s): failed to start: %s", self.id, self.name, reason)
        await self._end()
        if self.state is SessionState.starting:  # not when a stop took over: it says how it ended
            self._set_state(SessionState.failed, reason)

    # -- crashes and recovery -----------------------------------------------------------

    def _child_exited(self, child: ChildProcess, code: int | None) -> None:
        log.error("session %s: %s (pid %s) exited unexpectedly with code %s", self.id, child.name, child.pid, code)
        self._part_lost(f"{child.name} exited with code {code}")

    def _browser_lost(self, why: str) -> None:
        log.error("session %s: %s", self.id, why)
        self._part_lost(why)

    async def _hung(self, part: str, why: str) -> None:
        if part == "jupyter":
            await self.parts.jupyter.stop_hung()  # a hung server cannot be talked to: only a new one helps
        self._part_lost(why)

    def _part_lost(self, why: str) -> None:
        if self._ending:
            return
        if self.state is SessionState.standby:  # its Jupyter server, with the display down on purpose
            log.warning("session %s: %s in standby; waking it", self.id, why)
            if not self.recovery.under_way:
                self.recovery.run(self.wake())
            return
        self.recovery.lost(why)

    # -- standby (keepalive.engine.standby) ----------------------------------------------------

    async def sleep(self, unused_for: float = 0.0) -> bool:
        """Into standby, if ready and unused for ``unused_for`` seconds (checked under the lock:
        a use that came meanwhile wins): the notebooks saved, the kiosk browser closed (by itself)
        and the display stopped, then the profile saved; the Jupyter server and kernels run on.
        Whether it went."""
        async with self._lock:
            if self.state is not SessionState.ready or self._ending or time.monotonic() - self.last_used < unused_for:
                return False
            try:  # nothing typed may be lost: a page that cannot save keeps the session awake
                await self.parts.display.save_notebooks()
                await self.watchdog.stop()
                await self.parts.display.stop(quit_browser=True)
                await self._save_profile()  # as Chromium left it on its way out
            except Exception as error:  # still ready, and watched: the watchdog brings back what broke
                log.warning("session %s: not going into standby: %s: %s", self.id, type(error).__name__, error)
                self.watchdog.start()  # (if stopped: a task, which takes the lock once this gives it up)
                return False
            self.parts.display.release_numbers()
            self._set_state(SessionState.standby)
        log.info("session %s (%s): in standby after %.0f s unused", self.id, self.name, time.monotonic() - self.last_used)
        return True

    async def wake(self) -> None:
        """Out of standby: the display and the kiosk browser again, on the same JupyterLab (its
        workspace, the notebooks' outputs and what ran meanwhile: as after a crash of the
        display). If it cannot, the session is failed (its error says why), its kernels run on."""
        async with self._lock:
            if self.state is not SessionState.standby:
                return
            began = time.monotonic()
            try:
                await bring_back(self.parts.display, self.parts.jupyter, self.environment(), self.id)
            except Exception as error:  # never left half-up
                await self.parts.display.stop()
                reason = f"could not wake from standby: {str(error) or type(error).__name__}"
                log.error("session %s (%s): %s", self.id, self.name, reason)
                self._set_state(SessionState.failed, reason)
                return
            took = time.monotonic() - began
            self.touch()
            self._set_state(SessionState.ready)
        self.watchdog.start()
        log.info("session %s (%s): awake in %.2f s, pids %s", self.id, self.name, took, self.pids())

    # -- stop -----------------------------------------------------------------------------

    async def stop(self) -> None:
        """Stop every part, reap every leftover process, free the numbers, remove the folder: the
        one way a session ends, whoever ends it (a DELETE, the pool letting it go, a service
        stopping its sessions, or one finishing a stop its dead predecessor began)."""
        if self.state is SessionState.stopped:
            return
        self._ending = True
        await self.parts.display.viewer_server.stop(close=True)  # no viewer brings xpra back from here on
        await self.watchdog.stop()
        await self.recovery.cancel()
        async with self._lock:
            if self.state is SessionState.stopped:
                return  # another stop ended it while this one waited
            was = self.state
            self._set_state(SessionState.stopping)
            await self.watchdog.stop()  # one a start or adoption began while this stop waited
            log.info("session %s (%s): stopping, pids %s", self.id, self.name, self.pids())
            if was in (SessionState.ready, SessionState.recovering):  # what the user typed reaches the home
                await self.parts.display.save_notebooks()
            await self._end(save_profile=True)
            self._set_state(SessionState.stopped)
        log.info("session %s (%s): stopped; its home %s stays", self.id, self.name, self.layout.kept)

    async def _end(self, save_profile: bool = False) -> None:
        """The one teardown, whatever the reason (a give-up or a failed recovery or wake stops the
        display only: Jupyter and its kernels compute on until a DELETE). Every process ends, the
        numbers are freed, the profile saved when ``save_profile``, the folder removed."""
        await self.parts.display.stop(reap_leftovers=False, quit_browser=save_profile)  # everything is reaped below
        await self.parts.jupyter.stop()
        # whatever escaped the process groups (crashpad handlers, kernels, a notebook's daemons) goes now
        await asyncio.to_thread(self.containment.end_all, self.layout.folder)
        self.parts.display.release_numbers()
        if save_profile:
            await self._save_profile()
        shutil.rmtree(self.layout.folder, ignore_errors=True)
        framebuffer.remove(self.id)

    async def _save_profile(self) -> None:
        if self.handover.saves_profile():
            await self.parts.display.save_profile()

    async def detach(self) -> None:
        """Let go of the session, which stays: the service is going away. The CDP connection is
        dropped (the page stays as it is), no process is watched; a later service adopts them."""
        await self.watchdog.stop()
        await self.recovery.cancel()
        await self.parts.display.detach()
        self.parts.jupyter.detach()
        log.info("session %s (%s): left running, pids %s", self.id, self.name, self.pids())

    # -- adoption ---------------------------------------------------------------------------

    def _adopt_parts(self) -> None:
        """Each process taken over only if its pid still belongs to the process that started at
        the recorded time (keepalive.engine.process.ChildProcess.adopt)."""
        if self.layout.webhook_url_file.is_file():
            self.webhook_url = self.layout.webhook_url_file.read_text().strip()
        elif self.settings.webhook_url is not None:
            self.webhook_url = self.settings.webhook_url.get_secret_value()
        self.parts.jupyter.adopt()
        if self.state is not SessionState.standby:  # in standby, the display has nothing running
            self.parts.display.adopt()

    async def adopt(self, to_stop: bool = False) -> None:
        """Find the session an earlier service left again, from its record, as its state says:
        ``ready``/``recovering``: the page reconnected over CDP as it is (no reload), parts that
        died meanwhile brought back as after a crash. ``failed``: kept failed (its Jupyter server
        may still run) until a DELETE. ``starting``: failed, its parts reaped. ``to_stop``: what
        runs is taken over for the caller to stop next (an unfinished stop, a pool session).
        A session that cannot be adopted is failed, with the reason."""
        async with self._lock:
            was = self.state
            try:
                self._adopt_parts()
            except Exception as error:
                if to_stop:  # what is left is reaped by the stop all the same
                    log.warning("session %s: only partly found again (%s); stopping it", self.id, error)
                    return
                if was is not SessionState.failed:
                    self._set_state(SessionState.failed, f"cannot be adopted: {error}")
                raise
            if was is SessionState.standby and not to_stop:
                log.info("session %s (%s): found in standby, pids %s", self.id, self.name, self.pids())
                if not self.parts.jupyter.healthy:
                    self._part_lost("its Jupyter server ended while no service watched")
                return
            if to_stop or was in (SessionState.failed, SessionState.stopping, SessionState.pooled):
                log.info("session %s (%s): found %s, pids %s", self.id, self.name, was.value, self.pids())
                return
            if was is SessionState.starting:
                await self._end()
                self._set_state(SessionState.failed, "the service ended while the session started")
                log.warning("session %s (%s): it was starting when the service ended; failed", self.id, self.name)
                return
            lost = [name for name, up in (("jupyter", self.parts.jupyter.healthy),
                                          ("display", self.parts.display.runs("xvfb")),
                                          ("browser", self.parts.display.runs("browser"))) if not up]
            if not lost:
                try:
                    if not await self.parts.display.reconnect():
                        lost.append("page")
                except Exception as error:  # a browser that cannot be reached is a lost browser
                    log.warning("session %s: cannot reconnect to the kiosk browser: %s", self.id, error)
                    lost.append("browser")
            self._set_state(SessionState.ready)  # from recovering, through the table; ready stays ready
        self.watchdog.start()
        if lost:
            self._part_lost(f"{', '.join(lost)} died while no service watched (was {was.value})")
        log.info("session %s (%s): adopted (was %s), pids %s%s", self.id, self.name, was.value, self.pids(),
                 f"; recovering {', '.join(lost)}" if lost else "")
