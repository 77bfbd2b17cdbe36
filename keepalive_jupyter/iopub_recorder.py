"""One kernel's recorder: a small process that appends what the kernel publishes to its journal.

    python -m keepalive_jupyter.iopub_recorder --connection-file F --kernel-id K [--kernel-pid P] [--journal-dir D]

It subscribes to the kernel's IOPub (from the connection file, whose key it reads there: no
secret on its argv) and appends every message to the kernel's journal (journal.py) as it
arrives (what comes within 10 ms is one write), fsyncing the file at least once a second. It lives apart from the Jupyter server: its
own session, no parent it polls, output to a file. It ends by itself when the kernel's process
is gone (a pidfd says so), or, with no pid given, when the connection file is removed. Its argv
names the connection file, by design: keepalive's clean-up spares processes that name a file
in the session's Jupyter runtime dir. One runs per kernel: it holds the kernel's lock file,
which says which kernel process it records and whether it is subscribed yet.

The entry point for the server and the kernel manager::

    async def ensure_recorder(kernel_id: str, connection_file: str, kernel_pid: int | None,
                              journal_dir: str | os.PathLike | None = None, log=None,
                              timeout: float = 10.0, ask_kernel_info: bool | None = None) -> bool

starts the recorder unless one runs for that kernel process, and returns True once it is
subscribed (a SUB socket misses what is published while it connects: the recorder says so only
after the kernel's first message reached it), or False after ``timeout`` (logged as a warning).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import fcntl
import hashlib
import hmac
import json
import logging
import os
import signal
import subprocess
import sys
import time
import uuid
from datetime import datetime, timezone
from pathlib import Path

from . import journal

#: How often the journal is made durable at least (seconds).
SYNC_SECONDS = 1.0
#: How long a recorder waits for an older one to let go of the kernel's lock (its kernel is gone).
LOCK_WAIT_SECONDS = 10.0
#: After the kernel's process ended, what it published last may still be on its way.
DRAIN_SECONDS = 0.3
#: How often the kernel is asked for its info until the subscription shows (no welcome message).
ASK_SECONDS = 0.5
DELIMITER = b"<IDS|MSG>"
#: How long the recorder lets messages gather before it writes them (s): a fast printer's lines
#: then cost one write for several, and the order of the file is still that of their arrival.
COALESCE_SECONDS = 0.01
#: At most this much is written in one batch: compaction is checked between batches.
BATCH_BYTES = 64 * 1024

log = logging.getLogger("keepalive.iopub_recorder")


# --- the lock: which recorder records which kernel process ------------------------------------


def recorder_status(folder: Path, kernel_id: str) -> dict | None:
    """What the kernel's running recorder says of itself (``recorder_pid``, ``kernel_pid``,
    ``subscribed``), or None when no recorder runs for it."""
    try:
        fd = os.open(journal.lock_path(folder, kernel_id), os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        return None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            pass  # held: a recorder runs
        else:
            return None
        try:
            status = json.loads(os.pread(fd, 4096, 0) or b"{}")
        except ValueError:
            return {}  # being written
        if not process_alive(status.get("recorder_pid")):
            return {}  # what a killed recorder said; its successor has the lock and says nothing yet
        return status
    finally:
        os.close(fd)


def process_alive(pid) -> bool:
    """Whether the process runs (one that ended but was not reaped yet does not)."""
    if not isinstance(pid, int):
        return False
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[-1].split()[0] not in ("Z", "X")


def _take_lock(folder: Path, kernel_id: str, kernel_pid: int | None) -> int | None:
    """The kernel's lock, held; None if another recorder records this same kernel process."""
    fd = os.open(journal.lock_path(folder, kernel_id), os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    deadline = time.monotonic() + LOCK_WAIT_SECONDS
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            _say(fd, kernel_pid=kernel_pid, subscribed=False)  # not what a killed predecessor said
            return fd
        except BlockingIOError:
            pass
        try:
            holder = json.loads(os.pread(fd, 4096, 0) or b"{}")
        except ValueError:
            holder = {}
        if holder.get("kernel_pid") == kernel_pid and kernel_pid is not None and process_alive(holder.get("recorder_pid")):
            os.close(fd)
            return None
        if time.monotonic() > deadline:
            os.close(fd)
            raise TimeoutError(f"the recorder {holder.get('recorder_pid')} of an older kernel process kept the lock")
        time.sleep(0.05)  # an older kernel's recorder, ending with its kernel


def _say(fd: int, **status) -> None:
    data = json.dumps({"recorder_pid": os.getpid(), **status}).encode()
    os.ftruncate(fd, 0)
    os.pwrite(fd, data, 0)


# --- the process ----------------------------------------------------------------------------------


class Recorder:
    def __init__(self, kernel_id: str, connection_file: Path, kernel_pid: int | None, folder: Path, lock_fd: int,
                 ask_kernel_info: bool = False):
        import zmq  # here: ``ensure_recorder``'s callers need not load it

        self.zmq = zmq
        self.kernel_id, self.connection_file, self.kernel_pid = kernel_id, connection_file, kernel_pid
        self.folder, self.lock_fd = folder, lock_fd
        info = json.loads(connection_file.read_text())
        self.info = info
        self.key = info.get("key", "").encode()
        scheme = info.get("signature_scheme", "hmac-sha256")
        self.digest = getattr(hashlib, scheme.split("-", 1)[-1])
        self.writer = journal.JournalWriter(journal.journal_path(folder, kernel_id))
        self.context = zmq.Context()
        self.iopub = self.context.socket(zmq.SUB)
        self.iopub.setsockopt(zmq.LINGER, 0)
        self.iopub.setsockopt(zmq.RCVHWM, 0)  # never drop what reached us
        self.iopub.setsockopt(zmq.SUBSCRIBE, b"")
        # and a topic of its own: ipykernel's XPUB welcomes each new topic (not a second ""
        # when a page subscribed already), which shows the subscription has arrived
        self.iopub.setsockopt(zmq.SUBSCRIBE, f"keepalive-recorder-{uuid.uuid4().hex}".encode())
        self.iopub.connect(self._url("iopub_port"))
        self.control = None
        self.ask_first = ask_kernel_info
        self.session = uuid.uuid4().hex
        self.subscribed = False
        self.unsigned = 0
        self.synced_size = -1
        self.compacted_size = 0
        self.settings = journal.read_settings(folder)

    def _url(self, port: str) -> str:
        if self.info.get("transport", "tcp") == "ipc":
            return f"ipc://{self.info['ip']}-{self.info[port]}"
        return f"tcp://{self.info['ip']}:{self.info[port]}"

    # --- messages ---------------------------------------------------------------------------

    def _sign(self, parts) -> bytes:
        if not self.key:
            return b""
        mac = hmac.new(self.key, digestmod=self.digest)
        for part in parts:
            mac.update(part)
        return mac.hexdigest().encode()

    def line(self, frames: list[bytes]) -> bytes | None:
        """The journal line of one IOPub message (None: not a signed Jupyter message)."""
        try:
            at = frames.index(DELIMITER)
        except ValueError:
            return None
        signature, parts = frames[at + 1], frames[at + 2:]
        if len(parts) < 4 or not hmac.compare_digest(self._sign(parts[:4]), signature):
            self.unsigned += 1
            return None
        header, parent, metadata, content = parts[:4]
        if any(b"\n" in part for part in (header, parent, metadata, content)):
            # one entry per line: JSON that is not compact is made so
            header, parent, metadata, content = (json.dumps(json.loads(p)).encode() for p in parts[:4])
        size = sum(len(part) for part in parts)  # what jupyter_server's rate limit counts
        return b'{"k":"iopub","t":%.6f,"m":%.6f,"n":%d,"header":%s,"parent_header":%s,"metadata":%s,"content":%s}\n' % (
            time.time(), time.monotonic(), size, header, parent, metadata, content)

    def drain(self) -> int:
        """Append the messages waiting on the socket (up to BATCH_BYTES of lines) in one write; how many."""
        lines, size = [], 0
        while size < BATCH_BYTES:
            try:
                frames = self.iopub.recv_multipart(self.zmq.NOBLOCK)
            except self.zmq.Again:
                break
            line = self.line(frames)
            if line is not None:
                lines.append(line)
                size += len(line)
        if lines and not self.subscribed:
            self._subscribed()
        if lines:
            self.writer.append(raw=b"".join(lines))
            self.compact_if_due()
        return len(lines)

    def _subscribed(self) -> None:
        """The first message arrived: from now on nothing the kernel publishes is missed."""
        self.subscribed = True
        self.writer.append([{"k": "recorder", "t": time.time(), "pid": self.kernel_pid, "recorder_pid": os.getpid()}])
        _say(self.lock_fd, kernel_pid=self.kernel_pid, subscribed=True, since=time.time())
        log.info("subscribed to kernel %s (process %s)", self.kernel_id, self.kernel_pid)

    def ask_kernel_info(self, poller) -> None:
        """A kernel_info_request on the control channel (served while a cell runs): its reply is
        journaled, and the busy/idle it publishes shows the subscription works with kernels that
        send no welcome message. Pages see that idle too, and would show a kernel that runs a
        cell as idle: asked only of a new kernel, or of one that sends no welcome."""
        if self.control is None:
            self.control = self.context.socket(self.zmq.DEALER)
            self.control.setsockopt(self.zmq.LINGER, 0)
            self.control.connect(self._url("control_port"))
            poller.register(self.control, self.zmq.POLLIN)
        header = json.dumps({
            "msg_id": uuid.uuid4().hex, "msg_type": "kernel_info_request", "username": "keepalive",
            "session": self.session, "date": datetime.now(timezone.utc).isoformat(), "version": "5.3",
        }).encode()
        parts = [header, b"{}", b"{}", b"{}"]
        self.control.send_multipart([DELIMITER, self._sign(parts), *parts])

    def read_control(self) -> None:
        try:
            frames = self.control.recv_multipart(self.zmq.NOBLOCK)
            at = frames.index(DELIMITER)
            header, content = json.loads(frames[at + 2]), json.loads(frames[at + 5])
        except (self.zmq.Again, ValueError, IndexError):
            return
        if header.get("msg_type") == "kernel_info_reply":
            self.writer.append([{"k": "kernel_info", "t": time.time(), "content": content}])

    # --- durability and bounds ----------------------------------------------------------------

    def sync(self) -> None:
        """fsync if the journal grew (the server's lines too: one file), then compact if due."""
        size = self.writer.size()
        if size != self.synced_size:
            self.writer.sync()
            self.synced_size = size
        self.settings = journal.read_settings(self.folder)  # the server may have written new ones
        self.compact_if_due()

    def compact_if_due(self) -> None:
        """Compact once the file is past the threshold and twice its last snapshot (checked after
        every write: a second of a fast printer's output is more than the threshold)."""
        if self.writer.size() > max(self.settings["compact_bytes"], 2 * self.compacted_size):
            self.compacted_size = journal.compact(
                self.writer.path, self.kernel_id, self.settings, log=lambda text: log.info("%s", text)
            )
            self.synced_size = -1

    # --- the loop ---------------------------------------------------------------------------------

    def run(self) -> int:
        zmq = self.zmq
        _say(self.lock_fd, kernel_pid=self.kernel_pid, subscribed=False)
        pidfd = None
        if self.kernel_pid is not None:
            try:
                pidfd = os.pidfd_open(self.kernel_pid)
            except ProcessLookupError:
                return self.finish("the kernel's process was gone before the recorder started")
        poller = zmq.Poller()
        poller.register(self.iopub, zmq.POLLIN)
        if pidfd is not None:
            poller.register(pidfd, zmq.POLLIN)
        asked = last_sync = time.monotonic()
        if self.ask_first:
            self.ask_kernel_info(poller)
        while True:
            # wake for the next fsync at the latest (and, until subscribed, to ask again)
            wait = last_sync + SYNC_SECONDS - time.monotonic()
            if not self.subscribed:
                wait = min(wait, ASK_SECONDS)
            events = dict(poller.poll(max(0, int(1000 * wait))))
            if self.iopub in events:
                # a moment for more to come: one write for a few lines of a fast printer, not one each
                time.sleep(COALESCE_SECONDS)
                while self.drain() and self.iopub.poll(0):
                    pass  # batch after batch while messages wait
            if self.control is not None and self.control in events:
                self.read_control()
            now = time.monotonic()
            if not self.subscribed and now - asked >= 2 * ASK_SECONDS:
                self.ask_kernel_info(poller)  # no welcome came: a kernel that sends none
                asked = now
            if pidfd is not None and pidfd in events:
                end = time.monotonic() + DRAIN_SECONDS
                while time.monotonic() < end:
                    if self.iopub.poll(int(1000 * DRAIN_SECONDS)):
                        self.drain()
                return self.finish("the kernel's process ended")
            if now - last_sync >= SYNC_SECONDS:
                last_sync = now
                self.sync()
                if pidfd is None and not self.connection_file.exists():
                    return self.finish("the kernel's connection file was removed")

    def finish(self, why: str) -> int:
        with contextlib.suppress(OSError):
            if self.writer.path.exists():  # else the server forgot the kernel (shut down): so do we
                self.writer.append([{"k": "kernel_exited", "t": time.time(), "pid": self.kernel_pid}])
                self.writer.sync()
        log.info("%s (kernel %s); the recorder ends", why, self.kernel_id)
        if self.unsigned:
            log.warning("%d messages with a bad signature were left out", self.unsigned)
        return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m keepalive_jupyter.iopub_recorder", description=__doc__.split("\n")[0])
    parser.add_argument("--connection-file", required=True, type=Path)
    parser.add_argument("--kernel-id", required=True)
    parser.add_argument("--kernel-pid", type=int, default=None)
    parser.add_argument("--journal-dir", default=None)
    parser.add_argument("--ask-kernel-info", action="store_true", help="journal the kernel's kernel_info at once")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(process)d %(levelname)s %(message)s")
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    folder = journal.prepare_dir(args.journal_dir)
    lock_fd = _take_lock(folder, args.kernel_id, args.kernel_pid)
    if lock_fd is None:
        log.info("kernel %s (process %s) has a recorder already", args.kernel_id, args.kernel_pid)
        return 0
    return Recorder(args.kernel_id, args.connection_file, args.kernel_pid, folder, lock_fd, args.ask_kernel_info).run()


# --- starting one -----------------------------------------------------------------------------------

#: Recorders this process started, reaped when they end (they outlive it otherwise).
_started: list[subprocess.Popen] = []


def _reap() -> None:
    _started[:] = [p for p in _started if p.poll() is None]


def start_recorder(kernel_id: str, connection_file: str, kernel_pid: int | None, folder: Path,
                   ask_kernel_info: bool = False) -> subprocess.Popen:
    argv = [sys.executable, "-m", "keepalive_jupyter.iopub_recorder", "--connection-file", str(connection_file),
            "--kernel-id", kernel_id, "--journal-dir", str(folder)]
    if kernel_pid is not None:
        argv += ["--kernel-pid", str(kernel_pid)]
    if ask_kernel_info:
        argv.append("--ask-kernel-info")
    env = {k: v for k, v in os.environ.items() if k != "JPY_PARENT_PID"}
    with open(journal.log_path(folder, kernel_id), "ab") as output:
        os.chmod(output.fileno(), 0o600)
        process = subprocess.Popen(
            argv, stdin=subprocess.DEVNULL, stdout=output, stderr=subprocess.STDOUT, cwd="/", env=env,
            start_new_session=True, close_fds=True,
        )
    _started.append(process)
    return process


async def ensure_recorder(
    kernel_id: str, connection_file: str, kernel_pid: int | None,
    journal_dir: str | os.PathLike | None = None, log=None, timeout: float = 10.0,
    ask_kernel_info: bool | None = None,
) -> bool:
    """Start the kernel's recorder unless one runs for this kernel process; True once it is
    subscribed, False if that did not happen within ``timeout`` (logged as a warning).

    ``ask_kernel_info``: whether the recorder journals the kernel's kernel_info at once (a new
    server answers pages with it while a cell runs); its request makes the kernel publish an
    idle status, which pages would take for the end of a running cell. None: only for a kernel
    without a journal yet (just started)."""
    logger = log or logging.getLogger(__name__)
    _reap()
    folder = journal.prepare_dir(journal_dir)

    def status() -> dict:
        return recorder_status(folder, kernel_id) or {}

    now = status()
    if now.get("kernel_pid") == kernel_pid and now.get("subscribed"):
        return True
    process = None
    if now.get("kernel_pid") != kernel_pid or not now:
        if ask_kernel_info is None:
            ask_kernel_info = not journal.journal_path(folder, kernel_id).exists()
        process = start_recorder(kernel_id, connection_file, kernel_pid, folder, ask_kernel_info)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        now = status()
        if now.get("kernel_pid") == kernel_pid and now.get("subscribed"):
            return True
        if process is not None and process.poll() is not None and now.get("kernel_pid") != kernel_pid:
            # it ended, and no other recorder has this kernel process: it failed, or the kernel is gone
            logger.warning("keepalive: the recorder of kernel %s ended (exit %s); see %s", kernel_id,
                           process.returncode, journal.log_path(folder, kernel_id))
            return False
        await asyncio.sleep(0.02)
    logger.warning("keepalive: the recorder of kernel %s is not subscribed after %g s; outputs until it is may be missing",
                   kernel_id, timeout)
    return False


if __name__ == "__main__":
    sys.exit(main())
