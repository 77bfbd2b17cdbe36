"""Every kind of bad request gets a clear answer and leaves nothing behind."""

from __future__ import annotations

import subprocess
import sys

import httpx
import pytest

from tests.conftest import session_processes


def folders(service) -> set[str]:
    sessions_dir = service.state_dir / "sessions"
    return {p.name for p in sessions_dir.iterdir()} if sessions_dir.is_dir() else set()


def error_fields(response: httpx.Response) -> list[str]:
    return [".".join(str(part) for part in item["loc"]) for item in response.json()["detail"]]


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"name": "Alice"}, "body.name"),
        ({"name": "-leading-dash"}, "body.name"),
        ({"name": "a" * 64}, "body.name"),
        ({"name": "has space"}, "body.name"),
        ({"name": ""}, "body.name"),
        ({"width": 100}, "body.width"),
        ({"height": 99999}, "body.height"),
        ({"width": "wide"}, "body.width"),
        ({"colour": "blue"}, "body.colour"),
        ({"heavyai": {"host": "db", "port": 0}}, "body.heavyai.port"),
        ({"heavyai": {"host": "db", "port": 70000}}, "body.heavyai.port"),
        ({"heavyai": {"host": "db", "protocol": "gopher"}}, "body.heavyai.protocol"),
        ({"heavyai": {"port": 6274}}, "body.heavyai.host"),
        ({"heavyai": {"host": "db", "password": "x"}}, "body.heavyai.password"),
    ],
)
def test_invalid_body_is_422_naming_the_field(keepalive_service, body, field):
    before = folders(keepalive_service)
    response = keepalive_service.client.post("/sessions", json=body)
    assert response.status_code == 422, response.text
    assert field in error_fields(response)
    assert folders(keepalive_service) == before


def test_not_json_is_422(keepalive_service):
    response = keepalive_service.client.post(
        "/sessions", content=b"{not json", headers={"content-type": "application/json"}
    )
    assert response.status_code == 422


@pytest.mark.parametrize("header", [None, "Bearer wrong-token", "Basic abc", "Bearer"])
@pytest.mark.parametrize(
    ("method", "path"),
    [("GET", "/sessions"), ("POST", "/sessions"), ("GET", "/sessions/x"), ("DELETE", "/sessions/x"), ("GET", "/sessions/x/screenshot")],
)
def test_missing_or_wrong_token_is_401(keepalive_service, header, method, path):
    headers = {"Authorization": header} if header else {}
    response = httpx.request(method, keepalive_service.url + path, headers=headers, json={}, trust_env=False)
    assert response.status_code == 401
    assert keepalive_service.token not in response.text


def test_health_needs_no_token_and_shows_no_secret(keepalive_service):
    response = httpx.get(keepalive_service.url + "/health", trust_env=False)
    assert response.status_code == 200
    assert keepalive_service.token not in response.text


@pytest.mark.parametrize(("method", "suffix"), [("GET", ""), ("DELETE", ""), ("GET", "/screenshot")])
def test_unknown_session_is_404(keepalive_service, method, suffix):
    response = keepalive_service.client.request(method, f"/sessions/nosuchsession{suffix}")
    assert response.status_code == 404
    assert "nosuchsession" in response.json()["detail"]


def test_duplicate_name_is_409_and_the_first_session_is_untouched(keepalive_service):
    first = keepalive_service.start_session(name="dup")
    before = folders(keepalive_service)
    response = keepalive_service.client.post("/sessions", json={"name": "dup"})
    assert response.status_code == 409
    assert "dup" in response.json()["detail"]
    assert folders(keepalive_service) == before
    assert keepalive_service.client.get(f"/sessions/{first['id']}").json()["state"] == "ready"
    keepalive_service.stop_session(first["id"])


def test_past_max_sessions_is_429(service_factory):
    service = service_factory("limited", max_sessions=1)
    service.start_session(name="only")
    response = service.client.post("/sessions", json={"name": "one-too-many"})
    assert response.status_code == 429
    assert "limit is 1" in response.json()["detail"]
    assert folders(service) == {service.started[0]}


