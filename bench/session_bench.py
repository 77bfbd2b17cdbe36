"""Figures for one keepalive service on this machine: start latency and memory of a session.

Runs the real ``keepalive serve`` on a free loopback port with a throw-away state dir, then:
- the first POST /sessions (includes making the profile template once);
- N more POST /sessions -> 201, one after another, each deleted after: median/min/max;
- DELETE latency;
- USS (unique set size: what the session's processes alone hold) of one idle session,
  summed over all its processes, after it has been idle for --idle seconds, with nobody watching;
- the viewer page's first request (it starts xpra), and the session's USS with xpra running;
- GET /sessions/{id}/screenshot of that session.

With --pool, a second service keeps one session waiting (KEEPALIVE_POOL_SIZE=1): N warm starts,
each once the pool has filled again and its session idled POOL_SETTLE seconds. Cold and warm starts are timed without and with a HeavyAI
handoff. With --density N, sessions are started one after another until N run, one fails, or
less than 2 GiB of memory would be left: start times along the way, per-session USS once idle
(also at 10 and 20 sessions on the way up), and the CPU all of them use while idle.

Side by side, in the same run, the floor: a bare headless Chromium launched by Playwright and a
fresh Jupyter server started at the same moment, until the same JupyterLab shows; their USS
when idle; a raw CDP Page.captureScreenshot of that page. The table gives each figure's ratio
to its floor; --json writes the figures.

    .venv/bin/python bench/session_bench.py [--runs 5] [--idle 30] [--pool] [--density 20]
        [--width 1280 --height 800] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import psutil
from websockets.sync.client import connect as ws_connect

import report  # beside this script
from provenance import stamp
from keepalive.engine.allocation import free_port
from keepalive.engine.browser import (
    LAB_SHELL_SELECTOR, LAB_SHOWN_SCRIPT, LAB_SPLASH_ID, LANDED_POLL_MS, SCREENSHOT_PARAMS,
)
from keepalive.engine.reaper import session_processes
from keepalive.settings import Settings

SCREENSHOTS = 10
#: Seconds between two timed screenshots, as a user's or a monitor's requests come. Back to
#: back, each capture starts at the same point of the display's 60 Hz frame clock as the last
#: one ended, and the median swings a whole frame (33 or 48 ms) between runs of the same code.
SHOT_GAP = 0.3
#: V8 frees what JupyterLab's start-up left behind some 10-20 s after the page settles (its
#: memory reducer): measured sooner, both sides show a heap that is about to shrink by 30 MiB.
DEFAULT_IDLE = 30.0


def wait_for_lab(page) -> None:
    """Until JupyterLab shows, as keepalive waits for it (its shell, no longer under its loading
    screen): both sides of a comparison stop their clocks at the same point."""
    page.wait_for_function(LAB_SHOWN_SCRIPT, arg=[LAB_SHELL_SELECTOR, LAB_SPLASH_ID], polling=LANDED_POLL_MS,
                           timeout=120_000)


def uss_by_name(session_id: str, folder: Path) -> dict[str, tuple[int, int]]:
    """{process name: (count, USS bytes)} over every process of the session."""
    totals: dict[str, tuple[int, int]] = {}
    for process in session_processes(session_id, folder):
        try:
            name = process.name()
            if name.startswith("chrom"):  # Chromium's processes by their role (renderer, gpu-process, ...)
                role = next((a.split("=", 1)[1] for a in process.cmdline() if a.startswith("--type=")), "browser")
                name = f"chromium {role}"
            elif name.startswith("python"):
                joined = " ".join(process.cmdline())
                name = ("jupyter-server" if "jupyterlab" in joined else "xpra" if "xpra" in joined
                        else "cdp-bridge" if "cdp_bridge" in joined else name)
            uss = process.memory_full_info().uss
        except psutil.Error:
            continue
        count, total = totals.get(name, (0, 0))
        totals[name] = (count + 1, total + uss)
    return totals


def tree_uss(roots: list[psutil.Process]) -> tuple[int, int]:
    """(processes, USS bytes) of ``roots`` and all their descendants."""
    seen: dict[int, psutil.Process] = {}
    for root in roots:
        for process in [root, *root.children(recursive=True)]:
            seen[process.pid] = process
    total = 0
    for process in seen.values():
        try:
            total += process.memory_full_info().uss
        except psutil.Error:
            continue
    return len(seen), total


def floor(width: int, height: int, idle: float) -> dict:
    """The bare pair: headless Chromium (Playwright) and a fresh Jupyter server, started together."""
    from playwright.sync_api import sync_playwright

    folder = Path(tempfile.mkdtemp(prefix="keepalive-floor-"))
    port, token = free_port(), secrets.token_urlsafe(16)
    argv = [str(Settings().jupyter_python), "-m", "jupyterlab", "--no-browser", "--ip=127.0.0.1",
            f"--ServerApp.port={port}", f"--ServerApp.root_dir={folder}"]
    if os.geteuid() == 0:
        argv.append("--allow-root")
    started = time.perf_counter()
    jupyter = subprocess.Popen(argv, env={**os.environ, "JUPYTER_TOKEN": token}, stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL)
    try:
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path="/usr/bin/chromium",
                                                 args=["--no-sandbox"] if os.geteuid() == 0 else [])
            page = browser.new_page(viewport={"width": width, "height": height})
            while True:
                try:
                    if httpx.get(f"http://127.0.0.1:{port}/api/status", headers={"Authorization": f"token {token}"},
                                 trust_env=False).status_code == 200:
                        break
                except httpx.HTTPError:
                    pass
                time.sleep(0.05)
            page.goto(f"http://127.0.0.1:{port}/lab?reset&token={token}")
            wait_for_lab(page)
            start = time.perf_counter() - started
            time.sleep(idle)
            chromium = [p for p in psutil.Process().children(recursive=True)
                        if p.name().startswith("chrom") and p.parent() and not p.parent().name().startswith("chrom")]
            browser_count, browser_uss = tree_uss(chromium)
            jupyter_count, jupyter_uss = tree_uss([psutil.Process(jupyter.pid)])
            # Playwright's driver drives the floor's browser as keepalive's drives the kiosks
            # (the process alone: the browser it launched is below it, and counted above)
            drivers = [p for p in psutil.Process().children() if p.name().startswith("node")]
            driver_count, driver_uss = len(drivers), sum(p.memory_full_info().uss for p in drivers)
            cdp = page.context.new_cdp_session(page)
            shots = []
            for _ in range(SCREENSHOTS):
                time.sleep(SHOT_GAP)
                shot_started = time.perf_counter()
                cdp.send("Page.captureScreenshot", SCREENSHOT_PARAMS)  # what keepalive asks its kiosks for
                shots.append(time.perf_counter() - shot_started)
            browser.close()
    finally:
        jupyter.terminate()
        jupyter.wait(30)
    return {"start_s": start, "uss_bytes": browser_uss + jupyter_uss + driver_uss,
            "processes": browser_count + jupyter_count + driver_count,
            "chromium_uss_bytes": browser_uss, "jupyter_uss_bytes": jupyter_uss, "driver_uss_bytes": driver_uss,
            "screenshot_s": statistics.median(shots)}


HEAVYAI = {"protocol": "https", "host": "db.example", "port": 6278, "session_id": "bench-session", "query": "SELECT 1"}
#: Seconds a refilled pool session idles before a warm start is timed: a user does not arrive
#: the instant it is ready, while its JupyterLab is still settling in.
POOL_SETTLE = 3.0
#: Floor measurements, each taken between two of keepalive's cold runs.
FLOOR_RUNS = 3
#: Session counts at which the density run also idles and measures memory on its way up.
DENSITY_CHECKPOINTS = (10, 20)
#: Seconds between the viewer page's first request and the memory figure with xpra running.
VIEWER_SETTLE = 5.0
#: Seconds over which the idle CPU of the density run's sessions is measured.
IDLE_CPU_SECONDS = 60.0
#: Memory the density run leaves to the machine.
DENSITY_RESERVE = 2 * 1024**3


class Service:
    """A ``keepalive serve`` of the bench's own, on a throw-away state dir."""

    def __init__(self, **settings: str) -> None:
        self.state_dir = Path(tempfile.mkdtemp(prefix="keepalive-bench-"))
        port, token = free_port(), secrets.token_urlsafe(16)
        self.token = token
        env = {**os.environ, "KEEPALIVE_STATE_DIR": str(self.state_dir), "KEEPALIVE_API_TOKEN": token,
               "KEEPALIVE_PORT": str(port), **{f"KEEPALIVE_{k.upper()}": v for k, v in settings.items()}}
        self._log = (self.state_dir / "service.log").open("wb")
        self.process = subprocess.Popen([sys.executable, "-m", "keepalive", "serve"], env=env, stdout=self._log,
                                        stderr=subprocess.STDOUT)
        self.url = f"http://127.0.0.1:{port}"
        self.client = httpx.Client(base_url=self.url, headers={"Authorization": f"Bearer {token}"}, timeout=300,
                                   trust_env=False)
        self.wait_for(lambda: self.client.get("/health").status_code == 200, 30, "the service to answer")

    def wait_for(self, condition, timeout: float, what: str) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                if condition():
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        raise SystemExit(f"timed out waiting for {what}; see {self.state_dir / 'service.log'}")

    def timed_start(self, body: dict) -> tuple[float, dict]:
        started = time.perf_counter()
        response = self.client.post("/sessions", json=body)
        response.raise_for_status()
        return time.perf_counter() - started, response.json()

    def delete(self, session_id: str) -> float:
        started = time.perf_counter()
        self.client.delete(f"/sessions/{session_id}").raise_for_status()
        return time.perf_counter() - started

    def close(self) -> None:
        self.client.close()
        self.process.send_signal(signal.SIGTERM)
        self.process.wait(120)
        self._log.close()


