"""keepalive.engine.cgroups: the machine's hierarchies, the plan, limits, and joining a cgroup.

The three layouts are parsed from mountinfo texts of each kind; limits are written into fake
cgroup directories (plain folders with the control files a kernel would make). What only a
real kernel does (making a cgroup, moving a process, killing all of it) runs on this machine's
own cgroups when the test runs as root.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from keepalive.engine import cgroups
from keepalive.engine.cgroups import (
    CgroupError,
    Hierarchy,
    Limits,
    SessionCgroup,
    choose_plan,
    format_memory_size,
    launch_argv,
    parse_hierarchies,
    parse_memory_size,
)
from tests.waiting import wait_until

# This machine's kind: v1 controllers one per folder, and a v2 hierarchy with none enabled.
HYBRID_MOUNTINFO = """\
31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
32 31 0:29 / /sys/fs/cgroup/cpu rw,relatime - cgroup cgroup rw,cpu
33 31 0:30 / /sys/fs/cgroup/cpuacct rw,relatime - cgroup cgroup rw,cpuacct
35 31 0:32 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory
37 31 0:34 / /sys/fs/cgroup/freezer rw,relatime - cgroup cgroup rw,freezer
39 31 0:36 / /sys/fs/cgroup/pids rw,relatime - cgroup cgroup rw,pids
40 31 0:37 / /sys/fs/cgroup/systemd rw,relatime - cgroup cgroup rw,name=systemd
41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw
"""
HYBRID_SELF = """\
9:name=systemd:/
8:pids:/
6:freezer:/
4:memory:/process_api/9e3f
2:cpuacct:/
1:cpu:/
0::/
"""
# A systemd host or a Kubernetes node: v2 alone.
V2_MOUNTINFO = "29 23 0:26 / /sys/fs/cgroup rw,nosuid - cgroup2 cgroup2 rw,nsdelegate\n"
V2_SELF = "0::/system.slice/keepalive.service\n"
# An older host: v1 alone, cpu and cpuacct mounted together.
V1_MOUNTINFO = """\
25 24 0:22 / /sys/fs/cgroup/cpu,cpuacct rw - cgroup cgroup rw,cpu,cpuacct
26 24 0:23 / /sys/fs/cgroup/memory rw - cgroup cgroup rw,memory
27 24 0:24 / /sys/fs/cgroup/pids rw - cgroup cgroup rw,pids
28 24 0:25 /docker/abc /sys/fs/cgroup/blkio rw - cgroup cgroup rw,blkio
"""
V1_SELF = "4:pids:/ka\n3:memory:/ka\n2:cpu,cpuacct:/ka\n"


def no_controllers(path: Path) -> str:
    return ""


@pytest.mark.parametrize("text, expected", [
    ("4G", 4 * 2**30), ("4GiB", 4 * 2**30), ("4096M", 4 * 2**30), ("4gb", 4 * 2**30),
    ("1.5G", 3 * 2**29), ("512M", 512 * 2**20), (str(2**30), 2**30), (2**30, 2**30),
])
def test_memory_sizes_are_binary(text, expected) -> None:
    assert parse_memory_size(text) == expected


@pytest.mark.parametrize("text", ["", "4X", "G", "-1G", "four", "1M"])
def test_bad_memory_sizes_say_what_is_wrong(text) -> None:
    with pytest.raises(ValueError, match="4G|at least"):
        parse_memory_size(text)


def test_sizes_are_told_in_binary_units() -> None:
    assert format_memory_size(4 * 2**30) == "4 GiB"
    assert format_memory_size(3 * 2**29) == "1.5 GiB"
    assert format_memory_size(300 * 2**20) == "300 MiB"


def test_the_hybrid_layout_lists_and_kills_on_v2_and_limits_on_v1() -> None:
    hierarchies = parse_hierarchies(HYBRID_MOUNTINFO, HYBRID_SELF, no_controllers)
    by_mount = {str(h.mount): h for h in hierarchies}
    assert by_mount["/sys/fs/cgroup/unified"].version == 2
    assert by_mount["/sys/fs/cgroup/memory"].base == Path("/sys/fs/cgroup/memory/process_api/9e3f")
    assert "/sys/fs/cgroup/systemd" not in by_mount  # a named hierarchy without controllers
    plan = choose_plan(hierarchies)
    assert plan is not None and plan.mode == "cgroup v1+v2"
    assert plan.membership.mount == Path("/sys/fs/cgroup/unified")
    assert {name: str(h.mount) for name, h in plan.limits.items()} == {
        "memory_max": "/sys/fs/cgroup/memory", "cpu_max": "/sys/fs/cgroup/cpu", "pids_max": "/sys/fs/cgroup/pids",
    }
    cgroup = SessionCgroup.for_session(plan, "0123456789ab")
    assert cgroup.membership == Path("/sys/fs/cgroup/unified/keepalive-sessions/session-0123456789ab")
    assert cgroup.limit_dirs["memory_max"] == Path(
        "/sys/fs/cgroup/memory/process_api/9e3f/keepalive-sessions/session-0123456789ab")
    assert len(cgroup.procs_files()) == 4  # the v2 one and each v1 controller's


def test_v2_alone_carries_everything_when_the_controllers_are_there() -> None:
    hierarchies = parse_hierarchies(V2_MOUNTINFO, V2_SELF, lambda path: "cpuset cpu io memory pids\n")
    plan = choose_plan(hierarchies)
    assert plan is not None and plan.mode == "cgroup v2" and plan.missing_limits() == []
    assert plan.membership.sessions == Path("/sys/fs/cgroup/system.slice/keepalive.service/keepalive-sessions")
    assert SessionCgroup.for_session(plan, "0123456789ab").procs_files() == [
        Path("/sys/fs/cgroup/system.slice/keepalive.service/keepalive-sessions/session-0123456789ab/cgroup.procs")
    ]


def test_v2_without_controllers_still_contains_but_cannot_limit() -> None:
    plan = choose_plan(parse_hierarchies(V2_MOUNTINFO, V2_SELF, no_controllers))
    assert plan is not None and plan.mode == "cgroup v2"
    assert plan.missing_limits() == ["memory_max", "cpu_max", "pids_max"]
    with pytest.raises(CgroupError, match="no memory controller"):
        SessionCgroup.for_session(plan, "0123456789ab")._apply(Limits(memory_max=2**30))


def test_a_restarted_service_in_its_leaf_finds_the_same_place() -> None:
    moved = parse_hierarchies(V2_MOUNTINFO, "0::/system.slice/keepalive.service/keepalive-service\n", no_controllers)
    fresh = parse_hierarchies(V2_MOUNTINFO, V2_SELF, no_controllers)
    assert moved[0].sessions == fresh[0].sessions


def test_v1_alone_lists_on_pids_and_skips_subtree_mounts() -> None:
    hierarchies = parse_hierarchies(V1_MOUNTINFO, V1_SELF, no_controllers)
    assert {str(h.mount) for h in hierarchies} == {
        "/sys/fs/cgroup/cpu,cpuacct", "/sys/fs/cgroup/memory", "/sys/fs/cgroup/pids"}
    plan = choose_plan(hierarchies)
    assert plan is not None and plan.mode == "cgroup v1"
    assert plan.membership.mount == Path("/sys/fs/cgroup/pids")
    assert plan.limits["cpu_max"].base == Path("/sys/fs/cgroup/cpu,cpuacct/ka")


def test_no_cgroup_mount_means_no_plan() -> None:
    assert choose_plan(parse_hierarchies("22 1 0:5 / /proc rw - proc proc rw\n", "0::/\n", no_controllers)) is None


def fake_cgroup(folder: Path, files: dict[str, str]) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for name, text in files.items():
        (folder / name).write_text(text)
    return folder


def test_limits_on_v2_files(tmp_path) -> None:
    folder = fake_cgroup(tmp_path / "session-0123456789ab", {
        "cgroup.procs": "", "memory.max": "max", "memory.swap.max": "max", "cpu.max": "max 100000",
        "pids.max": "max", "memory.events": "low 0\nhigh 0\nmax 3\noom 1\noom_kill 1\n"})
    cgroup = SessionCgroup(folder, {"memory_max": folder, "cpu_max": folder, "pids_max": folder}, 2)
    cgroup._apply(Limits(memory_max=2**30, cpu_max=0.5, pids_max=256))
    assert (folder / "memory.max").read_text() == str(2**30)
    assert (folder / "memory.swap.max").read_text() == "0"
    assert (folder / "cpu.max").read_text() == "50000 100000"
    assert (folder / "pids.max").read_text() == "256"
    assert cgroup.memory_max() == 2**30
    assert cgroup.oom_kills() == 1


def test_limits_on_v1_files(tmp_path) -> None:
    memory = fake_cgroup(tmp_path / "memory/session-0123456789ab", {
        "memory.limit_in_bytes": "9223372036854771712", "memory.oom_control": "oom_kill_disable 0\nunder_oom 0\noom_kill 2\n"})
    cpu = fake_cgroup(tmp_path / "cpu/session-0123456789ab", {"cpu.cfs_period_us": "100000", "cpu.cfs_quota_us": "-1"})
    pids = fake_cgroup(tmp_path / "pids/session-0123456789ab", {"pids.max": "max", "cgroup.procs": "12\n34\n"})
    cgroup = SessionCgroup(pids, {"memory_max": memory, "cpu_max": cpu, "pids_max": pids}, 1)
    assert cgroup.memory_max() is None  # v1's "no limit" is a huge number
    cgroup._apply(Limits(memory_max=3 * 2**29, cpu_max=1.5, pids_max=64))
    assert (memory / "memory.limit_in_bytes").read_text() == str(3 * 2**29)
    assert (cpu / "cpu.cfs_quota_us").read_text() == "150000"
    assert (pids / "pids.max").read_text() == "64"
    assert cgroup.memory_max() == 3 * 2**29
    assert cgroup.oom_kills() == 2
    assert cgroup.pids() == {12, 34}
    assert len(cgroup.procs_files()) == 3


def test_the_v2_service_moves_into_a_leaf_to_hand_controllers_down(tmp_path) -> None:
    mount = tmp_path / "cg"
    base = fake_cgroup(mount / "svc", {"cgroup.procs": f"{os.getpid()}\n", "cgroup.subtree_control": "",
                                       "cgroup.controllers": "memory pids"})
    fake_cgroup(base / cgroups.SERVICE_LEAF, {"cgroup.procs": ""})
    fake_cgroup(base / cgroups.SESSIONS_GROUP, {"cgroup.subtree_control": ""})
    hierarchy = Hierarchy(mount, 2, frozenset({"memory", "pids"}), "/svc")
    plan = choose_plan([hierarchy])
    assert plan is not None and plan.missing_limits() == ["cpu_max"]
    cgroups._prepare(hierarchy, plan)
    assert (base / cgroups.SERVICE_LEAF / "cgroup.procs").read_text() == str(os.getpid())
    assert (base / "cgroup.subtree_control").read_text() == "+memory +pids"
    assert (base / cgroups.SESSIONS_GROUP / "cgroup.subtree_control").read_text() == "+memory +pids"


@pytest.mark.parametrize("path", [
    "/sys/fs/cgroup/unified/keepalive-sessions/session-0123456789ab/../../x",
    "/home/alice/keepalive-sessions/session-0123456789ab",
    "/sys/fs/cgroup/unified/other/session-0123456789ab",
    "/sys/fs/cgroup/unified/keepalive-sessions/session-0123",
])
def test_a_record_may_only_name_a_session_cgroup(path) -> None:
    with pytest.raises(CgroupError, match="no session cgroup"):
        SessionCgroup.from_record({"membership": path, "version": 2, "limits": {}}, None)


def test_a_recorded_cgroup_comes_back_as_it_was() -> None:
    plan = choose_plan(parse_hierarchies(HYBRID_MOUNTINFO, HYBRID_SELF, no_controllers))
    cgroup = SessionCgroup.for_session(plan, "0123456789ab")
    again = SessionCgroup.from_record(cgroup.to_record(), plan)
    assert again.directories() == cgroup.directories() and again.limit_dirs == cgroup.limit_dirs


def test_the_join_step_writes_the_programs_own_pid_and_its_oom_score(tmp_path) -> None:
    """The pid written is the program's own (exec keeps it), before the program runs."""
    procs = tmp_path / "cgroup.procs"
    procs.write_text("")
    argv = launch_argv([sys.executable, "-c", "import os; print(os.getpid(), open('/proc/self/oom_score_adj').read())"],
                       [procs], oom_score_adj=700)
    process = subprocess.run(argv, capture_output=True, text=True, check=True)
    pid, adj = process.stdout.split()
    assert procs.read_text().strip() == pid
    assert adj == "700"


