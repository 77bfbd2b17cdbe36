"""Each kernel's execution journal: an append-only file of what its executions did, on disk.

The record a re-attached page replays (executions.py) is rebuilt from this file, so that it
outlives the Jupyter server: a recorder process per kernel (iopub_recorder.py) appends every
IOPub message as it arrives, and the server appends what only it sees (which cell and page sent
an ``execute_request``, the kernel's ``input_request`` and a page's answer). A new server
reads the file and has the whole record, including what the kernel printed while no server ran.

Format: one JSON object per line (``"k"`` names its kind, ``"t"`` is the wall-clock time it was
written). Kinds: ``iopub`` (``header``, ``parent_header``, ``metadata``, ``content``; ``m`` the
monotonic time it arrived and ``n`` its bytes on the wire, so the IOPub rate limit replays as it
happened), ``request``, ``input_request``, ``input_reply`` (a password's answer is never
written), ``kernel`` (the kernel's process, ``pid``; a new one means a restart), ``kernel_exited``,
``kernel_info``, ``recorder`` (the recorder subscribed), ``snapshot`` (the whole record, first
line of a compacted file).

Writers append with ``O_APPEND``, a batch of whole lines in one ``write``: two processes'
lines never interleave, and their order is the order they were written. A crash mid-write
leaves a torn last line: readers skip a line that is not JSON, and a writer that finds the file
not ending in a newline starts its batch with one, so the torn line never swallows the next.

Compaction (by the recorder, when the file has doubled since the last one): the record is
rebuilt from the file, written as one ``snapshot`` line to a new file, renamed over the old one.
Every append holds a shared ``flock`` on the file and checks, under it, that its descriptor is
still the file at the path; the compaction holds the exclusive lock from its last read to the
rename. So an append either lands in the old file before the last read (and is in the snapshot)
or waits and reopens the new file: none is lost. Readers notice the new inode and start over.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import time
from collections.abc import Callable, Iterable
from pathlib import Path

from .executions import IOPubRateLimit, KernelRecord

#: Where journals are kept unless configured (``c.ExecutionRecorder.journal_dir``).
DEFAULT_DIR = "~/.local/share/keepalive/executions"
#: The record's bounds and rate limit, written by the server for the recorders' compactions.
SETTINGS_FILE = "settings.json"
#: The file is compacted once it is this big and twice the size of its last snapshot.
COMPACT_BYTES = 16 * 1024 * 1024
#: Record settings when the server wrote none (ExecutionRecorder's and jupyter_server's defaults).
DEFAULT_SETTINGS = {
    "max_executions": 200,
    "max_execution_bytes": 32 * 1024 * 1024,
    "keep_finished_seconds": 1800.0,
    "rate_limit": {"enabled": True, "msg_rate_limit": 1000.0, "data_rate_limit": 1_000_000.0, "window": 3.0},
    "compact_bytes": COMPACT_BYTES,
}


def default_dir() -> Path:
    return Path(os.path.expanduser(DEFAULT_DIR))


def configured_dir(config) -> str:
    """The journal folder a server's config names (``c.ExecutionRecorder.journal_dir``), or the
    default: what a kernel manager passes to ``ensure_recorder`` so that its recorders write
    where the server's record reads."""
    section = config.get("ExecutionRecorder") if hasattr(config, "get") else None
    configured = section.get("journal_dir") if hasattr(section, "get") else None
    return str(configured or DEFAULT_DIR)


def prepare_dir(path: str | os.PathLike | None) -> Path:
    """The journal folder, made (0700: it holds kernel output) if it is not there."""
    folder = Path(os.path.expanduser(str(path))) if path else default_dir()
    folder.mkdir(mode=0o700, parents=True, exist_ok=True)
    with contextlib.suppress(OSError):
        if folder.stat().st_mode & 0o077:
            folder.chmod(0o700)
    return folder


def journal_path(folder: Path, kernel_id: str) -> Path:
    return Path(folder) / f"{kernel_id}.jsonl"


def lock_path(folder: Path, kernel_id: str) -> Path:
    """The recorder's lock: held while a recorder runs for the kernel (see iopub_recorder.py)."""
    return Path(folder) / f"{kernel_id}.lock"


def log_path(folder: Path, kernel_id: str) -> Path:
    return Path(folder) / f"{kernel_id}.log"


def encode(entry: dict) -> bytes:
    return json.dumps(entry, separators=(",", ":"), default=str).encode() + b"\n"


# --- settings -----------------------------------------------------------------------------------


