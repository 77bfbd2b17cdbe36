"""Finds and ends every process of a session, wherever it went.

Process groups are not enough: Chromium's crashpad handler double-forks to PID 1.
Two marks find them all: every child of a session inherits ``KA_SESSION_ID``
in its environment, and the processes Chromium forks from its zygote (whose
environment Chromium empties) name the session's profile folder on their command line.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Collection
from pathlib import Path

import psutil

from keepalive.engine.layout import SESSION_MARKER

log = logging.getLogger(__name__)


def belongs_to(process: psutil.Process, session_id: str, folder: Path | None, by_marker: bool = True) -> bool:
    try:
        if by_marker and process.environ().get(SESSION_MARKER) == session_id:
            return True
        if folder is not None:
            mark = str(folder) + os.sep
            return any(mark in arg for arg in process.cmdline())
    except (psutil.Error, OSError):
        pass
    return False


def session_processes(session_id: str, folder: Path | None = None, by_marker: bool = True) -> list[psutil.Process]:
    """Every live process of the session: by environment marker, or naming ``folder`` in its argv.

    ``by_marker=False``: only those naming ``folder`` (the display's: Xvfb, Chromium and its
    helpers). Every process a user starts from a notebook or terminal carries the marker too.
    """
    me = os.getpid()
    return [p for p in psutil.process_iter() if p.pid != me and belongs_to(p, session_id, folder, by_marker)]


def with_descendants(pid: int | None) -> set[int]:
    """``pid`` and every process below it (empty if it is gone)."""
    if pid is None:
        return set()
    try:
        root = psutil.Process(pid)
        return {pid, *(child.pid for child in root.children(recursive=True))}
    except psutil.Error:
        return set()


def reap(
    session_id: str,
    folder: Path | None = None,
    grace: float = 3.0,
    keep: Callable[[], Collection[int]] = frozenset,
    by_marker: bool = True,
) -> list[int]:
    """SIGTERM what is left of the session but what ``keep()`` says, SIGKILL what outlives
    ``grace``; returns the PIDs hit.

    ``keep`` is asked after the listing: a process that starts meanwhile (a Jupyter server
    started beside a display that is being stopped) is either not listed or already known to it.
    """
    listed = session_processes(session_id, folder, by_marker)
    kept = keep() if listed else ()
    processes = [p for p in listed if p.pid not in kept]
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


