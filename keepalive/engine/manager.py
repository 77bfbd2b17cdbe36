"""All sessions of one service: adopt, create with checks, look up, stop, let go.

Sessions outlive the service (Docker's live-restore is the model): a service that stops,
or dies, leaves them running; the next one on the same state dir finds them in the store
and adopts them. Only an explicit request stops a session: ``DELETE``, ``keepalive stop``,
or ``serve --stop-sessions-on-exit``. Homes (notebooks, settings, the browser profile) outlive
sessions: deleting one is its own request.
"""

from __future__ import annotations

import asyncio
import hmac
import logging
import shutil
from collections.abc import Callable
from contextlib import AbstractAsyncContextManager
from pathlib import Path

from playwright.async_api import Playwright

from keepalive.engine.activity import ActivityWatcher
from keepalive.engine.allocation import Allocator
from keepalive.engine.cdp_gateway import CdpGateway
from keepalive.engine.cgroups import CgroupPlan, Limits
from keepalive.engine.containment import discover_plan, mode_name, session_limits
from keepalive.engine.devtools_links import DevToolsLinks
from keepalive.engine.events import EventHub, state_event
from keepalive.engine.folders import UnusableStateDir, prepare_folders  # noqa: F401 (the API's)
from keepalive.engine.layout import SessionLayout
from keepalive.engine.parts import PartsFactory
from keepalive.engine.pool import WarmPool
from keepalive.engine.profile import ProfileTemplate, TemplateUnavailable  # noqa: F401 (the API's)
from keepalive.engine.record import SessionRecord, SessionStartError, new_session_id
from keepalive.engine.registry import SessionRegistry
from keepalive.engine.restore import Restorer, Way
from keepalive.engine.session import Session
from keepalive.engine.standby import StandbyKeeper
from keepalive.engine.statelock import StateDirLock
from keepalive.engine.store import SessionStore
from keepalive.engine.timeline_recorder import record_timelines
from keepalive.engine.users import choose_user, parse_uid_range
from keepalive.models import HeavyAIConnection, SessionCreate, SessionState
from keepalive.settings import Settings

log = logging.getLogger(__name__)


#: Seconds a stopping service waits for webhook deliveries under way.
DELIVERY_GRACE = 5.0


#: Pool sessions' names (until taken): no user's name can start with "_".
POOL_NAME_PREFIX = "_pool-"


def is_pool_name(name: str) -> bool:
    return name.startswith(POOL_NAME_PREFIX)


class SessionNotFound(KeyError):
    pass


class NameTaken(ValueError):
    pass


class TooManySessions(RuntimeError):
    pass


class HomeNotFound(KeyError):
    pass


class HomeInUse(RuntimeError):
    pass


#: ``parts(allocator, playwright, gateway, cgroup_plan)``: how the manager's sessions get their parts
#: (keepalive.engine.parts.real_parts for the service; stand-ins in unit tests).
MakesParts = Callable[[Allocator, Playwright | None, CdpGateway, CgroupPlan | None], PartsFactory]