def write_settings(folder: Path, settings: dict) -> None:
    """Write the record's settings for the recorders (atomically: a recorder may read them now)."""
    target = Path(folder) / SETTINGS_FILE
    temporary = target.with_name(f".{SETTINGS_FILE}.{os.getpid()}")
    temporary.write_text(json.dumps({**DEFAULT_SETTINGS, **settings}))
    os.replace(temporary, target)


def read_settings(folder: Path) -> dict:
    try:
        return {**DEFAULT_SETTINGS, **json.loads((Path(folder) / SETTINGS_FILE).read_text())}
    except (OSError, ValueError):
        return dict(DEFAULT_SETTINGS)


def new_record(kernel_id: str, settings: dict) -> KernelRecord:
    rate_limit = settings.get("rate_limit")
    return KernelRecord(
        kernel_id, settings["max_executions"], settings["max_execution_bytes"], settings["keep_finished_seconds"],
        IOPubRateLimit(**rate_limit) if rate_limit else None,
    )


# --- writing --------------------------------------------------------------------------------------


class JournalWriter:
    """Appends entries to one journal (also after a compaction replaced the file)."""

    def __init__(self, path: Path):
        self.path = Path(path)
        self._fd: int | None = None

    def _open(self) -> int:
        if self._fd is None:
            self._fd = os.open(self.path, os.O_RDWR | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o600)
        return self._fd

    def _current(self, fd: int) -> bool:
        """Whether ``fd`` is still the file at the path (a compaction renames a new one over it)."""
        try:
            return os.stat(self.path).st_ino == os.fstat(fd).st_ino
        except FileNotFoundError:
            return False

    def append(self, entries: Iterable[dict] = (), raw: bytes = b"") -> None:
        """Append ``entries`` (and ``raw``: lines already encoded) in one write."""
        data = b"".join(encode(entry) for entry in entries) + raw
        if not data:
            return
        while True:
            fd = self._open()
            fcntl.flock(fd, fcntl.LOCK_SH)
            try:
                if not self._current(fd):
                    self.close()
                    continue
                size = os.fstat(fd).st_size
                if size and os.pread(fd, 1, size - 1) != b"\n":
                    # a torn last line (a writer died mid-write), or another writer's line as it
                    # is being written (reads are not atomic with writes): an empty line costs nothing
                    data = b"\n" + data
                _write_all(fd, data)
                return
            finally:
                with contextlib.suppress(OSError):
                    fcntl.flock(fd, fcntl.LOCK_UN)

    def sync(self) -> None:
        """Make what was written (by anyone: it is one file) durable."""
        if self._fd is not None and not self._current(self._fd):
            self.close()  # compacted: the new file was fsynced before its rename
        if self._fd is not None:
            os.fdatasync(self._fd)

    def size(self) -> int:
        """The size of the file at the path now (0: there is none)."""
        try:
            return os.stat(self.path).st_size
        except FileNotFoundError:
            return 0

    def close(self) -> None:
        if self._fd is not None:
            with contextlib.suppress(OSError):
                os.close(self._fd)
            self._fd = None


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


# --- reading --------------------------------------------------------------------------------------


class JournalReader:
    """Reads a journal from where it left off; starts over when the file was replaced."""

    CHUNK = 1 << 20

    def __init__(self, path: Path):
        self.path = Path(path)
        self._fd: int | None = None
        self.offset = 0
        #: lines that were not JSON (torn by a crash), skipped
        self.torn = 0

    def read(self) -> tuple[bool, list[dict]]:
        """``(from_start, entries)``: the complete lines written since the last read, or, when
        the file is new or was replaced (compacted), all of it (``from_start`` true)."""
        from_start = False
        try:
            inode = os.stat(self.path).st_ino
        except FileNotFoundError:
            return False, []
        if self._fd is None or os.fstat(self._fd).st_ino != inode:
            self.close()
            try:
                self._fd = os.open(self.path, os.O_RDONLY | os.O_CLOEXEC)
            except FileNotFoundError:
                return False, []
            self.offset, from_start = 0, True
        entries: list[dict] = []
        while True:
            chunk = os.pread(self._fd, self.CHUNK, self.offset)
            end = chunk.rfind(b"\n")
            if end < 0:
                if len(chunk) == self.CHUNK:  # one line longer than a chunk: read it whole
                    chunk = _read_line(self._fd, self.offset)
                    end = chunk.rfind(b"\n")
                if end < 0:
                    break  # nothing, or a line still being written (or torn): not yet
            for line in chunk[: end + 1].splitlines():
                if not line.strip():
                    continue
                try:
                    entry = json.loads(line)
                except ValueError:
                    self.torn += 1
                    continue
                if isinstance(entry, dict):
                    entries.append(entry)
            self.offset += end + 1
            if len(chunk) < self.CHUNK:
                break
        return from_start, entries

    def close(self) -> None:
        if self._fd is not None:
            with contextlib.suppress(OSError):
                os.close(self._fd)
            self._fd = None


