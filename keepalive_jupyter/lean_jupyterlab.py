"""``python -m keepalive_jupyter.lean_jupyterlab ARGS``: ``python -m jupyterlab ARGS`` for a keepalive
session, without the imports a kiosk's server never uses.

Every session runs a Jupyter server of its own, so what one imports for nothing is paid once per
session. Left out:

- ``rfc3987_syntax``: jupyter_events asks for ``jsonschema[format-nongpl]``, whose "iri" format
  check builds a lark grammar at import. No schema the server validates uses that format, and
  jsonschema skips the check when the module cannot be imported. Measured on a session's server:
  15.5 MiB of USS and 0.8 s of CPU at start.

Only this process goes without: its kernels are processes of their own and import what they like.

Also left out: the page's build check. On every page load (a session's start, each reload and
recovery) JupyterLab asks its server whether the application needs a rebuild, and the server's
answer runs ``node yarn.js config --json`` as the session's user for the npm registry it never
uses here: about 0.6 s of CPU each time, for a kiosk whose JupyterLab is never rebuilt from its
page. A ``buildCheck`` in a page_config.json the user wrote still wins.
"""

from __future__ import annotations

import sys

#: Modules the server must not import: ``None`` in ``sys.modules`` makes ``import`` raise
#: ModuleNotFoundError, which their importers catch.
LEFT_OUT = ("rfc3987_syntax",)


def leave_out() -> None:
    """Make the modules of LEFT_OUT unimportable in this process; call before importing Jupyter."""
    for name in LEFT_OUT:
        sys.modules.setdefault(name, None)  # type: ignore[arg-type]


#: Page settings the kiosk's JupyterLab starts with, unless a page_config.json says otherwise.
PAGE_CONFIG = {"buildCheck": False}


def without_build_check() -> None:
    """Start LabApp's page settings with PAGE_CONFIG (see the module's docstring)."""
    from jupyterlab.labapp import LabApp

    initialize_handlers = LabApp.initialize_handlers

    def initialize_with_page_config(app: LabApp) -> None:
        page_config = app.serverapp.web_app.settings.setdefault("page_config_data", {})
        for key, value in PAGE_CONFIG.items():
            page_config.setdefault(key, value)
        initialize_handlers(app)  # updates it with the static page_config.json files first

    LabApp.initialize_handlers = initialize_with_page_config


def main() -> int | None:
    leave_out()
    without_build_check()
    from jupyterlab.labapp import main as jupyterlab_main

    return jupyterlab_main()


if __name__ == "__main__":
    sys.exit(main())
