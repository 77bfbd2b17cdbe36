"""Restoring sessions whose every process ended (keepalive.engine.restore): the decision, the
service's heartbeat, what the user is told; and, with stand-in parts (tests/unit/fake_parts.py),
a second manager that restores, recovers, keeps failed, or forgets what a first one left."""

from __future__ import annotations

import asyncio
import logging
import stat
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from types import SimpleNamespace

import pytest

from keepalive.engine.manager import SessionManager, SessionNotFound
from keepalive.engine.restore import Beat, Ending, Heartbeat, Restorer, Way, anything_runs, decide
from keepalive.models import SessionCreate, SessionState
from keepalive.settings import Settings
from tests.unit.fake_parts import FakeWorld
from tests.unit.test_activity import Receiver
from tests.unit.test_manager import restore as write_record
from tests.unit.test_manager import stored
from tests.waiting import wait_until_async


@pytest.mark.parametrize("state, runs, enabled, way", [
    ("ready", False, True, Way.restore),  # all gone: started again, the user told
    ("recovering", False, True, Way.restore),
    ("ready", True, True, Way.adopt),  # some part still runs: adopted, what died recovered
    ("recovering", True, False, Way.adopt),
    ("ready", False, False, Way.forget),  # RESTORE_AFTER_REBOOT=false
    ("failed", False, True, Way.adopt),  # kept failed, as ever: nothing restarts a session that gave up
    ("stopping", False, True, Way.adopt),  # stopped on purpose: the stop is finished
    ("starting", False, True, Way.adopt),  # failed: the service died in its start
    ("pooled", False, True, Way.adopt),  # nobody's: stopped
])
def test_the_way_for_a_session_found_in_the_store(state, runs, enabled, way):
    assert decide(state, runs, enabled) is way


def test_the_heartbeat_is_the_services_own_file(tmp_path):
    clock = iter([1000.0, 1010.0])
    heart = Heartbeat(tmp_path, clock=lambda: next(clock), boot_id=lambda: "boot-1")
    assert heart.last() is None
    heart.beat()
    assert heart.last() == Beat(1000.0, "boot-1")
    assert stat.S_IMODE(heart.path.stat().st_mode) == 0o600
    heart.beat()
    assert heart.last() == Beat(1010.0, "boot-1")
    heart.path.write_text("{not json")
    assert heart.last() is None  # a torn or foreign file: not known, never a crash


async def test_a_stopping_service_beats_once_more(tmp_path):
    times = iter([5.0, 6.0])
    heart = Heartbeat(tmp_path, interval=3600, clock=lambda: next(times), boot_id=lambda: "b")
    heart.start()
    await wait_until_async("the first beat", lambda: heart.last() is not None)
    await heart.stop()
    assert heart.last() == Beat(6.0, "b")


def at(text: str) -> float:
    return datetime.fromisoformat(text).replace(tzinfo=UTC).timestamp()


def test_what_the_user_reads_after_a_reboot_and_after_a_kill():
    reboot = Ending(last_alive_at=at("2026-12-03T20:41:10"), machine_restarted_at=at("2026-12-03T20:43:02"),
                    found_gone_at=at("2026-12-03T20:43:30"))
    told = reboot.restored(at("2026-12-03T20:43:45"))
    assert told.reason == "machine restarted" and told.new_kernels
    assert told.down_by == datetime(2026, 12, 3, 20, 43, 2, tzinfo=UTC)
    assert told.message.startswith("The kernel restarted: the machine went down after 2026-12-03 20:41:10 UTC "
                                   "and was up again at 2026-12-03 20:43:02 UTC")
    killed = Ending(last_alive_at=None, machine_restarted_at=None, found_gone_at=at("2026-12-03T21:00:00"))
    told = killed.restored(at("2026-12-03T21:00:12"))
    assert told.reason == "processes ended" and told.last_alive_at is None
    assert told.down_by == datetime(2026, 12, 3, 21, 0, tzinfo=UTC)
    assert "every process of this session ended at a time not known" in told.message


def a_session(containment_pids=(), mode="cgroup", **record):
    """What anything_runs and Restorer.ending read of a session: its record and its containment."""
    fields = dict.fromkeys(["jupyter_pid", "jupyter_started_at", "xvfb_pid", "xvfb_started_at", "browser_pid",
                            "browser_started_at", "xpra_pid", "xpra_started_at"])
    return SimpleNamespace(id="abc", record=SimpleNamespace(**{**fields, **record}), layout=None,
                           containment=SimpleNamespace(pids=lambda: set(containment_pids), mode=mode))


