"""A real JupyterHub on loopback for the end-to-end tests: configurable-http-proxy, a local
spawner, and single-user servers from ``.venv-hub`` (what a user image would hold: JupyterLab,
jupyter-server-proxy, keepalive). scripts/setup.sh --test installs all of it."""

from __future__ import annotations

import os
import secrets
import shutil
import signal
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from keepalive.engine.allocation import free_port
from tests.conftest import worker_environment
from tests.waiting import wait_until

ROOT = Path(__file__).resolve().parents[2]
HUB_VENV = ROOT / ".venv-hub"
CHP = HUB_VENV / "chp" / "node_modules" / "configurable-http-proxy" / "bin" / "configurable-http-proxy"
#: The service's own environment: the single-user server finds ``keepalive`` on PATH here.
SERVICE_BIN = ROOT / ".venv" / "bin"
PASSWORD = "hub-e2e-password"

CONFIG = """\
import os
from jupyterhub.spawner import LocalProcessSpawner


class SameUserSpawner(LocalProcessSpawner):
    '''Runs every single-user server as the hub's own user, in a home under the test's folder.'''

    def make_preexec_fn(self, name):
        return None

    def user_env(self, env):
        home = os.path.join({homes!r}, self.user.name)
        os.makedirs(home, exist_ok=True)
        env.update(USER=self.user.name, HOME=home, SHELL="/bin/sh")
        return env

    def get_args(self):
        args = super().get_args()
        return args + ["--allow-root"] if os.geteuid() == 0 else args


c.JupyterHub.ip = "127.0.0.1"
c.JupyterHub.port = {port}
c.JupyterHub.hub_ip = "127.0.0.1"
c.JupyterHub.hub_port = {hub_port}
c.ConfigurableHTTPProxy.api_url = "http://127.0.0.1:{proxy_api_port}"
c.ConfigurableHTTPProxy.command = {chp_command!r}
c.ConfigurableHTTPProxy.pid_file = {pid_file!r}
c.JupyterHub.db_url = "sqlite:///{db}"
c.JupyterHub.cookie_secret_file = {cookie_secret!r}
c.JupyterHub.authenticator_class = "dummy"
c.DummyAuthenticator.password = {password!r}
c.Authenticator.allow_all = True
c.JupyterHub.spawner_class = SameUserSpawner
c.Spawner.cmd = [{singleuser!r}]
c.Spawner.args = {args!r}
c.Spawner.default_url = "/lab"
c.Spawner.notebook_dir = "~"
c.Spawner.start_timeout = 60
c.Spawner.http_timeout = 60
c.Spawner.environment = {environment!r}
c.JupyterHub.services = [{{"name": "e2e", "api_token": {api_token!r}}}]
c.JupyterHub.load_roles = [
    {{"name": "e2e", "scopes": ["admin:users", "admin:servers", "access:servers"], "services": ["e2e"]}},
]
"""


def node() -> str:
    """A Node.js new enough for configurable-http-proxy (setup.sh puts one in .venv if Debian's is old)."""
    bundled = ROOT / ".venv" / "node-bin" / "node"
    found = str(bundled) if bundled.exists() else shutil.which("node")
    assert found, "Node.js is needed by the JupyterHub tests (scripts/setup.sh --test installs it)"
    return found


@dataclass
class Hub:
    url: str
    api_token: str
    homes: Path
    log_path: Path
    process: subprocess.Popen
    client: httpx.Client = field(init=False)

    def __post_init__(self) -> None:
        self.client = httpx.Client(
            base_url=self.url, headers={"Authorization": f"token {self.api_token}"}, timeout=180, trust_env=False
        )

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace")

    def spawn(self, user: str, timeout: float = 90) -> None:
        """Create ``user`` and start their server through the hub's REST API; wait until it is up."""
        self.client.post(f"/hub/api/users/{user}")
        response = self.client.post(f"/hub/api/users/{user}/server")
        assert response.status_code in (201, 202), response.text
        wait_until(f"{user}'s server to start",
                   lambda: self.client.get(f"/hub/api/users/{user}").json()["servers"].get("", {}).get("ready"),
                   timeout=timeout, describe=lambda: self.log_text()[-4000:])

    def stop_server(self, user: str, timeout: float = 60) -> None:
        self.client.delete(f"/hub/api/users/{user}/server")
        wait_until(f"{user}'s server to stop", lambda: not self.client.get(f"/hub/api/users/{user}").json()["servers"],
                   timeout=timeout)

    def close(self) -> None:
        self.client.close()
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(10)


def start_hub(folder: Path, environment: dict[str, str], singleuser_args: list[str], timeout: float = 60) -> Hub:
    """JupyterHub on free loopback ports, its state and users' homes under ``folder``."""
    assert (HUB_VENV / "bin" / "jupyterhub").exists(), "JupyterHub is missing: run scripts/setup.sh --test"
    assert CHP.exists(), "configurable-http-proxy is missing: run scripts/setup.sh --test"
    folder.mkdir(parents=True, exist_ok=True)
    homes = folder / "homes"
    homes.mkdir(exist_ok=True)
    port = free_port()
    api_token = secrets.token_urlsafe(24)
    config = folder / "jupyterhub_config.py"
    config.write_text(CONFIG.format(
        homes=str(homes), port=port, hub_port=free_port(), proxy_api_port=free_port(),
        chp_command=[node(), str(CHP)], pid_file=str(folder / "proxy.pid"), db=folder / "hub.sqlite",
        cookie_secret=str(folder / "cookie_secret"), password=PASSWORD,
        singleuser=str(HUB_VENV / "bin" / "jupyterhub-singleuser"), args=singleuser_args,
        # a spawner passes on only the environment it is given: this xdist worker's uids and displays too
        environment={"PATH": f"{SERVICE_BIN}:{os.environ['PATH']}", **worker_environment(), **environment},
        api_token=api_token,
    ))
    log_path = folder / "hub.log"
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            [str(HUB_VENV / "bin" / "jupyterhub"), "-f", str(config)], cwd=folder, stdout=log, stderr=subprocess.STDOUT,
            env={**os.environ, "PATH": f"{HUB_VENV / 'bin'}:{os.environ['PATH']}"},
        )
    hub = Hub(url=f"http://127.0.0.1:{port}", api_token=api_token, homes=homes, log_path=log_path, process=process)
    def answers() -> bool:
        try:
            return hub.client.get("/hub/api/").status_code == 200
        except httpx.HTTPError:
            return False

    try:
        wait_until("jupyterhub to answer", answers, timeout=timeout, every=0.1,
                   describe=lambda: hub.log_text()[-4000:], process=process)
    except AssertionError:
        hub.close()
        raise
    return hub
