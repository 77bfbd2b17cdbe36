"""The server extension app: what keepalive adds to a Jupyter server, and its routes.

One app, ``KeepaliveJupyterExtension`` (extension name ``keepalive_jupyter``), sets up every part:

- ``GET  {base_url}heavyai/session``: the HeavyAI session handoff (heavyai.py);
- ``GET  {base_url}api/keepalive/executions`` and ``.../activity``: the record of kernel executions
  a new page re-attaches to, and what every kernel is doing (executions.py, recorder.py);
- ``GET|POST|DELETE {base_url}api/keepalive/drafts``: cell sources typed but not saved (drafts.py);
- ``POST {base_url}api/keepalive/kiosk-login``: the kiosk browser's login (kiosk.py), and what of
  keepalive's doing counts as the server's activity;
- ``PUT  {base_url}api/keepalive/kernel-environment``: what kernels started from now on inherit
  (kernel_environment.py).

The app may be enabled under more than one name (``keepalive_jupyter``, and the older
``server_ext`` and ``jupyterlab_omnisci.serverextension``): jupyter_server then makes one app per
name, and only the first one linked serves; the others stand by (see ``_link_jupyter_server_extension``).
"""

from __future__ import annotations

import hashlib
import os
import weakref
from pathlib import Path

from jupyter_server.extension.application import ExtensionApp
from tornado.ioloop import IOLoop

from . import clean_exit, journal, kernel_oom
from .drafts import Drafts
from .handlers import ActivityHandler, DraftsHandler, ExecutionsHandler
from .heavyai import (
    SESSION_MANAGER_SETTING,
    BaseSessionManager,
    HeavyAIConfig,
    HeavyAISessionManager,
    SessionHandler,
    create_session_manager,
)
from .kernel_environment import KernelEnvironmentHandler
from .kiosk import ActivityPolicy, KioskLoginHandler
from .recorder import ExecutionRecorder, RecordingWebsocketConnection, iopub_rate_limit
from .salvage import salvage
from .workspaces import install as install_whole_workspaces

#: The app that serves each server: one per server, whatever names the extension is enabled under.
_SERVING: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


