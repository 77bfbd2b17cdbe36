"""DevTools round trips through a session's ``cdp_url`` against a raw DevTools port (the floor).

Runs the real ``keepalive serve`` on a free loopback port with a throw-away state dir, starts one
session and connects Playwright to its ``cdp_url`` (gateway -> bridge -> Chromium's pipe); side
by side, a bare headless Chromium with an open ``--remote-debugging-port``, connected directly.
Prints the median, p90 and the ratio to the floor of ``page.evaluate("1")``.

    .venv/bin/python bench/cdp_bench.py [--rounds 500]
"""

from __future__ import annotations

import argparse
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
from playwright.sync_api import sync_playwright

from keepalive.engine.allocation import free_port


def round_trips(page, rounds: int) -> list[float]:
    for _ in range(20):  # warm up
        page.evaluate("1")
    times = []
    for _ in range(rounds):
        started = time.perf_counter()
        page.evaluate("1")
        times.append(time.perf_counter() - started)
    return times


def summary(times: list[float]) -> tuple[float, float]:
    ordered = sorted(times)
    return statistics.median(ordered) * 1000, ordered[int(len(ordered) * 0.9)] * 1000


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=500)
    args = parser.parse_args()

    state_dir = Path(tempfile.mkdtemp(prefix="keepalive-cdp-bench-"))
    port, token = free_port(), secrets.token_urlsafe(16)
    env = {**os.environ, "KEEPALIVE_STATE_DIR": str(state_dir), "KEEPALIVE_API_TOKEN": token,
           "KEEPALIVE_PORT": str(port)}
    service = subprocess.Popen([sys.executable, "-m", "keepalive", "serve"], env=env,
                               stdout=(state_dir / "service.log").open("wb"), stderr=subprocess.STDOUT)
    client = httpx.Client(base_url=f"http://127.0.0.1:{port}", headers={"Authorization": f"Bearer {token}"},
                          timeout=300, trust_env=False)
    raw_port = free_port()
    bare = subprocess.Popen(
        ["chromium", "--headless", "--no-sandbox", f"--remote-debugging-port={raw_port}",
         f"--user-data-dir={state_dir / 'bare-profile'}", "about:blank"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    try:
        for _ in range(600):
            try:
                if client.get("/health").status_code in (200, 503):
                    break
            except httpx.HTTPError:
                time.sleep(0.2)
        session = client.post("/sessions", json={"name": "cdp-bench"}).json()
        with sync_playwright() as playwright:
            browser = playwright.chromium.connect_over_cdp(session["cdp_url"], headers={"Authorization": f"Bearer {token}"})
            kiosk = browser.contexts[0].pages[0]
            through = summary(round_trips(kiosk, args.rounds))
            browser.close()
            raw = None
            for _ in range(100):
                try:
                    raw = playwright.chromium.connect_over_cdp(f"http://127.0.0.1:{raw_port}")
                    break
                except Exception:
                    time.sleep(0.1)
            assert raw is not None, "the bare Chromium did not open its DevTools port"
            floor = summary(round_trips(raw.contexts[0].pages[0], args.rounds))
            raw.close()
        client.delete(f"/sessions/{session['id']}")
    finally:
        bare.terminate()
        service.send_signal(signal.SIGTERM)
        service.wait(60)
        client.close()
    print(f"page.evaluate('1'), {args.rounds} rounds each")
    print(f"{'':28} {'median ms':>10} {'p90 ms':>8}")
    print(f"{'through cdp_url (gateway)':28} {through[0]:10.2f} {through[1]:8.2f}")
    print(f"{'raw DevTools port (floor)':28} {floor[0]:10.2f} {floor[1]:8.2f}")
    print(f"ratio to the floor: {through[0] / floor[0]:.2f}x median")
    return 0


if __name__ == "__main__":
    sys.exit(main())
