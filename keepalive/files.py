"""Writing files safely: private ones (tokens, passwords, session IDs), and any file the service
(root, perhaps) writes into a folder that a session's user can change.

Every write goes to a fresh ``.partial`` (created with O_EXCL|O_NOFOLLOW: never through a
symlink someone planted, never readable by others for an instant) and is renamed into place,
which replaces a planted symlink instead of writing through it. A reader sees the old content
or the new, whole.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import IO


def write_file(path: Path, data: str | bytes, mode: int = 0o644, owner: tuple[int, int] | None = None) -> None:
    """Write ``data`` to ``path`` atomically with ``mode``; ``owner``: (uid, gid) to give it to."""
    partial = path.with_name(path.name + ".partial")
    partial.unlink(missing_ok=True)
    fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, mode & 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(data.encode() if isinstance(data, str) else data)
        if owner is not None:
            os.fchown(handle.fileno(), *owner)
        os.fchmod(handle.fileno(), mode)
    partial.replace(path)


def write_private(path: Path, text: str, owner: tuple[int, int] | None = None) -> None:
    """Write ``text`` to ``path`` with mode 0600, atomically (see write_file)."""
    write_file(path, text, 0o600, owner)


def open_no_follow(path: Path, mode: str = "rb") -> IO[bytes]:
    """Open an existing file for reading, refusing a symlink in its place (ELOOP, an OSError)."""
    assert mode == "rb"
    return os.fdopen(os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC), "rb")


def create_no_follow(path: Path) -> IO[bytes]:
    """A new file for writing, 0600, replacing nothing and following no symlink: for partials."""
    path.unlink(missing_ok=True)
    return os.fdopen(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600), "wb")
