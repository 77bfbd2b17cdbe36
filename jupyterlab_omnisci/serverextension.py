"""``jupyter server extension enable jupyterlab_omnisci.serverextension`` still works.

It loads keepalive's ``server_ext`` under its old name, unless ``server_ext`` is enabled itself
(the default after install): then the handoff is served once, by ``server_ext``.
"""

from __future__ import annotations

# The OmniSci-era class names, for replacement providers written against them
# (``class Mine(OmniSciSessionManager)``, set by ``c.OmniSciConfig.session_manager``).
from server_ext.app import HeavyAIConfig as OmniSciConfig
from server_ext.session import BaseSessionManager, HeavyAISession, SessionError
from server_ext.session import HeavyAISessionManager as OmniSciSessionManager

__all__ = ["BaseSessionManager", "HeavyAISession", "OmniSciConfig", "OmniSciSessionManager", "SessionError"]


def _jupyter_server_extension_points() -> list[dict[str, str]]:
    return [{"module": "jupyterlab_omnisci.serverextension"}]


def _load_jupyter_server_extension(serverapp) -> None:
    if serverapp.jpserver_extensions.get("server_ext"):
        serverapp.log.info("jupyterlab_omnisci.serverextension: served by server_ext, which is enabled too")
        return
    from server_ext.app import HeavyAIExtension

    serverapp.log.info("jupyterlab_omnisci.serverextension: loading server_ext under its OmniSci-era name")
    # links (config, settings) and initializes (handlers) the extension app, as the manager would
    HeavyAIExtension._load_jupyter_server_extension(serverapp)


# The Notebook-era loader name, for `jupyter serverextension enable` on classic Notebook servers.
load_jupyter_server_extension = _load_jupyter_server_extension
