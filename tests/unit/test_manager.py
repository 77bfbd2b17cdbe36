"""The session manager in-process, with stand-in parts (tests/unit/fake_parts.py): start,
concurrent start and delete, adoption of every recorded state, shutdown."""

from __future__ import annotations

import asyncio

import pytest

from keepalive.engine import watchdog
from keepalive.engine.manager import NameTaken, SessionManager, SessionNotFound
from keepalive.engine.record import InvalidTransition, SessionStartError
from keepalive.models import SessionCreate, SessionState
from keepalive.settings import Settings
from tests.unit.managed import restore, start, stored


async def test_a_session_starts_is_listed_and_is_deleted(managers, settings, world):
    manager = await managers()
    session = await start(manager, "alice")
    assert session.state is SessionState.ready and session.healthy
    assert manager.list() == [session] and manager.get(session.id) is session
    assert stored(settings)[session.id]["state"] == "ready"
    pids = {session.record.jupyter_pid, session.record.xvfb_pid, session.record.browser_pid}
    assert pids <= world.alive
    with pytest.raises(NameTaken):
        await manager.create(SessionCreate(name="alice"))

    await manager.delete(session.id)
    assert session.state is SessionState.stopped
    assert not pids & world.alive
    assert session.parts.display.quits == [True], "the browser was not asked to close itself (its cookies)"
    assert manager.list() == [] and stored(settings) == {}
    assert not (settings.sessions_dir / session.id).exists()
    with pytest.raises(SessionNotFound):
        manager.get(session.id)


async def test_two_sessions_start_at_once(managers, world):
    manager = await managers()
    first, second = await asyncio.gather(start(manager, "one"), start(manager, "two"))
    assert {first.state, second.state} == {SessionState.ready}
    assert first.display != second.display


async def test_a_failed_start_is_listed_failed_with_its_reason_and_leaves_nothing(managers, settings, world):
    manager = await managers()
    world.fail.add("display")
    session = await manager.create(SessionCreate(name="broken"))
    manager.start_in_background(session)
    await asyncio.gather(*manager.registry.starts())
    assert session.state is SessionState.failed and "fake display failed" in session.record.error
    assert manager.list() == [session]
    assert world.alive == set(), "the Jupyter server started beside the display was left running"
    assert not (settings.sessions_dir / session.id).exists()
    await manager.delete(session.id)
    assert manager.list() == [] and stored(settings) == {}


async def test_a_delete_during_the_start_wins(managers, settings, world):
    manager = await managers()
    world.hold = asyncio.Event()
    session = await manager.create(SessionCreate(name="early"))
    starting = asyncio.ensure_future(manager.start(session))
    await world.waiting.wait()  # the start is under way, its parts half up
    assert session.state is SessionState.starting
    await manager.delete(session.id)
    with pytest.raises(SessionStartError, match="deleted while it started"):
        await starting
    assert session.state is SessionState.stopped
    assert world.alive == set() and manager.list() == [] and stored(settings) == {}
    assert manager.registry.starts() == []


async def _left_by_a_first_service(managers, settings, world, state: str, **changes) -> str:
    """A session started by a first manager that closed without stopping it, its record then
    set to ``state`` as if the service had died in it."""
    first = await managers()
    session = await start(first, "kept")
    await managers.close(first)
    assert session.record.jupyter_pid in world.alive, "closing the service stopped its session"
    restore(settings, {**stored(settings)[session.id], "state": state, **changes})
    return session.id


async def test_a_ready_session_is_adopted_as_it_runs(managers, settings, world):
    session_id = await _left_by_a_first_service(managers, settings, world, "ready")
    pids = {r for r in (stored(settings)[session_id]["jupyter_pid"],)}
    second = await managers()
    adopted = second.get(session_id)
    assert adopted.state is SessionState.ready and adopted.record.restarts == 0
    assert adopted.record.jupyter_pid in pids and adopted.healthy
    assert adopted.watchdog.running


async def test_a_ready_session_with_a_dead_part_is_recovered(managers, settings, world):
    session_id = await _left_by_a_first_service(managers, settings, world, "ready")
    world.kill(stored(settings)[session_id]["jupyter_pid"])
    second = await managers()
    adopted = second.get(session_id)
    await adopted.recovery.task  # brought back as after a crash
    assert adopted.state is SessionState.ready and adopted.record.restarts == 1
    assert adopted.record.jupyter_pid in world.alive
    # what is left of a broken display is not given time to close itself; the new browser
    # starts on the lab (logged in by its profile's cookies)
    display = adopted.parts.display
    assert display.quits == [False] and display.opened == [True]
    assert display.start_urls == [f"{adopted.parts.jupyter.endpoint.url}/lab"]


