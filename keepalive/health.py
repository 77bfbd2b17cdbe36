"""Whether this service can start and run sessions: executables, disk, state dir."""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass

from keepalive.settings import Settings

#: Debian packages that provide each executable, for the error message.
DEBIAN_PACKAGES = {"xpra": "xpra", "chromium": "chromium", "Xvfb": "xvfb"}
MIN_FREE_DISK_BYTES = 512 * 1024 * 1024


@dataclass(frozen=True)
class Check:
    name: str
    ok: bool
    detail: str


def executable_check(label: str, command: str, package: str) -> Check:
    found = shutil.which(command)
    if found:
        return Check(label, True, found)
    return Check(label, False, f"'{command}' not found on PATH: install it with 'apt-get install {package}'")


def service_checks(settings: Settings) -> list[Check]:
    checks = [
        executable_check("xpra", settings.xpra, DEBIAN_PACKAGES["xpra"]),
        executable_check("chromium", settings.chromium, DEBIAN_PACKAGES["chromium"]),
        executable_check("xvfb", "Xvfb", DEBIAN_PACKAGES["Xvfb"]),
    ]
    state_dir = settings.state_dir
    if state_dir.is_dir() and os.access(state_dir, os.W_OK):
        free = shutil.disk_usage(state_dir).free
        checks.append(
            Check(
                "disk",
                free >= MIN_FREE_DISK_BYTES,
                f"{free // (1024 * 1024)} MiB free in {state_dir}"
                + ("" if free >= MIN_FREE_DISK_BYTES else f" (need {MIN_FREE_DISK_BYTES // (1024 * 1024)} MiB)"),
            )
        )
    else:
        checks.append(Check("state_dir", False, f"{state_dir} is missing or not writable"))
    return checks


def missing_executables(settings: Settings) -> list[Check]:
    return [check for check in service_checks(settings)[:3] if not check.ok]
