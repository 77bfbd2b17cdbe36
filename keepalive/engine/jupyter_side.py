"""A session's Jupyter side: its embedded Jupyter server (or the external one it uses), what
the kernels to come inherit from it, the HeavyAI handoff file, and the unsaved cells carried
to a new server after a crash.

The server is spoken to over HTTP, on routes of the bundled server extension
(``/api/keepalive/...``). Like the display, this part knows nothing of the session's state.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable

import httpx

from keepalive.engine import user_python
from keepalive.engine.browser import HEAVYAI_WORKSPACE_QUERY, PLAIN_WORKSPACE_QUERY
from keepalive.engine.commands import jupyter_runtime_dir
from keepalive.engine.containment import KERNEL_OOM_SCORE_ADJ, KERNEL_OOM_VARIABLE
from keepalive.engine.jupyter import (
    EmbeddedJupyter,
    JupyterEndpoint,
    jupyter_answers,
    offers_heavyai_session,
    split_token,
)
from keepalive.engine.layout import SessionLayout
from keepalive.engine.process import ChildProcess
from keepalive.engine.reaper import session_processes, with_descendants
from keepalive.engine.record import SessionRecord
from keepalive.engine.users import SessionUser, ids_of
from keepalive.files import write_private
from keepalive.models import HeavyAIConnection
from keepalive.settings import Settings
from keepalive.engine.httpclient import new_client

log = logging.getLogger(__name__)


class JupyterSide:
    def __init__(
        self,
        record: SessionRecord,
        settings: Settings,
        *,
        layout: Callable[[], SessionLayout],
        on_exit: Callable[[ChildProcess, int | None], None],
        niceness: Callable[[], int],
        persist: Callable[[], None],
        user: SessionUser | None,
        launch_options: Callable[[str], dict] = lambda part: {},
    ) -> None:
        """``record``: the session's, whose Jupyter pid and address this part keeps up to date
        (saved with ``persist()``); ``niceness()``: what a new server starts at."""
        self.record = record
        self.settings = settings
        self._layout = layout
        self._on_exit = on_exit
        self._niceness = niceness
        self._persist = persist
        self.user = user
        self._launch_options = launch_options
        #: The session's own server; None on an external one (``JUPYTER_URL``).
        self.jupyter: EmbeddedJupyter | None = None
        self.endpoint: JupyterEndpoint | None = None

    @property
    def id(self) -> str:
        return self.record.id

    @property
    def _owner(self) -> tuple[int, int] | None:
        return ids_of(self.user)

    # -- what the session asks ------------------------------------------------------------

    @property
    def healthy(self) -> bool:
        """The own server runs; an external one counts as up once known."""
        return self.jupyter.process.running if self.jupyter else self.endpoint is not None

    @property
    def lost(self) -> bool:
        """The session's own server died, or a restart did not get as far as starting one (an
        external one is never restarted by us)."""
        return not self.settings.jupyter_url and (self.jupyter is None or not self.jupyter.process.running)

    @property
    def pid(self) -> int | None:
        return self.jupyter.process.pid if self.jupyter else None

    def children(self) -> list[ChildProcess]:
        return [self.jupyter.process] if self.jupyter else []

    def spared(self) -> set[int]:
        """What reaping the display's leftovers spares: the server while it runs, and the
        kernels (with what they started), which outlive their server: a kernel, and its IOPub
        recorder, names its connection file in the server's runtime dir on its command line.

        Whatever a session's processes put on their command lines, this only spares processes
        of the same session from a reaping of the display's; a stop ends them all regardless.
        """
        spared = set()
        if self.jupyter is not None and self.jupyter.process.running:
            spared |= with_descendants(self.jupyter.process.pid)
        for process in session_processes(self.id, jupyter_runtime_dir(self._layout()), by_marker=False):
            spared |= with_descendants(process.pid)
        return spared

    async def answers(self, timeout: float) -> bool:
        """The own server answers within ``timeout`` (external, or gone: the exit watcher deals
        with a dead one)."""
        if self.jupyter is None or not self.jupyter.process.running or self.endpoint is None:
            return True
        try:
            return await jupyter_answers(self.endpoint, timeout=timeout)
        except Exception:
            return False

    @property
    def lab_path(self) -> str:
        """JupyterLab's address on the session's server, and the workspace a recovery reopens.

        On a server of its own, the default workspace. On a shared one (``JUPYTER_URL``, the
        user's own server behind JupyterHub), a workspace of the session's own: the default
        one is the user's, and the kiosk must not rearrange their JupyterLab.
        """
        return f"/lab/workspaces/keepalive-{self.record.name}" if self.settings.jupyter_url else "/lab"

    async def landing_path(self) -> str:
        """With ``?heavyai`` when there is a HeavyAI session to build the workspace from: this
        session was handed one, or its external server's extension offers one. Otherwise the
        extension could only report that there is none."""
        heavyai = self.record.heavyai is not None
        if not heavyai and self.settings.jupyter_url and self.endpoint is not None:
            heavyai = await offers_heavyai_session(self.endpoint)
        return self.lab_path + (HEAVYAI_WORKSPACE_QUERY if heavyai else PLAIN_WORKSPACE_QUERY)

    # -- start, adopt, stop -----------------------------------------------------------------

    async def start(self, env: dict[str, str]) -> JupyterEndpoint:
        if self.settings.jupyter_url:
            self.endpoint = split_token(self.settings.jupyter_url)
            log.info("session %s: using the Jupyter server at %s", self.id, self.endpoint.url)
            return self.endpoint
        jupyter_env = dict(env)
        python = self.settings.jupyter_python
        layout = self._layout()
        if self.user is not None:  # the shared environment is read-only to it: one of its own on top
            python = await user_python.prepare(python, layout.home, self.user)
            jupyter_env.update(user_python.shared_jupyter_paths(self.settings.jupyter_python))
        jupyter_env.update(self.heavyai_variables())  # the kernel reads the connection from here
        options = self._launch_options("jupyter")
        if "oom_score_adj" in options:  # the kernels it starts go first when memory runs out
            jupyter_env[KERNEL_OOM_VARIABLE] = str(KERNEL_OOM_SCORE_ADJ)
        self.jupyter = EmbeddedJupyter(
            layout, jupyter_env, python, on_exit=self._on_exit, user=self.user, niceness=self._niceness(),
            launch_options=options,
        )
        endpoint = await self.jupyter.start(self.settings.start_timeout)
        self.record.jupyter_pid = self.jupyter.process.pid
        self.record.jupyter_started_at = self.jupyter.process.started_at
        self.record.jupyter_url = endpoint.url
        self._persist()
        log.info("session %s: jupyter pid %s serving %s", self.id, self.jupyter.process.pid, endpoint.url)
        self.endpoint = endpoint
        return endpoint

    async def restart(self, env: dict[str, str]) -> None:
        """A new server in place of this one (which died, or is stopped here): the kernels run
        on, and the new server takes them back (keepalive_jupyter/surviving_kernels.py)."""
        await self.stop()
        await self.start(env)

    def adopt(self) -> None:
        """The server an earlier service started (or the external one), found again from the record."""
        if self.settings.jupyter_url:
            self.endpoint = split_token(self.settings.jupyter_url)
            return
        record = self.record
        self.jupyter = EmbeddedJupyter.adopt(
            self._layout(), self.settings.jupyter_python, record.jupyter_pid, record.jupyter_started_at,
            record.jupyter_url, on_exit=self._on_exit,
        )
        self.endpoint = self.jupyter.endpoint

    def detach(self) -> None:
        if self.jupyter is not None:
            self.jupyter.process.detach()

    async def stop(self) -> None:
        if self.jupyter is not None:
            await self.jupyter.stop()
            self.jupyter = None

    async def stop_hung(self) -> None:
        """A hung server cannot be talked to: only a new one helps (the session then recovers)."""
        if self.jupyter is not None:
            await self.jupyter.stop()

    # -- what the server is told --------------------------------------------------------------

    def heavyai_variables(self) -> dict[str, str]:
        """The HeavyAI connection as the kernels read it (none without a handoff)."""
        heavyai = self.record.heavyai
        if heavyai is None:
            return {}
        return {"HEAVYAI_PROTOCOL": heavyai["protocol"], "HEAVYAI_HOST": heavyai["host"],
                "HEAVYAI_PORT": str(heavyai["port"])}

    def write_heavyai_handoff(self, heavyai: HeavyAIConnection) -> None:
        """The session file (0600) the server extension reads; the rest goes in Jupyter's environment."""
        content = {
            "session": heavyai.session_id.get_secret_value() if heavyai.session_id else "",
            "query": heavyai.query or "",
        }
        write_private(self._layout().heavyai_session_file, json.dumps(content), owner=self._owner)

    async def prepare_kernels(self) -> None:
        """What the kernels to come inherit from the Jupyter server: the HeavyAI connection, and
        a working directory in the user's home (keepalive_jupyter/kernel_environment.py)."""
        assert self.endpoint is not None
        variables = self.heavyai_variables()
        async with new_client(timeout=10.0) as client:
            response = await client.put(
                f"{self.endpoint.url}/api/keepalive/kernel-environment",
                headers=self.endpoint.auth_headers, json={"variables": variables},
            )
        if response.status_code != 204:
            raise RuntimeError(f"the Jupyter server did not take the kernels' environment ({response.status_code})")

    async def carry_drafts(self, requests: list[dict]) -> None:
        """Keys the page still shows that the killed Jupyter server never got: to the new one,
        where the page about to be reloaded finds them as it finds any drafts (keepalive_jupyter/drafts.py)."""
        assert self.endpoint is not None
        carried = 0
        async with new_client(timeout=10.0) as client:
            for request in requests:
                try:
                    response = await client.post(
                        f"{self.endpoint.url}/api/keepalive/drafts",
                        headers=self.endpoint.auth_headers, json=request,
                    )
                except httpx.HTTPError as error:
                    log.warning("session %s: unsaved cells not carried to the new Jupyter server: %s", self.id, error)
                    continue
                if response.status_code == 204:
                    carried += 1
                else:
                    log.warning("session %s: the new Jupyter server refused unsaved cells (%s)",
                                self.id, response.status_code)
        if carried:
            log.info("session %s: unsaved cells of %d notebook(s) carried to the new Jupyter server", self.id, carried)
