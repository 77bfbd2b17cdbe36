"""Where everything of one session lives, and the environment that keeps it there."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

#: Set in the environment of every child of a session: lets the reaper find each
#: descendant, including the ones that re-parent themselves (chrome_crashpad_handler).
SESSION_MARKER = "KEEPALIVE_SESSION_ID"

XDG_HOMES = {
    "XDG_CONFIG_HOME": "config",
    "XDG_DATA_HOME": "data",
    "XDG_CACHE_HOME": "cache",
    "XDG_STATE_HOME": "state",
}


@dataclass(frozen=True)
class SessionLayout:
    folder: Path

    @property
    def home(self) -> Path:
        return self.folder / "home"

    @property
    def runtime_dir(self) -> Path:
        return self.folder / "run"

    @property
    def profile_dir(self) -> Path:
        return self.folder / "profile"

    @property
    def logs_dir(self) -> Path:
        return self.folder / "logs"

    @property
    def record_file(self) -> Path:
        return self.folder / "session.json"

    @property
    def heavyai_session_file(self) -> Path:
        return self.folder / "heavyai-session.json"

    @property
    def xpra_password_file(self) -> Path:
        return self.folder / "xpra.password"

    @property
    def xpra_conf_dir(self) -> Path:
        return self.folder / "xpra-conf"

    @property
    def xauthority(self) -> Path:
        return self.folder / "Xauthority"

    @property
    def notebooks_dir(self) -> Path:
        return self.folder / "notebooks"

    def log(self, part: str) -> Path:
        return self.logs_dir / f"{part}.log"

    def create(self) -> None:
        """Make the folder tree; private to the user, since it holds tokens and profiles."""
        self.folder.mkdir(parents=True, mode=0o700)
        for sub in (self.home, self.profile_dir, self.logs_dir, self.notebooks_dir, *self.xdg_dirs()):
            sub.mkdir(parents=True, exist_ok=True, mode=0o700)
        self.runtime_dir.mkdir(mode=0o700, exist_ok=True)
        os.chmod(self.runtime_dir, 0o700)  # XDG spec: the runtime dir must be 0700

    def xdg_dirs(self) -> list[Path]:
        return [self.folder / sub for sub in XDG_HOMES.values()]

    def environment(self, session_id: str, base: dict[str, str] | None = None) -> dict[str, str]:
        """The environment for every child: HOME and all XDG dirs inside the session folder."""
        env = dict(os.environ if base is None else base)
        # Nothing of the service's own display or desktop session may leak into a session.
        for key in ("DISPLAY", "XAUTHORITY", "DBUS_SESSION_BUS_ADDRESS", "WAYLAND_DISPLAY"):
            env.pop(key, None)
        env.update({name: str(self.folder / sub) for name, sub in XDG_HOMES.items()})
        env["XDG_RUNTIME_DIR"] = str(self.runtime_dir)
        env["HOME"] = str(self.home)
        env["XAUTHORITY"] = str(self.xauthority)
        env[SESSION_MARKER] = session_id
        return env
