"""What a session's kernels are doing, read from its Jupyter server, not from pixels.

The watcher asks keepalive's server extension in the session's Jupyter server for each kernel's
activity (keepalive_jupyter/executions.py: busy or idle since when, the last output, the tail of a
running cell, how the last run ended, and which notebook it runs for). After the first answer it
asks with that answer's version, and the server answers when something changed (or after
WAIT_SECONDS): an idle session costs one request every WAIT_SECONDS, not one every few seconds.
Between two looks there are at least ``activity_interval`` seconds, so a busy kernel's output
is followed at that pace. A change is published on the session's event stream; a run that
ended is published too and, when it lasted long enough or ended in an error, sent to the
session's webhook. A Jupyter server without the extension (an external one) is asked for its
kernels every ``activity_interval`` seconds instead.

Kernels killed for memory are counted by the session's cgroup, which is read every
``activity_interval`` seconds (a file, no request).

Runs are counted by the server extension, so a run that starts and ends between two looks is
still seen, exactly once. Runs that ended before the watcher's first look (before a service
restart adopted the session) are not announced: nobody can tell whether they were.
"""

from __future__ import annotations

import asyncio
import logging
from datetime import UTC, datetime
from collections.abc import Callable
from typing import TYPE_CHECKING

import httpx

from keepalive.engine import webhook
from keepalive.engine.events import EventHub
from keepalive.engine.cgroups import format_memory_size
from keepalive.models import (
    Activity, InputPrompt, KernelActivity, KernelDeath, Run, RunningCell, SessionRestored, SessionState,
)
from keepalive.engine.httpclient import new_client

if TYPE_CHECKING:
    from keepalive.engine.session import Session

log = logging.getLogger(__name__)

#: Seconds one look at the Jupyter server may take (besides the time it is asked to wait).
LOOK_TIMEOUT = 5.0
#: The most lines of a run's end that are kept (keepalive_jupyter sends five).
TAIL_LINES = 5
#: Seconds the server may hold a look while nothing changes.
WAIT_SECONDS = 60.0
#: Looking is not the user's activity: a hub must be free to cull an idle server.
UNTRACKED = {"no_track_activity": "1"}


def when(epoch: float | None) -> datetime | None:
    return None if epoch is None else datetime.fromtimestamp(epoch, UTC)


def kernel_activity(kernel: dict, notebook: str | None) -> KernelActivity:
    """One kernel as keepalive_jupyter's ``/api/keepalive/activity`` describes it."""
    running, run = kernel.get("running"), kernel.get("last_run")
    return KernelActivity(
        id=kernel["kernel_id"],
        notebook=notebook,
        state=kernel.get("execution_state") or "unknown",
        since=when(kernel.get("since")),
        last_output_at=when(kernel.get("last_output_at")),
        running=None if running is None else RunningCell(
            execution_count=running.get("execution_count"),
            started_at=when(running.get("started_at")),
            tail=running.get("tail") or [],
            input=InputPrompt(**running["input"]) if isinstance(running.get("input"), dict) else None,
        ),
        last_run=None if run is None else Run(
            started_at=when(run["started_at"]),
            finished_at=when(run["finished_at"]),
            busy_seconds=run["busy_seconds"],
            cells=run["cells"],
            outcome=run["outcome"],
            error=run.get("error"),
        ),
    )


def bare_kernel(kernel: dict) -> dict:
    """A kernel of ``/api/kernels`` in keepalive_jupyter's shape: a Jupyter server without keepalive's
    extension (an external one) tells only its own state and last activity."""
    return {"kernel_id": kernel["id"], "execution_state": kernel.get("execution_state")}