def process_kind(process: psutil.Process) -> str:
    """What a process is, for the idle CPU's breakdown."""
    name, argv = process.name(), process.cmdline()
    if name in ("chromium", "chrome"):
        kind = next((a.removeprefix("--type=") for a in argv if a.startswith("--type=")), "browser")
        return f"chromium {kind}"
    joined = " ".join(argv)
    for marker, kind in (("cdp_bridge", "cdp bridge"), ("ipykernel", "kernel"), ("iopub_recorder", "recorder"),
                         ("jupyter", "jupyter server")):
        if marker in joined:
            return kind
    return name


def idle_cpu(service: Service, groups: dict[str, list[str]], seconds: float = IDLE_CPU_SECONDS) -> dict:
    """Cores used over ``seconds`` (1.0 = one core) by the sessions of each group (name -> their
    ids) and by the service's own processes (its Playwright driver among them): in all, by group
    and by kind of process."""
    group_of: dict[psutil.Process, str] = {}
    for group, session_ids in groups.items():
        for sid in session_ids:
            for process in session_processes(sid, service.state_dir / "sessions" / sid):
                group_of[process] = group
    mine = {p.pid for p in group_of}
    root = psutil.Process(service.process.pid)
    for process in [root] + [p for p in root.children(recursive=True) if p.pid not in mine]:
        group_of[process] = "service"
    kinds = {}
    for process in group_of:
        try:
            kinds[process] = "keepalive service" if process is root else (
                "playwright driver" if process.name().startswith("node") else process_kind(process))
        except psutil.Error:
            continue

    def cpu() -> dict[psutil.Process, float]:
        used = {}
        for process in kinds:
            try:
                times = process.cpu_times()
            except psutil.Error:
                continue
            used[process] = times.user + times.system
        return used

    before = cpu()
    time.sleep(seconds)
    after = cpu()
    by_kind: dict[str, float] = {}
    by_group: dict[str, float] = {}
    for process, total in after.items():
        used = (total - before.get(process, total)) / seconds
        by_kind[kinds[process]] = by_kind.get(kinds[process], 0.0) + used
        by_group[group_of[process]] = by_group.get(group_of[process], 0.0) + used
    return {"cores": sum(by_kind.values()), "by_group": by_group,
            "by_kind": dict(sorted(by_kind.items(), key=lambda item: -item[1]))}


