"""Sessions whose every process ended (the machine restarted, or all were killed): restored.

A new service finds in its store the sessions that were ``ready`` (or ``recovering``) when a
service last watched them, and tells three cases apart (``decide``):

- **something of it still runs** (a recorded part, or any process in its cgroup, of its uid, or
  with its marker, e.g. a kernel that outlived its Jupyter server): adopted as it runs, and what
  died meanwhile is recovered as after a crash (Session.adopt). No notice: the kernels may live.
- **nothing runs any more**: restored. It starts again under the same id and name, in the same
  home (the notebooks, and JupyterLab's workspace with the notebooks that were open), through
  the same recovery; once it is ready, the user is told where they look: a notice over
  JupyterLab in the kiosk, ``activity.restored``, the event and the webhook ``session_restored``.
- **nothing runs, and RESTORE_AFTER_REBOOT is off**: forgotten, stopped as a DELETE would stop
  it (its home stays); the log names it.

A session stopped on purpose never gets here: its DELETE removed its record, and a stop a dead
service left unfinished is finished, never restored.

When the old session ended is told only from what the service itself wrote or the kernel says,
never from a file a session's user can change (the service may run as root and never trusts what
a session's processes say of themselves): the heartbeat the service keeps in its own state dir
(``Heartbeat``) and the machine's boot id and boot time.
"""

from __future__ import annotations

import asyncio
import enum
import json
import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

import psutil

from keepalive.engine import reaper
from keepalive.engine.cgroups import CgroupError, Limits
from keepalive.engine.containment import MARKER
from keepalive.engine.process import same_process
from keepalive.files import write_private
from keepalive.models import SessionRestored, SessionState
from keepalive.settings import Settings

if TYPE_CHECKING:
    from keepalive.engine.registry import SessionRegistry
    from keepalive.engine.session import Session

log = logging.getLogger(__name__)

#: Seconds between two beats of the service's heartbeat: how far "last known alive" may lie
#: before the real end, while a service ran (it is fsynced, so a power cut loses no more).
HEARTBEAT_INTERVAL = 10.0
HEARTBEAT_FILE = "heartbeat.json"
BOOT_ID = Path("/proc/sys/kernel/random/boot_id")
#: Only these states are restored: the session was running for its user when last seen.
RUNNING = (SessionState.ready.value, SessionState.recovering.value)


class Way(enum.Enum):
    """What a new service does with a session it finds in its store."""

    adopt = "adopt"  # as it runs (Session.adopt), whatever its state
    restore = "restore"  # every process ended: started again, and the user told
    forget = "forget"  # every process ended and RESTORE_AFTER_REBOOT is off: stopped, home kept


def decide(state: str, anything_runs: bool, restore_enabled: bool) -> Way:
    """The way for a session in ``state`` (its record's) of which ``anything_runs`` or not."""
    if state not in RUNNING or anything_runs:
        return Way.adopt  # failed stays failed, a start or stop left unfinished is finished, as ever
    return Way.restore if restore_enabled else Way.forget


def current_boot_id() -> str:
    """The kernel's id of this boot: a new one after every restart of the machine."""
    try:
        return BOOT_ID.read_text().strip()
    except OSError:
        return ""


@dataclass(frozen=True)
class Beat:
    at: float  #: wall-clock seconds (epoch) of the beat
    boot_id: str  #: the boot the service beat in