class SessionManager:
    def __init__(
        self,
        settings: Settings,
        state_lock: StateDirLock | None = None,
        api_token: str | None = None,
        *,
        parts: MakesParts,
        playwright: Callable[[], AbstractAsyncContextManager[Playwright | None]],
    ) -> None:
        """``playwright()``: the Playwright the sessions' browsers are driven with, entered at
        ``open`` and left at ``close`` (playwright's ``async_playwright`` for the service)."""
        self.settings = settings
        self._api_token = api_token
        self._make_parts = parts
        self._playwright_factory = playwright
        self._parts: PartsFactory | None = None
        #: How sessions get cgroups (keepalive.engine.cgroups), found at open(); None: they get none.
        self.cgroup_plan: CgroupPlan | None = None
        self.gateway = CdpGateway(
            settings.host, settings.cdp_port, self._cdp_socket, self._cdp_guest,
            max_clients=settings.cdp_max_clients, idle_timeout=settings.cdp_idle_timeout, on_guest=self._guest_uses,
        )
        self._devtools_links = DevToolsLinks()
        self.allocator = Allocator(display_base=settings.display_base)
        #: Every session held, whatever its state: the API's, the pool's, the adopted ones.
        self.registry = SessionRegistry()
        #: Puts sessions nobody uses into standby, and wakes them (keepalive.engine.standby).
        self.standby = StandbyKeeper(
            settings.standby_after, sessions=self.registry.users, awake=self.registry.awake, busy=self._busy,
            guests=lambda session: self.gateway.clients(session.id), max_awake=settings.max_sessions,
        )
        self._playwright_cm: AbstractAsyncContextManager[Playwright | None] | None = None
        self._playwright: Playwright | None = None
        self._state_lock = state_lock
        self._store: SessionStore | None = None
        self.template = ProfileTemplate(settings.profile_template, settings.state_dir, settings.chromium)
        self._admit_lock = asyncio.Lock()
        #: Called with each session that became ready after a start (keepalive.metrics listens).
        self.start_observers: list[Callable[[Session], None]] = []
        #: Every session's state and activity changes (GET /sessions/{id}/events), and its home's timeline.
        self.events = EventHub()
        self.timeline = record_timelines(settings, self.events, self.registry)
        #: Sessions whose every process ended while no service watched (keepalive.engine.restore).
        self.restorer = Restorer(settings)
        # A pool needs sessions of their own Jupyter: an external one (JUPYTER_URL) is shared,
        # and its workspace is named after the session.
        self.pool = WarmPool(
            0 if settings.jupyter_url else settings.pool_size, make=self._new_pool_session,
            room=self._room, busy=lambda: bool(self.registry.starts()), stop=self._stop,
            forget=lambda session: self._forget(session.id),  # a cancelled start: nothing of it runs
        )
        if settings.pool_size and settings.jupyter_url:
            log.warning("no warm pool (KEEPALIVE_POOL_SIZE) with KEEPALIVE_JUPYTER_URL: sessions share that server")

    async def open(self) -> None:
        """Take the state dir, start making the profile template, adopt what an earlier service left."""
        if self._state_lock is None:
            self._state_lock = StateDirLock(self.settings.state_dir).acquire()
        prepare_folders(self.settings)
        self._store = SessionStore(self.settings.state_dir / "sessions.db")
        # made now, in the background: the first POST of a fresh install does not wait 17 s
        # inside the admission lock, and a failure is answered with its reason (503)
        self.template.begin()
        self._playwright_cm = self._playwright_factory()
        self._playwright = await self._playwright_cm.__aenter__()
        self.cgroup_plan = discover_plan(self.settings.session_cgroups)
        log.info("sessions are contained by: %s", self.containment)
        self._parts = self._make_parts(self.allocator, self._playwright, self.gateway, self.cgroup_plan)
        await self.gateway.start()  # before adopting: the service reaches its browsers through it
        self.restorer.open()  # the last service's last heartbeat is read before this one's first
        await self._adopt_all()
        self.pool.start()
        self.standby.start()

    async def _adopt_all(self) -> None:
        """Every session an earlier service left, as its record says (see Session.adopt)."""
        assert self._store is not None
        records = []
        for data in self._store.load():
            try:
                records.append(SessionRecord.from_stored(data))
            except TypeError as error:  # not a record this keepalive can read: left for one that can
                log.error("session %s: its record cannot be read (%s); left as it is", data.get("id"), error)
        for record in records:
            folder = self.settings.sessions_dir / record.id
            if record.state == SessionState.stopped.value or (
                record.state == SessionState.failed.value and not folder.exists()
            ):  # nothing runs for it any more: only its home stays
                self._store.delete(record.id)
                continue
            session = self._session(record)
            way = await self.restorer.decide(session)  # adopted as it runs, restored, or forgotten
            # a pool session left by a crash is nobody's: it goes too
            to_stop = record.state == SessionState.stopping.value or is_pool_name(record.name) or way is Way.forget
            self.registry.add(session, pool=is_pool_name(record.name))  # the gateway serves it meanwhile
            if to_stop:
                if way is Way.forget:
                    self.restorer.forget(session)
                else:
                    log.warning("session %s (%s): finishing a stop an earlier service began", record.id, record.name)
                await session.adopt(to_stop=True)
                await self._stop(session)
                continue
            if way is Way.restore:
                await self.restorer.prepare(session)
            try:
                await session.adopt()
            except Exception as error:  # one bad record must not keep the others from being adopted
                # listed as failed, with the reason, until a DELETE stops what is left of it
                log.error("session %s (%s): cannot be adopted: %s", record.id, record.name, error)
            self._follow(session)
            if way is Way.restore:
                self.restorer.announce_when_ready(session, self.registry)
        if records:
            log.info("adopted %s session(s) from an earlier service", len(self.registry.users()))

    async def close(self, stop_sessions: bool = False) -> None:
        """Let go of every session (they keep running), or stop them all; then Playwright."""
        await self.standby.stop()
        starts = self.registry.starts()
        for task in starts:
            task.cancel()
        await asyncio.gather(*starts, return_exceptions=True)
        await self.pool.close()
        sessions = self.registry.users()
        if stop_sessions:
            log.info("stopping %s session(s), as asked (--stop-sessions-on-exit)", len(sessions))
            await asyncio.gather(*(self._stop(session) for session in sessions), return_exceptions=True)
        else:
            log.info("leaving %s session(s) running; the next keepalive serve on %s adopts them",
                     len(sessions), self.settings.state_dir)
            await asyncio.gather(*(session.detach() for session in sessions), return_exceptions=True)
        watchers = self.registry.watchers()
        for session in self.registry.users():
            self.registry.remove(session.id)
        await asyncio.gather(*(watcher.stop() for watcher in watchers), return_exceptions=True)
        # a run that just ended still gets its word out, within reason
        deliveries = [task for watcher in watchers for task in watcher.deliveries]
        if deliveries:
            await asyncio.wait(deliveries, timeout=DELIVERY_GRACE)
            for task in deliveries:
                task.cancel()
        await self.timeline.close()
        await self.gateway.close()
        await self.restorer.close()
        self.template.close()
        if self._playwright_cm is not None:
            await self._playwright_cm.__aexit__(None, None, None)
            self._parts = None
            self._playwright_cm = self._playwright = None
        if self._store is not None:
            self._store.close()
        if self._state_lock is not None:
            self._state_lock.release()

    async def profile_template(self) -> Path:
        return await self.template.get()

    def _room(self) -> int:
        """How many more sessions (live or pool) fit under MAX_SESSIONS."""
        return self.settings.max_sessions - self.registry.holding()

    def _session(
        self, record: SessionRecord, template: Path | None = None, heavyai: HeavyAIConnection | None = None
    ) -> Session:
        """A session of this manager (not started, not registered), with its parts."""
        assert self._parts is not None and self._store is not None, "SessionManager.open() was not called"
        return Session(record, self.settings, self._parts, template, heavyai=heavyai, persist=self._store.save)

    async def _new_pool_session(self) -> Session:
        """A session for the warm pool (not started): nobody's, its home behind a link."""
        template = await self.profile_template()
        async with self._admit_lock:
            session_id = new_session_id()
            record = SessionRecord(
                id=session_id, name=f"{POOL_NAME_PREFIX}{session_id}",
                width=self.settings.default_width, height=self.settings.default_height, home_linked=True,
                limits=self._limits(None),
            )
            if self.settings.per_session_users:
                busy = self.registry.uids()
                user, _ = choose_user(
                    SessionLayout(self.settings.sessions_dir / session_id).pool_home,
                    parse_uid_range(self.settings.session_uids), busy, self.settings.homes_dir,
                )
                record.uid = user.uid
            session = self._session(record, template)
            self.registry.add(session, pool=True)
            return session

    async def create(self, request: SessionCreate) -> Session:
        """Admit a session (name, limit) and return it in state ``starting``; call ``start`` next.

        A waiting pool session is taken when there is one of the asked screen size: its
        ``start`` then only hands it over (see keepalive.engine.pool).
        """
        template = await self.profile_template()  # outside the admission lock: may take a while once
        async with self._admit_lock:
            live, awake = self.registry.live(), self.registry.awake()
            if len(awake) >= self.settings.max_sessions:
                raise TooManySessions(f"{len(awake)} sessions are running (not in standby); "
                                      f"the limit is {self.settings.max_sessions}")
            session_id = new_session_id()
            name = request.name or f"session-{session_id}"
            if any(s.name == name for s in live):
                raise NameTaken(f"a session named {name!r} is already running")
            width = request.width or self.settings.default_width
            height = request.height or self.settings.default_height
            limits = self._limits(request.limits.model_dump() if request.limits else None)
            pooled = self.pool.take(width, height)
            if pooled is not None:
                if limits != pooled.record.limits:
                    await asyncio.to_thread(pooled.containment.apply, Limits(**(limits or {})))
                    pooled.record.limits = limits
                await pooled.claim(name, request.heavyai)
                self._admitted(pooled, request)
                log.info("session %s (%s): taken from the pool", pooled.id, name)
                return pooled
            if self._room() <= 0:
                await self.pool.make_room()
            record = SessionRecord(id=session_id, name=name, width=width, height=height, limits=limits)
            give_home = False
            if self.settings.per_session_users:
                busy = self.registry.uids()
                user, give_home = choose_user(
                    self.settings.homes_dir / name, parse_uid_range(self.settings.session_uids), busy,
                    self.settings.homes_dir,
                )
                record.uid = user.uid
            session = self._session(record, template, heavyai=request.heavyai)
            session.give_home = give_home
            self._admitted(session, request)
        log.info("session %s (%s): starting at %sx%s%s", session.id, session.name, session.width, session.height,
                 f" as uid {record.uid}" if record.uid is not None else "")
        return session

    def _limits(self, asked: dict | None) -> dict | None:
        """What a session may use (keepalive.engine.containment.session_limits); LimitRefused."""
        maxima = {"memory_max": self.settings.session_memory_max_bytes, "cpu_max": self.settings.session_cpu_max,
                  "pids_max": self.settings.session_pids_max}
        return session_limits(asked, maxima, self.cgroup_plan)

    @property
    def containment(self) -> str:
        """How sessions are held together (keepalive.engine.containment), for /health and doctor."""
        return mode_name(self.cgroup_plan, self.settings.per_session_users)

    def _admitted(self, session: Session, request: SessionCreate) -> None:
        """A session now belongs to the API: its webhook, listed, its changes published."""
        if request.webhook_url is not None:
            session.webhook_url = str(request.webhook_url)
        elif self.settings.webhook_url is not None:
            session.webhook_url = self.settings.webhook_url.get_secret_value()
        session.record.webhook_min_busy = request.webhook_min_busy
        if self.registry.get(session.id) is session:
            self.registry.taken(session)  # from the pool
        else:
            self.registry.add(session)
        self._follow(session)

    async def start(self, session: Session) -> None:
        """Start ``session`` and wait for it; a session that fails is forgotten (its error was
        already reported). A DELETE meanwhile cancels the start and wins."""
        task = self._track_start(session, session.start())
        try:
            await asyncio.shield(task)  # the caller going away does not cancel the start: DELETE does
        except asyncio.CancelledError:
            if task.cancelled():
                raise SessionStartError("the session was deleted while it started") from None
            raise
        except BaseException:
            self._forget(session.id)
            raise
        self._started(session)

    def _started(self, session: Session) -> None:
        for observe in self.start_observers:
            observe(session)

    def start_in_background(self, session: Session) -> None:
        self._track_start(session, self._start_quietly(session))

    def _track_start(self, session: Session, coroutine) -> asyncio.Task[None]:
        task = asyncio.get_running_loop().create_task(coroutine, name=f"start-{session.id}")
        entry = self.registry.entry(session.id)
        assert entry is not None, "a session is registered before it starts"
        entry.start = task

        def ended(_: asyncio.Task) -> None:
            entry.start = None
            if session.handover.took_over_failed:  # counted as a hit when taken; it was served cold
                self.pool.miss("take-over failed")
            self.pool.wake(start_ended=True)  # the pool fills only while no start is under way

        task.add_done_callback(ended)
        return task

    async def _start_quietly(self, session: Session) -> None:
        try:
            await session.start()
        except Exception:
            return  # logged by the session; it stays listed as failed, with its error, until deleted
        self._started(session)

    def get(self, session_id: str) -> Session:
        """A session of the API's (a pool session is nobody's: not found)."""
        entry = self.registry.entry(session_id)
        if entry is None or entry.pool:
            raise SessionNotFound(session_id)
        return entry.session

    def list(self) -> list[Session]:
        return self.registry.users()

    async def delete(self, session_id: str) -> None:
        session = self.get(session_id)
        entry = self.registry.entry(session_id)
        start = entry.start if entry is not None else None
        if start is not None:  # deleting a session that is still starting: stop the start first
            start.cancel()
            await asyncio.gather(start, return_exceptions=True)
        await self._stop(session)

    async def _stop(self, session: Session) -> None:
        """The one way a session (a user's or the pool's) is stopped: a DELETE, the pool letting
        it go, ``--stop-sessions-on-exit``, a stop a dead service left unfinished."""
        await session.stop()
        self._forget(session.id)
        self.pool.wake()  # there may be room for a pool session again

    def _forget(self, session_id: str) -> None:
        self.registry.remove(session_id)
        if self._store is not None:
            self._store.delete(session_id)

    # -- what sessions do: events and activity ----------------------------------------------

    def _follow(self, session: Session) -> None:
        """Publish the session's state changes, and watch its kernels from its first ready on."""
        session.state_observers.append(self._state_changed)
        self._state_changed(session)

    def _state_changed(self, session: Session) -> None:
        state = session.state
        self.events.publish(session.id, "state", state_event(session.record))
        entry = self.registry.entry(session.id)
        if entry is None or entry.session is not session:
            return
        if state in (SessionState.ready, SessionState.recovering) and entry.watcher is None:
            # kernels go on computing while the browser is recovered: keep watching them
            entry.watcher = ActivityWatcher(session, self.events, on_busy=self.standby.wake_soon)
            entry.watcher.start()
        elif state is SessionState.ready and entry.watcher is not None:
            entry.watcher.wake()  # recovered: maybe a new server, and news held while recovering
        elif state in (SessionState.stopping, SessionState.stopped) and entry.watcher is not None:
            watcher, entry.watcher = entry.watcher, None
            asyncio.get_running_loop().create_task(watcher.stop())

    def _busy(self, session: Session) -> bool | None:
        activity = self.activity(session.id)
        return None if activity is None else activity.busy

    def activity(self, session_id: str):
        """The session's latest activity (keepalive.models.Activity), or None before the first look."""
        entry = self.registry.entry(session_id)
        return entry.watcher.latest if entry is not None and entry.watcher is not None else None

    # -- DevTools gateway ---------------------------------------------------------------------

    def _cdp_socket(self, session_id: str) -> Path | None:
        return self.registry.cdp_socket(session_id)

    def _cdp_guest(self, session_id: str, secret: str | None) -> str | None:
        """Who may drive a session's browser besides the service: holders of the API token, or of
        an unexpired DevTools link of that very session. Returns how to name them in the log."""
        if secret is None or self.registry.is_pool(session_id):
            return None  # a pool session is nobody's: only the service itself drives its browser
        if self._api_token is not None and hmac.compare_digest(secret.encode(), self._api_token.encode()):
            return "api token"
        return self._devtools_links.holder(session_id, secret)

    async def _guest_uses(self, session_id: str) -> None:
        """A DevTools client connects or leaves: a use of the session, woken if in standby."""
        session = self.registry.get(session_id)
        if session is not None and not self.registry.is_pool(session_id):
            await self.standby.wake(session)
            await self.standby.watchers_changed(session)

    def create_cdp_link(self, session_id: str) -> tuple[str, float]:
        """A key that opens one session's DevTools for ``cdp_link_ttl`` seconds; returns it and
        its lifetime in seconds."""
        self.get(session_id)  # SessionNotFound for an unknown id
        ttl = self.settings.cdp_link_ttl
        key, number = self._devtools_links.create(session_id, ttl)
        log.info("session %s: DevTools link #%s made, valid %.0f s", session_id, number, ttl)
        return key, ttl

    # -- homes ----------------------------------------------------------------------------

    def homes(self) -> list[str]:
        return sorted(p.name for p in self.settings.homes_dir.iterdir() if p.is_dir())

    async def delete_home(self, name: str) -> None:
        """Delete a session name's home (notebooks, settings, saved profile); not while in use."""
        home = self.settings.homes_dir / name
        if home.parent != self.settings.homes_dir or not home.is_dir():
            raise HomeNotFound(name)
        async with self._admit_lock:  # no session of that name may start meanwhile
            users = [s.id for s in self.registry.live() if s.name == name]
            if users:
                raise HomeInUse(f"the home {name!r} is in use by session {users[0]}; stop it first")
            await asyncio.to_thread(shutil.rmtree, home)
            self.timeline.timelines.delete(name)
        log.info("home %s deleted", name)
