"""After a reboot: sessions whose every process ended come back by themselves, and say so.

A reboot is played as an operator can on a running machine: the service and every process of
two sessions are SIGKILLed (each session's cgroup's processes, its uid's and its marker's),
and the sessions' now empty cgroups are removed, as a reboot leaves none. A new service on the
same state dir must start both again (same id, name, home), with their notebooks open showing
the outputs that were saved, a notice over JupyterLab that the kernel restarted, and
``session_restored`` in the activity, the events stream and the webhook. Lines that reached
only the kernel's journal (no kiosk page saved them) are in the restored notebook too. With
RESTORE_AFTER_REBOOT=false such a session is forgotten instead, its home kept, its id logged.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import time
from datetime import datetime
from pathlib import Path

import psutil
import pytest

from keepalive.engine import framebuffer
from tests.conftest import session_processes
from tests.e2e.kiosk import kiosk_page, open_and_run_all, put_notebook
from tests.e2e.test_activity import EventStream, Receiver
from tests.waiting import wait_until

pytestmark = pytest.mark.e2e

NOTEBOOK = "numbers.ipynb"
LINES = 20
CELL = f"for i in range({LINES}):\n    print(f'line {{i}}', flush=True)\n"
EXPECTED = "\n".join(f"line {i}" for i in range(LINES))
#: What the cell's outputs show, on the page or in the file: the lines, in order, once.
CELLS = ".jp-NotebookPanel:not(.lm-mod-hidden) .jp-Cell"


def saved_lines(home: Path) -> str:
    """The first cell's stream output in the notebook's file ('' until saved with it)."""
    try:
        cell = json.loads((home / "notebooks" / NOTEBOOK).read_text())["cells"][0]
    except (OSError, ValueError, KeyError, IndexError):
        return ""
    return "".join("".join(o.get("text", "")) for o in cell.get("outputs", []) if o.get("output_type") == "stream")


def workspace_opens(home: Path) -> bool:
    """JupyterLab's saved workspace (what a reload reopens) has the notebook open."""
    folder = home / "home" / ".jupyter" / "lab" / "workspaces"
    return any(f"notebook:{NOTEBOOK}" in path.read_text(errors="replace") for path in folder.glob("*.jupyterlab-workspace"))


def run_and_save(playwright, session_id: str, home: Path) -> None:
    """The user's work: a notebook whose cell printed numbered lines, saved, open in the workspace."""
    with kiosk_page(playwright, session_id) as page:
        put_notebook(page, NOTEBOOK, [CELL])
        open_and_run_all(page, NOTEBOOK)
        wait_until("the lines on the page", lambda: f"line {LINES - 1}" in " ".join(
            page.locator(CELLS).first.locator(".jp-OutputArea-output").all_inner_texts()), timeout=90)
        page.evaluate("() => window.keepaliveSaveAll()")
    wait_until("the outputs in the notebook's file", lambda: saved_lines(home).strip() == EXPECTED, timeout=30)
    wait_until("the workspace to have the notebook open", lambda: workspace_opens(home), timeout=60)


def cgroup_folders(record: dict) -> list[Path]:
    cgroup = record.get("cgroup") or {}
    return [Path(p) for p in dict.fromkeys([cgroup.get("membership"), *cgroup.get("limits", {}).values()]) if p]


def processes_of(record: dict) -> set[int]:
    """Every live process of the session: in its cgroups, of its uid, with its marker or folder."""
    found = {p.pid for p in session_processes(record["id"])}
    for folder in cgroup_folders(record):
        try:
            found |= {int(pid) for pid in (folder / "cgroup.procs").read_text().split()}
        except FileNotFoundError:
            pass
    if record.get("uid") is not None:
        for process in psutil.process_iter(["uids"]):
            if process.info["uids"] is not None and process.info["uids"].real == record["uid"]:
                found.add(process.pid)
    alive = set()
    for pid in found:
        try:
            if psutil.Process(pid).status() != psutil.STATUS_ZOMBIE:
                alive.add(pid)
        except psutil.NoSuchProcess:
            pass
    return alive