class Heartbeat:
    """The service's own "still alive", every HEARTBEAT_INTERVAL seconds, in its state dir.

    A file only the service writes (0600 in a root-owned state dir when it runs as root), so
    what it says of the last moment a service watched its sessions is never a session's claim.
    """

    def __init__(self, state_dir: Path, interval: float = HEARTBEAT_INTERVAL,
                 clock: Callable[[], float] = time.time, boot_id: Callable[[], str] = current_boot_id) -> None:
        self.path = state_dir / HEARTBEAT_FILE
        self.interval = interval
        self._clock = clock
        self._boot_id = boot_id
        self._task: asyncio.Task[None] | None = None

    def last(self) -> Beat | None:
        """The last beat written, or None (none yet, or unreadable)."""
        try:
            data = json.loads(self.path.read_text())
            return Beat(float(data["at"]), str(data["boot_id"]))
        except (OSError, ValueError, KeyError, TypeError):
            return None

    def beat(self) -> None:
        write_private(self.path, json.dumps({"at": self._clock(), "boot_id": self._boot_id(), "pid": os.getpid()}))
        fd = os.open(self.path, os.O_RDONLY | os.O_CLOEXEC)
        try:  # on disk before the next beat: a power cut then loses at most one interval
            os.fsync(fd)
        finally:
            os.close(fd)

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._run(), name="heartbeat")

    async def _run(self) -> None:
        while True:
            try:
                await asyncio.to_thread(self.beat)
            except OSError as error:  # a full disk must not stop the service; the next beat tries again
                log.warning("the service's heartbeat could not be written to %s: %s", self.path, error)
            await asyncio.sleep(self.interval)

    async def stop(self) -> None:
        """Stop beating, with a last beat: the sessions left running were alive until now."""
        if self._task is None:
            return
        self._task.cancel()
        await asyncio.gather(self._task, return_exceptions=True)
        self._task = None
        try:
            await asyncio.to_thread(self.beat)
        except OSError as error:
            log.warning("the service's last heartbeat could not be written to %s: %s", self.path, error)


