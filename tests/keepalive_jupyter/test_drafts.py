"""Unsaved cell sources kept by the server: the rules (unit) and /api/keepalive/drafts with real saves."""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone

from keepalive_jupyter.drafts import Drafts

T0 = datetime(2026, 11, 23, 10, 0, 0, tzinfo=timezone.utc)


def notebook(*cells: tuple[str, str], minor: int = 5) -> dict:
    return {
        "nbformat": 4, "nbformat_minor": minor, "metadata": {},
        "cells": [{"id": i, "cell_type": "code", "source": s, "metadata": {}, "outputs": [], "execution_count": None}
                  for i, s in cells],
    }


def draft(cell_id: str, source: str, after: str | None = None) -> dict:
    return {"id": cell_id, "cell_type": "code", "source": source, "after": after}


def test_drafts_that_differ_from_the_file_come_back():
    drafts = Drafts()
    drafts.put("/a.ipynb", [draft("c1", "x = 1"), draft("c2", "print(x)", after="c1")], base=T0.isoformat())
    got = drafts.get("a.ipynb", notebook(("c1", "x = 1"), ("c2", "")), T0)
    assert got == [draft("c2", "print(x)", after="c1")]


def test_a_save_forgets_the_drafts_it_carries_and_keeps_the_newer_ones():
    drafts = Drafts()
    drafts.put("a.ipynb", [draft("c1", "x = 1"), draft("c2", "y = 2", after="c1")], base=T0.isoformat())
    saved = notebook(("c1", "x = 1"), ("c2", "y ="))  # c2 was typed on after the save took the notebook
    drafts.pre_save(model={"type": "notebook", "content": saved}, path="/a.ipynb")
    assert list(drafts.notebooks["a.ipynb"].cells) == ["c2"]
    later = T0 + timedelta(seconds=2)
    drafts.post_save(model={"path": "a.ipynb", "last_modified": later})
    assert drafts.get("a.ipynb", saved, later) == [draft("c2", "y = 2", after="c1")]
    # the next save carries it: nothing is left, not even the notebook's entry
    drafts.pre_save(model={"type": "notebook", "content": notebook(("c1", "x = 1"), ("c2", "y = 2"))}, path="a.ipynb")
    drafts.post_save(model={"path": "a.ipynb", "last_modified": later + timedelta(seconds=2)})
    assert drafts.notebooks == {}


def test_a_file_changed_some_other_way_wins_over_the_drafts():
    drafts = Drafts()
    drafts.put("a.ipynb", [draft("c1", "typed")], base=T0.isoformat())
    assert drafts.get("a.ipynb", notebook(("c1", "from git")), T0 + timedelta(seconds=30)) == []
    assert drafts.notebooks == {}


def test_drafts_carried_from_a_page_after_its_server_died_apply_to_the_file_as_it_is():
    """The dead server wrote a save the page never heard of: the page's base is behind the file.
    The service carries the page's cells without a base, and they still come back."""
    drafts = Drafts()
    saved_by_the_dead_server = notebook(("c1", "x = 1"), ("c2", "y = 'a new ce"))
    drafts.put("a.ipynb", [draft("c1", "x = 1"), draft("c2", "y = 'a new cell'", after="c1")], base=None)
    got = drafts.get("a.ipynb", saved_by_the_dead_server, T0 + timedelta(seconds=30))
    assert got == [draft("c2", "y = 'a new cell'", after="c1")]


def test_carried_drafts_also_outweigh_a_base_the_dead_server_never_moved_on(tmp_path):
    """The server died between writing a save and its post-save hook: the drafts file it left
    names the version before that save. Cells carried over without a base still come back."""
    store = tmp_path / "drafts.json"
    dead = Drafts(store)
    dead.put("a.ipynb", [draft("c1", "x = 1"), draft("c2", "y = 'a", after="c1")], base=T0.isoformat(), page="p", seq=1)
    new = Drafts(store)  # the next server reads what the dead one left
    new.put("a.ipynb", [draft("c1", "x = 1"), draft("c2", "y = 'a new cell'", after="c1")], base=None, page="p", seq=2)
    saved_by_the_dead_server = notebook(("c1", "x = 1"), ("c2", "y = 'a new"))
    got = new.get("a.ipynb", saved_by_the_dead_server, T0 + timedelta(seconds=2))
    assert got == [draft("c2", "y = 'a new cell'", after="c1")]


