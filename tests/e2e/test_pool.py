"""End to end: the warm pool (KEEPALIVE_POOL_SIZE) with the real service, kiosk and Jupyter.

A start takes the waiting session (its folder, hence its id, is the one that waited) and the
kiosk page then shows the user's own home: their files, their JupyterLab settings, the HeavyAI
workspace, a kernel with the HeavyAI connection and HOME in the user's home. Nothing of the pool
shows, the pool fills again, and nothing of it outlives the service.
"""

from __future__ import annotations

import json
import os
import re
import signal
from pathlib import Path

import psutil
import pytest
from playwright.sync_api import expect

from keepalive.engine.priority import POOL_NICENESS, can_restore_priority
from tests.conftest import session_processes, start_service, stop_service
from tests.integration.jupyter_driver import SessionJupyter
from tests.e2e.kiosk import kiosk_page
from tests.waiting import wait_until

pytestmark = pytest.mark.e2e

UI_TIMEOUT_MS = 60_000
HEAVYAI = {"protocol": "https", "host": "db.example", "port": 6278, "session_id": "pooled-secret-id", "query": "SELECT 1"}


def pool_state(service) -> dict:
    return service.client.get("/health").json()["pool"]


def waiting_folders(service) -> set[str]:
    """Session folders on disk: with no user session, the pool's."""
    folder = service.state_dir / "sessions"
    return {p.name for p in folder.iterdir() if p.is_dir()} if folder.is_dir() else set()


def metric(service, name: str) -> float:
    text = service.client.get("/metrics").text
    found = re.search(rf"^{re.escape(name)} (\S+)$", text, re.M)
    return float(found.group(1)) if found else 0.0


def thread_nicenesses(session_id: str) -> dict[int, set[str]]:
    """The nicenesses of the threads of the session's processes: {niceness: process names}."""
    found: dict[int, set[str]] = {}
    for process in session_processes(session_id):
        try:
            for thread in os.listdir(f"/proc/{process.pid}/task"):
                found.setdefault(os.getpriority(os.PRIO_PROCESS, int(thread)), set()).add(process.name())
        except (FileNotFoundError, ProcessLookupError, psutil.NoSuchProcess):
            continue  # ended meanwhile
    return found


def a_returning_home(state_dir: Path, name: str) -> Path:
    """A home as an earlier session of ``name`` left it: a file, and a dark theme chosen."""
    home = state_dir / "homes" / name
    (home / "notebooks").mkdir(parents=True)
    (home / "notebooks" / "from-before.txt").write_text("still here\n")
    themes = home / "home" / ".jupyter" / "lab" / "user-settings" / "@jupyterlab" / "apputils-extension"
    themes.mkdir(parents=True)
    (themes / "themes.jupyterlab-settings").write_text(json.dumps({"theme": "JupyterLab Dark"}))
    return home


def test_a_start_takes_the_waiting_session_and_shows_the_users_home(service_factory, playwright):
    service = service_factory("pool", pool_size="1")
    wait_until("a session waiting in the pool", lambda: pool_state(service)["waiting"] == 1, timeout=180)
    assert service.client.get("/sessions").json()["sessions"] == [], "a pool session is nobody's: never listed"
    (waiting,) = waiting_folders(service)
    home = a_returning_home(service.state_dir, "alice")
    # (a service that could not undo it, neither root nor allowed by RLIMIT_NICE, leaves it at 0)
    low = POOL_NICENESS if can_restore_priority() else 0
    nicenesses = thread_nicenesses(waiting)
    assert set(nicenesses) == {low}, f"a waiting session must not compete with users' sessions: {nicenesses}"

    session = service.start_session(name="alice", heavyai=HEAVYAI)
    assert session["id"] == waiting, "the start did not take the waiting session"
    assert session["state"] == "ready" and all(session["health"].values())
    assert metric(service, "keepalive_pool_hits_total") == 1
    assert metric(service, 'keepalive_session_start_seconds_count{kind="warm"}') == 1
    nicenesses = thread_nicenesses(session["id"])
    assert set(nicenesses) == {0}, f"a taken session runs at the normal priority: {nicenesses}"

    with kiosk_page(playwright, session["id"]) as page:
        assert "pool" not in page.url
        # the user's own settings and files, read again without a reload
        expect(page.locator("body")).to_have_attribute("data-jp-theme-name", "JupyterLab Dark", timeout=UI_TIMEOUT_MS)
        expect(page.locator(".jp-DirListing-item", has_text="from-before.txt")).to_be_visible(timeout=UI_TIMEOUT_MS)
        # the HeavyAI workspace, as a cold start builds it
        expect(page.locator("#jp-main-dock-panel .lm-TabBar-tab", has_text="HeavyAI.ipynb")).to_be_visible(
            timeout=UI_TIMEOUT_MS)
    # a kernel started now has the user's connection and lives in the user's home
    jupyter = SessionJupyter(service.state_dir, session["id"])
    try:
        text = jupyter.run(
            "import os\nprint('host', os.environ.get('HEAVYAI_HOST'), os.environ.get('HEAVYAI_PORT'))\n"
            "print('home', os.path.realpath(os.environ['HOME']))\nprint('cwd', os.path.realpath(os.getcwd()))"
        )
    finally:
        jupyter.close()
    assert "host db.example 6278" in text
    assert f"home {home.resolve() / 'home'}" in text
    assert f"cwd {home.resolve() / 'notebooks'}" in text
    assert (home / "notebooks" / "HeavyAI.ipynb").is_file()
    assert "pooled-secret-id" not in service.log_text()

    # the pool fills again, with a new session; a new name then gets the pool's own home
    wait_until("the pool to fill again", lambda: pool_state(service)["waiting"] == 1, timeout=180)
    (second,) = waiting_folders(service) - {session["id"]}
    bob = service.start_session(name="bob")
    assert bob["id"] == second
    assert (service.state_dir / "homes" / "bob" / "notebooks").is_dir()
    assert not (service.state_dir / "sessions" / second / "pool-home").exists()

    service.stop_session(session["id"])
    assert session_processes(session["id"]) == []
    assert (home / "notebooks" / "from-before.txt").read_text() == "still here\n"
    assert (home / "profile.tar.gz").is_file(), "a home without a saved profile keeps the pool browser's"


