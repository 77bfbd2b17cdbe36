"""A session holds every process it started, however a notebook hides one, and ends them all.

Played as a hostile or careless notebook would: code in the session's own kernel (its user,
its environment) starts a process without the session's marker (``setsid env -i``) and a daemon
that double-forks away from every process group. After ``DELETE`` answers, none of them runs.
Both ways a root service contains sessions are tried: a cgroup per session, and (cgroups off)
every process of the session's uid.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import psutil
import pytest

from tests.integration.jupyter_driver import SessionJupyter

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="containment needs a service running as root")

ESCAPES = r'''
import json, os, subprocess, sys, time
# no KA_SESSION_ID, no session folder on its command line, a session of its own
plain = subprocess.Popen(["setsid", "env", "-i", "sleep", "7777"])
# a daemon: fork, setsid, fork again; the grandchild belongs to no process of the kernel
read, write = os.pipe()
if os.fork() == 0:
    os.setsid()
    if os.fork() == 0:
        os.write(write, str(os.getpid()).encode())
        os.execve("/bin/sleep", ["sleep", "7777"], {})  # and without the session's environment
    os._exit(0)
daemon = int(os.read(read, 32))
print(json.dumps({"plain": plain.pid, "daemon": daemon}))
'''


def escaped_processes(service, session: dict) -> dict[str, int]:
    jupyter = SessionJupyter(service.state_dir, session["id"])
    try:
        return json.loads(jupyter.run(ESCAPES).strip().splitlines()[-1])
    finally:
        jupyter.close()


def cgroup_of(pid: int) -> str:
    return Path(f"/proc/{pid}/cgroup").read_text()


def gone(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


@pytest.mark.parametrize("cgroups", [True, False], ids=["cgroup", "session-user"])
def test_processes_a_notebook_hides_end_with_delete(service_factory, cgroups):
    service = service_factory("contain", session_cgroups=str(cgroups).lower())
    health = service.client.get("/health").json()
    assert health["containment"].startswith("cgroup (") if cgroups else health["containment"] == "session user"
    session = service.start_session(name="hider")
    uid = service.record(session["id"])["uid"]
    escaped = escaped_processes(service, session)
    for name, pid in escaped.items():  # they run, as the session's user, without its marker
        process = psutil.Process(pid)
        assert process.uids().real == uid, name
        assert "KA_SESSION_ID" not in process.environ(), name
        if cgroups:
            assert f"session-{session['id']}" in cgroup_of(pid), name
    if cgroups:
        recorded = service.record(session["id"])["cgroup"]
        assert Path(recorded["membership"]).is_dir()
    service.stop_session(session["id"])
    # DELETE answers once the processes are gone: no waiting here
    assert [name for name, pid in escaped.items() if not gone(pid)] == []
    if cgroups:
        assert not Path(recorded["membership"]).exists()
        assert not any(Path(path).exists() for path in recorded["limits"].values())


def test_limits_beyond_the_operators_are_refused_and_leave_nothing(service_factory):
    service = service_factory("limits", session_memory_max="1G", session_pids_max="512")
    response = service.client.post("/sessions", json={"name": "greedy", "limits": {"memory_max": "2G"}})
    assert response.status_code == 422
    assert response.json()["detail"][0]["loc"] == ["body", "limits", "memory_max"]
    assert "at most 1073741824" in response.json()["detail"][0]["msg"]
    response = service.client.post("/sessions", json={"name": "odd", "limits": {"memory_max": "lots"}})
    assert response.status_code == 422 and response.json()["detail"][0]["loc"][-1] == "memory_max"
    assert service.client.get("/sessions").json()["sessions"] == []
    assert not (service.state_dir / "homes" / "greedy").exists()
    # within the operator's: the session's cgroup carries what it asked for, the rest the operator's
    session = service.start_session(name="modest", limits={"memory_max": "768M"})
    limits = service.record(session["id"])["cgroup"]["limits"]
    memory = Path(limits["memory_max"])
    limit_file = "memory.max" if (memory / "memory.max").exists() else "memory.limit_in_bytes"
    assert int((memory / limit_file).read_text()) == 768 * 2**20
    assert (Path(limits["pids_max"]) / "pids.max").read_text().strip() == "512"
    service.stop_session(session["id"])
