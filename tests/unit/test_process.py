"""ChildProcess: start, readiness, crash reporting, terminate of the whole group."""

from __future__ import annotations

import os
import signal
import subprocess
import sys

import psutil
import pytest

from keepalive.engine.process import ChildFailed, ChildProcess
from tests.waiting import wait_until, wait_until_async


def child(tmp_path, code: str, on_exit=None) -> ChildProcess:
    return ChildProcess(
        "probe",
        [sys.executable, "-c", code],
        env=dict(os.environ),
        cwd=tmp_path,
        log_path=tmp_path / "logs" / "probe.log",
        on_exit=on_exit,
    )


async def test_ready_then_terminate_kills_the_whole_group(tmp_path):
    marker = tmp_path / "ready"
    code = (
        "import subprocess, sys, time, pathlib\n"
        "subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(300)'])\n"
        f"pathlib.Path({str(marker)!r}).touch()\n"
        "time.sleep(300)\n"
    )
    exits = []
    process = child(tmp_path, code, on_exit=lambda c, rc: exits.append(rc))
    await process.start()

    async def marker_exists() -> bool:
        return marker.exists()

    await process.wait_ready(marker_exists, timeout=30)
    group = [p for p in psutil.process_iter() if _pgid(p) == process.pid]
    assert len(group) == 2
    await process.terminate(timeout=5)
    assert not process.running
    await wait_until_async("the whole group to end",
                           lambda: all(not p.is_running() or p.status() == psutil.STATUS_ZOMBIE for p in group))
    assert exits == [], "a deliberate stop is not a crash"


def _pgid(process: psutil.Process) -> int | None:
    try:
        return os.getpgid(process.pid)
    except (ProcessLookupError, psutil.Error):
        return None


async def test_crash_is_reported_through_on_exit(tmp_path):
    exits = []
    process = child(tmp_path, "import sys; sys.exit(7)", on_exit=lambda c, rc: exits.append((c.name, rc)))
    await process.start()
    await wait_until_async("the exit to be reported", lambda: exits)
    assert exits == [("probe", 7)]


async def test_child_that_dies_before_ready_fails_with_its_log(tmp_path):
    process = child(tmp_path, "import sys; print('bad config: port in use', flush=True); sys.exit(3)")
    await process.start()

    async def never() -> bool:
        return False

    with pytest.raises(ChildFailed) as failure:
        await process.wait_ready(never, timeout=30)
    assert "exited with code 3" in str(failure.value)
    assert "bad config: port in use" in str(failure.value)


async def test_readiness_timeout(tmp_path):
    process = child(tmp_path, "import time; time.sleep(300)")
    await process.start()

    async def never() -> bool:
        return False

    with pytest.raises(ChildFailed, match="not ready after"):
        await process.wait_ready(never, timeout=0.5)
    await process.terminate()


async def test_sigterm_ignored_gets_sigkill(tmp_path):
    marker = tmp_path / "armed"
    code = (
        "import signal, time, pathlib\n"
        "signal.signal(signal.SIGTERM, signal.SIG_IGN)\n"
        f"pathlib.Path({str(marker)!r}).touch()\n"
        "time.sleep(300)\n"
    )
    process = child(tmp_path, code)
    await process.start()

    async def armed() -> bool:
        return marker.exists()

    await process.wait_ready(armed, timeout=30)
    code = await process.terminate(timeout=0.5)
    assert code == -9


def _ends_when_asked(tmp_path) -> tuple[str, object, object]:
    """A child that exits with code 0 once asked (a file appears), and what asks it."""
    armed, asked = tmp_path / "armed", tmp_path / "asked"
    code = (
        "import pathlib, sys, time\n"
        f"pathlib.Path({str(armed)!r}).touch()\n"
        f"while not pathlib.Path({str(asked)!r}).exists(): time.sleep(0.01)\n"
        "sys.exit(0)\n"
    )

    async def is_armed() -> bool:
        return armed.exists()

    async def ask() -> None:
        asked.touch()

    return code, is_armed, ask


