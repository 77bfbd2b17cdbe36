"""The README's pytest-plugin example, run as a user would: pytest in a folder of its own, with
nothing but the installed plugin and ``--keepalive-url`` pointing at a running service."""

from __future__ import annotations

import os
import subprocess
import sys

from tests.readme import blocks

EXAMPLE_TEST = "def test_a_cell_runs_in_the_kept_alive_browser"


def test_the_readme_plugin_example_passes_against_a_running_service(keepalive_service, tmp_path):
    (example,) = [b for b in blocks() if b.lang == "python" and EXAMPLE_TEST in b.code]
    (tmp_path / "test_notebook.py").write_text(example.code)
    env = {k: v for k, v in os.environ.items() if not k.startswith("KEEPALIVE_")}
    env["KEEPALIVE_API_TOKEN"] = keepalive_service.token
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-q", "test_notebook.py",
         "--keepalive-url", keepalive_service.url],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600,
    )
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-2000:]
    assert "1 passed" in done.stdout
    # the plugin stopped the session it started: none of the example's is left
    names = [s["name"] for s in keepalive_service.client.get("/sessions").json()["sessions"]]
    assert not [n for n in names if n.startswith("test-a-cell-runs")], names
