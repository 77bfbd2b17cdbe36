"""keepalive's side of a Jupyter server: the server extension ``keepalive_jupyter``.

Every keepalive session runs JupyterLab on a Jupyter server with this extension (and a user's own
Jupyter server can have it too). Its modules:

- ``extension``: the extension app, which sets up every part below and its routes;
- ``heavyai``: the HeavyAI session handoff (``GET {base_url}heavyai/session``, its providers and
  settings, the OmniSci-era names);
- ``executions``, ``recorder``: the record of kernel executions a new page re-attaches to;
- ``journal``, ``iopub_recorder``: that record on disk, one journal per kernel, written by a recorder
  process per kernel that outlives the server (``python -m keepalive_jupyter.iopub_recorder``);
- ``drafts``: cell sources typed but not yet saved, kept by the server;
- ``kiosk``: the kiosk browser's login, and what counts as the server's activity;
- ``kernel_environment``: what kernels started from now on inherit (a warm session taken);
- ``handlers``: the HTTP handlers of the execution record, the activity and the drafts;
- ``lean_jupyterlab``: ``python -m keepalive_jupyter.lean_jupyterlab``, the sessions' launcher;
- ``server_proxy``: keepalive as an app of a user's Jupyter server (jupyter-server-proxy).

The frontend half (the ``?heavyai`` workspace, re-attaching outputs, drafts) ships in
``keepalive_jupyter/labextension`` as a prebuilt JupyterLab extension named ``keepalive-heavyai``.
``server_ext`` and ``jupyterlab_omnisci`` are older names of this extension, kept working.

The extension's app is imported only when Jupyter asks for it: importing this package must stay
free of jupyter_server, so that ``python -m keepalive_jupyter.lean_jupyterlab`` can decide what the
server imports before anything does.
"""

from __future__ import annotations

#: The extension's name (its key in ``c.ServerApp.jpserver_extensions``).
EXTENSION_NAME = "keepalive_jupyter"
LABEXTENSION_NAME = "keepalive-heavyai"


def __getattr__(name: str):
    if name == "KeepaliveJupyterExtension":
        from .extension import KeepaliveJupyterExtension

        return KeepaliveJupyterExtension
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def _jupyter_server_extension_points():
    from .extension import KeepaliveJupyterExtension

    return [{"module": EXTENSION_NAME, "app": KeepaliveJupyterExtension}]


def _jupyter_labextension_paths():
    return [{"src": "labextension", "dest": LABEXTENSION_NAME}]
