"""A home's timeline: what every session of that name did, kept across stops, restarts and services.

It lives in ``STATE_DIR/timelines/<name>``, the service's own folder (0700), not in the home:
a home belongs to its session's user, and a notebook must be able neither to rewrite its
history nor to turn the service's writes elsewhere with a symlink. ``events.jsonl`` holds one
event per line, oldest first, each with a sequence number (``seq``) that only grows;
``shots/<seq>.jpg`` are thumbnails of the kiosk, kept within ``max_bytes`` (the oldest go
first; their events stay, without the picture).
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
from datetime import UTC, datetime
from pathlib import Path

log = logging.getLogger(__name__)

#: Past this size the events file keeps its newer half: a timeline is read whole for each page.
MAX_EVENTS_BYTES = 8 * 1024 * 1024
#: The most events one page of the timeline may ask for.
MAX_PAGE = 500
#: A thumbnail's file name: its event's sequence number.
SHOT_NAME = re.compile(r"^([0-9]{1,12})\.jpg$")


class Timelines:
    """Every home's timeline, one object per home (it holds the next sequence number)."""

    def __init__(self, root: Path, max_bytes: int) -> None:
        self.root = root
        self.max_bytes = max_bytes
        self._open: dict[str, Timeline] = {}

    def of(self, name: str) -> Timeline:
        """The timeline of the home ``name`` (a valid session name: it is a folder's name)."""
        if name not in self._open:
            self.root.mkdir(parents=True, exist_ok=True, mode=0o700)
            self._open[name] = Timeline(self.root / name, self.max_bytes)
        return self._open[name]

    def exists(self, name: str) -> bool:
        return (self.root / name / "events.jsonl").is_file()

    def delete(self, name: str) -> None:
        self._open.pop(name, None)
        shutil.rmtree(self.root / name, ignore_errors=True)


class Timeline:
    def __init__(self, folder: Path, max_bytes: int) -> None:
        self.folder = folder
        self.max_bytes = max_bytes
        self._next_seq: int | None = None  # read from the file at the first add

    @property
    def events_file(self) -> Path:
        return self.folder / "events.jsonl"

    @property
    def shots_dir(self) -> Path:
        return self.folder / "shots"

    def add(self, kind: str, data: dict, shot: bytes | None = None, at: datetime | None = None) -> dict:
        """Append one event (``shot``: a JPEG of the kiosk to keep with it); returns it."""
        self.shots_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        if self._next_seq is None:
            events = self._read()
            self._next_seq = events[-1]["seq"] + 1 if events else 1
        event = {"seq": self._next_seq, "at": (at or datetime.now(UTC)).isoformat(), "kind": kind, **data}
        self._next_seq += 1
        if shot is not None:
            path = self.shots_dir / f"{event['seq']}.jpg"
            _write_private(path, shot)
            event["shot"] = path.name
        line = json.dumps(event, separators=(",", ":")) + "\n"
        if not self._ends_with_newline():
            line = "\n" + line  # after a line a crash cut short: that one alone is lost
        with open(self.events_file, "a", encoding="utf-8", opener=_private_opener) as out:
            out.write(line)
        if self.events_file.stat().st_size > MAX_EVENTS_BYTES:
            self._trim_events()
        if shot is not None:
            self._trim_shots()
        return event

    def page(self, since: datetime | None = None, before: int | None = None,
             limit: int = 100) -> tuple[list[dict], int | None]:
        """Events newest first: at most ``limit``, none older than ``since``, only those before the
        cursor ``before`` (a ``seq``); and the cursor of the next page, None when this is the last."""
        kept = {p.name for p in self.shots_dir.iterdir()} if self.shots_dir.is_dir() else set()
        chosen = []
        for event in reversed(self._read()):
            if before is not None and event["seq"] >= before:
                continue
            if since is not None and datetime.fromisoformat(event["at"]) < since:
                break  # older ones follow
            if event.get("shot") and event["shot"] not in kept:
                event = {k: v for k, v in event.items() if k != "shot"}  # made room for newer ones
            chosen.append(event)
            if len(chosen) > limit:
                break
        more = len(chosen) > limit
        chosen = chosen[:limit]
        return chosen, (chosen[-1]["seq"] if more and chosen else None)

    def shot(self, name: str) -> Path | None:
        """The thumbnail file called ``name`` (``<seq>.jpg``), if it is still kept."""
        if not SHOT_NAME.match(name):
            return None
        path = self.shots_dir / name
        return path if path.is_file() else None

    def _ends_with_newline(self) -> bool:
        try:
            with open(self.events_file, "rb") as events:
                events.seek(-1, os.SEEK_END)
                return events.read(1) == b"\n"
        except FileNotFoundError:
            return True
        except OSError:  # empty
            return True

    def _read(self) -> list[dict]:
        if not self.events_file.is_file():
            return []
        events = []
        with open(self.events_file, encoding="utf-8") as lines:
            for line in lines:
                try:
                    events.append(json.loads(line))
                except ValueError:  # a line cut short by a crash while it was written
                    log.warning("timeline %s: skipped a damaged line", self.folder.name)
        return events

    def _trim_events(self) -> None:
        """Keep the newer half of the events (their numbers go on), written anew beside and moved in."""
        events = self._read()
        kept = events[len(events) // 2:]
        fresh = self.folder / "events.jsonl.new"
        with open(fresh, "w", encoding="utf-8", opener=_private_opener) as out:
            out.writelines(json.dumps(event, separators=(",", ":")) + "\n" for event in kept)
        os.replace(fresh, self.events_file)
        log.info("timeline %s: dropped its %d oldest events", self.folder.name, len(events) - len(kept))

    def _trim_shots(self) -> None:
        shots = sorted((int(SHOT_NAME.match(p.name)[1]), p) for p in self.shots_dir.iterdir() if SHOT_NAME.match(p.name))
        sizes = {path: path.stat().st_size for _, path in shots}
        total = sum(sizes.values())
        for _, path in shots[:-1]:  # the newest stays, whatever its size
            if total <= self.max_bytes:
                break
            total -= sizes[path]
            path.unlink(missing_ok=True)


def _private_opener(path: str, flags: int) -> int:
    return os.open(path, flags, 0o600)


def _write_private(path: Path, data: bytes) -> None:
    with open(path, "wb", opener=_private_opener) as out:
        out.write(data)