def test_anything_runs_asks_the_recorded_parts_and_the_containment():
    alive = {(7, 70.0)}

    def runs(pid, started):
        return (pid, started) in alive

    assert anything_runs(a_session(jupyter_pid=7, jupyter_started_at=70.0), runs)
    assert not anything_runs(a_session(jupyter_pid=7, jupyter_started_at=71.0), runs)  # a reused pid
    assert anything_runs(a_session(containment_pids={1234}), runs)  # a kernel left in the cgroup
    assert not anything_runs(a_session(xvfb_pid=8, xvfb_started_at=80.0), runs)


async def test_a_session_on_a_shared_jupyter_server_is_never_restored_only_recovered(tmp_path):
    """Its kernels live in the user's own server (JUPYTER_URL, JupyterHub): nothing says they are new."""
    shared = Settings(state_dir=tmp_path, api_token="t", session_users=False, jupyter_url="http://127.0.0.1:1/?token=x")
    gone = a_session(state="ready")
    assert await Restorer(shared, runs=lambda pid, started: False).decide(gone) is Way.adopt
    own = Settings(state_dir=tmp_path, api_token="t", session_users=False)
    assert await Restorer(own, runs=lambda pid, started: False).decide(gone) is Way.restore


async def test_without_a_heartbeat_a_restart_shows_in_the_recorded_start_times(tmp_path):
    settings = Settings(state_dir=tmp_path, api_token="t", session_users=False)
    restorer = Restorer(settings, Heartbeat(tmp_path), boot_id=lambda: "b", boot_time=lambda: 5000.0)
    restorer.open()  # no beat was ever written: a service older than the heartbeat left it
    try:
        before_boot = restorer.ending(a_session(jupyter_pid=7, jupyter_started_at=4000.0))
        assert before_boot.machine_restarted_at == 5000.0 and before_boot.last_alive_at is None
        this_boot = restorer.ending(a_session(jupyter_pid=7, jupyter_started_at=5100.0))
        assert this_boot.machine_restarted_at is None
    finally:
        await restorer.close()


# -- a second manager on what a first one left ------------------------------------------------


@pytest.fixture
def world() -> FakeWorld:
    return FakeWorld()


def settings_for(tmp_path, **changes) -> Settings:
    template = tmp_path / "template.tar.gz"
    template.write_bytes(b"")
    return Settings(state_dir=tmp_path / "state", api_token="t", profile_template=template,
                    session_users=False, probe_interval=3600, host="127.0.0.1", **changes)


@asynccontextmanager
async def opened(settings: Settings, world: FakeWorld, boot_id: str = "boot-1",
                 boot_time: float = 0.0) -> AsyncIterator[tuple[SessionManager, asyncio.Queue]]:
    """A manager on the fake machine, with a queue of every event from its very start; it
    stops its sessions when left."""
    manager = SessionManager(settings, parts=world.factory, playwright=world.playwright)
    manager.restorer = Restorer(settings, Heartbeat(settings.state_dir, boot_id=lambda: boot_id),
                                boot_id=lambda: boot_id, boot_time=lambda: boot_time, runs=world.process_runs)
    with manager.events.listen(None) as queue:
        await manager.open()
        try:
            yield manager, queue
        finally:
            await manager.close(stop_sessions=True)


def drained(queue: asyncio.Queue, kind: str) -> list[dict]:
    found = []
    while not queue.empty():
        event = queue.get_nowait()
        if event.kind == kind:
            found.append(event.data)
    return found


async def left_running(settings: Settings, world: FakeWorld, webhook_url: str | None = None) -> tuple[str, set[int]]:
    """A session of a first manager, left running when it closed; its id and its parts' pids."""
    first = SessionManager(settings, parts=world.factory, playwright=world.playwright)
    await first.open()
    session = await first.create(SessionCreate(name="kept", webhook_url=webhook_url))
    await first.start(session)
    await first.close()  # its sessions keep running
    record = session.record
    return session.id, {record.jupyter_pid, record.xvfb_pid, record.browser_pid}


