"""A Jupyter server that is told to stop, stops: the idle AnyIO worker threads are let go.

jupyter_server runs file operations in AnyIO's worker threads. They are not daemon threads,
and AnyIO ends them only when the event loop's root task completes, which never happens when
the server stops its loop on SIGTERM: Python then waits for them at exit forever (a server
that saved or uploaded a file hung after "Shutting down N extensions" until it was SIGKILLed;
the service waits 5 s before it does that, on every stop and every restart of the server).
Just before Python joins its threads, each AnyIO worker is told to end once its current job
is done; a worker that is not AnyIO's, or an AnyIO that no longer has the same shape, is left
as it was.
"""

from __future__ import annotations

import threading

#: The name AnyIO gives its worker threads.
ANYIO_WORKER = "AnyIO worker thread"

_installed = False


def release_anyio_workers() -> int:
    """Tell every AnyIO worker thread to end after its current job; how many were told."""
    told = 0
    for thread in threading.enumerate():
        stop = getattr(thread, "stop", None)
        if thread.name == ANYIO_WORKER and not thread.daemon and callable(stop):
            try:
                stop()
            except Exception:  # noqa: BLE001 - an AnyIO of another shape: nothing worse than before
                continue
            told += 1
    return told


def install() -> None:
    """Release AnyIO's workers when the interpreter shuts down (once per process).

    ``threading._register_atexit`` runs before Python joins non-daemon threads, unlike
    ``atexit`` (which runs after, too late); concurrent.futures relies on it the same way.
    """
    global _installed
    register = getattr(threading, "_register_atexit", None)
    if _installed or register is None:
        return
    register(release_anyio_workers)
    _installed = True
