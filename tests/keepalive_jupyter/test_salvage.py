"""Outputs of a lost kernel's journal put back into its notebook (keepalive_jupyter/salvage.py)."""

from __future__ import annotations

import json
import logging

from keepalive_jupyter import journal
from keepalive_jupyter.salvage import outputs, put_back, salvage


def message(kind: str, **content) -> dict:
    return {"msg_type": kind, "content": content}


def test_outputs_follow_jupyterlabs_rules_for_an_output_area():
    recorded = [
        message("execute_input", code="...", execution_count=3),
        message("stream", name="stdout", text="a\n"),
        message("stream", name="stdout", text="b\n"),  # merged with the line before
        message("stream", name="stderr", text="warning\n"),
        message("display_data", data={"text/plain": "v0"}, metadata={}, transient={"display_id": "d"}),
        message("update_display_data", data={"text/plain": "v9"}, metadata={}, transient={"display_id": "d"}),
        message("stream", name="stdin", text="name? ada\n"),
        message("execute_result", data={"text/plain": "42"}, metadata={}, execution_count=3),
    ]
    assert outputs(recorded) == [
        {"output_type": "stream", "name": "stdout", "text": "a\nb\n"},
        {"output_type": "stream", "name": "stderr", "text": "warning\n"},
        {"output_type": "display_data", "data": {"text/plain": "v9"}, "metadata": {}},
        {"output_type": "stream", "name": "stdout", "text": "name? ada\n"},
        {"output_type": "execute_result", "data": {"text/plain": "42"}, "metadata": {}, "execution_count": 3},
    ]


def test_a_clear_output_empties_the_area_at_once_or_at_the_next_output():
    assert outputs([message("stream", name="stdout", text="old\n"), message("clear_output", wait=False)]) == []
    waited = [message("stream", name="stdout", text="old\n"), message("clear_output", wait=True)]
    assert outputs(waited) == [{"output_type": "stream", "name": "stdout", "text": "old\n"}]
    assert outputs([*waited, message("error", ename="E", evalue="v", traceback=["t"])]) == [
        {"output_type": "error", "ename": "E", "evalue": "v", "traceback": ["t"]}
    ]


def notebook(cells: list[dict]) -> dict:
    return {"nbformat": 4, "nbformat_minor": 5, "metadata": {}, "cells": cells}


def code_cell(cell_id: str, outputs_: list, count=None) -> dict:
    return {"cell_type": "code", "id": cell_id, "metadata": {}, "source": "", "outputs": outputs_,
            "execution_count": count}


def test_put_back_changes_only_the_recorded_cells_and_replaces_the_file_whole(tmp_path):
    file = tmp_path / "a.ipynb"
    saved_first = [{"output_type": "stream", "name": "stdout", "text": "line 0\n"}]
    other = [{"output_type": "stream", "name": "stdout", "text": "untouched\n"}]
    file.write_text(json.dumps(notebook([code_cell("c1", saved_first), code_cell("c2", other, 1)])))
    file.chmod(0o640)
    recorded = {"c1": ([{"output_type": "stream", "name": "stdout", "text": "line 0\nline 1\n"}], 2),
                "gone": ([], 9)}

    assert put_back(file, recorded) == 1
    cells = json.loads(file.read_text())["cells"]
    assert cells[0]["outputs"][0]["text"] == "line 0\nline 1\n" and cells[0]["execution_count"] == 2
    assert cells[1]["outputs"] == other and cells[1]["execution_count"] == 1
    assert file.stat().st_mode & 0o777 == 0o640
    assert [p.name for p in tmp_path.iterdir()] == ["a.ipynb"]
    assert put_back(file, recorded) == 0  # already there: the file is left alone


def test_a_lost_kernels_journal_goes_into_its_notebook_and_is_removed(tmp_path):
    """From a journal as the recorder and the server write it: a request note names the cell."""
    folder = tmp_path / "journals"
    folder.mkdir()
    root = tmp_path / "notebooks"
    root.mkdir()
    (root / "a.ipynb").write_text(json.dumps(notebook([code_cell("cell-1", [])])))
    writer = journal.JournalWriter(journal.journal_path(folder, "k1"))
    header = {"msg_id": "r1", "msg_type": "execute_request"}

    def iopub(kind: str, **content) -> dict:
        return {"k": "iopub", "header": {"msg_id": f"{kind}-{len(content)}", "msg_type": kind},
                "parent_header": header, "metadata": {}, "content": content, "m": 0.0, "n": 10, "t": 1.0}

    writer.append([
        {"k": "request", "msg_id": "r1", "cell_id": "cell-1", "session": "page", "t": 1.0},
        iopub("status", execution_state="busy"),
        iopub("execute_input", code="print()", execution_count=1),
        iopub("stream", name="stdout", text="line 0\n"),
        iopub("stream", name="stdout", text="line 1\n"),
    ])
    writer.close()

    salvage([{"kernel_id": "k1", "notebook": "a.ipynb"}], folder, str(root), logging.getLogger("test"))
    (cell,) = json.loads((root / "a.ipynb").read_text())["cells"]
    assert cell["outputs"] == [{"output_type": "stream", "name": "stdout", "text": "line 0\nline 1\n"}]
    assert cell["execution_count"] == 1
    assert not journal.journal_path(folder, "k1").exists()
