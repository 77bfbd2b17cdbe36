"""keepalive.engine.priority: a pool session's processes at a low priority, and back."""

from __future__ import annotations

import os
import resource
import subprocess
import sys

import pytest

from keepalive.engine import priority
from tests.waiting import wait_until

# a process with a second thread, both alive until stdin closes
TWO_THREADS = "import sys, threading; threading.Thread(target=sys.stdin.read).start(); sys.stdin.read()"


def thread_nicenesses(pid: int) -> list[int]:
    return [os.getpriority(os.PRIO_PROCESS, int(tid)) for tid in os.listdir(f"/proc/{pid}/task")]


@pytest.fixture
def two_threads():
    process = subprocess.Popen(
        priority.niced([sys.executable, "-c", TWO_THREADS], 5), stdin=subprocess.PIPE
    )
    wait_until("the second thread to start", lambda: len(os.listdir(f"/proc/{process.pid}/task")) >= 2, timeout=10,
               every=0.01, process=process)
    yield process
    process.stdin.close()
    process.wait(10)


def test_niced_runs_the_command_itself_at_that_niceness(two_threads):
    assert os.readlink(f"/proc/{two_threads.pid}/exe") == os.path.realpath(sys.executable), "nice did not exec"
    assert thread_nicenesses(two_threads.pid) == [5, 5]


def test_niceness_zero_leaves_the_command_alone():
    assert priority.niced(["xpra", "start"], 0) == ["xpra", "start"]


def test_every_thread_gets_the_new_niceness(two_threads):
    assert priority.set_niceness([two_threads.pid], 7) == 0
    assert thread_nicenesses(two_threads.pid) == [7, 7]


@pytest.mark.skipif(not priority.can_restore_priority(), reason="needs root or RLIMIT_NICE")
def test_back_to_normal(two_threads):
    assert priority.set_niceness([two_threads.pid], 0) == 0
    assert thread_nicenesses(two_threads.pid) == [0, 0]


def test_a_process_that_is_gone_is_not_a_failure():
    process = subprocess.Popen([sys.executable, "-c", "pass"])
    process.wait(10)
    assert priority.set_niceness([process.pid], 3) == 0


def test_restoring_needs_root_or_a_nice_limit(monkeypatch):
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    monkeypatch.setattr(resource, "getrlimit", lambda which: (0, 0))
    assert not priority.can_restore_priority()
    monkeypatch.setattr(resource, "getrlimit", lambda which: (20, 20))
    assert priority.can_restore_priority()
    monkeypatch.setattr(os, "geteuid", lambda: 0)
    monkeypatch.setattr(resource, "getrlimit", lambda which: (0, 0))
    assert priority.can_restore_priority()
