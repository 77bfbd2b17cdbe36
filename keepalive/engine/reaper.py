"""Finds and ends every process of a session, wherever it went.

Process groups are not enough: Chromium's crashpad handler double-forks to PID 1.
Every child of a session inherits ``KEEPALIVE_SESSION_ID`` in its environment, so
that marker finds them all.
"""

from __future__ import annotations

import logging
import os
import time

import psutil

from keepalive.engine.layout import SESSION_MARKER

log = logging.getLogger(__name__)


def session_processes(session_id: str) -> list[psutil.Process]:
    found = []
    me = os.getpid()
    for process in psutil.process_iter():
        if process.pid == me:
            continue
        try:
            if process.environ().get(SESSION_MARKER) == session_id:
                found.append(process)
        except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess, OSError):
            continue
    return found


def reap(session_id: str, grace: float = 3.0) -> list[int]:
    """SIGTERM what is left of the session, SIGKILL what outlives ``grace``; returns the PIDs hit."""
    processes = session_processes(session_id)
    if not processes:
        return []
    for process in processes:
        try:
            process.terminate()
        except psutil.NoSuchProcess:
            pass
    _, alive = psutil.wait_procs(processes, timeout=grace)
    for process in alive:
        try:
            process.kill()
        except psutil.NoSuchProcess:
            pass
    psutil.wait_procs(alive, timeout=grace)
    pids = [process.pid for process in processes]
    log.info("session %s: reaped leftover processes %s", session_id, pids)
    return pids


def wait_gone(session_id: str, timeout: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not session_processes(session_id):
            return True
        time.sleep(0.1)
    return not session_processes(session_id)
