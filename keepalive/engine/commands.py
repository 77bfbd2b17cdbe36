"""Command lines of a session's children, built as plain lists so they can be tested alone."""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from keepalive.engine.layout import SessionLayout


def running_as_root() -> bool:
    return os.geteuid() == 0


# Without these, Chromium keeps reaching for Google services; on a closed network that is
# a flood of refused connections, and on an open one it is traffic nobody asked for.
QUIET_NETWORK_FLAGS = (
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-quic",
    "--disable-domain-reliability",
    "--disable-breakpad",
    "--metrics-recording-only",
)


@dataclass(frozen=True)
class ScreenSize:
    width: int
    height: int


def chromium_command(
    chromium: str, layout: SessionLayout, screen: ScreenSize, as_other_user: bool = False,
    start_url: str = "about:blank",
) -> list[str]:
    """The kiosk browser: full screen, no first-run UI, CDP on a pipe (see bridge_command),
    opening ``start_url`` (never one with a secret in it: the command line is public)."""
    argv = [
        chromium,
        "--kiosk",
        "--no-first-run",
        "--no-default-browser-check",
        "--noerrdialogs",
        "--disable-session-crashed-bubble",
        # Memory: no spare renderer kept warm for a next site (a kiosk has one), no page kept for
        # a Back button (a kiosk has none), and none of the omnibox's WebUI popups (a kiosk has
        # no omnibox): Chromium 156 loads two of them, the suggestions and the "AI mode" one,
        # into a renderer of their own at start.
        # Not done, though it saves 11 MiB: the network service in the browser process
        # (NetworkServiceInProcess2). The page's last requests (keys just typed, on their way to
        # the server's drafts) would then die with a killed browser process instead of going out.
        "--disable-features=" + ",".join([
            "Translate", "MediaRouter", "DialMediaRouteProvider", "InterestFeedContentSuggestions",
            "SpareRendererForSitePerProcess", "PreloadTopChromeWebUI", "BackForwardCache",
            "WebUIOmniboxPopup", "WebUIOmniboxFullPopup", "WebUIOmniboxAimPopup",
        ]),
        # Page.captureScreenshot draws the page into a surface of its own instead of copying the
        # window's next frame: a median 23 ms against 34 for the kiosk JupyterLab (measured).
        # Every browser Playwright launches has it on, the benchmark's floor among them.
        "--enable-features=CDPScreenshotNewSurface",
        # no keyring exists in a session: without this Chromium may wait on one
        "--password-store=basic",
        *QUIET_NETWORK_FLAGS,
        # CDP over fds 3 and 4, held by the session's bridge (keepalive.engine.cdp_bridge): a TCP
        # port would let any local user drive the browser, since DevTools has no authentication
        "--remote-debugging-pipe",
        f"--user-data-dir={layout.profile_dir}",
        f"--window-size={screen.width},{screen.height}",
        "--window-position=0,0",
    ]
    if running_as_root() and not as_other_user:
        # root cannot use Chromium's sandbox; --test-type hides the warning infobar it causes
        argv += ["--no-sandbox", "--test-type"]
    argv.append(start_url)
    return argv


#: Bytes from which the bridge's allocations get pages of their own, returned when freed
#: (glibc's default before it starts sliding up).
BRIDGE_MMAP_THRESHOLD = 128 * 1024


def bridge_command(python: str, layout: SessionLayout, browser: list[str]) -> list[str]:
    """Chromium under its CDP bridge, which shares the pipe out on the session's own socket.

    It runs on the session's display (``DISPLAY`` in its environment), as a child of the service.

    ``-I``: the bridge needs only the standard library, and nothing from the session's
    environment (PYTHONPATH, user site) may change what runs it.

    A fixed malloc mmap threshold: a screenshot passes through as a few MiB of buffers, and with
    glibc's sliding threshold those are carved from the heap and kept after. 5 MiB of bridge then
    stays at 17 after five of them, and goes back to 5.5 with it (measured).
    """
    from keepalive.engine import cdp_bridge

    return [
        "env", f"MALLOC_MMAP_THRESHOLD_={BRIDGE_MMAP_THRESHOLD}",
        python, "-I", cdp_bridge.__file__, "--socket", str(layout.cdp_socket), "--", *browser,
    ]


def xvfb_command(
    xvfb: str, display: int, layout: SessionLayout, screen: ScreenSize, framebuffer: ScreenSize | None = None,
    fbdir: Path | None = None,
) -> list[str]:
    """The session's virtual X server, exactly the session's size unless ``framebuffer`` says more.

    ``framebuffer``: start larger (RandR can shrink Xvfb's screen but never grow it), so that a
    viewer's window bigger than the session still fits; the service sizes it down at once.
    ``fbdir``: map the framebuffer from a file there (keepalive.engine.framebuffer).
    """
    fb = framebuffer or screen
    argv = [
        xvfb,
        f":{display}",
        # No GLX: Chromium draws in software here with or without it (there is no GPU), and the
        # extension loads Mesa into every Xvfb (10 MiB of USS each, measured).
        "-extension", "GLX",
        # xpra, when a viewer brings it, needs Composite to see the kiosk window's pixels
        "+extension", "Composite",
        "-screen", "0", f"{fb.width}x{fb.height}x24+32",
        "-dpi", "96",
        "-nolisten", "tcp",
        "-noreset",
        "-auth", str(layout.xauthority),
    ]
    if fbdir is not None:
        argv += ["-fbdir", str(fbdir)]
    return argv