def test_heavyai_with_an_external_jupyter_is_422(service_factory):
    service = service_factory("external", jupyter_url="http://127.0.0.1:9/?token=abc")
    response = service.client.post("/sessions", json={"heavyai": {"host": "db"}})
    assert response.status_code == 422
    assert "body.heavyai" in error_fields(response)


def test_a_session_that_cannot_start_is_503_with_the_reason_and_leaves_nothing(service_factory, tmp_path):
    broken = tmp_path / "broken-chromium"
    broken.write_text("#!/bin/sh\necho 'chromium: cannot open display (simulated)' >&2\nexit 3\n")
    broken.chmod(0o755)
    service = service_factory("broken", chromium=str(broken), start_timeout=60)
    response = service.client.post("/sessions", json={"name": "doomed"})
    assert response.status_code == 503, response.text
    detail = response.json()["detail"]
    assert "browser exited with code 3" in detail and "cannot open display (simulated)" in detail
    assert folders(service) == set()
    assert session_processes(state_dir=service.state_dir) == []
    assert service.client.get("/sessions").json() == {"sessions": []}
    # the service itself stays usable
    assert httpx.get(service.url + "/health", trust_env=False).status_code == 200


def test_serve_refuses_to_start_without_xpra(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "keepalive", "serve", "--port", "0", "--state-dir", str(tmp_path)],
        env={"PATH": "/usr/bin:/bin", "KEEPALIVE_XPRA": "xpra-not-installed-here"},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2
    assert "apt-get install xpra" in result.stderr


def test_a_display_taken_by_someone_else_is_skipped(service_factory, tmp_path):
    """Another X server grabbing our display between allocation and start: try the next one."""
    marker = tmp_path / "markers" / "first-launch-done"
    marker.parent.mkdir()
    marker.parent.chmod(0o777)  # Xvfb runs as the session's own user when the tests run as root
    wrapper = tmp_path / "xvfb-racing"
    wrapper.write_text(
        "#!/bin/sh\n"
        f"if [ ! -e {marker} ]; then\n"
        f"  touch {marker}\n"
        "  echo '(EE) Server is already active for display 100' >&2\n"
        "  exit 1\n"
        "fi\n"
        'exec Xvfb "$@"\n'
    )
    wrapper.chmod(0o755)
    service = service_factory("racing", xvfb=str(wrapper))
    session = service.start_session(name="second-try")
    assert session["state"] == "ready"
    # the first Xvfb's own account of the display it could not have, kept beside the second's
    logs = service.state_dir / "sessions" / session["id"] / "logs"
    assert "Server is already active for display" in (logs / "xvfb-attempt-1.log").read_text()


def test_a_browser_that_cannot_be_driven_is_503_and_leaves_nothing(service_factory, tmp_path):
    """The display and the 'browser' come up, but CDP leads nowhere: a Playwright error, cleaned up."""
    fake = tmp_path / "chromium-without-cdp"
    fake.write_text(
        "#!/bin/sh\n"
        'for arg in "$@"; do case "$arg" in --user-data-dir=*) dir="${arg#--user-data-dir=}";; esac; done\n'
        'mkdir -p "$dir" && printf "9\\n/devtools/browser/none\\n" > "$dir/DevToolsActivePort"\n'
        "exec sleep 600\n"
    )
    fake.chmod(0o755)
    # the wait for CDP that never comes is the whole start_timeout: short, but ample for Xvfb and Jupyter
    service = service_factory("no-cdp", chromium=str(fake), start_timeout=20)
    response = service.client.post("/sessions", json={"name": "undrivable"})
    assert response.status_code == 503, response.text
    assert "could not start" in response.json()["detail"]
    assert folders(service) == set()
    assert session_processes(state_dir=service.state_dir) == []
    assert service.client.get("/sessions").json() == {"sessions": []}
