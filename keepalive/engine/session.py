"""One session: its record (what it is) and its runtime parts (what runs for it).

The record is plain data without secrets, kept in the service's store (keepalive.engine.store)
and as ``session.json`` in the session's folder, so that a later service finds the session
again and adopts its parts (``Session.adopt``); the parts (Jupyter, the display with the kiosk
Chromium on it, the CDP connection, and xpra while someone watches) are started, watched and
stopped here.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import secrets
import shutil
import sys
import tarfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import httpx
from playwright.async_api import Playwright

from keepalive.engine.allocation import Allocator
from keepalive.engine.browser import HEAVYAI_WORKSPACE_QUERY, PLAIN_WORKSPACE_QUERY, KioskBrowser
from keepalive.engine.cdp_gateway import CdpGateway, bridge_answers
from keepalive.engine.commands import (
    ScreenSize,
    bridge_command,
    chromium_command,
    write_xpra_config,
    xpra_command,
    xvfb_command,
)
from keepalive.engine.jupyter import (
    EmbeddedJupyter,
    JupyterEndpoint,
    jupyter_answers,
    offers_heavyai_session,
    split_token,
    user_setting_plugins,
)
from keepalive.engine.layout import SessionLayout, mirror_folders
from keepalive.engine.priority import POOL_NICENESS, can_restore_priority, set_niceness
from keepalive.engine.process import ChildFailed, ChildProcess
from keepalive.engine.profile import mark_clean_exit, restore_session_profile, save_profile, strip_lock_files
from keepalive.engine.reaper import reap, session_processes, with_descendants
from keepalive.engine import framebuffer, user_python
from keepalive.engine.users import SessionUser, give
from keepalive.engine.viewer_server import ViewerServer
from keepalive.engine.xauth import write_authority
from keepalive.files import write_private
from keepalive.models import HeavyAIConnection, SessionHealth, SessionState
from keepalive.settings import Settings
from keepalive.viewer.screen import set_screen_size
from keepalive.viewer.xpra_options import viewer_screen, xpra_viewer_flags

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
#: Displays (and ports) tried before a session gives up because others keep taking them.
DISPLAY_ATTEMPTS = 5
#: What Xvfb says when the display it was given is in use.
TAKEN_SIGNS = ("Server is already active for display",)


#: Liveness, not just exits: a ready session's page and Jupyter server are asked every
#: ``probe_interval`` seconds (a setting) whether they answer, within that same time;
#: PROBE_MISSES misses in a row count as hung, and a hung part is handled like a crashed one.
PROBE_MISSES = 3
#: How often a running session's browser profile is saved into its home (and at every stop).
PROFILE_SAVE_INTERVAL = 600.0


#: The state changes a session may make; everything else is a bug, refused by ``_set_state``.
ALLOWED: dict[SessionState, frozenset[SessionState]] = {
    SessionState.starting: frozenset({SessionState.ready, SessionState.pooled, SessionState.failed, SessionState.stopping}),
    # taken by a user (it starts again, as theirs), or let go
    SessionState.pooled: frozenset({SessionState.starting, SessionState.stopping}),
    SessionState.ready: frozenset({SessionState.recovering, SessionState.failed, SessionState.stopping}),
    SessionState.recovering: frozenset({SessionState.ready, SessionState.failed, SessionState.stopping}),
    SessionState.failed: frozenset({SessionState.stopping}),
    SessionState.stopping: frozenset({SessionState.stopped}),
    SessionState.stopped: frozenset(),
}


class InvalidTransition(RuntimeError):
    pass


class SessionStartError(RuntimeError):
    """A session could not start; the message names the part and carries its log's last lines."""


