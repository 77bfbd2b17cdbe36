"""What a session's timeline costs (keepalive.engine.timeline): the CPU of one thumbnail, and the
disk a busy run fills per hour.

Runs the real ``keepalive serve`` (TIMELINE_SHOT_EVERY short, so that an hour's worth of busy
thumbnails comes in minutes) with one session, then:
- the CPU of a thumbnail: CPU seconds of the session's processes and the service over
  ``--shots`` captures (``GET /sessions/{id}/status/picture.jpg``, one every SHOT_GAP s), less
  what they use over as long a stretch without captures, measured just before (the floor);
- the disk of a busy run: a cell prints a line every 0.2 s for ``--busy`` seconds; what the home's
  timeline grew by (thumbnails, events) per thumbnail and per event, and so per hour at the
  default TIMELINE_SHOT_EVERY of 300 s.

    .venv/bin/python bench/timeline_bench.py [--shots 30] [--busy 120] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import psutil
from playwright.sync_api import sync_playwright

from provenance import publish, stamp
from session_bench import Service
from keepalive.engine.reaper import session_processes
from keepalive.settings import Settings

#: Seconds between two thumbnails in the CPU figure: as a status page's viewer asks, not back to back.
SHOT_GAP = 0.5
#: TIMELINE_SHOT_EVERY while the busy run is measured.
SHOT_EVERY = 5
DEFAULT_SHOT_EVERY = Settings.model_fields["timeline_shot_every"].default
TICKER = "import time\nfor i in range(100000):\n    print(f'step {i}: loss {1 / (i + 1):.6f}', flush=True)\n    time.sleep(0.2)"


def cpu_seconds(processes: list[psutil.Process]) -> float:
    total = 0.0
    for process in processes:
        try:
            times = process.cpu_times()
            total += times.user + times.system
        except psutil.NoSuchProcess:
            continue
    return total


def run_ticker(service: Service, session: dict) -> None:
    """Through the session's DevTools: a notebook whose cell prints for a long while, run."""
    with sync_playwright() as playwright:
        browser = playwright.chromium.connect_over_cdp(session["cdp_url"], headers={"Authorization": f"Bearer {service.token}"})
        (page,) = [p for c in browser.contexts for p in c.pages if p.url.startswith("http")]
        base = page.url.split("/lab")[0]
        notebook = {"nbformat": 4, "nbformat_minor": 5, "metadata": {"kernelspec": {
            "name": "python3", "display_name": "Python 3", "language": "python"}}, "cells": [{
                "cell_type": "code", "id": "ticker", "metadata": {}, "source": TICKER, "outputs": [],
                "execution_count": None}]}
        status = page.evaluate("""async ([url, body]) => {
            const xsrf = (document.cookie.match(/(?:^|; )_xsrf=([^;]*)/) || [])[1] || "";
            return (await fetch(url, {method: "PUT", body, credentials: "same-origin", headers: {
                "Content-Type": "application/json", "X-XSRFToken": decodeURIComponent(xsrf)}})).status; }""",
            [f"{base}/api/contents/ticker.ipynb", json.dumps({"type": "notebook", "content": notebook})])
        if status not in (200, 201):
            raise SystemExit(f"could not save the ticker notebook ({status})")
        page.goto(f"{base}/lab/tree/ticker.ipynb", wait_until="domcontentloaded")
        page.locator(".jp-StatusBar-Widget", has_text="| Idle").first.wait_for(timeout=120_000)
        page.get_by_role("menuitem", name="Run", exact=True).click()
        page.get_by_role("menuitem", name="Run All Cells", exact=True).click()
        page.locator(".jp-OutputArea-output", has_text="step 3:").first.wait_for(timeout=60_000)
        browser.close()


