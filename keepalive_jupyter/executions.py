"""A server-side record of kernel executions, so that a new page can re-attach running cells.

A page that dies takes the outputs it had not saved with it, and a new page never sees the
outputs of an execution that an earlier page started (jupyter_server replays its buffer only
to the same session key). This module keeps, per kernel, the IOPub messages of executions still
running or recently finished, keyed by the ``execute_request`` that started them and the cell
that sent it (the ``cellId`` JupyterLab puts in the request's metadata).

The record is raw kernel messages, not rendered outputs: the frontend replays them through
JupyterLab's own output model, so stream merging, ``clear_output(wait=True)`` and display
updates behave exactly as in a page that never went away.

Bounds (per kernel): at most ``max_executions`` executions (finished ones dropped first), a
finished execution is forgotten ``keep_finished_seconds`` after it finished, and one
execution's messages hold at most ``max_execution_bytes`` of JSON (the oldest messages are
dropped beyond that, and counted in ``dropped``). Messages that a later one makes invisible
(everything before a ``clear_output``, an earlier ``update_display_data`` of the same display)
are compacted away as they arrive, so loops that redraw in place stay small.

The record keeps what a page that never went away would have been sent, no more: jupyter_server
holds IOPub messages back from a page's websocket while they come faster than its rate limits
(``ZMQChannelsWebsocketConnection.iopub_msg_rate_limit`` and ``iopub_data_rate_limit``, over
``rate_limit_window``) and tells the page so in a stderr line. :class:`IOPubRateLimit` applies
the same rule, with the server's own settings, to what the record keeps, and records the same
notice: a page that replays the record shows what the page that died would have shown (and is
spared the flood the limit exists for).
"""

from __future__ import annotations

import json
import time
from collections import OrderedDict, deque
from collections.abc import Callable
from dataclasses import dataclass, field, fields
from datetime import datetime
from textwrap import dedent
from typing import Any

#: IOPub message types that change a cell's output area or prompt.
RECORDED_TYPES = frozenset(
    {
        "execute_input",
        "stream",
        "display_data",
        "update_display_data",
        "clear_output",
        "execute_result",
        "error",
    }
)
#: Types that put something into the output area (they end a pending ``clear_output(wait=True)``).
OUTPUT_TYPES = frozenset({"stream", "display_data", "execute_result", "error"})


def _json_size(value: Any) -> int:
    return len(json.dumps(value, default=str))


