"""Session managers on the fake machine of tests/unit/fake_parts.py, and what tests ask of
them (the fixtures that hand them out are in tests/unit/conftest.py)."""

from __future__ import annotations

from keepalive.engine.manager import SessionManager
from keepalive.engine.store import SessionStore
from keepalive.models import SessionCreate
from keepalive.settings import Settings
from tests.unit.fake_parts import FakeWorld


class Managers:
    """Opens managers on one state dir and one fake machine, and closes what is left open."""

    def __init__(self, settings: Settings, world: FakeWorld) -> None:
        self.settings, self.world = settings, world
        self.open: list[SessionManager] = []

    async def __call__(self) -> SessionManager:
        manager = SessionManager(self.settings, parts=self.world.factory, playwright=self.world.playwright)
        manager.restorer.runs = self.world.process_runs  # the fake machine's processes, not this one's
        await manager.open()
        self.open.append(manager)
        return manager

    async def close(self, manager: SessionManager, stop_sessions: bool = False) -> None:
        self.open.remove(manager)
        await manager.close(stop_sessions=stop_sessions)


async def start(manager: SessionManager, name: str):
    session = await manager.create(SessionCreate(name=name))
    await manager.start(session)
    return session


def stored(settings: Settings) -> dict[str, dict]:
    store = SessionStore(settings.state_dir / "sessions.db")
    try:
        return {record["id"]: record for record in store.load()}
    finally:
        store.close()


def restore(settings: Settings, record: dict) -> None:
    """Write a record as a dead service would have left it."""
    store = SessionStore(settings.state_dir / "sessions.db")
    try:
        store.save(record)
    finally:
        store.close()