def service_uss(service: Service) -> int:
    """USS of the service's own processes: ``keepalive serve`` and its Playwright driver."""
    root = psutil.Process(service.process.pid)
    return sum(p.memory_full_info().uss for p in [root, *(c for c in root.children() if c.name().startswith("node"))])


def healthy(session: dict) -> bool:
    """What /health's "unhealthy" goes by: every part up; in standby, its Jupyter server."""
    if session["state"] == "standby":
        return session["health"]["jupyter"]
    return session["state"] == "ready" and all(session["health"].values())


def session_uss(state_dir: Path, session_id: str) -> int:
    return sum(uss for _, uss in uss_by_name(session_id, state_dir / "sessions" / session_id).values())


def start_another(service: Service, body: dict) -> tuple[float, dict] | str:
    """One more session of a density run (its start time and body), or why not."""
    if psutil.virtual_memory().available < DENSITY_RESERVE + 600 * 1024**2:
        return "memory: less than 2.6 GiB available"
    try:
        return service.timed_start(body)
    except httpx.HTTPError as error:
        return f"a start failed: {error}"


def density(service: Service, body: dict, most: int, idle: float) -> dict:
    """Sessions one after another until ``most`` run, one fails, or memory would run short."""
    ids, start_s, stopped_by = [], [], f"reached {most}"
    uss_at: dict[int, float] = {}  # sessions running -> median USS per session, once idle
    try:
        while len(ids) < most:
            started = start_another(service, body)
            if isinstance(started, str):
                stopped_by = started
                break
            seconds, session = started
            ids.append(session["id"])
            start_s.append(seconds)
            print(f"    density: {len(ids)} sessions, last start {seconds:.2f} s", flush=True)
            if len(ids) in DENSITY_CHECKPOINTS and len(ids) < most:
                time.sleep(idle)
                uss_at[len(ids)] = statistics.median(session_uss(service.state_dir, sid) for sid in ids)
        time.sleep(idle)
        up = sum(healthy(s) for s in service.client.get("/sessions").json()["sessions"])
        by_name = [uss_by_name(sid, service.state_dir / "sessions" / sid) for sid in ids]
        uss = [sum(u for _, u in names.values()) for names in by_name]
        own_uss = service_uss(service)
        cpu = idle_cpu(service, {"sessions": ids})
    finally:
        for sid in ids:
            service.delete(sid)
    per_process = {name: statistics.median(names.get(name, (0, 0))[1] for names in by_name)
                   for name in {name for names in by_name for name in names}}
    if uss:
        uss_at[len(ids)] = statistics.median(uss)
    return {"sessions": len(ids), "healthy": up, "stopped_by": stopped_by, "start_s": start_s,
            "uss_per_session_bytes": statistics.median(uss) if uss else 0, "service_uss_bytes": own_uss,
            "idle_cpu_cores": cpu["cores"], "idle_cpu_by_kind": cpu["by_kind"], "idle_cpu_seconds": IDLE_CPU_SECONDS,
            "uss_per_session_by_process": per_process, "uss_per_session_at": uss_at}


