"""``keepalive doctor``: can this machine run keepalive, and is the service there healthy?

One line per check (ok, warn or FAIL), each failure with the command or setting that fixes it.
The machine's checks are the service's own (keepalive.health) plus what only a person at the
machine cares about: the Python, fonts, the state dir's permissions, running as root.
"""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from keepalive.api_client import Client, ClientError, find_token
from keepalive.engine import cgroups, containment, framebuffer
from keepalive.health import DEBIAN_PACKAGES, MIN_FREE_DISK_BYTES, service_checks
from keepalive.settings import Settings
from keepalive.viewer import html5_files

OK, WARN, FAIL = "ok", "warn", "FAIL"
#: What a session needs besides xpra, Chromium and Xvfb, with the Debian package that has it.
HELPERS = {"xauth": "xauth", "xrandr": "x11-xserver-utils"}
FIXES = {
    "xpra": "apt-get install xpra (or set KEEPALIVE_XPRA)",
    "chromium": "apt-get install chromium (or set KEEPALIVE_CHROMIUM)",
    "xvfb": f"apt-get install {DEBIAN_PACKAGES['Xvfb']} (or set KEEPALIVE_XVFB)",
    "jupyter": "bash scripts/setup.sh (makes .venv-jupyter), or set KEEPALIVE_JUPYTER_PYTHON",
    "disk": "free space in the state dir, or set KEEPALIVE_STATE_DIR elsewhere",
}


@dataclass(frozen=True)
class Finding:
    name: str
    status: str  #: OK, WARN or FAIL
    detail: str
    fix: str = ""

    def line(self) -> str:
        text = f"{self.status:<4}  {self.name:<10} {self.detail}"
        return text + (f"\n      {'':<10} fix: {self.fix}" if self.fix and self.status != OK else "")


def machine_findings(settings: Settings) -> list[Finding]:
    findings = [
        Finding(check.name, OK if check.ok else FAIL, check.detail, FIXES.get(check.name, ""))
        for check in service_checks(settings)
        if check.name != "state_dir"  # said more precisely below: missing is fine, unwritable is not
    ]
    if not any(finding.name == "disk" for finding in findings):
        findings.append(_disk_before_first_start(settings.state_dir))
    for command, package in HELPERS.items():
        found = shutil.which(command)
        findings.append(Finding(command, OK if found else FAIL, found or "not found on PATH", f"apt-get install {package}"))
    findings.append(_viewer_client(settings))
    problem = framebuffer.shm_problem()
    findings.append(Finding(
        "shm", WARN if problem else OK,
        problem or f"{framebuffer.SHM_ROOT} is a tmpfs: sessions nobody watches keep only their own screen of Xvfb's framebuffer",
        "give /dev/shm 1 GiB or more (docker run --shm-size=1g); meanwhile each session's Xvfb keeps its whole "
        "framebuffer (16 MiB at the default VIEWER_MAX_WIDTH x VIEWER_MAX_HEIGHT)",
    ))
    version = ".".join(map(str, sys.version_info[:3]))
    findings.append(
        Finding("python", OK if sys.version_info >= (3, 11) else FAIL, f"{version} at {sys.executable}",
                "use Debian 12's /usr/bin/python3 (scripts/setup.sh builds .venv from it)")
    )
    findings.append(_fonts())
    findings.append(_containment(settings))
    findings += _state_dir(settings)
    if os.geteuid() == 0 and settings.per_session_users:
        findings.append(Finding("user", OK, "root, with a user per session: each kiosk Chromium keeps its sandbox"))
    elif os.geteuid() == 0:
        findings.append(Finding("user", WARN, "running as root with KEEPALIVE_SESSION_USERS=false: Chromium runs "
                                "without its own sandbox",
                                "unset KEEPALIVE_SESSION_USERS (a user per session), or run keepalive as an "
                                "ordinary user (see the README: As an ordinary user)"))
    else:
        findings.append(Finding("user", OK, f"uid {os.geteuid()}: Chromium keeps its sandbox"))
    return findings


def _containment(settings: Settings) -> Finding:
    """What would hold sessions together, and whether limits can hold."""
    plan = cgroups.discover(prepare=False) if settings.session_cgroups else None
    mode = containment.mode_name(plan, settings.per_session_users)
    limits = [name for name, value in (("SESSION_MEMORY_MAX", settings.session_memory_max),
                                       ("SESSION_CPU_MAX", settings.session_cpu_max),
                                       ("SESSION_PIDS_MAX", settings.session_pids_max)) if value is not None]
    if plan is not None:
        missing = [f"SESSION_{name.upper()}" for name in plan.missing_limits()]
        unenforced = [name for name in limits if name in missing]
        if unenforced:
            return Finding("contain", WARN, f"{mode}; {', '.join(unenforced)} cannot be enforced here (no controller)",
                           "enable the cgroup controllers memory, cpu and pids for the service's cgroup")
        return Finding("contain", OK, f"{mode}: limits {', '.join(limits) if limits else 'none set'}")
    fix = ("run the service as root on a machine with cgroups (v2, v1 or both), with KEEPALIVE_SESSION_CGROUPS "
           "left true")
    if mode == containment.SESSION_USER:
        detail = f"{mode}: every process of a session's uid is ended with it, but sessions have no limits"
    else:
        detail = f"{mode}: a notebook's setsid env -i process outlives its session, and sessions have no limits"
    if limits:
        detail += f" ({', '.join(limits)} set but not enforced)"
    return Finding("contain", WARN, detail, fix)


