"""Setting a session's X screen size with xrandr.

xpra resizes the screen to a viewer's window when one connects, but never back when it leaves,
and Xvfb's RandR can only pick sizes up to the ``-screen`` size it started with. So Xvfb starts
at the largest size a viewer may ask for, and keepalive sets the session's own size at start and
again when the last viewer leaves: the kiosk page (and its screenshot) keeps its width x height
whenever nobody watches.
"""

from __future__ import annotations

import asyncio
import logging
import shlex

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


def xpra_start_option(width: int, height: int) -> str:
    """``--start=...`` for xpra: size the screen as soon as the display exists."""
    return "--start=sh -c " + shlex.quote(xrandr_script(width, height))


async def set_screen_size(display: str, width: int, height: int, env: dict[str, str]) -> bool:
    """Switch ``display`` to ``width`` x ``height``; False (and a log line) if xrandr failed."""
    proc = await asyncio.create_subprocess_exec(
        "sh",
        "-c",
        xrandr_script(width, height),
        env={**env, "DISPLAY": display},
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        _, err = await asyncio.wait_for(proc.communicate(), timeout=15)
    except TimeoutError:
        proc.kill()
        await proc.wait()
        log.warning("xrandr on %s did not answer; screen size left as is", display)
        return False
    if proc.returncode != 0:
        log.warning("xrandr on %s failed: %s", display, err.decode(errors="replace").strip())
        return False
    return True
