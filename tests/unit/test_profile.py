"""Profile restore: lock files stripped, clean exit marked, unsafe archives refused."""

from __future__ import annotations

import asyncio
import io
import json
import os
import tarfile

import pytest

from keepalive.engine.profile import (
    FIRST_RUN_SENTINEL,
    LOCK_FILES,
    ProfileError,
    pack_profile,
    restore_for,
    restore_profile,
    save_for,
    strip_lock_files,
)
from keepalive.engine.users import SessionUser, give


def make_profile(root):
    (root / "Default" / "Local Storage" / "leveldb").mkdir(parents=True)
    (root / "Default" / "Local Storage" / "leveldb" / "LOCK").write_text("")
    (root / "Default" / "Local Storage" / "leveldb" / "000003.log").write_text("data")
    (root / "Default" / "Preferences").write_text(json.dumps({"profile": {"exit_type": "Crashed"}}))
    for name in ("Local State", "SingletonCookie", "SingletonSecret", "SingletonLock", "DevToolsActivePort"):
        (root / name).write_text("x")
    return root


def test_strip_removes_every_lock_file_and_nothing_else(tmp_path):
    profile = make_profile(tmp_path / "p")
    removed = {p.name for p in strip_lock_files(profile)}
    assert removed == set(LOCK_FILES) | {"DevToolsActivePort"}
    assert (profile / "Default" / "Local Storage" / "leveldb" / "000003.log").read_text() == "data"


def test_pack_then_restore_round_trip(tmp_path):
    profile = make_profile(tmp_path / "p")
    template = tmp_path / "t.tar.gz"
    pack_profile(profile, template)
    with tarfile.open(template) as archive:
        names = {name.rsplit("/", 1)[-1] for name in archive.getnames()}
    assert not names & LOCK_FILES
    restored = tmp_path / "r"
    restore_profile(template, restored)
    assert (restored / "Default" / "Local Storage" / "leveldb" / "000003.log").read_text() == "data"
    assert (restored / FIRST_RUN_SENTINEL).exists()
    prefs = json.loads((restored / "Default" / "Preferences").read_text())
    assert prefs["profile"]["exit_type"] == "Normal"
    assert prefs["profile"]["exited_cleanly"] is True


def test_locks_inside_a_foreign_template_are_stripped_at_restore(tmp_path):
    profile = make_profile(tmp_path / "p")
    template = tmp_path / "t.tar"
    with tarfile.open(template, "w") as archive:  # a template packed by hand, locks and all
        archive.add(profile, arcname=".")
    restored = tmp_path / "r"
    restore_profile(template, restored)
    assert not [p for p in restored.rglob("*") if p.name in LOCK_FILES]


def test_unsafe_paths_are_refused(tmp_path):
    template = tmp_path / "evil.tar"
    with tarfile.open(template, "w") as archive:
        info = tarfile.TarInfo("../escape")
        info.size = 1
        archive.addfile(info, io.BytesIO(b"x"))
    with pytest.raises(ProfileError, match="unsafe"):
        restore_profile(template, tmp_path / "r")
    assert not (tmp_path / "escape").exists()


def test_missing_template_is_a_clear_error(tmp_path):
    with pytest.raises(ProfileError, match="does not exist"):
        restore_profile(tmp_path / "nope.tar.gz", tmp_path / "r")


def _template_with_specials(path):
    """A tarball holding a setuid file, a symlink pointing outside, a fifo and a plain file."""
    with tarfile.open(path, "w") as archive:
        plain = tarfile.TarInfo("Default/Preferences")
        data = json.dumps({"profile": {}}).encode()
        plain.size = len(data)
        archive.addfile(plain, io.BytesIO(data))
        setuid = tarfile.TarInfo("Default/tool")
        setuid.mode = 0o4777
        setuid.size = 1
        archive.addfile(setuid, io.BytesIO(b"x"))
        link = tarfile.TarInfo("Default/outside")
        link.type = tarfile.SYMTYPE
        link.linkname = "/etc/passwd"
        archive.addfile(link)
        fifo = tarfile.TarInfo("Default/pipe")
        fifo.type = tarfile.FIFOTYPE
        archive.addfile(fifo)


@pytest.mark.parametrize("has_data_filter", [True, False], ids=["python>=3.11.4", "python-3.11.2"])
def test_restore_works_with_and_without_tarfiles_data_filter(tmp_path, monkeypatch, has_data_filter):
    """Debian 12's Python 3.11.2 has no tarfile.data_filter (nor extractall(filter=)): restore must not need it."""
    if not has_data_filter:
        monkeypatch.delattr(tarfile, "data_filter", raising=False)
        real_extractall = tarfile.TarFile.extractall

        def extractall_of_3_11_2(self, path=".", members=None, *, numeric_owner=False, **kwargs):
            assert not kwargs, f"Python 3.11.2's extractall takes no {sorted(kwargs)}"
            return real_extractall(self, path, members, numeric_owner=numeric_owner)

        monkeypatch.setattr(tarfile.TarFile, "extractall", extractall_of_3_11_2)
    elif not hasattr(tarfile, "data_filter"):
        pytest.skip("this Python has no tarfile.data_filter; the other case covers it")
    template = tmp_path / "t.tar"
    _template_with_specials(template)
    restored = tmp_path / "r"
    restore_profile(template, restored)
    assert (restored / "Default" / "Preferences").is_file()
    tool = restored / "Default" / "tool"
    assert tool.is_file() and not tool.stat().st_mode & 0o7022  # no setuid/sticky, not group/world-writable
    assert not (restored / "Default" / "outside").exists() and not (restored / "Default" / "outside").is_symlink()
    assert not (restored / "Default" / "pipe").exists()


