"""What the viewer settings mean for xpra: server flags, and the HTML5 client's connect settings.

The server flags are the lock that matters (a viewer cannot switch on what the server refuses);
the client settings only make the HTML5 client ask for the same thing, so it does not offer
features that would then fail.
"""

from __future__ import annotations

from keepalive.settings import Settings


def _yes(flag: bool) -> str:
    return "yes" if flag else "no"


def viewer_screen(settings: Settings, width: int, height: int) -> tuple[int, int]:
    """The Xvfb ``-screen`` size: large enough for any viewer, never smaller than the session."""
    if not settings.viewer_resize:
        return width, height
    return max(width, settings.viewer_max_width), max(height, settings.viewer_max_height)


def xpra_viewer_flags(settings: Settings) -> list[str]:
    """Flags appended to ``xpra start`` (later flags win over the engine's defaults)."""
    return [
        # xpra shares with every viewer: VIEWER_SHARING=takeover is the service's to apply, to
        # full viewers only (keepalive.viewer.xpra_proxy), so that watch-only ones stay beside
        "--sharing=yes",
        # no viewer may lock others out
        "--lock=no",
        f"--resize-display={_yes(settings.viewer_resize)}",
        f"--clipboard={_yes(settings.viewer_clipboard)}",
        f"--printing={_yes(settings.viewer_printing)}",
        f"--file-transfer={_yes(settings.viewer_file_transfer)}",
        f"--pulseaudio={_yes(settings.viewer_sound)}",
        f"--speaker={'on' if settings.viewer_sound else 'off'}",
        "--microphone=off",
    ]


def client_settings(settings: Settings, password: str) -> dict[str, str]:
    """Connect settings forced on the HTML5 client (a viewer URL cannot override these)."""
    return {
        "password": password,
        "sharing": "yes",
        "steal": "yes",
        "sound": _yes(settings.viewer_sound),
        "clipboard": _yes(settings.viewer_clipboard),
        "printing": _yes(settings.viewer_printing),
        "file_transfer": _yes(settings.viewer_file_transfer),
        # the xpra password must not be written to sessionStorage on disconnect
        "insecure": "no",
        "action": "connect",
        # "connect" only: never ask the server to start anything
        "start": "",
        "exit_with_client": "no",
        "exit_with_children": "no",
        "floating_menu": "no",
        "remote_logging": "no",
    }


def client_defaults(settings: Settings) -> dict[str, str]:
    """Connect settings a viewer URL may override (``?keyboard_layout=de``)."""
    defaults = {}
    if settings.viewer_keyboard_layout:
        defaults["keyboard_layout"] = settings.viewer_keyboard_layout
    return defaults
