"""Where a wake from standby goes, against the least a wake that starts a browser can take.

Runs the real ``keepalive serve`` (STANDBY_AFTER short) with one session, then ``--runs`` times:
lets it go into standby, times ``GET /sessions/{id}/screenshot`` (which wakes it), and reads
from the woken kiosk page, over the session's DevTools URL once the timing is done, when its
navigation began and when its document was ready; the service's log says when it had the
session awake (JupyterLab showing, its loading screen gone).

Side by side, on the same machine, in the same run:
- a bare browser start: Xvfb and a Chromium with the kiosk's flags (Playwright, on a profile that
  already loaded the lab once, logged in by its cookie), loading the same JupyterLab (a server
  of its own, no kernel, as the session's) until it shows: what any wake that starts a
  browser pays at least;
- the floor's cold start (bench/session_bench.py's floor: a fresh Jupyter server and a headless
  Chromium), which the issue's target for a wake is a fraction of.

    .venv/bin/python bench/wake_bench.py [--runs 5] [--json out.json]
"""

from __future__ import annotations

import argparse
import os
import re
import secrets
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
from playwright.sync_api import sync_playwright

from provenance import publish, stamp
from session_bench import STANDBY_AFTER, Service, floor, state_of, wait_for_lab
from keepalive.engine.allocation import free_port
from keepalive.engine.commands import ScreenSize, chromium_command
from keepalive.engine.layout import SessionLayout
from keepalive.settings import Settings

#: Seconds a session stays in standby before it is woken (its Chromium's exit long done), and
#: of quiet before each bare browser start.
SETTLE = 2.0
#: Floor cold starts measured.
FLOOR_RUNS = 3
#: What the kiosk page says of its own load, in the browser's clock (ms since the epoch).
PAGE_TIMES = """() => { const n = performance.getEntriesByType("navigation")[0];
  return {began: performance.timeOrigin, ready: performance.timeOrigin + n.domContentLoadedEventEnd}; }"""
MEASURED = ["keepalive", "keepalive_jupyter", "web", "bench/wake_bench.py", "bench/session_bench.py"]


def awake_seconds(log: Path) -> float:
    """The service's own figure for the last wake (its "awake in N s" line)."""
    found = re.findall(r"awake in ([0-9.]+) s", log.read_text(errors="replace"))
    return float(found[-1])


def wakes(runs: int, width: int, height: int) -> list[dict]:
    service = Service(standby_after=str(STANDBY_AFTER))
    session_id = None
    try:
        response = service.client.post("/sessions", json={"width": width, "height": height})
        response.raise_for_status()
        session = response.json()
        session_id = session["id"]
        figures = []
        for _ in range(runs):
            service.wait_for(lambda: state_of(service, session_id) == "standby", STANDBY_AFTER + 120, "standby")
            time.sleep(SETTLE)
            asked = time.time()
            service.client.get(f"/sessions/{session_id}/screenshot").raise_for_status()
            answered = time.time()
            with sync_playwright() as playwright:  # a DevTools client: it keeps the session awake a while
                browser = playwright.chromium.connect_over_cdp(
                    session["cdp_url"], headers={"Authorization": f"Bearer {service.token}"})
                (page,) = [p for c in browser.contexts for p in c.pages if p.url.startswith("http")]
                times = page.evaluate(PAGE_TIMES)
                browser.close()
            figures.append({
                "wake_s": answered - asked,
                "navigation_began_s": times["began"] / 1000 - asked,
                "document_ready_s": times["ready"] / 1000 - asked,
                "awake_s": awake_seconds(service.state_dir / "service.log"),
            })
            print(f"    wake {len(figures)}: {figures[-1]['wake_s']:.2f} s", file=sys.stderr)
    finally:
        if session_id is not None:  # a session outlives its service: never leave one running
            service.delete(session_id)
        service.close()
    return figures


