"""Chromium profile state: a template tarball, restored into each session's folder.

Chromium refuses or complains about a profile that another instance seems to hold
(its Singleton* files and LevelDB ``LOCK`` files), and shows first-run UI for a
profile it has never seen. So the template is made once by running Chromium, the
lock files are stripped, and they are stripped again at every restore.
"""

from __future__ import annotations

import asyncio
import io
import json
import logging
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import uuid
import zlib
from collections.abc import Callable
from pathlib import Path
from typing import IO

from keepalive.engine.layout import SessionLayout
from keepalive.engine.process import ChildFailed, ChildProcess
from keepalive.engine.reaper import reap
from keepalive.engine.users import SessionUser
from keepalive.files import create_no_follow, open_no_follow, write_file

log = logging.getLogger(__name__)

#: Files that make Chromium think the profile is in use by another instance.
LOCK_FILES = frozenset({"LOCK", "Local State", "SingletonCookie", "SingletonSecret", "SingletonLock"})
#: Stale runtime files worth removing too: an old CDP port would mislead the engine.
STALE_FILES = frozenset({"DevToolsActivePort"})
#: Chrome's marker that the first run already happened: no welcome page, no first-run dialog.
FIRST_RUN_SENTINEL = "First Run"


class ProfileError(RuntimeError):
    pass


def strip_lock_files(profile_dir: Path) -> list[Path]:
    """Delete lock and stale runtime files anywhere in the profile; returns what was removed."""
    removed = []
    for path in sorted(profile_dir.rglob("*"), reverse=True):
        if path.name in LOCK_FILES or path.name in STALE_FILES:
            if path.is_dir() and not path.is_symlink():
                shutil.rmtree(path)
            else:
                path.unlink()
            removed.append(path)
    return removed


def mark_clean_exit(profile_dir: Path) -> None:
    """Tell Chromium its last run ended well: no 'Restore pages?' bubble after a crash."""
    preferences = profile_dir / "Default" / "Preferences"
    try:
        with open_no_follow(preferences) as handle:  # the session's user may own this folder
            data = json.loads(handle.read())
        owner = preferences.lstat()
    except (OSError, ValueError):
        return
    profile = data.setdefault("profile", {})
    profile["exit_type"] = "Normal"
    profile["exited_cleanly"] = True
    write_file(preferences, json.dumps(data), 0o600, (owner.st_uid, owner.st_gid))


def _safe_members(archive: tarfile.TarFile) -> list[tarfile.TarInfo]:
    """Regular files and folders only, inside the target, without special mode bits.

    This is what tarfile's "data" filter does, done by hand: that filter (and the
    ``filter=`` argument) only exists from Python 3.11.4 on, and Debian 12 ships 3.11.2.
    """
    members = []
    for member in archive.getmembers():
        name = Path(member.name)
        if name.is_absolute() or ".." in name.parts:
            raise ProfileError(f"profile template holds an unsafe path: {member.name!r}")
        if not (member.isfile() or member.isdir()):
            continue  # links, devices, fifos: a profile needs none, and links could point outside
        member.mode &= 0o755 if member.isdir() else 0o644  # no setuid/setgid/sticky, nothing world-writable
        member.mode |= 0o700 if member.isdir() else 0o600  # and always usable by its owner
        member.uid, member.gid = os.getuid(), os.getgid()  # owned by whoever restores it
        member.uname = member.gname = ""
        members.append(member)
    return members


def _extract(archive: tarfile.TarFile, members: list[tarfile.TarInfo], target: Path) -> None:
    if hasattr(tarfile, "data_filter"):  # Python >= 3.11.4: let tarfile check once more
        archive.extractall(target, members=members, filter="data")
    else:
        archive.extractall(target, members=members)  # noqa: S202 - members were checked above


def restore_profile(template: Path | IO[bytes], profile_dir: Path) -> None:
    """Unpack ``template`` (a path, or an open tarball) into ``profile_dir`` and make it ready
    for a fresh Chromium."""
    if isinstance(template, Path) and not template.is_file():
        raise ProfileError(f"profile template {template} does not exist")
    profile_dir.mkdir(parents=True, exist_ok=True)
    try:
        with (open_no_follow(template) if isinstance(template, Path) else template) as raw, \
                tarfile.open(fileobj=raw) as archive:
            _extract(archive, _safe_members(archive), profile_dir)
    except (tarfile.TarError, OSError) as error:
        raise ProfileError(f"cannot unpack profile template {template}: {error}") from error
    strip_lock_files(profile_dir)
    mark_clean_exit(profile_dir)
    (profile_dir / FIRST_RUN_SENTINEL).touch()