#: Read by xpra as the user's config, after the system's: Debian's config starts
#: ``/etc/X11/Xsession`` in every session, which a kiosk does not need and which pops an
#: xmessage error over the browser. Command-line options can only add to such lists.
XPRA_SESSION_CONFIG = """\
# written by keepalive for this session only
start =
system-tray = no
"""


def write_xpra_config(layout: SessionLayout) -> dict[str, str]:
    """Write the session's xpra config; returns the environment that makes xpra read it."""
    layout.xpra_conf_dir.mkdir(parents=True, exist_ok=True)
    (layout.xpra_conf_dir / "xpra.conf").write_text(XPRA_SESSION_CONFIG)
    return {"XPRA_USER_CONF_DIRS": str(layout.xpra_conf_dir)}


def xpra_command(
    xpra: str,
    display: int,
    port: int,
    layout: SessionLayout,
    viewer_flags: Sequence[str] = (),
) -> list[str]:
    """xpra on the session's running display, HTML5 client and websocket on a loopback port
    behind a password: the viewers' server, started while someone watches (see
    keepalive.engine.viewer_server), never the owner of the display or of the browser.

    ``viewer_flags`` (keepalive.viewer.xpra_options.xpra_viewer_flags) come last: they override the
    defaults above with what the viewer settings allow.
    """
    return [
        xpra,
        "start",
        f":{display}",
        # the display and the kiosk browser are the service's own children: xpra takes their
        # windows over when it starts, and hands them back to the root window when it ends
        # (X's save-set does that even when xpra is killed)
        "--use-display=yes",
        "--daemon=no",
        f"--bind-tcp=127.0.0.1:{port}",
        f"--tcp-auth=file:filename={layout.xpra_password_file}",
        # no unix socket: keepalive only talks TCP on loopback, and a socket path inside a
        # deep state dir would pass the 108-byte limit of AF_UNIX
        "--bind=none",
        "--html=on",
        f"--socket-dirs={layout.runtime_dir}",
        f"--log-dir={layout.logs_dir}",
        "--mdns=no",
        "--pulseaudio=no",
        "--notifications=no",
        "--webcam=no",
        # Memory: a JupyterLab screen goes to the HTML5 client as pictures (jpeg, webp, png); the
        # video encoders and colourspace converters xpra loads otherwise cost 15-20 MiB.
        "--video-encoders=none",
        "--csc-modules=none",
        "--printing=no",
        "--file-transfer=no",
        "--open-files=no",
        "--speaker=off",
        "--microphone=off",
        "--clipboard=no",
        "--dbus-launch=no",
        "--dbus-proxy=no",
        "--dbus-control=no",
        "--systemd-run=no",
        "--ssh-upgrade=no",
        "--start-new-commands=no",
        "--exit-with-children=no",
        *viewer_flags,
    ]


def jupyter_command(layout: SessionLayout, python: Path | str) -> list[str]:
    """An embedded JupyterLab on a free loopback port; its token comes from the environment.

    ``python`` is the Jupyter environment's interpreter, not the service's: kernels inherit it.
    """
    argv = [
        str(python),
        "-m",
        # `python -m jupyterlab`, less what a kiosk's server never uses (see that module)
        "keepalive_jupyter.lean_jupyterlab",
        "--no-browser",
        "--ip=127.0.0.1",
        # port 0: the server binds any free port and writes it to its runtime file
        "--ServerApp.port=0",
        "--ServerApp.port_retries=0",
        f"--ServerApp.root_dir={layout.notebooks_dir}",
        f"--HeavyAISessionManager.session_file={layout.heavyai_session_file}",
        f"--LabApp.app_settings_dir={layout.lab_app_settings_dir}",
        "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate",
        # keepalive's own proxy entry (keepalive_jupyter/server_proxy.py) belongs to users' servers, not a kiosk's
        "--ServerApp.jpserver_extensions=jupyter_server_proxy=False",
        # kernels outlive the server, and a new one takes them back with the notebooks' sessions
        # (keepalive_jupyter/surviving_kernels.py): both kept in the session's runtime dir
        "--ServerApp.kernel_manager_class=keepalive_jupyter.surviving_kernels.SurvivingKernelManager",
        f"--SessionManager.database_filepath={jupyter_runtime_dir(layout) / 'sessions.db'}",
    ]
    if running_as_root():
        argv.append("--allow-root")
    return argv


def jupyter_runtime_dir(layout: SessionLayout) -> Path:
    return layout.runtime_dir / "jupyter"
