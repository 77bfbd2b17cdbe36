"""The ``keepalive`` client commands, run as a user would, against the real service."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from keepalive.engine.allocation import free_port

pytestmark = pytest.mark.e2e

KEEPALIVE = str(Path(sys.executable).parent / "keepalive")


def run(service, *args: str, token: str | None = None, env: dict | None = None, timeout: float = 300):
    """``keepalive ARGS`` with the service's URL and token in the environment, as a user would set them."""
    environment = {k: v for k, v in os.environ.items() if not k.startswith("KEEPALIVE_")}
    environment.update({"KEEPALIVE_URL": service.url, "KEEPALIVE_API_TOKEN": token or service.token, **(env or {})})
    return subprocess.run([KEEPALIVE, *args], env=environment, capture_output=True, text=True, timeout=timeout)


def test_start_list_show_screenshot_link_stop(keepalive_service, tmp_path):
    started = run(keepalive_service, "start", "--name", "cli-one", "--json")
    assert started.returncode == 0, started.stderr
    session = json.loads(started.stdout)
    keepalive_service.started.append(session["id"])
    assert session["state"] == "ready" and session["name"] == "cli-one"
    # progress went to stderr, naming what it waited for, then the time it took
    assert f"{session['id']} starting" in started.stderr and "ready in" in started.stderr

    table = run(keepalive_service, "list")
    assert table.returncode == 0
    header, *rows = table.stdout.splitlines()
    assert header.split() == ["ID", "NAME", "STATE", "AGE", "RESTARTS", "HEALTH"]
    assert any(row.split()[:3] == [session["id"], "cli-one", "ready"] and row.endswith("ok") for row in rows), rows
    listed = json.loads(run(keepalive_service, "list", "--json").stdout)["sessions"]
    assert session["id"] in [s["id"] for s in listed]

    shown = run(keepalive_service, "show", "cli-one")  # by name
    assert shown.returncode == 0 and f"id:         {session['id']}" in shown.stdout

    png = tmp_path / "shot.png"
    shot = run(keepalive_service, "screenshot", session["id"], "-o", str(png))
    assert shot.returncode == 0, shot.stderr
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    link = run(keepalive_service, "viewer-link", "cli-one")
    assert link.returncode == 0, link.stderr
    url = link.stdout.strip()
    assert url.startswith(f"{keepalive_service.url}/sessions/{session['id']}/viewer/?ticket=")
    page = httpx.get(url, trust_env=False)
    assert page.status_code == 200 and 'id="open"' in page.text  # a working link, not yet spent

    in_use = run(keepalive_service, "delete-home", "cli-one")
    assert in_use.returncode == 1 and "409" in in_use.stderr and "in use" in in_use.stderr
    stopped = run(keepalive_service, "stop", "cli-one")
    assert stopped.returncode == 0 and stopped.stdout.strip() == session["id"]
    assert keepalive_service.client.get(f"/sessions/{session['id']}").status_code == 404
    assert "cli-one" in run(keepalive_service, "homes").stdout.split()  # the home stays
    assert run(keepalive_service, "delete-home", "cli-one").returncode == 0
    assert "cli-one" not in run(keepalive_service, "homes").stdout.split()


def test_start_without_waiting_then_stop_all(service_factory):
    service = service_factory("cli-all")
    first = run(service, "start", "--name", "a-one", "--no-wait")
    assert first.returncode == 0, first.stderr
    assert first.stdout.split()[1:3] == ["a-one", "starting"]
    second = run(service, "start", "--name", "a-two")
    assert second.returncode == 0, second.stderr
    stopped = run(service, "stop", "--all")
    assert stopped.returncode == 0, stopped.stderr
    assert len(stopped.stdout.split()) == 2
    assert service.client.get("/sessions").json()["sessions"] == []


def test_errors_are_one_line_with_exit_codes_scripts_can_use(keepalive_service):
    unknown = run(keepalive_service, "show", "no-such-session")
    assert unknown.returncode == 1
    assert unknown.stderr.strip() == "keepalive show: no session with id or name 'no-such-session'"
    wrong = run(keepalive_service, "list", token="wrong-token")
    assert wrong.returncode == 4 and "refused the API token" in wrong.stderr
    bad_name = run(keepalive_service, "start", "--name", "Not_Valid")
    assert bad_name.returncode == 1 and "name:" in bad_name.stderr and len(bad_name.stderr.strip().splitlines()) == 1
    nobody = run(keepalive_service, "list", env={"KEEPALIVE_URL": f"http://127.0.0.1:{free_port()}"})
    assert nobody.returncode == 3


def test_doctor_on_a_healthy_and_a_broken_machine(keepalive_service, tmp_path):
    healthy = run(keepalive_service, "doctor", "--url", keepalive_service.url)
    assert healthy.returncode == 0, healthy.stdout
    assert "nothing failing" in healthy.stdout
    assert f"ok    service    {keepalive_service.url}" in healthy.stdout

    broken = run(keepalive_service, "doctor", env={"KEEPALIVE_XPRA": str(tmp_path / "no-xpra"),
                                                   "KEEPALIVE_STATE_DIR": str(tmp_path / "state")})
    assert broken.returncode == 1, broken.stdout
    assert "FAIL  xpra" in broken.stdout and "fix: apt-get install xpra" in broken.stdout
    assert "1 failing (xpra)" in broken.stdout