def pack_profile(profile_dir: Path, template: Path, before_descend: Callable[[Path], None] | None = None) -> None:
    """Write ``profile_dir`` as a gzip tarball without its lock files, atomically.

    The folder itself is left as it is: a running Chromium's profile may be packed too. A
    session's profile is its user's to change at any moment, so this runs with that user's
    rights (``save_for``): a folder swapped for a symlink between two steps leads only where
    the user could read anyway. ``before_descend``: called with each folder just before its
    entries are listed (tests make the swap happen there).
    """
    sentinel = profile_dir / FIRST_RUN_SENTINEL
    if not sentinel.is_symlink():
        sentinel.touch()
    template.parent.mkdir(parents=True, exist_ok=True)
    partial = template.with_name(template.name + ".partial")
    # the home may belong to a session's user: no write through a symlink planted there.
    # gzip's fastest level: a profile is packed at every stop, and tarfile's default (9) costs
    # several times the CPU for a file only a little smaller.
    with create_no_follow(partial) as raw, tarfile.open(fileobj=raw, mode="w:gz", compresslevel=1) as archive:
        _add_folder(archive, profile_dir, "", before_descend)
    partial.replace(template)


def _add_folder(
    archive: tarfile.TarFile, folder: Path, prefix: str, before_descend: Callable[[Path], None] | None
) -> None:
    """Every entry below ``folder``, but lock files; links are stored, never followed."""
    if before_descend is not None:
        before_descend(folder)
    try:
        names = sorted(os.listdir(folder))
    except OSError:  # gone meanwhile, or not this user's to read
        return
    for name in names:
        if name in LOCK_FILES or name in STALE_FILES:
            continue
        path = folder / name
        try:
            info = archive.gettarinfo(path, arcname=prefix + name)
        except OSError:
            continue  # gone meanwhile
        if info is None:
            continue  # a socket: nothing a profile needs
        if info.isreg():
            try:
                handle = open_no_follow(path)
            except OSError:
                continue  # swapped for a link, or gone, since it was looked at
            with handle:
                info.size = os.fstat(handle.fileno()).st_size
                archive.addfile(info, handle)
        elif info.isdir():
            archive.addfile(info)
            _add_folder(archive, path, prefix + name + "/", before_descend)
        else:
            archive.addfile(info)


def _readable(archive_path: Path) -> bool:
    """A whole, readable tarball: every member's data is read once (a torn write fails here)."""
    try:
        with open_no_follow(archive_path) as raw, tarfile.open(fileobj=raw) as archive:
            for member in archive:
                if member.isfile():
                    extracted = archive.extractfile(member)
                    if extracted is not None:
                        while extracted.read(1 << 20):
                            pass
        return True
    except (tarfile.TarError, OSError, EOFError, zlib.error):
        return False


def save_profile(profile_dir: Path, saved: Path, previous: Path) -> None:
    """Save a session's profile into its home: atomically, keeping the last good save as ``previous``.
    A profile whose browser never ran is not worth keeping: nothing is saved."""
    if not (profile_dir / "Default").is_dir():
        return
    partial = saved.with_name(saved.name + ".partial")
    pack_profile(profile_dir, partial)  # pack_profile itself writes atomically, to its target
    if saved.exists() and _readable(saved):
        saved.replace(previous)
    partial.replace(saved)


def restore_session_profile(saved: Path, previous: Path, template: Path | IO[bytes], profile_dir: Path) -> Path | str:
    """Restore the home's saved profile, else the previous save, else the template; returns which
    (the template's path, or "template" when it came as an open file).

    A save that cannot be read whole (a crash while writing, a full disk) is skipped with a warning.
    """
    for candidate in (saved, previous):
        if not candidate.exists():
            continue
        if _readable(candidate):
            restore_profile(candidate, profile_dir)
            return candidate
        log.warning("the saved browser profile %s is damaged; trying an older one", candidate)
    restore_profile(template, profile_dir)
    return template if isinstance(template, Path) else "template"


def prepare_for_restart(profile_dir: Path) -> None:
    """A profile a killed Chromium left: without its locks, and marked as cleanly closed."""
    strip_lock_files(profile_dir)
    mark_clean_exit(profile_dir)


# -- done with the session user's rights --------------------------------------------------------
#
# A session's profile folder and home are its user's, and the user's notebook can change them
# while the service works there (swap a folder for a symlink to /root between two steps). So
# with a session user, the service does no profile work itself: a short child that has dropped
# to that user does it, and can reach nothing the user could not. The template, root's, comes
# in on the child's standard input.

#: Seconds a profile worker may take before it is killed and the work reported as failed.
_WORKER_TIMEOUT = 120.0


async def restore_for(user: SessionUser | None, saved: Path, previous: Path, template: Path, profile_dir: Path) -> str:
    """``restore_session_profile`` with ``user``'s rights (in this process without a user);
    returns what was restored, for the log."""
    if user is None:
        return str(await asyncio.to_thread(restore_session_profile, saved, previous, template, profile_dir))
    with open_no_follow(template) as stdin:
        return await _as_user(user, ["restore", str(saved), str(previous), str(profile_dir)], stdin)


async def save_for(user: SessionUser | None, profile_dir: Path, saved: Path, previous: Path) -> None:
    """``save_profile`` with ``user``'s rights (in this process without a user)."""
    if user is None:
        await asyncio.to_thread(save_profile, profile_dir, saved, previous)
    else:
        await _as_user(user, ["save", str(profile_dir), str(saved), str(previous)])


