"""All sessions of one service: create with checks, look up, stop, shut down."""

from __future__ import annotations

import asyncio
import logging
import shutil
from pathlib import Path

from playwright.async_api import Playwright, async_playwright

from keepalive.engine.allocation import Allocator
from keepalive.engine.profile import make_template
from keepalive.engine.reaper import reap
from keepalive.engine.session import Session, SessionRecord, new_session_id
from keepalive.models import SessionCreate, SessionState
from keepalive.settings import Settings

log = logging.getLogger(__name__)


class SessionNotFound(KeyError):
    pass


class NameTaken(ValueError):
    pass


class TooManySessions(RuntimeError):
    pass


class SessionManager:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.allocator = Allocator(display_base=settings.display_base)
        self._sessions: dict[str, Session] = {}
        self._playwright_cm = None
        self._playwright: Playwright | None = None
        self._template_lock = asyncio.Lock()
        self._admit_lock = asyncio.Lock()
        self._starts: dict[str, asyncio.Task[None]] = {}

    async def open(self) -> None:
        self.settings.sessions_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        self._clear_stale_folders()
        self._playwright_cm = async_playwright()
        self._playwright = await self._playwright_cm.start()

    def _clear_stale_folders(self) -> None:
        """Sessions left by a service that was killed: end what survived it, remove the folders.

        Its direct children died with it (PDEATHSIG); this catches their own descendants.
        """
        for folder in self.settings.sessions_dir.iterdir():
            if folder.is_dir():
                log.warning("cleaning up session %s, left by an earlier run", folder.name)
                reap(folder.name, folder)
                shutil.rmtree(folder, ignore_errors=True)

    async def close(self) -> None:
        """Stop every session, then Playwright: nothing of ours keeps running."""
        for task in self._starts.values():
            task.cancel()
        await asyncio.gather(*self._starts.values(), return_exceptions=True)
        await asyncio.gather(*(session.stop() for session in list(self._sessions.values())), return_exceptions=True)
        self._sessions.clear()
        if self._playwright_cm is not None:
            await self._playwright_cm.__aexit__(None, None, None)
            self._playwright_cm = self._playwright = None

    async def profile_template(self) -> Path:
        """The configured template, or one made (once) in the state dir."""
        if self.settings.profile_template is not None:
            return self.settings.profile_template
        template = self.settings.state_dir / "profile-template.tar.gz"
        async with self._template_lock:
            if not template.is_file():
                log.info("making the Chromium profile template (first start only)")
                await make_template(self.settings.chromium, template)
        return template

    async def create(self, request: SessionCreate) -> Session:
        """Admit a session (name, limit) and return it in state ``starting``; call ``start`` next."""
        async with self._admit_lock:
            live = [s for s in self._sessions.values() if s.state not in (SessionState.stopped, SessionState.failed)]
            if len(live) >= self.settings.max_sessions:
                raise TooManySessions(f"{len(live)} sessions are running; the limit is {self.settings.max_sessions}")
            session_id = new_session_id()
            name = request.name or f"session-{session_id}"
            if any(s.name == name for s in live):
                raise NameTaken(f"a session named {name!r} is already running")
            record = SessionRecord(
                id=session_id,
                name=name,
                width=request.width or self.settings.default_width,
                height=request.height or self.settings.default_height,
            )
            assert self._playwright is not None, "SessionManager.open() was not called"
            session = Session(
                record,
                self.settings,
                self.allocator,
                self._playwright,
                await self.profile_template(),
                heavyai=request.heavyai,
            )
            self._sessions[session_id] = session
        log.info("session %s (%s): starting at %sx%s", session.id, session.name, session.width, session.height)
        return session

    async def start(self, session: Session) -> None:
        """Start ``session``; a session that fails is forgotten (its error was already reported)."""
        try:
            await session.start()
        except BaseException:
            self._sessions.pop(session.id, None)
            raise

    def start_in_background(self, session: Session) -> None:
        task = asyncio.get_running_loop().create_task(self._start_quietly(session), name=f"start-{session.id}")
        self._starts[session.id] = task
        task.add_done_callback(lambda _: self._starts.pop(session.id, None))

    async def _start_quietly(self, session: Session) -> None:
        try:
            await session.start()
        except Exception:
            pass  # logged by the session; it stays listed as failed, with its error, until deleted

    def get(self, session_id: str) -> Session:
        try:
            return self._sessions[session_id]
        except KeyError:
            raise SessionNotFound(session_id) from None

    def list(self) -> list[Session]:
        return sorted(self._sessions.values(), key=lambda s: s.record.created_at)

    async def delete(self, session_id: str) -> None:
        session = self.get(session_id)
        start = self._starts.get(session_id)
        if start is not None:  # deleting a session that is still starting: stop the start first
            start.cancel()
            await asyncio.gather(start, return_exceptions=True)
        await session.stop()
        self._sessions.pop(session_id, None)
