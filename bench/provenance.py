"""Where a bench's figures come from: the commit measured and the machine it ran on."""

from __future__ import annotations

import json
import os
import platform
import subprocess
import time
from pathlib import Path

import psutil

ROOT = Path(__file__).parents[1]


def commit(measured: list[str]) -> str:
    """HEAD's short hash, with "+changes" when the files the bench runs differ from it."""
    head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True).stdout.strip()
    dirty = subprocess.run(["git", "status", "--porcelain", "--", *measured], cwd=ROOT,
                           capture_output=True, text=True).stdout.strip()
    return head + ("+changes" if dirty else "")


def machine() -> dict:
    model = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                  if line.startswith("model name")), platform.processor())
    return {"cpu": model, "cores": os.cpu_count(), "memory_gib": round(psutil.virtual_memory().total / 2**30, 1),
            "kernel": platform.release(), "python": platform.python_version(), "chromium": chromium_version(),
            "load_average_at_start": os.getloadavg()}


def chromium_version() -> str:
    """What the sessions' Chromium says it is ("Chromium 156.0...")."""
    from keepalive.settings import Settings

    try:
        return subprocess.run([Settings().chromium, "--version"], capture_output=True, text=True,
                              timeout=30).stdout.strip()
    except OSError as error:
        return f"unknown ({error})"


def stamp(measured: list[str]) -> dict:
    """The fields every bench's JSON starts with."""
    return {"commit": commit(measured), "machine": machine(), "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}


def publish(figures: dict, lines: list[str], json_path: Path | None) -> None:
    """Print a bench's text; with ``json_path``, write its figures there and the same text beside
    them (``x.json``, ``x.txt``), as bench/results/ keeps them."""
    print("\n".join(lines))
    if json_path is not None:
        json_path.write_text(json.dumps(figures, indent=2) + "\n")
        json_path.with_suffix(".txt").write_text("\n".join(lines) + "\n")
