"""``jupyter server extension enable jupyterlab_omnisci.serverextension`` still works.

It enables keepalive's extension, ``keepalive_jupyter``, under its OmniSci-era name: the same app,
loaded once however many of its names are enabled (``keepalive_jupyter`` is, after install).
"""

from __future__ import annotations

# The OmniSci-era class names, for replacement providers written against them
# (``class Mine(OmniSciSessionManager)``, set by ``c.OmniSciConfig.session_manager``).
from keepalive_jupyter.heavyai import BaseSessionManager, HeavyAISession, SessionError
from keepalive_jupyter.heavyai import HeavyAIConfig as OmniSciConfig
from keepalive_jupyter.heavyai import HeavyAISessionManager as OmniSciSessionManager

__all__ = ["BaseSessionManager", "HeavyAISession", "OmniSciConfig", "OmniSciSessionManager", "SessionError"]


def _jupyter_server_extension_points() -> list[dict]:
    from keepalive_jupyter.extension import KeepaliveJupyterExtension

    return [{"module": "jupyterlab_omnisci.serverextension", "app": KeepaliveJupyterExtension}]


def _load_jupyter_server_extension(serverapp):
    """The Notebook-era loader (``jupyter serverextension enable`` on a classic Notebook server)."""
    from keepalive_jupyter.extension import KeepaliveJupyterExtension

    return KeepaliveJupyterExtension._load_jupyter_server_extension(serverapp)


load_jupyter_server_extension = _load_jupyter_server_extension
