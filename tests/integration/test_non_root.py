"""The container's path, for real: install and run a session as an ordinary user.

No Docker engine runs here, so this test does what the Dockerfile does, step by step, on this
machine: its ``scripts/setup.sh`` runs (read from the Dockerfile itself) as root and then as a
new ordinary user, in a copy of this checkout in that user's home; then the user's
``keepalive serve`` starts a session. As an ordinary user Chromium must run with its own
sandbox: no ``--no-sandbox`` anywhere, and its renderers confined by seccomp.
"""

from __future__ import annotations

import os
import pwd
import re
import secrets
import shutil
import signal
import subprocess
import time
from pathlib import Path

import httpx
import psutil
import pytest

from keepalive.engine.allocation import free_port
from keepalive.engine.layout import SESSION_MARKER
from tests.conftest import answers
from tests.waiting import wait_until

pytestmark = pytest.mark.e2e

REPO = Path(__file__).parents[2]
USER = "keepalive-ci"


def dockerfile_steps() -> list[tuple[str, str]]:
    """(user, command) for each ``scripts/setup.sh`` call of the Dockerfile, in order."""
    user = "root"
    steps = []
    text = (REPO / "Dockerfile").read_text().replace("\\\n", " ")
    for line in text.splitlines():
        instruction, _, rest = line.strip().partition(" ")
        if instruction == "USER":
            user = rest.strip()
        elif instruction == "RUN":
            steps += [(user, call) for call in re.findall(r"bash scripts/setup\.sh(?: --[\w-]+)?", rest)]
    return steps


def test_the_dockerfile_runs_as_an_ordinary_user_with_a_healthcheck_and_a_volume():
    text = (REPO / "Dockerfile").read_text()
    users = re.findall(r"^USER (\S+)", text, re.M)
    assert users and users[-1] not in ("root", "0"), "the service must not run as root in the container"
    assert re.search(r"^HEALTHCHECK .*\n?.*/health", text, re.M)
    assert re.search(r"^VOLUME /var/lib/keepalive$", text, re.M)
    assert "KEEPALIVE_STATE_DIR=/var/lib/keepalive" in text
    assert dockerfile_steps() == [("root", "bash scripts/setup.sh --packages-only"), ("keepalive", "bash scripts/setup.sh")]


def ensure_user() -> pwd.struct_passwd:
    try:
        return pwd.getpwnam(USER)
    except KeyError:
        subprocess.run(["useradd", "--create-home", "--shell", "/bin/bash", USER], check=True)
        return pwd.getpwnam(USER)


def copy_checkout(destination: Path, owner: pwd.struct_passwd) -> None:
    """What ``COPY . .`` copies: the checkout's files, and the labextension built here (mtimes kept, so it is not rebuilt)."""
    listed = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=REPO, capture_output=True, check=True,
    ).stdout.split(b"\0")
    files = [name.decode() for name in listed if name]
    files += [str(p.relative_to(REPO)) for p in (REPO / "keepalive_jupyter" / "labextension").rglob("*") if p.is_file()]
    for name in files:
        source = REPO / name
        if not source.is_file():
            continue  # deleted in the work tree but still in the index
        target = destination / name
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(source, target)
    subprocess.run(["chown", "-R", f"{owner.pw_uid}:{owner.pw_gid}", str(destination)], check=True)


def as_user(argv: list[str], home: Path, **kwargs) -> subprocess.CompletedProcess:
    env = ["env", "-i", f"HOME={home}", f"USER={USER}", "PATH=/usr/local/bin:/usr/bin:/bin", "LANG=C.UTF-8"]
    return subprocess.run(["runuser", "-u", USER, "--", *env, *argv], **kwargs)


@pytest.mark.skipif(os.geteuid() != 0, reason="creating a user needs root; as an ordinary user the whole suite is this test")
def test_install_and_a_session_as_an_ordinary_user(tmp_path):
    owner = ensure_user()
    home = Path(owner.pw_dir)
    checkout = home / "keepalive"
    copy_checkout(checkout, owner)
    for user, command in dockerfile_steps():
        argv = ["bash", "-c", f"cd {checkout} && {command}"]
        started = time.monotonic()
        result = (
            subprocess.run(argv, capture_output=True, text=True, timeout=900)
            if user == "root"
            else as_user(argv, home, capture_output=True, text=True, timeout=900)
        )
        assert result.returncode == 0, f"{command} as {user}:\n{result.stdout[-4000:]}\n{result.stderr[-4000:]}"
        print(f"{command} as {user if user == 'root' else USER}: {time.monotonic() - started:.0f} s")
    venv = (checkout / ".venv" / "pyvenv.cfg").read_text()
    assert re.search(r"^home = /usr/bin$", venv, re.M), venv

    port = free_port()
    state_dir = home / ".local" / "state" / "keepalive"
    log_path = tmp_path / "serve.log"
    with log_path.open("wb") as log:
        serve = subprocess.Popen(
            ["runuser", "-u", USER, "--", "env", "-i", f"HOME={home}", "PATH=/usr/local/bin:/usr/bin:/bin",
             "LANG=C.UTF-8", f"KEEPALIVE_PORT={port}", str(checkout / ".venv" / "bin" / "keepalive"), "serve"],
            stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True,
        )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_until("the service to answer, with its token written",
                   lambda: (state_dir / "api-token").exists() and answers(f"{url}/health"), timeout=120,
                   describe=log_path.read_text, process=serve)
        token_file = state_dir / "api-token"
        assert token_file.stat().st_uid == owner.pw_uid and token_file.stat().st_mode & 0o777 == 0o600
        client = httpx.Client(base_url=url, headers={"Authorization": f"Bearer {token_file.read_text().strip()}"},
                              timeout=240, trust_env=False)
        response = client.post("/sessions", json={"name": f"nonroot-{secrets.token_hex(2)}"})
        assert response.status_code == 201, response.text + log_path.read_text()[-3000:]
        session = response.json()
        png = client.get(f"/sessions/{session['id']}/screenshot")
        assert png.status_code == 200 and png.content[:8] == b"\x89PNG\r\n\x1a\n"

        processes = _session_processes(session["id"])
        assert processes, "no process of the session found"
        assert {p.uids().real for p in processes} == {owner.pw_uid}, "a session process runs as another user"
        chromium = [p for p in processes if "chromium" in p.name() or "chrome" in p.name()]
        assert chromium, [p.name() for p in processes]
        assert not [p.pid for p in chromium if "--no-sandbox" in p.cmdline()], "Chromium runs without its sandbox"
        renderers = [p for p in chromium if "--type=renderer" in p.cmdline()]
        assert renderers and all(_seccomp_mode(p.pid) == 2 for p in renderers), "renderers are not seccomp-confined"
        assert client.delete(f"/sessions/{session['id']}").status_code == 204
        client.close()
    finally:
        os.killpg(serve.pid, signal.SIGTERM)
        try:
            serve.wait(60)
        finally:
            subprocess.run(["pkill", "-KILL", "-u", USER], check=False)


def _session_processes(session_id: str) -> list[psutil.Process]:
    found = []
    for process in psutil.process_iter():
        try:
            if process.environ().get(SESSION_MARKER) == session_id or f"/sessions/{session_id}/" in " ".join(process.cmdline()):
                found.append(process)
        except (psutil.Error, OSError):
            continue
    return found


def _seccomp_mode(pid: int) -> int:
    status = Path(f"/proc/{pid}/status").read_text()
    return int(re.search(r"^Seccomp:\s+(\d+)", status, re.M).group(1))