def _viewer_client(settings: Settings) -> Finding:
    """The HTML5 client's files, which the service serves to viewers from xpra's install."""
    try:
        files = html5_files.Html5Files.of_xpra(settings.xpra)
    except html5_files.ClientMissing as missing:
        return Finding("viewer", FAIL, str(missing), "apt-get install xpra (Debian 12's has the HTML5 client), "
                       "or put xpra's www dir at <prefix>/share/xpra/www beside <prefix>/bin/xpra")
    return Finding("viewer", OK, f"xpra's HTML5 client in {files.www_dir}")


def _disk_before_first_start(state: Path) -> Finding:
    """Free space where a state dir that does not exist yet will be made (its nearest parent)."""
    existing = next((parent for parent in (state, *state.parents) if parent.is_dir()), Path("/"))
    free = shutil.disk_usage(existing).free
    enough = free >= MIN_FREE_DISK_BYTES
    detail = f"{free // (1024 * 1024)} MiB free in {existing}" + ("" if enough else f" (need {MIN_FREE_DISK_BYTES // (1024 * 1024)} MiB)")
    return Finding("disk", OK if enough else FAIL, detail, FIXES["disk"])


def _fonts() -> Finding:
    fc_list = shutil.which("fc-list")
    if fc_list is None:
        return Finding("fonts", FAIL, "fc-list not found: fontconfig is missing", "apt-get install fontconfig fonts-dejavu-core")
    try:
        count = len(subprocess.run([fc_list], capture_output=True, text=True, timeout=30).stdout.splitlines())
    except (OSError, subprocess.SubprocessError) as error:
        return Finding("fonts", FAIL, f"fc-list failed: {error}", "apt-get install --reinstall fontconfig")
    if count == 0:
        return Finding("fonts", FAIL, "no fonts installed: pages render as boxes", "apt-get install fonts-dejavu-core")
    return Finding("fonts", OK, f"{count} fonts")


def _state_dir(settings: Settings) -> list[Finding]:
    state = settings.state_dir
    if not state.exists():
        return [Finding("state_dir", WARN, f"{state} does not exist yet (keepalive serve creates it)")]
    if not os.access(state, os.W_OK | os.X_OK):
        return [Finding("state_dir", FAIL, f"{state} is not writable by uid {os.geteuid()}",
                        f"chown {os.geteuid()} {state}, or set KEEPALIVE_STATE_DIR")]
    findings = []
    mode = stat.S_IMODE(state.stat().st_mode)
    if settings.per_session_users:
        # session users must pass through it to their folders (o+x), and read or list nothing
        right, why = 0o711, "session users pass through it to their own folders and may list nothing"
    else:
        right, why = 0o700, "it holds the API token and every session's files"
    findings.append(
        Finding("state_dir", OK if mode & 0o077 == right & 0o077 else WARN, f"{state} mode {mode:04o}",
                f"chmod {right:o} {state}: {why}")
    )
    token = settings.token_file
    if token.exists():
        token_mode = stat.S_IMODE(token.stat().st_mode)
        findings.append(
            Finding("token", OK if token_mode == 0o600 else FAIL, f"{token} mode {token_mode:04o}", f"chmod 600 {token}")
        )
    return findings


def service_finding(url: str, token_file: Path | None, settings: Settings, explicit: bool) -> Finding:
    """The running service's own /health; no service is a warning unless a URL was named."""
    missing = FAIL if explicit else WARN
    try:
        client = Client(url, find_token(token_file, settings.state_dir), timeout=10)
    except ClientError as error:
        client = Client(url, "", timeout=10)  # /health needs no token
        token_problem = str(error)
    else:
        token_problem = ""
    try:
        status, body = client.health()
    except ClientError:
        return Finding("service", missing, f"no keepalive answers at {url}", "bash scripts/serve.sh (or keepalive serve)")
    finally:
        client.close()
    if status != 200:
        failing = ", ".join(body.get("failing", [])) or "?"
        return Finding("service", FAIL, f"{url} answers, but cannot run sessions: {failing}",
                       "see the checks above, then restart keepalive serve")
    unhealthy = body.get("sessions", {}).get("unhealthy", [])
    detail = f"{url}: version {body.get('version')}, {body.get('sessions', {}).get('total', 0)} session(s)"
    if unhealthy:
        return Finding("service", WARN, f"{detail}; unhealthy: {', '.join(unhealthy)}", "keepalive show ID")
    if token_problem:
        return Finding("service", WARN, f"{detail}; {token_problem}", "export KEEPALIVE_API_TOKEN or pass --token-file")
    return Finding("service", OK, detail)


def run(settings: Settings, url: str, token_file: Path | None, explicit_url: bool) -> int:
    findings = machine_findings(settings) + [service_finding(url, token_file, settings, explicit_url)]
    for finding in findings:
        print(finding.line())
    failed = [f.name for f in findings if f.status == FAIL]
    warned = [f.name for f in findings if f.status == WARN]
    summary = f"{len(failed)} failing ({', '.join(failed)})" if failed else "nothing failing"
    print(f"\n{len(findings)} checks: {summary}" + (f", {len(warned)} warning(s)" if warned else ""))
    return 1 if failed else 0
