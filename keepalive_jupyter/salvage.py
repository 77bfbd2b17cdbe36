"""Outputs a lost kernel's journal has that its notebook's file does not: put back into the file.

A kernel that ended while no Jupyter server ran (the machine went down, every process of the
session was killed) cannot be re-attached: nothing replays its record into a page any more. Yet
its journal (journal.py) holds everything it printed, also what came after the notebook's last
save (a kiosk browser that died first saves nothing). When a new server finds such a kernel
(surviving_kernels.py lists it as lost), the outputs of each of its executions are written into
the cells they belong to, before any page opens the notebook, and the journal is removed: it has
served, and a later server must not write its old outputs over newer ones.

The outputs are built by JupyterLab's rules for an output area (consecutive stream text of one
stream merged, ``clear_output`` and its ``wait``, updates by display id), so that the file holds
what the page would have shown and saved.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
from pathlib import Path

from . import journal

#: nbformat knows stdout and stderr; the echo of an answered input() is shown as output
STREAM_NAMES = {"stdin": "stdout"}


def outputs(messages: list[dict]) -> list[dict]:
    """nbformat 4 outputs from one execution's recorded messages (executions.Execution.messages)."""
    shown: list[dict] = []
    display_ids: list[str | None] = []  # beside ``shown``: each output's display id
    clear_on_next = False
    for message in messages:
        kind, content = message["msg_type"], message.get("content") or {}
        if kind == "clear_output":
            if content.get("wait"):
                clear_on_next = True
            else:
                shown, display_ids = [], []
            continue
        if kind == "update_display_data":
            display_id = (content.get("transient") or {}).get("display_id")
            for output, its_id in zip(shown, display_ids):
                if display_id is not None and its_id == display_id:
                    output["data"], output["metadata"] = content.get("data", {}), content.get("metadata", {})
            continue
        if kind not in ("stream", "display_data", "execute_result", "error"):
            continue
        if clear_on_next:
            shown, display_ids, clear_on_next = [], [], False
        if kind == "stream":
            name = STREAM_NAMES.get(content.get("name"), content.get("name", "stdout"))
            if shown and shown[-1]["output_type"] == "stream" and shown[-1]["name"] == name:
                shown[-1]["text"] += content.get("text", "")
                continue
            output = {"output_type": "stream", "name": name, "text": content.get("text", "")}
        elif kind == "display_data":
            output = {"output_type": "display_data", "data": content.get("data", {}),
                      "metadata": content.get("metadata", {})}
        elif kind == "execute_result":
            output = {"output_type": "execute_result", "data": content.get("data", {}),
                      "metadata": content.get("metadata", {}), "execution_count": content.get("execution_count")}
        else:
            output = {"output_type": "error", "ename": content.get("ename", ""), "evalue": content.get("evalue", ""),
                      "traceback": content.get("traceback", [])}
        shown.append(output)
        display_ids.append((content.get("transient") or {}).get("display_id"))
    return shown


def recorded_cells(folder: Path, kernel_id: str) -> dict[str, tuple[list[dict], int | None]]:
    """Cell id -> (outputs, execution count) of the newest execution of each cell in the journal."""
    reader = journal.JournalReader(journal.journal_path(folder, kernel_id))
    try:
        _, entries = reader.read()
    finally:
        reader.close()
    # every execution the journal holds, however long ago it finished: the machine may have been
    # down for longer than a finished execution is kept for a page
    settings = {**journal.read_settings(folder), "keep_finished_seconds": float("inf")}
    record = journal.replay(kernel_id, settings, entries)
    cells: dict[str, tuple[list[dict], int | None]] = {}
    for execution in record.executions.values():  # in the order they were requested
        if execution.cell_id and execution.state != "queued":
            cells[execution.cell_id] = (outputs(execution.messages), execution.execution_count)
    return cells


def put_back(notebook: Path, cells: dict[str, tuple[list[dict], int | None]]) -> int:
    """Write the recorded outputs into the notebook's cells of those ids; the number of cells
    changed. The file is replaced whole (a temporary file renamed over it), never half-written."""
    text = notebook.read_text()
    content = json.loads(text)
    changed = 0
    for cell in content.get("cells", []):
        recorded = cells.get(cell.get("id"))
        if cell.get("cell_type") != "code" or recorded is None:
            continue
        shown, count = recorded
        if cell.get("outputs") != shown or (count is not None and cell.get("execution_count") != count):
            cell["outputs"] = shown
            cell["execution_count"] = count if count is not None else cell.get("execution_count")
            changed += 1
    if changed:
        temporary = notebook.with_name(f".~{notebook.name}.keepalive")
        temporary.write_text(json.dumps(content, indent=1, ensure_ascii=False) + "\n")
        os.chmod(temporary, notebook.stat().st_mode & 0o7777)
        os.replace(temporary, notebook)
    return changed


def salvage(lost: list[dict], folder: Path | None, root_dir: str, log: logging.Logger) -> None:
    """For each lost kernel (surviving_kernels.SurvivingKernelManager.lost): its recorded
    outputs into its notebook, then its journal removed."""
    if folder is None:
        return
    for kernel in lost:
        kernel_id, notebook = kernel.get("kernel_id"), kernel.get("notebook")
        path = journal.journal_path(folder, kernel_id)
        if not path.exists():
            continue
        try:
            if notebook and notebook.endswith(".ipynb"):
                file = Path(root_dir, notebook)
                changed = put_back(file, recorded_cells(folder, kernel_id))
                log.info("keepalive: outputs of lost kernel %s put back into %s (%d cell(s))", kernel_id, notebook, changed)
        except (OSError, ValueError) as error:
            log.warning("keepalive: outputs of lost kernel %s not put back into %s: %s", kernel_id, notebook, error)
        for leftover in (path, journal.lock_path(folder, kernel_id), journal.log_path(folder, kernel_id)):
            with contextlib.suppress(OSError):
                leftover.unlink()
