"""The installed package: server extension enabled on install, labextension found by Jupyter.

These run the `jupyter` commands of the environment that runs the sessions' Jupyter servers
(``.venv-jupyter``, made by scripts/setup.sh) against what `pip install` (wheel or editable)
put into its prefix; a user config dir of their own keeps them from seeing or changing the
developer's ~/.jupyter.
"""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

import pytest

from keepalive.settings import default_jupyter_python

JUPYTER_PYTHON = default_jupyter_python()
BIN = JUPYTER_PYTHON.parent
PREFIX = BIN.parent


@pytest.fixture
def jupyter(tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith("JUPYTER_")}
    env.update(
        JUPYTER_CONFIG_DIR=str(tmp_path / "config"),
        JUPYTER_DATA_DIR=str(tmp_path / "data"),
        JUPYTER_RUNTIME_DIR=str(tmp_path / "runtime"),
        NO_COLOR="1",
    )

    def run(*args: str) -> str:
        proc = subprocess.run(
            [str(BIN / "jupyter"), *args], env=env, capture_output=True, text=True, timeout=120
        )
        assert proc.returncode == 0, proc.stdout + proc.stderr
        return re.sub(r"\x1b\[[0-9;]*m", "", proc.stdout + proc.stderr)

    run.env = env
    return run


def test_auto_enable_config_is_installed():
    path = Path(PREFIX, "etc", "jupyter", "jupyter_server_config.d", "keepalive_server_ext.json")
    assert path.is_file(), f"{path} missing: is the package installed (pip install -e .)?"
    assert '"server_ext": true' in path.read_text()


def test_server_extension_enabled_on_install(jupyter):
    out = jupyter("server", "extension", "list")
    assert re.search(r"server_ext\s+enabled", out), out
    assert re.search(r"server_ext\s+OK", out), out


def test_server_extension_disable_and_enable(jupyter):
    jupyter("server", "extension", "disable", "server_ext")
    assert re.search(r"server_ext\s+disabled", jupyter("server", "extension", "list"))
    jupyter("server", "extension", "enable", "server_ext")
    assert re.search(r"server_ext\s+enabled", jupyter("server", "extension", "list"))


def test_labextension_installed(jupyter):
    out = jupyter("labextension", "list")
    assert re.search(r"keepalive-heavyai v\S+ enabled OK \(python, keepalive\)", out), out
    static = Path(PREFIX, "share", "jupyter", "labextensions", "keepalive-heavyai", "static")
    assert list(static.glob("remoteEntry.*.js")), f"no built labextension in {static}"


def test_labextension_paths_point_at_the_build():
    """`jupyter labextension develop` and the npm build agree on where the build goes."""
    import json

    import server_ext

    (entry,) = server_ext._jupyter_labextension_paths()
    assert entry["dest"] == "keepalive-heavyai"
    package = json.loads((Path(__file__).parents[2] / "web" / "heavyai" / "package.json").read_text())
    assert package["name"] == entry["dest"]
    assert package["jupyterlab"]["outputDir"] == f"../../server_ext/{entry['src']}"


def test_the_omnisci_era_enable_command_maps_to_server_ext(jupyter, tmp_path):
    """`jupyter serverextension enable --sys-prefix jupyterlab_omnisci.serverextension` (OmniSci's
    docs) is today `jupyter server extension enable ... jupyterlab_omnisci.serverextension`: it
    validates, and a server with only that name enabled serves the handoff."""
    # --sys-prefix, as OmniSci's docs say: it changes the Jupyter environment's own config, so the
    # shipped state (known, disabled) is put back whatever happens
    try:
        jupyter("server", "extension", "enable", "--sys-prefix", "jupyterlab_omnisci.serverextension")
        listing = jupyter("server", "extension", "list")
        assert re.search(r"jupyterlab_omnisci\.serverextension\s+enabled", listing), listing
        assert re.search(r"jupyterlab_omnisci\.serverextension\s+OK", listing), listing
        # this server only: server_ext off, so the old name alone must serve the handoff
        (tmp_path / "config").mkdir(exist_ok=True)
        (tmp_path / "config" / "jupyter_server_config.json").write_text(
            '{"ServerApp": {"jpserver_extensions": {"server_ext": false}}}'
        )
        _serve_the_handoff_under_the_old_name(jupyter, tmp_path)
    finally:
        jupyter("server", "extension", "disable", "--sys-prefix", "jupyterlab_omnisci.serverextension")


def _serve_the_handoff_under_the_old_name(jupyter, tmp_path):
    import secrets
    import time

    import httpx

    from keepalive.engine.allocation import free_port

    token, port = secrets.token_hex(8), free_port()
    env = {**jupyter.env, "JUPYTER_TOKEN": token, "OMNISCI_HOST": "omnisci.example"}
    (tmp_path / "root").mkdir()
    (tmp_path / "session").write_text("omnisci-era-session")
    server = subprocess.Popen(
        [str(JUPYTER_PYTHON), "-m", "jupyter_server", "--no-browser", "--ip=127.0.0.1", f"--port={port}",
         "--allow-root", f"--ServerApp.root_dir={tmp_path / 'root'}",
         f"--OmniSciSessionManager.session_file={tmp_path / 'session'}"],
        env=env, stdout=subprocess.DEVNULL, stderr=open(tmp_path / "server.log", "wb"),
    )
    try:
        deadline = time.monotonic() + 60
        while True:
            assert server.poll() is None, (tmp_path / "server.log").read_text()
            try:
                response = httpx.get(f"http://127.0.0.1:{port}/heavyai/session",
                                     headers={"Authorization": f"token {token}"}, timeout=2, trust_env=False)
                break
            except httpx.HTTPError:
                assert time.monotonic() < deadline, (tmp_path / "server.log").read_text()
                time.sleep(0.2)
        assert response.status_code == 200, response.text
        body = response.json()
        assert body["session"] == "omnisci-era-session"
        assert body["connection"]["host"] == "omnisci.example" and body["environment"]["host"] == "OMNISCI_HOST"
        log = (tmp_path / "server.log").read_text()
        assert "loading server_ext under its OmniSci-era name" in log
    finally:
        server.terminate()
        server.wait(30)
