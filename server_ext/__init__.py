"""Jupyter server extension: hands the HeavyAI database session to JupyterLab.

The frontend half (the ``?heavyai`` workspace) ships in ``server_ext/labextension`` as a
prebuilt JupyterLab extension named ``keepalive-heavyai``.

The extension's app is imported only when Jupyter asks for it: importing this package must stay
free of jupyter_server, so that ``python -m server_ext.lean_jupyterlab`` can decide what the
server imports before anything does.
"""

from __future__ import annotations

LABEXTENSION_NAME = "keepalive-heavyai"


def __getattr__(name: str):
    if name == "HeavyAIExtension":
        from .app import HeavyAIExtension

        return HeavyAIExtension
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def _jupyter_server_extension_points():
    from .app import HeavyAIExtension

    return [{"module": "server_ext", "app": HeavyAIExtension}]


def _jupyter_labextension_paths():
    return [{"src": "labextension", "dest": LABEXTENSION_NAME}]