async def test_a_session_whose_every_process_ended_is_restored_and_the_user_told(tmp_path, world):
    settings = settings_for(tmp_path)
    hook = Receiver([])
    try:
        session_id, pids = await left_running(settings, world, webhook_url=hook.url)
        for pid in pids:  # the machine went down: nothing of it runs
            world.kill(pid)
        async with opened(settings, world, boot_id="boot-2", boot_time=at("2030-01-01T00:00:00")) as (second, events):
            restored = second.get(session_id)
            await restored.recovery.task
            assert restored.state is SessionState.ready and restored.name == "kept"
            assert restored.record.restarts == 1
            new = {restored.record.jupyter_pid, restored.record.xvfb_pid, restored.record.browser_pid}
            assert new <= world.alive and not new & pids
            display = restored.parts.display
            await wait_until_async("the notice on the kiosk page", lambda: display.notices)
            assert display.notices[0].startswith("The kernel restarted: the machine went down after ")
            (said,) = drained(events, "session_restored")
            assert said["event"] == "session_restored" and said["session"] == {"id": session_id, "name": "kept"}
            assert said["reason"] == "machine restarted" and said["new_kernels"] is True
            assert said["down_by"].startswith("2030-01-01T00:00:00")
            assert said["last_alive_at"] is not None and said["restored_at"] >= said["last_alive_at"]
            await wait_until_async("the webhook's call", lambda: hook.bodies, timeout=10)
            assert hook.bodies == [said]
    finally:
        hook.close()


async def test_a_session_with_a_part_still_running_is_recovered_without_a_notice(tmp_path, world):
    settings = settings_for(tmp_path)
    session_id, _ = await left_running(settings, world)
    world.kill(stored(settings)[session_id]["jupyter_pid"])  # the kiosk still runs
    async with opened(settings, world) as (second, events):
        adopted = second.get(session_id)
        await adopted.recovery.task
        assert adopted.state is SessionState.ready and adopted.record.restarts == 1
        assert adopted.parts.display.notices == []
        assert drained(events, "session_restored") == []


@pytest.mark.parametrize("state", ["failed", "stopping"])
async def test_a_failed_or_stopping_session_is_never_restored(tmp_path, world, state):
    settings = settings_for(tmp_path)
    session_id, pids = await left_running(settings, world)
    write_record(settings, {**stored(settings)[session_id], "state": state, "error": "gave up"})
    for pid in pids:
        world.kill(pid)
    async with opened(settings, world) as (second, events):
        if state == "failed":
            assert second.get(session_id).state is SessionState.failed
        else:
            with pytest.raises(SessionNotFound):
                second.get(session_id)
        assert world.alive == set() and drained(events, "session_restored") == []


async def test_with_restore_off_such_a_session_is_forgotten_its_home_kept(tmp_path, world, caplog):
    settings = settings_for(tmp_path, restore_after_reboot=False)
    session_id, pids = await left_running(settings, world)
    for pid in pids:
        world.kill(pid)
    with caplog.at_level(logging.WARNING, logger="keepalive.engine.restore"):
        async with opened(settings, world) as (second, events):
            with pytest.raises(SessionNotFound):
                second.get(session_id)
            assert world.alive == set() and stored(settings) == {}
            assert not (settings.sessions_dir / session_id).exists()
            assert (settings.homes_dir / "kept").is_dir()
            assert f"session {session_id} (kept): not restored (KEEPALIVE_RESTORE_AFTER_REBOOT=false)" in caplog.text
            assert drained(events, "session_restored") == []


async def test_a_restore_that_fails_is_listed_failed_and_not_announced(tmp_path, world, monkeypatch):
    """Tried as often as a crash's recovery (RestartPolicy), then failed, with no notice."""
    from keepalive.engine import watchdog

    monkeypatch.setattr(watchdog, "RESTART_BACKOFF", (0.0, 0.0, 0.0))
    settings = settings_for(tmp_path)
    session_id, pids = await left_running(settings, world)
    for pid in pids:
        world.kill(pid)
    world.fail_always.add("jupyter")  # no new Jupyter server starts
    async with opened(settings, world) as (second, events):
        restoring = second.get(session_id)
        await restoring.recovery.task
        assert restoring.state is SessionState.failed and "fake jupyter failed" in restoring.record.error
        assert restoring.record.restarts == watchdog.MAX_RESTARTS
        assert restoring.parts.display.notices == [] and drained(events, "session_restored") == []
