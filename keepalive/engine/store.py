"""What the service needs to find its sessions again, kept in SQLite in the state dir.

One row per session: its id and name, the format of its record, and the record itself as
JSON (ids, name, home, pids with their start times, display, ports, state, restarts). No
secret is stored here: the Jupyter token and xpra's password stay in 0600 files in the
session's own folder. Every write is a transaction, so a service killed mid-write leaves the
previous row, never half of one.
"""

from __future__ import annotations

import json
import os
import logging
import sqlite3
from dataclasses import fields
from pathlib import Path

from keepalive.engine.record import SessionRecord

log = logging.getLogger(__name__)

#: The format of the records this keepalive writes. A newer keepalive reads every older
#: format (upgrading it in ``upgrade``), so it can adopt sessions an older one started.
#: 1: what earlier keepalives wrote, some with fields this one no longer knows and (from
#: before the display was the service's own) no Xvfb of its own; 2: exactly SessionRecord's fields.
RECORD_FORMAT = 2


class UnknownRecordFormat(ValueError):
    pass


def upgrade(record_format: int, record: dict) -> dict:
    """A stored record in today's format: the only place old records are migrated."""
    if record_format > RECORD_FORMAT:
        raise UnknownRecordFormat(
            f"session record format {record_format} is newer than this keepalive ({RECORD_FORMAT})"
        )
    if record_format == 1:
        record = _from_format_1(record)
    return record


def _from_format_1(record: dict) -> dict:
    known = {f.name for f in fields(SessionRecord)}
    dropped = sorted(set(record) - known)
    if dropped:  # fields of an older keepalive that nothing reads any more
        log.info("session %s: its record's old fields %s are dropped", record.get("id"), ", ".join(dropped))
    record = {key: value for key, value in record.items() if key in known}
    if record.get("xvfb_pid") is None and record.get("state") in ("ready", "recovering"):
        # from before the display was the service's own (xpra held Xvfb and the browser): with
        # no Xvfb of its own recorded, adoption finds the display lost and restarts it; the
        # kernels keep running
        log.warning("session %s: started by an older keepalive; its display is restarted", record.get("id"))
    return record


class SessionStore:
    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        # 0600 from its first byte: SQLite gives its -wal and -shm files the database's own
        # mode, so those are never readable by anyone else either (a database left by an older
        # keepalive is narrowed first, its side files with it)
        os.close(os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600))
        for side in (path, path.with_name(path.name + "-wal"), path.with_name(path.name + "-shm")):
            if side.exists():
                side.chmod(0o600)
        self._db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute(
            "CREATE TABLE IF NOT EXISTS sessions ("
            " id TEXT PRIMARY KEY, name TEXT NOT NULL, format INTEGER NOT NULL, record TEXT NOT NULL)"
        )

    def save(self, record: dict) -> None:
        with self._db:  # one transaction
            self._db.execute(
                "INSERT OR REPLACE INTO sessions (id, name, format, record) VALUES (?, ?, ?, ?)",
                (record["id"], record["name"], RECORD_FORMAT, json.dumps(record)),
            )

    def delete(self, session_id: str) -> None:
        with self._db:
            self._db.execute("DELETE FROM sessions WHERE id = ?", (session_id,))

    def load(self) -> list[dict]:
        """Every stored record, upgraded to today's format (unreadable ones raise)."""
        rows = self._db.execute("SELECT format, record FROM sessions ORDER BY rowid").fetchall()
        return [upgrade(record_format, json.loads(text)) for record_format, text in rows]

    def close(self) -> None:
        self._db.close()
