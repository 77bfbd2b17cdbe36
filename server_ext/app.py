"""The server extension application and its configuration."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

from jupyter_server.extension.application import ExtensionApp
from tornado.ioloop import IOLoop
from traitlets import TraitError, Type
from traitlets.config import Config, LoggingConfigurable
from traitlets.config.loader import ConfigFileNotFound, JSONFileConfigLoader, PyFileConfigLoader

from .drafts import Drafts
from .environment import KernelEnvironmentHandler
from .handlers import ActivityHandler, DraftsHandler, ExecutionsHandler, SessionHandler
from .kiosk import ActivityPolicy, KioskLoginHandler
from .recorder import ExecutionRecorder, RecordingWebsocketConnection, iopub_rate_limit
from .session import BaseSessionManager, HeavyAISessionManager

#: Legacy (Notebook-era) config files, read as well because the HeavyAI documentation tells
#: users to put these settings there.  jupyter_server itself does not read them.
LEGACY_CONFIG_NAME = "jupyter_notebook_config"


#: Setting sections of the OmniSci edition of this handoff, and their names today.
OMNISCI_ALIASES = {"OmniSciSessionManager": "HeavyAISessionManager", "OmniSciConfig": "HeavyAIConfig"}


class HeavyAIConfig(LoggingConfigurable):
    """Settings of the HeavyAI session handoff (``c.HeavyAIConfig.*``)."""

    session_manager = Type(
        default_value=HeavyAISessionManager,
        klass=BaseSessionManager,
        help="The session manager that provides the HeavyAI session: a subclass of "
        "server_ext.session.BaseSessionManager, given as a class or as an import string "
        '"your_module.YourImplementation". Checked when the server starts.',
    ).tag(config=True)


class HeavyAIExtension(ExtensionApp):
    """Serves ``GET {base_url}/heavyai/session`` to the JupyterLab frontend."""

    name = "heavyai"
    load_other_extensions = True
    classes = [HeavyAIConfig, HeavyAISessionManager, ExecutionRecorder, ActivityPolicy]

    session_manager: BaseSessionManager | None = None

    def _legacy_notebook_config(self) -> Config:
        """Load jupyter_notebook_config.{json,py} from the server's config path."""
        config = Config()
        # Lowest priority first, as traitlets applications do.
        for directory in reversed(self.config_file_paths):
            for loader_class, ext in ((PyFileConfigLoader, ".py"), (JSONFileConfigLoader, ".json")):
                loader = loader_class(LEGACY_CONFIG_NAME + ext, path=directory, log=self.log)
                try:
                    loaded = loader.load_config()
                except ConfigFileNotFound:
                    continue
                self.log.debug("HeavyAI: read settings from %s", loader.full_filename)
                config.merge(loaded)
        return config

    def _effective_config(self) -> Config:
        """Legacy notebook config, overridden by the server's config files and command line;
        then the OmniSci-era section names (OMNISCI_ALIASES) as aliases of today's."""
        config = self._legacy_notebook_config()
        config.merge(self.config)
        for old, new in OMNISCI_ALIASES.items():
            for key, value in config.get(old, {}).items():
                if key in config.get(new, {}):
                    self.log.warning(
                        "HeavyAI: both c.%s.%s and c.%s.%s are set; using c.%s.%s", old, key, new, key, new, key
                    )
                    continue
                config[new][key] = value
        return config

    def _create_session_manager(self) -> BaseSessionManager:
        config = self._effective_config()
        try:
            settings = HeavyAIConfig(config=config, log=self.log)
            manager_class = settings.session_manager
        except TraitError as e:
            raise SystemExit(
                "HeavyAI server extension: c.HeavyAIConfig.session_manager must name a "
                "subclass of server_ext.session.BaseSessionManager (as a class or an import "
                f"string such as 'your_module.YourImplementation'): {e}"
            ) from None
        self.log.info("HeavyAI: session manager %s.%s", manager_class.__module__, manager_class.__qualname__)
        return manager_class(config=config, log=self.log)

    def _link_jupyter_server_extension(self, serverapp):
        super()._link_jupyter_server_extension(serverapp)
        # Check the provider at start-up, not on the first request.
        self.session_manager = self._create_session_manager()
        # Linking happens before the web app is built: the kernel websockets it makes will
        # report execute requests to the execution record. A class configured by the user wins.
        # (Reading the trait here would compute its default too early: check the config instead.)
        configured = "kernel_websocket_connection_class" in serverapp.config.get("ServerApp", {})
        gateway = serverapp.config.get("GatewayClient", {}).get("url") or os.environ.get("JUPYTER_GATEWAY_URL")
        if not configured and not gateway:
            serverapp.kernel_websocket_connection_class = RecordingWebsocketConnection

    def initialize_settings(self):
        if self.session_manager is None:
            self.session_manager = self._create_session_manager()
        self.settings["heavyai_session_manager"] = self.session_manager
        # The record keeps what the server's websockets would send a page: their rate limit too.
        rate_limit = iopub_rate_limit(self.serverapp.kernel_websocket_connection_class, self.serverapp.config)
        self.execution_recorder = ExecutionRecorder(
            self.serverapp.kernel_manager, rate_limit=rate_limit, config=self.config, log=self.log
        )
        self.settings["keepalive_execution_recorder"] = self.execution_recorder
        self.execution_recorder.start()
        self.activity_policy = ActivityPolicy(self.serverapp, self.execution_recorder, config=self.config, log=self.log)
        self.activity_policy.start()
        # Drafts outlive the server too: a file in its runtime dir, one per notebook root (the
        # default runtime dir is shared by every server of the user).
        root = os.path.realpath(os.path.expanduser(self.serverapp.root_dir))
        store = Path(self.serverapp.runtime_dir) / f"keepalive-drafts-{hashlib.sha256(root.encode()).hexdigest()[:16]}.json"
        self.drafts = Drafts(store, call_later=lambda delay, callback: IOLoop.current().call_later(delay, callback))
        self.settings["keepalive_drafts"] = self.drafts
        contents = self.serverapp.contents_manager
        contents.register_pre_save_hook(self.drafts.pre_save)
        contents.register_post_save_hook(self.drafts.post_save)

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
