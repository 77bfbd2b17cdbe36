"""The README's commands, run exactly as printed, as a new user would type them.

``bash scripts/serve.sh`` (the README's first command) runs the service on its default address,
127.0.0.1:8900, with the default state dir under a fresh ``HOME``; then every other bash block
of the README runs in order against it, unless a ``<!-- README test: not run (why) -->`` comment
stands right before it. ``bash scripts/test.sh`` is what CI itself runs.
"""

from __future__ import annotations

import os
import socket
import subprocess
from pathlib import Path

import httpx
import pytest

from keepalive.settings import ROOT_STATE_DIR
from tests.conftest import answers, end_serve
from tests.readme import README, blocks
from tests.waiting import wait_until

pytestmark = pytest.mark.e2e

REPO = README.parent
DEFAULT_URL = "http://127.0.0.1:8900"


def port_8900_is_free() -> bool:
    with socket.socket() as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(("127.0.0.1", 8900))
        except OSError:
            return False
    return True


def user_environment(home: Path) -> dict[str, str]:
    """A login's environment: no KEEPALIVE_* settings, the XDG state dir left to its default."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("KEEPALIVE_", "XDG_"))}
    env["HOME"] = str(home)
    # The one exception: a profile template made once per test run, so the first start is quick.
    template = os.environ.get("KEEPALIVE_TEST_PROFILE_TEMPLATE")
    if template:
        env["KEEPALIVE_PROFILE_TEMPLATE"] = template
    return env


@pytest.fixture
def served_by_serve_sh(tmp_path, profile_template):
    assert port_8900_is_free(), "port 8900 is taken: the README's examples need keepalive's default port"
    home = tmp_path / "home"
    home.mkdir()
    env = user_environment(home)
    log_path = tmp_path / "serve.log"
    with log_path.open("wb") as log:
        serve = subprocess.Popen(
            ["bash", "scripts/serve.sh"], cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL, start_new_session=True,
        )
    # the default state dir: the XDG one under HOME, or root's /var/lib/keepalive
    state_dir = ROOT_STATE_DIR if os.geteuid() == 0 else home / ".local" / "state" / "keepalive"
    token_file = state_dir / "api-token"
    first_start = not token_file.exists()  # root's state dir outlives the test: a token from before
    # serve.sh may first have to finish a set-up
    wait_until(f"serve.sh to serve on {DEFAULT_URL}", lambda: answers(f"{DEFAULT_URL}/health") and token_file.exists(),
               timeout=300, describe=log_path.read_text, process=serve)
    headers = {"Authorization": f"Bearer {token_file.read_text().strip()}"}
    try:
        yield home, env, headers, log_path, first_start
    finally:
        end_serve(DEFAULT_URL, headers, serve, log_path)


def test_serve_sh_then_every_readme_example_works_as_printed(served_by_serve_sh):
    home, env, headers, log_path, first_start = served_by_serve_sh
    banner = log_path.read_text()
    assert DEFAULT_URL in banner
    # the token is printed on the first start only, never again
    assert ("API token (shown once" in banner) == first_start
    assert (headers["Authorization"].split()[1] in banner) == first_start
    examples = [b for b in blocks()[1:] if b.lang == "bash" and b.not_run is None]
    assert examples, "the README has no runnable bash example"
    # in the checkout, where the set-up commands left the reader (.venv/bin/keepalive is relative)
    outputs = [REPO / "shot.png", REPO / "bob.png"]
    assert not [p for p in outputs if p.exists()], "left over from an earlier run: remove them"
    try:
        for block in examples:
            result = subprocess.run(
                ["bash", "-euo", "pipefail", "-c", block.code],
                cwd=REPO, env=env, capture_output=True, text=True, timeout=300,
            )
            assert result.returncode == 0, (
                f"README.md line {block.line}: exit {result.returncode}\n{block.code}\n"
                f"stdout:\n{result.stdout[-3000:]}\nstderr:\n{result.stderr[-3000:]}"
            )
        # What the examples did is visible: real screenshots, and the stopped sessions are gone.
        for shot in outputs:
            assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", f"the example wrote no PNG to {shot}"
    finally:
        for shot in outputs:
            shot.unlink(missing_ok=True)
    live = httpx.get(f"{DEFAULT_URL}/sessions", headers=headers, trust_env=False).json()["sessions"]
    assert not [s for s in live if s["state"] not in ("stopped", "failed")], live


def test_curl_d_without_json_content_type_starts_a_session(keepalive_service):
    """The form-labelled body of ``curl -d '{...}'`` (the README's old example) is taken as JSON."""
    result = subprocess.run(
        ["curl", "-sS", "-o", "/dev/null", "-w", "%{http_code}", "-X", "POST",
         "-H", f"Authorization: Bearer {keepalive_service.token}",
         f"{keepalive_service.url}/sessions?wait=false", "-d", '{"name": "curl-d", "width": 1024}'],
        capture_output=True, text=True, timeout=60,
    )
    assert result.stdout == "202", result.stdout + result.stderr
    (session,) = [s for s in keepalive_service.client.get("/sessions").json()["sessions"] if s["name"] == "curl-d"]
    keepalive_service.started.append(session["id"])
    assert session["width"] == 1024
