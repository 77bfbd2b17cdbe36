"""JupyterLab's workspaces (which notebooks are open, and where) written whole or not at all.

jupyterlab_server writes a workspace file in place: truncated, then written. A Jupyter server
killed in between leaves it empty, and the page that the recovery loads next fails on it (a 500
from ``/lab/api/workspaces``) and opens none of the user's notebooks (seen in the suite: the
session's Jupyter server SIGKILLed while the user typed). Here the new content goes to a file
beside it, flushed to disk, and is renamed over it: a kill leaves the last whole workspace.
"""

from __future__ import annotations

import json
import os
import tempfile
import urllib.parse
from pathlib import Path


def write_whole(path: Path, text: str) -> None:
    """``text`` in ``path``, or ``path`` as it was: never a part of it."""
    handle, scratch = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(handle, "w", encoding="utf-8") as file:
            file.write(text)
            file.flush()
            os.fsync(file.fileno())
        os.replace(scratch, path)
    except BaseException:
        Path(scratch).unlink(missing_ok=True)
        raise


def same_text(path: Path, text: str) -> bool:
    """Whether ``path`` holds ``text`` already. JupyterLab puts its workspace back every 10 s or
    so, mostly unchanged: each write would be a flush to disk for nothing."""
    try:
        return path.read_text(encoding="utf-8") == text
    except (OSError, UnicodeDecodeError):
        return False


def install() -> None:
    """Make jupyterlab_server's WorkspacesManager save whole files (once per process)."""
    try:
        from jupyterlab_server import workspaces_handler
    except ImportError:  # a server without JupyterLab keeps no workspaces
        return

    manager = workspaces_handler.WorkspacesManager
    if getattr(manager.save, "keepalive_whole", False):
        return

    def save(self, space_name: str, raw: str) -> Path:
        # the checks jupyterlab_server makes before it writes, with the same errors
        try:
            workspace = json.JSONDecoder().decode(raw)
        except Exception as error:
            raise ValueError(str(error)) from error
        metadata_id = workspace["metadata"]["id"]
        metadata_id = urllib.parse.unquote(metadata_id if metadata_id.startswith("/") else "/" + metadata_id)
        if metadata_id != "/" + space_name:
            raise ValueError(f"Workspace metadata ID mismatch: expected {space_name!r} got {metadata_id!r}")
        self.workspaces_dir.mkdir(parents=True, exist_ok=True)
        path = self.workspaces_dir / (workspaces_handler.slugify(space_name) + workspaces_handler.WORKSPACE_EXTENSION)
        if not same_text(path, raw):
            write_whole(path, raw)
        return path

    save.keepalive_whole = True
    manager.save = save
