"""Keeps an :class:`~keepalive_jupyter.executions.KernelRecord` for every running kernel.

The record lives on disk, in each kernel's journal (journal.py), so that it outlives this
server: a recorder process per kernel (iopub_recorder.py, started here for every kernel seen,
unless one runs) appends every IOPub message as it arrives, and this server appends what only it
sees. The records here are rebuilt from the journals: in full when a kernel is first seen, then
from where the last read ended, every second and before every answer.

The cell a request came from is known only from the ``execute_request`` itself, which
:class:`RecordingWebsocketConnection` reports here before passing it to the kernel: its line
is in the journal before the kernel's ``execute_input``.

Stdin is different: the kernel sends an ``input_request`` only to the connection that sent the
execution, and waits for a reply from anyone. The websocket connection reports the requests it
carries, also those that arrive after its page is gone (jupyter_server then keeps its channels
open, buffering for a page that may come back with the same session key; a new page has a new
key, and never sees that buffer). A new page can answer: the kernel takes the first reply.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import time
from pathlib import Path

from jupyter_server.services.kernels.connection.base import (
    deserialize_binary_message,
    deserialize_msg_from_ws_v1,
    serialize_msg_to_ws_v1,
)
from jupyter_server.services.kernels.connection.channels import ZMQChannelsWebsocketConnection
from tornado.ioloop import IOLoop, PeriodicCallback
from traitlets import Float, Integer, Unicode
from traitlets.config import LoggingConfigurable

from . import journal
from .executions import KernelRecord
from .iopub_recorder import ensure_recorder, process_alive, recorder_status

#: Shell messages of comms (ipywidgets' among them): a subshell serves them while a cell runs.
COMM_TYPES = frozenset({"comm_open", "comm_msg", "comm_close", "comm_info_request"})
#: How often kernels that started (or stopped) are noticed, in seconds.
POLL_SECONDS = 1.0
#: Journals of kernels nobody records any more are removed after this long without a write.
STALE_JOURNAL_SECONDS = 24 * 3600.0
#: A recorder that failed to start is not tried again for this long (seconds).
RETRY_SECONDS = 10.0



def iopub_rate_limit(connection_class, config) -> dict:
    """The IOPub rate limit the server's kernel websockets apply, from its settings (also the
    deprecated ``ServerApp.*`` ones, which jupyter_server moves to the connection's section).
    A connection class that is not jupyter_server's ZMQ one, or cannot be made here: its
    defaults."""
    names = ("limit_rate", "iopub_msg_rate_limit", "iopub_data_rate_limit", "rate_limit_window")
    connection = None
    for klass in (connection_class, ZMQChannelsWebsocketConnection):
        try:
            if isinstance(klass, type) and issubclass(klass, ZMQChannelsWebsocketConnection):
                connection = klass(config=config)
                break
        except Exception:
            continue
    if connection is None:
        connection = ZMQChannelsWebsocketConnection()
    values = {name: getattr(connection, name) for name in names}
    return {
        "enabled": bool(values["limit_rate"]),
        "msg_rate_limit": float(values["iopub_msg_rate_limit"] or 0),
        "data_rate_limit": float(values["iopub_data_rate_limit"] or 0),
        "window": float(values["rate_limit_window"] or 3.0),
    }



class ExecutionRecorder(LoggingConfigurable):
    """Records every kernel's executions (``c.ExecutionRecorder.*`` sets the bounds)."""

    max_executions = Integer(
        200, help="Executions kept per kernel; beyond that the oldest finished ones go first."
    ).tag(config=True)
    max_execution_bytes = Integer(
        32 * 1024 * 1024, help="JSON bytes of messages kept per execution; the oldest go beyond."
    ).tag(config=True)
    keep_finished_seconds = Float(
        1800.0, help="Seconds a finished execution stays in the record."
    ).tag(config=True)
    journal_dir = Unicode(
        journal.DEFAULT_DIR, help="Where each kernel's journal is kept (made 0700); the record outlives the server there."
    ).tag(config=True)
    compact_bytes = Integer(
        journal.COMPACT_BYTES, help="A journal is compacted once it is this big and twice its last snapshot."
    ).tag(config=True)
    recorder_timeout = Float(
        10.0, help="Seconds to wait for a kernel's new recorder to subscribe before going on without it."
    ).tag(config=True)

    def __init__(self, kernel_manager, rate_limit: dict | None = None, **kwargs):
        super().__init__(**kwargs)
        self.kernel_manager = kernel_manager
        #: the IOPub rate limit of the server's websockets (IOPubRateLimit's fields; None: off)
        self.rate_limit = rate_limit
        self.records: dict[str, KernelRecord] = {}
        #: per kernel: its journal's reader and writer, and the recorder being started
        self.readers: dict[str, journal.JournalReader] = {}
        self.writers: dict[str, journal.JournalWriter] = {}
        self.starting: dict[str, asyncio.Future] = {}
        self.failed_at: dict[str, float] = {}
        #: kernels without a connection file (not local): nothing to record them with
        self.not_local: set[str] = set()
        #: per kernel, a pidfd of its recorder process, watched on the loop (see _watch_recorder)
        self.recorder_fds: dict[str, int] = {}
        #: each kernel's latest kernel_info_reply content, as a page got it
        self.kernel_info: dict[str, dict] = {}
        #: a kernel subshell of keepalive's own per kernel (None while being made), for comms
        self.subshells: dict[str, str | None] = {}
        #: per kernel, the stdin streams of gone pages kept open for their executions: {session id:
        #: (stream, the stream's own close)}
        self.held_stdin: dict[str, dict[str, tuple]] = {}
        self._poller: PeriodicCallback | None = None
        self.folder: Path | None = None
        #: the kernels' activity marks at the last look, and who waits for them to change
        self._activity_marks: dict[str, tuple] = {}
        self._activity_changed = asyncio.Event()

    @property
    def settings(self) -> dict:
        """The record's settings, as journal.py and the recorders' compactions read them."""
        return {
            "max_executions": self.max_executions,
            "max_execution_bytes": self.max_execution_bytes,
            "keep_finished_seconds": self.keep_finished_seconds,
            "rate_limit": self.rate_limit,
            "compact_bytes": self.compact_bytes,
        }

    # --- life cycle -------------------------------------------------------------------------

    def _prepare_folder(self) -> Path:
        try:
            return journal.prepare_dir(self.journal_dir)
        except OSError as e:  # a read-only home: the record still works, for this boot only
            from jupyter_core.paths import jupyter_runtime_dir

            fallback = Path(jupyter_runtime_dir()) / "keepalive-executions"
            self.log.warning("keepalive: cannot use %s for the execution journals (%s); using %s", self.journal_dir, e, fallback)
            return journal.prepare_dir(fallback)

    def start(self) -> None:
        """Follow kernels as they start and stop (must run on the server's event loop)."""
        self.folder = self._prepare_folder()
        journal.write_settings(self.folder, self.settings)
        self._remove_stale_journals()
        self._poller = PeriodicCallback(self.sync, POLL_SECONDS * 1000)
        self._poller.start()
        self.sync()

    def stop(self) -> None:
        """Stop following kernels; their recorders and journals stay (the kernels may outlive us)."""
        if self._poller is not None:
            self._poller.stop()
        for kernel_id in list(self.records):
            self.detach(kernel_id)

    def sync(self) -> None:
        """Attach to new kernels, detach from gone ones, catch up with every journal, and start a
        recorder where the kernel's is gone (killed: what it missed meanwhile is lost)."""
        try:
            live = set(self.kernel_manager.list_kernel_ids())
        except Exception:  # the manager is shutting down
            return
        for kernel_id in live - set(self.records):
            self.attach(kernel_id)
        for kernel_id in set(self.records) - live:
            self.detach(kernel_id, forget=True)
        for kernel_id in list(self.records):
            self._notice_restart(kernel_id)
            self._check_recorder(kernel_id)
            self.refresh(kernel_id)
        for kernel_id in list(self.held_stdin):
            for session_id in list(self.held_stdin[kernel_id]):
                if not self._waits_for(kernel_id, session_id):
                    self.release_stdin(kernel_id, session_id)
        self._notice_activity()

    # --- telling whoever waits that the activity changed -------------------------------------

    def _notice_activity(self) -> None:
        """Wake whoever waits in :meth:`activity_changed` if a kernel came, went, or did anything
        since the last look (every sync: what the journals gained is known only then)."""
        marks = {kernel_id: record.activity_mark() for kernel_id, record in self.records.items()}
        if marks != self._activity_marks:
            self._activity_marks = marks
            self._activity_changed.set()
            self._activity_changed = asyncio.Event()

    async def activity_changed(self, timeout: float) -> None:
        """Return when the kernels' activity changes, or after ``timeout`` seconds."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._activity_changed.wait(), timeout)

    def _kernel_process(self, kernel_id: str) -> tuple[str | None, int | None]:
        """The kernel's connection file and process id (None, None: not a local kernel, or gone)."""
        try:
            kernel = self.kernel_manager.get_kernel(kernel_id)
        except Exception:
            return None, None
        return getattr(kernel, "connection_file", None) or None, getattr(getattr(kernel, "provisioner", None), "pid", None)

    def _notice_restart(self, kernel_id: str) -> None:
        """A kernel whose process changed was started again: what the old one ran has ended.

        A kernel that dies is restarted by jupyter_client without a word on IOPub about the
        executions it had; a restart on request ends them itself (an idle status each). The new
        process is written in the journal (the record ends the old one's executions when it
        reads that) and gets a recorder of its own.
        """
        record = self.records[kernel_id]
        _, pid = self._kernel_process(kernel_id)
        if pid is None or pid == record.kernel_pid:
            return
        if record.kernel_pid is not None:
            self.log.info("keepalive: kernel %s has a new process; its running and queued cells ended", kernel_id)
        self._append(kernel_id, {"k": "kernel", "pid": pid})
        self.refresh(kernel_id)
        pending = self.starting.pop(kernel_id, None)
        if pending is not None and not pending.done():
            pending.cancel()  # waiting for a recorder of the old process
        self.start_recorder(kernel_id)

    def _check_recorder(self, kernel_id: str) -> None:
        """Start a recorder for a kernel whose recorder is gone (killed, or it failed)."""
        pending = self.starting.get(kernel_id)
        if pending is not None and not pending.done():
            return
        if self.folder is None or kernel_id in self.not_local or recorder_status(self.folder, kernel_id) is not None:
            return
        if time.monotonic() - self.failed_at.get(kernel_id, -RETRY_SECONDS) < RETRY_SECONDS:
            return  # it failed a moment ago (its log says why): not once a second
        _, pid = self._kernel_process(kernel_id)
        if pid is None or not process_alive(pid):
            return  # the kernel's process ended, and its recorder with it: the manager restarts it or not
        self.log.warning("keepalive: the recorder of kernel %s (process %s) is gone; starting a new one", kernel_id, pid)
        self.start_recorder(kernel_id)

    def start_recorder(self, kernel_id: str) -> asyncio.Future | None:
        """Make sure the kernel's recorder runs (the future: done once it is subscribed)."""
        pending = self.starting.get(kernel_id)
        if pending is not None and not pending.done():
            return pending
        connection_file, pid = self._kernel_process(kernel_id)
        if connection_file is None:
            if kernel_id not in self.not_local:
                self.log.warning("keepalive: kernel %s has no connection file: its executions are not recorded", kernel_id)
                self.not_local.add(kernel_id)
            return None
        record = self.records.get(kernel_id)
        # the kernel's info, asked of a kernel that runs nothing (its idle status would reach pages)
        ask = record is not None and record.kernel_info is None and record.activity.execution_state != "busy"
        self.starting[kernel_id] = pending = asyncio.ensure_future(
            ensure_recorder(kernel_id, connection_file, pid, self.folder, self.log, self.recorder_timeout, ask)
        )
        pending.add_done_callback(lambda done: self._started(kernel_id, done))
        return pending

    def _started(self, kernel_id: str, done: asyncio.Future) -> None:
        if done.cancelled() or done.exception() is not None or not done.result():
            self.failed_at[kernel_id] = time.monotonic()
        else:
            self.failed_at.pop(kernel_id, None)
            self._watch_recorder(kernel_id)
        self.refresh(kernel_id)

    def _watch_recorder(self, kernel_id: str) -> None:
        """Know at once when the kernel's recorder ends (killed: what the kernel publishes until a
        new one subscribes is lost, so the sooner the better; the poll would take up to a second)."""
        self._unwatch_recorder(kernel_id)
        status = recorder_status(self.folder, kernel_id) or {}
        try:
            fd = os.pidfd_open(status["recorder_pid"])
        except (KeyError, TypeError, OSError):
            return  # gone already (the poll sees to it), or no pidfds here

        def ended(*_) -> None:
            if self.recorder_fds.get(kernel_id) == fd:
                self._unwatch_recorder(kernel_id)
                if kernel_id in self.records:
                    self._check_recorder(kernel_id)

        IOLoop.current().add_handler(fd, ended, IOLoop.READ)
        self.recorder_fds[kernel_id] = fd

    def _unwatch_recorder(self, kernel_id: str) -> None:
        fd = self.recorder_fds.pop(kernel_id, None)
        if fd is not None:
            with contextlib.suppress(Exception):  # the loop may be closing (the server's shutdown)
                IOLoop.current().remove_handler(fd)
            os.close(fd)

    async def ready(self, kernel_id: str) -> None:
        """Return once the kernel's recorder is subscribed (or could not be)."""
        if self.attach(kernel_id) is None:
            return
        pending = self.starting.get(kernel_id)
        if pending is None or pending.done():
            self._check_recorder(kernel_id)
            pending = self.starting.get(kernel_id)
        if pending is not None:
            with contextlib.suppress(Exception):
                await asyncio.shield(pending)

    def attach(self, kernel_id: str) -> KernelRecord | None:
        record = self.records.get(kernel_id)
        if record is not None:
            return record
        if kernel_id not in self.kernel_manager:
            return None
        if self.folder is None:
            self.folder = self._prepare_folder()
        path = journal.journal_path(self.folder, kernel_id)
        self.readers[kernel_id] = journal.JournalReader(path)
        self.writers[kernel_id] = journal.JournalWriter(path)
        self.records[kernel_id] = journal.new_record(kernel_id, self.settings)
        self.refresh(kernel_id)  # all of it: what the kernel did before this server saw it too
        self.log.info("keepalive: recording executions of kernel %s (%s)", kernel_id, path)
        self._notice_restart(kernel_id)
        self.start_recorder(kernel_id)
        return self.records[kernel_id]

    def refresh(self, kernel_id: str) -> KernelRecord | None:
        """Apply what the kernel's journal gained since the last read; the record (or None)."""
        reader = self.readers.get(kernel_id)
        if reader is None:
            return self.records.get(kernel_id)
        try:
            from_start, entries = reader.read()
        except OSError as e:
            self.log.warning("keepalive: cannot read the journal of kernel %s: %s", kernel_id, e)
            return self.records.get(kernel_id)
        if from_start:  # new, or compacted: the file holds the whole record
            self.records[kernel_id] = journal.replay(kernel_id, self.settings, entries)
        else:
            record = self.records[kernel_id]
            for entry in entries:
                journal.apply(record, entry)
        return self.records[kernel_id]

    def _append(self, kernel_id: str, entry: dict) -> None:
        writer = self.writers.get(kernel_id)
        if writer is None:
            return
        try:
            writer.append([{**entry, "t": time.time()}])
        except OSError as e:
            self.log.warning("keepalive: cannot write the journal of kernel %s: %s", kernel_id, e)

    def _remove_stale_journals(self) -> None:
        """Journals of kernels long gone (no recorder, no write for a day): a reboot, a kill."""
        now = time.time()
        for path in self.folder.glob("*.jsonl"):
            kernel_id = path.stem
            with contextlib.suppress(OSError):
                if recorder_status(self.folder, kernel_id) is None and now - path.stat().st_mtime > STALE_JOURNAL_SECONDS:
                    self._remove_journal(kernel_id)

    def _remove_journal(self, kernel_id: str) -> None:
        for path in (journal.journal_path(self.folder, kernel_id), journal.lock_path(self.folder, kernel_id),
                     journal.log_path(self.folder, kernel_id)):
            with contextlib.suppress(FileNotFoundError):
                path.unlink()

    def running_request(self, kernel_id: str) -> dict | None:
        """The header (as much as is known) of the execution the kernel runs now, or None."""
        record = self.refresh(kernel_id)
        if record is None or record.activity.execution_state != "busy":
            return None
        running = record.running()
        if running is None:
            return None
        return {"msg_id": running.msg_id, "msg_type": "execute_request", "session": running.session or ""}

    def known_kernel_info(self, kernel_id: str) -> dict | None:
        """The kernel's kernel_info_reply content: as a page last got it, or as its recorder
        asked for it (a new server, before any page asked)."""
        record = self.records.get(kernel_id)
        return self.kernel_info.get(kernel_id) or (record.kernel_info if record is not None else None)

    def ensure_subshell(self, kernel_id: str) -> None:
        """Ask the kernel (on its control channel, served while cells run) for a subshell for the
        comms of pages that connect while a cell runs; once per kernel."""
        if kernel_id in self.subshells:
            return
        info = self.known_kernel_info(kernel_id) or {}
        if "kernel subshells" not in info.get("supported_features", []):
            return
        kernel = self.kernel_manager.get_kernel(kernel_id)
        stream = kernel.connect_control()
        session = kernel.session
        self.subshells[kernel_id] = None

        def on_reply(msg_list):
            try:
                _, parts = session.feed_identities(msg_list)
                msg = session.deserialize(parts, content=True)
                if msg["header"]["msg_type"] == "create_subshell_reply" and msg["content"].get("status") == "ok":
                    self.subshells[kernel_id] = msg["content"]["subshell_id"]
                    self.log.info("keepalive: subshell %s for comms of kernel %s", self.subshells[kernel_id], kernel_id)
            finally:
                stream.close()

        stream.on_recv(on_reply)
        session.send(stream, "create_subshell_request", {})

    def detach(self, kernel_id: str, forget: bool = False) -> None:
        """Stop following a kernel; ``forget``: it is gone (shut down), and so is its journal."""
        for session_id in list(self.held_stdin.get(kernel_id, {})):
            self.release_stdin(kernel_id, session_id)
        self.subshells.pop(kernel_id, None)
        self.kernel_info.pop(kernel_id, None)
        self.records.pop(kernel_id, None)
        self.failed_at.pop(kernel_id, None)
        self.not_local.discard(kernel_id)
        self._unwatch_recorder(kernel_id)
        pending = self.starting.pop(kernel_id, None)
        if pending is not None and not pending.done():
            pending.cancel()
        for handle in (self.readers.pop(kernel_id, None), self.writers.pop(kernel_id, None)):
            if handle is not None:
                handle.close()
        if forget and self.folder is not None:
            self._remove_journal(kernel_id)

    # --- what the websockets report ---------------------------------------------------------

    def note_request(self, kernel_id: str, header: dict, metadata: dict) -> None:
        if self.attach(kernel_id) is None:
            return
        self._append(kernel_id, {"k": "request", "msg_id": header.get("msg_id", ""),
                                 "cell_id": metadata.get("cellId"), "session": header.get("session")})
        self.refresh(kernel_id)

    def note_stdin_from_kernel(self, kernel_id: str, session, msg_list: list) -> None:
        """Raw frames the kernel sent on a websocket's stdin channel."""
        if self.attach(kernel_id) is None:
            return
        _, parts = session.feed_identities(msg_list)
        msg = session.deserialize(parts, content=True)
        if msg["header"].get("msg_type") == "input_request":
            header = {key: value for key, value in msg["header"].items() if key != "date"}
            parent = {"msg_id": (msg.get("parent_header") or {}).get("msg_id")}
            self._append(kernel_id, {"k": "input_request", "msg": {
                "header": header, "parent_header": parent, "content": msg.get("content") or {}}})
            self.refresh(kernel_id)

    def note_input_reply(self, kernel_id: str, header: dict, parent_header: dict, content: dict) -> None:
        record = self.refresh(kernel_id)
        if record is None:
            return
        parent_id = parent_header.get("msg_id", "")
        asked = next((e.input_request for e in record.executions.values()
                      if e.input_request and e.input_request["header"].get("msg_id") == parent_id), None)
        # a password never reaches the disk (the record shows dots for it anyway)
        value = None if asked is None or asked["password"] else str(content.get("value", ""))
        self._append(kernel_id, {"k": "input_reply", "msg_id": header.get("msg_id", ""),
                                 "parent_id": parent_id, "value": value})
        self.refresh(kernel_id)

    # --- the stdin of pages that went away ------------------------------------------------------

    def _waits_for(self, kernel_id: str, session_id: str) -> bool:
        """Whether an execution that page session requested is queued or running."""
        record = self.records.get(kernel_id)
        return record is not None and any(
            e.session == session_id and e.state in ("queued", "running") for e in record.executions.values()
        )

    def hold_stdin(self, kernel_id: str, session_id: str, stream, close) -> bool:
        """Keep a gone page's stdin stream open while the kernel runs that page's executions;
        True if kept (``close`` closes it for real later), False if nothing needs it.

        The kernel sends an ``input_request`` to the stdin socket whose identity is that of the
        page connection that sent the ``execute_request``. jupyter_server closes a gone page's
        sockets as soon as another page connects: a request the kernel sends after that would
        reach nobody, and ``input()`` would wait for ever. Held open, it reaches the record, and
        any page can answer it (the kernel takes a reply from any connection).
        """
        if not self._waits_for(kernel_id, session_id):
            return False
        held = self.held_stdin.setdefault(kernel_id, {})
        if session_id in held and held[session_id][0] is not stream:
            self.release_stdin(kernel_id, session_id)
        held[session_id] = (stream, close)
        self.log.info("keepalive: kept a gone page's stdin open for its running cell (kernel %s)", kernel_id)
        return True

    def release_stdin(self, kernel_id: str, session_id: str) -> None:
        held = self.held_stdin.get(kernel_id, {})
        stream, close = held.pop(session_id, (None, None))
        if not held:
            self.held_stdin.pop(kernel_id, None)
        if stream is not None and not stream.closed():
            close()


