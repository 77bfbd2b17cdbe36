"""Old path of the jupyter-server-proxy entry point: see ``keepalive_jupyter.server_proxy``.

An environment installed before the rename names ``server_ext.proxy:setup_keepalive`` in its
entry point metadata until keepalive is installed again.
"""

from keepalive_jupyter.server_proxy import setup_keepalive

__all__ = ["setup_keepalive"]
