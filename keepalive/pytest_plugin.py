"""pytest fixtures for testing in a kept-alive browser (installed with keepalive, entry point ``pytest11``).

- ``keepalive_service``: a keepalive service. With ``--keepalive-url`` (or ``KEEPALIVE_URL``) the
  one running there, its token from ``KEEPALIVE_API_TOKEN`` or its state dir (as the ``keepalive``
  command finds it); otherwise a fresh ``keepalive serve`` on a free loopback port with a
  temporary state dir, stopped (with its sessions) at the end of the run.
- ``keepalive_session``: a session started for the test and stopped after it (the session object).
- ``keepalive_page``: that session's kiosk page (JupyterLab), driven by Playwright through the
  session's ``cdp_url``; it uses pytest-playwright's ``playwright`` fixture, so its options apply.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("keepalive")
    group.addoption("--keepalive-url", default=None,
                    help="use the keepalive service at this URL (default: env KEEPALIVE_URL, else start one)")
    group.addoption("--keepalive-start-timeout", type=float, default=240.0,
                    help="seconds a session may take to start (default 240)")


@dataclass
class KeepaliveService:
    """A keepalive service to test against: its URL and an authenticated client."""

    url: str
    token: str
    process: subprocess.Popen | None = None
    state_dir: Path | None = None
    client: httpx.Client = field(init=False)

    def __post_init__(self) -> None:
        self.client = httpx.Client(base_url=self.url, headers={"Authorization": f"Bearer {self.token}"},
                                   timeout=300, trust_env=False)


def _start_service(state_dir: Path, timeout: float = 120) -> KeepaliveService:
    import secrets

    from keepalive.cli import SERVING_LINE

    token = secrets.token_urlsafe(24)
    # port 0: the service binds a free port itself and names it in its banner
    env = {**os.environ, "KEEPALIVE_STATE_DIR": str(state_dir), "KEEPALIVE_PORT": "0",
           "KEEPALIVE_HOST": "127.0.0.1", "KEEPALIVE_API_TOKEN": token}
    log_path = state_dir / "service.log"
    with log_path.open("wb") as log:
        process = subprocess.Popen([sys.executable, "-m", "keepalive", "serve"], env=env, stdout=log,
                                   stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    url = None
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"keepalive serve exited with {process.returncode}; see {log_path}")
        if url is None:
            found = SERVING_LINE.search(log_path.read_text(errors="replace"))
            url = found.group(1) if found else None
        try:
            if url is not None and httpx.get(f"{url}/health", timeout=2, trust_env=False).status_code == 200:
                return KeepaliveService(url, token, process, state_dir)
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    process.kill()
    raise RuntimeError(f"keepalive serve did not become healthy within {timeout:.0f} s; see {log_path}")


@pytest.fixture(scope="session")
def keepalive_service(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator:
    url = request.config.getoption("--keepalive-url") or os.environ.get("KEEPALIVE_URL")
    if url:
        from keepalive.api_client import find_token

        service = KeepaliveService(url.rstrip("/"), find_token(None))
        yield service
        service.client.close()
        return
    state_dir = tmp_path_factory.mktemp("keepalive-state")
    if os.geteuid() == 0:  # session users must pass through the temporary folders (see README, Security)
        for folder in [state_dir, *state_dir.parents]:
            if folder != Path("/") and not folder.stat().st_mode & 0o001:
                folder.chmod((folder.stat().st_mode & 0o7777) | 0o001)
    service = _start_service(state_dir)
    yield service
    for session in service.client.get("/sessions").json()["sessions"]:
        service.client.delete(f"/sessions/{session['id']}")
    service.client.close()
    assert service.process is not None
    service.process.send_signal(signal.SIGTERM)
    service.process.wait(60)


@pytest.fixture
def keepalive_session(request: pytest.FixtureRequest, keepalive_service) -> Iterator[dict]:
    """A session named after the test, ready (JupyterLab on screen), stopped after the test."""
    name = re.sub(r"[^a-z0-9-]+", "-", request.node.name.lower()).strip("-")[:50] or "test"
    name = f"{name}-{os.urandom(3).hex()}"
    timeout = request.config.getoption("--keepalive-start-timeout")
    response = keepalive_service.client.post("/sessions", json={"name": name}, timeout=timeout)
    assert response.status_code == 201, f"keepalive could not start a session: {response.text}"
    session = response.json()
    yield session
    keepalive_service.client.delete(f"/sessions/{session['id']}", timeout=120)


@pytest.fixture
def keepalive_page(keepalive_service, keepalive_session, playwright) -> Iterator:
    """The session's kiosk page (JupyterLab), driven through the session's DevTools endpoint."""
    browser = playwright.chromium.connect_over_cdp(
        keepalive_session["cdp_url"], headers={"Authorization": f"Bearer {keepalive_service.token}"}
    )
    try:
        pages = [page for context in browser.contexts for page in context.pages if page.url.startswith("http")]
        assert pages, "the session's kiosk page is not open"
        yield pages[0]
    finally:
        browser.close()  # disconnects; the kiosk browser goes on