@dataclass
class IOPubRateLimit:
    """jupyter_server's IOPub rate limit (``ZMQChannelsWebsocketConnection._limit_rate``, which it
    applies per websocket), applied to the record of one kernel. The settings are the server's
    (see :func:`keepalive_jupyter.recorder.iopub_rate_limit`)."""

    enabled: bool = True
    msg_rate_limit: float = 1000.0  # messages per second
    data_rate_limit: float = 1_000_000.0  # bytes of stream messages per second
    window: float = 3.0  # seconds
    _queue: deque = field(default_factory=deque)  # (when it leaves the window, bytes)
    _msg_count: int = 0
    _byte_count: int = 0
    _msgs_exceeded: bool = False
    _data_exceeded: bool = False

    def state(self) -> dict:
        """What it counts now (for a snapshot of the record; the settings are not part of it)."""
        return {"queue": [list(item) for item in self._queue], "msg_count": self._msg_count,
                "byte_count": self._byte_count, "msgs_exceeded": self._msgs_exceeded,
                "data_exceeded": self._data_exceeded}

    def restore(self, state: dict) -> None:
        self._queue = deque(tuple(item) for item in state.get("queue", []))
        self._msg_count, self._byte_count = state.get("msg_count", 0), state.get("byte_count", 0)
        self._msgs_exceeded = bool(state.get("msgs_exceeded"))
        self._data_exceeded = bool(state.get("data_exceeded"))

    def reset(self) -> None:
        """The kernel went idle: jupyter_server starts counting afresh (so that a Run All does not
        hit the limit early)."""
        self._queue.clear()
        self._msg_count = self._byte_count = 0
        self._msgs_exceeded = self._data_exceeded = False

    def check(
        self, msg_type: str, content: dict, size: int, now: float, parent_type: str | None = None
    ) -> tuple[bool, str | None]:
        """Whether a page would be sent this message, and the notice it would be sent first (or
        None). ``size``: the message's bytes on the wire (counted for stream messages only);
        ``parent_type``: the type of the request it answers.

        jupyter_server starts afresh on every idle status. Here only on that of an execution:
        a page that connects while a cell runs (the recovered kiosk) asks the kernel things at
        once (kernel and comm info, on its control channel and subshells), and each answer ends
        in an idle status, which the page that never died would not have caused: counted, they
        would let through a burst that page would not have been sent.
        """
        if not self.enabled:
            return True, None
        if (
            msg_type == "status" and content.get("execution_state") == "idle"
            and parent_type in (None, "execute_request")
        ):
            self.reset()
        if msg_type in ("status", "comm_open", "execute_input"):
            return True, None
        while self._queue and now >= self._queue[0][0]:
            _, byte_count = self._queue.popleft()
            self._byte_count -= byte_count
            self._msg_count -= 1
        byte_count = size if msg_type == "stream" else 0
        self._msg_count += 1
        self._byte_count += byte_count
        self._queue.append((now + self.window, byte_count))
        msg_rate, data_rate = self._msg_count / self.window, self._byte_count / self.window
        notice = None
        if self.msg_rate_limit > 0 and msg_rate > self.msg_rate_limit:
            if not self._msgs_exceeded:
                self._msgs_exceeded = True
                notice = self._notice("message", "iopub_msg_rate_limit", self.msg_rate_limit, "msgs/sec")
        elif self._msgs_exceeded and msg_rate < 0.8 * self.msg_rate_limit:
            self._msgs_exceeded = False
        if self.data_rate_limit > 0 and data_rate > self.data_rate_limit:
            if not self._data_exceeded:
                self._data_exceeded = True
                notice = self._notice("data", "iopub_data_rate_limit", self.data_rate_limit, "bytes/sec")
        elif self._data_exceeded and data_rate < 0.8 * self.data_rate_limit:
            self._data_exceeded = False
        if self._msgs_exceeded or self._data_exceeded:
            # not sent: it does not count
            self._msg_count -= 1
            self._byte_count -= byte_count
            self._queue.pop()
            return False, notice
        return True, notice

    def _notice(self, what: str, setting: str, limit: float, unit: str) -> str:
        """The stderr text jupyter_server sends the page (``write_stderr`` adds the newline)."""
        return dedent(
            f"""\
            IOPub {what} rate exceeded.
            The Jupyter server will temporarily stop sending output
            to the client in order to avoid crashing it.
            To change this limit, set the config variable
            `--ServerApp.{setting}`.

            Current values:
            ServerApp.{setting}={limit} ({unit})
            ServerApp.rate_limit_window={self.window} (secs)
            """
        ) + "\n"