def thumbnail_cpu(service: Service, session_id: str, shots: int) -> dict:
    processes = [*session_processes(session_id, service.state_dir / "sessions" / session_id),
                 psutil.Process(service.process.pid)]
    stretch = shots * SHOT_GAP
    before = cpu_seconds(processes)
    time.sleep(stretch)
    floor = cpu_seconds(processes) - before
    sizes, times = [], []
    before = cpu_seconds(processes)
    started = time.monotonic()
    for n in range(shots):
        time.sleep(max(0.0, started + n * SHOT_GAP - time.monotonic()))
        asked = time.perf_counter()
        response = service.client.get(f"/sessions/{session_id}/status/picture.jpg")
        response.raise_for_status()
        times.append(time.perf_counter() - asked)
        sizes.append(len(response.content))
    time.sleep(max(0.0, started + stretch - time.monotonic()))
    busy = cpu_seconds(processes) - before
    return {"shots": shots, "cpu_s_per_shot": (busy - floor) / shots, "floor_cpu_s": floor, "with_shots_cpu_s": busy,
            "latency_s_median": statistics.median(times), "jpeg_bytes_median": int(statistics.median(sizes))}


def busy_disk(service: Service, session: dict, seconds: float) -> dict:
    timeline = service.state_dir / "timelines" / session["name"]
    run_ticker(service, session)

    def measure() -> tuple[int, int, set[str]]:
        events = service.client.get(f"/sessions/{session['id']}/timeline", params={"limit": 500}).json()["events"]
        return len(events), (timeline / "events.jsonl").stat().st_size, {p.name for p in timeline.glob("shots/*.jpg")}

    events_before, log_before, shots_before = measure()
    time.sleep(seconds)
    events_after, log_after, shots_after = measure()
    new_shots = [timeline / "shots" / name for name in shots_after - shots_before]
    added = events_after - events_before
    shot_bytes = statistics.mean(p.stat().st_size for p in new_shots) if new_shots else 0
    event_bytes = (log_after - log_before) / added if added else 0
    per_hour_default = 3600 / DEFAULT_SHOT_EVERY  # a busy event (and its thumbnail) every shot_every at most
    return {"seconds": seconds, "shot_every_s": SHOT_EVERY, "busy_events": len(new_shots), "events_added": added,
            "shot_bytes_mean": int(shot_bytes), "event_bytes_mean": int(event_bytes),
            "bytes_per_hour_at_default": int(per_hour_default * (shot_bytes + event_bytes)),
            "default_shot_every_s": DEFAULT_SHOT_EVERY}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shots", type=int, default=30)
    parser.add_argument("--busy", type=float, default=120.0, help="seconds the busy run is measured")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    figures = stamp(["keepalive", "bench/timeline_bench.py"])
    service = Service(timeline_shot_every=str(SHOT_EVERY))
    session = None
    try:
        session = service.client.post("/sessions", json={"name": "timeline-bench"}).json()
        time.sleep(10)  # JupyterLab settles: its start-up work is not the thumbnails'
        figures["thumbnail"] = thumbnail_cpu(service, session["id"], args.shots)
        figures["busy_run"] = busy_disk(service, session, args.busy)
    finally:
        if session is not None:  # sessions outlive their service by design: this one must not
            service.delete(session["id"])
        service.close()
    thumb, disk = figures["thumbnail"], figures["busy_run"]
    lines = [
        f"timeline bench, {figures['commit']}, {figures['when']}",
        f"thumbnail: {thumb['cpu_s_per_shot'] * 1000:.0f} ms of CPU each ({thumb['shots']} at {SHOT_GAP} s apart; "
        f"floor {thumb['floor_cpu_s']:.2f} s, with them {thumb['with_shots_cpu_s']:.2f} s), "
        f"{thumb['jpeg_bytes_median'] / 1024:.0f} KiB, answered in {thumb['latency_s_median'] * 1000:.0f} ms (median)",
        f"busy run: {disk['busy_events']} thumbnails in {disk['seconds']:.0f} s at TIMELINE_SHOT_EVERY={SHOT_EVERY}; "
        f"{disk['shot_bytes_mean'] / 1024:.0f} KiB a thumbnail, {disk['event_bytes_mean']} B an event; "
        f"{disk['bytes_per_hour_at_default'] / 1024:.0f} KiB per busy hour at the default {disk['default_shot_every_s']:.0f} s",
    ]
    publish(figures, lines, args.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
