"""A Jupyter server told to stop (SIGTERM, as the service stops it) exits (keepalive_jupyter/clean_exit.py).

jupyter_server does file work in AnyIO's worker threads. AnyIO ends a worker only when the
task that first asked for it completes; a request still in flight when the server stops its
event loop never does, and Python waits for the worker at exit forever. Played here with the
sessions' own AnyIO, deterministically: a "request" that used a worker, then waits on.
"""

from __future__ import annotations

import subprocess
import textwrap

import pytest

from keepalive.settings import default_jupyter_python
from tests.waiting import wait_until

PROGRAM = """
import asyncio, threading
import anyio.to_thread
from keepalive_jupyter import clean_exit

if {install}:
    clean_exit.install()

async def request_in_flight(worked):
    await anyio.to_thread.run_sync(lambda: None)  # a directory listed, a file saved
    worked.set()
    await asyncio.Event().wait()  # and then still busy when the server stops

async def serve():
    worked = asyncio.Event()
    asyncio.get_running_loop().create_task(request_in_flight(worked))
    await worked.wait()
    asyncio.get_running_loop().stop()  # as jupyter_server stops on SIGTERM: the loop, not its tasks

loop = asyncio.new_event_loop()
loop.create_task(serve())
loop.run_forever()
print("loop stopped;", [t.name for t in threading.enumerate() if t.name == clean_exit.ANYIO_WORKER])
"""


def program(install: bool) -> list[str]:
    """The program above, in the sessions' Python, with or without the release installed."""
    return [str(default_jupyter_python()), "-u", "-c", textwrap.dedent(PROGRAM.format(install=install))]


def test_a_stopped_server_exits_though_a_request_was_in_flight():
    done = subprocess.run(program(install=True), capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "loop stopped; ['AnyIO worker thread']"  # the worker was there, and went


def test_without_it_python_waits_for_the_worker_at_exit(tmp_path):
    # the cause, shown: the program gets as far as the same line, then does not end
    out = tmp_path / "out"
    with out.open("w") as sink:
        running = subprocess.Popen(program(install=False), stdout=sink)
    try:
        wait_until("the loop to stop", lambda: "loop stopped" in out.read_text(), timeout=60, process=running)
        with pytest.raises(subprocess.TimeoutExpired):  # exit after a print takes microseconds
            running.wait(timeout=3)
    finally:
        running.kill()
        running.wait()