def kill_everything(record: dict) -> None:
    """SIGKILL every process of the session until none is left, then remove what a reboot
    leaves none of: its cgroups, its framebuffer in /dev/shm, its display's X lock and socket."""

    def all_gone() -> bool:
        left = processes_of(record)
        for pid in left:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        return not left

    wait_until(f"every process of session {record['id']} to end", all_gone, timeout=30, every=0.1)

    def removed() -> bool:
        for folder in cgroup_folders(record):
            try:
                folder.rmdir()
            except FileNotFoundError:
                pass
            except OSError:  # a killed process leaves its cgroup a moment later
                return False
        return True

    wait_until(f"session {record['id']}'s cgroups to go, as after a reboot", removed, timeout=10, every=0.05)
    shutil.rmtree(framebuffer.folder_for(record["id"]), ignore_errors=True)
    for leftover in (Path(f"/tmp/.X{record['display']}-lock"), Path(f"/tmp/.X11-unix/X{record['display']}")):
        leftover.unlink(missing_ok=True)


def ready(service, session_id: str) -> dict | None:
    response = service.client.get(f"/sessions/{session_id}")
    return response.json() if response.status_code == 200 and response.json()["state"] == "ready" else None


def test_a_new_service_restores_sessions_whose_processes_all_ended(service_factory, playwright):
    receiver = Receiver()
    first = service_factory("rebooted")
    sessions = [first.start_session(name=f"restored-{n}", webhook_url=receiver.url) for n in ("a", "b")]
    homes = {s["id"]: first.state_dir / "homes" / s["name"] for s in sessions}
    for session in sessions:
        run_and_save(playwright, session["id"], homes[session["id"]])
    records = {s["id"]: first.record(s["id"]) for s in sessions}
    cold = [float(seconds) for seconds in re.findall(r"ready in ([\d.]+) s", first.log_text())]

    first.process.kill()  # the machine goes down: the service and everything of both sessions
    first.process.wait(30)
    for record in records.values():
        kill_everything(record)
    first.started.clear()

    started = time.monotonic()
    second = service_factory("rebooted")  # the same state dir
    streams = {session_id: EventStream(second, session_id) for session_id in records}
    ready_after = {}
    for session_id in records:
        current = wait_until(f"session {session_id} to be back by itself", lambda: ready(second, session_id),
                             timeout=180, describe=lambda: second.client.get(f"/sessions/{session_id}").text)
        ready_after[session_id] = time.monotonic() - started
        second.started.append(session_id)
        before = records[session_id]
        assert current["name"] == before["name"] and current["restarts"] == 1
        assert all(current["health"].values()), current["health"]
        now = second.record(session_id)
        assert now["jupyter_pid"] != before["jupyter_pid"]
        if before.get("cgroup"):  # made again, and the new processes are in it
            procs = (Path(now["cgroup"]["membership"]) / "cgroup.procs").read_text().split()
            assert str(now["jupyter_pid"]) in procs

    for session_id, stream in streams.items():
        # the stream may open after the word was said: then its opening activity has it
        def restored_on_stream() -> dict | None:
            said = stream.of("session_restored") or [a["restored"] for a in stream.of("activity") if a.get("restored")]
            return said[0] if said else None

        said = wait_until("session_restored on the events stream", restored_on_stream, timeout=30)
        assert said["new_kernels"] is True and said["reason"] == "processes ended"
        assert datetime.fromisoformat(said["last_alive_at"]) < datetime.fromisoformat(said["restored_at"])
        stream.close()
        activity = wait_until("the activity to say it was restored", lambda: (
            second.client.get(f"/sessions/{session_id}").json().get("activity") or {}).get("restored"), timeout=30)
        assert activity["message"].startswith("The kernel restarted: every process of this session ended after ")

        with kiosk_page(playwright, session_id) as page:
            shown = wait_until("the notebook open with its outputs", lambda: "\n".join(
                page.locator(CELLS).first.locator(".jp-OutputArea-output").all_inner_texts()).strip(), timeout=60)
            assert shown == EXPECTED, shown
            # a new kernel, alive: the notebook is ready for work again
            page.locator(".jp-StatusBar-Widget", has_text=re.compile(r"\| Idle")).first.wait_for(timeout=60_000)
            notice = page.locator("#keepalive-notice")
            wait_until("the notice over JupyterLab", notice.is_visible, timeout=30)
            assert notice.inner_text().startswith("The kernel restarted: every process of this session ended after ")

    def hooks() -> list[dict]:
        return [body for body in map(json.loads, receiver.calls) if body["event"] == "session_restored"]

    wait_until("the webhook's word for both sessions", lambda: len(hooks()) == 2, timeout=60)
    assert {body["session"]["id"] for body in hooks()} == set(records)
    log = second.log_text()
    assert all(f"session {session_id} (" in log and "restoring it" in log for session_id in records)
    print(f"restored: ready {', '.join(f'{s:.1f} s' for s in ready_after.values())} after the new service was "
          f"started (the first service started them in {', '.join(f'{s:.1f} s' for s in cold)}, one after the other)")