async def test_a_recovered_session_has_its_kernels_looked_at_again_at_once(managers, settings, world, monkeypatch):
    """Its Jupyter server may be a new one, and a watcher waiting on the old one's answer would
    wait in vain: the session's ready again wakes it (once, not at the first ready)."""
    from keepalive.engine.activity import ActivityWatcher

    woken = []
    monkeypatch.setattr(ActivityWatcher, "wake", lambda watcher: woken.append(watcher.session.id))
    session_id = await _left_by_a_first_service(managers, settings, world, "ready")
    world.kill(stored(settings)[session_id]["jupyter_pid"])
    second = await managers()
    adopted = second.get(session_id)
    await adopted.recovery.task
    assert adopted.state is SessionState.ready and adopted.record.restarts == 1
    assert woken == [session_id]


async def test_a_recovering_session_becomes_ready_through_the_table(managers, settings, world):
    session_id = await _left_by_a_first_service(managers, settings, world, "recovering")
    second = await managers()
    assert second.get(session_id).state is SessionState.ready
    assert stored(settings)[session_id]["state"] == "ready"


async def test_a_failed_session_stays_failed_and_can_be_deleted(managers, settings, world):
    session_id = await _left_by_a_first_service(managers, settings, world, "failed", error="gave up")
    jupyter_pid = stored(settings)[session_id]["jupyter_pid"]
    second = await managers()
    adopted = second.get(session_id)
    assert adopted.state is SessionState.failed and adopted.record.error == "gave up"
    assert not adopted.watchdog.running
    assert jupyter_pid in world.alive  # its kernels keep computing until the DELETE
    await second.delete(session_id)
    assert jupyter_pid not in world.alive and stored(settings) == {}


async def test_a_session_left_starting_is_failed_and_its_parts_reaped(managers, settings, world):
    session_id = await _left_by_a_first_service(managers, settings, world, "starting")
    second = await managers()
    adopted = second.get(session_id)
    assert adopted.state is SessionState.failed and "ended while the session started" in adopted.record.error
    assert world.alive == set()
    assert not (settings.sessions_dir / session_id).exists()
    await second.delete(session_id)
    assert second.list() == [] and stored(settings) == {}


@pytest.mark.parametrize("state, name", [("stopping", "kept"), ("pooled", "_pool-abc"), ("starting", "_pool-abc")])
async def test_a_stop_left_unfinished_and_a_pool_session_are_stopped(managers, settings, world, state, name):
    session_id = await _left_by_a_first_service(managers, settings, world, state, name=name)
    second = await managers()
    with pytest.raises(SessionNotFound):
        second.get(session_id)
    assert world.alive == set() and stored(settings) == {}
    assert not (settings.sessions_dir / session_id).exists()
    assert (settings.homes_dir / "kept").is_dir(), "a home outlives its session"


async def test_a_session_that_cannot_be_adopted_is_listed_failed_and_deletable(managers, settings, world):
    session_id = await _left_by_a_first_service(managers, settings, world, "ready")
    world.fail.add("adopt")
    second = await managers()
    adopted = second.get(session_id)
    assert adopted.state is SessionState.failed
    assert adopted.record.error.startswith("cannot be adopted: the fake display's record is unreadable")
    await second.delete(session_id)
    assert second.list() == [] and stored(settings) == {}


async def test_a_closing_service_leaves_its_sessions_running(managers, settings, world):
    manager = await managers()
    session = await start(manager, "stays")
    await managers.close(manager)
    assert session.state is SessionState.ready and session.record.jupyter_pid in world.alive
    assert stored(settings)[session.id]["state"] == "ready"


async def test_a_closing_service_told_so_stops_its_sessions(managers, settings, world):
    manager = await managers()
    session = await start(manager, "goes")
    await managers.close(manager, stop_sessions=True)
    assert session.state is SessionState.stopped and world.alive == set()
    assert stored(settings) == {}
    assert (settings.homes_dir / "goes").is_dir()


async def test_who_may_drive_a_sessions_browser(settings, world):
    manager = SessionManager(settings, api_token="the-token", parts=world.factory, playwright=world.playwright)
    await manager.open()
    try:
        one, other = await start(manager, "one"), await start(manager, "other")
        key, ttl = manager.create_cdp_link(one.id)
        assert ttl == settings.cdp_link_ttl
        assert manager._cdp_guest(one.id, key) == "link #1"
        assert manager._cdp_guest(other.id, key) is None  # a link opens its own session only
        assert manager._cdp_guest(other.id, "the-token") == "api token"
        assert manager._cdp_guest(one.id, None) is None
        assert manager._cdp_socket(one.id) == one.layout.cdp_socket
        await manager.delete(one.id)
        assert manager._cdp_socket(one.id) is None
    finally:
        await manager.close(stop_sessions=True)


