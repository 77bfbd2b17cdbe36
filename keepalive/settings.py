"""The one settings object: defaults < ``KEEPALIVE_*`` environment < command-line flags."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


#: Where scripts/setup.sh puts the Jupyter side: beside the service's own ``.venv``.
JUPYTER_VENV_NAME = ".venv-jupyter"


def default_jupyter_python() -> Path:
    """The Python that runs each session's Jupyter server and kernels, when none is configured.

    ``.venv-jupyter`` beside this environment when scripts/setup.sh made one, so that what a
    notebook installs or removes never touches the service's own packages; else this Python
    (a plain ``pip install keepalive[jupyter]`` into one environment).
    """
    beside = Path(sys.prefix).parent / JUPYTER_VENV_NAME / "bin" / "python"
    return beside if beside.exists() else Path(sys.executable)


#: root's state dir: a system service's place, and one that session users can pass through
#: (root's own home is 0700, so per-session users could not reach their folders under it).
ROOT_STATE_DIR = Path("/var/lib/keepalive")


def default_state_dir() -> Path:
    """``$XDG_STATE_HOME/keepalive``, or ``~/.local/state/keepalive`` (the XDG default); for
    root, ``/var/lib/keepalive``."""
    if os.geteuid() == 0:
        return ROOT_STATE_DIR
    base = os.environ.get("XDG_STATE_HOME") or Path.home() / ".local" / "state"
    return Path(base) / "keepalive"


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="KEEPALIVE_", extra="ignore")

    host: str = Field("127.0.0.1", description="Address the service listens on.")
    port: int = Field(8900, ge=0, le=65535, description="Port the service listens on (0: any free port).")
    state_dir: Path = Field(
        default_factory=default_state_dir,
        description="Where the API token, the profile template and the session folders live.",
    )
    api_token: SecretStr | None = Field(
        None,
        description="Bearer token for the API. Unset: generated on first start and stored in the state dir (0600).",
    )
    jupyter_url: str = Field(
        "",
        description="An existing Jupyter server for every session (its token in the URL's ?token=). "
        "Empty: each session gets its own embedded Jupyter server.",
    )
    jupyter_python: Path = Field(
        default_factory=default_jupyter_python,
        description="Python of the environment that runs each session's embedded Jupyter server and its "
        "kernels (it needs jupyterlab and this package's keepalive_jupyter). Default: the .venv-jupyter beside "
        "this installation (scripts/setup.sh makes it), else this Python.",
    )
    chromium: str = Field("chromium", description="Chromium executable (name on PATH or path).")
    xpra: str = Field("xpra", description="xpra executable (name on PATH or path).")
    xvfb: str = Field("Xvfb", description="Xvfb executable (name on PATH or path): each session's display.")
    max_sessions: int = Field(8, ge=1, description="Live sessions allowed at once; one more answers 429.")
    pool_size: int = Field(
        0, ge=0, le=100,
        description="Sessions kept started and waiting (display, Chromium, Jupyter, JupyterLab loaded), so that a "
        "start takes one instead of starting from nothing. Each costs an idle session's memory; the pool never "
        "grows beyond MAX_SESSIONS together with the live sessions. 0: no pool.",
    )
    profile_template: Path | None = Field(
        None,
        description="Chromium profile template tarball. Unset: keepalive makes one in the state dir on first use.",
    )
    start_timeout: float = Field(120.0, gt=0, description="Seconds a session may take to become ready.")
    default_width: int = Field(1280, ge=320, le=7680, description="Screen width of a session that names none.")
    default_height: int = Field(800, ge=240, le=4320, description="Screen height of a session that names none.")
    display_base: int = Field(
        100, ge=1, le=60000, description="Lowest X display number handed to sessions (xpra's :N)."
    )
    stop_sessions_on_exit: bool = Field(
        False,
        description="Stop every session when the service stops. Without it, Ctrl-C and SIGTERM leave "
        "sessions running and the next keepalive serve on the same state dir adopts them.",
    )
    restore_after_reboot: bool = Field(
        True,
        description="A session whose every process ended while no service watched (the machine restarted, or all "
        "were killed) is started again by the next keepalive serve, same id, name and home, and the user is told "
        "(event session_restored). false: such sessions are forgotten (their homes stay) and the log names them. "
        "Sessions stopped on purpose are never restored.",
    )
    probe_interval: float = Field(
        15.0, gt=0, le=3600,
        description="Seconds between liveness probes of each ready session's page and Jupyter server; "
        "three unanswered probes in a row count as hung, handled like a crash.",
    )
    cdp_port: int = Field(
        0, ge=0, le=65535,
        description="Port of the DevTools gateway (each session's browser at ws://HOST:PORT/sessions/ID/cdp, "
        "behind the API token). 0: any free port; GET /sessions/ID shows the URL.",
    )
    session_users: bool = Field(
        True,
        description="When the service runs as root: run each session as a Unix user of its own (from "
        "SESSION_UIDS), owning its home and nothing else. As an ordinary user, sessions share its user.",
    )
    session_uids: str = Field(
        "61000-61999",
        description="uids for session users, FIRST-LAST. They need no /etc/passwd entry; a uid that has "
        "one is skipped. A home keeps its uid.",
    )
    session_cgroups: bool = Field(
        True,
        description="Put each session in a cgroup of its own when the service runs as root on a machine with "
        "cgroups (v2, v1 or both): every process a notebook starts is then found and ended with its session, "
        "and the SESSION_*_MAX limits apply. false: sessions are held together by their user (or a marker).",
    )
    session_memory_max: str | None = Field(
        None,
        description="Memory all of one session's processes may use together (kernels, Jupyter, the kiosk browser), "
        "in binary units: 4G (4 GiB), 4GiB, 4096M. Past it the kernel's OOM killer stops the session's largest "
        "kernel first, and the user is told. Also the most a POST /sessions may ask for. Needs cgroups (root).",
    )
    session_cpu_max: float | None = Field(
        None, gt=0, le=1024,
        description="CPU cores one session's processes may use together (e.g. 1.5). Also the most a POST /sessions "
        "may ask for. Needs cgroups (root).",
    )
    session_pids_max: int | None = Field(
        None, ge=64, le=4_194_304,
        description="Processes and threads one session may have at once (a fork loop stops there; a session's "
        "own parts use about 100). Also the most a POST /sessions may ask for. Needs cgroups (root).",
    )
    cdp_max_clients: int = Field(4, ge=1, le=100, description="DevTools clients per session at once (keepalive's own not counted).")
    cdp_idle_timeout: float = Field(
        600.0, gt=0, le=86400, description="Seconds a DevTools client may stay silent (both ways) before it is disconnected."
    )
    cdp_link_ttl: float = Field(
        300.0, gt=0, le=86400, description="Seconds a DevTools link (POST /sessions/ID/cdp-link) stays valid."
    )
    metrics_token: SecretStr | None = Field(
        None, description="A token that opens GET /metrics only (for Prometheus); the API token opens it too.",
    )
    activity_interval: float = Field(
        2.0, gt=0, le=600,
        description="Seconds at least between two looks at what a session's kernels are doing (GET /sessions/ID "
        "'activity', the events stream, the webhook); a look waits until something changes. Also how often the "
        "session's cgroup is asked for kernels killed for memory.",
    )
    webhook_url: SecretStr | None = Field(
        None,
        description="URL that gets a POST (JSON: session, notebook, outcome) when a run of cells ends in a "
        "session that names no webhook of its own. Treated as a secret: never logged or shown.",
    )
    webhook_min_busy: float = Field(
        60.0, ge=0, le=30 * 86400,
        description="A run shorter than this many seconds does not call the webhook, unless it ended in an error.",
    )
    timeline_shot_every: float = Field(
        300.0, ge=0, le=86400,
        description="Seconds at least between two screenshots of the kiosk that a session's timeline keeps while a "
        "run is busy (0: none; a run that ends in an error and a cell that asks for input are always shot).",
    )
    timeline_max_mb: float = Field(
        50.0, gt=0, le=1_000_000,
        description="MiB of screenshots each home's timeline keeps; past it the oldest go first (their events stay).",
    )
    log_level: str = Field("info", description="Log level of the service (debug, info, warning, error).")
    # The viewer (xpra's HTML5 client, proxied by the service).
    viewer_ticket_ttl: float = Field(
        300.0, gt=0, le=86400, description="Seconds a shareable viewer link stays valid (it works once)."
    )
    viewer_cookie_ttl: float = Field(
        43200.0, gt=0, le=30 * 86400, description="Seconds a browser stays admitted to a viewer after using a link."
    )
    viewer_keyboard_layout: str = Field(
        "us",
        pattern=r"^[A-Za-z0-9_+-]{0,32}$",
        description="Keyboard layout the viewer asks xpra for (a viewer URL's ?keyboard_layout= wins). "
        "Empty: xpra guesses from the viewer browser's language.",
    )
    viewer_sharing: Literal["share", "takeover"] = Field(
        "takeover",
        description="A second viewer of a session: 'share' (both see and control it) "
        "or 'takeover' (the first one is disconnected).",
    )
    viewer_resize: bool = Field(
        True, description="Resize the session's screen to the viewer's window while a viewer is connected."
    )
    viewer_max_width: int = Field(
        2560, ge=320, le=7680, description="Widest screen a viewer may resize a session to (X memory grows with it)."
    )
    viewer_max_height: int = Field(
        1600, ge=240, le=4320, description="Tallest screen a viewer may resize a session to."
    )
    standby_after: float = Field(
        600.0, ge=0, le=10 * 365 * 86400,
        description="Seconds a ready session may go unused (no viewer, DevTools client or screenshot, no kernel "
        "busy) before it goes into standby: its display and kiosk browser stop, its Jupyter server and kernels "
        "run on, and the next use wakes it. 0: never.",
    )
    viewer_linger: float = Field(
        60.0, ge=0, le=86400,
        description="Seconds xpra (the viewers' server, 40 MiB or more) keeps running after the last viewer "
        "of a session left; it starts again, in about a second, when the next one comes.",
    )
    viewer_clipboard: bool = Field(False, description="Share the clipboard between viewer and session.")
    viewer_sound: bool = Field(False, description="Forward the session's sound to the viewer (needs pulseaudio).")
    viewer_printing: bool = Field(False, description="Let the session print to the viewer's printers.")
    viewer_file_transfer: bool = Field(False, description="Allow file transfer between viewer and session.")

    @field_validator("session_memory_max")
    @classmethod
    def _valid_memory_size(cls, value: str | None) -> str | None:
        from keepalive.engine.cgroups import parse_memory_size

        if value is not None and value.strip():
            parse_memory_size(value)
            return value.strip()
        return None

    @property
    def session_memory_max_bytes(self) -> int | None:
        from keepalive.engine.cgroups import parse_memory_size

        return parse_memory_size(self.session_memory_max) if self.session_memory_max else None

    @field_validator("session_uids")
    @classmethod
    def _valid_uid_range(cls, value: str) -> str:
        from keepalive.engine.users import parse_uid_range

        parse_uid_range(value)
        return value

    @property
    def per_session_users(self) -> bool:
        """True when sessions run as users of their own: asked for, and possible (root)."""
        return self.session_users and os.geteuid() == 0

    @field_validator("jupyter_url")
    @classmethod
    def _strip_trailing_slash(cls, value: str) -> str:
        return value.rstrip("/")

    @property
    def sessions_dir(self) -> Path:
        return self.state_dir / "sessions"

    @property
    def homes_dir(self) -> Path:
        """One home per session name: notebooks, settings, the saved browser profile."""
        return self.state_dir / "homes"

    @property
    def timelines_dir(self) -> Path:
        """Each home's timeline (keepalive.engine.timeline): the service's own, not in the home."""
        return self.state_dir / "timelines"

    @property
    def token_file(self) -> Path:
        return self.state_dir / "api-token"
