"""What holds one session's processes together, and how every one of them is ended.

Three modes, strongest first; ``/health`` and ``keepalive doctor`` say which is in force:

- **cgroup** (the service is root and the machine has cgroups): every process of the session
  is born in the session's cgroup (keepalive.engine.cgroups), whatever it does later, and the
  session's limits hold for all of it together. Ending the session kills the cgroup.
- **session user** (root, a user per session, no cgroups): every process of the session's uid
  is the session's, since no one else runs as it. Ending the session kills them all.
- **marker** (sessions share the service's user): a process is the session's when it carries
  the session's ``KA_SESSION_ID`` or names its folder. A notebook's ``setsid env -i ...``
  escapes this one; only the other two modes contain a hostile notebook.

The OOM killer's order follows what a session must keep: within a session (its cgroup's own
OOM) and on the whole machine, a kernel goes before the kiosk and the Jupyter server, and the
service never (``SERVICE_OOM_SCORE_ADJ``, as root).
"""

from __future__ import annotations

import logging
from pathlib import Path

import psutil

from keepalive.engine import cgroups
from keepalive.engine.cgroups import CgroupError, CgroupPlan, Limits, SessionCgroup, kill_until_gone
from keepalive.engine.reaper import reap
from keepalive.engine.users import SessionUser, sweep_shared_temporary

log = logging.getLogger(__name__)

#: The order is made by raising scores only: any process may raise its own, while lowering one
#: takes CAP_SYS_RESOURCE, which a root service in a container often lacks.
#: The kiosk (Xvfb, the bridge and Chromium, xpra) and the Jupyter server: after the kernels.
PART_OOM_SCORE_ADJ = 300
#: Kernels, and what they start: the first choice (raised by keepalive_jupyter as each kernel
#: starts, from the Jupyter server's score).
KERNEL_OOM_SCORE_ADJ = 800
#: The service itself: never, where it may say so (else it keeps 0, below every session's part).
SERVICE_OOM_SCORE_ADJ = -1000
#: What tells the session's Jupyter server to raise its kernels' oom_score_adj (keepalive_jupyter);
#: KA_ like the session's marker: no KEEPALIVE_* name (the service's settings) reaches a session.
KERNEL_OOM_VARIABLE = "KA_KERNEL_OOM_SCORE_ADJ"

CGROUP, SESSION_USER, MARKER = "cgroup", "session user", "marker"


def mode_name(plan: CgroupPlan | None, per_session_users: bool) -> str:
    """How sessions are contained, in words for /health and doctor."""
    if plan is not None:
        return f"{CGROUP} ({plan.mode})"
    return SESSION_USER if per_session_users else MARKER


def protect_service() -> None:
    """The machine's OOM killer never picks the service, where it may say so (root with
    CAP_SYS_RESOURCE); elsewhere the sessions' parts and kernels still go before it."""
    try:
        Path("/proc/self/oom_score_adj").write_text(str(SERVICE_OOM_SCORE_ADJ))
    except OSError as error:
        log.info("the service keeps its OOM score (%s): sessions' processes go before it all the same", error)


