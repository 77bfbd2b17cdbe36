"""Nothing a session keeps is lost: sessions outlive the service, homes outlive sessions.

A real kernel runs a cell that writes a numbered line every half second; the service is then
killed (SIGKILL) or stopped (SIGTERM), and a new service on the same state dir must find the
session, with the same kernel process still writing, and the kiosk page not reloaded.
"""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import psutil
import pytest

from tests.conftest import session_processes, start_service
from tests.integration.jupyter_driver import SessionJupyter, ticks
from tests.waiting import wait_until

pytestmark = pytest.mark.e2e

def keeps_ticking(home: Path, timeout: float = 30) -> None:
    before = ticks(home)
    wait_until("the cell to print more lines", lambda: ticks(home) >= before + 3, timeout=timeout)


def ready_record(service, session_id: str) -> dict | None:
    """The session as the service shows it, once it is ready (a condition for ``wait_until``)."""
    response = service.client.get(f"/sessions/{session_id}")
    return response.json() if response.status_code == 200 and response.json()["state"] == "ready" else None


@pytest.mark.parametrize("how", ["SIGKILL", "SIGTERM"])
def test_sessions_outlive_the_service_and_are_adopted(service_factory, how):
    first = service_factory("survivor")
    session = first.start_session(name=f"survive-{how.lower()}")
    session_id = session["id"]
    home = first.state_dir / "homes" / session["name"]
    jupyter = SessionJupyter(first.state_dir, session_id)
    _, kernel_pid = jupyter.start_ticker()
    keeps_ticking(home)
    before = {p.pid for p in session_processes(session_id)}

    first.process.send_signal(getattr(signal, how))
    first.process.wait(60)
    if how == "SIGTERM":
        assert first.process.returncode == 0
    # nothing of the session went down with the service, and the computation goes on meanwhile
    assert {p.pid for p in session_processes(session_id)} >= before
    keeps_ticking(home)

    started = time.monotonic()
    second = service_factory("survivor")  # same state dir
    adopted = wait_until("the adopted session to be ready", lambda: ready_record(second, session_id), timeout=180)
    adopt_seconds = time.monotonic() - started
    second.started.append(session_id)
    assert adopted["restarts"] == 0 and adopted["name"] == session["name"]
    assert adopted["health"] == {"xpra": True, "browser": True, "page": True, "jupyter": True, "display": True}
    assert psutil.Process(kernel_pid).is_running(), "the kernel did not survive"
    keeps_ticking(home)
    shot = second.client.get(f"/sessions/{session_id}/screenshot")
    assert shot.status_code == 200 and shot.content[:4] == b"\x89PNG"
    print(f"{how}: re-adopted in {adopt_seconds:.1f} s (service start included)")
    jupyter.close()


def test_a_kiosk_page_is_adopted_without_a_reload(service_factory, playwright):
    from tests.e2e.kiosk import kiosk_page

    first = service_factory("no-reload")
    session = first.start_session(name="no-reload")
    with kiosk_page(playwright, session["id"]) as page:  # disconnects after; the kiosk stays
        page.evaluate("window.__keepaliveProbe = 'still the same page'")
    first.process.kill()
    first.process.wait(30)
    second = service_factory("no-reload")
    wait_until("the adopted session to be ready", lambda: ready_record(second, session["id"]), timeout=180)
    second.started.append(session["id"])
    with kiosk_page(playwright, session["id"]) as page:
        assert page.evaluate("window.__keepaliveProbe") == "still the same page"


def test_a_second_service_on_one_state_dir_is_refused(service_factory, tmp_path):
    first = service_factory("one-dir")
    with pytest.raises(AssertionError) as refused:  # tests.waiting: the process ended the wait
        start_service(first.state_dir, timeout=30)
    message = str(refused.value)
    assert "exited with 2" in message
    assert f"another keepalive (pid {first.process.pid}) is already serving the state dir" in message


def test_stop_sessions_on_exit_stops_them(service_factory):
    service = service_factory("stop-on-exit", stop_sessions_on_exit="true")
    session = service.start_session(name="stopped-with-service")
    service.started.clear()  # not deleted by the fixture: the service itself must stop it
    service.process.send_signal(signal.SIGTERM)
    assert service.process.wait(120) == 0
    assert session_processes(session["id"]) == []
    assert (service.state_dir / "homes" / "stopped-with-service").is_dir(), "the home must stay"


