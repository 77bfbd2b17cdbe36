"""DELETE takes what the user typed and did not save from the kiosk page into the home.

The kiosk saves dirty notebooks every two seconds; here that interval is made an hour (the
user's own JupyterLab setting), so the typed text is on screen and nowhere else when the
session is stopped. After DELETE answers, the notebook file in the home has it.
"""

from __future__ import annotations

import json
import re

from tests.e2e.kiosk import jupyter_base, kiosk_page, put_json, put_notebook
from tests.waiting import wait_until

CELLS = ".jp-NotebookPanel:not(.lm-mod-hidden) .jp-Cell"
TYPED = "typed = 'never saved by hand'"
DOCMANAGER = "@jupyterlab/docmanager-extension:plugin"


def put_setting(page, plugin: str, values: dict) -> None:
    status = put_json(page, f"{jupyter_base(page)}/lab/api/settings/{plugin}", {"raw": json.dumps(values)})
    assert status in (200, 204), f"the setting answered {status}"


def saved_sources(path) -> list[str]:
    return ["".join(cell["source"]) for cell in json.loads(path.read_text())["cells"]]


def test_delete_saves_what_the_user_typed_into_the_home(keepalive_service, playwright):
    service = keepalive_service
    session = service.start_session(name="unsaved-work")
    notebook_file = service.state_dir / "homes" / "unsaved-work" / "notebooks" / "draft.ipynb"
    with kiosk_page(playwright, session["id"]) as page:
        put_setting(page, DOCMANAGER, {"autosave": False, "autosaveInterval": 3600})
        put_notebook(page, "draft.ipynb", ["x = 1"])
        page.goto(f"{jupyter_base(page)}/lab/tree/draft.ipynb?reset", wait_until="domcontentloaded", timeout=90_000)
        page.locator(CELLS).first.wait_for(timeout=90_000)
        page.locator(".jp-StatusBar-Widget", has_text=re.compile(r"\| Idle")).first.wait_for(timeout=90_000)
        editor = page.locator(CELLS).first.locator(".cm-content")
        editor.click()
        page.keyboard.press("Control+End")
        page.keyboard.type(f"\n{TYPED}")
        wait_until("the typed text on screen", lambda: TYPED in editor.inner_text(), timeout=10)
        # unsaved: the notebook shows as dirty, and the file has only what put_notebook wrote
        page.locator(".jp-mod-dirty").first.wait_for(timeout=10_000)
        assert saved_sources(notebook_file) == ["x = 1"]
    service.stop_session(session["id"])
    assert saved_sources(notebook_file) == [f"x = 1\n{TYPED}"]
