"""One small class that owns one child process: start (or adopt), ready, terminate, kill.

The child gets its own session and process group (so a terminate reaches everything it
spawned, and a Ctrl-C in the service's terminal reaches none of it) and its output goes to a
log file in the session folder. It is *not* tied to the service's life: no parent-death
signal, and no asyncio subprocess transport (asyncio kills those when its loop goes away).
Whatever runs a session outlives a service that stops or dies; the next service adopts it.

Exits are watched through a pidfd, which works the same for the service's own children and
for processes it adopted from an earlier service (no longer its children). A child that exits
while nobody asked it to is reported through ``on_exit``; one stopped on purpose is not, and
is never restarted from here.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import subprocess
import time
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path

import psutil

from keepalive.engine.cgroups import launch_argv
from keepalive.engine.priority import niced

log = logging.getLogger(__name__)

#: Seconds of wait_ready's first pause between two looks; each next pause is twice as long.
FIRST_POLL_PAUSE = 0.01


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


def start_time(pid: int) -> float | None:
    """When ``pid`` started (psutil's create_time), or None if it is gone: with the pid, an
    identity that a recycled pid cannot fake."""
    try:
        return psutil.Process(pid).create_time()
    except psutil.Error:
        return None


def _zombie(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False  # gone: start_time says so


def same_process(pid: int | None, started: float | None) -> bool:
    """True while ``pid`` is still the process that started at ``started``, and runs: a zombie
    has ended (a killed service's children wait as zombies until init collects them)."""
    if pid is None or started is None:
        return False
    now = start_time(pid)
    if now is None or _zombie(pid):
        return False
    # psutil dates a start from the boot time, which Linux gives in whole seconds and derives
    # from the wall clock: a clock adjustment between two services' reads moves it by one
    # second. A start off by exactly that is the same process (a pid is not recycled within a
    # second of the start of the process that held it).
    drift = abs(now - started)
    return drift < 0.05 or abs(drift - 1.0) < 0.05


class ChildProcess:
    def __init__(
        self,
        name: str,
        argv: list[str],
        *,
        env: dict[str, str],
        cwd: Path,
        log_path: Path,
        on_exit: Callable[[ChildProcess, int | None], None] | None = None,
        user: tuple[int, int] | None = None,
        niceness: int = 0,
        cgroup_procs: Sequence[Path] = (),
        oom_score_adj: int | None = None,
    ) -> None:
        """``user``: (uid, gid) to run as (the service must be root), with no other groups;
        ``niceness``: the scheduling niceness it starts at (keepalive.engine.priority);
        ``cgroup_procs``: the ``cgroup.procs`` files of the cgroups it is born in, and
        ``oom_score_adj`` its place in the OOM killer's order (keepalive.engine.containment)."""
        self.name = name
        self.user = user
        self.niceness = niceness
        self.cgroup_procs = list(cgroup_procs)
        self.oom_score_adj = oom_score_adj
        self.argv = argv
        self.env = env
        self.cwd = cwd
        self.log_path = log_path
        self.on_exit = on_exit
        self.pid: int | None = None
        #: psutil's create_time of the process: with ``pid``, what adoption checks.
        self.started_at: float | None = None
        self.returncode: int | None = None
        self._popen: subprocess.Popen | None = None  # only for our own children: reaps the zombie
        self._pidfd: int | None = None
        self._exited = asyncio.Event()
        self._stopping = False

    @classmethod
    def adopt(
        cls,
        name: str,
        pid: int | None,
        started_at: float | None,
        *,
        log_path: Path,
        on_exit: Callable[[ChildProcess, int | None], None] | None = None,
    ) -> ChildProcess:
        """Watch a process an earlier service started. If ``pid`` is not (any more) the
        process that started at ``started_at``, the result is simply not running."""
        child = cls(name, [], env={}, cwd=Path("/"), log_path=log_path, on_exit=on_exit)
        child.pid, child.started_at = pid, started_at
        if same_process(pid, started_at):
            try:
                child._watch(os.pidfd_open(pid))
            except ProcessLookupError:
                child._exited.set()
        else:
            child._exited.set()
        return child

    @property
    def running(self) -> bool:
        return self.pid is not None and not self._exited.is_set()

    async def start(self) -> None:
        if self.pid is not None:
            raise RuntimeError(f"{self.name} was started already")
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        argv = niced(self.argv, self.niceness)
        as_user = {}
        if self.cgroup_procs or self.oom_score_adj is not None:
            # joined (as root) before it runs a single instruction of its own, then dropped to the user
            argv = launch_argv(argv, self.cgroup_procs, self.user, self.oom_score_adj)
            as_user = {"umask": 0o077} if self.user is not None else {}
        elif self.user is not None:
            uid, gid = self.user
            as_user = {"user": uid, "group": gid, "extra_groups": [], "umask": 0o077}
        log_fd = os.open(self.log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
        with os.fdopen(log_fd, "ab") as log_file:
            self._popen = subprocess.Popen(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=log_file,
                stderr=subprocess.STDOUT,
                env=self.env,
                cwd=self.cwd,
                start_new_session=True,
                **as_user,
            )
        self.pid = self._popen.pid
        self.started_at = start_time(self.pid)
        self._watch(os.pidfd_open(self.pid))

    def _watch(self, pidfd: int) -> None:
        """Readable once the process has exited: no thread, no polling, any process we may signal."""
        self._pidfd = pidfd
        asyncio.get_running_loop().add_reader(pidfd, self._on_pidfd)

    def _unwatch(self) -> None:
        if self._pidfd is not None:
            asyncio.get_running_loop().remove_reader(self._pidfd)
            os.close(self._pidfd)
            self._pidfd = None

    def _on_pidfd(self) -> None:
        self._unwatch()
        if self._popen is not None:
            self.returncode = self._popen.wait()  # our own child: collect its status (no zombie)
        self._exited.set()
        if not self._stopping and self.on_exit is not None:
            self.on_exit(self, self.returncode)

    def detach(self) -> None:
        """Stop watching, leave the process running (the service is going away without it)."""
        self._stopping = True
        self._unwatch()
        if self._popen is not None:
            # subprocess's own bookkeeping would kill nothing, but keep it from reporting a
            # "still running" child at interpreter exit
            self._popen.returncode = 0

    async def wait_ready(
        self,
        probe: Callable[[], Awaitable[bool]],
        timeout: float,
        what: str = "ready",
        interval: float = 0.2,
    ) -> None:
        """Poll ``probe`` until it answers True; fail early if the child dies first.

        The first looks come quickly and the pauses double up to ``interval``: Xvfb and the
        browser's bridge answer within a tenth of a second, and a fixed pause made every start
        (and every wake from standby) wait most of a whole interval for each of them.
        """
        deadline = time.monotonic() + timeout
        pause = FIRST_POLL_PAUSE
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
            await asyncio.sleep(pause)
            pause = min(pause * 2, interval)

    def _tail_suffix(self) -> str:
        text = tail(self.log_path)
        return f"; last lines of its log:\n{text}" if text else ""

    async def terminate(
        self, timeout: float = 5.0, ask_first: Callable[[], Awaitable[None]] | None = None
    ) -> int | None:
        """SIGTERM the child's process group, SIGKILL it if it is still there after ``timeout``.

        ``ask_first``: a gentler way to end it, tried first; the child has ``timeout`` seconds
        to end by itself that way before the signals come."""
        self._stopping = True
        if self.pid is None:
            return None
        if ask_first is not None and self.running:
            try:
                async with asyncio.timeout(timeout):
                    await ask_first()
                    await self._exited.wait()
            except Exception as error:  # (a timeout too) the signals below end it
                log.warning("%s (pid %s) did not end when asked (%s); terminating it",
                            self.name, self.pid, str(error) or type(error).__name__)
        if self.running:
            self._signal_group(signal.SIGTERM)
            try:
                await asyncio.wait_for(self._exited.wait(), timeout)
            except TimeoutError:
                log.warning("%s (pid %s) ignored SIGTERM for %.0f s; killing it", self.name, self.pid, timeout)
                self.kill()
                await self._exited.wait()
        # The leader is gone; make sure nothing else of its group lingers.
        self._signal_group(signal.SIGKILL)
        return self.returncode

    def kill(self) -> None:
        self._stopping = True
        self._signal_group(signal.SIGKILL)

    def _signal_group(self, signum: int) -> None:
        # the group is named after its leader (start_new_session made the child one). An adopted
        # process that is gone is never signalled: its pid may belong to someone else by now.
        if self.pid is None or (self._popen is None and not self.running):
            return
        try:
            os.killpg(self.pid, signum)
        except (ProcessLookupError, PermissionError):
            pass