@dataclass
class Execution:
    """One ``execute_request`` and what the kernel published for it."""

    msg_id: str
    cell_id: str | None = None
    session: str | None = None
    #: queued (request seen, not started), running (execute_input seen), finished (idle seen
    #: after it ran), aborted (idle without ever running: skipped after an earlier error)
    state: str = "queued"
    execution_count: int | None = None
    requested_at: float = field(default_factory=time.time)
    started_at: float | None = None
    finished_at: float | None = None
    messages: list[dict] = field(default_factory=list)
    sizes: list[int] = field(default_factory=list)
    total_bytes: int = 0
    dropped: int = 0
    #: index in ``messages`` of a clear_output(wait=True) whose clearing has not happened yet
    pending_clear: int | None = None
    #: what the kernel waits for on stdin (``input()``, ``getpass()``): the ``input_request``'s
    #: header (a reply names it as its parent), prompt and password flag; None once answered
    input_request: dict | None = None

    def to_json(self, since: int = 0) -> dict:
        return {
            "msg_id": self.msg_id,
            "cell_id": self.cell_id,
            "session": self.session,
            "state": self.state,
            "execution_count": self.execution_count,
            "requested_at": self.requested_at,
            "finished_at": self.finished_at,
            "dropped": self.dropped,
            "input_request": self.input_request,
            "messages": [m for m in self.messages if m["seq"] > since],
        }

    # --- recording ----------------------------------------------------------------------

    def _drop(self, keep) -> None:
        """Keep only the messages for which ``keep(index, message)`` is true."""
        messages, sizes = [], []
        for i, (m, s) in enumerate(zip(self.messages, self.sizes)):
            if keep(i, m):
                messages.append(m)
                sizes.append(s)
        self.messages, self.sizes = messages, sizes
        self.total_bytes = sum(sizes)

    def add(self, message: dict, max_bytes: int) -> None:
        msg_type = message["msg_type"]
        if msg_type == "clear_output":
            if message["content"].get("wait"):
                # The area empties only when the next output arrives: keep what it shows until then.
                self.pending_clear = len(self.messages)
            else:
                self._drop(lambda i, m: m["msg_type"] == "execute_input")
                self.pending_clear = None
        elif msg_type in OUTPUT_TYPES and self.pending_clear is not None:
            start = self.pending_clear
            self._drop(lambda i, m: i >= start or m["msg_type"] == "execute_input")
            self.pending_clear = None
        elif msg_type == "update_display_data":
            display_id = (message["content"].get("transient") or {}).get("display_id")
            if display_id is not None:
                # An update replaces the whole display: earlier updates of it are invisible.
                self._drop(
                    lambda i, m: not (
                        m["msg_type"] == "update_display_data"
                        and (m["content"].get("transient") or {}).get("display_id") == display_id
                    )
                )
                if self.pending_clear is not None:
                    self.pending_clear = min(self.pending_clear, len(self.messages))
        size = _json_size(message["content"])
        self.messages.append(message)
        self.sizes.append(size)
        self.total_bytes += size
        # Over budget: forget the oldest messages (never the execute_input, which carries the count).
        while self.total_bytes > max_bytes and len(self.messages) > 1:
            index = 1 if self.messages[0]["msg_type"] == "execute_input" else 0
            if index >= len(self.messages) - 1:
                break
            self.total_bytes -= self.sizes.pop(index)
            self.messages.pop(index)
            self.dropped += 1
            if self.pending_clear is not None:
                self.pending_clear = max(0, self.pending_clear - 1)


