"""A session is a cgroup: the kernel's own accounting says which processes are the session's,
and the session's limits hold for all of them together.

What a process says about itself (its environment, its argv) can be dropped by any notebook
(``setsid env -i ...``); its cgroup cannot: only root moves a process out of the cgroup it was
born in. So every process of a session is started inside the session's cgroup (see
``launch_argv``: the step that joins runs before the program can fork), found through the
cgroup's ``cgroup.procs`` and ended through it (``cgroup.kill`` on v2, a kill loop on v1).

Machines mount cgroups three ways, and all three are handled:

- **v2 only** (systemd hosts, Docker, Kubernetes nodes): one hierarchy; the session's cgroup
  holds its processes and, with the controllers enabled in the service's cgroup, its limits
  (``memory.max``, ``cpu.max``, ``pids.max``).
- **v1 only**: one hierarchy per controller; the ``pids`` (or ``memory``) hierarchy lists the
  session's processes, and each controller's hierarchy carries its own limit
  (``memory.limit_in_bytes``, ``cpu.cfs_quota_us``, ``pids.max``).
- **hybrid** (v1 controllers plus a v2 hierarchy with none enabled): the v2 cgroup lists and
  kills the processes, the v1 ones carry the limits.

Every cgroup is made by root, under the service's own cgroup in each hierarchy, and is owned
by root: a session's user can read its limits but change nothing.
"""

from __future__ import annotations

import errno
import logging
import os
import re
import signal
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger(__name__)

#: The v1 controllers a session's limits use, by the name of the limit.
LIMIT_CONTROLLERS = {"memory_max": "memory", "cpu_max": "cpu", "pids_max": "pids"}
#: Where sessions' cgroups go, below the service's own cgroup in each hierarchy.
SESSIONS_GROUP = "keepalive-sessions"
#: On v2, where the service moves its own processes so that its cgroup may enable controllers
#: for the sessions' (a cgroup with processes cannot: the "no internal processes" rule).
SERVICE_LEAF = "keepalive-service"
#: Period for the CPU quota, in microseconds (the kernel's default).
CPU_PERIOD_US = 100_000
#: A session cgroup's directory name; nothing else under SESSIONS_GROUP is ever touched.
SESSION_DIR = re.compile(r"^session-[0-9a-f]{12}$")

_UNITS = {"": 1, "k": 2**10, "m": 2**20, "g": 2**30, "t": 2**40}


class CgroupError(RuntimeError):
    """A cgroup could not be made, limited or emptied; the message says which and why."""


# -- limits -----------------------------------------------------------------------------


def parse_memory_size(text: str | int) -> int:
    """Bytes, in binary units: ``4G`` and ``4GiB`` are 4 GiB, ``4096M`` too; a bare number is bytes.

    Raises ValueError saying what is wrong.
    """
    if isinstance(text, int):
        value = text
    else:
        match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([kmgt]?)(?:i?b)?\s*", text.lower())
        if match is None:
            raise ValueError(f"expected a size such as 4G, 4GiB or 4096M, got {text!r}")
        value = int(float(match.group(1)) * _UNITS[match.group(2)])
    if value < 16 * 2**20:
        raise ValueError(f"a session needs at least 16 MiB, got {text!r}")
    return value


