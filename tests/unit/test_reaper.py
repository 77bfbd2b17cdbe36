"""Reaping what a session's display left: only processes naming its folder, never what ``keep`` says."""

from __future__ import annotations

import subprocess
import sys

import pytest

from keepalive.engine import reaper


@pytest.fixture
def spawn(tmp_path):
    """Start processes that name a path under ``tmp_path`` on their command line; end them all after."""
    started: list[subprocess.Popen] = []

    def start(name: str, folder=tmp_path) -> subprocess.Popen:
        process = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)", str(folder / name)])
        started.append(process)
        return process

    yield start
    for process in started:
        process.kill()
        process.wait()


def ended(process: subprocess.Popen) -> bool:
    try:
        process.wait(10)
    except subprocess.TimeoutExpired:
        return False
    return True


def test_the_processes_naming_the_folder_end_and_kept_or_other_ones_do_not(spawn, tmp_path):
    leftover, server = spawn("chromium-helper"), spawn("jupyter-server")
    elsewhere = spawn("other", folder=tmp_path.parent / f"{tmp_path.name}-not-it")
    hit = reaper.reap("s1", tmp_path, grace=5, keep=lambda: {server.pid}, by_marker=False)
    assert hit == [leftover.pid] and ended(leftover)
    assert server.poll() is None and elsewhere.poll() is None


def test_keep_is_asked_after_the_listing(spawn, tmp_path, monkeypatch):
    """A Jupyter server started beside the display being stopped: listed by the reaper, and its
    pid known to the session only once it is (the hook makes the race's losing order certain)."""
    leftover, server = spawn("chromium-helper"), spawn("jupyter-server")
    known: set[int] = set()
    listing = reaper.session_processes

    def listing_then_the_server_is_known(*args, **kwargs):
        listed = listing(*args, **kwargs)
        known.add(server.pid)
        return listed

    monkeypatch.setattr(reaper, "session_processes", listing_then_the_server_is_known)
    reaper.reap("s1", tmp_path, grace=5, keep=lambda: set(known), by_marker=False)
    assert ended(leftover)
    assert server.poll() is None, "the server the session knew of by then was reaped"
