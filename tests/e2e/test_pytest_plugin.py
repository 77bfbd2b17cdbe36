"""The README's pytest-plugin example, run as a user would: pytest in a folder of its own, with
nothing but the installed plugin, and ``--keepalive-url`` pointing at a running service or no
URL at all (the plugin then serves one itself)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import psutil

from keepalive.cli import SERVING_LINE
from tests.conftest import worker_environment
from tests.readme import blocks

EXAMPLE_TEST = "def test_a_cell_runs_in_the_kept_alive_browser"


def write_the_example(folder: Path) -> None:
    (example,) = [b for b in blocks() if b.lang == "python" and EXAMPLE_TEST in b.code]
    (folder / "test_notebook.py").write_text(example.code)


def a_users_environment() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith("KEEPALIVE_")}


def test_the_readme_plugin_example_passes_against_a_running_service(keepalive_service, tmp_path):
    write_the_example(tmp_path)
    env = a_users_environment()
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


def test_without_a_url_the_plugin_serves_one_itself_and_stops_it(tmp_path):
    """``keepalive serve`` started by the plugin on a port the service binds itself (0), learnt
    from its banner; stopped with the run."""
    write_the_example(tmp_path)
    env = a_users_environment()
    # this test worker's display numbers and uids (as every service of the suite gets), and
    # the run's browser profile template, so that its service neither meets another's nor makes its own
    env.update(worker_environment())
    if os.environ.get("KEEPALIVE_TEST_PROFILE_TEMPLATE"):
        env["KEEPALIVE_PROFILE_TEMPLATE"] = os.environ["KEEPALIVE_TEST_PROFILE_TEMPLATE"]
    inner = tmp_path / "run"
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-q", "test_notebook.py", f"--basetemp={inner}"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600,
    )
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-2000:]
    assert "1 passed" in done.stdout
    (log,) = inner.rglob("service.log")
    served = SERVING_LINE.search(log.read_text())
    assert served and served.group(1).startswith("http://127.0.0.1:") and not served.group(1).endswith(":0")
    state_dir = str(log.parent)
    left = []
    for process in psutil.process_iter():
        try:
            if process.environ().get("KEEPALIVE_STATE_DIR") == state_dir:
                left.append(process)
        except psutil.Error:
            pass
    assert not left, f"the plugin's service or its sessions still run: {left}"