def format_memory_size(value: int) -> str:
    """4294967296 -> '4 GiB', 1610612736 -> '1.5 GiB': how the user is told about a limit."""
    for unit, size in (("TiB", 2**40), ("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if value >= size:
            return f"{value / size:.1f}".rstrip("0").rstrip(".") + f" {unit}"
    return f"{value} B"


@dataclass(frozen=True)
class Limits:
    """What all of a session's processes together may use; None: no limit."""

    memory_max: int | None = None  #: bytes
    cpu_max: float | None = None  #: cores
    pids_max: int | None = None  #: processes and threads

    def any(self) -> bool:
        return any(value is not None for value in (self.memory_max, self.cpu_max, self.pids_max))


# -- the machine's hierarchies --------------------------------------------------------------


@dataclass(frozen=True)
class Hierarchy:
    """One mounted cgroup hierarchy, and the service's own cgroup in it."""

    mount: Path
    version: int  #: 1 or 2
    #: v1: the controllers mounted here; v2: those the service's cgroup can hand to its children.
    controllers: frozenset[str]
    own: str  #: the service's cgroup, as /proc/self/cgroup names it ("/" is the root)

    @property
    def base(self) -> Path:
        """Where the sessions' group goes: the service's cgroup (the one above the leaf it may
        have moved itself into, so that a restarted service finds the same place)."""
        own = self.own.strip("/")
        if own.rsplit("/", 1)[-1] == SERVICE_LEAF:
            own = own.rpartition("/")[0]
        return self.mount / own if own else self.mount

    @property
    def sessions(self) -> Path:
        return self.base / SESSIONS_GROUP


def parse_hierarchies(mountinfo: str, self_cgroup: str, read: Callable[[Path], str]) -> list[Hierarchy]:
    """The cgroup hierarchies of ``/proc/self/mountinfo``, each with the service's place in it.

    ``read``: how a v2 ``cgroup.controllers`` file is read (a fake tree in the unit tests).
    """
    places: dict[str, str] = {}  # "" for v2, else the v1 controller list as /proc/self/cgroup says
    for line in self_cgroup.splitlines():
        number, sep, rest = line.partition(":")
        if not sep:
            continue
        controllers, _, path = rest.partition(":")
        places[controllers] = path
    hierarchies = []
    for line in mountinfo.splitlines():
        fields = line.split()
        if "-" not in fields:
            continue
        dash = fields.index("-")
        if dash + 3 > len(fields):
            continue
        fstype, super_options = fields[dash + 1], fields[dash + 3]
        mount, root = Path(fields[4]), fields[3]
        if root != "/":
            continue  # a bind mount of a subtree (a container's view): the places would not match
        if fstype == "cgroup2":
            own = places.get("", None)
            if own is None:
                continue
            try:
                available = frozenset(read(mount / own.strip("/") / "cgroup.controllers").split())
            except OSError:
                available = frozenset()
            hierarchies.append(Hierarchy(mount, 2, available, own))
        elif fstype == "cgroup":
            options = set(super_options.split(","))
            controllers = frozenset(name for name in ("memory", "cpu", "pids", "freezer", "cpuacct") if name in options)
            own = next((path for key, path in places.items() if key and set(key.split(",")) & controllers), None)
            if controllers and own is not None:
                hierarchies.append(Hierarchy(mount, 1, controllers, own))
    return hierarchies


@dataclass(frozen=True)
class CgroupPlan:
    """Which hierarchy does what for every session of this service."""

    #: The hierarchy whose ``cgroup.procs`` lists every process of a session.
    membership: Hierarchy
    #: For each limit (LIMIT_CONTROLLERS' keys), the hierarchy that carries it; missing: none can.
    limits: dict[str, Hierarchy]

    @property
    def mode(self) -> str:
        """What /health and doctor show: "cgroup v2", "cgroup v1" or "cgroup v1+v2"."""
        versions = {self.membership.version, *(h.version for h in self.limits.values())}
        return "cgroup v1+v2" if len(versions) == 2 else f"cgroup v{versions.pop()}"

    def hierarchies(self) -> list[Hierarchy]:
        """Each hierarchy the plan uses, once."""
        seen: dict[Path, Hierarchy] = {}
        for hierarchy in (self.membership, *self.limits.values()):
            seen.setdefault(hierarchy.mount, hierarchy)
        return list(seen.values())

    def missing_limits(self) -> list[str]:
        return [name for name in LIMIT_CONTROLLERS if name not in self.limits]


def choose_plan(hierarchies: Iterable[Hierarchy]) -> CgroupPlan | None:
    """v2 for membership where there is one, else v1's pids (or memory) hierarchy; each limit
    on v2 when the service's cgroup has that controller, else on its v1 hierarchy."""
    hierarchies = list(hierarchies)
    v2 = next((h for h in hierarchies if h.version == 2), None)
    v1 = {controller: h for h in hierarchies if h.version == 1 for controller in h.controllers}
    membership = v2 or v1.get("pids") or v1.get("memory")
    if membership is None:
        return None
    limits = {}
    for limit, controller in LIMIT_CONTROLLERS.items():
        if v2 is not None and controller in v2.controllers:
            limits[limit] = v2
        elif controller in v1:
            limits[limit] = v1[controller]
    return CgroupPlan(membership, limits)


def discover(prepare: bool = True) -> CgroupPlan | None:
    """This machine's plan, or None when it has no cgroups this service can make children in.

    ``prepare``: make the sessions' group in each hierarchy (the service); without it, only
    what the plan would be (doctor, which runs in a cgroup of its own)."""
    if os.geteuid() != 0:
        return None  # a delegated subtree would do too; keepalive asks for root instead
    try:
        mountinfo = Path("/proc/self/mountinfo").read_text()
        self_cgroup = Path("/proc/self/cgroup").read_text()
    except OSError:
        return None
    plan = choose_plan(parse_hierarchies(mountinfo, self_cgroup, lambda path: path.read_text()))
    if plan is None or not prepare:
        return plan
    try:
        for hierarchy in plan.hierarchies():
            _prepare(hierarchy, plan)
    except OSError as error:
        log.warning("no cgroups for sessions: %s", error)
        return None
    return plan


def _prepare(hierarchy: Hierarchy, plan: CgroupPlan) -> None:
    """The sessions' group in ``hierarchy``, with the controllers the plan needs handed down."""
    hierarchy.sessions.mkdir(mode=0o755, exist_ok=True)
    if hierarchy.version != 2:
        return
    wanted = sorted({LIMIT_CONTROLLERS[name] for name, h in plan.limits.items() if h.mount == hierarchy.mount})
    if not wanted:
        return
    base = hierarchy.base
    enabled = set((base / "cgroup.subtree_control").read_text().split())
    if set(wanted) - enabled:
        if base != hierarchy.mount and (base / "cgroup.procs").read_text().split():
            _move_into_leaf(base)
        _write(base / "cgroup.subtree_control", " ".join(f"+{name}" for name in wanted))
    _write(hierarchy.sessions / "cgroup.subtree_control", " ".join(f"+{name}" for name in wanted))


def _move_into_leaf(base: Path) -> None:
    """v2: a cgroup that hands controllers to its children may hold no process itself; move the
    service (and whatever shares its cgroup) into a leaf beside the sessions' group."""
    leaf = base / SERVICE_LEAF
    leaf.mkdir(mode=0o755, exist_ok=True)
    for pid in (base / "cgroup.procs").read_text().split():
        try:
            _write(leaf / "cgroup.procs", pid)
        except OSError as error:
            if error.errno != errno.ESRCH:  # one that just ended is no matter
                raise
    log.info("moved this service's processes into %s so that sessions can have limits", leaf)


def _write(path: Path, text: str) -> None:
    """One write of ``text`` (cgroup files act on each write; no O_CREAT, no following links)."""
    fd = os.open(path, os.O_WRONLY | os.O_TRUNC | os.O_NOFOLLOW | os.O_CLOEXEC)
    try:
        os.write(fd, text.encode())
    finally:
        os.close(fd)


# -- one session's cgroup ---------------------------------------------------------------------


class SessionCgroup:
    """One session's cgroup: a directory in each hierarchy the plan uses."""

    def __init__(self, membership: Path, limit_dirs: dict[str, Path], membership_version: int) -> None:
        self.membership = membership
        self.limit_dirs = limit_dirs
        self.membership_version = membership_version

    @classmethod
    def for_session(cls, plan: CgroupPlan, session_id: str) -> SessionCgroup:
        name = f"session-{session_id}"
        if not SESSION_DIR.match(name):
            raise CgroupError(f"not a session id: {session_id!r}")
        return cls(
            plan.membership.sessions / name,
            {limit: hierarchy.sessions / name for limit, hierarchy in plan.limits.items()},
            plan.membership.version,
        )

    # what the session record keeps, so that a later service finds the same cgroup
    def to_record(self) -> dict:
        return {"membership": str(self.membership), "version": self.membership_version,
                "limits": {name: str(path) for name, path in self.limit_dirs.items()}}

    @classmethod
    def from_record(cls, data: dict, plan: CgroupPlan | None) -> SessionCgroup:
        """The cgroup a record names, checked to be a session cgroup under a cgroup mount."""
        membership = Path(data["membership"])
        limit_dirs = {name: Path(path) for name, path in data.get("limits", {}).items() if name in LIMIT_CONTROLLERS}
        for path in (membership, *limit_dirs.values()):
            if not path.is_absolute() or ".." in path.parts or not SESSION_DIR.match(path.name) \
                    or path.parent.name != SESSIONS_GROUP or not str(path).startswith("/sys/fs/cgroup/"):
                raise CgroupError(f"a session record names {str(path)!r}, which is no session cgroup")
        return cls(membership, limit_dirs, int(data.get("version", 2)))

    def directories(self) -> list[Path]:
        return list(dict.fromkeys([self.membership, *self.limit_dirs.values()]))

    def procs_files(self) -> list[Path]:
        """The ``cgroup.procs`` a new process writes itself into, one per hierarchy."""
        return [folder / "cgroup.procs" for folder in self.directories()]

    def create(self, limits: Limits) -> None:
        """Make the directories and set ``limits``; CgroupError (nothing left behind) if it fails."""
        made = []
        try:
            for folder in self.directories():
                folder.mkdir(mode=0o755)
                made.append(folder)
            self._apply(limits)
        except OSError as error:
            for folder in reversed(made):
                try:
                    folder.rmdir()
                except OSError:
                    pass
            raise CgroupError(f"cannot make the session's cgroup {self.membership}: {error}") from error

    def set_limits(self, limits: Limits) -> None:
        try:
            self._apply(limits)
        except OSError as error:
            raise CgroupError(f"cannot set the limits of {self.membership}: {error}") from error

    def _apply(self, limits: Limits) -> None:
        if limits.memory_max is not None:
            folder = self._limit_dir("memory_max")
            if (folder / "memory.max").exists():
                _write(folder / "memory.max", str(limits.memory_max))
                if (folder / "memory.swap.max").exists():
                    _write(folder / "memory.swap.max", "0")  # the limit is memory, not memory plus swap
            else:
                _write(folder / "memory.limit_in_bytes", str(limits.memory_max))
        if limits.cpu_max is not None:
            folder = self._limit_dir("cpu_max")
            quota = max(1000, round(limits.cpu_max * CPU_PERIOD_US))
            if (folder / "cpu.max").exists():
                _write(folder / "cpu.max", f"{quota} {CPU_PERIOD_US}")
            else:
                _write(folder / "cpu.cfs_period_us", str(CPU_PERIOD_US))
                _write(folder / "cpu.cfs_quota_us", str(quota))
        if limits.pids_max is not None:
            _write(self._limit_dir("pids_max") / "pids.max", str(limits.pids_max))

    def _limit_dir(self, limit: str) -> Path:
        try:
            return self.limit_dirs[limit]
        except KeyError:
            raise CgroupError(f"this machine's cgroups have no {LIMIT_CONTROLLERS[limit]} controller") from None

    def exists(self) -> bool:
        return self.membership.is_dir()

    def pids(self) -> set[int]:
        """Every process in the session's cgroup (none if it is gone)."""
        try:
            text = (self.membership / "cgroup.procs").read_text()
        except FileNotFoundError:
            return set()
        return {int(pid) for pid in text.split()}

    def memory_max(self) -> int | None:
        folder = self.limit_dirs.get("memory_max")
        if folder is None:
            return None
        for name in ("memory.max", "memory.limit_in_bytes"):
            try:
                text = (folder / name).read_text().strip()
            except FileNotFoundError:
                continue
            return None if text == "max" or int(text) >= 2**62 else int(text)
        return None

    def oom_kills(self) -> int:
        """How many processes the kernel killed in this cgroup for memory, so far."""
        folder = self.limit_dirs.get("memory_max")
        if folder is None:
            return 0
        for name in ("memory.events", "memory.oom_control"):
            try:
                text = (folder / name).read_text()
            except FileNotFoundError:
                continue
            for line in text.splitlines():
                key, _, value = line.partition(" ")
                if key == "oom_kill":
                    return int(value)
        return 0

    def kill(self, timeout: float = 5.0) -> set[int]:
        """SIGKILL every process of the session, however it was started, and wait until the
        cgroup is empty; returns the pids that were there. CgroupError if some outlive ``timeout``."""
        kill_file = self.membership / "cgroup.kill"
        # v2: the kernel kills all, new forks included, in one step; v1: what forks meanwhile
        # shows in the next read (pids.max bounds how many)
        hit, left = kill_until_gone(self.pids, timeout,
                                    kill_all=(lambda: _write(kill_file, "1")) if kill_file.exists() else None)
        if left:
            raise CgroupError(f"processes {sorted(left)} outlived a kill of {self.membership}")
        return hit

    def remove(self) -> None:
        """Remove the (empty) directories; one that still has processes is killed first."""
        if self.pids():
            self.kill()
        for folder in self.directories():
            for _ in range(50):  # an exiting process leaves the cgroup a moment after its kill
                try:
                    folder.rmdir()
                    break
                except FileNotFoundError:
                    break
                except OSError as error:
                    if error.errno != errno.EBUSY:
                        raise
                    time.sleep(0.02)


def kill_until_gone(
    current: Callable[[], set[int]], timeout: float, kill_all: Callable[[], None] | None = None,
) -> tuple[set[int], set[int]]:
    """SIGKILL every process ``current()`` names (or have ``kill_all()`` do it at once) until it
    names none: each round kills all that exist, and a killed process forks no more. Returns
    the pids it hit and those still there after ``timeout``."""
    hit: set[int] = set()
    deadline = time.monotonic() + timeout
    while pids := current():
        hit |= pids
        if kill_all is not None:
            kill_all()
        else:
            for pid in pids:
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
        if time.monotonic() >= deadline:
            return hit, current()
        time.sleep(0.02)
    return hit, set()


# -- starting a process inside it ---------------------------------------------------------------

#: The step between the service and a session's program: as root, write its own pid into each
#: cgroup (so it is the session's before it can fork), set how willingly the OOM killer takes it,
#: then exec the rest (setpriv drops to the session's user; the same pid throughout).
_JOIN_SCRIPT = (
    'n=$1; shift; '
    'while [ "$n" -gt 0 ]; do echo $$ > "$1" || exit 125; shift; n=$((n - 1)); done; '
    'if [ "$1" != - ]; then echo "$1" > /proc/self/oom_score_adj || exit 125; fi; shift; '
    'exec "$@"'
)
SETPRIV = "/usr/bin/setpriv"
SH = "/bin/sh"


def launch_argv(
    argv: list[str],
    procs_files: list[Path],
    user: tuple[int, int] | None = None,
    oom_score_adj: int | None = None,
) -> list[str]:
    """``argv`` run inside the cgroups whose ``cgroup.procs`` are given, at ``oom_score_adj``,
    as ``user`` (uid, gid; no other groups). Popen it as root, without ``user``: the drop comes
    after the join, which needs root."""
    program = list(argv)
    if user is not None:
        uid, gid = user
        program = [SETPRIV, f"--reuid={uid}", f"--regid={gid}", "--clear-groups", "--", *program]
    adj = "-" if oom_score_adj is None else str(oom_score_adj)
    return [SH, "-c", _JOIN_SCRIPT, "keepalive-join", str(len(procs_files)), *map(str, procs_files), adj, *program]
