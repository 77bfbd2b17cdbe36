"""The warm pool's own rules, with stand-in sessions (keepalive.engine.pool), and the folder
work a start from the pool does (keepalive.engine.layout, keepalive.engine.jupyter)."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path
from types import SimpleNamespace

from keepalive.engine import pool as pool_module
from keepalive.engine.jupyter import user_setting_plugins
from keepalive.engine.layout import mirror_folders
from keepalive.engine.pool import WarmPool
from tests.waiting import wait_until_async


class StandInSession:
    count = 0

    def __init__(self, width=1280, height=800) -> None:
        StandInSession.count += 1
        self.id = f"s{StandInSession.count}"
        self.width, self.height, self.user = width, height, None
        self.up = True
        self.started = self.stopped = False

    @property
    def healthy(self) -> bool:
        return self.up

    async def start(self) -> None:
        self.started = True


class Harness:
    """A pool of ``size`` under a limit of ``room`` more sessions, recording what it stops.

    ``looks`` counts the pool's looks (each asks how much room there is): a check that the pool
    did *not* do something waits for a look first, the positive sign that it would have by then.
    """

    def __init__(self, size: int, room: int = 10, busy: bool = False) -> None:
        self.made: list[StandInSession] = []
        self.stopped: list[StandInSession] = []
        self.room, self.busy = room, busy
        self.looks = 0

        async def make():
            session = StandInSession()
            self.made.append(session)
            return session

        async def stop(session):
            session.stopped = True
            self.stopped.append(session)

        def room() -> int:
            self.looks += 1
            return self.room - len(self.pool.sessions())

        self.pool = WarmPool(size, make, room, lambda: self.busy, stop)

    async def another_look(self) -> None:
        """Until the pool has looked once more (and, on the same step, acted on what it saw)."""
        looks = self.looks
        await wait_until_async("the pool's next look", lambda: self.looks > looks, timeout=5)


def test_the_pool_fills_to_its_size_and_a_take_refills_it(monkeypatch):
    monkeypatch.setattr(pool_module.WarmPool, "_memory_left", staticmethod(lambda: True))

    async def scenario():
        harness = Harness(size=2)
        pool = harness.pool
        pool.start()
        await wait_until_async("the pool to settle", lambda: pool.waiting == 2)
        taken = pool.take(1280, 800)
        assert taken is harness.made[0] and pool.hits == 1
        await wait_until_async("the pool to settle", lambda: pool.waiting == 2)
        assert len(harness.made) == 3
        await pool.close()
        assert {s.id for s in harness.stopped} == {harness.made[1].id, harness.made[2].id}
        assert not taken.stopped, "a taken session is its user's: the pool never stops it"

    asyncio.run(scenario())


def test_a_take_misses_on_another_size_or_a_dead_session(monkeypatch):
    monkeypatch.setattr(pool_module.WarmPool, "_memory_left", staticmethod(lambda: True))

    async def scenario():
        harness = Harness(size=1)
        pool = harness.pool
        assert pool.take(1280, 800) is None and pool.misses["empty"] == 1
        pool.start()
        await wait_until_async("the pool to settle", lambda: pool.waiting == 1)
        assert pool.take(1920, 1080) is None and pool.misses["screen size"] == 1
        harness.made[0].up = False
        assert pool.take(1280, 800) is None, "a session with a dead part is never handed out"
        # the next look replaces it
        pool.wake()
        await wait_until_async("the pool to settle", lambda: harness.stopped and pool.waiting == 1)
        assert harness.stopped == [harness.made[0]]
        await pool.close()

    asyncio.run(scenario())


def test_the_pool_never_outgrows_the_room_nor_fills_while_others_start(monkeypatch):
    monkeypatch.setattr(pool_module.WarmPool, "_memory_left", staticmethod(lambda: True))
    monkeypatch.setattr(pool_module, "LOOK_INTERVAL", 0.05)

    async def scenario():
        harness = Harness(size=3, room=1, busy=True)
        pool = harness.pool
        pool.start()
        await harness.another_look()
        await harness.another_look()
        assert harness.made == [], "a user's start is under way: the pool waits"
        harness.busy = False
        await wait_until_async("the pool to settle", lambda: pool.waiting == 1)
        await harness.another_look()
        await harness.another_look()
        assert pool.waiting == 1, "only one more session fits under MAX_SESSIONS"
        await pool.make_room()
        assert harness.stopped == [harness.made[0]]
        await pool.close()

    asyncio.run(scenario())


def test_the_pool_refills_only_a_moment_after_a_start_ended(monkeypatch):
    """A new pool session's first steps run on the service's event loop: the user whose start
    just ended (a take from the pool, say) gets their answer first."""
    monkeypatch.setattr(pool_module.WarmPool, "_memory_left", staticmethod(lambda: True))
    monkeypatch.setattr(pool_module, "AFTER_START", 0.4)

    async def scenario():
        harness = Harness(size=1, busy=True)
        pool = harness.pool
        pool.start()
        await harness.another_look()  # and saw a start under way
        harness.busy = False
        pool.wake(start_ended=True)
        await harness.another_look()  # and saw the start that just ended
        assert harness.made == [], "the pool started a session right as a start ended"
        await wait_until_async("the pool to settle", lambda: pool.waiting == 1)
        await pool.close()

    asyncio.run(scenario())


def test_the_pool_ends_when_closed_right_after_a_wake(monkeypatch):
    """The service's shutdown right after a session stopped: the cancel must not be lost as the
    wake arrives (asyncio.wait_for on Python 3.11 lost it, and the shutdown hung)."""
    monkeypatch.setattr(pool_module.WarmPool, "_memory_left", staticmethod(lambda: True))

    async def scenario():
        harness = Harness(size=1)
        pool = harness.pool
        pool.start()
        # its second look found it full: the pool waits for the next look or a wake (it looks
        # on the same step as it fills, so waiting == 1 alone would say as much)
        await wait_until_async("the pool to fill and look again", lambda: pool.waiting == 1 and harness.looks >= 2)
        pool.wake()
        await asyncio.wait_for(pool.close(), 5)
        assert harness.stopped == harness.made

    asyncio.run(scenario())


def test_no_pool_when_memory_is_short(monkeypatch):
    monkeypatch.setattr(pool_module.psutil, "virtual_memory", lambda: SimpleNamespace(available=1024**3))
    monkeypatch.setattr(pool_module, "LOOK_INTERVAL", 0.05)

    async def scenario():
        harness = Harness(size=1)
        harness.pool.start()
        await harness.another_look()
        await harness.another_look()
        assert harness.made == []
        await harness.pool.close()

    asyncio.run(scenario())


def test_mirror_folders_makes_what_is_missing_and_follows_no_symlink(tmp_path):
    pool_home = tmp_path / "pool-home"
    (pool_home / "data" / "jupyter").mkdir(parents=True)
    (pool_home / "home" / ".ipython").mkdir(parents=True)
    home = tmp_path / "alice"
    (home / "data").mkdir(parents=True)
    (home / "data" / "mine.txt").write_text("kept")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    os.symlink(elsewhere, home / "home")  # planted by the home's user

    mirror_folders(pool_home, home)

    assert (home / "data" / "jupyter").is_dir() and (home / "data" / "mine.txt").read_text() == "kept"
    assert list(elsewhere.iterdir()) == [], "nothing was made through the symlink"


def test_user_setting_plugins_names_each_plugin_with_settings(tmp_path: Path):
    folder = tmp_path / ".jupyter" / "lab" / "user-settings"
    (folder / "@jupyterlab" / "apputils-extension").mkdir(parents=True)
    (folder / "@jupyterlab" / "apputils-extension" / "themes.jupyterlab-settings").write_text("{}")
    (folder / "plain-extension").mkdir(parents=True)
    (folder / "plain-extension" / "plugin.jupyterlab-settings").write_text("{}")
    (folder / "plain-extension" / "notes.txt").write_text("")
    assert user_setting_plugins(tmp_path) == ["@jupyterlab/apputils-extension:themes", "plain-extension:plugin"]
    assert user_setting_plugins(tmp_path / "nothing") == []


def test_a_pool_session_that_fails_to_start_is_let_go(monkeypatch):
    monkeypatch.setattr(pool_module.WarmPool, "_memory_left", staticmethod(lambda: True))
    monkeypatch.setattr(pool_module, "FAILURE_BACKOFF", 0.05)

    async def failing_start(self) -> None:
        raise RuntimeError("no display")

    monkeypatch.setattr(StandInSession, "start", failing_start)

    async def scenario():
        harness = Harness(size=1)
        harness.pool.start()
        await wait_until_async("the pool to settle", lambda: len(harness.stopped) >= 2)
        assert harness.pool.waiting == 0
        assert all(session.stopped for session in harness.stopped), "a failed pool session is stopped, not kept"
        await harness.pool.close()

    asyncio.run(scenario())


def test_a_pool_that_cannot_make_a_session_tries_again_later(monkeypatch):
    """No free uid, no profile template: logged, and the pool keeps trying instead of dying."""
    monkeypatch.setattr(pool_module.WarmPool, "_memory_left", staticmethod(lambda: True))
    monkeypatch.setattr(pool_module, "FAILURE_BACKOFF", 0.05)

    async def scenario():
        harness = Harness(size=1)
        attempts = []
        make = harness.pool._make

        async def flaky_make():
            attempts.append(1)
            if len(attempts) < 3:
                raise RuntimeError("all uids of the session user range are taken")
            return await make()

        harness.pool._make = flaky_make
        harness.pool.start()
        await wait_until_async("the pool to settle", lambda: harness.pool.waiting == 1)
        assert len(attempts) == 3
        await harness.pool.close()

    asyncio.run(scenario())