class KeepaliveJupyterExtension(ExtensionApp):
    """keepalive's side of a Jupyter server (see the module's docstring for its routes)."""

    name = "keepalive_jupyter"
    load_other_extensions = True
    classes = [HeavyAIConfig, HeavyAISessionManager, ExecutionRecorder, ActivityPolicy]

    session_manager: BaseSessionManager | None = None
    #: Set by ``initialize``: this app's handlers and settings are in the server.
    _serves = False

    def _link_jupyter_server_extension(self, serverapp):
        serving = _SERVING.setdefault(serverapp, self)
        if serving is not self:
            # Enabled under another name too: jupyter_server made an app for each name. Linking
            # this one as well would read the config twice and, once loaded, add every route,
            # recorder and drafts store twice; it stands by instead.
            self.serverapp = serverapp
            self._linked = True
            self.log.info(
                "keepalive_jupyter: enabled as %s; served once", " and ".join(enabled_names(serverapp))
            )
            return
        super()._link_jupyter_server_extension(serverapp)
        # Check the provider at start-up, not on the first request.
        self.session_manager = create_session_manager(self.config, self.config_file_paths, self.log)
        # Linking happens before the web app is built: the kernel websockets it makes will
        # report execute requests to the execution record. A class configured by the user wins.
        # (Reading the trait here would compute its default too early: check the config instead.)
        configured = "kernel_websocket_connection_class" in serverapp.config.get("ServerApp", {})
        gateway = serverapp.config.get("GatewayClient", {}).get("url") or os.environ.get("JUPYTER_GATEWAY_URL")
        if not configured and not gateway:
            serverapp.kernel_websocket_connection_class = RecordingWebsocketConnection

    @classmethod
    def _load_jupyter_server_extension(cls, serverapp):
        """Initialize the app that serves this server, once (jupyter_server's own lookup, by
        ``name``, would find whichever app was made last and initialize it once per name)."""
        extension = _SERVING.get(serverapp)
        if extension is None:  # loaded without being linked first (a Notebook-era loader)
            extension = cls()
            extension._link_jupyter_server_extension(serverapp)
        if not extension._serves:
            extension.initialize()
        return extension

    def initialize_settings(self):
        self._serves = True
        install_whole_workspaces()  # a server killed while it saves one must not leave it empty
        clean_exit.install()  # a server told to stop must not wait on AnyIO's idle threads
        if self.session_manager is None:
            self.session_manager = create_session_manager(self.config, self.config_file_paths, self.log)
        self.settings[SESSION_MANAGER_SETTING] = self.session_manager
        # Kernels an earlier server of this session left running come back under their ids
        # before anything (the record, a page's session) asks for them (surviving_kernels.py).
        adopt_running = getattr(self.serverapp.kernel_manager, "adopt_running", None)
        if adopt_running is not None:
            adopt_running()
        # The record keeps what the server's websockets would send a page: their rate limit too.
        rate_limit = iopub_rate_limit(self.serverapp.kernel_websocket_connection_class, self.serverapp.config)
        self.execution_recorder = ExecutionRecorder(
            self.serverapp.kernel_manager, rate_limit=rate_limit, config=self.config, log=self.log
        )
        self.settings["keepalive_execution_recorder"] = self.execution_recorder
        self._salvage_lost_kernels()
        self.execution_recorder.start()
        self.activity_policy = ActivityPolicy(self.serverapp, self.execution_recorder, config=self.config, log=self.log)
        self.activity_policy.start()
        kernel_oom.watch_kernels(self.serverapp, self.log)
        # Drafts outlive the server too: a file in its runtime dir, one per notebook root (the
        # default runtime dir is shared by every server of the user).
        root = os.path.realpath(os.path.expanduser(self.serverapp.root_dir))
        store = Path(self.serverapp.runtime_dir) / f"keepalive-drafts-{hashlib.sha256(root.encode()).hexdigest()[:16]}.json"
        self.drafts = Drafts(store, call_later=lambda delay, callback: IOLoop.current().call_later(delay, callback))
        self.settings["keepalive_drafts"] = self.drafts
        contents = self.serverapp.contents_manager
        contents.register_pre_save_hook(self.drafts.pre_save)
        contents.register_post_save_hook(self.drafts.post_save)

    def _salvage_lost_kernels(self) -> None:
        """What kernels that ended while no server ran had printed goes into their notebooks
        (salvage.py), before a page opens them and before old journals are cleared away."""
        lost = getattr(self.serverapp.kernel_manager, "lost", [])
        if not lost:
            return
        try:
            folder = journal.prepare_dir(journal.configured_dir(self.config))
        except OSError as error:
            self.log.warning("keepalive: the journals of lost kernels cannot be read: %s", error)
            return
        salvage(lost, folder, self.serverapp.root_dir, self.log)

    def initialize_handlers(self):
        self.handlers.append((r"/heavyai/session", SessionHandler))
        # Under api/: {base_url}keepalive/ itself is where jupyter-server-proxy serves the service.
        self.handlers.append((r"/api/keepalive/executions", ExecutionsHandler))
        self.handlers.append((r"/api/keepalive/activity", ActivityHandler))
        self.handlers.append((r"/api/keepalive/drafts", DraftsHandler))
        self.handlers.append((r"/api/keepalive/kiosk-login", KioskLoginHandler))
        self.handlers.append((r"/api/keepalive/kernel-environment", KernelEnvironmentHandler))

    async def stop_extension(self):
        recorder = getattr(self, "execution_recorder", None)
        if recorder is not None:
            recorder.stop()
        policy = getattr(self, "activity_policy", None)
        if policy is not None:
            policy.stop()
        drafts = getattr(self, "drafts", None)
        if drafts is not None:
            drafts.write()  # a write that waited for its turn


def enabled_names(serverapp) -> list[str]:
    """The names this extension is enabled under in ``serverapp`` (its jpserver_extensions keys)."""
    return [
        name
        for name, package in sorted(serverapp.extension_manager.extensions.items())
        if package.enabled
        and any(isinstance(point.app, KeepaliveJupyterExtension) for point in package.extension_points.values())
    ]