def test_a_file_without_cell_ids_gets_no_drafts():
    drafts = Drafts()
    drafts.put("a.ipynb", [draft("c1", "typed")], base=T0.isoformat())
    assert drafts.get("a.ipynb", notebook(("c1", ""), minor=4), T0) == []


def test_the_endpoint_keeps_drafts_until_a_save_carries_them(fetch):
    content = notebook(("c1", "x = 1"))
    saved = json.loads(fetch("api", "contents", "n.ipynb", method="PUT",
                             body=json.dumps({"type": "notebook", "content": content})).body)
    cells = [draft("c1", "x = 1"), draft("c2", "print(x)", after="c1")]
    response = fetch("api", "keepalive", "drafts", method="POST",
                     body=json.dumps({"path": "n.ipynb", "base": saved["last_modified"], "cells": cells}))
    assert response.code == 204

    def drafts_now() -> list[dict]:
        response = fetch("api", "keepalive", "drafts", params={"path": "n.ipynb"})
        assert response.headers["Cache-Control"] == "no-store"
        return json.loads(response.body)["cells"]

    assert drafts_now() == [draft("c2", "print(x)", after="c1")]
    content["cells"].append({**content["cells"][0], "id": "c2", "source": "print(x)"})
    fetch("api", "contents", "n.ipynb", method="PUT", body=json.dumps({"type": "notebook", "content": content}))
    assert drafts_now() == []

    fetch("api", "keepalive", "drafts", method="POST",
          body=json.dumps({"path": "n.ipynb", "base": None, "cells": [draft("c1", "x = 2")]}))
    assert drafts_now() == [draft("c1", "x = 2")]
    assert fetch("api", "keepalive", "drafts", method="DELETE", params={"path": "n.ipynb"}).code == 204
    assert drafts_now() == []


def test_a_request_that_was_overtaken_does_not_undo_a_newer_one():
    drafts = Drafts()
    drafts.put("a.ipynb", [draft("c1", "x = 12")], base=None, page="p1", seq=2)
    drafts.put("a.ipynb", [draft("c1", "x = 1"), draft("c2", "y")], base=None, page="p1", seq=1)
    assert drafts.get("a.ipynb", notebook(("c1", ""), ("c2", "")), T0) == [draft("c1", "x = 12"), draft("c2", "y", after=None)]
    # a new page (the recovered kiosk) starts its own count
    drafts.put("a.ipynb", [draft("c1", "x = 123")], base=None, page="p2", seq=1)
    assert drafts.get("a.ipynb", notebook(("c1", ""), ("c2", "")), T0)[0]["source"] == "x = 123"


# --- deleted cells ------------------------------------------------------------------------------


def test_a_cell_deleted_since_the_save_is_deleted_again_until_a_save_without_it():
    drafts = Drafts()
    saved = notebook(("c1", "x = 1"), ("c2", "y = 2"))
    drafts.put("a.ipynb", [], base=T0.isoformat(), page="p", seq=1, deleted=["c2"])
    assert drafts.get("a.ipynb", saved, T0) == [{"id": "c2", "deleted": True}]
    # the page undoes the deletion: the cell is a cell again
    drafts.put("a.ipynb", [draft("c2", "y = 2", after="c1")], base=None, page="p", seq=2)
    assert drafts.get("a.ipynb", saved, T0) == []
    drafts.put("a.ipynb", [], base=None, page="p", seq=3, deleted=["c2"])
    # a save that still has the cell (taken before the deletion) keeps the tombstone
    drafts.pre_save(model={"type": "notebook", "content": saved}, path="a.ipynb")
    assert drafts.get("a.ipynb", saved, T0) == [{"id": "c2", "deleted": True}]
    drafts.pre_save(model={"type": "notebook", "content": notebook(("c1", "x = 1"))}, path="a.ipynb")
    drafts.post_save(model={"path": "a.ipynb", "last_modified": T0 + timedelta(seconds=2)})
    assert drafts.notebooks == {}


