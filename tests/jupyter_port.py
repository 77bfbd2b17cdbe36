"""Jupyter servers that tests start on a port the server picks itself.

A port a test picked free and handed to the server may be taken by another worker's server before
this one binds it; jupyter_server then moves on to the next port while the test waits on the first
(CI run of cb4ce5f). With ``--ServerApp.port=0`` the kernel assigns the port at bind time and the
server says which in the file it writes to its runtime dir once it listens.
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Callable
from pathlib import Path

from tests.waiting import wait_until

#: Command-line options for a server on a port of its own choosing.
ANY_PORT = ["--ServerApp.port=0", "--ServerApp.port_retries=0"]


def served_url(runtime_dir: Path, process: subprocess.Popen, describe: Callable[[], object] | None = None,
               timeout: float = 120) -> str:
    """The base URL (no trailing slash) of a server started with ANY_PORT, read from the
    ``jpserver-<pid>.json`` it writes to ``runtime_dir`` (its JUPYTER_RUNTIME_DIR)."""
    info = runtime_dir / f"jpserver-{process.pid}.json"

    def written() -> dict | None:
        try:
            return json.loads(info.read_text())
        except (FileNotFoundError, json.JSONDecodeError):  # not yet, or still being written
            return None

    served = wait_until(f"the Jupyter server to write {info.name}", written, timeout=timeout, every=0.1,
                        describe=describe, process=process)
    return served["url"].rstrip("/")
