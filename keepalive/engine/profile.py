"""Chromium profile state: a template tarball, restored into each session's folder.

Chromium refuses or complains about a profile that another instance seems to hold
(its Singleton* files and LevelDB ``LOCK`` files), and shows first-run UI for a
profile it has never seen. So the template is made once by running Chromium, the
lock files are stripped, and they are stripped again at every restore.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import shutil
import tarfile
import tempfile
import uuid
import zlib
from pathlib import Path

from keepalive.engine.layout import SessionLayout
from keepalive.engine.process import ChildFailed, ChildProcess
from keepalive.engine.reaper import reap
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


def restore_profile(template: Path, profile_dir: Path) -> None:
    """Unpack ``template`` into ``profile_dir`` and make it ready for a fresh Chromium."""
    if not template.is_file():
        raise ProfileError(f"profile template {template} does not exist")
    profile_dir.mkdir(parents=True, exist_ok=True)
    try:
        with open_no_follow(template) as raw, tarfile.open(fileobj=raw) as archive:
            _extract(archive, _safe_members(archive), profile_dir)
    except (tarfile.TarError, OSError) as error:
        raise ProfileError(f"cannot unpack profile template {template}: {error}") from error
    strip_lock_files(profile_dir)
    mark_clean_exit(profile_dir)
    (profile_dir / FIRST_RUN_SENTINEL).touch()


def _without_locks(member: tarfile.TarInfo) -> tarfile.TarInfo | None:
    name = member.name.rsplit("/", 1)[-1]
    return None if name in LOCK_FILES or name in STALE_FILES else member


def pack_profile(profile_dir: Path, template: Path) -> None:
    """Write ``profile_dir`` as a gzip tarball without its lock files, atomically.

    The folder itself is left as it is: a running Chromium's profile may be packed too.
    """
    sentinel = profile_dir / FIRST_RUN_SENTINEL
    if not sentinel.is_symlink():
        sentinel.touch()
    template.parent.mkdir(parents=True, exist_ok=True)
    partial = template.with_name(template.name + ".partial")
    # the home may belong to a session's user: no write through a symlink planted there
    with create_no_follow(partial) as raw, tarfile.open(fileobj=raw, mode="w:gz") as archive:
        for path in sorted(profile_dir.iterdir()):
            archive.add(path, arcname=path.name, filter=_without_locks)  # links are stored, never followed
    partial.replace(template)


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
    """Save a session's profile into its home: atomically, keeping the last good save as ``previous``."""
    partial = saved.with_name(saved.name + ".partial")
    pack_profile(profile_dir, partial)  # pack_profile itself writes atomically, to its target
    if saved.exists() and _readable(saved):
        saved.replace(previous)
    partial.replace(saved)


def restore_session_profile(saved: Path, previous: Path, template: Path, profile_dir: Path) -> Path:
    """Restore the home's saved profile, else the previous save, else the template; returns which.

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
    return template


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
