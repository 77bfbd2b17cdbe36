"""One user's notebook cannot reach another's session or the service (the service runs as root).

Two real sessions side by side; code runs in a kernel of session A's own Jupyter server (its
user, its environment, as the kiosk's kernels run) and tries everything a curious notebook
would: the service's token and database, session B's folder, home, processes and secrets, B's
DevTools, xpra and Jupyter without their secrets. Each probe reports what happened; the test
checks every one was refused, and that A still reaches its own things (so the probes can fail).
"""

from __future__ import annotations

import json
import os

import psutil
import pytest

from keepalive.files import write_private
from tests.conftest import session_processes
from tests.integration.jupyter_driver import SessionJupyter

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="per-session users need a service running as root")

PROBES = r'''
import json, os, socket, subprocess, urllib.request, urllib.error

def attempt(action):
    try:
        result = action()
        return "allowed: " + str(result)[:80]
    except PermissionError:
        return "refused: permission"
    except urllib.error.HTTPError as error:
        return f"refused: http {error.code}"
    except Exception as error:
        return f"refused: {type(error).__name__}: {str(error)[:80]}"

def read(path):
    with open(path, "rb") as handle:
        return len(handle.read())

def http_get(url):
    return urllib.request.urlopen(url, timeout=10).status

def xpra_info(port, *options):
    done = subprocess.run(["xpra", "info", f"tcp://127.0.0.1:{port}/", *options],
                          capture_output=True, text=True, timeout=60)
    if done.returncode != 0:
        raise RuntimeError(f"xpra info exited {done.returncode}: {done.stderr.strip().splitlines()[-1:]}")
    return done.stdout[:40]

P = json.loads(PATHS)
print(json.dumps({
    "uid": os.getuid(),
    "environment": dict(os.environ),
    "api token file": attempt(lambda: read(P["token_file"])),
    "sessions database": attempt(lambda: read(P["database"])),
    "list sessions": attempt(lambda: os.listdir(P["sessions_dir"])),
    "list homes": attempt(lambda: os.listdir(P["homes_dir"])),
    "other home": attempt(lambda: os.listdir(P["other_home"])),
    "other notebooks": attempt(lambda: os.listdir(P["other_notebooks"])),
    "other xpra password": attempt(lambda: read(P["other_xpra_password"])),
    "other jupyter token": attempt(lambda: read(P["other_jupyter_token"])),
    "other run dir": attempt(lambda: os.listdir(P["other_run"])),
    "other profile": attempt(lambda: os.listdir(P["other_profile"])),
    "other process environment": attempt(lambda: read(f"/proc/{P['other_jupyter_pid']}/environ")),
    "other cdp socket": attempt(lambda: socket.socket(socket.AF_UNIX).connect(P["other_cdp_socket"])),
    "other cdp gateway without key": attempt(lambda: http_get(P["other_cdp_http"])),
    "other jupyter without token": attempt(lambda: http_get(P["other_jupyter"] + "/api/sessions")),
    "other xpra without password": attempt(lambda: xpra_info(P["other_xpra_port"])),
    "own xpra with its password": attempt(
        lambda: xpra_info(P["own_xpra_port"], f"--password-file={P['own_xpra_password']}")),
    "own notebooks": attempt(lambda: os.listdir(P["own_notebooks"])),
    "own xpra password": attempt(lambda: read(P["own_xpra_password"])),
}))
'''


def test_a_notebook_reaches_only_its_own_session(service_factory):
    # xpra runs while someone watches and goes a linger after: a service whose linger outlasts
    # the probes (the shared one's is seconds), so both sessions' xpra can be tried
    service = service_factory("isolation", viewer_linger=3600)
    a = service.start_session(name="tenant-a")
    b = service.start_session(name="tenant-b")
    for session in (a, b):  # bring up both sessions' viewers
        assert service.client.get(f"/sessions/{session['id']}/viewer/").status_code == 200
    rec_a, rec_b = service.record(a["id"]), service.record(b["id"])
    assert rec_a["uid"] != rec_b["uid"] and None not in (rec_a["uid"], rec_b["uid"])
    folder_a = service.state_dir / "sessions" / a["id"]
    folder_b = service.state_dir / "sessions" / b["id"]
    paths = {
        "token_file": str(service.state_dir / "api-token"),
        "database": str(service.state_dir / "sessions.db"),
        "sessions_dir": str(service.state_dir / "sessions"),
        "homes_dir": str(service.state_dir / "homes"),
        "other_home": str(service.state_dir / "homes" / "tenant-b"),
        "other_notebooks": str(service.state_dir / "homes" / "tenant-b" / "notebooks"),
        "other_xpra_password": str(folder_b / "xpra.password"),
        "other_jupyter_token": str(folder_b / "jupyter.token"),
        "other_run": str(folder_b / "run"),
        "other_profile": str(folder_b / "profile"),
        "other_jupyter_pid": rec_b["jupyter_pid"],
        "other_cdp_socket": str(folder_b / "run" / "cdp.sock"),
        "other_cdp_http": b["cdp_url"].replace("ws://", "http://", 1),
        "other_jupyter": rec_b["jupyter_url"],
        "other_xpra_port": rec_b["xpra_port"],
        "own_notebooks": str(service.state_dir / "homes" / "tenant-a" / "notebooks"),
        "own_xpra_password": str(folder_a / "xpra.password"),
        "own_xpra_port": rec_a["xpra_port"],
    }
    token_file = service.state_dir / "api-token"
    if not token_file.exists():  # the test service takes its token from the environment: put it where
        write_private(token_file, service.token)  # a generated one would be, as the service writes it
    jupyter = SessionJupyter(service.state_dir, a["id"])
    try:
        output = jupyter.run(f"PATHS = {json.dumps(json.dumps(paths))}\n{PROBES}")
    finally:
        jupyter.close()
    results = json.loads(output.strip().splitlines()[-1])

    assert results["uid"] == rec_a["uid"]
    environment = results.pop("environment")
    assert not [name for name in environment if name.startswith("KEEPALIVE_")]
    assert service.token not in json.dumps(environment)
    print("\nfrom tenant-a's notebook (uid %s):" % results.pop("uid"))
    for probe, outcome in results.items():
        print(f"  {probe}: {outcome}")
    own = {"own notebooks", "own xpra password", "own xpra with its password"}
    network = {"other cdp gateway without key", "other jupyter without token", "other xpra without password"}
    for probe, outcome in results.items():
        if probe in own:
            assert outcome.startswith("allowed"), f"{probe}: {outcome}"
        elif probe not in network:
            assert outcome == "refused: permission", f"{probe}: {outcome}"
    assert results["other cdp gateway without key"] == "refused: http 401"
    assert results["other jupyter without token"] == "refused: http 403"

    # No DevTools port anywhere: no process of either session listens on TCP but xpra and Jupyter.
    for session in (a, b):
        for process in session_processes(session["id"]):
            try:
                listening = [c for c in process.net_connections("tcp") if c.status == psutil.CONN_LISTEN]
            except psutil.Error:
                continue
            if listening:
                assert "chromium" not in process.name(), f"{process.name()} listens on {listening}"
    # No secret on any command line of either session (ps shows them to every user).
    secrets = [service.token, (folder_b / "xpra.password").read_text().strip(),
               (folder_a / "jupyter.token").read_text().strip()]
    for session in (a, b):
        for process in session_processes(session["id"]):
            try:
                argv = " ".join(process.cmdline())
            except psutil.Error:
                continue
            assert not [s for s in secrets if s in argv], f"a secret on the command line of {process.pid}"
    for session in (a, b):
        service.stop_session(session["id"])
