"""Keeps an :class:`~server_ext.executions.KernelRecord` for every running kernel.

IOPub is a PUB socket: an extra subscriber per kernel sees every message the kernel publishes,
whether or not a browser is connected. The cell a request came from is known only from the
``execute_request`` itself, which :class:`RecordingWebsocketConnection` reports here.
"""

from __future__ import annotations

import json

from jupyter_server.services.kernels.connection.base import (
    deserialize_binary_message,
    deserialize_msg_from_ws_v1,
)
from jupyter_server.services.kernels.connection.channels import ZMQChannelsWebsocketConnection
from tornado.ioloop import PeriodicCallback
from traitlets import Float, Integer
from traitlets.config import LoggingConfigurable

from .executions import KernelRecord

#: How often kernels that started (or stopped) are noticed, in seconds.
POLL_SECONDS = 1.0


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

    def __init__(self, kernel_manager, **kwargs):
        super().__init__(**kwargs)
        self.kernel_manager = kernel_manager
        self.records: dict[str, KernelRecord] = {}
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
            kernel_id, self.max_executions, self.max_execution_bytes, self.keep_finished_seconds
        )
        session = kernel.session

        def on_recv(msg_list):
            try:
                _, parts = session.feed_identities(msg_list)
                msg = session.deserialize(parts, content=True)
            except Exception as e:  # a malformed message must not stop the record
                self.log.warning("keepalive: unreadable IOPub message from %s: %s", kernel_id, e)
                return
            record.on_iopub(msg)

        stream.on_recv(on_recv)
        record.stream = stream
        self.records[kernel_id] = record
        self.log.info("keepalive: recording executions of kernel %s", kernel_id)
        return record

    def detach(self, kernel_id: str) -> None:
        record = self.records.pop(kernel_id, None)
        if record is not None and record.stream is not None and not record.stream.closed():
            record.stream.close()

    # --- what the websockets report ---------------------------------------------------------

    def note_request(self, kernel_id: str, header: dict, metadata: dict) -> None:
        record = self.attach(kernel_id)
        if record is None:
            return
        record.note_request(header.get("msg_id", ""), metadata.get("cellId"), header.get("session"))


class RecordingWebsocketConnection(ZMQChannelsWebsocketConnection):
    """jupyter_server's kernel websocket, which also tells the recorder about execute requests."""

    def connect(self):
        recorder = self.websocket_handler.settings.get("keepalive_execution_recorder")
        if recorder is not None:
            # Subscribe now, well before the first request: a new SUB socket misses what is
            # published while it connects.
            recorder.attach(self.kernel_id)
        return super().connect()

    def handle_incoming_message(self, incoming_msg) -> None:
        try:
            self._note_execute_request(incoming_msg)
        except Exception as e:  # never let the record get in the way of the kernel
            self.log.warning("keepalive: could not read an incoming message: %s", type(e).__name__)
        super().handle_incoming_message(incoming_msg)

    def _note_execute_request(self, ws_msg) -> None:
        recorder = self.websocket_handler.settings.get("keepalive_execution_recorder")
        if recorder is None or not self.channels:
            return
        if self.subprotocol == "v1.kernel.websocket.jupyter.org":
            channel, parts = deserialize_msg_from_ws_v1(ws_msg)
            if channel != "shell":
                return
            header = self.session.unpack(parts[0])
            if header.get("msg_type") != "execute_request":
                return
            metadata = self.session.unpack(parts[2])
        else:
            msg = deserialize_binary_message(ws_msg) if isinstance(ws_msg, bytes) else json.loads(ws_msg)
            if msg.get("channel", "shell") != "shell":
                return
            header = msg.get("header") or {}
            if header.get("msg_type") != "execute_request":
                return
            metadata = msg.get("metadata") or {}
        recorder.note_request(self.kernel_id, header, metadata)
