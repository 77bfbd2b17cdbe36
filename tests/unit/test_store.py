"""The session store, and the one place old records are migrated (keepalive.engine.store.upgrade)."""

from __future__ import annotations

import json
import logging
from dataclasses import asdict

import pytest

from keepalive.engine.record import SessionRecord
from keepalive.engine.store import RECORD_FORMAT, SessionStore, UnknownRecordFormat, upgrade


def today(**changes) -> dict:
    return {**asdict(SessionRecord(id="abcdef012345", name="kept", width=1280, height=800)), **changes}


def test_a_record_of_today_is_kept_as_it_is():
    record = today(state="ready", xvfb_pid=42)
    assert upgrade(RECORD_FORMAT, dict(record)) == record
    assert SessionRecord.from_stored(record) == SessionRecord(**record)


def test_an_old_records_unknown_fields_are_dropped():
    old = {**today(state="ready", xvfb_pid=42), "xpra_display_pid": 7, "viewer": "html5"}
    assert upgrade(1, old) == today(state="ready", xvfb_pid=42)


def test_an_old_record_without_a_display_of_its_own_is_said_to_restart_it(caplog):
    caplog.set_level(logging.WARNING, "keepalive.engine.store")
    record = upgrade(1, today(state="ready", xvfb_pid=None))
    assert record["xvfb_pid"] is None  # adoption finds no Xvfb running: the display is a lost part
    assert "started by an older keepalive; its display is restarted" in caplog.text
    caplog.clear()
    upgrade(1, today(state="starting", xvfb_pid=None))  # a start that had not reached its display
    assert caplog.text == ""


def test_a_newer_format_is_refused():
    with pytest.raises(UnknownRecordFormat, match="newer than this keepalive"):
        upgrade(RECORD_FORMAT + 1, today())


def test_the_store_upgrades_what_it_loads(tmp_path):
    store = SessionStore(tmp_path / "sessions.db")
    try:
        store._db.execute(
            "INSERT INTO sessions (id, name, format, record) VALUES (?, ?, ?, ?)",
            ("abcdef012345", "kept", 1, json.dumps({**today(), "gone": True})),
        )
        store.save(today(id="0123456789ab", name="new"))
        assert store.load() == [today(), today(id="0123456789ab", name="new")]
        rows = store._db.execute("SELECT format FROM sessions ORDER BY rowid").fetchall()
        assert rows == [(1,), (RECORD_FORMAT,)]
    finally:
        store.close()


def test_the_database_and_its_side_files_are_private_from_their_creation(tmp_path):
    """Watched as they appear: a umask that would leave them readable changes nothing."""
    import os
    import stat

    old = os.umask(0o022)
    try:
        store = SessionStore(tmp_path / "sessions.db")
        store.save({"id": "abc", "name": "alice"})
        files = sorted(tmp_path.glob("sessions.db*"))
        assert {f.name for f in files} >= {"sessions.db", "sessions.db-wal", "sessions.db-shm"}
        assert {f.name: oct(stat.S_IMODE(f.stat().st_mode)) for f in files} == {f.name: "0o600" for f in files}
        store.close()
    finally:
        os.umask(old)
