"""The installed package: server extension enabled on install, labextension found by Jupyter, the
extension's older names (``server_ext``, ``jupyterlab_omnisci.serverextension``) still working.

These run the `jupyter` commands of the environment that runs the sessions' Jupyter servers
(``.venv-jupyter``, made by scripts/setup.sh) against what `pip install` (wheel or editable)
put into its prefix; a user config dir of their own keeps them from seeing or changing the
developer's ~/.jupyter.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import subprocess
from pathlib import Path

import httpx
import pytest

from keepalive.settings import default_jupyter_python
from tests.jupyter_port import ANY_PORT, served_url
from tests.waiting import wait_until

JUPYTER_PYTHON = default_jupyter_python()
BIN = JUPYTER_PYTHON.parent
PREFIX = BIN.parent


#: The extension's names, each listed by a file the package installs into this folder (from
#: jupyter-config/server-config): ``jupyter server extension enable|disable NAME``
#: (``--sys-prefix`` by default) refuses a name that the folder's config does not list yet.
INSTALLED_CONFIG = Path(PREFIX, "etc", "jupyter", "jupyter_server_config.d")
SHIPPED_CONFIG = Path(__file__).parents[2] / "jupyter-config" / "server-config"
NAMES = {"keepalive_jupyter": True, "server_ext": False, "jupyterlab_omnisci.serverextension": False}


@pytest.fixture
def jupyter(tmp_path):
    """``jupyter`` of the sessions' environment, with a user config dir of its own.

    The tests turn extensions on and off there (``--user``), never in the environment's own
    config (the commands' default), which every session started meanwhile by any test reads. The
    dir starts with the listing the package installs, so the commands accept the same names.
    """
    env = {k: v for k, v in os.environ.items() if not k.startswith("JUPYTER_")}
    env.update(
        JUPYTER_CONFIG_DIR=str(tmp_path / "config"),
        JUPYTER_DATA_DIR=str(tmp_path / "data"),
        JUPYTER_RUNTIME_DIR=str(tmp_path / "runtime"),
        NO_COLOR="1",
    )
    user_config = tmp_path / "config" / "jupyter_server_config.d"
    user_config.mkdir(parents=True)
    for name in NAMES:
        (user_config / f"{name}.json").write_bytes((SHIPPED_CONFIG / f"{name}.json").read_bytes())

    def run(*args: str) -> str:
        proc = subprocess.run(
            [str(BIN / "jupyter"), *args], env=env, capture_output=True, text=True, timeout=120
        )
        output = re.sub(r"\x1b\[[0-9;]*m", "", proc.stdout + proc.stderr)
        assert proc.returncode == 0, output
        # enable and disable refuse a name with this message, yet exit 0
        assert "Validation failed" not in output, output
        return output

    run.env = env
    return run


def test_auto_enable_config_is_installed():
    """keepalive_jupyter on; its older names listed, off (so that enabling them is accepted).
    Each in the file the enable and disable commands write for that name."""
    for name, enabled in NAMES.items():
        path = INSTALLED_CONFIG / f"{name}.json"
        assert path.is_file(), f"{path} missing: is the package installed (pip install -e .)?"
        assert json.loads(path.read_text()) == {"ServerApp": {"jpserver_extensions": {name: enabled}}}


def test_server_extension_enabled_on_install(jupyter):
    out = jupyter("server", "extension", "list")
    assert re.search(r"keepalive_jupyter\s+enabled", out), out
    assert re.search(r"keepalive_jupyter\s+OK", out), out


def test_server_extension_disable_and_enable(jupyter):
    jupyter("server", "extension", "disable", "--user", "keepalive_jupyter")
    assert re.search(r"keepalive_jupyter\s+disabled", jupyter("server", "extension", "list"))
    jupyter("server", "extension", "enable", "--user", "keepalive_jupyter")
    assert not re.search(r"keepalive_jupyter\s+disabled", jupyter("server", "extension", "list"))


def test_the_old_name_server_ext_can_be_enabled(jupyter):
    """`jupyter server extension enable server_ext`, as the README said before the rename: it
    validates and is listed (test_extension_names.py: it serves the same extension, once)."""
    jupyter("server", "extension", "enable", "--user", "server_ext")
    listing = jupyter("server", "extension", "list")
    assert re.search(r"server_ext\s+enabled", listing), listing
    assert re.search(r"server_ext\s+OK", listing), listing
    assert re.search(r"keepalive_jupyter\s+enabled", listing), listing


def test_labextension_installed(jupyter):
    out = jupyter("labextension", "list")
    assert re.search(r"keepalive-heavyai v\S+ enabled OK \(python, keepalive\)", out), out
    static = Path(PREFIX, "share", "jupyter", "labextensions", "keepalive-heavyai", "static")
    assert list(static.glob("remoteEntry.*.js")), f"no built labextension in {static}"


def test_labextension_paths_point_at_the_build():
    """`jupyter labextension develop` and the npm build agree on where the build goes."""
    import keepalive_jupyter

    (entry,) = keepalive_jupyter._jupyter_labextension_paths()
    assert entry["dest"] == "keepalive-heavyai"
    package = json.loads((Path(__file__).parents[2] / "web" / "heavyai" / "package.json").read_text())
    assert package["name"] == entry["dest"]
    assert package["jupyterlab"]["outputDir"] == f"../../keepalive_jupyter/{entry['src']}"


@pytest.mark.parametrize("old_name", ["jupyterlab_omnisci.serverextension", "server_ext"])
def test_an_old_name_alone_serves_the_extension(jupyter, tmp_path, old_name):
    """`jupyter serverextension enable --sys-prefix jupyterlab_omnisci.serverextension` (OmniSci's
    docs) is today `jupyter server extension enable ... jupyterlab_omnisci.serverextension`, and
    `server_ext` was this extension's name: either validates, and a server with only that name
    enabled serves the handoff and keepalive's own routes.

    Enabled in this test's own user config dir (see the ``jupyter`` fixture)."""
    jupyter("server", "extension", "enable", "--user", old_name)
    listing = jupyter("server", "extension", "list")
    assert re.search(rf"{re.escape(old_name)}\s+enabled", listing), listing
    assert re.search(rf"{re.escape(old_name)}\s+OK", listing), listing
    # keepalive_jupyter off for this server, so the old name alone must serve
    jupyter("server", "extension", "disable", "--user", "keepalive_jupyter")
    _serve_under_the_old_name(jupyter, tmp_path)


def _serve_under_the_old_name(jupyter, tmp_path):
    token = secrets.token_hex(8)
    env = {**jupyter.env, "JUPYTER_TOKEN": token, "OMNISCI_HOST": "omnisci.example"}
    (tmp_path / "root").mkdir()
    (tmp_path / "session").write_text("omnisci-era-session")
    log = tmp_path / "server.log"
    server = subprocess.Popen(
        [str(JUPYTER_PYTHON), "-m", "jupyter_server", "--no-browser", "--ip=127.0.0.1", *ANY_PORT,
         "--allow-root", f"--ServerApp.root_dir={tmp_path / 'root'}",
         f"--OmniSciSessionManager.session_file={tmp_path / 'session'}"],
        env=env, stdout=subprocess.DEVNULL, stderr=open(log, "wb"),
    )
    headers = {"Authorization": f"token {token}"}
    try:
        base = served_url(Path(env["JUPYTER_RUNTIME_DIR"]), server, describe=log.read_text)

        def answer():
            try:
                return httpx.get(f"{base}/heavyai/session", headers=headers, timeout=2, trust_env=False)
            except httpx.HTTPError:
                return None

        response = wait_until("the server's /heavyai/session", answer, process=server, describe=log.read_text)
        assert response.status_code == 200, response.text
        body = response.json()
        assert body["session"] == "omnisci-era-session"
        assert body["connection"]["host"] == "omnisci.example" and body["environment"]["host"] == "OMNISCI_HOST"
        # the whole extension, not only the handoff
        activity = httpx.get(f"{base}/api/keepalive/activity", headers=headers, timeout=5, trust_env=False)
        assert activity.status_code == 200, activity.text
        assert (activity.json()["kernels"], activity.json()["lost"], activity.json()["notebooks"]) == ([], [], {})
    finally:
        server.terminate()
        server.wait(30)
