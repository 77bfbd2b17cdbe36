"""What goes into each home's timeline (keepalive.engine.timeline), taken from the session events.

The recorder observes the event hub, so the timeline says exactly what the events stream said:
a session's own changes (started, recovering and from what, recovered, standby, awake again,
restored after every process of it had ended, failed, stopped), every run of cells with its
outcome, error and last lines, cells that asked for input, and kernels that died. A thumbnail of
the kiosk is kept with a run that ended in an error, with a cell's question and, while a run is busy, at most every ``shot_every`` seconds (on
the activity's changes: nothing is polled for it). Thumbnails are taken only from a session
that is awake: the timeline never wakes one, nor keeps one awake.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

from keepalive.engine.errors import first_line
from keepalive.engine.events import Event, EventHub
from keepalive.engine.timeline import Timelines
from keepalive.models import SessionState

if TYPE_CHECKING:
    from keepalive.engine.registry import SessionRegistry
    from keepalive.engine.session import Session
    from keepalive.settings import Settings

log = logging.getLogger(__name__)

#: Seconds a service that stops gives the events still waiting for a thumbnail.
CLOSE_GRACE = 5.0
#: A thumbnail is tried this many times, a pause apart: a page that is busy (loading, or
#: drawing a large output) may let a capture wait past its timeout once.
SHOT_ATTEMPTS = 2
SHOT_TIMEOUT = 10.0
SHOT_PAUSE = 2.0
#: A session's state -> the timeline's word for reaching it (None: not an event of its own).
STATE_EVENTS = {
    "standby": "standby",
    "recovering": "recovering",
    "failed": "failed",
    "stopped": "stopped",
}


def record_timelines(settings: Settings, events: EventHub, registry: SessionRegistry) -> TimelineRecorder:
    """A recorder of every API session's events into its home's timeline, observing ``events``."""
    recorder = TimelineRecorder(
        Timelines(settings.timelines_dir, int(settings.timeline_max_mb * 1024 * 1024)),
        session_of=lambda session_id: None if registry.is_pool(session_id) else registry.get(session_id),
        shot_every=settings.timeline_shot_every,
    )
    events.observers.append(recorder.observe)
    return recorder


class TimelineRecorder:
    def __init__(self, timelines: Timelines, session_of: Callable[[str], Session | None],
                 shot_every: float) -> None:
        """``session_of(id)``: a session of the API (not the pool's), or None."""
        self.timelines = timelines
        self._session_of = session_of
        self.shot_every = shot_every
        self._names: dict[str, str] = {}  # session id -> name, kept past the session's end
        self._states: dict[str, str] = {}  # session id -> its state before the last event
        self._why: dict[str, str] = {}  # session id -> why it is recovering
        self._last_shot: dict[str, float] = {}  # session id -> monotonic time of its last busy shot
        self._tasks: set[asyncio.Task[None]] = set()

    def observe(self, event: Event) -> None:
        if event.kind == "state":  # every session's, the pool's too: a session taken from it starts
            before = self._states.get(event.session_id)
            self._states[event.session_id] = event.data["state"]
            if before == event.data["state"]:
                return
            event = Event(event.session_id, event.kind, {**event.data, "before": before})
        session = self._session_of(event.session_id)
        if session is not None:
            self._names[event.session_id] = session.name
        name = self._names.get(event.session_id)
        if name is None:
            return
        handler = getattr(self, f"_on_{event.kind}", None)
        if handler is not None:
            try:
                handler(event.session_id, name, session, event.data)
            except OSError as error:  # a full disk must not stop the events that follow
                log.error("timeline of %s: could not record %s: %s", name, event.kind, error)

    async def close(self) -> None:
        """Let the events that wait for their thumbnail be written (without it, past a moment)."""
        tasks = list(self._tasks)
        if tasks:
            await asyncio.wait(tasks, timeout=CLOSE_GRACE)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    # -- the events ----------------------------------------------------------------------------

    def _on_state(self, session_id: str, name: str, session: Session | None, data: dict) -> None:
        state, before = data["state"], data["before"]
        if before is None and state != "ready":
            return  # a session this service found in standby, failed...: recorded when it got there
        base = {"session": session_id}
        if state == "ready":
            if before == "recovering":
                self._add(name, "recovered", {**base, "from": self._why.pop(session_id, None)})
            elif before == "standby":
                self._add(name, "awake", base)
            elif before in ("starting", "pooled"):
                self._add(name, "started", base)
            elif before is None:  # a session this service found running: it went on meanwhile
                self._add(name, "adopted", base)
        elif state in STATE_EVENTS:
            if state == "recovering":
                self._why[session_id] = data.get("error")
            self._add(name, STATE_EVENTS[state], {**base, **({"error": data["error"]} if data.get("error") else {})})
        if state == "stopped":
            for per_session in (self._states, self._why, self._last_shot, self._names):
                per_session.pop(session_id, None)

    def _on_session_restored(self, session_id: str, name: str, session: Session | None, data: dict) -> None:
        self._add(name, "restored", {"session": session_id, "message": data.get("message")})

    def _on_kernel_died(self, session_id: str, name: str, session: Session | None, data: dict) -> None:
        self._add(name, "kernel_died", {"session": session_id, "kernel_id": data.get("kernel_id"),
                                        "notebook": data.get("notebook"), "message": data.get("message")})

    def _on_run_finished(self, session_id: str, name: str, session: Session | None, data: dict) -> None:
        run = {"session": session_id, **{key: data.get(key) for key in (
            "notebook", "kernel_id", "cells", "started_at", "finished_at", "busy_seconds", "outcome", "error", "tail")}}
        if data.get("outcome") == "error":
            self._add_with_shot(name, "run", run, session)
        else:
            self._add(name, "run", run)

    def _on_input_requested(self, session_id: str, name: str, session: Session | None, data: dict) -> None:
        self._add_with_shot(name, "input_requested", {"session": session_id, **{key: data.get(key) for key in (
            "kernel_id", "notebook", "prompt", "password")}}, session)

    def _on_activity(self, session_id: str, name: str, session: Session | None, data: dict) -> None:
        if not self.shot_every or not data.get("busy") or session is None:
            return
        now = time.monotonic()
        if now - self._last_shot.get(session_id, -self.shot_every) < self.shot_every:
            return
        self._last_shot[session_id] = now
        running = [{"kernel_id": k["id"], "notebook": k.get("notebook"), "tail": (k.get("running") or {}).get("tail", [])}
                   for k in data.get("kernels", []) if k.get("state") == "busy"]
        self._add_with_shot(name, "busy", {"session": session_id, "running": running}, session, only_with_shot=True)

    # -- writing -------------------------------------------------------------------------------

    def _add(self, name: str, kind: str, data: dict, shot: bytes | None = None) -> None:
        self.timelines.of(name).add(kind, data, shot)

    def _add_with_shot(self, name: str, kind: str, data: dict, session: Session | None,
                       only_with_shot: bool = False) -> None:
        """Add the event once a thumbnail of the kiosk is taken (without one if the session is
        not awake or the page does not answer; ``only_with_shot``: then not at all)."""

        async def shoot() -> None:
            shot = None
            for attempt in range(1, SHOT_ATTEMPTS + 1):
                if session is None or session.state is not SessionState.ready:
                    break
                try:
                    shot = await asyncio.wait_for(session.parts.display.thumbnail(), SHOT_TIMEOUT)
                    break
                except Exception as error:  # a page going away or loading: the event stays, without it at worst
                    log.info("timeline of %s: no screenshot for %s (attempt %d of %d): %s", name, kind, attempt,
                             SHOT_ATTEMPTS, first_line(error))
                if attempt < SHOT_ATTEMPTS:
                    await asyncio.sleep(SHOT_PAUSE)
            if shot is not None or not only_with_shot:
                try:
                    self._add(name, kind, data, shot)
                except OSError as error:
                    log.error("timeline of %s: could not record %s: %s", name, kind, error)

        task = asyncio.get_running_loop().create_task(shoot())
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
