"""Builds the JupyterLab extension in web/heavyai from its lock file alone.

The build function of pyproject.toml's ``[tool.hatch.build.hooks.jupyter-builder]``, in place of
hatch-jupyter-builder's own ``npm_builder``: that one runs ``npm install``, which resolves again
what the lock file leaves open and writes the result back (a newer npm adds optional packages an
older one left out), so a fresh clone's build changed ``package-lock.json``. ``npm ci`` installs
exactly what the lock file holds, stops if it disagrees with package.json, and never writes it.

It runs in the package build's own environment (hatch-jupyter-builder imports it from the
project's root), so it uses only that environment's packages.
"""

from __future__ import annotations

import logging
from pathlib import Path

from hatch_jupyter_builder.utils import is_stale, normalize_cmd, run

log = logging.getLogger(__name__)


def build_from_lock(
    target_name: str,
    version: str,
    path: str = ".",
    build_dir: str | None = None,
    sources: list[str] | None = None,
    build_cmd: str = "build:prod",
    npm: str | list[str] = "npm",
) -> None:
    """``npm ci`` then ``npm run {build_cmd}`` in ``path``, unless ``build_dir`` is newer than
    every one of ``sources`` (files or folders, relative to ``path``)."""
    package = Path(path).resolve()
    if build_dir and sources and not any(is_stale(build_dir, package / source) for source in sources):
        log.info("labextension: %s is newer than its sources, not rebuilt", build_dir)
        return
    npm_cmd = normalize_cmd(npm)
    run([*npm_cmd, "ci", "--no-audit", "--no-fund"], cwd=str(package))
    run([*npm_cmd, "run", build_cmd], cwd=str(package))
