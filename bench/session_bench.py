"""Figures for one keepalive service on this machine: start latency and memory of a session.

Runs the real ``keepalive serve`` on a free loopback port with a throw-away state dir, then:
- the first POST /sessions (includes making the profile template once);
- N more POST /sessions -> 201, one after another, each deleted after: median/min/max;
- DELETE latency;
- USS (unique set size: what the session's processes alone hold) of one idle session,
  summed over all its processes, after it has been idle for --idle seconds;
- GET /sessions/{id}/screenshot of that session.

Side by side, in the same run, the floor: a bare headless Chromium launched by Playwright and a
fresh Jupyter server started at the same moment, until the same JupyterLab shows; their USS
when idle; a raw CDP Page.captureScreenshot of that page. The table gives each figure's ratio
to its floor; --json writes the figures.

    .venv/bin/python bench/session_bench.py [--runs 5] [--idle 10] [--width 1280 --height 800] [--json out.json]
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

from keepalive.engine.allocation import free_port
from keepalive.engine.reaper import session_processes
from keepalive.settings import Settings

LAB_SHELL = "#jp-main-dock-panel"
SCREENSHOTS = 10

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
                name = "jupyter-server" if "jupyterlab" in joined else "xpra" if "xpra" in joined else name
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
            page.wait_for_selector(LAB_SHELL, state="visible", timeout=120_000)
            start = time.perf_counter() - started
            time.sleep(idle)
            chromium = [p for p in psutil.Process().children(recursive=True)
                        if p.name().startswith("chrom") and p.parent() and not p.parent().name().startswith("chrom")]
            browser_count, browser_uss = tree_uss(chromium)
            jupyter_count, jupyter_uss = tree_uss([psutil.Process(jupyter.pid)])
            cdp = page.context.new_cdp_session(page)
            shots = []
            for _ in range(SCREENSHOTS):
                shot_started = time.perf_counter()
                cdp.send("Page.captureScreenshot", {"format": "png"})
                shots.append(time.perf_counter() - shot_started)
            browser.close()
    finally:
        jupyter.terminate()
        jupyter.wait(30)
    return {"start_s": start, "uss_bytes": browser_uss + jupyter_uss, "processes": browser_count + jupyter_count,
            "chromium_uss_bytes": browser_uss, "jupyter_uss_bytes": jupyter_uss,
            "screenshot_s": statistics.median(shots)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=5, help="timed session starts (default 5)")
    parser.add_argument("--idle", type=float, default=10.0, help="seconds idle before measuring memory")
    parser.add_argument("--width", type=int, default=1280)
    parser.add_argument("--height", type=int, default=800)
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args()

    state_dir = Path(tempfile.mkdtemp(prefix="keepalive-bench-"))
    port, token = free_port(), secrets.token_urlsafe(16)
    env = {**os.environ, "KEEPALIVE_STATE_DIR": str(state_dir), "KEEPALIVE_API_TOKEN": token, "KEEPALIVE_PORT": str(port)}
    log = (state_dir / "service.log").open("wb")
    service = subprocess.Popen([sys.executable, "-m", "keepalive", "serve"], env=env, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    client = httpx.Client(base_url=url, headers={"Authorization": f"Bearer {token}"}, timeout=300, trust_env=False)
    body = {"width": args.width, "height": args.height}
    try:
        for _ in range(300):
            try:
                if httpx.get(url + "/health", trust_env=False).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.1)
        else:
            raise SystemExit("service did not come up; see " + str(state_dir / "service.log"))

        started = time.perf_counter()
        first = client.post("/sessions", json=body)
        first.raise_for_status()
        first_seconds = time.perf_counter() - started
        client.delete(f"/sessions/{first.json()['id']}").raise_for_status()

        starts, deletes = [], []
        for _ in range(args.runs):
            started = time.perf_counter()
            response = client.post("/sessions", json=body)
            response.raise_for_status()
            starts.append(time.perf_counter() - started)
            started = time.perf_counter()
            client.delete(f"/sessions/{response.json()['id']}").raise_for_status()
            deletes.append(time.perf_counter() - started)

        session = client.post("/sessions", json=body).json()
        time.sleep(args.idle)
        by_name = uss_by_name(session["id"], state_dir / "sessions" / session["id"])
        shots = []
        for _ in range(SCREENSHOTS):
            shot_started = time.perf_counter()
            client.get(f"/sessions/{session['id']}/screenshot").raise_for_status()
            shots.append(time.perf_counter() - shot_started)
        client.delete(f"/sessions/{session['id']}").raise_for_status()

        floors = [floor(args.width, args.height, args.idle) for _ in range(max(1, min(args.runs, 3)))]
    finally:
        client.close()
        service.send_signal(signal.SIGTERM)
        service.wait(60)
        log.close()

    mib = 1024 * 1024
    print(f"keepalive session bench ({os.cpu_count()} cores, {args.width}x{args.height})")
    print(f"first POST /sessions (profile template made once): {first_seconds:6.2f} s")
    print(
        f"POST /sessions -> 201, {args.runs} runs: median {statistics.median(starts):.2f} s, "
        f"min {min(starts):.2f} s, max {max(starts):.2f} s"
    )
    print(f"DELETE /sessions/{{id}} -> 204: median {statistics.median(deletes):.2f} s")
    total_count = sum(count for count, _ in by_name.values())
    total_uss = sum(uss for _, uss in by_name.values())
    print(f"idle session after {args.idle:.0f} s: {total_count} processes, USS {total_uss / mib:.0f} MiB")
    for name, (count, uss) in sorted(by_name.items(), key=lambda item: -item[1][1]):
        print(f"    {name:<22} x{count:<3} {uss / mib:7.1f} MiB")

    floor_start = statistics.median(f["start_s"] for f in floors)
    floor_uss = statistics.median(f["uss_bytes"] for f in floors)
    floor_shot = statistics.median(f["screenshot_s"] for f in floors)
    shot = statistics.median(shots)
    rows = [
        ("cold start, POST /sessions -> 201", f"{statistics.median(starts):.2f} s", f"{floor_start:.2f} s",
         statistics.median(starts) / floor_start),
        ("idle memory, USS", f"{total_uss / mib:.0f} MiB", f"{floor_uss / mib:.0f} MiB", total_uss / floor_uss),
        ("screenshot", f"{shot * 1000:.0f} ms", f"{floor_shot * 1000:.0f} ms", shot / floor_shot),
    ]
    print(f"\nagainst the floor (bare headless Chromium + Jupyter, {len(floors)} runs, medians):")
    print(f"    {'':<36} {'keepalive':>10} {'floor':>10} {'ratio':>6}")
    for what, ours, theirs, ratio in rows:
        print(f"    {what:<36} {ours:>10} {theirs:>10} {ratio:5.2f}x")
    if args.json:
        args.json.write_text(json.dumps({
            "cores": os.cpu_count(), "width": args.width, "height": args.height,
            "start_s": starts, "delete_s": deletes, "first_start_s": first_seconds,
            "idle_uss_bytes": total_uss, "idle_uss_by_process": {k: v[1] for k, v in by_name.items()},
            "screenshot_s": shots, "floor": floors,
        }, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
