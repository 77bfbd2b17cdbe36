"""Keeps an :class:`~keepalive_jupyter.executions.KernelRecord` for every running kernel.

IOPub is a PUB socket: an extra subscriber per kernel sees every message the kernel publishes,
whether or not a browser is connected. The cell a request came from is known only from the
``execute_request`` itself, which :class:`RecordingWebsocketConnection` reports here.

Stdin is different: the kernel sends an ``input_request`` only to the connection that sent the
execution, and waits for a reply from anyone. The websocket connection reports the requests it
carries, also those that arrive after its page is gone (jupyter_server then keeps its channels
open, buffering for a page that may come back with the same session key; a new page has a new
key, and never sees that buffer). A new page can answer: the kernel takes the first reply.
"""

from __future__ import annotations

import json

from jupyter_server.services.kernels.connection.base import (
    deserialize_binary_message,
    deserialize_msg_from_ws_v1,
    serialize_msg_to_ws_v1,
)
from jupyter_server.services.kernels.connection.channels import ZMQChannelsWebsocketConnection
from tornado.ioloop import PeriodicCallback
from traitlets import Float, Integer
from traitlets.config import LoggingConfigurable

from .executions import IOPubRateLimit, KernelRecord

#: Shell messages of comms (ipywidgets' among them): a subshell serves them while a cell runs.
COMM_TYPES = frozenset({"comm_open", "comm_msg", "comm_close", "comm_info_request"})
#: How often kernels that started (or stopped) are noticed, in seconds.
POLL_SECONDS = 1.0


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

    def __init__(self, kernel_manager, rate_limit: dict | None = None, **kwargs):
        super().__init__(**kwargs)
        self.kernel_manager = kernel_manager
        #: the IOPub rate limit of the server's websockets (IOPubRateLimit's fields; None: off)
        self.rate_limit = rate_limit
        self.records: dict[str, KernelRecord] = {}
        #: each kernel's latest kernel_info_reply content, as a page got it
        self.kernel_info: dict[str, dict] = {}
        #: a kernel subshell of keepalive's own per kernel (None while being made), for comms
        self.subshells: dict[str, str | None] = {}
        #: per kernel, the stdin streams of gone pages kept open for their executions: {session id:
        #: (stream, the stream's own close)}
        self.held_stdin: dict[str, dict[str, tuple]] = {}
        self._poller: PeriodicCallback | None = None

    # --- life cycle -------------------------------------------------------------------------

    def start(self) -> None:
        """Follow kernels as they start and stop (must run on the server's event loop)."""
        self._poller = PeriodicCallback(self.sync, POLL_SECONDS * 1000)
        self._poller.start()
        self.sync()

    def stop(self) -> None:
        if self._poller is not None:
            self._poller.stop()
        for kernel_id in list(self.records):
            self.detach(kernel_id)

    def sync(self) -> None:
        """Attach to new kernels, detach from gone ones."""
        try:
            live = set(self.kernel_manager.list_kernel_ids())
        except Exception:  # the manager is shutting down
            return
        for kernel_id in live - set(self.records):
            self.attach(kernel_id)
        for kernel_id in set(self.records) - live:
            self.detach(kernel_id)
        for kernel_id, record in list(self.records.items()):
            self._notice_restart(kernel_id, record)
        for kernel_id in list(self.held_stdin):
            for session_id in list(self.held_stdin[kernel_id]):
                if not self._waits_for(kernel_id, session_id):
                    self.release_stdin(kernel_id, session_id)

    def _notice_restart(self, kernel_id: str, record: KernelRecord) -> None:
        """A kernel whose process changed was started again: what the old one ran has ended.

        A kernel that dies is restarted by jupyter_client without a word on IOPub about the
        executions it had; a restart on request ends them itself (an idle status each).
        """
        try:
            pid = getattr(self.kernel_manager.get_kernel(kernel_id).provisioner, "pid", None)
        except Exception:  # gone meanwhile
            return
        if pid is None:  # not a local process: nothing to compare
            return
        if record.kernel_pid is not None and pid != record.kernel_pid:
            self.log.info("keepalive: kernel %s has a new process; its running and queued cells ended", kernel_id)
            record.on_kernel_start()
        record.kernel_pid = pid

    def attach(self, kernel_id: str) -> KernelRecord | None:
        record = self.records.get(kernel_id)
        if record is not None:
            return record
        try:
            kernel = self.kernel_manager.get_kernel(kernel_id)
            stream = kernel.connect_iopub()
        except Exception as e:
            self.log.debug("keepalive: cannot follow kernel %s yet: %s", kernel_id, e)
            return None
        record = KernelRecord(
            kernel_id, self.max_executions, self.max_execution_bytes, self.keep_finished_seconds,
            IOPubRateLimit(**self.rate_limit) if self.rate_limit else None,
        )
        session = kernel.session

        def on_recv(msg_list):
            try:
                _, parts = session.feed_identities(msg_list)
                msg = session.deserialize(parts, content=True)
            except Exception as e:  # a malformed message must not stop the record
                self.log.warning("keepalive: unreadable IOPub message from %s: %s", kernel_id, e)
                return
            # the bytes jupyter_server's rate limit counts: every part but the signature
            record.on_iopub(msg, size=sum(len(part) for part in parts[1:]))

        stream.on_recv(on_recv)
        record.stream = stream
        self.records[kernel_id] = record
        self.log.info("keepalive: recording executions of kernel %s", kernel_id)
        return record

    def running_request(self, kernel_id: str) -> dict | None:
        """The header (as much as is known) of the execution the kernel runs now, or None."""
        record = self.records.get(kernel_id)
        if record is None or record.activity.execution_state != "busy":
            return None
        running = record.running()
        if running is None:
            return None
        return {"msg_id": running.msg_id, "msg_type": "execute_request", "session": running.session or ""}

    def ensure_subshell(self, kernel_id: str) -> None:
        """Ask the kernel (on its control channel, served while cells run) for a subshell for the
        comms of pages that connect while a cell runs; once per kernel."""
        if kernel_id in self.subshells:
            return
        info = self.kernel_info.get(kernel_id) or {}
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

    def detach(self, kernel_id: str) -> None:
        for session_id in list(self.held_stdin.get(kernel_id, {})):
            self.release_stdin(kernel_id, session_id)
        self.subshells.pop(kernel_id, None)
        self.kernel_info.pop(kernel_id, None)
        record = self.records.pop(kernel_id, None)
        if record is not None and record.stream is not None and not record.stream.closed():
            record.stream.close()

    # --- what the websockets report ---------------------------------------------------------

    def note_request(self, kernel_id: str, header: dict, metadata: dict) -> None:
        record = self.attach(kernel_id)
        if record is None:
            return
        record.note_request(header.get("msg_id", ""), metadata.get("cellId"), header.get("session"))

    def note_stdin_from_kernel(self, kernel_id: str, session, msg_list: list) -> None:
        """Raw frames the kernel sent on a websocket's stdin channel."""
        record = self.attach(kernel_id)
        if record is None:
            return
        _, parts = session.feed_identities(msg_list)
        msg = session.deserialize(parts, content=True)
        if msg["header"].get("msg_type") == "input_request":
            record.on_input_request(msg)

    def note_input_reply(self, kernel_id: str, header: dict, parent_header: dict, content: dict) -> None:
        record = self.records.get(kernel_id)
        if record is not None:
            record.on_input_reply(header.get("msg_id", ""), parent_header.get("msg_id", ""), str(content.get("value", "")))

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

    def connect(self):
        recorder = self.websocket_handler.settings.get("keepalive_execution_recorder")
        if recorder is not None:
            # Subscribe now, well before the first request: a new SUB socket misses what is
            # published while it connects.
            recorder.attach(self.kernel_id)
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
        info = recorder.kernel_info.get(self.kernel_id) if recorder is not None else None
        running = recorder.running_request(self.kernel_id) if info is not None else None
        if running is None:
            return False

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
