"""POST /sessions with a HeavyAI body: the kiosk lands on the ready-to-use workspace."""

from __future__ import annotations

import json

from tests.e2e.viewer_helpers import ocr, screenshot
from tests.waiting import wait_until


def notebook_cells(path) -> list[str] | None:
    """The cells' sources, or None while Jupyter is still writing the file."""
    try:
        cells = json.loads(path.read_text())["cells"]
    except (OSError, ValueError, KeyError):
        return None
    return ["".join(cell["source"]) if isinstance(cell["source"], list) else cell["source"] for cell in cells]


def test_heavyai_session_lands_on_the_connection_notebook(keepalive_service):
    service = keepalive_service
    secret = "immerse-session-" + "7" * 20
    query = 'SELECT "name" FROM flights WHERE origin = \'SFO\''
    session = service.start_session(
        name="immerse",
        heavyai={"protocol": "https", "host": "db.example", "port": 6278, "session_id": secret, "query": query},
    )
    notebook = service.state_dir / "homes" / "immerse" / "notebooks" / "HeavyAI.ipynb"
    cells = wait_until("the HeavyAI notebook on disk", lambda: notebook.is_file() and notebook_cells(notebook))
    assert "connect(" in cells[0] and secret in cells[0]
    assert 'os.environ["HEAVYAI_HOST"]' in cells[0]  # read from the environment, not pasted
    assert any(query in compile_literal(cell) for cell in cells[1:])

    # what the kiosk shows: the notebook with its connection cell, not the launcher
    text = wait_until("the connection cell on screen", lambda: (t := ocr(screenshot(service, session["id"]))) and "connect" in t and t)
    assert "HeavyAI" in text
    assert secret not in json.dumps(service.client.get(f"/sessions/{session['id']}").json())
    service.stop_session(session["id"])


def compile_literal(cell: str) -> str:
    """The string value a ``query = "..."`` cell assigns ('' for other cells)."""
    import ast

    try:
        tree = ast.parse(cell)
    except SyntaxError:
        return ""
    for node in ast.walk(tree):
        if isinstance(node, ast.Assign) and isinstance(node.value, ast.Constant) and isinstance(node.value.value, str):
            return node.value.value
    return ""


def test_plain_session_starts_without_a_notebook(keepalive_service):
    service = keepalive_service
    session = service.start_session(name="plain")
    assert session["health"]["page"] is True
    assert not (service.state_dir / "homes" / "plain" / "notebooks" / "HeavyAI.ipynb").exists()
    text = wait_until("the launcher on screen", lambda: (t := ocr(screenshot(service, session["id"]))) and "Launcher" in t and t)
    assert "HeavyAI session" not in text.replace("Al", "AI")  # no error toast for a session that never had one
    service.stop_session(session["id"])