def test_with_restore_off_such_sessions_are_forgotten_their_homes_kept(service_factory):
    first = service_factory("rebooted-off", restore_after_reboot="false")
    session = first.start_session(name="forgotten")
    record = first.record(session["id"])
    first.process.kill()
    first.process.wait(30)
    kill_everything(record)
    first.started.clear()

    second = service_factory("rebooted-off", restore_after_reboot="false")
    wait_until("the session to be forgotten", lambda: second.client.get(f"/sessions/{session['id']}").status_code == 404,
               timeout=60)
    assert second.client.get("/sessions").json()["sessions"] == []
    assert "forgotten" in second.client.get("/homes").json()["homes"]
    assert (second.state_dir / "homes" / "forgotten" / "notebooks").is_dir()
    assert not (second.state_dir / "sessions" / session["id"]).exists()
    assert processes_of(record) == set()
    assert f"session {session['id']} (forgotten): not restored (KEEPALIVE_RESTORE_AFTER_REBOOT=false)" in second.log_text()



#: Prints 20 lines, waits for a file named ``go`` beside the notebook, prints 40 more, then runs on.
LATE_CELL = (
    "import os, time\n"
    "for i in range(20):\n    print(f'line {i}', flush=True)\n"
    "while not os.path.exists('go'):\n    time.sleep(0.1)\n"
    "for i in range(20, 60):\n    print(f'line {i}', flush=True)\n"
    "time.sleep(3600)\n"
)


def journal_has(home: Path, text: str) -> bool:
    """Some kernel journal of the home (keepalive_jupyter/journal.py) holds ``text``."""
    return any(text in path.read_text(errors="replace") for path in home.rglob("*.jsonl"))


def test_outputs_only_the_record_has_are_in_the_restored_notebook(service_factory, playwright):
    """Lines 20-59 come while no kiosk page saves the notebook (its browser was killed with the
    service, the Jupyter server and the kernel's recorder run on): they reach the kernel's journal,
    never the file. After the rest goes down too, the restored notebook must show them all the
    same (the issue: "every output that reached the record before the end")."""
    first = service_factory("late-outputs")
    session = first.start_session(name="late-outputs")
    home = first.state_dir / "homes" / "late-outputs"

    def shown(page) -> str:
        return "\n".join(page.locator(CELLS).first.locator(".jp-OutputArea-output").all_inner_texts())

    with kiosk_page(playwright, session["id"]) as page:
        put_notebook(page, NOTEBOOK, [LATE_CELL])
        open_and_run_all(page, NOTEBOOK)
        wait_until("the first lines on the page", lambda: "line 19" in shown(page), timeout=90)
        page.evaluate("() => window.keepaliveSaveAll()")
    wait_until("the first lines in the file", lambda: "line 19" in saved_lines(home), timeout=30)
    record = first.record(session["id"])
    first.process.kill()  # first the service and the kiosk browser: nothing saves the file any more
    first.process.wait(30)
    os.killpg(os.getpgid(record["browser_pid"]), signal.SIGKILL)
    (home / "notebooks" / "go").touch()
    wait_until("the later lines in the kernel's journal", lambda: journal_has(home, "line 59"), timeout=30)
    assert "line 20" not in saved_lines(home)  # only the record has them
    kill_everything(record)
    first.started.clear()

    second = service_factory("late-outputs")
    wait_until("the session to be back by itself", lambda: ready(second, session["id"]), timeout=180)
    second.started.append(session["id"])
    with kiosk_page(playwright, session["id"]) as page:
        wait_until("the notebook open with its outputs", lambda: "line 0" in shown(page), timeout=60)
        page.locator(".jp-StatusBar-Widget", has_text=re.compile(r"\| Idle")).first.wait_for(timeout=60_000)
        assert shown(page).strip() == "\n".join(f"line {i}" for i in range(60))