@dataclass
class SessionRecord:
    """What a session is, without secrets: persisted as ``session.json``."""

    id: str
    name: str
    width: int
    height: int
    created_at: str = field(default_factory=lambda: datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"))
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
    #: started from the template, so it never saves over that profile (see Session._save_profile).
    keep_saved_profile: bool = False


def new_session_id() -> str:
    return secrets.token_hex(6)


class Session:
    def __init__(
        self,
        record: SessionRecord,
        settings: Settings,
        allocator: Allocator,
        playwright: Playwright,
        gateway: CdpGateway,
        profile_template: Path | None,
        heavyai: HeavyAIConnection | None = None,
        persist: Callable[[dict], None] | None = None,
    ) -> None:
        self.record = record
        self._gateway = gateway
        self.settings = settings
        folder = settings.sessions_dir / record.id
        self.layout = SessionLayout(
            folder, SessionLayout(folder).home_link if record.home_linked else settings.homes_dir / record.name
        )
        self._persist = persist
        self._allocator = allocator
        self._playwright = playwright
        self._profile_template = profile_template
        self._heavyai = heavyai
        if heavyai is not None:
            record.heavyai = {"protocol": heavyai.protocol, "host": heavyai.host, "port": heavyai.port}
        self.jupyter: EmbeddedJupyter | None = None
        self.endpoint: JupyterEndpoint | None = None
        #: The display (Xvfb) and the kiosk browser on it (the CDP bridge with Chromium): both
        #: run as long as the session does. xpra runs only while someone watches.
        self.xvfb: ChildProcess | None = None
        self.browser_process: ChildProcess | None = None
        self.viewer_server = ViewerServer(
            record.id, self._spawn_xpra, port=lambda: self.record.xpra_port, new_port=self._new_viewer_port,
            display_up=lambda: self.display_running, linger=settings.viewer_linger,
            start_timeout=settings.start_timeout,
        )
        self.browser: KioskBrowser | None = None
        self.xpra_password = secrets.token_urlsafe(24)
        #: The session's Unix user, or None: it shares the service's (see keepalive.engine.users).
        self.user = SessionUser(record.uid) if record.uid is not None else None
        #: Set by the manager when the home is new or was someone else's: all of it goes to ``user``.
        self.give_home = False
        #: Seconds from start() to ready, once it is.
        self.start_seconds: float | None = None
        #: Taken from the warm pool: start() takes the running parts over instead of starting them.
        self.from_pool = False
        #: Taken from the pool, but the take-over failed: start() started it cold instead.
        self.took_over_failed = False
        #: Where a run's end is announced (keepalive.engine.webhook); set before start().
        self.webhook_url: str | None = None
        #: Called after every state change, with the session (the manager's events and watchers).
        self.state_observers: list[Callable[[Session], None]] = []
        self._recovery: asyncio.Task[None] | None = None
        self._recent_restarts: list[float] = []  # monotonic times of the restarts in the window
        self._watchdog: asyncio.Task[None] | None = None
        self._lock = asyncio.Lock()

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
        """Every state change goes through here, checked against ALLOWED: a start can never end
        ``ready`` after a stop began, a recovery never revives a stopped session."""
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
    def webhook_min_busy(self) -> float:
        return self.settings.webhook_min_busy if self.record.webhook_min_busy is None else self.record.webhook_min_busy

    @property
    def health(self) -> SessionHealth:
        return SessionHealth(
            # the display (Xvfb), and xpra whenever a viewer needed it (none with nobody watching is fine)
            xpra=self.xvfb is not None and self.xvfb.running and self.viewer_server.healthy,
            browser=self.browser is not None and self.browser.connected,
            page=self.browser is not None and self.browser.page_alive,
            jupyter=self.jupyter.process.running if self.jupyter else self.endpoint is not None,
        )

    @property
    def healthy(self) -> bool:
        """Every part runs (what the pool and /health's "unhealthy" go by)."""
        return all(self.health.model_dump().values())

    @property
    def display_running(self) -> bool:
        """Xvfb and the kiosk browser's process run (whether CDP answers is ``health.browser``)."""
        return all(child is not None and child.running for child in (self.xvfb, self.browser_process))

    def _children(self) -> list[ChildProcess]:
        """Every process the session started (or adopted) that is still known."""
        children = [self.xvfb, self.browser_process, self.viewer_server.process,
                    self.jupyter.process if self.jupyter else None]
        return [child for child in children if child is not None]

    def pids(self) -> dict[str, int | None]:
        return {
            "jupyter": self.jupyter.process.pid if self.jupyter else None,
            "xvfb": self.xvfb.pid if self.xvfb else None,
            "browser": self.browser_process.pid if self.browser_process else None,
            "xpra": self.viewer_server.process.pid if self.viewer_server.process else None,
        }

    @property
    def _owner(self) -> tuple[int, int] | None:
        return (self.user.uid, self.user.gid) if self.user else None

    def environment(self) -> dict[str, str]:
        """What every child of the session starts with (see SessionLayout.environment)."""
        return self.layout.environment(self.id, user=self.user)

    def _save_record(self) -> None:
        record = asdict(self.record)
        if self._persist is not None:
            self._persist(record)
        if self.layout.folder.is_dir():  # a copy for people looking into the folder
            write_private(self.layout.record_file, json.dumps(record, indent=2))

    # -- start ------------------------------------------------------------------------

    async def start(self) -> None:
        """Start every part and wait until JupyterLab is on screen, or clean up and raise.

        A session made for the warm pool ends ``pooled``, waiting; one taken from the pool
        (``claim``) takes its running parts over and ends ``ready``, as a user's.
        """
        timeout = self.settings.start_timeout
        began = time.monotonic()
        try:
            await asyncio.wait_for(self._take_over_or_start_cold() if self.from_pool else self._start_parts(), timeout)
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
        self._start_watchdog()
        log.info("session %s (%s): ready in %.2f s%s, pids %s", self.id, self.name, self.start_seconds,
                 " (from the pool)" if self.from_pool else "", self.pids())

    async def _start_parts(self) -> None:
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
        used = await asyncio.to_thread(
            restore_session_profile,
            self.layout.saved_profile, self.layout.previous_profile, self._profile_template, self.layout.profile_dir,
        )
        if self.user is not None:
            await asyncio.to_thread(give, self.layout.profile_dir, self.user)
        log.info("session %s (%s): browser profile from %s", self.id, self.name, used)
        if self._heavyai is not None:
            self._write_heavyai_handoff()
        # Jupyter and the display do not need each other, only the browser needs both: start
        # them side by side. A failure of one cancels the other; start() then cleans up.
        try:
            async with asyncio.TaskGroup() as group:
                jupyter = group.create_task(self._start_jupyter(env))
                group.create_task(self._start_display(env))
        except BaseExceptionGroup as failures:
            raise failures.exceptions[0] from None
        self.endpoint = jupyter.result()
        await self._open_browser(await self.landing_path())

    # -- the warm pool ---------------------------------------------------------------------

    def claim(self, name: str, heavyai: HeavyAIConnection | None) -> None:
        """Make this waiting pool session ``name``'s; ``start()`` then takes its parts over.

        Only the record changes here (on the event loop, inside the manager's admission):
        the home, the HeavyAI handoff and the page follow in ``_take_over``.
        """
        assert self.state is SessionState.pooled, self.state
        self.record.name = name
        self.record.created_at = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        self._heavyai = heavyai
        if heavyai is not None:
            self.record.heavyai = {"protocol": heavyai.protocol, "host": heavyai.host, "port": heavyai.port}
        self.from_pool = True
        self._set_state(SessionState.starting)

    def _niceness(self) -> int:
        """Started for the pool and nobody's yet: low priority, if it can be undone when taken."""
        filling_pool = self.record.home_linked and not self.from_pool and self.state is SessionState.starting
        return POOL_NICENESS if filling_pool and can_restore_priority() else 0

    def _normal_priority(self) -> None:
        """Every thread of every process of the session back to niceness 0 (it was taken).

        Found as the reaper finds them: Chromium's crashpad handler is nobody's descendant.
        """
        children = self._children()
        if not any(child.niceness for child in children):
            return
        for child in children:
            child.niceness = 0  # what it runs at from now on
        if set_niceness((p.pid for p in session_processes(self.id, self.layout.folder)), 0):
            log.warning("session %s: some of its processes still run at a low priority", self.id)

    async def _take_over(self) -> None:
        """A claimed pool session becomes its user's: their home behind the link, their HeavyAI
        connection for the kernels, and the page showing it all, without a reload."""
        await asyncio.to_thread(self._normal_priority)
        home = self.settings.homes_dir / self.name
        returning = await asyncio.to_thread(self._move_in, home)
        self._save_record()
        if self.webhook_url is not None:
            write_private(self.layout.webhook_url_file, self.webhook_url)
        if returning and self.user is not None:  # its Python environment is the user's, refreshed for this uid
            await user_python.prepare(self.settings.jupyter_python, self.layout.home, self.user)
        if self._heavyai is not None:
            self._write_heavyai_handoff()
        await self._prepare_kernels()
        assert self.browser is not None and self.endpoint is not None
        await self.browser.take_over(
            self.endpoint, self.lab_path + (HEAVYAI_WORKSPACE_QUERY if self._heavyai else PLAIN_WORKSPACE_QUERY),
            heavyai=self._heavyai is not None, settings=user_setting_plugins(self.layout.home),
            timeout=self.settings.start_timeout,
        )
        log.info("session %s: taken from the pool by %s (%s home)", self.id, self.name,
                 "its" if returning else "a new")

    async def _take_over_or_start_cold(self) -> None:
        """Take the pool session over; if that fails, start the user's session cold in its place.

        A part can break while it waits in a way its health does not show (a Jupyter server
        that stopped answering, a page that hangs): the user still gets a session, under the
        same id, as if the pool had been empty. The pool browser's profile is not saved.
        """
        try:
            await self._take_over()
            return
        except Exception as error:
            log.warning("session %s: taking it over from the pool failed (%s); starting %s's session cold",
                        self.id, str(error) or type(error).__name__, self.name)
        await self._stop_parts()
        self._remove_folder()  # the pool's: its link, its profile, its home if nobody's moved in
        home = self.settings.homes_dir / self.name
        self.give_home = self.user is not None and home.exists() and home.lstat().st_uid != self.user.uid
        self.layout = SessionLayout(self.layout.folder, home)
        self.record.home_linked = self.record.keep_saved_profile = False
        self.from_pool = False
        self.took_over_failed = True
        await self._start_parts()

    def _move_in(self, home: Path) -> bool:
        """Point the home link at ``home``: the pool's own home becomes it when the name has
        none yet. Returns whether the name had a home already."""
        returning = home.exists()
        if returning:
            if self.user is not None and home.lstat().st_uid != self.user.uid:
                give(home, self.user)  # as when a home's own uid is busy: it goes to this session's
            SessionLayout(self.layout.folder, home).create_home(self.user)
            mirror_folders(self.layout.pool_home, home, self.user)  # what the server made at its start
            self.record.keep_saved_profile = SessionLayout(self.layout.folder, home).saved_profile.exists()
        else:
            os.rename(self.layout.pool_home, home)  # same file system: both are in the state dir
        # Swapped in one step: every path the Jupyter server and the browser hold goes through it.
        swap = self.layout.folder / "home-link.new"
        swap.unlink(missing_ok=True)
        os.symlink(home, swap)
        os.replace(swap, self.layout.home_link)
        return returning

    def _nobodys(self) -> bool:
        """A pool session that nobody took: its home link still points at the pool's home."""
        if not self.record.home_linked:
            return False
        try:
            return os.readlink(self.layout.home_link) == self.layout.pool_home.name
        except OSError:
            return True  # no link: nobody's home was ever behind it

    def _heavyai_variables(self) -> dict[str, str]:
        """The HeavyAI connection as the kernels read it (none without a handoff)."""
        heavyai = self.record.heavyai
        if heavyai is None:
            return {}
        return {"HEAVYAI_PROTOCOL": heavyai["protocol"], "HEAVYAI_HOST": heavyai["host"],
                "HEAVYAI_PORT": str(heavyai["port"])}

    async def _prepare_kernels(self) -> None:
        """What the kernels to come inherit from the Jupyter server: the HeavyAI connection, and
        a working directory in the user's home (server_ext/environment.py)."""
        assert self.endpoint is not None
        variables = self._heavyai_variables()
        async with httpx.AsyncClient(timeout=10.0, trust_env=False) as client:
            response = await client.put(
                f"{self.endpoint.url}/api/keepalive/kernel-environment",
                headers=self.endpoint.auth_headers, json={"variables": variables},
            )
        if response.status_code != 204:
            raise RuntimeError(f"the Jupyter server did not take the kernels' environment ({response.status_code})")

    @property
    def lab_path(self) -> str:
        """JupyterLab's address on the session's server, and the workspace a recovery reopens.

        On a server of its own, the default workspace. On a shared one (``JUPYTER_URL``, the
        user's own server behind JupyterHub), a workspace of the session's own: the default
        one is the user's, and the kiosk must not rearrange their JupyterLab.
        """
        return f"/lab/workspaces/keepalive-{self.name}" if self.settings.jupyter_url else "/lab"

    async def landing_path(self) -> str:
        """With ``?heavyai`` when there is a HeavyAI session to build the workspace from: this
        session was handed one, or its external server's extension offers one. Otherwise the
        extension could only report that there is none."""
        heavyai = self.record.heavyai is not None
        if not heavyai and self.settings.jupyter_url and self.endpoint is not None:
            heavyai = await offers_heavyai_session(self.endpoint)
        return self.lab_path + (HEAVYAI_WORKSPACE_QUERY if heavyai else PLAIN_WORKSPACE_QUERY)

    async def _start_jupyter(self, env: dict[str, str]) -> JupyterEndpoint:
        if self.settings.jupyter_url:
            endpoint = split_token(self.settings.jupyter_url)
            log.info("session %s: using the Jupyter server at %s", self.id, endpoint.url)
            return endpoint
        jupyter_env = dict(env)
        python = self.settings.jupyter_python
        if self.user is not None:  # the shared environment is read-only to it: one of its own on top
            python = await user_python.prepare(python, self.layout.home, self.user)
            jupyter_env.update(user_python.shared_jupyter_paths(self.settings.jupyter_python))
        jupyter_env.update(self._heavyai_variables())  # the kernel reads the connection from here
        self.jupyter = EmbeddedJupyter(
            self.layout, jupyter_env, python, on_exit=self._child_exited, user=self.user, niceness=self._niceness()
        )
        endpoint = await self.jupyter.start(self.settings.start_timeout)
        self.record.jupyter_pid = self.jupyter.process.pid
        self.record.jupyter_started_at = self.jupyter.process.started_at
        self.record.jupyter_url = endpoint.url
        self._save_record()
        log.info("session %s: jupyter pid %s serving %s", self.id, self.jupyter.process.pid, endpoint.url)
        return endpoint

    def _write_heavyai_handoff(self) -> None:
        """The session file (0600) the server extension reads; the rest goes in Jupyter's environment."""
        heavyai = self._heavyai
        assert heavyai is not None
        content = {
            "session": heavyai.session_id.get_secret_value() if heavyai.session_id else "",
            "query": heavyai.query or "",
        }
        write_private(self.layout.heavyai_session_file, json.dumps(content), owner=self._owner)

    async def _start_display(self, env: dict[str, str]) -> None:
        """Xvfb on a fresh display, then the kiosk Chromium (under its CDP bridge) on it.

        Display numbers are only reserved within this service: another program (or another
        keepalive) may take the same one at the same instant. X's lock file settles it, and
        the loser moves on to the next number.
        """
        for attempt in range(1, DISPLAY_ATTEMPTS + 1):
            try:
                await self._launch_xvfb(env)
                break
            except ChildFailed as error:
                if attempt == DISPLAY_ATTEMPTS or not any(sign in str(error) for sign in TAKEN_SIGNS):
                    raise
                log.warning("session %s: display :%s was taken by someone else; trying another",
                            self.id, self.record.display)
                await self._stop_display()
                self._release_numbers()
                self.layout.log("xvfb").replace(self.layout.log(f"xvfb-attempt-{attempt}"))
        await self._launch_browser(env)

    async def _launch_xvfb(self, env: dict[str, str]) -> None:
        if self.record.display is None:
            self.record.display = self._allocator.display()
        if self.record.xpra_port is None:
            self.record.xpra_port = self._allocator.port()
        self._save_record()
        display = self.record.display
        write_authority(self.layout.xauthority, display, owner=self._owner)
        # xpra's, for when a viewer comes; written now, as a later service adopting the session reads it
        write_private(self.layout.xpra_password_file, self.xpra_password, owner=self._owner)
        largest = ScreenSize(*viewer_screen(self.settings, self.width, self.height))
        # a framebuffer file of a display that is gone (or of one that failed to start): none
        # of it may stay, nor pass for the new one's
        framebuffer.remove(self.id)
        fbdir = framebuffer.prepare(self.id, largest.width * largest.height * 4, self._owner)
        self.xvfb = self._child(
            "xvfb",
            xvfb_command(self.settings.xvfb, display, self.layout, ScreenSize(self.width, self.height), largest, fbdir),
            env,
        )
        await self.xvfb.start()
        self.record.xvfb_pid, self.record.xvfb_started_at = self.xvfb.pid, self.xvfb.started_at
        self._save_record()
        xvfb_pid = self.xvfb.pid

        async def serving() -> bool:
            # X writes its pid into the display's lock file once the display is its own: a lock
            # of someone else's (another X server on this number) never passes for ours
            try:
                owner = int(Path(f"/tmp/.X{display}-lock").read_text().strip())
            except (OSError, ValueError):
                return False
            return owner == xvfb_pid and Path(f"/tmp/.X11-unix/X{display}").exists()

        await self.xvfb.wait_ready(serving, self.settings.start_timeout, what="serving display :%s" % display)
        # Xvfb starts at the viewers' largest size; the session's own is set before any window
        # is there (the kiosk window is sized again once the page shows, see fit_screen)
        await self.fit_screen()
        log.info("session %s: Xvfb pid %s on display :%s", self.id, xvfb_pid, display)

    def _child(
        self, name: str, argv: list[str], env: dict[str, str],
        on_exit: Callable[[ChildProcess, int | None], None] | None = None,
    ) -> ChildProcess:
        """One of the session's processes, not started yet: as its user, at its priority, in its
        home, logging to ``logs/NAME.log``; an exit nobody asked for is a lost part, unless
        ``on_exit`` says otherwise."""
        return ChildProcess(
            name, argv, env=env, cwd=self.layout.home, log_path=self.layout.log(name),
            on_exit=on_exit or self._child_exited, user=self._owner, niceness=self._niceness(),
        )

    async def _launch_browser(self, env: dict[str, str]) -> None:
        assert self.record.display is not None
        # a bridge that was killed leaves its socket file behind: it must not pass for the new one
        self.layout.cdp_socket.unlink(missing_ok=True)
        screen = ScreenSize(self.width, self.height)
        chromium = chromium_command(self.settings.chromium, self.layout, screen, as_other_user=self.user is not None)
        self.browser_process = self._child(
            "browser", bridge_command(sys.executable, self.layout, chromium),
            {**env, "DISPLAY": f":{self.record.display}"},
        )
        await self.browser_process.start()
        self.record.browser_pid = self.browser_process.pid
        self.record.browser_started_at = self.browser_process.started_at
        self._save_record()
        # the bridge answers once Chromium's pipe does
        await self.browser_process.wait_ready(
            lambda: bridge_answers(self.layout.cdp_socket), self.settings.start_timeout, what="answering CDP"
        )
        log.info("session %s: kiosk browser pid %s", self.id, self.browser_process.pid)

    # -- the viewers' xpra (keepalive.engine.viewer_server) ------------------------------------

    def _spawn_xpra(self, port: int, on_exit: Callable[[ChildProcess, int | None], None]) -> ChildProcess:
        assert self.record.display is not None
        return self._child(
            "xpra", xpra_command(self.settings.xpra, self.record.display, port, self.layout, xpra_viewer_flags(self.settings)),
            {**self.environment(), **write_xpra_config(self.layout)}, on_exit=on_exit,
        )

    def _new_viewer_port(self) -> int:
        """The session's viewer port was taken by someone else: another one."""
        if self.record.xpra_port is not None:
            self._allocator.release_port(self.record.xpra_port)
        self.record.xpra_port = self._allocator.port()
        self._save_record()
        return self.record.xpra_port

    async def viewer_port(self, join: bool = False) -> int:
        """The port of the session's xpra, started for a viewer if it is not running
        (keepalive.engine.viewer_server.ViewerServerUnavailable if it cannot be); ``join``: see
        ViewerServer.ensure."""
        port = await self.viewer_server.ensure(join)
        process = self.viewer_server.process
        if process is not None and self.record.xpra_pid != process.pid:
            self.record.xpra_pid, self.record.xpra_started_at = process.pid, process.started_at
            self._save_record()
        return port

    def _release_numbers(self) -> None:
        if self.record.display is not None:
            self._allocator.release_display(self.record.display)
            self.record.display = None
        if self.record.xpra_port is not None:
            self._allocator.release_port(self.record.xpra_port)
            self.record.xpra_port = None

    async def _open_browser(self, path: str, connect_timeout: float | None = None) -> None:
        assert self.endpoint is not None
        self.browser = KioskBrowser(self._playwright, on_lost=self._browser_lost)
        await self.browser.connect(
            self.cdp_url, self._gateway.service_headers, connect_timeout or self.settings.start_timeout
        )
        await self.browser.open_jupyter(self.endpoint, self.settings.start_timeout, path)
        await self.fit_screen()
        log.info("session %s: kiosk browser on %s%s", self.id, self.endpoint.url, path)

    @property
    def cdp_url(self) -> str:
        """The session's DevTools endpoint (keys needed: see keepalive.engine.cdp_gateway)."""
        return self._gateway.url(self.id)

    async def _fail_start(self, reason: str) -> None:
        log.error("session %s (%s): failed to start: %s", self.id, self.name, reason)
        await self._stop_parts()
        self._remove_folder()
        if self.state is SessionState.starting:  # not when a stop took over: it says how it ended
            self._set_state(SessionState.failed, reason)

    # -- crashes and recovery -----------------------------------------------------------

    def _child_exited(self, child: ChildProcess, code: int | None) -> None:
        log.error("session %s: %s (pid %s) exited unexpectedly with code %s", self.id, child.name, child.pid, code)
        self._part_lost(f"{child.name} exited with code {code}")

    def _browser_lost(self, why: str) -> None:
        log.error("session %s: %s", self.id, why)
        self._part_lost(why)

    def _part_lost(self, why: str) -> None:
        if self.state is not SessionState.ready or (self._recovery and not self._recovery.done()):
            return
        now = time.monotonic()
        self._recent_restarts = [t for t in self._recent_restarts if now - t < RESTART_WINDOW]
        if len(self._recent_restarts) >= MAX_RESTARTS:
            # A burst of crashes: stop trying, but never at the cost of the computation. The
            # display goes; the Jupyter server and its kernels keep running until a DELETE.
            reason = (
                f"{why}; gave up after {MAX_RESTARTS} restarts within {RESTART_WINDOW / 60:.0f} minutes "
                "(the Jupyter server and its kernels keep running)"
            )
            log.error("session %s (%s): %s", self.id, self.name, reason)
            self._set_state(SessionState.failed, reason)
            self._recovery = asyncio.get_running_loop().create_task(self._stop_display())
            return
        delay = RESTART_BACKOFF[len(self._recent_restarts)]
        self._recent_restarts.append(now)
        self._recovery = asyncio.get_running_loop().create_task(self._recover(why, delay))

    async def _recover(self, why: str, delay: float = 0.0) -> None:
        """Bring back what died; the Jupyter server (and its kernels) is kept if it still runs."""
        self.record.restarts += 1
        self._set_state(SessionState.recovering, why)
        log.warning("session %s: recovering (restart %s) in %.0f s after: %s", self.id, self.record.restarts, delay, why)
        await asyncio.sleep(delay)  # backoff: a part that keeps crashing gets time to stop doing so
        async with self._lock:
            if self.state is not SessionState.recovering:
                return  # stopped meanwhile
            try:
                await self._recover_parts()
            except Exception as error:  # any failure here leaves the session failed, not half-up
                log.error("session %s: recovery failed: %s", self.id, error)
                await self._stop_display()  # the display only: kernels keep computing
                self._set_state(SessionState.failed, f"recovery after '{why}' failed: {error}")
                return
            self.record.error = None
            self._set_state(SessionState.ready)
            log.info("session %s: recovered, pids %s", self.id, self.pids())

    async def _recover_parts(self) -> None:
        env = self.environment()
        new_jupyter = self.jupyter is not None and not self.jupyter.process.running
        if new_jupyter:
            await self.jupyter.stop()
            self.jupyter = None
            self.endpoint = await self._start_jupyter(env)
        if (
            self.browser is not None and self.browser.connected
            and self.display_running
            and await bridge_answers(self.layout.cdp_socket)
        ):
            # only the page (or Jupyter) died: a new CDP connection and a fresh load may do. The
            # browser may be on its way out too (its page closes first, before Playwright hears
            # of the disconnect): then, within RECONNECT_TIMEOUT, the whole display.
            if new_jupyter:
                await self._carry_drafts()
            await self.browser.close()
            try:
                await self._open_browser(self.lab_path, connect_timeout=RECONNECT_TIMEOUT)
                return
            except Exception as error:
                log.warning("session %s: the browser did not come back by itself (%s); restarting the display",
                            self.id, str(error).splitlines()[0])
        await self._stop_display()
        strip_lock_files(self.layout.profile_dir)
        mark_clean_exit(self.layout.profile_dir)
        await self._start_display(env)
        await self._open_browser(self.lab_path)

    async def _carry_drafts(self) -> None:
        """Keys the page still shows that the killed Jupyter server never got: to the new one,
        where the page about to be reloaded finds them as it finds any drafts (server_ext/drafts.py)."""
        assert self.browser is not None and self.endpoint is not None
        requests = await self.browser.unsent_drafts()
        carried = 0
        async with httpx.AsyncClient(timeout=10.0, trust_env=False) as client:
            for request in requests:
                try:
                    response = await client.post(
                        f"{self.endpoint.url}/api/keepalive/drafts",
                        headers=self.endpoint.auth_headers, json=request,
                    )
                except httpx.HTTPError as error:
                    log.warning("session %s: unsaved cells not carried to the new Jupyter server: %s", self.id, error)
                    continue
                if response.status_code == 204:
                    carried += 1
                else:
                    log.warning("session %s: the new Jupyter server refused unsaved cells (%s)",
                                self.id, response.status_code)
        if carried:
            log.info("session %s: unsaved cells of %d notebook(s) carried to the new Jupyter server", self.id, carried)

    # -- liveness ---------------------------------------------------------------------------

    def _start_watchdog(self) -> None:
        if self._watchdog is None:
            self._watchdog = asyncio.get_running_loop().create_task(self._watch(), name=f"watch-{self.id}")

    async def _stop_watchdog(self) -> None:
        if self._watchdog is not None:
            self._watchdog.cancel()
            await asyncio.gather(self._watchdog, return_exceptions=True)
            self._watchdog = None

    async def _watch(self) -> None:
        """Probe the page and Jupyter while ready; save the browser profile now and then."""
        misses = {"page": 0, "jupyter": 0}
        last_save = time.monotonic()
        while True:
            await asyncio.sleep(self.settings.probe_interval)
            if self.state is not SessionState.ready:
                misses = dict.fromkeys(misses, 0)
                continue
            for part, answers in (("page", self._page_answers), ("jupyter", self._jupyter_answers)):
                misses[part] = 0 if await answers() else misses[part] + 1
                if misses[part] >= PROBE_MISSES and self.state is SessionState.ready:
                    misses[part] = 0
                    await self._hung(part)
            if time.monotonic() - last_save >= PROFILE_SAVE_INTERVAL and self.state is SessionState.ready:
                last_save = time.monotonic()
                await self._save_profile()

    async def _page_answers(self) -> bool:
        if self.browser is None or not self.browser.page_alive:
            return True  # not hung: gone, and the crash path deals with that
        try:
            return await asyncio.wait_for(self.browser.page.evaluate("1"), self.settings.probe_interval) == 1
        except Exception:  # a timeout, or Playwright's error: no answer either way
            return False

    async def _jupyter_answers(self) -> bool:
        if self.jupyter is None or not self.jupyter.process.running or self.endpoint is None:
            return True  # external, or gone: the exit watcher deals with a dead one
        try:
            return await jupyter_answers(self.endpoint, timeout=self.settings.probe_interval)
        except Exception:
            return False

    async def _hung(self, part: str) -> None:
        silent = f"{PROBE_MISSES * self.settings.probe_interval:.0f} s"
        log.error("session %s: the %s did not answer for %s; handling it as a crash", self.id, part, silent)
        if part == "jupyter" and self.jupyter is not None:
            await self.jupyter.stop()  # a hung server cannot be talked to: only a new one helps
        self._part_lost(f"the {part} did not answer for {silent}")

    async def fit_screen(self) -> bool:
        """Put the X screen and the kiosk window back to the session's own size.

        Xvfb starts at the viewers' maximum, and Chromium leaves a 1 px edge on a window that
        is exactly screen-sized until someone resizes it; with no viewer, nobody else will.
        """
        assert self.record.display is not None
        if not await set_screen_size(f":{self.record.display}", self.width, self.height, self.environment()):
            return False
        self._release_offscreen()
        return True

    def _release_offscreen(self) -> None:
        """Give back the part of Xvfb's framebuffer the screen, now the session's size, leaves
        out (keepalive.engine.framebuffer): at 1280x800 with the default maximum, the 7.8 MiB of
        rows below the screen (the right half of the screen's own rows shares its pages)."""
        folder = framebuffer.folder_for(self.id)
        try:
            released = framebuffer.release_offscreen(folder, self.width, self.height, self._owner[0] if self._owner else None)
        except FileNotFoundError:
            return  # Xvfb keeps its framebuffer in its own memory (no room in /dev/shm)
        except (OSError, ValueError) as error:
            log.warning("session %s: cannot give back the framebuffer's unseen part: %s", self.id, error)
            return
        log.debug("session %s: gave back %.1f MiB of the framebuffer", self.id, released / 2**20)

    # -- use ------------------------------------------------------------------------------

    async def screenshot(self) -> bytes:
        if self.browser is None:
            raise RuntimeError("the session has no browser")
        return await self.browser.screenshot()

    # -- stop -----------------------------------------------------------------------------

    async def stop(self) -> None:
        """Stop every part, reap every leftover process, free the numbers, remove the folder."""
        if self.state is SessionState.stopped:
            return
        self._set_state(SessionState.stopping)
        await self.viewer_server.stop(close=True)  # no viewer brings xpra back from here on
        await self._stop_watchdog()
        pids = self.pids()
        log.info("session %s (%s): stopping, pids %s", self.id, self.name, pids)
        if self._recovery is not None and not self._recovery.done():
            self._recovery.cancel()
            await asyncio.gather(self._recovery, return_exceptions=True)
        async with self._lock:
            await self._stop_parts()
            await self._save_profile()
            self._remove_folder()
            self._set_state(SessionState.stopped)
        log.info("session %s (%s): stopped; its home %s stays", self.id, self.name, self.layout.kept)

    async def _save_profile(self) -> None:
        """Keep the browser profile (cookies, site data, settings) in the home for the next session."""
        if not (self.layout.profile_dir / "Default").is_dir():
            return  # the browser never ran: nothing worth keeping
        if self._nobodys():
            return  # a pool session nobody took: nothing of anyone's to keep
        if self.record.keep_saved_profile:
            return  # a pool browser's profile never replaces the one the user's home holds
        try:
            await asyncio.to_thread(
                save_profile, self.layout.profile_dir, self.layout.saved_profile, self.layout.previous_profile
            )
        except (OSError, tarfile.TarError) as error:  # the processes are gone either way; say what was lost
            log.error("session %s: could not save the browser profile into %s: %s", self.id, self.layout.kept, error)

    async def detach(self) -> None:
        """Let go of the session without stopping it: the service is going away, the session stays.

        The CDP connection is dropped (the kiosk page stays as it is) and no process is watched
        any more; a later service adopts them (``adopt``).
        """
        await self._stop_watchdog()
        if self._recovery is not None and not self._recovery.done():
            self._recovery.cancel()
            await asyncio.gather(self._recovery, return_exceptions=True)
        if self.browser is not None:
            await self.browser.close()
            self.browser = None
        self.viewer_server.detach()
        for child in (self.xvfb, self.browser_process, self.jupyter.process if self.jupyter else None):
            if child is not None:
                child.detach()
        log.info("session %s (%s): left running, pids %s", self.id, self.name, self.pids())

    @classmethod
    async def adopt(
        cls,
        record: SessionRecord,
        settings: Settings,
        allocator: Allocator,
        playwright: Playwright,
        gateway: CdpGateway,
        persist: Callable[[dict], None],
    ) -> Session:
        """The session an earlier service started, found again from its record.

        Each process is taken over only if its pid still belongs to the process that started
        at the recorded time. The kiosk page is reconnected over CDP as it is, without a
        reload. Parts that died meanwhile are brought back as after a crash.
        """
        session = cls(record, settings, allocator, playwright, gateway, None, persist=persist)
        allocator.reserve(record.display, record.xpra_port)
        if record.xvfb_pid is None:
            # a record from before the display was the service's own (xpra held Xvfb and the
            # browser): the display is restarted below as a lost part; the kernels keep running
            log.warning("session %s: started by an older keepalive; its display is restarted", record.id)
        session.xpra_password = session.layout.xpra_password_file.read_text().strip()
        if session.layout.webhook_url_file.is_file():
            session.webhook_url = session.layout.webhook_url_file.read_text().strip()
        elif settings.webhook_url is not None:
            session.webhook_url = settings.webhook_url.get_secret_value()
        if settings.jupyter_url:
            session.endpoint = split_token(settings.jupyter_url)
        else:
            session.jupyter = EmbeddedJupyter.adopt(
                session.layout, settings.jupyter_python, record.jupyter_pid, record.jupyter_started_at,
                record.jupyter_url, on_exit=session._child_exited,
            )
            session.endpoint = session.jupyter.endpoint
        session.xvfb = ChildProcess.adopt(
            "xvfb", record.xvfb_pid, record.xvfb_started_at,
            log_path=session.layout.log("xvfb"), on_exit=session._child_exited,
        )
        session.browser_process = ChildProcess.adopt(
            "browser", record.browser_pid, record.browser_started_at,
            log_path=session.layout.log("browser"), on_exit=session._child_exited,
        )
        session.viewer_server.adopt(record.xpra_pid, record.xpra_started_at, session.layout.log("xpra"))
        parts = (("jupyter", session.health.jupyter), ("display", session.xvfb.running),
                 ("browser", session.browser_process.running))
        lost = [name for name, up in parts if not up]
        if not lost:
            try:
                session.browser = KioskBrowser(playwright, on_lost=session._browser_lost)
                await session.browser.connect(session.cdp_url, gateway.service_headers, 30)
                if not await session.browser.page_shows_lab():
                    lost.append("page")
            except Exception as error:  # a browser that cannot be reached is a lost browser
                log.warning("session %s: cannot reconnect to the kiosk browser: %s", record.id, error)
                lost.append("browser")
        was = record.state
        record.state = SessionState.ready.value
        session._save_record()
        session._start_watchdog()
        if lost:
            session._part_lost(f"{', '.join(lost)} died while no service watched (was {was})")
        log.info("session %s (%s): adopted (was %s), pids %s%s", record.id, record.name, was, session.pids(),
                 f"; recovering {', '.join(lost)}" if lost else "")
        return session

    async def _stop_display(self, reap_leftovers: bool = True) -> None:
        """xpra, the kiosk browser and Xvfb, in that order: each needs the next one."""
        if self.browser is not None:
            await self.browser.close()
            self.browser = None
        await self.viewer_server.stop()
        if self.browser_process is not None:
            await self.browser_process.terminate(timeout=8.0)
            self.browser_process = None
        if self.xvfb is not None:
            await self.xvfb.terminate(timeout=8.0)
            self.xvfb = None
        if reap_leftovers:
            # Chromium's helpers can outlive the browser's process group; the display number
            # is not free again until they are gone. The Jupyter server and its kernels stay.
            # Only what positively belongs to the display: processes naming the session's folder
            # (Xvfb's -auth, Chromium's profile), never one a user started from a notebook.
            jupyter_alive = self.jupyter is not None and self.jupyter.process.running
            keep = with_descendants(self.jupyter.process.pid) if jupyter_alive else set()
            await asyncio.to_thread(reap, self.id, self.layout.folder, keep=keep, by_marker=False)

    async def _stop_parts(self) -> None:
        await self._stop_display(reap_leftovers=False)  # everything is reaped below
        if self.jupyter is not None:
            await self.jupyter.stop()
            self.jupyter = None
        # whatever escaped the process groups (crashpad handlers, kernels) goes now
        await asyncio.to_thread(reap, self.id, self.layout.folder)
        self._release_numbers()

    def _remove_folder(self) -> None:
        shutil.rmtree(self.layout.folder, ignore_errors=True)
        framebuffer.remove(self.id)
