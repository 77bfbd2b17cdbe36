"""Cell sources typed but not yet saved, kept by the server so that a browser crash loses none.

The kiosk page saves its notebooks every two seconds; what was typed since the last save lives
only in the page. The page therefore sends each cell whose source changed (at once, a few bytes)
to ``POST /api/keepalive/drafts``; a page that opens the notebook later (the recovered kiosk, a
reload) asks ``GET /api/keepalive/drafts?path=...`` and puts those sources back into its cells,
after which its own saving writes them to disk.

A draft lives until a save carries the same source for its cell (a pre-save hook of the
contents manager), or the page closes the notebook on purpose (``DELETE``). Drafts are matched
to cells by cell id, so only notebooks whose file keeps cell ids (nbformat 4.5 and later) get
them back. They are relative to one version of the file: the page says which (the file's
``last_modified`` when it loaded or last saved it), every save through this server moves that
on, and drafts are dropped if the file changed some other way.

Deleted cells: the page also says which cells it had and no longer has. A cell deleted since the
last save is kept as a *tombstone* (``deleted``), so that a recovered page deletes it again
instead of showing the saved file's copy of it (or, for a cell typed and deleted between two
saves, bringing it back from its draft); a save without the cell ends the tombstone. What is
not replayed: the order of cells that were moved (a cell that exists in the file keeps its
place there; a new cell goes after the cell it followed), and the type of a cell changed in
place (the file's type wins unless the cell is new). The next save of the recovered page puts
those right only if the user does them again.

The Jupyter server itself may die (SIGKILL, out of memory) while drafts are pending: they are
also kept in a small file (``store``, in the server's runtime dir), written atomically (a
temporary file, then a rename) at once after each change (a large one, over
``IMMEDIATE_BYTES``, at most every ``WRITE_INTERVAL`` seconds), and read back when the server
starts again. The file holds at most ``MAX_STORE_BYTES``; beyond that
the notebooks changed longest ago are left out of it (they stay in memory). No fsync: a process
that dies leaves what it wrote in the page cache; only a machine crash could lose the last write.
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

#: JSON bytes of drafts kept per notebook; beyond that the page's newest change still goes in,
#: the notebook's older drafts are dropped (a save normally empties them within seconds).
MAX_NOTEBOOK_BYTES = 8 * 1024 * 1024
#: Bytes of the drafts file at most (see the module's docstring).
MAX_STORE_BYTES = 4 * 1024 * 1024
#: A drafts file up to this size is written at once after every change (a page sends every
#: keystroke); a larger one at most every WRITE_INTERVAL seconds.
IMMEDIATE_BYTES = 256 * 1024
WRITE_INTERVAL = 0.2
#: The drafts file's format; a file of another version is ignored.
STORE_VERSION = 1


def _when(value: Any) -> datetime | None:
    if isinstance(value, datetime):
        return value
    if isinstance(value, str) and value:
        try:
            return datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError:
            return None
    return None


def _source(cell: dict) -> str:
    source = cell.get("source", "")
    return "".join(source) if isinstance(source, list) else str(source)


@dataclass
class NotebookDrafts:
    """The unsaved cells of one notebook: id -> {cell_type, source, after (the id before it),
    deleted (a tombstone), page, seq}."""

    base: datetime | None = None
    cells: dict[str, dict] = field(default_factory=dict)
    changed_at: float = field(default_factory=time.time)

    def size(self) -> int:
        return sum(len(c["source"]) for c in self.cells.values())

    def to_json(self) -> dict:
        return {
            "base": self.base.isoformat() if self.base else None,
            "changed_at": self.changed_at,
            "cells": self.cells,
        }

    @classmethod
    def from_json(cls, data: dict) -> NotebookDrafts:
        cells = {
            str(cell_id): {
                "cell_type": str(cell.get("cell_type", "code")),
                "source": str(cell.get("source", "")),
                "after": cell.get("after") if isinstance(cell.get("after"), str) else None,
                "deleted": bool(cell.get("deleted")),
                "page": cell.get("page") if isinstance(cell.get("page"), str) else None,
                "seq": cell.get("seq") if isinstance(cell.get("seq"), int) else 0,
            }
            for cell_id, cell in (data.get("cells") or {}).items()
            if isinstance(cell, dict)
        }
        changed_at = data.get("changed_at")
        return cls(
            base=_when(data.get("base")), cells=cells,
            changed_at=float(changed_at) if isinstance(changed_at, (int, float)) else 0.0,
        )


class Drafts:
    """Unsaved cell sources per notebook path: in memory, and in the file ``store`` (if given)
    so that they outlive the server too.

    ``call_later(delay, callback)`` schedules a deferred write (the server's event loop); without
    it every change is written at once.
    """

    def __init__(self, store: Path | str | None = None, call_later: Callable | None = None) -> None:
        self.notebooks: dict[str, NotebookDrafts] = {}
        self.store = Path(store) if store is not None else None
        self.call_later = call_later
        self._written_at = 0.0
        self._written_bytes = 0
        self._write_pending = False
        if self.store is not None:
            self._load()

    # --- the file -----------------------------------------------------------------------------

    def _load(self) -> None:
        try:
            data = json.loads(self.store.read_text())
        except FileNotFoundError:
            return
        except (OSError, ValueError) as e:
            log.warning("keepalive: ignoring an unreadable drafts file %s: %s", self.store, type(e).__name__)
            return
        if not isinstance(data, dict) or data.get("version") != STORE_VERSION:
            return
        for path, notebook in (data.get("notebooks") or {}).items():
            if isinstance(notebook, dict):
                drafts = NotebookDrafts.from_json(notebook)
                if drafts.cells:
                    self.notebooks[str(path)] = drafts
        if self.notebooks:
            log.info("keepalive: %d notebook(s) with unsaved cells from before the server started", len(self.notebooks))

    def _changed(self, path: str | None = None) -> None:
        """Something changed: write the file now, or soon if it was written a moment ago."""
        if path is not None and path in self.notebooks:
            self.notebooks[path].changed_at = time.time()
        if self.store is None or self._write_pending:
            return
        wait = self._written_at + WRITE_INTERVAL - time.monotonic()
        if wait > 0 and self.call_later is not None and self._written_bytes > IMMEDIATE_BYTES:
            self._write_pending = True
            self.call_later(wait, self.write)
            return
        self.write()

    def serialize(self) -> bytes:
        """The file's content: the notebooks changed most recently first, as many as fit."""
        notebooks: dict[str, dict] = {}
        size = 0
        for path, drafts in sorted(self.notebooks.items(), key=lambda item: -item[1].changed_at):
            if not drafts.cells:
                continue
            entry = json.dumps(drafts.to_json())
            if size + len(entry) + len(path) > MAX_STORE_BYTES:
                continue  # kept in memory only
            notebooks[path] = drafts.to_json()
            size += len(entry) + len(path)
        return json.dumps({"version": STORE_VERSION, "notebooks": notebooks}).encode()

    def write(self) -> None:
        """Write the file atomically (a crash mid-write leaves the previous one whole)."""
        self._write_pending = False
        self._written_at = time.monotonic()
        if self.store is None:
            return
        temporary = self.store.with_name(f".{self.store.name}.{os.getpid()}.tmp")
        try:
            self.store.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            content = self.serialize()
            with os.fdopen(fd, "wb") as file:
                file.write(content)
            self._written_bytes = len(content)
            os.replace(temporary, self.store)
        except OSError as e:
            log.warning("keepalive: could not write the drafts file %s: %s", self.store, e)
            try:
                temporary.unlink()
            except OSError:
                pass

    # --- what the page says -----------------------------------------------------------------------

    def put(
        self, path: str, cells: list[dict], base: str | None, page: str | None = None, seq: int = 0,
        deleted: list[str] | None = None,
    ) -> None:
        """Cells the page changed since it last sent them, and the ids of cells it deleted. A
        page sends without waiting for answers: a cell from a request older (``seq``) than the
        one its draft came from is left out."""
        path = path.strip("/")
        drafts = self.notebooks.setdefault(path, NotebookDrafts())
        if base is None:
            # No version named: the cells apply to the file as it is. keepalive sends these when
            # it carries a page's cells over from a server that died, maybe in the middle of a
            # save whose end (post_save) never moved the base on.
            drafts.base = None
        elif drafts.base is None:
            drafts.base = _when(base)
        changes = [(cell, False) for cell in cells] + [({"id": cell_id}, True) for cell_id in deleted or []]
        for cell, gone in changes:
            cell_id = cell.get("id")
            if not isinstance(cell_id, str) or not cell_id:
                continue
            known = drafts.cells.get(cell_id)
            if known is not None and page is not None and known["page"] == page and seq <= known["seq"]:
                continue
            drafts.cells[cell_id] = {
                "cell_type": cell.get("cell_type", "code") if not gone else (known or {}).get("cell_type", "code"),
                "source": "" if gone else _source(cell),
                "after": cell.get("after") if isinstance(cell.get("after"), str) else None,
                "deleted": gone,
                "page": page,
                "seq": seq,
            }
        while drafts.size() > MAX_NOTEBOOK_BYTES and len(drafts.cells) > 1:
            del drafts.cells[next(iter(drafts.cells))]
        self._changed(path)

    def get(self, path: str, notebook: dict, last_modified: Any) -> list[dict]:
        """The drafts that still apply to the file as it is now (``notebook``: its content)."""
        path = path.strip("/")
        drafts = self.notebooks.get(path)
        if drafts is None:
            return []
        now = _when(last_modified)
        if drafts.base is not None and now is not None and abs((now - drafts.base).total_seconds()) > 0.01:
            del self.notebooks[path]  # the file changed behind the page's back: its text wins
            self._changed()
            return []
        if (notebook.get("nbformat"), notebook.get("nbformat_minor", 0)) < (4, 5):
            return []  # no cell ids in the file: nothing to match drafts with
        saved = {c.get("id"): _source(c) for c in notebook.get("cells", [])}
        answer = []
        for cell_id, cell in drafts.cells.items():
            if cell.get("deleted"):
                if cell_id in saved:
                    answer.append({"id": cell_id, "deleted": True})
            elif saved.get(cell_id) != cell["source"]:
                answer.append({"id": cell_id, "cell_type": cell["cell_type"], "source": cell["source"], "after": cell["after"]})
        return answer

    def forget(self, path: str) -> None:
        if self.notebooks.pop(path.strip("/"), None) is not None:
            self._changed()

    # --- contents manager hooks ---------------------------------------------------------------

    def pre_save(self, model: dict, path: str, **kwargs) -> None:
        """A save is about to write ``model``: its cells' drafts are no longer needed."""
        drafts = self.notebooks.get(path.strip("/"))
        if drafts is None or model.get("type") != "notebook" or not isinstance(model.get("content"), dict):
            return
        saved = set()
        for cell in model["content"].get("cells", []):
            saved.add(cell.get("id"))
            draft = drafts.cells.get(cell.get("id"))
            if draft is not None and not draft.get("deleted") and draft["source"] == _source(cell):
                del drafts.cells[cell["id"]]
        for cell_id in [i for i, draft in drafts.cells.items() if draft.get("deleted") and i not in saved]:
            del drafts.cells[cell_id]  # the file has it deleted too
        self._changed()

    def post_save(self, model: dict, **kwargs) -> None:
        """The file is a new version now: the drafts left were typed after it was taken."""
        drafts = self.notebooks.get(str(model.get("path", "")).strip("/"))
        if drafts is None:
            return
        if not drafts.cells:
            del self.notebooks[model["path"].strip("/")]
        else:
            drafts.base = _when(model.get("last_modified")) or drafts.base
        self._changed()