def test_a_home_outlives_its_session_and_is_deleted_only_on_request(keepalive_service):
    service = keepalive_service
    first = service.start_session(name="homey")
    home = service.state_dir / "homes" / "homey"
    jupyter = SessionJupyter(service.state_dir, first["id"])
    saved = jupyter.client.put("/api/contents/kept.ipynb", json={
        "type": "notebook",
        "content": {"nbformat": 4, "nbformat_minor": 5, "metadata": {}, "cells": [
            {"cell_type": "markdown", "id": "a", "metadata": {}, "source": "written in the first session"}]},
    })
    assert saved.status_code in (200, 201), saved.text
    jupyter.close()
    assert service.client.delete("/homes/homey").status_code == 409  # in use
    service.stop_session(first["id"])
    assert not (service.state_dir / "sessions" / first["id"]).exists()
    assert (home / "notebooks" / "kept.ipynb").is_file() and (home / "profile.tar.gz").is_file()

    second = service.start_session(name="homey")  # the same name opens the same home
    jupyter = SessionJupyter(service.state_dir, second["id"])
    listing = jupyter.client.get("/api/contents/kept.ipynb").json()
    assert listing["content"]["cells"][0]["source"] == "written in the first session"
    jupyter.close()
    service.stop_session(second["id"])
    assert service.client.get("/homes").json()["homes"].count("homey") == 1
    assert service.client.delete("/homes/homey").status_code == 204
    assert not home.exists()
    assert service.client.delete("/homes/homey").status_code == 404
    # a name can never leave the homes dir: the path is checked against the session-name pattern
    assert service.client.delete("/homes/%2E%2E").status_code == 422


def test_processes_left_by_a_killed_start_are_not_deleted_but_adopted_or_reaped(service_factory):
    """A killed service's successor deletes no home, and leaves no process of a dead session."""
    first = service_factory("successor")
    session = first.start_session(name="left-behind")
    first.started.clear()
    first.process.kill()
    first.process.wait(30)
    # the session's Jupyter dies too while no service watches
    jupyter_pid = first.record(session["id"])["jupyter_pid"]
    os.kill(jupyter_pid, signal.SIGKILL)
    second = service_factory("successor")
    recovered = wait_until("the session to be ready again", lambda: ready_record(second, session["id"]), timeout=180)
    second.started.append(session["id"])
    assert recovered["restarts"] == 1  # recovered as after a crash
    assert (second.state_dir / "homes" / "left-behind").is_dir()


def test_a_hung_jupyter_server_is_restarted_like_a_crashed_one(service_factory):
    """Liveness is an answer, not just a process: a stopped (SIGSTOP) server is replaced."""
    service = service_factory("hung", probe_interval="1")
    session = service.start_session(name="hung")
    record = service.record(session["id"])
    os.kill(record["jupyter_pid"], signal.SIGSTOP)
    try:
        def recovered():
            current = service.client.get(f"/sessions/{session['id']}").json()
            return current if current["restarts"] >= 1 and current["state"] == "ready" else None

        current = wait_until("the hung server to be replaced", recovered, timeout=120)
    finally:
        try:
            os.kill(record["jupyter_pid"], signal.SIGCONT)
        except ProcessLookupError:
            pass
    # the stopped server could not exit: only the probes can have found it out
    assert current["health"]["jupyter"] is True
    new_pid = service.record(session["id"])["jupyter_pid"]
    assert new_pid != record["jupyter_pid"] and not psutil.pid_exists(record["jupyter_pid"])


def test_delete_during_start_wins(keepalive_service):
    """A DELETE while the session starts cancels the start: it never turns ready, nothing is left."""
    from concurrent.futures import ThreadPoolExecutor

    service = keepalive_service
    with ThreadPoolExecutor(1) as pool:
        pending = pool.submit(service.client.post, "/sessions", json={"name": "deleted-early"})

        def starting():
            found = [s for s in service.client.get("/sessions").json()["sessions"] if s["name"] == "deleted-early"]
            return found[0] if found else None

        session = wait_until("the session to be listed", starting, timeout=60, every=0.05)
        assert session["state"] == "starting"
        assert service.client.delete(f"/sessions/{session['id']}").status_code == 204
        answer = pending.result(timeout=120)
    assert answer.status_code == 503 and "deleted while it started" in answer.text, answer.text
    assert service.client.get(f"/sessions/{session['id']}").status_code == 404
    assert session_processes(session["id"]) == []


def test_delete_during_recovery_wins(keepalive_service):
    service = keepalive_service
    session = service.start_session(name="deleted-recovering")
    browser = [p for p in session_processes(session["id"])
               if p.name() in ("chromium", "chrome") and not any(a.startswith("--type=") for a in p.cmdline())]
    assert browser
    for process in browser:
        process.kill()

    def recovering():
        return service.client.get(f"/sessions/{session['id']}").json()["state"] == "recovering"

    wait_until("the session to recover", recovering, timeout=60, every=0.05)
    assert service.client.delete(f"/sessions/{session['id']}").status_code == 204
    assert service.client.get(f"/sessions/{session['id']}").status_code == 404
    assert session_processes(session["id"]) == []
    assert f"session {session['id']}: recovered" not in service.log_text()
