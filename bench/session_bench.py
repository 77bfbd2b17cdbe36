"""Figures for one keepalive service on this machine: start latency and memory of a session.

Runs the real ``keepalive serve`` on a free loopback port with a throw-away state dir, then:
- the first POST /sessions (includes making the profile template once);
- N more POST /sessions -> 201, one after another, each deleted after: median/min/max;
- DELETE latency;
- USS (unique set size: what the session's processes alone hold) of one idle session,
  summed over all its processes, after it has been idle for --idle seconds.

    .venv/bin/python bench/session_bench.py [--runs 5] [--idle 10] [--width 1280 --height 800]
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
import psutil

from keepalive.engine.allocation import free_port
from keepalive.engine.reaper import session_processes

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


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=5, help="timed session starts (default 5)")
    parser.add_argument("--idle", type=float, default=10.0, help="seconds idle before measuring memory")
    parser.add_argument("--width", type=int, default=1280)
    parser.add_argument("--height", type=int, default=800)
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
        client.delete(f"/sessions/{session['id']}").raise_for_status()
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
    return 0


if __name__ == "__main__":
    sys.exit(main())
