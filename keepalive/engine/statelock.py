"""One service per state dir: two would adopt, restart and stop each other's sessions."""

from __future__ import annotations

import fcntl
import os
from pathlib import Path


class StateDirBusy(RuntimeError):
    """Another keepalive manages this state dir; the message names its pid."""


class StateDirLock:
    """An exclusive ``flock`` on ``STATE_DIR/service.lock``, held for the life of the service.

    The kernel drops it when the holder dies however it dies (even SIGKILL), so a stale lock
    file never blocks the next service. The file holds the holder's pid, for the message.
    """

    def __init__(self, state_dir: Path) -> None:
        self.path = state_dir / "service.lock"
        self._fd: int | None = None

    def acquire(self) -> StateDirLock:
        self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.read(fd, 32).decode(errors="replace").strip() or "?"
            os.close(fd)
            raise StateDirBusy(
                f"another keepalive (pid {holder}) is already serving the state dir {self.path.parent}; "
                "stop it first, or use another --state-dir"
            ) from None
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        self._fd = fd
        return self

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)  # closing the descriptor drops the lock
            self._fd = None