class KernelRecord:
    """The executions of one kernel, in the order they were requested."""

    def __init__(
        self, kernel_id: str, max_executions: int, max_execution_bytes: int, keep_finished_seconds: float,
        rate_limit: IOPubRateLimit | None = None,
    ):
        self.kernel_id = kernel_id
        self.rate_limit = rate_limit or IOPubRateLimit(enabled=False)
        self.max_executions = max_executions
        self.max_execution_bytes = max_execution_bytes
        self.keep_finished_seconds = keep_finished_seconds
        self.executions: OrderedDict[str, Execution] = OrderedDict()
        self.seq = 0
        self.kernel_pid: int | None = None  # the kernel process last seen (a new one: a restart)
        #: the kernel's kernel_info_reply content, as its recorder asked for it (None: not known)
        self.kernel_info: dict | None = None
        #: the wall-clock time of what is being applied: a journal entry's, when the record is
        #: rebuilt from its journal (see journal.py), so that times are when things happened
        self.replay_time: float | None = None
        self.activity = KernelActivity(clock=self.now)

    def now(self) -> float:
        return time.time() if self.replay_time is None else self.replay_time

    def _execution(self, msg_id: str) -> Execution:
        execution = self.executions.get(msg_id)
        if execution is None:
            execution = self.executions[msg_id] = Execution(msg_id=msg_id, requested_at=self.now())
            self.prune()
        return execution

    def note_request(self, msg_id: str, cell_id: str | None, session: str | None) -> None:
        """An ``execute_request`` went to the kernel (seen on a websocket)."""
        execution = self._execution(msg_id)
        execution.cell_id = cell_id or execution.cell_id
        execution.session = session or execution.session

    def on_input_request(self, msg: dict) -> None:
        """The kernel asks for input for an execution (seen on a stdin channel)."""
        parent_id = (msg.get("parent_header") or {}).get("msg_id")
        if not parent_id:
            return
        execution = self._execution(parent_id)
        header = {key: value for key, value in msg["header"].items() if key != "date"}
        content = msg.get("content") or {}
        execution.input_request = {
            "header": header,
            "prompt": content.get("prompt", ""),
            "password": bool(content.get("password")),
        }

    def on_input_reply(self, msg_id: str, parent_id: str, value: str) -> None:
        """A page answered an input request: it stops being pending, and the answer becomes a
        ``stdin`` stream output, as the answering page itself shows it (a password as dots)."""
        for execution in self.executions.values():
            request = execution.input_request
            if request is None or request["header"].get("msg_id") != parent_id:
                continue
            execution.input_request = None
            shown = "\u00b7" * 8 if request["password"] else value
            self._add(execution, {
                "msg_id": msg_id,
                "msg_type": "stream",
                "content": {"name": "stdin", "text": f"{request['prompt']} {shown}\n"},
                # the page that answered has this line already: it skips it by this mark
                "metadata": {"keepalive_input_request": parent_id},
            })
            return

    def _add(self, execution: Execution, message: dict) -> None:
        self.seq += 1
        execution.add({"seq": self.seq, **message}, self.max_execution_bytes)

    def on_iopub(self, msg: dict, size: int = 0, now: float | None = None) -> None:
        """One deserialized IOPub message; ``size``: its bytes on the wire, ``now``: when it came
        (monotonic seconds), for the rate limit."""
        msg_type = msg["header"]["msg_type"]
        parent_header = msg.get("parent_header") or {}
        sent, notice = self.rate_limit.check(
            msg_type, msg.get("content") or {}, size, time.monotonic() if now is None else now,
            parent_header.get("msg_type"),
        )
        parent_id = parent_header.get("msg_id")
        if not parent_id:
            return
        execution = self.executions.get(parent_id)
        if notice is not None and execution is not None:
            self._add(execution, {
                "msg_id": f"keepalive-rate-{self.seq + 1}",
                "msg_type": "stream",
                "content": {"name": "stderr", "text": notice},
                "metadata": {},
            })
        if not sent:
            if msg_type in OUTPUT_TYPES or msg_type == "update_display_data":
                self.activity.output(msg_type, msg["content"])  # the kernel did print
            return
        if msg_type == "execute_input":
            # Also executions requested by clients we did not see (no cell id then).
            execution = self._execution(parent_id)
            execution.state = "running"
            execution.started_at = self.now()
            execution.execution_count = msg["content"].get("execution_count")
            self.activity.busy(sent_at(msg))  # its busy status may have come before we knew the execution
        if execution is None:
            return
        if msg_type == "status":
            state = msg["content"].get("execution_state")
            if state == "busy":
                self.activity.busy(sent_at(msg))
            elif state == "idle" and execution.finished_at is None:
                execution.state = "finished" if execution.state == "running" else "aborted"
                execution.finished_at = self.now()
                execution.input_request = None  # an unanswered request ended with its execution
                waiting = any(e.state in ("queued", "running") for e in self.executions.values())
                self.activity.idle(ran=execution.state == "finished", more_to_come=waiting,
                                   tail=tail_lines(execution.messages), at=sent_at(msg))
            return
        if msg_type not in RECORDED_TYPES:
            return
        if msg_type != "execute_input":
            self.activity.output(msg_type, msg["content"])
        if msg_type == "execute_result":
            execution.execution_count = msg["content"].get("execution_count", execution.execution_count)
        self._add(execution, {
            "msg_id": msg["header"]["msg_id"],
            "msg_type": msg_type,
            "content": msg["content"],
            "metadata": msg.get("metadata") or {},
        })

    def on_kernel_start(self) -> None:
        """End every execution still queued or running: the kernel process that had them is gone
        (it died and was started again). Left "running", they would show as busy for ever, and
        keep a hub's server from being culled (see kiosk.py)."""
        now = self.now()
        ended = False
        for execution in self.executions.values():
            if execution.finished_at is None:
                execution.state, execution.finished_at, execution.input_request = "aborted", now, None
                ended = True
        if ended:
            self.activity.restarted()

    def prune(self, now: float | None = None) -> None:
        now = self.now() if now is None else now
        for msg_id, e in list(self.executions.items()):
            if e.finished_at is not None and now - e.finished_at > self.keep_finished_seconds:
                del self.executions[msg_id]
        # Too many: drop the oldest finished first, then the oldest of any kind.
        while len(self.executions) > self.max_executions:
            finished = [k for k, e in self.executions.items() if e.finished_at is not None]
            del self.executions[finished[0] if finished else next(iter(self.executions))]

    def snapshot(self) -> dict:
        """Everything the record holds, for JSON (a journal's compaction writes it; see journal.py).
        It shares the record's lists (a deep copy took most of a compaction's time): encode it at once."""
        execution_fields = [f.name for f in fields(Execution)]
        return {
            "kernel_id": self.kernel_id,
            "seq": self.seq,
            "kernel_pid": self.kernel_pid,
            "kernel_info": self.kernel_info,
            "executions": [{name: getattr(e, name) for name in execution_fields} for e in self.executions.values()],
            "activity": {f.name: getattr(self.activity, f.name) for f in fields(KernelActivity) if f.name != "clock"},
            "rate_limit": self.rate_limit.state(),
        }

    def restore(self, snapshot: dict) -> None:
        """Take the state of a :meth:`snapshot` (this record's bounds and rate limit settings stay)."""
        self.seq = snapshot.get("seq", 0)
        self.kernel_pid = snapshot.get("kernel_pid")
        self.kernel_info = snapshot.get("kernel_info")
        known = {f.name for f in fields(Execution)}
        self.executions = OrderedDict(
            (e["msg_id"], Execution(**{k: v for k, v in e.items() if k in known})) for e in snapshot.get("executions", [])
        )
        for name, value in (snapshot.get("activity") or {}).items():
            if name != "clock" and hasattr(self.activity, name):
                setattr(self.activity, name, value)
        self.rate_limit.restore(snapshot.get("rate_limit") or {})

    def running(self) -> Execution | None:
        """The execution the kernel runs now (one at a time on its main shell), if any."""
        return next((e for e in self.executions.values() if e.state == "running"), None)

    def activity_mark(self) -> tuple:
        """Changes whenever :meth:`activity_json` may: cheap enough to compare every second."""
        activity, running = self.activity, self.running()
        asking = running.input_request["header"].get("msg_id") if running and running.input_request else None
        return (self.seq, len(self.executions), activity.execution_state, activity.since,
                activity.last_output_at, activity.runs_finished, asking)

    def activity_json(self) -> dict:
        """What the kernel is doing, for ``GET /api/keepalive/activity``."""
        running = self.running()
        return {
            "kernel_id": self.kernel_id,
            **self.activity.to_json(),
            "queued": sum(1 for e in self.executions.values() if e.state == "queued"),
            "running": None if running is None else {
                "cell_id": running.cell_id,
                "execution_count": running.execution_count,
                "started_at": running.started_at,
                "tail": tail_lines(running.messages),
                # what it waits for on stdin (input(), getpass()), if it does
                "input": None if running.input_request is None else {
                    "prompt": running.input_request["prompt"], "password": running.input_request["password"]},
            },
        }

    def to_json(self, since: int = 0) -> dict:
        self.prune()
        return {
            "kernel_id": self.kernel_id,
            "seq": self.seq,
            "executions": [e.to_json(since) for e in self.executions.values()],
        }


