"""Limits per session, met by real notebooks: a hog loses its kernel, not its session, and never
another session's output.

One service with KEEPALIVE_SESSION_MEMORY_MAX=1G, SESSION_CPU_MAX=0.5 and SESSION_PIDS_MAX=400,
and two real sessions: session A's kernels misbehave (2 GB in 100 MB steps, a fork loop, a busy
loop) while session B's kernel writes a numbered line every half second. A's cgroup stops each
one; A says why when its kernel is killed (its activity, its event stream, a notice on its kiosk
page); B's file has every line; the service's, A's kiosk's and B's processes stay the same.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import psutil
import pytest

from tests.conftest import Service, session_processes, start_service, stop_service
from tests.e2e.kiosk import kiosk_page
from tests.e2e.test_activity import EventStream
from tests.integration.jupyter_driver import SessionJupyter, ticks
from tests.waiting import wait_until

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="limits need cgroups, made by a service running as root")

PIDS_MAX = 400


@dataclass
class Limited:
    service: Service
    a: dict  #: the session whose kernels misbehave
    b: dict  #: the steady one, its ticker running
    home_b: Path
    survivors: dict[str, int]

    def record(self, session: dict) -> dict:
        return self.service.record(session["id"])

    def run_in_a(self, code: str) -> str:
        jupyter = SessionJupyter(self.service.state_dir, self.a["id"])
        try:
            return jupyter.run(code)
        finally:
            jupyter.close()

    def b_went_on(self) -> None:
        """B wrote more lines since this was called, and none is missing; every survivor lives."""
        written = ticks(self.home_b)
        wait_until("B's next ticks", lambda: ticks(self.home_b) >= written + 4, timeout=30)
        lines = [int(x) for x in (self.home_b / "notebooks" / "ticks.txt").read_text().split()]
        assert lines == list(range(len(lines))), "B lost lines"
        for name, pid in self.survivors.items():
            assert psutil.pid_exists(pid) and psutil.Process(pid).status() != psutil.STATUS_ZOMBIE, name


@pytest.fixture(scope="module")
def limited(tmp_path_factory, profile_template) -> Iterator[Limited]:
    service = start_service(tmp_path_factory.mktemp("limits"), {
        "KEEPALIVE_SESSION_MEMORY_MAX": "1G", "KEEPALIVE_SESSION_CPU_MAX": "0.5",
        "KEEPALIVE_SESSION_PIDS_MAX": str(PIDS_MAX)})
    try:
        a = service.start_session(name="hog")
        b = service.start_session(name="steady")
        home_b = service.state_dir / "homes" / "steady"
        ticker = SessionJupyter(service.state_dir, b["id"])
        ticker.start_ticker()
        ticker.close()
        wait_until("B's first ticks", lambda: ticks(home_b) >= 3, timeout=60)
        record_a, record_b = service.record(a["id"]), service.record(b["id"])
        survivors = {"service": service.process.pid, "A's kiosk": record_a["browser_pid"],
                     "A's jupyter": record_a["jupyter_pid"], "B's kiosk": record_b["browser_pid"],
                     "B's jupyter": record_b["jupyter_pid"]}
        yield Limited(service, a, b, home_b, survivors)
    finally:
        assert stop_service(service) == 0
        assert session_processes(state_dir=service.state_dir) == []


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


def test_a_memory_hog_loses_its_kernel_and_nothing_else(limited, playwright):
    service, a = limited.service, limited.a
    record_a = limited.record(a)
    events = EventStream(service, a["id"])
    jupyter_a = SessionJupyter(service.state_dir, a["id"])
    try:
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
        limited.b_went_on()
        assert service.client.get(f"/sessions/{a['id']}").json()["state"] == "ready"
    finally:
        events.close()
        jupyter_a.close()


FORK_LOOP = """
import os, signal, time
children = []
try:
    while len(children) < 10_000:
        pid = os.fork()
        if pid == 0:
            time.sleep(120)
            os._exit(0)
        children.append(pid)
    print("no limit", len(children))
except BlockingIOError:
    print("stopped at", len(children))
finally:
    for pid in children:
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
"""


def test_a_fork_loop_stops_at_the_sessions_pids_limit(limited):
    output = limited.run_in_a(FORK_LOOP).split()
    assert output[:2] == ["stopped", "at"], output
    assert 0 < int(output[2]) < PIDS_MAX  # the session's own processes and threads count too
    limited.b_went_on()


BUSY_LOOP = """
import time
end = time.monotonic() + 8
while time.monotonic() < end:
    pass
print(time.process_time())
"""


def cpu_throttled(record: dict) -> int:
    """How many periods the session's CPU quota held it back (cgroup v2 or v1 cpu.stat)."""
    stat = dict(line.split() for line in (Path(record["cgroup"]["limits"]["cpu_max"]) / "cpu.stat").read_text().splitlines())
    return int(stat["nr_throttled"])


def test_a_busy_loop_gets_its_sessions_share_and_others_keep_theirs(limited):
    record_a = limited.record(limited.a)
    throttled = cpu_throttled(record_a)
    started = time.monotonic()
    cpu_seconds = float(limited.run_in_a(BUSY_LOOP).split()[-1])
    wall = time.monotonic() - started
    assert cpu_throttled(record_a) > throttled  # the quota held it back
    # half a core at most, whatever the machine's speed: the kernel's accounting, not a timing
    assert cpu_seconds < 0.5 * wall + 1.0, (cpu_seconds, wall)
    limited.b_went_on()
