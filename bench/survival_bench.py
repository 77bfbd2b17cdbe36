"""What a crash costs a running computation: seconds until ready again, and whether the kernel lived.

A session runs a cell that writes a numbered line every half second. Then, one at a time: the
kiosk Chromium, its display (Xvfb) and the Jupyter server get SIGKILL; then the service itself gets SIGKILL
and SIGTERM, and a new service on the same state dir adopts the session. Last, the time for a
new service to adopt 1 and N sessions. Prints a table; no test asserts any of it.

    .venv/bin/python bench/survival_bench.py [--sessions 10]
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import psutil

sys.path.insert(0, str(Path(__file__).parents[1]))  # the tests' Jupyter driver
from keepalive.engine.allocation import free_port  # noqa: E402
from keepalive.engine.reaper import session_processes  # noqa: E402
from tests.e2e.viewer_helpers import wait_for
from tests.integration.jupyter_driver import SessionJupyter, ticks  # noqa: E402


class Service:
    def __init__(self, state_dir: Path, port: int, token: str) -> None:
        self.state_dir, self.url = state_dir, f"http://127.0.0.1:{port}"
        env = {**os.environ, "KEEPALIVE_STATE_DIR": str(state_dir), "KEEPALIVE_API_TOKEN": token,
               "KEEPALIVE_PORT": str(port), "KEEPALIVE_MAX_SESSIONS": "32"}
        self.log = (state_dir / "service.log").open("ab")
        self.process = subprocess.Popen([sys.executable, "-m", "keepalive", "serve"], env=env,
                                        stdout=self.log, stderr=subprocess.STDOUT)
        self.client = httpx.Client(base_url=self.url, headers={"Authorization": f"Bearer {token}"},
                                   timeout=300, trust_env=False)
        wait_for("the service", self._answers, timeout=60, every=0.05)

    def _answers(self) -> bool:
        try:
            return self.client.get("/health").status_code == 200
        except httpx.HTTPError:
            return False

    def session(self, session_id: str) -> dict:
        return self.client.get(f"/sessions/{session_id}").json()

    def end(self, signum: int = signal.SIGTERM) -> None:
        self.process.send_signal(signum)
        self.process.wait(120)
        self.client.close()
        self.log.close()


def ready_again(service: Service, session_id: str, restarts: int) -> float:
    started = time.monotonic()
    wait_for("ready again", lambda: (s := service.session(session_id))["state"] == "ready" and s["restarts"] >= restarts,
               timeout=240, every=0.1)
    return time.monotonic() - started


def victims(session_id: str, part: str) -> list[psutil.Process]:
    processes = session_processes(session_id)
    if part == "chromium":
        return [p for p in processes if p.name() in ("chromium", "chrome") and "--type=" not in " ".join(p.cmdline())]
    if part == "xvfb":
        return [p for p in processes if p.name() == "Xvfb"]
    return [p for p in processes if "jupyterlab" in " ".join(p.cmdline())]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sessions", type=int, default=10, help="sessions for the adoption figure (default 10)")
    args = parser.parse_args()
    state_dir = Path(tempfile.mkdtemp(prefix="keepalive-survival-"))
    port, token = free_port(), secrets.token_urlsafe(16)
    service = Service(state_dir, port, token)
    rows = []
    session = service.client.post("/sessions", json={"name": "ticker"}).json()
    sid, home = session["id"], state_dir / "homes" / "ticker"
    jupyter = SessionJupyter(state_dir, sid)
    _, kernel_pid = jupyter.start_ticker()
    restarts = 0
    for part in ("chromium", "xvfb", "jupyter"):
        before = ticks(home)
        for process in victims(sid, part):
            process.kill()
        restarts += 1
        seconds = ready_again(service, sid, restarts)
        if part == "jupyter":  # a new server: a new kernel to watch
            jupyter = SessionJupyter(state_dir, sid)
            _, kernel_pid = jupyter.start_ticker()
        wait_for("more lines", lambda: ticks(home) > before + 2, timeout=60)
        rows.append((f"kill -9 {part}", seconds, part != "jupyter" and psutil.pid_exists(kernel_pid)))
    for signum in (signal.SIGKILL, signal.SIGTERM):
        service.end(signum)
        started = time.monotonic()
        service = Service(state_dir, port, token)
        wait_for("adopted", lambda: service.session(sid)["state"] == "ready", timeout=240, every=0.05)
        rows.append((f"{signal.Signals(signum).name} of the service", time.monotonic() - started,
                     psutil.pid_exists(kernel_pid)))
    service.client.delete(f"/sessions/{sid}")

    adoption = []
    for count in (1, args.sessions):
        ids = [service.client.post("/sessions", json={"name": f"adopt-{count}-{i}"}).json()["id"] for i in range(count)]
        service.end(signal.SIGKILL)
        started = time.monotonic()
        service = Service(state_dir, port, token)
        wait_for("all adopted", lambda: all(service.session(i)["state"] == "ready" for i in ids), timeout=600)
        adoption.append((count, time.monotonic() - started))
        for i in ids:
            service.client.delete(f"/sessions/{i}")
    service.end()

    print(f"keepalive survival bench ({os.cpu_count()} cores); state dir {state_dir}")
    print(f"{'fault':<26} {'ready again':>12}  kernel survived")
    for what, seconds, survived in rows:
        print(f"{what:<26} {seconds:>10.1f} s  {'yes' if survived else 'no (a new server)'}")
    for count, seconds in adoption:
        print(f"a new service adopts {count:>2} session(s): {seconds:.1f} s (service start included)")
    print(json.dumps({"faults": rows, "adoption": adoption}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
