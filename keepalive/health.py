"""Whether this service can start and run sessions: executables, disk, state dir."""

from __future__ import annotations

import functools
import os
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from keepalive.settings import Settings

#: Debian packages that provide each executable, for the error message.
DEBIAN_PACKAGES = {"xpra": "xpra", "chromium": "chromium", "Xvfb": "xvfb"}
MIN_FREE_DISK_BYTES = 512 * 1024 * 1024


@dataclass(frozen=True)
class Check:
    name: str
    ok: bool
    detail: str


def executable_check(label: str, command: str, package: str) -> Check:
    found = shutil.which(command)
    if found:
        return Check(label, True, found)
    return Check(label, False, f"'{command}' not found on PATH: install it with 'apt-get install {package}'")


#: What a session's embedded Jupyter server needs from the Jupyter environment.
JUPYTER_MODULES = ("jupyterlab", "ipykernel", "keepalive_jupyter")


@functools.lru_cache(maxsize=8)
def _jupyter_environment_problem(python: Path, mtime: float) -> str:
    """'' when ``python`` imports every module of JUPYTER_MODULES, else what is wrong.

    Cached per interpreter and its modification time: an import check takes a second, and
    /health is probed often.
    """
    probe = "import importlib.util as u, sys; sys.exit(','.join(m for m in sys.argv[1:] if not u.find_spec(m)) or None)"
    try:
        result = subprocess.run(
            [str(python), "-c", probe, *JUPYTER_MODULES], capture_output=True, text=True, timeout=30
        )
    except (OSError, subprocess.SubprocessError) as error:
        return f"cannot run {python}: {error}"
    if result.returncode != 0:
        missing = result.stderr.strip() or "?"
        return f"{python} lacks {missing}"
    return ""


def jupyter_environment_check(python: Path) -> Check:
    """The embedded Jupyter servers' environment can run JupyterLab with keepalive's extensions."""
    fix = "run scripts/setup.sh (it makes .venv-jupyter), or set KEEPALIVE_JUPYTER_PYTHON"
    try:
        mtime = python.stat().st_mtime
    except OSError:
        return Check("jupyter", False, f"{python} does not exist: {fix}")
    problem = _jupyter_environment_problem(python, mtime)
    return Check("jupyter", not problem, f"{problem}: {fix}" if problem else str(python))


def service_checks(settings: Settings) -> list[Check]:
    checks = [
        executable_check("xpra", settings.xpra, DEBIAN_PACKAGES["xpra"]),
        executable_check("chromium", settings.chromium, DEBIAN_PACKAGES["chromium"]),
        executable_check("xvfb", settings.xvfb, DEBIAN_PACKAGES["Xvfb"]),
    ]
    if not settings.jupyter_url:  # only embedded servers need the Jupyter environment
        checks.append(jupyter_environment_check(settings.jupyter_python))
    state_dir = settings.state_dir
    if state_dir.is_dir() and os.access(state_dir, os.W_OK):
        free = shutil.disk_usage(state_dir).free
        checks.append(
            Check(
                "disk",
                free >= MIN_FREE_DISK_BYTES,
                f"{free // (1024 * 1024)} MiB free in {state_dir}"
                + ("" if free >= MIN_FREE_DISK_BYTES else f" (need {MIN_FREE_DISK_BYTES // (1024 * 1024)} MiB)"),
            )
        )
    else:
        checks.append(Check("state_dir", False, f"{state_dir} is missing or not writable"))
    checks.append(isolation_check(settings))
    return checks


def isolation_check(settings: Settings) -> Check:
    """Who sessions run as: always ok (both modes are legitimate), but said plainly."""
    if settings.per_session_users:
        return Check("isolation", True, f"per-session users (uids {settings.session_uids})")
    return Check(
        "isolation", True,
        "shared user: every session runs as the service's own user (for one person or a trusted team)",
    )


def missing_prerequisites(settings: Settings) -> list[Check]:
    """Failing checks that no session could start without: executables and the Jupyter environment."""
    return [check for check in service_checks(settings) if check.name not in ("disk", "state_dir") and not check.ok]
