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
