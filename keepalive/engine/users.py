"""Per-session Unix users: when the service runs as root, each home gets a uid of its own.

A session runs code its user types. With its own uid, that code reaches only what the uid owns:
its home and the session's run dir and browser profile; not the service's token or database,
not other homes, not other sessions' processes (``/proc/PID/environ``) or secret files.

The uids come from a configured range and need no ``/etc/passwd`` entry (``USER``, ``LOGNAME``
and ``HOME`` are set for the programs that ask); a uid that does have an entry belongs to some
account on the machine and is never used. A home keeps its uid: the owner of its folder is the
record, so a later session of the same name runs as the same user and owns its files.

When the service runs as an ordinary user, sessions share that user: fine for one person or a
team that trusts each other, and said so in the log and in ``/health``.
"""

from __future__ import annotations

import logging
import os
import pwd
import shutil
import stat
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

import psutil

log = logging.getLogger(__name__)


class NoFreeUser(RuntimeError):
    """Every uid of the configured range is taken."""


@dataclass(frozen=True)
class SessionUser:
    uid: int

    @property
    def gid(self) -> int:
        return self.uid  # a group of its own, of the same number: shares nothing with anyone

    @property
    def name(self) -> str:
        return f"keepalive-{self.uid}"


def ids_of(user: SessionUser | None) -> tuple[int, int] | None:
    """(uid, gid) to run or own as, None for the service's own user: what ChildProcess and
    the file writers take as ``user``/``owner``."""
    return (user.uid, user.gid) if user is not None else None


def parse_uid_range(text: str) -> range:
    """``"61000-61999"`` -> range(61000, 62000); raises ValueError naming what is wrong."""
    first, sep, last = text.partition("-")
    try:
        low, high = int(first), int(last if sep else first)
    except ValueError:
        raise ValueError(f"expected FIRST-LAST (e.g. 61000-61999), got {text!r}") from None
    if not 1000 <= low <= high <= 2**31 - 2:
        raise ValueError(f"expected 1000 <= FIRST <= LAST, got {text!r}")
    return range(low, high + 1)


def has_account(uid: int) -> bool:
    try:
        pwd.getpwuid(uid)
    except KeyError:
        return False
    return True


def choose_user(home: Path, uids: range, busy: Iterable[int], homes_dir: Path) -> tuple[SessionUser, bool]:
    """The user for a session of ``home``: the home's owner if it has one from the range and
    nothing runs as it (no live session, no process at all); else the lowest uid nobody owns or uses.

    Returns the user and whether the home must be given to it (new, or owned by someone else).
    """
    busy = set(busy) | running_uids()
    try:
        owner = home.lstat().st_uid
    except FileNotFoundError:
        owner = None
    if owner in uids and owner not in busy and not home.is_symlink():
        return SessionUser(owner), False
    owned = set()
    if homes_dir.is_dir():
        for other in homes_dir.iterdir():
            try:
                owned.add(other.lstat().st_uid)
            except OSError:
                continue
    for uid in uids:
        if uid not in busy and uid not in owned and not has_account(uid):
            return SessionUser(uid), True
    raise NoFreeUser(f"all {len(uids)} uids of the session user range are taken (KEEPALIVE_SESSION_UIDS)")


def running_uids() -> set[int]:
    """uids that own a process now: another service on this machine may hand out the same range."""
    found = set()
    for process in psutil.process_iter(["uids"]):
        uids = process.info.get("uids")
        if uids is not None:
            found.add(uids.real)
    return found


#: How give() opens each folder: never through a symlink, whatever the path said a moment ago.
_FOLDER = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC


def give(path: Path, user: SessionUser, before_descend: Callable[[Path], None] | None = None) -> None:
    """Make ``path`` and everything under it the user's; never follows a symlink.

    The tree may belong to a uid whose processes still run, or to a notebook racing this walk:
    every folder is opened below the one before it (O_NOFOLLOW, by descriptor), so a folder
    swapped for a symlink at any moment is changed itself, never what it points at.
    ``before_descend``: called with each folder's path just before it is opened (for tests
    that make the race happen at the worst moment).
    """
    try:
        top = os.open(path, _FOLDER)
    except OSError:  # not a folder (a file, a symlink): only the entry itself
        os.chown(path, user.uid, user.gid, follow_symlinks=False)
        return
    stack = [(top, path)]
    try:
        os.fchown(top, user.uid, user.gid)
        while stack:
            fd, where = stack.pop()
            try:
                with os.scandir(fd) as entries:
                    names = [(entry.name, entry.is_dir(follow_symlinks=False)) for entry in entries]
                for name, is_folder in names:
                    if is_folder:
                        if before_descend is not None:
                            before_descend(where / name)
                        try:
                            child = os.open(name, _FOLDER, dir_fd=fd)
                        except OSError:  # swapped for a symlink or a file meanwhile, or gone
                            _chown_entry(name, fd, user)
                            continue
                        os.fchown(child, user.uid, user.gid)
                        stack.append((child, where / name))
                    else:
                        _chown_entry(name, fd, user)
            finally:
                os.close(fd)
    finally:
        for fd, _ in stack:
            os.close(fd)


def _chown_entry(name: str, folder_fd: int, user: SessionUser) -> None:
    try:
        os.chown(name, user.uid, user.gid, dir_fd=folder_fd, follow_symlinks=False)
    except FileNotFoundError:
        pass


def untraversable_ancestor(path: Path) -> Path | None:
    """The first folder on the way to ``path`` that other users cannot pass through, if any.

    Session users must reach their folders inside the state dir: every folder above it needs
    the execute bit for others (0711 is enough; nothing needs to be listable).
    """
    for folder in reversed(path.resolve().parents):
        if not os.stat(folder).st_mode & 0o001:
            return folder
    return None


def unreachable_reason(state_dir: Path) -> str | None:
    """Why session users could not reach their folders in ``state_dir``, with the fixes; or None."""
    blocked = untraversable_ancestor(state_dir)
    if blocked is None:
        return None
    return (
        f"session users cannot reach {state_dir}: {blocked} is closed to other users. Use a state dir "
        f"they can pass through (as root the default, /var/lib/keepalive, is one), or chmod o+x {blocked}, "
        f"or run every session as the service's own user with KEEPALIVE_SESSION_USERS=false."
    )


#: Folders every user may write into: what a session's uid leaves there outlives its processes.
SHARED_TEMPORARY = (Path("/tmp"), Path("/var/tmp"), Path("/dev/shm"))


def sweep_shared_temporary(uid: int, folders: Iterable[Path] = SHARED_TEMPORARY) -> list[str]:
    """Remove what ``uid`` owns at the top of the shared temporary folders (whole trees); returns
    their names. Called once the uid has no process left, so that the next home it is handed
    to finds nothing of the last one's. Never follows a symlink: one is removed itself."""
    removed = []
    for folder in folders:
        try:
            top = os.open(folder, _FOLDER)
        except OSError:
            continue
        try:
            with os.scandir(top) as entries:
                names = [entry.name for entry in entries]
            for name in names:
                try:
                    info = os.stat(name, dir_fd=top, follow_symlinks=False)
                    if info.st_uid != uid:
                        continue
                    if stat.S_ISDIR(info.st_mode):
                        shutil.rmtree(name, dir_fd=top)  # by descriptors, never through a link
                    else:
                        os.unlink(name, dir_fd=top)
                except FileNotFoundError:
                    continue
                except OSError as error:
                    log.warning("cannot remove %s/%s of uid %s: %s", folder, name, uid, error)
                    continue
                removed.append(f"{folder}/{name}")
        finally:
            os.close(top)
    return removed