async def prepare_for_restart_for(user: SessionUser | None, profile_dir: Path) -> None:
    """``prepare_for_restart`` with ``user``'s rights (in this process without a user)."""
    if user is None:
        await asyncio.to_thread(prepare_for_restart, profile_dir)
    else:
        await _as_user(user, ["prepare", str(profile_dir)])


async def _as_user(user: SessionUser, args: list[str], stdin: IO[bytes] | None = None) -> str:
    # subprocess in a thread: the service's event loop (uvloop) takes no user/group arguments
    try:
        done = await asyncio.to_thread(
            subprocess.run, [sys.executable, "-I", "-m", "keepalive.engine.profile", *args],
            stdin=stdin if stdin is not None else subprocess.DEVNULL, capture_output=True,
            user=user.uid, group=user.gid, extra_groups=[], umask=0o077, cwd="/", timeout=_WORKER_TIMEOUT,
            env={"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": "/nonexistent"},
        )
    except subprocess.TimeoutExpired:
        raise ProfileError(f"the profile's {args[0]} as uid {user.uid} took over {_WORKER_TIMEOUT:.0f} s") from None
    if done.returncode != 0:
        last = done.stderr.decode(errors="replace").strip().splitlines()[-1:] or ["no message"]
        raise ProfileError(f"the profile's {args[0]} as uid {user.uid} failed: {last[0]}")
    return done.stdout.decode(errors="replace").strip()


def main(argv: list[str]) -> int:
    """The worker: ``restore SAVED PREVIOUS PROFILE`` (template on stdin), ``save PROFILE SAVED
    PREVIOUS``, ``prepare PROFILE``. Errors end it with their message on stderr."""
    command, *paths = argv
    try:
        if command == "restore":
            saved, previous, profile_dir = map(Path, paths)
            template = io.BytesIO(sys.stdin.buffer.read())
            print(restore_session_profile(saved, previous, template, profile_dir))
        elif command == "save":
            save_profile(*map(Path, paths))
        elif command == "prepare":
            prepare_for_restart(Path(paths[0]))
        else:
            raise ProfileError(f"unknown command {command!r}")
    except (OSError, tarfile.TarError, ProfileError, ValueError) as error:
        print(f"{type(error).__name__}: {error}", file=sys.stderr)
        return 1
    return 0


class TemplateUnavailable(RuntimeError):
    """The browser profile template could not be made; the message says why."""


class ProfileTemplate:
    """The profile every new browser starts from: the configured tarball, or one made once in
    the state dir, in the background from the service's start on (so that the first POST of a
    fresh install does not wait for it inside the admission lock, and a failure is answered
    with its reason)."""

    def __init__(self, configured: Path | None, state_dir: Path, chromium: str) -> None:
        self._configured, self._state_dir, self._chromium = configured, state_dir, chromium
        self._task: asyncio.Task[Path] | None = None

    def begin(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._make(), name="profile-template")

    async def _make(self) -> Path:
        if self._configured is not None:
            return self._configured
        template = self._state_dir / "profile-template.tar.gz"
        if not template.is_file():
            log.info("making the Chromium profile template (first start only)")
            await make_template(self._chromium, template)
        return template

    async def get(self) -> Path:
        """The template's path; TemplateUnavailable (and another try next time) if it failed."""
        assert self._task is not None, "ProfileTemplate.begin() was not called"
        try:
            return await asyncio.shield(self._task)
        except ProfileError as error:
            self.begin()
            raise TemplateUnavailable(f"no browser profile template: {error}") from None

    def close(self) -> None:
        if self._task is None:
            return
        if self._task.done() and not self._task.cancelled():
            self._task.exception()  # seen: a failure was answered (503) or nobody asked
        else:
            self._task.cancel()


async def make_template(chromium: str, template: Path, timeout: float = 60.0) -> Path:
    """Run Chromium once, headless, on an empty profile; pack what it wrote as the template."""
    with tempfile.TemporaryDirectory(prefix="keepalive-template-") as scratch:
        layout = SessionLayout(Path(scratch) / "t")
        layout.create()
        argv = [
            chromium,
            "--headless",
            "--no-sandbox",
            "--no-first-run",
            "--no-default-browser-check",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--disable-quic",
            "--disable-gpu",
            f"--user-data-dir={layout.profile_dir}",
            "about:blank",
        ]
        marker = f"template-{uuid.uuid4().hex}"
        child = ChildProcess(
            "chromium-template",
            argv,
            env=layout.environment(marker),
            cwd=layout.home,
            log_path=layout.log("chromium-template"),
        )
        preferences = layout.profile_dir / "Default" / "Preferences"

        async def written() -> bool:
            return preferences.is_file() and preferences.stat().st_size > 0

        try:
            await child.start()
            await child.wait_ready(written, timeout, what="done writing its profile")
            await asyncio.sleep(1.0)  # let it finish the first flush of its databases
        except (ChildFailed, OSError) as error:  # OSError: no such executable, for one
            raise ProfileError(f"could not make a profile template with {chromium}: {error}") from error
        finally:
            await child.terminate()
            await asyncio.to_thread(reap, marker, layout.folder)
        pack_profile(layout.profile_dir, template)
    log.info("made Chromium profile template %s", template)
    return template


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
