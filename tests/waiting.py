"""The one way a test waits: poll a condition until it holds, or fail naming what was awaited.

Every test that polls uses these, so that a timeout always reads the same way ("timed out after
30 s waiting for <what> (last: <value>)") and no test carries a loop of its own.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Protocol, TypeVar

T = TypeVar("T")


class Polled(Protocol):
    """A child process (``subprocess.Popen`` or alike): ``poll()`` is its exit code, or None."""

    def poll(self) -> int | None: ...


class WaitTimeout(AssertionError):
    """A condition did not hold in time (an AssertionError: pytest reports it as a failed check)."""


def _failure(what: str, timeout: float, last: object, describe: Callable[[], object] | None) -> WaitTimeout:
    try:
        detail = describe() if describe else repr(last)
    except Exception as error:  # noqa: BLE001 - the timeout is the news, not the description
        detail = f"(describing it failed: {error!r})"
    return WaitTimeout(f"timed out after {timeout:g} s waiting for {what} (last: {detail})")


def wait_until(
    what: str,
    condition: Callable[[], T],
    timeout: float = 60,
    every: float = 0.2,
    describe: Callable[[], object] | None = None,
    process: Polled | None = None,
    pause: Callable[[float], object] = time.sleep,
) -> T:
    """Call ``condition`` until it returns something true, and return that.

    Fails with :class:`WaitTimeout` after ``timeout`` seconds, naming ``what`` and the last value
    (or what ``describe`` says, when the condition's own answer is only ``False``). The condition
    is always called once more at the deadline, so a slow first call never loses the last look.
    ``process``: the child that should bring the condition about; its exit fails the wait at once
    (an AssertionError naming its exit code and what ``describe`` says). ``pause``: how to spend
    ``every`` seconds between looks (e.g. running an event loop that is not running by itself).
    """
    deadline = time.monotonic() + timeout
    while True:
        last = condition()
        if last:
            return last
        if process is not None and process.poll() is not None:
            detail = describe() if describe else repr(last)
            raise AssertionError(f"the process exited with {process.poll()} while waiting for {what}: {detail}")
        if time.monotonic() >= deadline:
            raise _failure(what, timeout, last, describe)
        pause(every)


async def wait_until_async(
    what: str,
    condition: Callable[[], T],
    timeout: float = 10,
    every: float = 0.02,
    describe: Callable[[], object] | None = None,
) -> T:
    """:func:`wait_until` inside an event loop: sleeps with ``asyncio.sleep``, so what the test
    waits for (tasks on the same loop) runs meanwhile."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        last = condition()
        if last:
            return last
        if loop.time() >= deadline:
            raise _failure(what, timeout, last, describe)
        await asyncio.sleep(every)


def running(loop: asyncio.AbstractEventLoop) -> Callable[[float], object]:
    """A ``pause`` for :func:`wait_until` that runs ``loop`` meanwhile: a loop a test drives by
    hand (pytest-jupyter's) makes no progress while the test sleeps."""
    return lambda seconds: loop.run_until_complete(asyncio.sleep(seconds))