class Containment:
    """One session's containment: its cgroup when there is a plan, else its uid or its marker."""

    def __init__(self, session_id: str, plan: CgroupPlan | None, user: SessionUser | None,
                 recorded: dict | None = None) -> None:
        """``recorded``: the cgroup the session's record names (an adopted session keeps it)."""
        self.session_id = session_id
        self.plan = plan
        self.user = user
        self.cgroup: SessionCgroup | None = None
        if recorded is not None:
            try:
                self.cgroup = SessionCgroup.from_record(recorded, plan)
            except (CgroupError, KeyError, TypeError, ValueError) as error:
                log.error("session %s: its record's cgroup is refused: %s", session_id, error)
        elif plan is not None:
            self.cgroup = SessionCgroup.for_session(plan, session_id)

    @property
    def mode(self) -> str:
        if self.cgroup is not None:
            return CGROUP
        return SESSION_USER if self.user is not None else MARKER

    def create(self, limits: Limits) -> dict | None:
        """Make the session's cgroup with ``limits`` (one a dead start left goes first); returns
        what the record keeps of it. CgroupError if limits are asked for and cannot be had."""
        if self.cgroup is None:
            if limits.any():
                raise CgroupError("limits need cgroups, which this service cannot make (it runs as root on a "
                                  "machine with cgroup v1 or v2)")
            return None
        if self.cgroup.exists():
            self.cgroup.remove()
        self.cgroup.create(limits)
        return self.cgroup.to_record()

    def apply(self, limits: Limits) -> None:
        """New limits for a running session (a pool session taken by someone who asked for some)."""
        if self.cgroup is not None:
            self.cgroup.set_limits(limits)

    def launch_options(self, part: str) -> dict:
        """How ChildProcess starts the session's ``part``: in the cgroup, and after the kernels
        in the OOM killer's order."""
        options: dict = {"oom_score_adj": PART_OOM_SCORE_ADJ}
        # a session an older keepalive started has no cgroup: its parts restart without one
        # (its end still finds them by uid or marker) rather than fail to join a missing one
        if self.cgroup is not None and self.cgroup.exists():
            options["cgroup_procs"] = self.cgroup.procs_files()
        return options

    def pids(self) -> set[int]:
        """Every process of the session, as far as the mode can tell."""
        if self.cgroup is not None:
            return self.cgroup.pids()
        if self.user is not None:
            return _pids_of_uid(self.user.uid)
        return set()  # marker mode: the reaper's own search (keepalive.engine.reaper)

    def end_all(self, folder: Path) -> list[int]:
        """Kill every process of the session, however it was started, and free the cgroup;
        returns the pids it ended. Blocking: run it in a thread."""
        hit: set[int] = set()
        if self.cgroup is not None:
            try:
                hit |= self.cgroup.kill()
                self.cgroup.remove()
            except (CgroupError, OSError) as error:
                log.error("session %s: its cgroup could not be emptied: %s", self.session_id, error)
        elif self.user is not None:
            hit |= _kill_uid(self.user.uid)
        # the marker's search as well: what an older keepalive started before it had cgroups
        hit |= set(reap(self.session_id, folder))
        if self.user is not None:  # the uid may go to another home next: nothing of this one's stays
            left = sweep_shared_temporary(self.user.uid)
            if left:
                log.info("session %s: removed what uid %s left in shared folders: %s", self.session_id,
                         self.user.uid, left)
        if hit:
            log.info("session %s: ended processes %s", self.session_id, sorted(hit))
        return sorted(hit)

    def oom_kills(self) -> int:
        return self.cgroup.oom_kills() if self.cgroup is not None else 0

    def memory_max(self) -> int | None:
        return self.cgroup.memory_max() if self.cgroup is not None else None


def _pids_of_uid(uid: int) -> set[int]:
    found = set()
    for process in psutil.process_iter(["uids", "status"]):
        uids = process.info.get("uids")
        if process.info.get("status") == psutil.STATUS_ZOMBIE:
            continue  # dead already; its parent (or init) collects it
        if uids is not None and uid in (uids.real, uids.effective, uids.saved):
            found.add(process.pid)
    return found


def _kill_uid(uid: int, timeout: float = 5.0) -> set[int]:
    """SIGKILL every process of ``uid`` until none is left."""
    hit, left = kill_until_gone(lambda: _pids_of_uid(uid), timeout)
    if left:
        log.error("processes of uid %s outlived %.0f s of killing: %s", uid, timeout, sorted(left))
    return hit


def discover_plan(enabled: bool) -> CgroupPlan | None:
    """The machine's cgroup plan, when cgroups are wanted and can be had."""
    return cgroups.discover() if enabled else None


class LimitRefused(ValueError):
    """A session asked for a limit it cannot have; ``field`` names it (for a 422)."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field


def session_limits(asked: dict | None, maxima: dict, plan: CgroupPlan | None) -> dict | None:
    """A session's limits: each one it asks for, at most the operator's maximum; the operator's
    value where it asks none. None when there are none (or no cgroups to hold them: the
    operator's are then only warned about, at start and by doctor). LimitRefused for more than
    the maximum, or for a limit this machine's cgroups cannot enforce."""
    asked = {name: value for name, value in (asked or {}).items() if value is not None}
    limits = {}
    for name, most in maxima.items():
        value = asked.get(name, most)
        if value is None:
            continue
        if most is not None and value > most:
            raise LimitRefused(name, f"at most {most} (the operator's KEEPALIVE_SESSION_{name.upper()}), got {value}")
        if name in asked and (plan is None or name in plan.missing_limits()):
            raise LimitRefused(name, "this service cannot enforce it: it needs root and the cgroup controller "
                                     f"'{cgroups.LIMIT_CONTROLLERS[name]}'")
        limits[name] = value
    if plan is None:
        return None
    return {name: value for name, value in limits.items() if name not in plan.missing_limits()} or None