#: STANDBY_AFTER of the standby runs: sessions go to sleep this soon after their last use.
STANDBY_AFTER = 5.0


def state_of(service: Service, session_id: str) -> str:
    return service.client.get(f"/sessions/{session_id}").json()["state"]  # a look that wakes nothing


def standby_figures(body: dict, runs: int, idle: float) -> dict:
    """One session put into standby ``runs`` times and woken by a screenshot each time: its USS in
    standby (after ``idle`` seconds there) and how long the waking screenshot takes."""
    service = Service(standby_after=str(STANDBY_AFTER))
    try:
        _, session = service.timed_start(body)
        sid, folder = session["id"], service.state_dir / "sessions" / session["id"]
        wakes, by_name = [], {}
        for run in range(runs):
            service.wait_for(lambda: state_of(service, sid) == "standby", STANDBY_AFTER + 120, "standby")
            if run == 0:
                time.sleep(idle)
                by_name = uss_by_name(sid, folder)
                own_uss = service_uss(service)
            started = time.perf_counter()
            service.client.get(f"/sessions/{sid}/screenshot").raise_for_status()
            wakes.append(time.perf_counter() - started)
        service.delete(sid)
    finally:
        service.close()
    return {"wake_s": wakes, "uss_bytes": sum(uss for _, uss in by_name.values()),
            "uss_by_process": {name: uss for name, (_, uss) in by_name.items()}, "service_uss_bytes": own_uss,
            "standby_after_s": STANDBY_AFTER}