def test_a_saved_profile_comes_back_and_a_damaged_one_falls_back(tmp_path):
    from keepalive.engine.profile import restore_session_profile, save_profile

    saved, previous, template = tmp_path / "p.tar.gz", tmp_path / "prev.tar.gz", tmp_path / "t.tar.gz"
    pack_profile(make_profile(tmp_path / "template"), template)
    first = make_profile(tmp_path / "first")
    (first / "Default" / "Bookmarks").write_text("first")
    save_profile(first, saved, previous)
    second = make_profile(tmp_path / "second")
    (second / "Default" / "Bookmarks").write_text("second")
    save_profile(second, saved, previous)  # the first save is kept as the previous one

    used = restore_session_profile(saved, previous, template, tmp_path / "r1")
    assert used == saved and (tmp_path / "r1" / "Default" / "Bookmarks").read_text() == "second"

    saved.write_bytes(saved.read_bytes()[: saved.stat().st_size // 2])  # torn while writing
    used = restore_session_profile(saved, previous, template, tmp_path / "r2")
    assert used == previous and (tmp_path / "r2" / "Default" / "Bookmarks").read_text() == "first"

    previous.write_bytes(b"not a tarball")
    assert restore_session_profile(saved, previous, template, tmp_path / "r3") == template
    assert not (tmp_path / "r3" / "Default" / "Bookmarks").exists()


root_only = pytest.mark.skipif(os.geteuid() != 0, reason="dropping to a session user needs root")
SESSION_UID = 61602


def pack_as(uid, profile, archive, before_descend) -> int:
    """``pack_profile`` in a forked child with ``uid``'s rights (0: root's): its exit code."""
    pid = os.fork()
    if pid == 0:  # the child: never returns into pytest
        code = 1
        try:
            if uid:
                os.setgroups([])
                os.setresgid(uid, uid, uid)
                os.setresuid(uid, uid, uid)
            pack_profile(profile, archive, before_descend=before_descend)
            code = 0
        finally:
            os._exit(code)
    return os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1])


def hostile_profile(tmp_path):
    """A session's profile and home, its user's, and a folder only root may read."""
    secret = tmp_path / "root-only"
    secret.mkdir()
    (secret / "Cookies").write_text("root's secret")
    secret.chmod(0o700)
    profile = tmp_path / "profile"
    (profile / "Default" / "Extension State").mkdir(parents=True)
    (profile / "Default" / "Preferences").write_text("{}")
    home = tmp_path / "home"
    home.mkdir()
    for path in (profile, home):
        give(path, SessionUser(SESSION_UID))
    return secret, profile, home


@root_only
@pytest.mark.parametrize("uid, leaks", [(SESSION_UID, False), (0, True)])
def test_a_folder_swapped_for_a_link_mid_pack_leaks_nothing_with_the_users_rights(tmp_path, uid, leaks):
    """The pack race made to happen: the notebook swaps a folder for a symlink to a root-only
    folder after the walk saw a folder there, just before it lists it. With the session user's
    rights (as the service packs) nothing of that folder reaches the archive; with root's (the
    control) it does, which shows the swap really lands between the check and the use."""
    secret, profile, home = hostile_profile(tmp_path)

    def swap(folder):  # runs in the packing child, as its user
        if folder.name == "Extension State":
            folder.rename(folder.with_name("moved"))
            folder.symlink_to(secret)

    assert pack_as(uid, profile, home / "profile.tar.gz", swap) == 0
    with tarfile.open(home / "profile.tar.gz") as archive:
        names = archive.getnames()
        contents = b"".join(archive.extractfile(m).read() for m in archive.getmembers() if m.isfile())
    assert (profile / "Default" / "Extension State").is_symlink()  # the race did happen
    assert "Default/Preferences" in names and "Default/Extension State" in names
    assert ("Default/Extension State/Cookies" in names) is leaks
    assert (b"root's secret" in contents) is leaks


@root_only
def test_the_service_saves_and_restores_a_profile_with_the_users_rights(tmp_path):
    """save_for/restore_for run as the session user: what they write is the user's, and the
    root-owned template reaches the worker only on its standard input."""
    user = SessionUser(SESSION_UID)
    secret, profile, home = hostile_profile(tmp_path)
    (profile / "Default" / "Extension State" / "link").symlink_to(secret / "Cookies")
    template = tmp_path / "template.tar.gz"
    pack_profile(make_profile(tmp_path / "template-profile"), template)
    template.chmod(0o600)  # root's alone: the worker reads it from its stdin
    saved, previous = home / "profile.tar.gz", home / "profile.previous.tar.gz"

    asyncio.run(save_for(user, profile, saved, previous))
    assert saved.stat().st_uid == SESSION_UID
    with tarfile.open(saved) as archive:
        assert archive.getmember("Default/Extension State/link").issym()  # stored as a link, not followed

    restored = tmp_path / "restored"
    restored.mkdir()
    give(restored, user)
    assert asyncio.run(restore_for(user, saved, previous, template, restored)) == str(saved)
    assert (restored / "Default" / "Preferences").stat().st_uid == SESSION_UID
    assert not (restored / "Default" / "Extension State" / "link").exists()  # links are dropped at restore

    fresh = tmp_path / "fresh"
    fresh.mkdir()
    give(fresh, user)
    assert asyncio.run(restore_for(user, home / "none", home / "none2", template, fresh)) == "template"
    assert (fresh / FIRST_RUN_SENTINEL).stat().st_uid == SESSION_UID
    assert not (fresh / "SingletonLock").exists()

    with pytest.raises(ProfileError, match="as uid 61602 failed"):
        asyncio.run(save_for(user, profile, secret / "x.tar.gz", secret / "y.tar.gz"))