class ActivityWatcher:
    """Looks at one session's kernels until stopped (see the module's docstring)."""

    def __init__(self, session: Session, hub: EventHub,
                 on_busy: Callable[[Session, str], None] | None = None) -> None:
        """``on_busy(session, why)``: called when a look finds a kernel busy (standby wakes on it)."""
        self.session = session
        self.hub = hub
        self._on_busy = on_busy
        self.latest: Activity | None = None
        self._runs_seen: dict[str, int] = {}
        self._asking: set[str] = set()  # kernels waiting for input at the last look
        self._looked = False
        self._tasks: list[asyncio.Task[None]] = []  # the looks, and the OOM kills' count
        #: Webhook deliveries under way: they finish even after the session stops.
        self.deliveries: set[asyncio.Task[bool]] = set()
        self._oom_kills: int | None = None  # the session's cgroup's count at the last look
        self._death: KernelDeath | None = None
        self._lost_seen: set[str] = set()  # kernels of the Jupyter side's ``lost`` list already told
        self._restored: SessionRestored | None = None
        self._notices: set[asyncio.Task[None]] = set()
        #: the version of the extension's last answer (None: look without waiting)
        self._version: str | None = None
        self._wake = asyncio.Event()

    def start(self) -> None:
        if not self._tasks:
            loop = asyncio.get_running_loop()
            self._tasks = [loop.create_task(self._watch(), name=f"activity-{self.session.id}"),
                           loop.create_task(self._watch_oom_kills(), name=f"oom-kills-{self.session.id}")]

    async def stop(self) -> None:
        tasks, self._tasks = self._tasks, []
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    def wake(self) -> None:
        """Look at once, without waiting for a change (the session is ready again: its server
        may be a new one, and what a recovering session was not told is due now)."""
        self._version = None
        self._wake.set()

    async def _watch(self) -> None:
        interval = self.session.settings.activity_interval
        async with new_client(timeout=LOOK_TIMEOUT) as client:
            while True:
                self._wake.clear()
                woken = False
                try:
                    woken = await self._until_woken(self.look(client))
                except (httpx.HTTPError, ValueError, KeyError) as error:
                    # the server is restarting, or the session is recovering: the next look tells
                    log.debug("session %s: no activity this time: %s", self.session.id, error)
                    self._version = None
                if not woken:
                    await asyncio.sleep(interval)

    async def _until_woken(self, look) -> bool:
        """Run a look; give it up if :meth:`wake` is called meanwhile (then True)."""
        looking = asyncio.ensure_future(look)
        woken = asyncio.ensure_future(self._wake.wait())
        try:
            await asyncio.wait({looking, woken}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in (looking, woken):
                task.cancel()
            await asyncio.gather(looking, woken, return_exceptions=True)
        if looking.cancelled():
            return True
        looking.result()  # its error, if any
        return False

    async def _watch_oom_kills(self) -> None:
        while True:
            self._notice_oom()
            await asyncio.sleep(self.session.settings.activity_interval)

    async def look(self, client: httpx.AsyncClient) -> None:
        endpoint = self.session.endpoint
        if endpoint is None:
            return
        headers = endpoint.auth_headers
        waiting = {} if self._version is None else {"after": self._version, "wait": str(WAIT_SECONDS)}
        answer = await client.get(f"{endpoint.url}/api/keepalive/activity", headers=headers, params=waiting,
                                  timeout=LOOK_TIMEOUT + (WAIT_SECONDS if waiting else 0))
        if answer.status_code == 404:
            bare = await client.get(f"{endpoint.url}/api/kernels", headers=headers, params=UNTRACKED)
            bare.raise_for_status()
            kernels = [bare_kernel(k) for k in bare.json()]
            notebooks = await self._notebooks(client, endpoint)
        else:
            answer.raise_for_status()
            kernels = answer.json()["kernels"]
            notebooks = answer.json().get("notebooks")
            if notebooks is None:  # an older extension
                notebooks = await self._notebooks(client, endpoint)
            self._notice_lost(answer.json().get("lost") or [])  # before the activity that shows it
            self._version = answer.json().get("version")
        activity = Activity(
            busy=any(k.get("execution_state") == "busy" for k in kernels),
            kernels=[kernel_activity(k, notebooks.get(k["kernel_id"])) for k in kernels],
            updated_at=datetime.now(UTC),
            kernel_died=self._death,
            restored=self._restored,
        )
        ran = self._notice_runs(kernels, notebooks)
        self._notice_inputs(activity)
        changed = self.latest is None or activity.model_dump(exclude={"updated_at"}) != self.latest.model_dump(
            exclude={"updated_at"}
        )
        self.latest = activity
        # a cell that ran between two looks (a short job) went busy too, though idle again now
        if (activity.busy or ran) and self._on_busy is not None:
            self._on_busy(self.session, "a kernel of it is busy" if activity.busy else "a kernel of it ran a cell")
        if changed:
            self.hub.publish(self.session.id, "activity", activity.model_dump(mode="json"))

    @staticmethod
    async def _notebooks(client: httpx.AsyncClient, endpoint) -> dict[str, str | None]:
        """Which notebook each kernel runs for, from the Jupyter server's own sessions."""
        sessions = await client.get(f"{endpoint.url}/api/sessions", headers=endpoint.auth_headers, params=UNTRACKED)
        sessions.raise_for_status()
        return {s["kernel"]["id"]: s.get("path") for s in sessions.json() if s.get("kernel")}

    def _notice_oom(self) -> None:
        """A kernel killed for memory since the last look (the session's cgroup counts them) is
        announced: event ``kernel_died``, the activity, the webhook, and a notice on the kiosk's
        page that the user sees on return. Kills before the first look are not news."""
        kills = self.session.containment.oom_kills()
        seen, self._oom_kills = self._oom_kills, kills
        if seen is None or kills <= seen:
            return
        limit = self.session.containment.memory_max()
        message = "the kernel was stopped: out of memory" + (f" at {format_memory_size(limit)}" if limit else "")
        busy = [k for k in (self.latest.kernels if self.latest else []) if k.state == "busy"]
        kernel = busy[0] if len(busy) == 1 else None  # the one running a cell; several: cannot tell
        self._announce_death(KernelDeath(kernel_id=kernel and kernel.id, notebook=kernel and kernel.notebook,
                                         reason="out of memory", limit=limit, message=message, at=datetime.now(UTC)))

    def _notice_lost(self, lost: list[dict]) -> None:
        """Kernels the session's Jupyter server could not take back from its predecessor (their
        processes had ended: keepalive_jupyter/surviving_kernels.py) are announced once each, as a
        ``kernel_died``: JupyterLab starts a new kernel for the notebook, and the user must know
        that its memory is gone. After a restore, the restore's own notice says so already. Only
        a ready session is told: while it recovers, its page is about to be replaced."""
        if self.session.state is not SessionState.ready:
            return
        for kernel in lost:
            kernel_id = kernel.get("kernel_id")
            if not isinstance(kernel_id, str) or kernel_id in self._lost_seen:
                continue
            self._lost_seen.add(kernel_id)
            found_at = datetime.fromtimestamp(float(kernel.get("found_at") or 0), UTC)
            if self._restored is not None and found_at <= self._restored.restored_at:
                continue
            notebook = kernel.get("notebook") if isinstance(kernel.get("notebook"), str) else None
            message = (f"the kernel of {notebook or 'a notebook'} ended while the Jupyter server was down; "
                       "a new kernel starts with nothing in memory")
            self._announce_death(KernelDeath(kernel_id=kernel_id, notebook=notebook, limit=None, message=message,
                                             reason="ended while its Jupyter server was down", at=found_at))

    def _announce_death(self, death: KernelDeath) -> None:
        session = self.session
        self._death = death
        log.warning("session %s: %s", session.id, death.message)
        payload = {"event": "kernel_died", "session": {"id": session.id, "name": session.name},
                   **death.model_dump(mode="json")}
        self.hub.publish(session.id, "kernel_died", payload)
        # shown at once, not at the end of this look: its calls to the server may fail, and
        # whoever heard the event must find it in the activity
        self._show(kernel_died=death)
        self._tell(death.message, payload)

    def announce_restored(self, restored: SessionRestored) -> None:
        """The session was started again after every process of it had ended (keepalive.engine.restore):
        said in the activity, as event ``session_restored``, to the webhook, and on the kiosk page."""
        session = self.session
        self._restored = restored
        self._show(restored=restored)
        payload = {"event": "session_restored", "session": {"id": session.id, "name": session.name},
                   **restored.model_dump(mode="json")}
        self.hub.publish(session.id, "session_restored", payload)
        self._tell(restored.message, payload)

    def _show(self, **news: object) -> None:
        """Put news in the activity shown now (and on the events stream), before the next look."""
        if self.latest is not None:
            self.latest = self.latest.model_copy(update=news)
            self.hub.publish(self.session.id, "activity", self.latest.model_dump(mode="json"))

    def _tell(self, message: str, payload: dict) -> None:
        """A notice over JupyterLab on the kiosk page (seen on return), and the webhook, if any."""
        session = self.session
        loop = asyncio.get_running_loop()
        self._notices.add(notice := loop.create_task(session.notify(message)))
        notice.add_done_callback(self._notices.discard)
        self._deliver(payload)

    def _deliver(self, payload: dict) -> None:
        """POST ``payload`` to the session's webhook, if it has one (in the background, held in
        ``deliveries`` until done)."""
        if self.session.webhook_url is None:
            return
        task = asyncio.get_running_loop().create_task(webhook.deliver(self.session.webhook_url, payload, self.session.id))
        self.deliveries.add(task)
        task.add_done_callback(self.deliveries.discard)

    def _notice_runs(self, kernels: list[dict], notebooks: dict[str, str | None]) -> bool:
        """Announce the runs that finished since the last look; whether there were any."""
        ran = False
        for kernel in kernels:
            kernel_id, finished = kernel["kernel_id"], kernel.get("runs_finished")
            if finished is None:
                continue
            # a kernel first seen after the first look is new: all its runs are news
            seen = self._runs_seen.get(kernel_id, 0 if self._looked else finished)
            self._runs_seen[kernel_id] = finished
            if finished > seen:
                ran = True
                if kernel.get("last_run"):
                    self._run_finished(kernel_id, notebooks.get(kernel_id), kernel["last_run"])
        self._looked = True
        return ran

    def _notice_inputs(self, activity: Activity) -> None:
        """A cell that began to wait for input since the last look is announced once: event
        ``input_requested`` (with what it asks; never an answer) and the webhook, which get no
        link that would answer it by itself."""
        session = self.session
        asking = {k.id: k for k in activity.kernels if k.running is not None and k.running.input is not None}
        for kernel_id in asking.keys() - self._asking:
            kernel = asking[kernel_id]
            payload = {"event": "input_requested", "session": {"id": session.id, "name": session.name},
                       "kernel_id": kernel_id, "notebook": kernel.notebook,
                       **kernel.running.input.model_dump(), "at": datetime.now(UTC).isoformat(),
                       # where to answer it: the status page, on this service (opening it needs a
                       # status link or the API token; the address alone opens nothing)
                       "status_path": f"/sessions/{session.id}/status"}
            log.info("session %s: a cell of %s waits for input", session.id, kernel.notebook or f"kernel {kernel_id}")
            self.hub.publish(session.id, "input_requested", payload)
            self._deliver(payload)
        self._asking = set(asking)

    def _run_finished(self, kernel_id: str, notebook: str | None, run: dict) -> None:
        session = self.session
        payload = {
            "event": "run_finished",
            "session": {"id": session.id, "name": session.name},
            "notebook": notebook,
            "kernel_id": kernel_id,
            "outcome": run["outcome"],
            "error": run.get("error"),
            "started_at": when(run["started_at"]).isoformat(),
            "finished_at": when(run["finished_at"]).isoformat(),
            "busy_seconds": run["busy_seconds"],
            "cells": run["cells"],
        }
        # the last lines it printed go to the timeline, not to the webhook (a URL of elsewhere)
        tail = [line for line in run.get("tail") or [] if isinstance(line, str)][:TAIL_LINES]
        self.hub.publish(session.id, "run_finished", {**payload, "tail": tail})
        if run["outcome"] == "error" or run["busy_seconds"] >= session.webhook_min_busy:
            self._deliver(payload)
