"""One small class that owns one child process: start, ready, terminate, kill.

The child gets its own process group (so a terminate reaches everything it spawned),
its output goes to a log file in the session folder, and it is asked to die with the
service (PR_SET_PDEATHSIG) so a killed service leaves no orphan behind. A child that
exits while nobody asked it to is reported through ``on_exit``; one that was stopped
on purpose is not, and is never restarted from here.
"""

from __future__ import annotations

import asyncio
import ctypes
import logging
import os
import signal
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

log = logging.getLogger(__name__)

_PR_SET_PDEATHSIG = 1


def _die_with_parent() -> None:  # pragma: no cover - runs in the child between fork and exec
    try:
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)
    except OSError:
        pass


class ChildFailed(RuntimeError):
    """A child exited or never became ready; the message carries the end of its log."""


def tail(path: Path, lines: int = 15) -> str:
    """The last ``lines`` lines of a log file, minus blank lines; '' if there is none."""
    try:
        with path.open("rb") as handle:
            handle.seek(0, os.SEEK_END)
            handle.seek(max(0, handle.tell() - 16_384))
            text = handle.read().decode("utf-8", "replace")
    except OSError:
        return ""
    kept = [line for line in text.splitlines() if line.strip()]
    return "\n".join(kept[-lines:])


class ChildProcess:
    def __init__(
        self,
        name: str,
        argv: list[str],
        *,
        env: dict[str, str],
        cwd: Path,
        log_path: Path,
        on_exit: Callable[[ChildProcess, int], None] | None = None,
    ) -> None:
        self.name = name
        self.argv = argv
        self.env = env
        self.cwd = cwd
        self.log_path = log_path
        self.on_exit = on_exit
        self._process: asyncio.subprocess.Process | None = None
        self._watcher: asyncio.Task[None] | None = None
        self._stopping = False

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process else None

    @property
    def returncode(self) -> int | None:
        return self._process.returncode if self._process else None

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.returncode is None

    async def start(self) -> None:
        if self._process is not None:
            raise RuntimeError(f"{self.name} was started already")
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with self.log_path.open("ab") as log_file:
            self._process = await asyncio.create_subprocess_exec(
                *self.argv,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=log_file,
                stderr=asyncio.subprocess.STDOUT,
                env=self.env,
                cwd=self.cwd,
                start_new_session=True,
                preexec_fn=_die_with_parent,
            )
        self._watcher = asyncio.create_task(self._watch(), name=f"watch-{self.name}-{self.pid}")

    async def _watch(self) -> None:
        assert self._process is not None
        code = await self._process.wait()
        if not self._stopping and self.on_exit is not None:
            self.on_exit(self, code)

    async def wait_ready(
        self,
        probe: Callable[[], Awaitable[bool]],
        timeout: float,
        what: str = "ready",
        interval: float = 0.2,
    ) -> None:
        """Poll ``probe`` until it answers True; fail early if the child dies first."""
        deadline = time.monotonic() + timeout
        while True:
            if not self.running:
                raise ChildFailed(
                    f"{self.name} exited with code {self.returncode} before it was {what}" + self._tail_suffix()
                )
            try:
                if await probe():
                    return
            except Exception as error:  # a probe that raises is simply "not yet"
                log.debug("%s probe: %s", self.name, error)
            if time.monotonic() >= deadline:
                raise ChildFailed(f"{self.name} was not {what} after {timeout:.0f} s" + self._tail_suffix())
            await asyncio.sleep(interval)

    def _tail_suffix(self) -> str:
        text = tail(self.log_path)
        return f"; last lines of its log:\n{text}" if text else ""

    async def terminate(self, timeout: float = 5.0) -> int | None:
        """SIGTERM the child's process group, SIGKILL it if it is still there after ``timeout``."""
        self._stopping = True
        if self._process is None:
            return None
        if self._process.returncode is None:
            self._signal_group(signal.SIGTERM)
            try:
                await asyncio.wait_for(self._process.wait(), timeout)
            except TimeoutError:
                log.warning("%s (pid %s) ignored SIGTERM for %.0f s; killing it", self.name, self.pid, timeout)
                self.kill()
                await self._process.wait()
        # The leader is gone; make sure nothing else of its group lingers.
        self._signal_group(signal.SIGKILL)
        if self._watcher is not None:
            await asyncio.gather(self._watcher, return_exceptions=True)
        return self._process.returncode

    def kill(self) -> None:
        self._stopping = True
        self._signal_group(signal.SIGKILL)

    def _signal_group(self, signum: int) -> None:
        if self._process is None:
            return
        try:
            os.killpg(self._process.pid, signum)
        except (ProcessLookupError, PermissionError):
            pass
