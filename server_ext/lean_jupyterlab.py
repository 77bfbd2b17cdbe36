"""``python -m server_ext.lean_jupyterlab``: the old name of ``keepalive_jupyter.lean_jupyterlab``."""

import sys

from keepalive_jupyter.lean_jupyterlab import LEFT_OUT, leave_out, main

__all__ = ["LEFT_OUT", "leave_out", "main"]

if __name__ == "__main__":
    sys.exit(main())