def standby_density(body: dict, asleep: int, active: int, idle: float) -> dict:
    """``asleep`` sessions put into standby, then ``active`` more kept awake by an open DevTools
    connection each (nothing sent on it): all of them healthy? their memory, and the CPU of all
    of them and the service while idle."""
    service = Service(standby_after=str(STANDBY_AFTER), max_sessions=str(active + 4))
    sleepers, awake, start_s, connections = [], [], [], []
    stopped_by = "reached both counts"
    try:
        for group, count in ((sleepers, asleep), (awake, active)):
            while len(group) < count:
                started = start_another(service, body)
                if isinstance(started, str):
                    stopped_by = started
                    break
                seconds, session = started
                group.append(session["id"])
                start_s.append(seconds)
                if group is awake:
                    connections.append(ws_connect(session["cdp_url"], open_timeout=60,
                                                  additional_headers={"Authorization": f"Bearer {service.token}"}))
                print(f"    standby density: {len(sleepers)} asleep, {len(awake)} awake, last start {seconds:.2f} s",
                      flush=True)
            if group is sleepers:
                service.wait_for(lambda: all(state_of(service, sid) == "standby" for sid in sleepers),
                                 STANDBY_AFTER + 300, "every session of the first group in standby")
        time.sleep(idle)
        listed = service.client.get("/sessions").json()["sessions"]
        up = sum(healthy(s) for s in listed)
        in_standby = sum(s["state"] == "standby" for s in listed)
        sleeping_uss = [session_uss(service.state_dir, sid) for sid in sleepers]
        awake_uss = [session_uss(service.state_dir, sid) for sid in awake]
        own_uss = service_uss(service)
        cpu = idle_cpu(service, {"standby": sleepers, "active": awake})
    finally:
        for connection in connections:
            connection.close()
        for sid in sleepers + awake:
            service.delete(sid)
        service.close()
    total = max(1, len(sleepers) + len(awake))
    return {"standby": len(sleepers), "active": len(awake), "healthy": up, "in_standby": in_standby,
            "stopped_by": stopped_by, "start_s": start_s, "service_uss_bytes": own_uss,
            "standby_uss_per_session_bytes": statistics.median(sleeping_uss) + own_uss / total if sleepers else 0,
            "active_uss_per_session_bytes": statistics.median(awake_uss) + own_uss / total if awake else 0,
            "idle_cpu_cores": cpu["cores"], "idle_cpu_by_group": cpu["by_group"], "idle_cpu_by_kind": cpu["by_kind"],
            "idle_cpu_seconds": IDLE_CPU_SECONDS}


