"""The table of what a session costs, from one result file of ``bench/session_bench.py``.

    .venv/bin/python bench/report.py bench/results/session_bench.json

prints the Markdown table the README shows (a test checks that the README's table is this
output for the committed file); ``session_bench.py`` prints the same rows as text.

Every keepalive figure stands beside the floor measured in the same run (a bare headless
Chromium launched by Playwright and a fresh Jupyter server, showing the same JupyterLab, its
Playwright driver counted), and memory on keepalive's side counts the service's own processes
(with its Playwright driver): whole for one session, shared out over N at density N. A ratio
is given only where both sides are measured alike; per-session figures at N sessions have no
floor at N, so they have none.
"""

from __future__ import annotations

import json
import statistics
import sys
from pathlib import Path

MIB = 1024 * 1024


def _median(values) -> float:
    return statistics.median(values)


def floor_figures(figures: dict) -> dict:
    """Medians of the floor's runs: start (s), idle USS (bytes), screenshot (s)."""
    floors = figures["floor"]
    return {"start_s": _median(f["start_s"] for f in floors),
            "uss_bytes": _median(f["uss_bytes"] for f in floors),
            "screenshot_s": _median(f["screenshot_s"] for f in floors)}


def rows(figures: dict) -> list[tuple[str, str, str, str]]:
    """(what, keepalive, floor, ratio) for each figure the result file has."""
    floor = floor_figures(figures)
    service_uss = figures.get("service_uss_bytes", 0)
    table: list[tuple[str, str, str, str]] = []

    def timed(what: str, seconds: list[float], against: float = floor["start_s"]) -> None:
        median = _median(seconds)
        table.append((what, f"{median:.2f} s", f"{against:.2f} s", f"{median / against:.2f}x"))

    def memory(what: str, used: float, against: float | None = floor["uss_bytes"]) -> None:
        ratio = f"{used / against:.2f}x" if against else "-"
        table.append((what, f"{used / MIB:.0f} MiB", f"{against / MIB:.0f} MiB" if against else "-", ratio))

    timed("`POST /sessions` -> 201, cold (median)", figures["start_s"])
    timed("the same, with a HeavyAI handoff", figures["handoff_start_s"])
    if figures.get("warm_start_s"):
        timed("`POST /sessions` -> 201, warm: taken from the pool", figures["warm_start_s"])
        timed("the same, with a HeavyAI handoff (`HeavyAI.ipynb` built and opened)", figures["warm_handoff_start_s"])
        if figures.get("pool_waiting_uss_bytes"):
            memory("what the pool's waiting session holds meanwhile, USS", figures["pool_waiting_uss_bytes"])
    memory("one idle session nobody watches, USS of its processes", figures["idle_uss_bytes"])
    if service_uss:
        memory("the same with the service's own processes (its Playwright driver too), as for one session alone",
               figures["idle_uss_bytes"] + service_uss)
    standby = figures.get("standby")
    if standby:
        memory("one session in standby, USS of its processes (no kernel runs, on either side)", standby["uss_bytes"])
        timed("waking from standby: `GET /sessions/{id}/screenshot` -> 200 (median)", standby["wake_s"])
    shot, floor_shot = _median(figures["screenshot_s"]), floor["screenshot_s"]
    table.append(("`GET /sessions/{id}/screenshot`, against CDP `Page.captureScreenshot` with the same "
                  "parameters", f"{shot * 1000:.0f} ms", f"{floor_shot * 1000:.0f} ms", f"{shot / floor_shot:.2f}x"))
    density = figures.get("density")
    if density:
        at = sorted((int(n), uss) for n, uss in density["uss_per_session_at"].items())
        shares = density.get("service_uss_bytes", 0)
        per = " / ".join(f"{(uss + shares / n) / MIB:.0f}" for n, uss in at)
        table.append((f"idle, per session, with {' / '.join(str(n) for n, _ in at)} sessions running "
                      "(the service's share counted)", f"{per} MiB", "-", "-"))
        if density.get("idle_cpu_cores") is not None:
            table.append((f"the same, idle CPU per session with {density['sessions']} running and nobody watching "
                          "(the service's share counted)",
                          f"{density['idle_cpu_cores'] / density['sessions']:.4f} cores", "-", "-"))
    mixed = figures.get("standby_density")
    if mixed:
        table.append((f"{mixed['standby']} sessions in standby and {mixed['active']} active: per session in "
                      "standby, USS (the service's share counted)",
                      f"{mixed['standby_uss_per_session_bytes'] / MIB:.0f} MiB", "-", "-"))
        table.append(("the same: idle CPU of all of them and the service", f"{mixed['idle_cpu_cores']:.2f} cores",
                      "-", "-"))
    return table


def source_line(figures: dict, path: str) -> str:
    machine = figures["machine"]
    chromium = machine.get("chromium", "Chromium")
    return (f"From `{path}`: commit {figures['commit']}, {figures['when'][:10]}, {machine['cores']} cores of an "
            f"{machine['cpu']}, {machine['memory_gib']} GiB, Python {machine['python']}, {chromium}.")


def markdown(figures: dict, path: str) -> str:
    lines = [source_line(figures, path), "", "| | keepalive | floor | ratio |", "| --- | --- | --- | --- |"]
    lines += [f"| {what} | {ours} | {theirs} | {ratio} |" for what, ours, theirs, ratio in rows(figures)]
    return "\n".join(lines) + "\n"


def main(argv: list[str]) -> int:
    path = argv[1] if len(argv) > 1 else "bench/results/session_bench.json"
    print(markdown(json.loads(Path(path).read_text()), path), end="")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
