"""Setting a session's X screen size with xrandr.

xpra resizes the screen to a viewer's window when one connects, but never back when it leaves,
and Xvfb's RandR can only pick sizes up to the ``-screen`` size it started with. So Xvfb starts
at the largest size a viewer may ask for, and keepalive sets the session's own size at start and
again when the last viewer leaves: the kiosk page (and its screenshot) keeps its width x height
whenever nobody watches. With no viewer there is also nobody to resize the kiosk window to the new
screen (xpra leaves that to its client), so keepalive resizes it itself.
"""

from __future__ import annotations

import asyncio
import logging
import shlex
import sys

from Xlib import X, Xatom
from Xlib import display as xdisplay
from Xlib.error import DisplayError, XError

log = logging.getLogger(__name__)

#: The one output of Xvfb's RandR.
XVFB_OUTPUT = "screen"


def xrandr_script(width: int, height: int, xrandr: str = "xrandr") -> str:
    """A ``sh -c`` script that switches the display in ``$DISPLAY`` to ``width`` x ``height``.

    Creating and adding the mode fail harmlessly when it exists already.
    """
    mode = f"keepalive-{int(width)}x{int(height)}"
    w, h = int(width), int(height)
    x = shlex.quote(xrandr)
    return (
        f"{x} --newmode {mode} 0 {w} {w} {w} {w} {h} {h} {h} {h} 2>/dev/null; "
        f"{x} --addmode {XVFB_OUTPUT} {mode} 2>/dev/null; "
        f"{x} --output {XVFB_OUTPUT} --mode {mode}"
    )


def fit_windows(display: str, width: int, height: int) -> int:
    """Resize every mapped application window on ``display`` to the screen; returns how many.

    xpra, while it runs, wraps each application window in one of its own, so the windows that
    carry a WM_CLASS are looked for a few levels down. A window right on the root (no xpra) is
    also marked full screen (``_NET_WM_STATE``): the kiosk asked for that when it started, but
    with no window manager there was nobody to note it, and an xpra that takes the window over
    later reads the mark from the window and shows it full screen, without a frame.

    Runs in a child process (``python -m keepalive.viewer.screen``): python-xlib takes the X
    cookie from ``$XAUTHORITY`` only.
    """
    conn = xdisplay.Display(display)
    resized = 0
    wm_state = conn.intern_atom("_NET_WM_STATE")
    fullscreen = conn.intern_atom("_NET_WM_STATE_FULLSCREEN")
    try:

        def visit(window, depth: int) -> None:
            nonlocal resized
            for child in window.query_tree().children:
                try:
                    # IsUnviewable counts too: with no viewer connected xpra keeps the kiosk
                    # window mapped inside a frame of its own that is itself unmapped
                    mapped = child.get_attributes().map_state != X.IsUnmapped
                    wm_class = child.get_wm_class()
                except XError:
                    continue
                if wm_class:
                    if mapped:
                        if depth > 0:  # xpra's frame around it: make room first
                            window.configure(width=width, height=height)
                        else:  # no window manager: the state is the window's own to state
                            child.change_property(wm_state, Xatom.ATOM, 32, [fullscreen])
                        child.configure(x=0, y=0, width=width, height=height)
                        resized += 1
                elif depth < 3:
                    visit(child, depth + 1)

        visit(conn.screen().root, 0)
        conn.sync()
    finally:
        conn.close()
    return resized


async def _run(argv: list[str], env: dict[str, str], timeout: float = 15) -> str | None:
    """Run a short helper; None when it succeeded, else what went wrong."""
    proc = await asyncio.create_subprocess_exec(
        *argv, env=env, stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE
    )
    try:
        _, err = await asyncio.wait_for(proc.communicate(), timeout=timeout)
    except TimeoutError:
        proc.kill()
        await proc.wait()
        return f"no answer within {timeout:.0f} s"
    return None if proc.returncode == 0 else err.decode(errors="replace").strip() or f"exit code {proc.returncode}"


async def set_screen_size(display: str, width: int, height: int, env: dict[str, str], windows: bool = True) -> bool:
    """Switch ``display`` to ``width`` x ``height`` and, if ``windows``, fit the kiosk window to it
    (a display with no window yet needs only the first step).

    False (and a log line) if that failed.
    """
    env = {**env, "DISPLAY": display}
    problem = await _run(["sh", "-c", xrandr_script(width, height)], env)
    if problem:
        log.warning("xrandr on %s failed: %s", display, problem)
        return False
    if not windows:
        return True
    problem = await _run([sys.executable, "-m", "keepalive.viewer.screen", display, str(width), str(height)], env)
    if problem:
        log.warning("resizing the windows of %s failed: %s", display, problem)
        return False
    return True


def main(argv: list[str] | None = None) -> int:
    """``python -m keepalive.viewer.screen :N WIDTH HEIGHT``: fit the windows of :N to WxH."""
    display, width, height = (argv if argv is not None else sys.argv[1:])[:3]
    try:
        fit_windows(display, int(width), int(height))
    except (DisplayError, XError, OSError, ValueError) as exc:
        print(f"cannot resize the windows of {display}: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
