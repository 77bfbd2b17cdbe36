"""The Jupyter side of a session: token handling and the kiosk's JupyterLab settings."""

from __future__ import annotations

import json

from keepalive.engine.jupyter import split_token, write_lab_settings
from keepalive.engine.layout import SessionLayout


def test_token_is_taken_out_of_an_external_servers_url():
    endpoint = split_token("http://127.0.0.1:8888/base/?token=s3cret&other=1")
    assert endpoint.token == "s3cret"
    assert endpoint.url == "http://127.0.0.1:8888/base?other=1"
    assert "s3cret" not in endpoint.url


def test_url_without_token():
    endpoint = split_token("http://127.0.0.1:8888/")
    assert (endpoint.url, endpoint.token) == ("http://127.0.0.1:8888", "")


def test_kiosk_settings_start_kernels_and_skip_the_news(tmp_path):
    layout = SessionLayout(tmp_path / "s")
    layout.create()
    write_lab_settings(layout)
    # JupyterLab's overrides (new defaults), in the service's part of the session folder
    overrides = json.loads((layout.lab_app_settings_dir / "overrides.json").read_text())
    assert overrides["@jupyterlab/notebook-extension:tracker"]["autoStartDefaultKernel"] is True
    assert overrides["@jupyterlab/apputils-extension:notification"] == {"fetchNews": "false", "checkForUpdates": False}
    assert not (layout.home / ".jupyter").exists()  # nothing written into the user's home
