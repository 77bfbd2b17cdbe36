"""``python -m keepalive_jupyter.lean_jupyterlab ARGS``: ``python -m jupyterlab ARGS`` for a keepalive
session, without the imports a kiosk's server never uses.

Every session runs a Jupyter server of its own, so what one imports for nothing is paid once per
session. Left out:

- ``rfc3987_syntax``: jupyter_events asks for ``jsonschema[format-nongpl]``, whose "iri" format
  check builds a lark grammar at import. No schema the server validates uses that format, and
  jsonschema skips the check when the module cannot be imported. Measured on a session's server:
  15.5 MiB of USS and 0.8 s of CPU at start.

Only this process goes without: its kernels are processes of their own and import what they like.
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


def main() -> int | None:
    leave_out()
    from jupyterlab.labapp import main as jupyterlab_main

    return jupyterlab_main()


if __name__ == "__main__":
    sys.exit(main())
