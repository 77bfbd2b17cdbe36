"""``keepalive serve``'s banner: its "Start a session" commands work when pasted as printed."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from keepalive.engine.allocation import free_port
from tests.conftest import end_serve
from tests.waiting import wait_until

pytestmark = pytest.mark.e2e

BIN = Path(sys.executable).parent


@pytest.fixture
def served(tmp_path, profile_template):
    """``keepalive serve`` on a free port and its own state dir, with no token configured."""
    state_dir, port = tmp_path / "state", free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("KEEPALIVE_")}
    env["PATH"] = f"{BIN}:{env['PATH']}"  # `keepalive` as an installed command
    if os.environ.get("KEEPALIVE_TEST_PROFILE_TEMPLATE"):
        env["KEEPALIVE_PROFILE_TEMPLATE"] = os.environ["KEEPALIVE_TEST_PROFILE_TEMPLATE"]
    log_path = tmp_path / "serve.log"
    with log_path.open("wb") as log:
        serve = subprocess.Popen(
            [str(BIN / "keepalive"), "serve", "--port", str(port), "--state-dir", str(state_dir)],
            env=env, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True,
        )
    url = f"http://127.0.0.1:{port}"
    wait_until("the banner", lambda: "Start a session:" in log_path.read_text(), timeout=60, every=0.1,
               describe=log_path.read_text, process=serve)
    headers = {"Authorization": f"Bearer {(state_dir / 'api-token').read_text().strip()}"}
    try:
        yield url, env, headers, log_path.read_text()
    finally:
        end_serve(url, headers, serve, log_path)


def test_the_banners_curl_and_keepalive_start_work_as_printed(served):
    url, env, headers, banner = served
    examples = [line.strip() for line in banner.split("Start a session:\n", 1)[1].splitlines()[:3]]
    token_line, curl_line, client_line = examples
    assert token_line.startswith("TOKEN=$(cat ") and curl_line.startswith("curl --json ")
    assert client_line.startswith("# or: keepalive start --url ") and "--token-file " in client_line

    curled = subprocess.run(["bash", "-euo", "pipefail", "-c", f"{token_line}\n{curl_line}"],
                            env=env, capture_output=True, text=True, timeout=300)
    assert curled.returncode == 0, curled.stderr
    session = json.loads(curled.stdout)
    assert session["name"] == "alice" and session["state"] == "ready", session
    stopped = httpx.delete(f"{url}/sessions/{session['id']}", headers=headers, timeout=120, trust_env=False)
    assert stopped.status_code == 204

    started = subprocess.run(["bash", "-euo", "pipefail", "-c", client_line.removeprefix("# or: ")],
                             env=env, capture_output=True, text=True, timeout=300)
    assert started.returncode == 0, started.stderr
    assert started.stdout.split()[1:3] == ["alice", "ready"], started.stdout