def jupyter_server_of(session_id: str):
    """The session's Jupyter server: the jupyterlab process whose parent is not one."""
    servers = [p for p in session_processes(session_id) if "jupyterlab" in " ".join(p.cmdline())]
    (server,) = [p for p in servers if p.ppid() not in {s.pid for s in servers}]
    return server


def test_a_take_over_that_fails_starts_the_users_session_cold(service_factory, playwright):
    """The waiting session's Jupyter server stops answering (SIGSTOP: to its health it still
    runs), so taking it over fails: the user gets a cold session instead, under the same id,
    with everything a start from the pool would have given them."""
    service = service_factory("pool-fallback", pool_size="1")
    wait_until("a session waiting in the pool", lambda: pool_state(service)["waiting"] == 1, timeout=180)
    (waiting,) = waiting_folders(service)
    hung = jupyter_server_of(waiting)
    os.kill(hung.pid, signal.SIGSTOP)
    try:
        session = service.start_session(name="carol", heavyai=HEAVYAI)
    finally:
        if hung.is_running():
            os.kill(hung.pid, signal.SIGCONT)
    assert session["id"] == waiting
    assert session["state"] == "ready" and all(session["health"].values())
    assert not hung.is_running(), "the hung Jupyter server of the pool session was left behind"
    assert metric(service, 'keepalive_pool_misses_total{reason="take-over failed"}') == 1
    assert metric(service, 'keepalive_session_start_seconds_count{kind="cold"}') == 1

    home = service.state_dir / "homes" / "carol"
    assert not (service.state_dir / "sessions" / waiting / "home-link").exists()
    with kiosk_page(playwright, session["id"]) as page:
        expect(page.locator("#jp-main-dock-panel .lm-TabBar-tab", has_text="HeavyAI.ipynb")).to_be_visible(
            timeout=UI_TIMEOUT_MS)
    jupyter = SessionJupyter(service.state_dir, session["id"])
    try:
        text = jupyter.run("import os\nprint('host', os.environ.get('HEAVYAI_HOST'))\n"
                           "print('cwd', os.path.realpath(os.getcwd()))")
    finally:
        jupyter.close()
    assert "host db.example" in text
    assert f"cwd {home.resolve() / 'notebooks'}" in text
    service.stop_session(session["id"])
    assert session_processes(session["id"]) == []


def test_pool_sessions_never_outlive_the_service(tmp_path, profile_template):
    """Stopped with the service; left by a killed one, stopped by the next on the same state dir."""
    state_dir = tmp_path / "state"
    service = start_service(state_dir, {"KEEPALIVE_POOL_SIZE": "1"})
    try:
        wait_until("a session waiting in the pool", lambda: pool_state(service)["waiting"] == 1, timeout=180)
        (first,) = waiting_folders(service)
        assert session_processes(first)
        os.kill(service.process.pid, signal.SIGKILL)
        service.process.wait(10)
    finally:
        stop_service(service)
    assert session_processes(first), "a killed service takes nothing with it"

    again = start_service(state_dir, {"KEEPALIVE_POOL_SIZE": "1"})
    try:
        wait_until("the old pool session to be stopped", lambda: not session_processes(first), timeout=60)
        assert not (state_dir / "sessions" / first).exists()
        wait_until("a new pool session", lambda: pool_state(again)["waiting"] == 1, timeout=180)
        assert again.client.get("/sessions").json()["sessions"] == []
    finally:
        assert stop_service(again) == 0
    assert session_processes(state_dir=state_dir) == [], "a pool session outlived the service"