def bare_browser_starts(runs: int, width: int, height: int) -> list[float]:
    """Xvfb + the kiosk's Chromium, loading a lab it was logged in to before, until it shows."""
    settings = Settings()
    folder = Path(tempfile.mkdtemp(prefix="keepalive-wake-floor-"))
    port, token = free_port(), secrets.token_urlsafe(16)
    argv = [str(settings.jupyter_python), "-m", "keepalive_jupyter.lean_jupyterlab", "--no-browser", "--ip=127.0.0.1",
            f"--ServerApp.port={port}", f"--ServerApp.root_dir={folder}"]
    if os.geteuid() == 0:
        argv.append("--allow-root")
    jupyter = subprocess.Popen(argv, env={**os.environ, "JUPYTER_TOKEN": token}, stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL)
    layout = SessionLayout(folder / "session")
    # the kiosk's own flags, less the pipe (Playwright brings its own) and the start page
    flags = [flag for flag in chromium_command(settings.chromium, layout, ScreenSize(width, height))[1:-1]
             if flag != "--remote-debugging-pipe" and not flag.startswith("--user-data-dir")]
    lab = f"http://127.0.0.1:{port}/lab"
    seconds = []
    try:
        while True:
            try:
                if httpx.get(f"{lab}/api/status", params={"token": token}, trust_env=False).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            time.sleep(0.05)
        with sync_playwright() as playwright:
            for run in range(runs + 1):  # the first logs in and fills the profile's caches
                time.sleep(SETTLE)  # as quiet a machine as each wake finds
                started = time.perf_counter()
                xvfb = subprocess.Popen([settings.xvfb, "-displayfd", "1", "-screen", "0", f"{width}x{height}x24",
                                         "-nolisten", "tcp"], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
                display = xvfb.stdout.readline().decode().strip()
                try:
                    context = playwright.chromium.launch_persistent_context(
                        str(folder / "profile"), executable_path=shutil.which(settings.chromium), headless=False, args=flags,
                        env={**os.environ, "DISPLAY": f":{display}"}, no_viewport=True)
                    page = context.pages[0]
                    page.goto(lab + (f"?token={token}" if run == 0 else ""), wait_until="commit")
                    wait_for_lab(page)
                    if run:
                        seconds.append(time.perf_counter() - started)
                    context.close()
                finally:
                    xvfb.terminate()
                    xvfb.wait(30)
    finally:
        jupyter.terminate()
        jupyter.wait(30)
    return seconds


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--width", type=int, default=1280)
    parser.add_argument("--height", type=int, default=800)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    figures: dict = {**stamp(MEASURED), "width": args.width, "height": args.height}
    figures["wakes"] = wakes(args.runs, args.width, args.height)
    figures["bare_browser_start_s"] = bare_browser_starts(args.runs, args.width, args.height)
    figures["floor_cold_start_s"] = [floor(args.width, args.height, 0)["start_s"] for _ in range(FLOOR_RUNS)]

    def median(key: str) -> float:
        return statistics.median(wake[key] for wake in figures["wakes"])

    floor_start = statistics.median(figures["floor_cold_start_s"])
    bare = statistics.median(figures["bare_browser_start_s"])
    lines = [
        f"keepalive wake bench ({figures['machine']['cores']} cores, {figures['machine']['cpu']}, commit "
        f"{figures['commit']}, {figures['when']}; {args.width}x{args.height})",
        f"waking from standby: GET /sessions/{{id}}/screenshot -> 200, {args.runs} runs, medians, from the request:",
        f"    the kiosk's navigation began (Xvfb and Chromium started)  {median('navigation_began_s'):.2f} s",
        f"    its document was ready (DOMContentLoaded)                {median('document_ready_s'):.2f} s",
        f"    the service had the session awake (the lab shown)        {median('awake_s'):.2f} s",
        f"    the screenshot answered                                  {median('wake_s'):.2f} s",
        f"a bare browser start (Xvfb, the kiosk's Chromium on a warm profile, the lab until it shows): "
        f"median {bare:.2f} s",
        f"the floor's cold start (a fresh Jupyter server and headless Chromium): median {floor_start:.2f} s; "
        f"the wake is {median('wake_s') / floor_start:.2f}x of it, a bare browser start {bare / floor_start:.2f}x",
    ]
    publish(figures, lines, args.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
