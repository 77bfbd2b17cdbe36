"""Jupyter server extension: hands the HeavyAI database session to JupyterLab.

The frontend half (the ``?heavyai`` workspace) ships in ``server_ext/labextension`` as a
prebuilt JupyterLab extension named ``keepalive-heavyai``.
"""

from .app import HeavyAIExtension

LABEXTENSION_NAME = "keepalive-heavyai"


def _jupyter_server_extension_points():
    return [{"module": "server_ext", "app": HeavyAIExtension}]


def _jupyter_labextension_paths():
    return [{"src": "labextension", "dest": LABEXTENSION_NAME}]