def test_a_join_that_fails_never_runs_the_program(tmp_path) -> None:
    marker = tmp_path / "ran"
    argv = launch_argv(["touch", str(marker)], [tmp_path / "missing" / "cgroup.procs"])
    assert subprocess.run(argv, capture_output=True).returncode == 125
    assert not marker.exists()


requires_cgroups = pytest.mark.skipif(
    os.geteuid() != 0 or cgroups.discover() is None, reason="needs root and cgroups (CI has both)")


@requires_cgroups
def test_a_real_session_cgroup_holds_and_ends_even_escaped_processes(tmp_path) -> None:
    """A daemon that double-forks and empties its environment is still found and killed."""
    plan = cgroups.discover()
    cgroup = SessionCgroup.for_session(plan, os.urandom(6).hex())
    cgroup.create(Limits(memory_max=256 * 2**20, pids_max=64))
    try:
        assert cgroup.memory_max() == 256 * 2**20
        shared = tmp_path / "shared"
        shared.mkdir(mode=0o777)
        shared.chmod(0o777)
        ready = shared / "daemon.pid"
        script = f"setsid env -i sh -c 'echo $$ > {ready}; exec sleep 7777' &"
        leader = subprocess.Popen(launch_argv(["sh", "-c", script], cgroup.procs_files(), user=(61990, 61990)))
        leader.wait()
        wait_until("the daemon to start", lambda: ready.exists() and ready.read_text().strip(), 10)
        daemon = int(ready.read_text())
        assert daemon in cgroup.pids()
        assert Path(f"/proc/{daemon}/status").read_text().count("61990") >= 1  # dropped to the session's user
        hit = cgroup.kill()
        assert daemon in hit and cgroup.pids() == set()
        assert not Path(f"/proc/{daemon}").exists() or "Z" in Path(f"/proc/{daemon}/stat").read_text().split()[2]
    finally:
        cgroup.remove()
    assert not any(folder.exists() for folder in cgroup.directories())


def test_a_session_without_its_cgroup_starts_its_parts_outside_instead_of_failing() -> None:
    """Adopted from a keepalive without cgroups: a part that restarts must not try to join a
    cgroup that was never made (the join step would fail it)."""
    from keepalive.engine.containment import PART_OOM_SCORE_ADJ, Containment

    plan = choose_plan(parse_hierarchies(V2_MOUNTINFO, V2_SELF, no_controllers))
    containment = Containment("0123456789ab", plan, None)
    assert not containment.cgroup.exists()
    assert containment.launch_options("xvfb") == {"oom_score_adj": PART_OOM_SCORE_ADJ}
