"""Standby in-process, with the manager's stand-in parts (tests/unit/fake_parts.py): who goes
into standby, what stays running, waking, MAX_SESSIONS, a service restart."""

from __future__ import annotations

import asyncio

import pytest

from keepalive.engine.manager import TooManySessions
from keepalive.engine.standby import NoRoomToWake
from keepalive.models import SessionCreate, SessionState
from tests.unit.managed import start, stored


def idle(manager, *sessions, busy: bool | None = False) -> None:
    """Nobody used ``sessions`` for longer than STANDBY_AFTER, and their kernels are ``busy``."""
    for session in sessions:
        session.last_used -= manager.standby.after + 1
    manager.standby._busy = lambda session: busy


async def asleep(manager, name: str):
    """A session started as ``name`` and put into standby, having gone unused."""
    session = await start(manager, name)
    idle(manager, session)
    assert await manager.standby.check() == [session]
    return session


def display_pids(session) -> set:
    return {session.record.xvfb_pid, session.record.browser_pid}


async def test_an_idle_session_sleeps_keeping_its_kernels_and_wakes_on_its_jupyter(managers, settings, world):
    manager = await managers()
    session = await start(manager, "sleepy")
    jupyter, display = session.record.jupyter_pid, display_pids(session)
    idle(manager, session)

    assert await manager.standby.check() == [session]
    assert session.state is SessionState.standby and stored(settings)[session.id]["state"] == "standby"
    assert session.parts.display.saves == 1, "the page's notebooks were not saved before the display went"
    assert session.parts.display.quits == [True], "the browser was not asked to close itself (its cookies)"
    assert not display & world.alive and jupyter in world.alive
    assert session.record.display is None, "a session in standby still holds its display number"
    assert session.health.standby and not session.health.browser and session.healthy
    assert session.health.model_dump()["standby"] is True
    assert not session.watchdog.running

    await manager.standby.wake(session)
    assert session.state is SessionState.ready and session.healthy and session.watchdog.running
    # the browser started on the lab itself, not on a blank page the service then sends there
    assert session.parts.display.start_urls == [f"{session.parts.jupyter.endpoint.url}/lab"]
    assert session.parts.display.opened == [False, True]
    # awake, "standby" is left out: a client that checks every value of health sees it healthy
    assert "standby" not in session.health.model_dump() and all(session.health.model_dump().values())
    # and the API's schema still names every field of health
    assert set(type(session.health).model_json_schema(mode="serialization")["properties"]) == {
        "xpra", "browser", "page", "jupyter", "display", "standby"}
    assert session.record.jupyter_pid == jupyter, "waking started a new Jupyter server: the kernels are lost"
    assert display_pids(session) <= world.alive and not display_pids(session) & display
    assert stored(settings)[session.id]["state"] == "ready"


@pytest.mark.parametrize("why", ["busy", "not looked at yet", "a viewer", "a DevTools client", "used just now",
                                 "its page cannot save"])
async def test_a_session_in_use_never_sleeps(managers, world, why):
    manager = await managers()
    session = await start(manager, "awake")
    idle(manager, session, busy={"busy": True, "not looked at yet": None}.get(why, False))
    if why == "a viewer":
        session.viewer_server.viewers = 1
    if why == "a DevTools client":
        manager.standby._guests = lambda s: 1
    if why == "used just now":
        session.touch()
    if why == "its page cannot save":
        world.fail.add("save")
    assert await manager.standby.check() == []
    assert session.state is SessionState.ready and session.healthy
    assert session.watchdog.running, "a session that stayed awake stopped being watched"


async def test_the_page_is_told_whether_anyone_watches_it(managers):
    """Unwatched, the kiosk page rests (its polls stand by): a viewer or a DevTools client makes
    it watched, the last one out makes it rest again."""
    manager = await managers()
    session = await start(manager, "watched")
    display = session.parts.display
    told = []
    for viewers, guests in [(0, 0), (1, 0), (0, 0), (0, 2), (1, 1), (0, 0)]:
        session.viewer_server.viewers = viewers
        manager.standby._guests = lambda s, guests=guests: guests
        await manager.standby.watchers_changed(session)
        told.append(display.watched)
    assert told == [False, True, False, True, True, False]


async def test_a_display_that_fails_to_stop_keeps_the_session_ready_and_watched(managers, world):
    manager = await managers()
    session = await start(manager, "stuck")
    idle(manager, session)
    world.fail.add("display stop")
    assert await manager.standby.check() == []
    assert session.state is SessionState.ready and session.watchdog.running
    assert await manager.standby.check() == [session]  # the next look puts it to sleep
    assert session.state is SessionState.standby


async def test_max_sessions_counts_sessions_awake_and_a_wake_makes_room(managers, settings, world):
    settings.max_sessions = 2
    manager = await managers()
    first, second = await start(manager, "first"), await start(manager, "second")
    idle(manager, first)
    assert await manager.standby.check() == [first]
    third = await start(manager, "third")  # the one in standby does not count
    with pytest.raises(TooManySessions):
        await manager.create(SessionCreate(name="fourth"))

    second.last_used -= 1  # the least recently used of the two awake
    await manager.standby.wake(first)
    assert first.state is SessionState.ready
    assert second.state is SessionState.standby and third.state is SessionState.ready

    third.viewer_server.viewers = first.viewer_server.viewers = 1  # both watched: no room
    with pytest.raises(NoRoomToWake):
        await manager.standby.wake(second)
    assert second.state is SessionState.standby


async def test_a_service_restart_leaves_a_session_in_standby(managers, settings, world):
    first = await managers()
    session = await start(first, "kept")
    idle(first, session)
    await first.standby.check()
    jupyter = session.record.jupyter_pid
    await managers.close(first)

    second = await managers()
    adopted = second.get(session.id)
    assert adopted.state is SessionState.standby and adopted.healthy and not adopted.watchdog.running
    assert jupyter in world.alive and adopted.record.jupyter_pid == jupyter
    await second.standby.wake(adopted)
    assert adopted.state is SessionState.ready and adopted.record.jupyter_pid == jupyter


async def test_a_busy_kernel_wakes_a_session_in_standby(managers, world):
    manager = await managers()
    session = await asleep(manager, "scheduled")
    manager.standby.wake_soon(session, "a kernel of it is busy")
    await asyncio.gather(*manager.standby._wakes)
    assert session.state is SessionState.ready and session.healthy


async def test_a_jupyter_server_lost_in_standby_is_brought_back_by_waking(managers, world):
    manager = await managers()
    session = await asleep(manager, "lost")
    world.kill(session.record.jupyter_pid)
    session._part_lost("jupyter exited with code -9")
    await session.recovery.task
    assert session.state is SessionState.ready and session.healthy
    assert session.record.jupyter_pid in world.alive


async def test_a_wake_that_fails_leaves_the_session_failed_with_its_kernels(managers, world):
    manager = await managers()
    session = await asleep(manager, "broken")
    jupyter = session.record.jupyter_pid
    world.fail_always.add("display")
    await manager.standby.wake(session)
    assert session.state is SessionState.failed and "could not wake from standby" in session.record.error
    assert jupyter in world.alive
    await manager.delete(session.id)
    assert jupyter not in world.alive


async def test_a_session_in_standby_stops(managers, settings, world):
    manager = await managers()
    session = await asleep(manager, "gone")
    jupyter = session.record.jupyter_pid
    await manager.delete(session.id)
    assert session.state is SessionState.stopped and jupyter not in world.alive and stored(settings) == {}