#: What this bench runs: a change to these makes its commit "+changes".
MEASURED = ["keepalive", "keepalive_jupyter", "web", "bench/session_bench.py"]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=5, help="timed session starts of each kind (default 5)")
    parser.add_argument("--idle", type=float, default=DEFAULT_IDLE,
                        help=f"seconds idle before measuring memory (default {DEFAULT_IDLE:.0f})")
    parser.add_argument("--pool", action="store_true", help="also time starts from a warm pool")
    parser.add_argument("--density", type=int, default=0, help="start up to this many sessions at once")
    parser.add_argument("--standby", action="store_true",
                        help="also measure a session in standby: its memory, and --runs wakes by a screenshot")
    parser.add_argument("--standby-density", type=int, nargs=2, metavar=("ASLEEP", "ACTIVE"),
                        help="also run ASLEEP sessions in standby beside ACTIVE awake ones (e.g. 100 10)")
    parser.add_argument("--width", type=int, default=1280)
    parser.add_argument("--height", type=int, default=800)
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args()
    body = {"width": args.width, "height": args.height}
    figures: dict = {**stamp(MEASURED), "cores": os.cpu_count(), "width": args.width, "height": args.height}

    service = Service(max_sessions=str(max(8, args.density)))
    try:
        first_seconds, first = service.timed_start(body)
        service.delete(first["id"])
        starts, deletes, handoff_starts, floors = [], [], [], []
        for run in range(args.runs):
            seconds, session = service.timed_start(body)
            starts.append(seconds)
            deletes.append(service.delete(session["id"]))
            seconds, session = service.timed_start({**body, "heavyai": HEAVYAI})
            handoff_starts.append(seconds)
            service.delete(session["id"])
            if run < FLOOR_RUNS:  # between keepalive's own runs: both meet the same machine
                floors.append(floor(args.width, args.height, args.idle))

        _, session = service.timed_start(body)
        time.sleep(args.idle)
        by_name = uss_by_name(session["id"], service.state_dir / "sessions" / session["id"])
        own_uss = service_uss(service)
        # a viewer's first request starts xpra (keepalive.engine.viewer_server): how long that
        # takes, and what the session costs while it runs
        viewer_started = time.perf_counter()
        service.client.get(f"/sessions/{session['id']}/viewer/").raise_for_status()
        viewer_first_s = time.perf_counter() - viewer_started
        time.sleep(VIEWER_SETTLE)
        watched = uss_by_name(session["id"], service.state_dir / "sessions" / session["id"])
        shots = []
        for _ in range(SCREENSHOTS):
            time.sleep(SHOT_GAP)
            shot_started = time.perf_counter()
            service.client.get(f"/sessions/{session['id']}/screenshot").raise_for_status()
            shots.append(time.perf_counter() - shot_started)
        service.delete(session["id"])
        if args.density:
            figures["density"] = density(service, body, args.density, args.idle)
    finally:
        service.close()

    if args.pool:
        pooled = Service(pool_size="1")
        warm, warm_handoff, waiting_uss = [], [], []
        try:
            for _ in range(args.runs):
                for kind, times in ((body, warm), ({**body, "heavyai": HEAVYAI}, warm_handoff)):
                    # a warm start as a user would find it: the pool filled, nothing else starting
                    pooled.wait_for(lambda: pooled.client.get("/health").json()["pool"]["waiting"] == 1, 180,
                                    "the pool to fill")
                    time.sleep(POOL_SETTLE)
                    if not waiting_uss:  # what a warm start costs while nobody comes: the waiting session
                        time.sleep(args.idle)
                        waiting_uss = [session_uss(pooled.state_dir, folder.name)
                                       for folder in (pooled.state_dir / "sessions").iterdir()]
                    seconds, session = pooled.timed_start(kind)
                    times.append(seconds)
                    pooled.delete(session["id"])
            hits = pooled.client.get("/metrics").text
        finally:
            pooled.close()
        figures.update(warm_start_s=warm, warm_handoff_start_s=warm_handoff, pool_waiting_uss_bytes=sum(waiting_uss),
                       pool_hits=[line for line in hits.splitlines() if line.startswith("keepalive_pool_hits_total")])

    if args.standby:
        figures["standby"] = standby_figures(body, max(1, args.runs), args.idle)
    if args.standby_density:
        figures["standby_density"] = standby_density(body, *args.standby_density, args.idle)

    total_count = sum(count for count, _ in by_name.values())
    total_uss = sum(uss for _, uss in by_name.values())
    watched_uss = sum(uss for _, uss in watched.values())
    figures.update({
        "start_s": starts, "handoff_start_s": handoff_starts, "delete_s": deletes, "first_start_s": first_seconds,
        "idle_uss_bytes": total_uss, "idle_uss_by_process": {k: v[1] for k, v in by_name.items()},
        "service_uss_bytes": own_uss, "viewer_first_request_s": viewer_first_s, "watched_uss_bytes": watched_uss,
        "screenshot_s": shots, "floor": floors,
    })

    mib = 1024 * 1024
    print(f"keepalive session bench ({os.cpu_count()} cores, {figures['machine']['cpu']}, commit "
          f"{figures['commit']}, {figures['when']}; {args.width}x{args.height})")
    print(f"first POST /sessions (profile template made once): {first_seconds:6.2f} s")
    print(
        f"POST /sessions -> 201, {args.runs} runs: median {statistics.median(starts):.2f} s, "
        f"min {min(starts):.2f} s, max {max(starts):.2f} s"
    )
    print(f"DELETE /sessions/{{id}} -> 204: median {statistics.median(deletes):.2f} s")
    print(f"idle session after {args.idle:.0f} s: {total_count} processes, USS {total_uss / mib:.0f} MiB; the "
          f"service's own processes (its Playwright driver too) {own_uss / mib:.0f} MiB")
    for name, (count, uss) in sorted(by_name.items(), key=lambda item: -item[1][1]):
        print(f"    {name:<22} x{count:<3} {uss / mib:7.1f} MiB")
    print(f"the viewer page's first request, xpra started for it: {viewer_first_s:.2f} s; the session with xpra "
          f"running, {VIEWER_SETTLE:.0f} s later: USS {watched_uss / mib:.0f} MiB (xpra "
          f"{watched.get('xpra', (0, 0))[1] / mib:.1f} MiB)")
    if "standby" in figures:
        st = figures["standby"]
        print(f"in standby (STANDBY_AFTER {st['standby_after_s']:.0f} s), after {args.idle:.0f} s there: USS "
              f"{st['uss_bytes'] / mib:.0f} MiB; woken by a screenshot in {', '.join(f'{w:.2f}' for w in st['wake_s'])} s")
        for name, uss in sorted(st["uss_by_process"].items(), key=lambda item: -item[1]):
            print(f"    {name:<22} {uss / mib:7.1f} MiB")

    print(f"\nagainst the floor (bare headless Chromium + Jupyter + Playwright's driver, {len(floors)} runs, medians):")
    for what, ours, theirs, ratio in report.rows(figures):
        print(f"    {what}\n        keepalive {ours}, floor {theirs}, ratio {ratio}")
    if "density" in figures:
        d = figures["density"]
        at = ", ".join(f"{n}: {d['start_s'][n - 1]:.2f} s" for n in (1, 10, 20, 50) if n <= len(d["start_s"]))
        print(f"\ndensity: {d['sessions']} sessions started ({d['stopped_by']}), {d['healthy']} healthy after "
              f"{args.idle:.0f} s idle; start time at {at}; idle CPU of all of them and the service "
              f"{d['idle_cpu_cores']:.2f} cores ({d['idle_cpu_cores'] / max(1, d['sessions']):.4f} per session), "
              f"over {d['idle_cpu_seconds']:.0f} s; by kind of process, per session:")
        for kind, cores in d["idle_cpu_by_kind"].items():
            print(f"        {kind:<22} {cores / max(1, d['sessions']):.4f} cores")
        print("    USS per session (median), by process:")
        for name, uss in sorted(d["uss_per_session_by_process"].items(), key=lambda item: -item[1]):
            print(f"        {name:<22} {uss / mib:7.1f} MiB")
    if "standby_density" in figures:
        m = figures["standby_density"]
        print(f"\nstandby density: {m['standby']} in standby and {m['active']} active ({m['stopped_by']}), "
              f"{m['healthy']} healthy, {m['in_standby']} in standby after {args.idle:.0f} s idle; per session "
              f"(the service's share counted): in standby {m['standby_uss_per_session_bytes'] / mib:.0f} MiB, "
              f"active {m['active_uss_per_session_bytes'] / mib:.0f} MiB; idle CPU of all of them and the service "
              f"{m['idle_cpu_cores']:.2f} cores over {m['idle_cpu_seconds']:.0f} s, by group:")
        for group, cores in m["idle_cpu_by_group"].items():
            print(f"        {group:<22} {cores:.4f} cores")
        print("    by kind of process:")
        for kind, cores in m["idle_cpu_by_kind"].items():
            print(f"        {kind:<22} {cores:.4f} cores")
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