async def test_a_pool_session_given_up_mid_start_leaves_room_and_nothing_behind(tmp_path, world, monkeypatch):
    """MAX_SESSIONS 1 and a pool of 1: a user's start gives up the pool session being started;
    its start cleans up and the pool forgets it, so the user's session fits."""
    from keepalive.engine import pool as pool_module

    monkeypatch.setattr(pool_module.WarmPool, "_memory_left", staticmethod(lambda: True))
    template = tmp_path / "template.tar.gz"
    template.write_bytes(b"")
    settings = Settings(state_dir=tmp_path / "state", api_token="t", profile_template=template,
                        session_users=False, probe_interval=3600, max_sessions=1, pool_size=1)
    manager = SessionManager(settings, parts=world.factory, playwright=world.playwright)
    world.hold = asyncio.Event()
    await manager.open()
    try:
        await world.waiting.wait()  # the pool's session is half started
        (filling,) = manager.pool.sessions()
        world.hold = None  # the user's start does not wait; the pool's still does, until given up
        session = await start(manager, "user")
        assert filling.state is SessionState.failed and manager.registry.get(filling.id) is None
        assert manager.list() == [session] and session.state is SessionState.ready
        assert filling.id not in stored(settings)
    finally:
        await manager.close(stop_sessions=True)


async def test_a_record_this_keepalive_cannot_read_is_left_alone(managers, settings, world):
    session_id = await _left_by_a_first_service(managers, settings, world, "ready")
    restore(settings, {"id": "0123456789ab", "name": "odd", "state": "ready"})  # no screen size
    second = await managers()
    assert [s.id for s in second.list()] == [session_id]
    assert set(stored(settings)) == {session_id, "0123456789ab"}


async def test_a_jupyter_restart_on_request_is_a_new_server_not_a_crash(managers):
    """The Jupyter server alone is replaced; the session goes recovering and back to ready, with
    no restart counted (the crash policy's budget is for crashes). A session that is not ready
    is refused, and stays as it is."""
    manager = await managers()
    session = await start(manager, "upgrade")
    before = session.parts.jupyter.pid
    browser = session.pids()["browser"]
    states: list[str] = []
    session.state_observers.append(lambda s: states.append(s.state.value))

    await session.recovery.restart_jupyter()

    assert session.state is SessionState.ready
    assert session.parts.jupyter.pid not in (None, before)
    assert session.pids()["browser"] == browser
    assert session.record.restarts == 0
    assert states == ["recovering", "ready"]

    await manager.delete(session.id)
    with pytest.raises(InvalidTransition):
        await session.recovery.restart_jupyter()
    assert session.state is SessionState.stopped


async def test_a_recovery_whose_jupyter_dies_meanwhile_is_retried_not_failed(managers, world, monkeypatch):
    """Chromium and the Jupyter server SIGKILLed together: the recovery for the browser opens
    its new page while the server it logs in to is gone. That attempt fails; the next one,
    a restart of its own, brings both back (it once left the session failed)."""
    monkeypatch.setattr(watchdog, "RESTART_BACKOFF", (0.0, 0.0, 0.0))
    session = await start(await managers(), "alice")
    old_jupyter = session.record.jupyter_pid
    world.kill(session.record.browser_pid)
    world.hold, world.fail = asyncio.Event(), {"page"}
    session._part_lost("browser exited with code -9")
    await world.waiting.wait()  # the new display opens its page...
    world.kill(old_jupyter)  # ...as the Jupyter server it logs in to dies
    world.hold.set()
    await session.recovery.task
    assert session.state is SessionState.ready and session.record.error is None
    assert session.record.restarts == 2
    assert session.record.jupyter_pid != old_jupyter and session.parts.jupyter.healthy


async def test_a_recovery_that_keeps_failing_gives_up_and_keeps_the_kernels(managers, world, monkeypatch):
    monkeypatch.setattr(watchdog, "RESTART_BACKOFF", (0.0, 0.0, 0.0))
    session = await start(await managers(), "alice")
    jupyter = session.record.jupyter_pid
    world.kill(session.record.browser_pid)
    world.fail_always.add("page")
    session._part_lost("browser exited with code -9")
    await session.recovery.task
    assert session.state is SessionState.failed and session.record.restarts == watchdog.MAX_RESTARTS
    assert session.record.error == ("recovery after 'browser exited with code -9' failed: "
                                    "the fake page failed to start")
    assert jupyter in world.alive  # the computation goes on until a DELETE
