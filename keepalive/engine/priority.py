"""Scheduling priority of a session's processes: a pool session is started at a low one.

A session made ahead of demand must not slow the sessions people are using: its processes
(xpra, Xvfb, Chromium, the Jupyter server) start under ``nice``, and inherit that niceness in
every child and thread they make. Once a user takes the session, every thread of every one of
its processes goes back to the normal priority (Linux keeps a niceness per thread, so the
process's main thread alone would not do).

Going back up needs root, or an RLIMIT_NICE that allows it; a service that could not undo the
low priority starts its pool sessions at the normal one instead.
"""

from __future__ import annotations

import logging
import os
import resource
import shutil
from collections.abc import Iterable

log = logging.getLogger(__name__)

#: Niceness of a pool session's processes while it is being started and while it waits.
POOL_NICENESS = 10
#: What an unprivileged process may lower its niceness to is ``20 - RLIMIT_NICE``.
_NICE_LIMIT_OFFSET = 20


def can_restore_priority() -> bool:
    """Whether this service may bring a process back from POOL_NICENESS to 0."""
    if os.geteuid() == 0:
        return True
    soft, _ = resource.getrlimit(resource.RLIMIT_NICE)
    return soft == resource.RLIM_INFINITY or soft >= _NICE_LIMIT_OFFSET


def niced(argv: list[str], niceness: int) -> list[str]:
    """``argv`` run at ``niceness`` from its first instruction (``nice`` execs it: same pid)."""
    if niceness == 0:
        return argv
    return [shutil.which("nice") or "/usr/bin/nice", "-n", str(niceness), *argv]


def set_niceness(pids: Iterable[int], niceness: int) -> int:
    """Give every thread of every process in ``pids`` this niceness; returns how many failed.

    A thread or process that ends meanwhile is not a failure; one we may not change is, and
    is logged.
    """
    failed = 0
    for pid in pids:
        try:
            threads = os.listdir(f"/proc/{pid}/task")
        except OSError:
            continue  # gone
        for tid in threads:
            try:
                os.setpriority(os.PRIO_PROCESS, int(tid), niceness)
            except ProcessLookupError:
                continue
            except PermissionError as error:
                failed += 1
                log.warning("cannot set the niceness of thread %s of process %s to %s: %s",
                            tid, pid, niceness, error)
    return failed
