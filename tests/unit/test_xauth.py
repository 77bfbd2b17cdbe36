"""keepalive.engine.xauth: the file it writes is what xauth (libXau) and python-xlib read."""

from __future__ import annotations

import stat
import subprocess

from Xlib import xauth as xlib_xauth

from keepalive.engine.xauth import FAMILY_LOCAL, FAMILY_WILD, write_authority


def test_the_cookie_file_is_private_and_readable_by_xauth_and_python_xlib(tmp_path):
    path = tmp_path / "Xauthority"
    write_authority(path, 123)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    entries = xlib_xauth.Xauthority(str(path)).entries
    assert [(family, number, name) for family, _, number, name, _ in entries] == [
        (FAMILY_LOCAL, b"123", b"MIT-MAGIC-COOKIE-1"), (FAMILY_WILD, b"123", b"MIT-MAGIC-COOKIE-1"),
    ]
    cookies = {data for *_, data in entries}
    assert len(cookies) == 1 and len(cookies.pop()) == 16
    listed = subprocess.run(["xauth", "-f", str(path), "list"], capture_output=True, text=True, check=True).stdout
    assert listed.count(":123  MIT-MAGIC-COOKIE-1") == 2, listed


def test_every_write_is_a_new_cookie(tmp_path):
    path = tmp_path / "Xauthority"
    write_authority(path, 5)
    first = path.read_bytes()
    write_authority(path, 5)
    assert path.read_bytes() != first