def stamp(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


@dataclass(frozen=True)
class Ending:
    """What is known of how a session's processes ended, from the service's and the kernel's facts."""

    #: The last heartbeat of the service that watched the session: it was alive then. Precise to
    #: HEARTBEAT_INTERVAL while a service ran; a session that outlived its service (sessions do)
    #: may have lived on after it. None: no heartbeat (a service older than this one).
    last_alive_at: float | None
    #: When the machine came up again, when it restarted since (the kernel's boot time, whole seconds).
    machine_restarted_at: float | None
    #: When this service found the session gone.
    found_gone_at: float

    @property
    def down_by(self) -> float:
        """When the session was down at the latest."""
        return self.machine_restarted_at if self.machine_restarted_at is not None else self.found_gone_at

    def message(self, restored_at: float) -> str:
        """What the user reads over JupyterLab."""
        after = f"after {stamp(self.last_alive_at)}" if self.last_alive_at is not None else "at a time not known"
        if self.machine_restarted_at is not None:
            how = f"the machine went down {after} and was up again at {stamp(self.machine_restarted_at)}"
        else:
            how = f"every process of this session ended {after}"
        return (f"The kernel restarted: {how}; the session was started again at {stamp(restored_at)}. "
                "Variables and running cells are gone; the outputs recorded before are kept.")

    def restored(self, restored_at: float) -> SessionRestored:
        def when(epoch: float | None) -> datetime | None:
            return None if epoch is None else datetime.fromtimestamp(epoch, UTC)

        return SessionRestored(
            reason="machine restarted" if self.machine_restarted_at is not None else "processes ended",
            last_alive_at=when(self.last_alive_at), down_by=when(self.down_by), restored_at=when(restored_at),
            new_kernels=True, message=self.message(restored_at),
        )


def recorded_parts(session: Session) -> list[tuple[int | None, float | None]]:
    record = session.record
    return [(record.jupyter_pid, record.jupyter_started_at), (record.xvfb_pid, record.xvfb_started_at),
            (record.browser_pid, record.browser_started_at), (record.xpra_pid, record.xpra_started_at)]


def anything_runs(session: Session, runs: Callable[[int | None, float | None], bool] = same_process) -> bool:
    """Whether any process of the session lives: a recorded part (pid and start time), or any
    process its containment finds (its cgroup's, its uid's), or in marker mode any with its
    marker. Blocking (reads /proc): run it in a thread."""
    if any(runs(pid, started) for pid, started in recorded_parts(session) if pid is not None):
        return True
    containment = session.containment
    if containment.pids():
        return True
    return containment.mode == MARKER and bool(reaper.session_processes(session.id, session.layout.folder))


class Restorer:
    """One service's part in restores: the heartbeat, the way for each session, the word to the user."""

    def __init__(self, settings: Settings, heartbeat: Heartbeat | None = None,
                 boot_id: Callable[[], str] = current_boot_id, boot_time: Callable[[], float] = psutil.boot_time,
                 runs: Callable[[int | None, float | None], bool] = same_process) -> None:
        self.enabled = settings.restore_after_reboot
        #: Sessions on a shared Jupyter server (JUPYTER_URL: the user's own, under JupyterHub): their
        #: kernels are not theirs and may well run on; their display is recovered as ever, no notice.
        self._own_kernels = not settings.jupyter_url
        self.heartbeat = heartbeat or Heartbeat(settings.state_dir)
        self._boot_id = boot_id
        self._boot_time = boot_time
        #: Whether a recorded process (pid, start time) still runs; unit tests hand a fake machine's.
        self.runs = runs
        self._previous: Beat | None = None
        self._opened_at = time.time()

    def open(self) -> None:
        """Read the last service's last beat, then beat for this one."""
        self._previous = self.heartbeat.last()
        self._opened_at = time.time()
        self.heartbeat.start()

    async def close(self) -> None:
        await self.heartbeat.stop()

    async def decide(self, session: Session) -> Way:
        if session.record.state not in RUNNING or not self._own_kernels:
            return Way.adopt
        runs = await asyncio.to_thread(anything_runs, session, self.runs)
        return decide(session.record.state, runs, self.enabled)

    def ending(self, session: Session) -> Ending:
        """How the session's processes ended, as far as the service's heartbeat and the kernel tell."""
        boot_time = self._boot_time()
        if self._previous is not None:
            restarted = bool(self._previous.boot_id) and self._previous.boot_id != self._boot_id()
        else:  # no heartbeat: parts the service recorded as started before this boot
            restarted = any(started is not None and started < boot_time - 1 for _, started in recorded_parts(session))
        return Ending(last_alive_at=self._previous.at if self._previous else None,
                      machine_restarted_at=boot_time if restarted else None, found_gone_at=self._opened_at)

    def forget(self, session: Session) -> None:
        """Says in the log which session is not restored, and why (the manager stops it next)."""
        ending = self.ending(session)
        log.warning("session %s (%s): not restored (KEEPALIVE_RESTORE_AFTER_REBOOT=false): %s; it is forgotten, "
                    "its home %s stays", session.id, session.name, self._what_ended(ending), session.layout.kept)

    @staticmethod
    def _what_ended(ending: Ending) -> str:
        after = f" after {stamp(ending.last_alive_at)}" if ending.last_alive_at is not None else ""
        if ending.machine_restarted_at is not None:
            return f"the machine restarted (up at {stamp(ending.machine_restarted_at)}){after}"
        return f"every process of it had ended{after}"

    async def prepare(self, session: Session) -> None:
        """Before its parts start again: a cgroup as it was made at its start, with its limits (a
        restart of the machine leaves none; an empty one left by a kill is made anew)."""
        ending = self.ending(session)
        log.warning("session %s (%s): restoring it: %s", session.id, session.name, self._what_ended(ending))
        containment = session.containment
        if containment.cgroup is None:
            return
        try:
            session.record.cgroup = await asyncio.to_thread(
                containment.create, Limits(**(session.record.limits or {})))
        except CgroupError as error:  # its parts then start outside a cgroup (Containment.launch_options)
            log.error("session %s: its cgroup could not be made again, so its limits do not hold: %s",
                      session.id, error)

    def announce_when_ready(self, session: Session, registry: SessionRegistry) -> None:
        """Once the restored session is ready again (its recovery done), tell the user."""
        ending = self.ending(session)
        seen_recovering = told = False

        def observe(changed: Session) -> None:
            # stays in the list once done (removing it while the session calls its observers
            # would skip the next one): a flag makes it quiet instead
            nonlocal seen_recovering, told
            state = changed.state
            if told:
                return
            if state is SessionState.recovering:
                seen_recovering = True
                return
            if state is SessionState.ready and not seen_recovering:
                return  # adoption's own "ready", before its recovery began
            told = True
            if state is not SessionState.ready:
                log.warning("session %s: the restore did not finish (%s): %s", changed.id, state.value,
                            changed.record.error)
                return
            restored = ending.restored(time.time())
            log.info("session %s (%s): restored, ready %.1f s after the service's process started; its kernels "
                     "are new", changed.id, changed.name, time.time() - psutil.Process().create_time())
            entry = registry.entry(changed.id)
            if entry is None or entry.watcher is None:
                log.warning("session %s: restored, but nobody watches it to say so", changed.id)
                return
            entry.watcher.announce_restored(restored)

        session.state_observers.append(observe)
