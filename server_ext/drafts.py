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
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

#: JSON bytes of drafts kept per notebook; beyond that the page's newest change still goes in,
#: the notebook's older drafts are dropped (a save normally empties them within seconds).
MAX_NOTEBOOK_BYTES = 8 * 1024 * 1024


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
    """The unsaved cells of one notebook: id -> {cell_type, source, after (the id before it)}."""

    base: datetime | None = None
    cells: dict[str, dict] = field(default_factory=dict)

    def size(self) -> int:
        return sum(len(c["source"]) for c in self.cells.values())


class Drafts:
    """Unsaved cell sources per notebook path (in memory: they outlive the page, not the server)."""

    def __init__(self) -> None:
        self.notebooks: dict[str, NotebookDrafts] = {}

    def put(self, path: str, cells: list[dict], base: str | None, page: str | None = None, seq: int = 0) -> None:
        """Cells the page changed since it last sent them. A page sends without waiting for
        answers: a cell from a request older (``seq``) than the one its draft came from is left
        out."""
        drafts = self.notebooks.setdefault(path.strip("/"), NotebookDrafts())
        if drafts.base is None:
            drafts.base = _when(base)
        for cell in cells:
            cell_id = cell.get("id")
            if not isinstance(cell_id, str) or not cell_id:
                continue
            known = drafts.cells.get(cell_id)
            if known is not None and page is not None and known["page"] == page and seq <= known["seq"]:
                continue
            drafts.cells[cell_id] = {
                "cell_type": cell.get("cell_type", "code"),
                "source": _source(cell),
                "after": cell.get("after") if isinstance(cell.get("after"), str) else None,
                "page": page,
                "seq": seq,
            }
        while drafts.size() > MAX_NOTEBOOK_BYTES and len(drafts.cells) > 1:
            del drafts.cells[next(iter(drafts.cells))]

    def get(self, path: str, notebook: dict, last_modified: Any) -> list[dict]:
        """The drafts that still apply to the file as it is now (``notebook``: its content)."""
        path = path.strip("/")
        drafts = self.notebooks.get(path)
        if drafts is None:
            return []
        now = _when(last_modified)
        if drafts.base is not None and now is not None and abs((now - drafts.base).total_seconds()) > 0.01:
            del self.notebooks[path]  # the file changed behind the page's back: its text wins
            return []
        if (notebook.get("nbformat"), notebook.get("nbformat_minor", 0)) < (4, 5):
            return []  # no cell ids in the file: nothing to match drafts with
        saved = {c.get("id"): _source(c) for c in notebook.get("cells", [])}
        return [
            {"id": cell_id, "cell_type": cell["cell_type"], "source": cell["source"], "after": cell["after"]}
            for cell_id, cell in drafts.cells.items()
            if saved.get(cell_id) != cell["source"]
        ]

    def forget(self, path: str) -> None:
        self.notebooks.pop(path.strip("/"), None)

    # --- contents manager hooks ---------------------------------------------------------------

    def pre_save(self, model: dict, path: str, **kwargs) -> None:
        """A save is about to write ``model``: its cells' drafts are no longer needed."""
        drafts = self.notebooks.get(path.strip("/"))
        if drafts is None or model.get("type") != "notebook" or not isinstance(model.get("content"), dict):
            return
        for cell in model["content"].get("cells", []):
            draft = drafts.cells.get(cell.get("id"))
            if draft is not None and draft["source"] == _source(cell):
                del drafts.cells[cell["id"]]

    def post_save(self, model: dict, **kwargs) -> None:
        """The file is a new version now: the drafts left were typed after it was taken."""
        drafts = self.notebooks.get(str(model.get("path", "")).strip("/"))
        if drafts is None:
            return
        if not drafts.cells:
            del self.notebooks[model["path"].strip("/")]
        else:
            drafts.base = _when(model.get("last_modified")) or drafts.base
