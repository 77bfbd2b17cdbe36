"""A session's display: Xvfb, the kiosk Chromium on it (under its CDP bridge), the kiosk page
driven over CDP, the framebuffer, and the viewers' xpra with its port.

Xvfb and the kiosk browser run as long as the session does; xpra only while someone watches
(keepalive.engine.viewer_server). The display knows nothing of the session's state: the
session says when it starts, stops, recovers or is adopted, and hears of a lost part through
``on_exit`` and ``on_browser_lost``.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import sys
import tarfile
from collections.abc import Awaitable, Callable
from pathlib import Path

from playwright.async_api import Playwright

from keepalive.engine import framebuffer
from keepalive.engine.allocation import Allocator
from keepalive.engine.browser import KioskBrowser, thumbnail_params
from keepalive.engine.cdp_gateway import bridge_answers
from keepalive.engine.commands import (
    ScreenSize,
    bridge_command,
    chromium_command,
    write_xpra_config,
    xpra_command,
    xvfb_command,
)
from keepalive.engine.jupyter import JupyterEndpoint
from keepalive.engine.layout import SessionLayout
from keepalive.engine.process import ChildFailed, ChildProcess
from keepalive.engine.profile import ProfileError, prepare_for_restart_for, restore_for, save_for
from keepalive.engine.reaper import reap
from keepalive.engine.record import SessionRecord
from keepalive.engine.users import SessionUser, ids_of
from keepalive.engine.viewer_server import ViewerServer
from keepalive.engine.xauth import write_authority
from keepalive.files import write_private
from keepalive.settings import Settings
from keepalive.viewer.screen import set_screen_size
from keepalive.viewer.xpra_options import viewer_screen, xpra_viewer_flags

log = logging.getLogger(__name__)

#: Displays (and ports) tried before a session gives up because others keep taking them.
DISPLAY_ATTEMPTS = 5
#: What Xvfb says when the display it was given is in use.
TAKEN_SIGNS = ("Server is already active for display",)

ExitHandler = Callable[[ChildProcess, int | None], None]
#: ``spawn(name, argv, env, on_exit)``: one of the session's processes, not started yet (as
#: its user, at its priority, in its home, logging to ``logs/NAME.log``); ``on_exit`` None
#: means the session's own handler (an exit nobody asked for is a lost part).
Spawn = Callable[[str, list[str], dict[str, str], ExitHandler | None], ChildProcess]


class Display:
    def __init__(
        self,
        record: SessionRecord,
        settings: Settings,
        *,
        allocator: Allocator,
        playwright: Playwright | None,
        layout: Callable[[], SessionLayout],
        environment: Callable[[], dict[str, str]],
        spawn: Spawn,
        on_exit: ExitHandler,
        on_browser_lost: Callable[[str], None],
        persist: Callable[[], None],
        cdp_url: Callable[[], str],
        cdp_headers: Callable[[], dict[str, str]],
        user: SessionUser | None,
        spared: Callable[[], set[int]],
    ) -> None:
        """``record``: the session's, whose display, port and pids this part keeps up to date
        (never its state), saving it with ``persist()``; ``layout()`` and ``environment()``:
        the session's folder and its children's environment as they are now; ``spared()``:
        the pids no reaping of the display's leftovers may touch (the Jupyter server and its
        kernels)."""
        self.record = record
        self.settings = settings
        self._allocator = allocator
        self._playwright = playwright
        self._layout = layout
        self._environment = environment
        self._spawn = spawn
        self._on_exit = on_exit
        self._on_browser_lost = on_browser_lost
        self._persist = persist
        self._cdp_url = cdp_url
        self._cdp_headers = cdp_headers
        self.user = user
        self._spared = spared
        #: The display (Xvfb) and the kiosk browser on it (the CDP bridge with Chromium): both
        #: run as long as the session does. xpra runs only while someone watches.
        self.xvfb: ChildProcess | None = None
        self.browser_process: ChildProcess | None = None
        self.browser: KioskBrowser | None = None
        #: Whether a viewer or DevTools client is connected (``set_watched``): told to every page.
        self.watched = False
        self.xpra_password = secrets.token_urlsafe(24)
        self.viewer_server = ViewerServer(
            record.id, self._spawn_xpra, port=lambda: self.record.xpra_port, new_port=self._new_viewer_port,
            display_up=lambda: self.running, linger=settings.viewer_linger,
            start_timeout=settings.start_timeout,
        )

    @property
    def id(self) -> str:
        return self.record.id

    @property
    def _owner(self) -> tuple[int, int] | None:
        return ids_of(self.user)

    # -- what the session asks ------------------------------------------------------------

    @property
    def running(self) -> bool:
        """Xvfb and the kiosk browser's process run (whether CDP answers is ``browser_connected``)."""
        return all(child is not None and child.running for child in (self.xvfb, self.browser_process))

    def runs(self, name: str) -> bool:
        """Whether the display's process ``name`` ("xvfb" or "browser") runs."""
        child = {"xvfb": self.xvfb, "browser": self.browser_process}[name]
        return child is not None and child.running

    @property
    def shows(self) -> bool:
        """The display runs and the viewer has not failed (none with nobody watching is fine)."""
        return self.xvfb is not None and self.xvfb.running and self.viewer_server.healthy

    @property
    def browser_connected(self) -> bool:
        return self.browser is not None and self.browser.connected

    @property
    def page_alive(self) -> bool:
        return self.browser is not None and self.browser.page_alive

    def children(self) -> list[ChildProcess]:
        children = [self.xvfb, self.browser_process, self.viewer_server.process]
        return [child for child in children if child is not None]

    def pids(self) -> dict[str, int | None]:
        return {
            "xvfb": self.xvfb.pid if self.xvfb else None,
            "browser": self.browser_process.pid if self.browser_process else None,
            "xpra": self.viewer_server.process.pid if self.viewer_server.process else None,
        }

    async def page_answers(self, timeout: float) -> bool:
        """The kiosk page answers within ``timeout`` (a page that is gone is not hung: the crash
        path deals with that)."""
        if self.browser is None or not self.browser.page_alive:
            return True
        try:
            return await asyncio.wait_for(self.browser.page.evaluate("1"), timeout) == 1
        except Exception:  # a timeout, or Playwright's error: no answer either way
            return False

    async def bridge_answers(self) -> bool:
        return await bridge_answers(self._layout().cdp_socket)

    async def unsent_drafts(self) -> list[dict]:
        assert self.browser is not None
        return await self.browser.unsent_drafts()

    async def screenshot(self) -> bytes:
        if self.browser is None:
            raise RuntimeError("the session has no browser")
        return await self.browser.screenshot()

    async def answer_input(self, kernel_id: str, value: str) -> bool:
        """Answer the input box the kiosk shows for ``kernel_id``, as if typed; whether it shows one."""
        return self.browser is not None and await self.browser.answer_input(kernel_id, value)

    async def thumbnail(self) -> bytes:
        """A small JPEG of the kiosk (for the timeline); neither wakes nor touches the session."""
        if self.browser is None:
            raise RuntimeError("the session has no browser")
        return await self.browser.screenshot(thumbnail_params(self.record.width, self.record.height))

    # -- the browser profile --------------------------------------------------------------

    async def save_notebooks(self) -> int:
        """What the user typed and did not save, into the home's files (before a stop)."""
        saved = await self.browser.save_all() if self.browser is not None else 0
        if saved:
            log.info("session %s: saved %d notebook(s) with unsaved changes", self.id, saved)
        return saved

    async def notify(self, text: str) -> None:
        """Show ``text`` on the kiosk page (lost with a reload: the events keep it too)."""
        if self.browser is None or not self.browser.page_alive:
            return
        try:
            await self.browser.show_notice(text)
        except Exception as error:  # a page on its way out: the event and the activity still say it
            log.warning("session %s: could not show a notice on the kiosk page: %s", self.id, error)

    # The profile and the home are the session user's: the work on them is done with that
    # user's rights, never root's (keepalive.engine.profile, "done with the session user's rights").

    async def restore_profile(self, template: Path) -> str:
        """The browser profile the home saved, or a fresh one from ``template``; returns which."""
        layout = self._layout()
        return await restore_for(self.user, layout.saved_profile, layout.previous_profile, template, layout.profile_dir)

    async def save_profile(self) -> None:
        """Keep the browser profile (cookies, site data, settings) in the home for the next session."""
        layout = self._layout()
        try:
            await save_for(self.user, layout.profile_dir, layout.saved_profile, layout.previous_profile)
        except (OSError, tarfile.TarError, ProfileError) as error:  # the processes are gone either way; say what was lost
            log.error("session %s: could not save the browser profile into %s: %s", self.id, layout.kept, error)

    # -- start ----------------------------------------------------------------------------

    async def start(
        self, env: dict[str, str], browser_may_start: Awaitable[None] | None = None, start_url: str = "about:blank"
    ) -> None:
        """Xvfb on a fresh display, then the kiosk Chromium (under its CDP bridge) on it, opening
        ``start_url``, once ``browser_may_start`` (work on its profile, done while Xvfb starts) is done.

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
                await self.stop()
                self.release_numbers()
                layout = self._layout()
                layout.log("xvfb").replace(layout.log(f"xvfb-attempt-{attempt}"))
        if browser_may_start is not None:
            await browser_may_start
        await self._launch_browser(env, start_url)

    async def restart(self, env: dict[str, str], start_url: str = "about:blank") -> None:
        """The whole display again after a crash or in a wake, its profile marked as cleanly
        closed first (beside Xvfb's start: the profile is the browser's alone)."""
        prepared = asyncio.ensure_future(prepare_for_restart_for(self.user, self._layout().profile_dir))
        try:
            await self.start(env, browser_may_start=prepared, start_url=start_url)
        finally:
            if not prepared.done():  # Xvfb failed first: the profile's work ends by itself
                prepared.cancel()
            await asyncio.gather(prepared, return_exceptions=True)

    async def _launch_xvfb(self, env: dict[str, str]) -> None:
        if self.record.display is None:
            self.record.display = self._allocator.display()
        if self.record.xpra_port is None:
            self.record.xpra_port = self._allocator.port()
        self._persist()
        display = self.record.display
        layout = self._layout()
        write_authority(layout.xauthority, display, owner=self._owner)
        # xpra's, for when a viewer comes; written now, as a later service adopting the session reads it
        write_private(layout.xpra_password_file, self.xpra_password, owner=self._owner)
        width, height = self.record.width, self.record.height
        largest = ScreenSize(*viewer_screen(self.settings, width, height))
        # a framebuffer file of a display that is gone (or of one that failed to start): none
        # of it may stay, nor pass for the new one's
        framebuffer.remove(self.id)
        fbdir = framebuffer.prepare(self.id, largest.width * largest.height * 4, self._owner)
        self.xvfb = self._spawn(
            "xvfb",
            xvfb_command(self.settings.xvfb, display, layout, ScreenSize(width, height), largest, fbdir),
            env, None,
        )
        await self.xvfb.start()
        self.record.xvfb_pid, self.record.xvfb_started_at = self.xvfb.pid, self.xvfb.started_at
        self._persist()
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
        # is there (the kiosk window is fitted to it once the browser is connected, see open_page)
        await self.fit_screen(windows=False)
        log.info("session %s: Xvfb pid %s on display :%s", self.id, xvfb_pid, display)

    async def _launch_browser(self, env: dict[str, str], start_url: str) -> None:
        assert self.record.display is not None
        layout = self._layout()
        # a bridge that was killed leaves its socket file behind: it must not pass for the new one
        layout.cdp_socket.unlink(missing_ok=True)
        screen = ScreenSize(self.record.width, self.record.height)
        chromium = chromium_command(self.settings.chromium, layout, screen, as_other_user=self.user is not None,
                                    start_url=start_url)
        self.browser_process = self._spawn(
            "browser", bridge_command(sys.executable, layout, chromium),
            {**env, "DISPLAY": f":{self.record.display}"}, None,
        )
        await self.browser_process.start()
        self.record.browser_pid = self.browser_process.pid
        self.record.browser_started_at = self.browser_process.started_at
        self._persist()
        # the bridge answers once Chromium's pipe does
        await self.browser_process.wait_ready(
            lambda: bridge_answers(layout.cdp_socket), self.settings.start_timeout, what="answering CDP"
        )
        log.info("session %s: kiosk browser pid %s", self.id, self.browser_process.pid)

    async def open_page(
        self, endpoint: JupyterEndpoint, path: str, connect_timeout: float | None = None, opened: bool = False
    ) -> None:
        """Connect to the kiosk browser over CDP and show ``path`` of the Jupyter server
        (``opened``: the browser was started on it, see KioskBrowser.open_jupyter)."""
        self.browser = KioskBrowser(self._playwright, on_lost=self._on_browser_lost)
        await self.browser.connect(self._cdp_url(), self._cdp_headers(), connect_timeout or self.settings.start_timeout)
        await self.fit_screen()  # its window is there now; fitted while the page loads
        await self.browser.open_jupyter(endpoint, self.settings.start_timeout, path, opened=opened)
        await self.browser.set_watched(self.watched)
        log.info("session %s: kiosk browser on %s%s", self.id, endpoint.url, path)

    async def set_watched(self, watched: bool) -> None:
        """Someone watches the page now (a viewer, a DevTools client), or nobody does."""
        self.watched = watched
        if self.browser is not None:
            await self.browser.set_watched(watched)

    async def close_page(self) -> None:
        """Drop the CDP connection; the browser and its page stay as they are."""
        if self.browser is not None:
            await self.browser.close()
            self.browser = None

    async def fit_screen(self, windows: bool = True) -> bool:
        """Put the X screen and (if ``windows``) the kiosk window back to the session's own size.

        Xvfb starts at the viewers' maximum, and Chromium leaves a 1 px edge on a window that
        is exactly screen-sized until someone resizes it; with no viewer, nobody else will.
        """
        assert self.record.display is not None
        if not await set_screen_size(f":{self.record.display}", self.record.width, self.record.height,
                                     self._environment(), windows):
            return False
        self._release_offscreen()
        return True

    def _release_offscreen(self) -> None:
        """Give back the part of Xvfb's framebuffer the screen, now the session's size, leaves
        out (keepalive.engine.framebuffer): at 1280x800 with the default maximum, the 7.8 MiB of
        rows below the screen (the right half of the screen's own rows shares its pages)."""
        folder = framebuffer.folder_for(self.id)
        try:
            released = framebuffer.release_offscreen(
                folder, self.record.width, self.record.height, self._owner[0] if self._owner else None
            )
        except FileNotFoundError:
            return  # Xvfb keeps its framebuffer in its own memory (no room in /dev/shm)
        except (OSError, ValueError) as error:
            log.warning("session %s: cannot give back the framebuffer's unseen part: %s", self.id, error)
            return
        log.debug("session %s: gave back %.1f MiB of the framebuffer", self.id, released / 2**20)

    # -- the viewers' xpra (keepalive.engine.viewer_server) ------------------------------------

    def _spawn_xpra(self, port: int, on_exit: ExitHandler) -> ChildProcess:
        assert self.record.display is not None
        layout = self._layout()
        return self._spawn(
            "xpra", xpra_command(self.settings.xpra, self.record.display, port, layout, xpra_viewer_flags(self.settings)),
            {**self._environment(), **write_xpra_config(layout)}, on_exit,
        )

    def _new_viewer_port(self) -> int:
        """The session's viewer port was taken by someone else: another one."""
        if self.record.xpra_port is not None:
            self._allocator.release_port(self.record.xpra_port)
        self.record.xpra_port = self._allocator.port()
        self._persist()
        return self.record.xpra_port

    async def viewer_port(self, join: bool = False) -> int:
        """The port of the session's xpra, started for a viewer if it is not running
        (keepalive.engine.viewer_server.ViewerServerUnavailable if it cannot be); ``join``: see
        ViewerServer.ensure."""
        port = await self.viewer_server.ensure(join)
        process = self.viewer_server.process
        if process is not None and self.record.xpra_pid != process.pid:
            self.record.xpra_pid, self.record.xpra_started_at = process.pid, process.started_at
            self._persist()
        return port

    def release_numbers(self) -> None:
        if self.record.display is not None:
            self._allocator.release_display(self.record.display)
            self.record.display = None
        if self.record.xpra_port is not None:
            self._allocator.release_port(self.record.xpra_port)
            self.record.xpra_port = None

    # -- adopt, detach, stop ----------------------------------------------------------------

    def adopt(self) -> None:
        """Xvfb, the browser and xpra as an earlier service left them (see Session.adopt)."""
        record, layout = self.record, self._layout()
        self._allocator.reserve(record.display, record.xpra_port)
        self.xpra_password = layout.xpra_password_file.read_text().strip()
        self.xvfb = ChildProcess.adopt(
            "xvfb", record.xvfb_pid, record.xvfb_started_at, log_path=layout.log("xvfb"), on_exit=self._on_exit,
        )
        self.browser_process = ChildProcess.adopt(
            "browser", record.browser_pid, record.browser_started_at,
            log_path=layout.log("browser"), on_exit=self._on_exit,
        )
        self.viewer_server.adopt(record.xpra_pid, record.xpra_started_at, layout.log("xpra"))

    async def reconnect(self) -> bool:
        """A new CDP connection to the adopted kiosk browser; whether its page shows JupyterLab."""
        self.browser = KioskBrowser(self._playwright, on_lost=self._on_browser_lost)
        await self.browser.connect(self._cdp_url(), self._cdp_headers(), 30)
        await self.browser.set_watched(self.watched)
        # a page the service left restoring its workspace gets the time to finish
        return await self.browser.page_shows_lab(within=15)

    async def detach(self) -> None:
        await self.close_page()
        self.viewer_server.detach()
        for child in (self.xvfb, self.browser_process):
            if child is not None:
                child.detach()

    async def stop(self, reap_leftovers: bool = True, quit_browser: bool = False) -> None:
        """xpra, the kiosk browser and Xvfb, in that order: each needs the next one.

        ``reap_leftovers`` False: the caller reaps every process of the session next.
        ``quit_browser``: Chromium is asked to close itself first (KioskBrowser.quit: its
        cookies written, for the next start on this profile); a stop after a crash or a hang
        does not wait for that.
        """
        ask_first = None
        if quit_browser and self.browser is not None and self.browser.connected:
            ask_first = self.browser.quit  # (which marks the browser's end as on purpose first)
        else:
            await self.close_page()  # dropped first, so that the browser's end is not reported lost
        await self.viewer_server.stop()
        if self.browser_process is not None:
            await self.browser_process.terminate(timeout=8.0, ask_first=ask_first)
            self.browser_process = None
        await self.close_page()
        if self.xvfb is not None:
            await self.xvfb.terminate(timeout=8.0)
            self.xvfb = None
        if reap_leftovers:
            # Chromium's helpers can outlive the browser's process group; the display number
            # is not free again until they are gone. The Jupyter server and its kernels stay.
            # Only what positively belongs to the display: processes naming the session's folder
            # (Xvfb's -auth, Chromium's profile), never one a user started from a notebook.
            await asyncio.to_thread(reap, self.id, self._layout().folder, keep=self._spared, by_marker=False)
