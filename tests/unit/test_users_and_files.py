"""Per-session users (keepalive.engine.users) and writes that never follow a planted symlink."""

from __future__ import annotations

import os

import pytest

from keepalive.engine.layout import SessionLayout
from keepalive.engine.users import SessionUser, choose_user, give, parse_uid_range, untraversable_ancestor
from keepalive.files import open_no_follow, write_file, write_private

root_only = pytest.mark.skipif(os.geteuid() != 0, reason="chown needs root")


def test_uid_ranges_parse_and_bad_ones_say_why():
    assert parse_uid_range("61000-61002") == range(61000, 61003)
    assert parse_uid_range("70000") == range(70000, 70001)
    for bad in ("abc", "500-600", "62000-61000", "61000-x"):
        with pytest.raises(ValueError, match="FIRST"):
            parse_uid_range(bad)


def test_a_new_home_gets_the_lowest_free_uid_and_skips_accounts(tmp_path):
    homes = tmp_path / "homes"
    homes.mkdir()
    # 65534 is nobody's: a uid with an account is never handed to a session
    user, give_home = choose_user(homes / "alice", range(65534, 65536), busy=(), homes_dir=homes)
    assert user == SessionUser(65535) and give_home
    assert user.name == "keepalive-65535" and user.gid == 65535


@root_only
def test_a_home_keeps_its_uid_unless_it_is_busy(tmp_path):
    homes = tmp_path / "homes"
    (homes / "alice").mkdir(parents=True)
    os.chown(homes / "alice", 61500, 61500)
    uids = range(61500, 61510)
    assert choose_user(homes / "alice", uids, busy=(), homes_dir=homes) == (SessionUser(61500), False)
    # another home's uid is never reused for a new home
    assert choose_user(homes / "bob", uids, busy=(), homes_dir=homes) == (SessionUser(61501), True)
    # alice's uid is running something else: a new uid, and the home is given to it
    assert choose_user(homes / "alice", uids, busy={61500}, homes_dir=homes) == (SessionUser(61501), True)


@root_only
def test_give_never_follows_a_symlink(tmp_path):
    outside = tmp_path / "outside"
    outside.write_text("root's")
    home = tmp_path / "home"
    (home / "sub").mkdir(parents=True)
    (home / "sub" / "file").write_text("x")
    (home / "link").symlink_to(outside)
    give(home, SessionUser(61600))
    assert (home / "sub" / "file").stat().st_uid == 61600
    assert (home / "link").lstat().st_uid == 61600
    assert outside.stat().st_uid == 0


@root_only
def test_give_never_follows_a_folder_swapped_for_a_symlink_while_it_walks(tmp_path):
    """The chown race, made to happen: a notebook of the home's old uid swaps a folder for a
    symlink to a root-only folder after the walk saw a folder there, just before it goes in."""
    secret = tmp_path / "root-only"
    (secret / "deeper").mkdir(parents=True)
    (secret / "deeper" / "key").write_text("root's")
    secret.chmod(0o700)
    home = tmp_path / "home"
    (home / "data" / "inner").mkdir(parents=True)
    (home / "data" / "inner" / "notes").write_text("x")
    (home / "other").mkdir()
    swapped = []

    def swap(folder):
        if folder.name == "data":  # listed as a folder a moment ago
            folder.rename(home / "data-moved")
            folder.symlink_to(secret)
            swapped.append(folder)

    give(home, SessionUser(61601), before_descend=swap)
    assert swapped == [home / "data"]  # the race did happen
    assert (home / "data").is_symlink() and (home / "data").lstat().st_uid == 61601
    for path in (secret, secret / "deeper", secret / "deeper" / "key"):
        assert path.stat().st_uid == 0, path
    assert (home / "other").stat().st_uid == 61601


@root_only
def test_session_folder_is_the_services_and_the_rest_the_users(tmp_path):
    layout = SessionLayout(tmp_path / "sessions" / "abc", tmp_path / "homes" / "alice")
    user = SessionUser(61700)
    layout.create(user)
    assert layout.folder.stat().st_uid == 0 and layout.folder.stat().st_mode & 0o777 == 0o711
    assert layout.logs_dir.stat().st_uid == 0
    for owned in (layout.runtime_dir, layout.profile_dir, layout.kept, layout.home, layout.notebooks_dir):
        assert owned.stat().st_uid == 61700, owned
    assert layout.environment("abc", base={}, user=user)["USER"] == "keepalive-61700"


def test_writes_replace_a_planted_symlink_instead_of_following_it(tmp_path):
    target = tmp_path / "precious"
    target.write_text("keep me")
    planted = tmp_path / "Preferences"
    planted.symlink_to(target)
    (tmp_path / "Preferences.partial").symlink_to(target)  # the partial too
    write_file(planted, "{}", 0o600)
    assert target.read_text() == "keep me"
    assert not planted.is_symlink() and planted.read_text() == "{}"
    write_private(tmp_path / "secret", "s")
    assert (tmp_path / "secret").stat().st_mode & 0o777 == 0o600
    link = tmp_path / "link-to-precious"
    link.symlink_to(target)
    with pytest.raises(OSError):  # reading as root through a user's symlink: refused
        open_no_follow(link)


def test_the_first_closed_folder_on_the_way_is_named(tmp_path):
    closed = tmp_path / "closed"
    (closed / "state").mkdir(parents=True)
    closed.chmod(0o700)
    for folder in [tmp_path, *tmp_path.parents]:  # as a non-root run leaves them
        if folder != folder.parent and not folder.stat().st_mode & 0o001 and folder.stat().st_uid == os.geteuid():
            folder.chmod(folder.stat().st_mode | 0o001)
    assert untraversable_ancestor(closed / "state") == closed
    closed.chmod(0o711)
    assert untraversable_ancestor(closed / "state") is None


@root_only
def test_a_uids_leftovers_in_shared_folders_go_and_nobody_elses(tmp_path):
    from keepalive.engine.users import sweep_shared_temporary

    shared = tmp_path / "tmp"
    (shared / "cache-dir" / "deep").mkdir(parents=True)
    (shared / "cache-dir" / "deep" / "data").write_text("x")
    (shared / "note").write_text("x")
    (shared / "theirs").write_text("someone else's")
    target = tmp_path / "root-file"
    target.write_text("root's")
    (shared / "link").symlink_to(target)
    for path in (shared / "cache-dir", shared / "cache-dir" / "deep", shared / "cache-dir" / "deep" / "data",
                 shared / "note", shared / "link"):
        os.chown(path, 61603, 61603, follow_symlinks=False)
    os.chown(shared / "theirs", 61604, 61604)
    removed = sweep_shared_temporary(61603, [shared])
    assert sorted(removed) == sorted(f"{shared}/{name}" for name in ("cache-dir", "note", "link"))
    assert sorted(p.name for p in shared.iterdir()) == ["theirs"]
    assert target.read_text() == "root's"  # the link went, not what it pointed at
