"""A session user's own Python environment, layered over the shared Jupyter environment.

The Jupyter environment (``.venv-jupyter``) is shared by every session and belongs to the
service: a session user cannot change it, which is what keeps one user's ``%pip install`` out of
another's kernels. So each home gets a small venv of its own (no packages, no pip of its own)
whose site-packages add the shared one (its own ``.pth`` files included) through a ``.pth``
file. The session's Jupyter
server and kernels run from it: ``%pip install`` and ``%pip uninstall`` work there, in the home,
and a package installed there wins over the shared one of the same name.

Jupyter finds the shared environment's extensions, kernel specs and server config through
``JUPYTER_PATH`` and ``JUPYTER_CONFIG_PATH``, since its ``sys.prefix`` is now the home's venv.
"""

from __future__ import annotations

import asyncio
import subprocess
from pathlib import Path

from keepalive.engine.users import SessionUser

#: Run by the shared environment's Python, as the session's user: (re)make the home's venv
#: and point it at the shared site-packages. An existing venv is kept, with its packages.
MAKE_VENV = """
import pathlib, sys, sysconfig, venv
target = pathlib.Path(sys.argv[1])
shared = sysconfig.get_paths()["purelib"]
venv.EnvBuilder(with_pip=False, symlinks=True).create(target)
site = pathlib.Path(sysconfig.get_paths(vars={"base": str(target), "platbase": str(target)})["purelib"])
# an "import" line, not a bare path: only a site dir added this way gets its own .pth files
# (editable installs, keepalive's among them) processed
(site / "keepalive-shared-environment.pth").write_text(f"import site; site.addsitedir({shared!r})\\n")
"""


class UserPythonError(RuntimeError):
    pass


def venv_dir(home: Path) -> Path:
    return home / ".local" / "keepalive-venv"


async def prepare(shared_python: Path, home: Path, user: SessionUser) -> Path:
    """The home's venv, made or refreshed as ``user``; returns its Python."""
    target = venv_dir(home)

    def make() -> subprocess.CompletedProcess:
        return subprocess.run(
            [str(shared_python), "-I", "-c", MAKE_VENV, str(target)],
            user=user.uid, group=user.gid, extra_groups=[], umask=0o077,
            env={"HOME": str(home), "PATH": "/usr/bin:/bin"}, cwd=home,
            capture_output=True, text=True, timeout=60,
        )

    done = await asyncio.to_thread(make)
    if done.returncode != 0:
        raise UserPythonError(f"could not prepare the home's Python environment: {done.stderr.strip()[-500:]}")
    return target / "bin" / "python"


def shared_jupyter_paths(shared_python: Path) -> dict[str, str]:
    """Where Jupyter finds the shared environment's extensions, kernel specs and config."""
    prefix = shared_python.parent.parent
    return {
        "JUPYTER_PATH": str(prefix / "share" / "jupyter"),
        "JUPYTER_CONFIG_PATH": str(prefix / "etc" / "jupyter"),
    }