class RecordingWebsocketConnection(ZMQChannelsWebsocketConnection):
    """jupyter_server's kernel websocket, which also tells the recorder about execute requests
    and stdin, and, while a cell runs, answers kernel_info itself and sends comms to a subshell."""

    async def prepare(self):
        await super().prepare()
        recorder = self._recorder
        if recorder is not None:
            # The kernel's recorder is subscribed before the page can send a request: a new SUB
            # socket misses what is published while it connects.
            await recorder.ready(self.kernel_id)

    def connect(self):
        recorder = self.websocket_handler.settings.get("keepalive_execution_recorder")
        if recorder is not None:
            # The same page back: its own connection takes the kernel's stdin requests again
            # (a held stream of the same identity would otherwise keep them).
            recorder.release_stdin(self.kernel_id, self.session.session)
        return super().connect()

    @property
    def _recorder(self) -> ExecutionRecorder | None:
        return self.websocket_handler.settings.get("keepalive_execution_recorder")

    def handle_incoming_message(self, incoming_msg) -> None:
        try:
            forward = self._note_incoming(incoming_msg)
        except Exception as e:  # never let the record get in the way of the kernel
            self.log.warning("keepalive: could not read an incoming message: %s", type(e).__name__)
            forward = incoming_msg
        if forward is not None:
            super().handle_incoming_message(forward)

    def handle_outgoing_message(self, stream, outgoing_msg) -> None:
        channel = stream if isinstance(stream, str) else getattr(stream, "channel", None)
        if channel == "stdin":
            self._note_stdin(outgoing_msg)
        elif channel == "shell":
            self._note_kernel_info(outgoing_msg)
        super().handle_outgoing_message(stream, outgoing_msg)

    def _note_kernel_info(self, msg_list) -> None:
        recorder = self._recorder
        if recorder is None:
            return
        try:
            _, parts = self.session.feed_identities(msg_list)
            if self.session.unpack(parts[1]).get("msg_type") == "kernel_info_reply":
                recorder.kernel_info[self.kernel_id] = self.session.unpack(parts[4])
                recorder.ensure_subshell(self.kernel_id)
        except Exception as e:
            self.log.warning("keepalive: could not read a shell reply: %s", type(e).__name__)

    def _answer_kernel_info(self, request: dict) -> bool:
        """Answer a page's kernel_info_request while a cell runs, with the kernel's own earlier
        answer; True if answered.

        The kernel answers shell requests only between cells. A page that connects while one
        runs (a reload, a recovered browser) would wait that long for kernel_info, and with it
        everything that waits on it: ipywidgets' restore, whose comm messages then go to
        keepalive's subshell (see ``_note_incoming``), which the kernel serves at once. Widgets
        then come back live. The reply is followed by the busy status of the cell that still
        runs, so that the page shows the kernel as it is.
        """
        recorder = self._recorder
        info = recorder.known_kernel_info(self.kernel_id) if recorder is not None else None
        running = recorder.running_request(self.kernel_id) if info is not None else None
        if running is None:
            return False
        recorder.ensure_subshell(self.kernel_id)  # a new server's first page: no subshell yet

        def send(channel: str, msg_type: str, content: dict, parent: dict) -> None:
            message = self.session.msg(msg_type, content=content, parent=parent)
            self.handle_outgoing_message(channel, self.session.serialize(message))

        send("iopub", "status", {"execution_state": "busy"}, request)
        send("shell", "kernel_info_reply", info, request)
        send("iopub", "status", {"execution_state": "idle"}, request)
        send("iopub", "status", {"execution_state": "busy"}, running)
        self.log.info("keepalive: answered kernel_info for kernel %s while a cell runs", self.kernel_id)
        return True

    def disconnect(self):
        stdin = (self.channels or {}).get("stdin")
        if stdin is not None and self._recorder is not None and not stdin.closed():
            self._outlive_the_page(stdin)
        return super().disconnect()

    def _outlive_the_page(self, stdin) -> None:
        """Keep noting what arrives on this gone page's stdin stream, and keep the stream open
        while the kernel runs the page's executions (see ``ExecutionRecorder.hold_stdin``).

        jupyter_server either closes the stream now (another page is connected) or keeps it for
        a page that comes back with the same session key, pointing it at its buffer with
        ``on_recv``, and closes it when another page connects. Both go through ``on_recv`` and
        ``close``, which are wrapped here, once per stream.
        """
        if getattr(stdin, "_keepalive_outlives", False):
            return
        stdin._keepalive_outlives = True
        recorder, kernel_id, session_id = self._recorder, self.kernel_id, self.session.session
        set_callback, close = stdin.on_recv, stdin.close
        note = self._note_stdin

        def on_recv(callback, copy=True):
            if callback is None:  # nobody else listens now: the record still does
                return set_callback(note, copy)

            def noting_too(msg_list):
                note(msg_list)
                callback(msg_list)

            return set_callback(noting_too, copy)

        def close_unless_needed(*args, **kwargs):
            if not recorder.hold_stdin(kernel_id, session_id, stdin, lambda: close(*args, **kwargs)):
                close(*args, **kwargs)

        stdin.on_recv = on_recv
        stdin.close = close_unless_needed

    def _note_stdin(self, msg_list) -> None:
        recorder = self._recorder
        if recorder is None:
            return
        try:
            recorder.note_stdin_from_kernel(self.kernel_id, self.session, msg_list)
        except Exception as e:
            self.log.warning("keepalive: could not read a stdin message: %s", type(e).__name__)

    def _note_incoming(self, ws_msg):
        """Tell the recorder of execute requests (which cell) and input replies (answered).
        While a cell runs: answer a kernel_info request here, and send comm messages to the
        kernel's comm subshell. Returns the message to forward (None: answered here)."""
        recorder = self._recorder
        if recorder is None or not self.channels:
            return ws_msg
        msg = None
        if self.subprotocol == "v1.kernel.websocket.jupyter.org":
            channel, parts = deserialize_msg_from_ws_v1(ws_msg)
            if channel not in ("shell", "stdin"):
                return ws_msg
            header = self.session.unpack(parts[0])
            parent_header, metadata, content = (None, None, None)
            if header.get("msg_type") == "input_reply":
                parent_header, content = self.session.unpack(parts[1]), self.session.unpack(parts[3])
            elif header.get("msg_type") == "execute_request":
                metadata = self.session.unpack(parts[2])
        else:
            msg = deserialize_binary_message(ws_msg) if isinstance(ws_msg, bytes) else json.loads(ws_msg)
            channel = msg.get("channel", "shell")
            header = msg.get("header") or {}
            parent_header, metadata, content = msg.get("parent_header"), msg.get("metadata"), msg.get("content")
        msg_type = header.get("msg_type")
        if channel == "shell" and msg_type == "execute_request":
            recorder.note_request(self.kernel_id, header, metadata or {})
        elif channel == "stdin" and msg_type == "input_reply":
            recorder.note_input_reply(self.kernel_id, header, parent_header or {}, content or {})
        elif channel == "shell" and msg_type == "kernel_info_request":
            return None if self._answer_kernel_info(header) else ws_msg
        elif channel == "shell" and msg_type in COMM_TYPES and not header.get("subshell_id"):
            subshell = recorder.subshells.get(self.kernel_id)
            if subshell and recorder.running_request(self.kernel_id) is not None:
                # JupyterLab puts comms on a subshell of its own too, but sends a comm's first
                # message before that subshell exists: on the main shell, busy with the cell
                header["subshell_id"] = subshell
                if msg is None:
                    return serialize_msg_to_ws_v1([self.session.pack(header), *parts[1:]], channel)
                if isinstance(ws_msg, str):  # the legacy JSON protocol (binary buffers: left as they are)
                    return json.dumps({**msg, "header": header}, default=str)
        return ws_msg
