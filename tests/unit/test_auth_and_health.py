"""The API token file and the service health checks."""

from __future__ import annotations

import stat

from fastapi.testclient import TestClient

from keepalive.app import create_app
from keepalive.auth import load_or_create_token, token_matches
from keepalive.health import service_checks
from keepalive.settings import Settings


def test_token_is_generated_once_with_mode_0600(tmp_path):
    path = tmp_path / "state" / "api-token"
    token, created = load_or_create_token(None, path)
    assert created and len(token) >= 32
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    again, created_again = load_or_create_token(None, path)
    assert (again, created_again) == (token, False)


def test_configured_token_wins_and_writes_nothing(tmp_path):
    path = tmp_path / "api-token"
    assert load_or_create_token("given", path) == ("given", False)
    assert not path.exists()


def test_token_comparison():
    assert token_matches("abc", "abc")
    assert not token_matches("abc", "abd")
    assert not token_matches("abc", None)
    assert not token_matches("abc", "")


def test_health_names_the_missing_executable(tmp_path):
    settings = Settings(state_dir=tmp_path, chromium="no-such-chromium", api_token="t")
    checks = {check.name: check for check in service_checks(settings)}
    assert not checks["chromium"].ok
    assert "apt-get install chromium" in checks["chromium"].detail
    with TestClient(create_app(settings)) as client:
        response = client.get("/health")
    assert response.status_code == 503
    assert response.json()["failing"] == ["chromium"]
    assert response.json()["status"] == "failing"


def test_health_fails_when_the_jupyter_environment_lacks_jupyterlab(tmp_path):
    """Debian's bare /usr/bin/python3 has no JupyterLab: sessions could not start, so say how to fix it."""
    settings = Settings(state_dir=tmp_path, jupyter_python="/usr/bin/python3", api_token="t")
    check = {check.name: check for check in service_checks(settings)}["jupyter"]
    assert not check.ok
    assert "lacks jupyterlab" in check.detail and "scripts/setup.sh" in check.detail
    assert "KEEPALIVE_JUPYTER_PYTHON" in check.detail


def test_health_fails_for_a_jupyter_python_that_does_not_exist(tmp_path):
    settings = Settings(state_dir=tmp_path, jupyter_python=tmp_path / "nope" / "python", api_token="t")
    check = {check.name: check for check in service_checks(settings)}["jupyter"]
    assert not check.ok and "does not exist" in check.detail


def test_an_external_jupyter_server_needs_no_jupyter_environment(tmp_path):
    settings = Settings(
        state_dir=tmp_path, jupyter_python=tmp_path / "nope", jupyter_url="http://127.0.0.1:1/", api_token="t"
    )
    assert "jupyter" not in {check.name for check in service_checks(settings)}


def test_the_default_jupyter_environment_is_the_one_setup_made(tmp_path):
    """scripts/setup.sh makes .venv-jupyter beside .venv; the service uses it, and it has what sessions need."""
    settings = Settings(state_dir=tmp_path, api_token="t")
    assert settings.jupyter_python.parent.parent.name == ".venv-jupyter", settings.jupyter_python
    assert {check.name: check for check in service_checks(settings)}["jupyter"].ok


def test_health_shows_the_pool_and_there_is_none_with_an_external_jupyter_server(tmp_path, caplog):
    """Sessions of an external server share it (and their workspace is named after them): no pool."""
    settings = Settings(state_dir=tmp_path, pool_size=2, jupyter_url="http://127.0.0.1:1/", api_token="t")
    with TestClient(create_app(settings)) as client:
        pool = client.get("/health").json()["pool"]
    assert pool == {"size": 0, "waiting": 0, "starting": 0}
    assert "no warm pool" in caplog.text
