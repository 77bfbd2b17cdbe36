"""Limits per session, met by real notebooks: a hog loses its kernel, not its session, and never
another session's output.

Two real sessions under KEEPALIVE_SESSION_MEMORY_MAX=1G: session A's kernel allocates 2 GB in
100 MB steps while session B's kernel writes a numbered line every half second. The kernel's
OOM killer, in A's cgroup, ends A's kernel; A says why (its activity, its event stream, a notice
on its kiosk page); B's file has every line; the service's, A's kiosk's and B's processes are the
same as before.
"""

from __future__ import annotations

import os
from pathlib import Path

import psutil
import pytest

from tests.e2e.kiosk import kiosk_page
from tests.e2e.test_activity import EventStream
from tests.integration.jupyter_driver import SessionJupyter, ticks
from tests.waiting import wait_until

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="limits need cgroups, made by a service running as root")

HOG = """
import time
chunks = []
for step in range(1, 21):  # 2 GB, 100 MB at a time, every page written
    chunks.append(b"x" * (100 * 2**20))
    print(f"{step * 100} MB", flush=True)
    time.sleep(0.1)
"""


def oom_kills(record: dict) -> int:
    folder = Path(record["cgroup"]["limits"]["memory_max"])
    for name in ("memory.events", "memory.oom_control"):
        if (folder / name).exists():
            lines = dict(line.split() for line in (folder / name).read_text().splitlines())
            return int(lines["oom_kill"])
    raise AssertionError(f"no OOM counter in {folder}")


def consecutive(home: Path) -> bool:
    lines = [int(x) for x in (home / "notebooks" / "ticks.txt").read_text().split()]
    return lines == list(range(len(lines)))


def test_a_memory_hog_loses_its_kernel_and_nothing_else(service_factory, playwright):
    service = service_factory("limits", session_memory_max="1G")
    a = service.start_session(name="hog")
    b = service.start_session(name="steady")
    record_a, record_b = service.record(a["id"]), service.record(b["id"])
    home_b = service.state_dir / "homes" / "steady"
    events = EventStream(service, a["id"])
    jupyter_a = SessionJupyter(service.state_dir, a["id"])
    jupyter_b = SessionJupyter(service.state_dir, b["id"])
    try:
        jupyter_b.start_ticker()
        wait_until("B's first ticks", lambda: ticks(home_b) >= 3, timeout=60)
        survivors = {"service": service.process.pid, "A's kiosk": record_a["browser_pid"],
                     "A's jupyter": record_a["jupyter_pid"], "B's kiosk": record_b["browser_pid"],
                     "B's jupyter": record_b["jupyter_pid"]}
        kills_before = oom_kills(record_a)
        _, hog_pid = jupyter_a.start_cell(HOG)
        assert int(Path(f"/proc/{hog_pid}/oom_score_adj").read_text()) == 800  # kernels go first
        wait_until("the OOM killer in A's cgroup", lambda: oom_kills(record_a) > kills_before, timeout=120)
        wait_until("A's hog kernel to be gone", lambda: not psutil.pid_exists(hog_pid)
                   or psutil.Process(hog_pid).status() == psutil.STATUS_ZOMBIE, timeout=30)
        expected = "the kernel was stopped: out of memory at 1 GiB"
        died = wait_until("A's kernel_died event", lambda: events.of("kernel_died"), timeout=30)[0]
        assert died["reason"] == "out of memory" and died["limit"] == 2**30 and died["message"] == expected
        activity = service.client.get(f"/sessions/{a['id']}").json()["activity"]
        assert activity["kernel_died"]["message"] == expected
        with kiosk_page(playwright, a["id"]) as page:  # what the user sees on return
            notice = page.locator("#keepalive-notice")
            notice.wait_for(timeout=30_000)
            assert expected in notice.inner_text()
        # B went on: every line, none lost, and more after A's trouble
        written = ticks(home_b)
        wait_until("B's ticks after A's kernel died", lambda: ticks(home_b) >= written + 4, timeout=30)
        assert consecutive(home_b)
        for name, pid in survivors.items():
            assert psutil.pid_exists(pid) and psutil.Process(pid).status() != psutil.STATUS_ZOMBIE, name
        assert service.client.get(f"/sessions/{a['id']}").json()["state"] == "ready"
        assert service.client.get(f"/sessions/{b['id']}").json()["health"]["browser"]
    finally:
        events.close()
        jupyter_a.close()
        jupyter_b.close()