#: Lines of a running cell's output that the activity shows, and at most how long each.
TAIL_LINES = 5
TAIL_LINE_CHARS = 200


def tail_lines(messages: list[dict]) -> list[str]:
    """The last lines of text an execution printed, as a terminal would show them (``\\r``
    returns to the start of the line, so a progress bar is its newest state)."""
    text = ""
    for message in messages:
        if message["msg_type"] == "stream":
            text += message["content"].get("text", "")
        elif message["msg_type"] == "error":
            text += f"{message['content'].get('ename', '')}: {message['content'].get('evalue', '')}\n"
        elif message["msg_type"] == "clear_output":
            text = ""
    lines = [line.rsplit("\r", 1)[-1] for line in text.split("\n")]
    return [line[:TAIL_LINE_CHARS] for line in lines if line.strip()][-TAIL_LINES:]


def sent_at(msg: dict) -> float | None:
    """When the kernel sent ``msg`` (its header's ``date``), in wall-clock seconds; None when
    the header has no date that reads as one.

    A run's length is measured between the kernel's own busy and idle, not between the times
    they were read: a reader that falls behind under load would shorten it (a 4 s cell measured
    3.995 s in a CI run)."""
    date = (msg.get("header") or {}).get("date")
    if isinstance(date, datetime):  # (jupyter_client's deserialize turns it into one)
        return date.timestamp()
    if isinstance(date, str):
        try:
            return datetime.fromisoformat(date).timestamp()
        except ValueError:
            return None
    return None