async def test_a_child_asked_to_end_first_ends_by_itself(tmp_path):
    code, is_armed, ask = _ends_when_asked(tmp_path)
    exits = []
    process = child(tmp_path, code, on_exit=lambda c, rc: exits.append(rc))
    await process.start()
    await process.wait_ready(is_armed, timeout=30)
    assert await process.terminate(timeout=30, ask_first=ask) == 0, "it was signalled instead of asked"
    assert exits == [], "a deliberate stop is not a crash"


async def test_a_child_that_does_not_end_when_asked_is_terminated(tmp_path):
    code, is_armed, _ = _ends_when_asked(tmp_path)
    process = child(tmp_path, code)
    await process.start()
    await process.wait_ready(is_armed, timeout=30)

    async def ask_in_vain() -> None:
        pass

    assert await process.terminate(timeout=0.3, ask_first=ask_in_vain) == -signal.SIGTERM

    async def ask_and_fail() -> None:
        raise RuntimeError("no connection to ask through")

    process = child(tmp_path, code)
    await process.start()
    await process.wait_ready(is_armed, timeout=30)
    assert await process.terminate(timeout=30, ask_first=ask_and_fail) == -signal.SIGTERM


async def test_an_adopted_process_is_watched_and_its_crash_reported(tmp_path):
    """A process another service started (not our child) is watched through its pidfd."""
    stranger = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(300)"], start_new_session=True)
    try:
        started = psutil.Process(stranger.pid).create_time()
        exits = []
        adopted = ChildProcess.adopt("stranger", stranger.pid, started, log_path=tmp_path / "x.log",
                                     on_exit=lambda c, rc: exits.append(c.name))
        assert adopted.running
        os.kill(stranger.pid, signal.SIGKILL)
        await wait_until_async("the exit to be reported", lambda: exits)
        assert exits == ["stranger"] and not adopted.running
    finally:
        stranger.kill()
        stranger.wait()


async def test_a_recycled_pid_is_never_adopted(tmp_path):
    """Same pid, another start time: not the process that was recorded."""
    me = psutil.Process()
    adopted = ChildProcess.adopt("impostor", me.pid, me.create_time() - 3600, log_path=tmp_path / "x.log")
    assert not adopted.running
    assert not ChildProcess.adopt("gone", None, None, log_path=tmp_path / "x.log").running


async def test_a_detached_child_keeps_running(tmp_path):
    process = child(tmp_path, "import time; time.sleep(300)", on_exit=lambda c, rc: pytest.fail("reported"))
    await process.start()
    process.detach()
    try:
        assert psutil.Process(process.pid).is_running()
        assert os.getpgid(process.pid) == process.pid and os.getsid(process.pid) == process.pid
    finally:
        os.killpg(process.pid, signal.SIGKILL)


def test_a_start_time_read_across_a_boot_time_flip_is_still_the_same_process(monkeypatch):
    """Two services may read the boot time a second apart (a clock adjustment between them):
    the same process then starts exactly one second earlier or later; anything else is another."""
    from keepalive.engine import process

    monkeypatch.setattr(process, "start_time", lambda pid: 1000.0)
    monkeypatch.setattr(process, "_zombie", lambda pid: False)
    assert process.same_process(42, 1000.01)
    assert process.same_process(42, 999.0) and process.same_process(42, 1001.02)
    assert not process.same_process(42, 1000.5) and not process.same_process(42, 1002.0)
    assert not process.same_process(None, 1000.0)


def test_a_zombie_is_not_the_process_it_was():
    """A SIGKILLed service's children are zombies until init collects them: a new service must
    not take them for running parts (it once adopted such a session instead of restoring it)."""
    from keepalive.engine import process

    child = subprocess.Popen(["sleep", "60"])
    try:
        started = process.start_time(child.pid)
        assert process.same_process(child.pid, started)
        child.kill()
        wait_until("the child to be a zombie", lambda: psutil.Process(child.pid).status() == psutil.STATUS_ZOMBIE)
        assert process.start_time(child.pid) == started  # the kernel still has it, with its start
        assert not process.same_process(child.pid, started)
    finally:
        child.kill()
        child.wait()