def _read_line(fd: int, offset: int) -> bytes:
    """From ``offset`` to the first newline (or the end)."""
    parts = []
    while True:
        chunk = os.pread(fd, JournalReader.CHUNK, offset)
        if not chunk:
            return b"".join(parts)
        newline = chunk.find(b"\n")
        if newline >= 0:
            parts.append(chunk[: newline + 1])
            return b"".join(parts)
        parts.append(chunk)
        offset += len(chunk)


# --- what the entries mean --------------------------------------------------------------------


def apply(record: KernelRecord, entry: dict) -> None:
    """Apply one journal entry to a record (at the time the entry says it happened)."""
    kind = entry.get("k")
    record.replay_time = entry.get("t")
    try:
        if kind == "iopub":
            if entry["header"].get("msg_type") == "iopub_welcome":
                return  # to a new subscriber (a recorder), not the kernel's doing
            record.on_iopub(entry, size=entry.get("n", 0), now=entry.get("m", 0.0))
        elif kind == "request":
            record.note_request(entry.get("msg_id", ""), entry.get("cell_id"), entry.get("session"))
        elif kind == "input_request":
            record.on_input_request(entry["msg"])
        elif kind == "input_reply":
            record.on_input_reply(entry.get("msg_id", ""), entry.get("parent_id", ""), entry.get("value") or "")
        elif kind in ("kernel", "recorder"):
            pid = entry.get("pid")
            if pid is not None and record.kernel_pid is not None and pid != record.kernel_pid:
                record.on_kernel_start()  # a new process: what the old one ran has ended
            if pid is not None:
                record.kernel_pid = pid
        elif kind == "kernel_exited":
            if entry.get("pid") is None or entry.get("pid") == record.kernel_pid:
                record.on_kernel_start()  # its process is gone, and what it ran with it
            # else: an older process's recorder, ending after the new process was noted
        elif kind == "kernel_info":
            record.kernel_info = entry.get("content")
        elif kind == "snapshot":
            record.restore(entry.get("record") or {})
    finally:
        record.replay_time = None


def replay(kernel_id: str, settings: dict, entries: Iterable[dict]) -> KernelRecord:
    """A record rebuilt from a journal's entries (from its start)."""
    record = new_record(kernel_id, settings)
    for entry in entries:
        apply(record, entry)
    return record


# --- compaction -----------------------------------------------------------------------------------


def compact(path: Path, kernel_id: str, settings: dict, log: Callable[[str], None] = lambda _: None) -> int:
    """Rewrite the journal as one snapshot of the record it makes; returns the new size.

    The slow part (reading and replaying) runs without the lock; under the exclusive lock only
    what was appended meanwhile is read, then the snapshot is written and renamed over.
    """
    reader = JournalReader(path)
    _, entries = reader.read()
    if reader._fd is None:
        return 0  # no journal (removed: its kernel was shut down)
    record = replay(kernel_id, settings, entries)
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    temporary = path.with_name(f".{path.name}.compact-{os.getpid()}")
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        if os.fstat(fd).st_ino != os.fstat(reader._fd).st_ino:
            return os.fstat(fd).st_size  # replaced meanwhile: not by us (one compactor per kernel)
        from_start, rest = reader.read()
        if from_start:
            return os.fstat(fd).st_size
        for entry in rest:
            apply(record, entry)
        before = os.fstat(fd).st_size
        record.prune()
        data = encode({"k": "snapshot", "t": time.time(), "record": record.snapshot()})
        out = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
        try:
            _write_all(out, data)
            os.fsync(out)
        finally:
            os.close(out)
        os.rename(temporary, path)
        directory = os.open(path.parent, os.O_RDONLY | os.O_CLOEXEC)
        try:
            os.fsync(directory)
        finally:
            os.close(directory)
        log(f"compacted {path.name}: {before} -> {len(data)} bytes")
        return len(data)
    finally:
        with contextlib.suppress(FileNotFoundError):
            temporary.unlink()
        reader.close()
        os.close(fd)  # releases the lock
