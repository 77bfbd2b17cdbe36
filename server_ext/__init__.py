"""The old name of keepalive's Jupyter server extension, now ``keepalive_jupyter``.

Kept so that what was set up under this name keeps working: ``jupyter server extension enable
server_ext`` enables the same extension (loaded once when ``keepalive_jupyter`` is enabled too),
``from server_ext.session import BaseSessionManager`` imports the same classes, and
``python -m server_ext.lean_jupyterlab`` runs the same launcher. Nothing new goes here.

Importing this package must stay free of jupyter_server, as ``keepalive_jupyter``'s must.
"""

from __future__ import annotations

from keepalive_jupyter import LABEXTENSION_NAME

__all__ = ["LABEXTENSION_NAME"]


def __getattr__(name: str):
    # HeavyAIExtension: the extension app's name before it served more than the HeavyAI handoff
    if name in ("HeavyAIExtension", "KeepaliveJupyterExtension"):
        from keepalive_jupyter.extension import KeepaliveJupyterExtension

        return KeepaliveJupyterExtension
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def _jupyter_server_extension_points():
    from keepalive_jupyter.extension import KeepaliveJupyterExtension

    return [{"module": "server_ext", "app": KeepaliveJupyterExtension}]
