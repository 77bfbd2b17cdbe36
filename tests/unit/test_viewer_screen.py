"""keepalive.viewer.screen.fit_windows on a real Xvfb, with a window of our own standing in for the kiosk."""

from __future__ import annotations

import os
import subprocess

import pytest
from Xlib import X, Xatom
from Xlib import display as xdisplay

from keepalive.engine.xauth import write_authority
from keepalive.viewer.screen import fit_windows
from tests.waiting import wait_until


@pytest.fixture
def xvfb(tmp_path, monkeypatch):
    """A display of its own, behind a cookie, as a session's."""
    number = next(n for n in range(500, 600) if not os.path.exists(f"/tmp/.X{n}-lock"))
    authority = tmp_path / "Xauthority"
    write_authority(authority, number)
    monkeypatch.setenv("XAUTHORITY", str(authority))
    server = subprocess.Popen(
        ["Xvfb", f":{number}", "-screen", "0", "1024x768x24", "-nolisten", "tcp", "-auth", str(authority)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    try:
        wait_until("Xvfb to listen", lambda: os.path.exists(f"/tmp/.X11-unix/X{number}"), timeout=20, every=0.05,
                   process=server)
        yield f":{number}"
    finally:
        server.kill()
        server.wait()


def test_a_window_on_the_root_is_fitted_and_marked_full_screen(xvfb):
    conn = xdisplay.Display(xvfb)
    window = conn.screen().root.create_window(30, 40, 200, 100, 0, conn.screen().root_depth)
    window.set_wm_class("kiosk", "Kiosk")
    window.map()
    nameless = conn.screen().root.create_window(5, 5, 10, 10, 0, conn.screen().root_depth)
    nameless.map()  # no WM_CLASS: not an application window, left alone
    conn.sync()

    assert fit_windows(xvfb, 640, 480) == 1

    geometry = window.get_geometry()
    assert (geometry.x, geometry.y, geometry.width, geometry.height) == (0, 0, 640, 480)
    state = window.get_full_property(conn.intern_atom("_NET_WM_STATE"), Xatom.ATOM)
    assert list(state.value) == [conn.intern_atom("_NET_WM_STATE_FULLSCREEN")]
    assert nameless.get_full_property(conn.intern_atom("_NET_WM_STATE"), X.AnyPropertyType) is None
    assert nameless.get_geometry().width == 10
    conn.close()
