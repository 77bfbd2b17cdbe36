"""keepalive: keep a JupyterLab browser tab alive on the server."""

__version__ = "0.1.0"