@dataclass
class KernelActivity:
    """A kernel's busy and idle spells, as its executions show them.

    A *run* starts when the kernel goes busy with an execution while none was waiting, and
    ends when an execution finishes and none is left waiting (a Run All of five cells is one
    run). ``runs_finished`` counts them, so that a watcher polling now and then sees every
    run end exactly once.
    """

    execution_state: str = "idle"
    since: float = field(default_factory=time.time)
    #: the time now (a record rebuilt from its journal says when each thing happened)
    clock: Callable[[], float] = field(default=time.time, repr=False, compare=False)
    last_output_at: float | None = None
    runs_finished: int = 0
    last_run: dict | None = None
    _run_started_at: float | None = None
    _run_cells: int = 0
    _run_error: dict | None = None
    _run_tail: list[str] = field(default_factory=list)  #: the last lines a cell of the run printed

    def busy(self, at: float | None = None) -> None:
        """The kernel went busy (``at``: when it says it did; else now)."""
        now = self.clock() if at is None else at
        if self._run_started_at is None:
            self._run_started_at, self._run_cells, self._run_error, self._run_tail = now, 0, None, []
        if self.execution_state != "busy":
            self.execution_state, self.since = "busy", now

    def idle(self, ran: bool, more_to_come: bool, tail: list[str] | None = None, at: float | None = None) -> None:
        """An execution ended (``tail``: the last lines it printed; ``at``: when the kernel says
        it went idle, else now); the run too, unless ``more_to_come``."""
        self._run_cells += 1 if ran else 0
        self._run_tail = tail or self._run_tail  # a cell skipped after an error printed nothing
        if more_to_come or self._run_started_at is None:
            return
        now = self.clock() if at is None else at
        self.runs_finished += 1
        self.last_run = {
            "started_at": self._run_started_at,
            "finished_at": now,
            # (never below 0: a kernel's dates are the kernel's word, and may be anything)
            "busy_seconds": round(max(0.0, now - self._run_started_at), 3),
            "cells": self._run_cells,
            "outcome": "error" if self._run_error else "ok",
            "error": self._run_error,
            "tail": self._run_tail,
        }
        self._run_started_at = None
        self.execution_state, self.since = "idle", now

    def restarted(self) -> None:
        """The kernel died during a run: the run ends, as an error (it did not complete)."""
        if self._run_started_at is not None and self._run_error is None:
            self._run_error = {"ename": "KernelRestarted", "evalue": "the kernel died during the run and was restarted"}
        self.idle(ran=False, more_to_come=False)

    def output(self, msg_type: str, content: dict) -> None:
        self.last_output_at = self.clock()
        if msg_type == "error" and self._run_error is None:
            self._run_error = {"ename": content.get("ename", ""), "evalue": str(content.get("evalue", ""))[:TAIL_LINE_CHARS]}

    def to_json(self) -> dict:
        return {
            "execution_state": self.execution_state,
            "since": self.since,
            "last_output_at": self.last_output_at,
            "runs_finished": self.runs_finished,
            "last_run": self.last_run,
        }