def test_a_new_cell_typed_then_deleted_does_not_come_back():
    drafts = Drafts()
    drafts.put("a.ipynb", [draft("new", "typed", after="c1")], base=T0.isoformat(), page="p", seq=1)
    drafts.put("a.ipynb", [], base=None, page="p", seq=2, deleted=["new"])
    assert drafts.get("a.ipynb", notebook(("c1", "x = 1")), T0) == []


# --- the drafts file: the server may die too ------------------------------------------------------


def test_drafts_outlive_the_server_in_their_file(tmp_path):
    store = tmp_path / "runtime" / "drafts.json"
    first = Drafts(store)
    first.put("a.ipynb", [draft("c1", "typed")], base=T0.isoformat(), page="p", seq=1, deleted=["c2"])
    # the server is SIGKILLed: nothing more than what each change wrote
    again = Drafts(store)
    saved = notebook(("c1", ""), ("c2", "old"))
    assert again.get("a.ipynb", saved, T0) == [draft("c1", "typed"), {"id": "c2", "deleted": True}]
    # the page's order still counts after the restart
    again.put("a.ipynb", [draft("c1", "older")], base=None, page="p", seq=1)
    assert again.get("a.ipynb", saved, T0)[0]["source"] == "typed"
    assert oct(store.stat().st_mode & 0o777) == "0o600"
    assert [p.name for p in store.parent.iterdir()] == ["drafts.json"]  # no temporary file left
    # once a save carries them, the file forgets them too
    again.pre_save(model={"type": "notebook", "content": notebook(("c1", "typed"))}, path="a.ipynb")
    again.post_save(model={"path": "a.ipynb", "last_modified": T0 + timedelta(seconds=1)})
    assert Drafts(store).notebooks == {}


def test_small_drafts_are_written_at_once_large_ones_wait_their_turn_and_none_is_lost(tmp_path, monkeypatch):
    import keepalive_jupyter.drafts as module

    store = tmp_path / "drafts.json"
    later: list = []
    drafts = Drafts(store, call_later=lambda delay, callback: later.append((delay, callback)))
    for i in range(1, 4):  # keystrokes: each one in the file at once
        drafts.put("a.ipynb", [draft("c1", "x" * i)], base=None, page="p", seq=i)
        assert Drafts(store).notebooks["a.ipynb"].cells["c1"]["source"] == "x" * i
    assert later == []
    monkeypatch.setattr(module, "IMMEDIATE_BYTES", 10)  # now the file counts as large
    drafts.put("a.ipynb", [draft("c1", "y")], base=None, page="p", seq=4)  # a moment later: deferred
    drafts.put("a.ipynb", [draft("c1", "yz")], base=None, page="p", seq=5)  # the same deferred write
    assert len(later) == 1 and 0 < later[0][0] <= 0.2
    assert Drafts(store).notebooks["a.ipynb"].cells["c1"]["source"] == "xxx"
    later[0][1]()
    assert Drafts(store).notebooks["a.ipynb"].cells["c1"]["source"] == "yz"


def test_the_file_is_bounded_and_an_unreadable_one_is_ignored(tmp_path, monkeypatch):
    import keepalive_jupyter.drafts as module

    store = tmp_path / "drafts.json"
    monkeypatch.setattr(module, "MAX_STORE_BYTES", 3000)
    drafts = Drafts(store)
    drafts.put("old.ipynb", [draft("c1", "o" * 2000)], base=None)
    drafts.put("new.ipynb", [draft("c1", "n" * 2000)], base=None)
    assert store.stat().st_size < 3000
    assert set(Drafts(store).notebooks) == {"new.ipynb"}  # the newest change first
    assert set(drafts.notebooks) == {"old.ipynb", "new.ipynb"}  # memory keeps both
    store.write_text("{not json")
    assert Drafts(store).notebooks == {}
    store.write_text(json.dumps({"version": 99, "notebooks": {"a.ipynb": {"cells": {"c1": {"source": "x"}}}}}))
    assert Drafts(store).notebooks == {}
