"""The Jupyter side of a session: an embedded server of its own, or an existing one."""

from __future__ import annotations

import json
import os
import secrets
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import httpx

from keepalive.engine.commands import jupyter_command, jupyter_runtime_dir
from keepalive.engine.layout import SessionLayout
from keepalive.engine.process import ChildProcess
from keepalive.engine.users import SessionUser, ids_of
from keepalive.files import write_file, write_private
from keepalive.engine.httpclient import new_client

# JupyterLab defaults for a kiosk nobody may be watching: no news prompt, no update check,
# and a new notebook starts the preferred kernel instead of waiting in a "Select Kernel" dialog.
# Documents are saved every 2 s (JupyterLab's default is 120 s): the file on disk, outputs
# included, is never far behind the screen when the kiosk browser dies.
# They are JupyterLab's "overrides" (new defaults, which the user may still change), in a folder
# of the service's own: nothing is written into the home, which the session's user owns.
KIOSK_LAB_SETTINGS = {
    "@jupyterlab/docmanager-extension:plugin": {
        "autosave": True,
        "autosaveInterval": 2,
    },
    "@jupyterlab/apputils-extension:notification": {
        "fetchNews": "false",
        "checkForUpdates": False,
    },
    "@jupyterlab/notebook-extension:tracker": {
        "autoStartDefaultKernel": True,
    },
}


@dataclass(frozen=True)
class JupyterEndpoint:
    """Where a session's browser goes: the server's URL (no token) and the token apart."""

    url: str
    token: str

    @property
    def auth_headers(self) -> dict[str, str]:
        """What a request to the server carries to be let in (nothing without a token)."""
        return {"Authorization": f"token {self.token}"} if self.token else {}


def split_token(url: str) -> JupyterEndpoint:
    """``http://h:p/base?token=T`` -> (``http://h:p/base``, ``T``): the token never travels in a URL we show."""
    parts = urlsplit(url)
    query = parse_qsl(parts.query)
    token = next((value for key, value in query if key == "token"), "")
    rest = urlencode([(key, value) for key, value in query if key != "token"])
    return JupyterEndpoint(urlunsplit((parts.scheme, parts.netloc, parts.path.rstrip("/"), rest, "")), token)


def write_lab_settings(layout: SessionLayout) -> None:
    layout.lab_app_settings_dir.mkdir(mode=0o755, exist_ok=True)
    write_file(layout.lab_app_settings_dir / "overrides.json", json.dumps(KIOSK_LAB_SETTINGS), 0o644)


def user_settings_dir(home: Path) -> Path:
    """Where the session's JupyterLab keeps the user's settings, inside its HOME."""
    return home / ".jupyter" / "lab" / "user-settings"


def user_setting_plugins(home: Path) -> list[str]:
    """The JupyterLab plugins the user has settings for (``@scope/package:plugin`` ids)."""
    folder = user_settings_dir(home)
    suffix = ".jupyterlab-settings"
    return sorted(
        f"{path.parent.relative_to(folder).as_posix()}:{path.name[:-len(suffix)]}"
        for path in folder.rglob(f"*{suffix}") if path.is_file()
    ) if folder.is_dir() else []


async def jupyter_answers(endpoint: JupyterEndpoint, timeout: float = 2.0) -> bool:
    """True when the server answers its status API with this token."""
    async with new_client(timeout=timeout) as client:
        response = await client.get(f"{endpoint.url}/api/status", headers=endpoint.auth_headers)
    return response.status_code == 200


async def offers_heavyai_session(endpoint: JupyterEndpoint, timeout: float = 5.0) -> bool:
    """True when the server's extension has a HeavyAI session to build the workspace from."""
    try:
        async with new_client(timeout=timeout) as client:
            response = await client.get(f"{endpoint.url}/heavyai/session", headers=endpoint.auth_headers)
    except httpx.HTTPError:
        return False
    return response.status_code == 200


class EmbeddedJupyter:
    """A JupyterLab server for one session, on a free loopback port, with a random token."""

    def __init__(
        self,
        layout: SessionLayout,
        env: dict[str, str],
        python: Path,
        on_exit: Callable[[ChildProcess, int | None], None] | None = None,
        token: str | None = None,
        user: SessionUser | None = None,
        niceness: int = 0,
        launch_options: dict | None = None,
    ) -> None:
        """``launch_options``: the cgroup and OOM order of the process (ChildProcess' arguments)."""
        self.layout = layout
        self.token = token or secrets.token_urlsafe(24)
        self.runtime_dir = jupyter_runtime_dir(layout)
        if not self.runtime_dir.exists():
            self.runtime_dir.mkdir(parents=True, mode=0o700)
            if user is not None:
                os.lchown(self.runtime_dir, user.uid, user.gid)
        env = {
            **env,
            # from the environment, not argv: argv is visible to every user in `ps`
            "JUPYTER_TOKEN": self.token,
            "JUPYTER_RUNTIME_DIR": str(self.runtime_dir),
            "JUPYTERLAB_SETTINGS_DIR": str(user_settings_dir(layout.home)),
            "JUPYTERLAB_WORKSPACES_DIR": str(layout.home / ".jupyter" / "lab" / "workspaces"),
            "PYTHONUNBUFFERED": "1",
        }
        self.process = ChildProcess(
            "jupyter",
            jupyter_command(layout, python),
            env=env,
            cwd=layout.notebooks_dir,
            log_path=layout.log("jupyter"),
            on_exit=on_exit,
            user=ids_of(user),
            niceness=niceness,
            **(launch_options or {}),
        )
        self.endpoint: JupyterEndpoint | None = None

    def _read_runtime_file(self) -> JupyterEndpoint | None:
        path: Path = self.runtime_dir / f"jpserver-{self.process.pid}.json"
        try:
            info = json.loads(path.read_text())
        except (OSError, ValueError):
            return None
        return JupyterEndpoint(f"http://127.0.0.1:{info['port']}{info['base_url'].rstrip('/')}", self.token)

    @classmethod
    def adopt(
        cls,
        layout: SessionLayout,
        python: Path,
        pid: int | None,
        started_at: float | None,
        url: str | None,
        on_exit: Callable[[ChildProcess, int | None], None] | None = None,
    ) -> EmbeddedJupyter:
        """The server an earlier service started for this session, with its token from the
        session's 0600 file. A new one can be started over it with ``restart``."""
        jupyter = cls(layout, {}, python, on_exit=on_exit, token=layout.jupyter_token_file.read_text().strip())
        jupyter.process = ChildProcess.adopt(
            "jupyter", pid, started_at, log_path=layout.log("jupyter"), on_exit=on_exit
        )
        jupyter.endpoint = JupyterEndpoint(url, jupyter.token) if url else None
        return jupyter

    async def start(self, timeout: float) -> JupyterEndpoint:
        write_lab_settings(self.layout)
        # kept for a later service, which adopts this server (0600, in the session's folder)
        write_private(self.layout.jupyter_token_file, self.token)
        await self.process.start()

        async def serving() -> bool:
            endpoint = self._read_runtime_file()
            if endpoint is None or not await jupyter_answers(endpoint):
                return False
            self.endpoint = endpoint
            return True

        await self.process.wait_ready(serving, timeout, what="serving")
        assert self.endpoint is not None
        return self.endpoint

    async def stop(self) -> None:
        await self.process.terminate(timeout=5.0)
