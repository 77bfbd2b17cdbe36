"""The hand-over of a warm pool session to its user (keepalive.engine.pool says why there is a pool).

A pool session is claimed inside the manager's admission (its record takes the user's name),
then taken over by its start: its processes back to normal priority, the user's home moved in
behind the home link, the HeavyAI connection handed to the Jupyter server for the kernels to
come, and the page showing it all without a reload. Until it is taken, a pool session runs at
a low priority and is nobody's: its browser profile is never saved.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Callable
from pathlib import Path

from keepalive.engine import user_python
from keepalive.engine.browser import HEAVYAI_WORKSPACE_QUERY, PLAIN_WORKSPACE_QUERY
from keepalive.engine.display import Display
from keepalive.engine.jupyter import user_setting_plugins
from keepalive.engine.jupyter_side import JupyterSide
from keepalive.engine.layout import SessionLayout, mirror_folders
from keepalive.engine.priority import POOL_NICENESS, can_restore_priority, set_niceness
from keepalive.engine.reaper import session_processes
from keepalive.engine.record import SessionRecord, now_stamp
from keepalive.engine.users import SessionUser, give
from keepalive.files import write_private
from keepalive.models import HeavyAIConnection
from keepalive.settings import Settings

log = logging.getLogger(__name__)


class PoolHandover:
    def __init__(
        self,
        record: SessionRecord,
        settings: Settings,
        *,
        layout: Callable[[], SessionLayout],
        user: SessionUser | None,
        display: Display,
        jupyter: JupyterSide,
        persist: Callable[[], None],
    ) -> None:
        self.record = record
        self.settings = settings
        self._layout = layout
        self.user = user
        self._display = display
        self._jupyter = jupyter
        self._persist = persist
        #: Taken from the warm pool: the session's start takes the running parts over.
        self.from_pool = False
        #: Taken from the pool, but the take-over failed: it was started cold instead.
        self.took_over_failed = False

    def claim(self, name: str, heavyai: HeavyAIConnection | None) -> None:
        """The record becomes ``name``'s (on the event loop, inside the manager's admission):
        the home, the HeavyAI handoff and the page follow in ``take_over``."""
        self.record.name = name
        self.record.created_at = now_stamp()
        if heavyai is not None:
            self.record.heavyai = {"protocol": heavyai.protocol, "host": heavyai.host, "port": heavyai.port}
        self.from_pool = True

    def niceness(self, starting: bool) -> int:
        """Started for the pool and nobody's yet: low priority, if it can be undone when taken."""
        filling_pool = self.record.home_linked and not self.from_pool and starting
        return POOL_NICENESS if filling_pool and can_restore_priority() else 0

    def _normal_priority(self) -> None:
        """Every thread of every process of the session back to niceness 0 (it was taken).

        Found as the reaper finds them: Chromium's crashpad handler is nobody's descendant.
        """
        children = self._display.children() + self._jupyter.children()
        if not any(child.niceness for child in children):
            return
        for child in children:
            child.niceness = 0  # what it runs at from now on
        if set_niceness((p.pid for p in session_processes(self.record.id, self._layout().folder)), 0):
            log.warning("session %s: some of its processes still run at a low priority", self.record.id)

    async def take_over(self, heavyai: HeavyAIConnection | None, webhook_url: str | None) -> None:
        """A claimed pool session becomes its user's: their home behind the link, their HeavyAI
        connection for the kernels, and the page showing it all, without a reload."""
        await asyncio.to_thread(self._normal_priority)
        home = self.settings.homes_dir / self.record.name
        returning = await asyncio.to_thread(self._move_in, home)
        self._persist()
        layout = self._layout()
        if webhook_url is not None:
            write_private(layout.webhook_url_file, webhook_url)
        if returning and self.user is not None:  # its Python environment is the user's, refreshed for this uid
            await user_python.prepare(self.settings.jupyter_python, layout.home, self.user)
        if heavyai is not None:
            self._jupyter.write_heavyai_handoff(heavyai)
        await self._jupyter.prepare_kernels()
        assert self._display.browser is not None and self._jupyter.endpoint is not None
        await self._display.browser.take_over(
            self._jupyter.endpoint,
            self._jupyter.lab_path + (HEAVYAI_WORKSPACE_QUERY if heavyai else PLAIN_WORKSPACE_QUERY),
            heavyai=heavyai is not None, settings=user_setting_plugins(layout.home),
            timeout=self.settings.start_timeout,
        )
        log.info("session %s: taken from the pool by %s (%s home)", self.record.id, self.record.name,
                 "its" if returning else "a new")

    def _move_in(self, home: Path) -> bool:
        """Point the home link at ``home``: the pool's own home becomes it when the name has
        none yet. Returns whether the name had a home already."""
        layout = self._layout()
        returning = home.exists()
        if returning:
            if self.user is not None and home.lstat().st_uid != self.user.uid:
                give(home, self.user)  # as when a home's own uid is busy: it goes to this session's
            SessionLayout(layout.folder, home).create_home(self.user)
            mirror_folders(layout.pool_home, home, self.user)  # what the server made at its start
            self.record.keep_saved_profile = SessionLayout(layout.folder, home).saved_profile.exists()
        else:
            os.rename(layout.pool_home, home)  # same file system: both are in the state dir
        # Swapped in one step: every path the Jupyter server and the browser hold goes through it.
        swap = layout.folder / "home-link.new"
        swap.unlink(missing_ok=True)
        os.symlink(home, swap)
        os.replace(swap, layout.home_link)
        return returning

    def cold_instead(self) -> tuple[SessionLayout, bool]:
        """The take-over failed: the layout of the user's session started cold under the same
        id, and whether its home must be given to the session's user."""
        home = self.settings.homes_dir / self.record.name
        give_home = self.user is not None and home.exists() and home.lstat().st_uid != self.user.uid
        self.record.home_linked = self.record.keep_saved_profile = False
        self.from_pool = False
        self.took_over_failed = True
        return SessionLayout(self._layout().folder, home), give_home

    def nobodys(self) -> bool:
        """A pool session that nobody took: its home link still points at the pool's home."""
        if not self.record.home_linked:
            return False
        layout = self._layout()
        try:
            return os.readlink(layout.home_link) == layout.pool_home.name
        except OSError:
            return True  # no link: nobody's home was ever behind it

    def saves_profile(self) -> bool:
        """Whether the browser profile may be saved into the home at a stop: never a pool
        session's that nobody took (nothing of anyone's to keep), and never over the profile a
        returning user's home holds (the pool browser started from the template)."""
        return not self.nobodys() and not self.record.keep_saved_profile
