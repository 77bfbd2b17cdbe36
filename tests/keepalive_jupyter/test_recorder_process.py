"""A real kernel and its real recorder process (iopub_recorder.py): what the kernel prints lands in
the journal with no Jupyter server running, a new server's record reads all of it, and a recorder
killed with SIGKILL is noticed and replaced."""

from __future__ import annotations

import asyncio
import logging
import os
import re
import signal

import pytest
from jupyter_client import KernelManager

from keepalive_jupyter import journal
from keepalive_jupyter.iopub_recorder import BATCH_BYTES, ensure_recorder, recorder_status
from keepalive_jupyter.recorder import ExecutionRecorder
from tests.waiting import wait_until_async


class Kernels:
    """The part of a kernel manager the recorder uses, over jupyter_client's own KernelManagers."""

    def __init__(self, **kernels: KernelManager):
        self.kernels = kernels

    def list_kernel_ids(self):
        return list(self.kernels)

    def get_kernel(self, kernel_id):
        return self.kernels[kernel_id]

    def __contains__(self, kernel_id):
        return kernel_id in self.kernels


@pytest.fixture
def kernel(monkeypatch):
    """A kernel as keepalive's own manager starts one: no parent it watches."""
    monkeypatch.delenv("JPY_PARENT_PID", raising=False)
    manager = KernelManager(kernel_name="python3")
    manager.start_kernel()
    client = manager.client()
    client.start_channels()
    client.wait_for_ready(timeout=60)
    yield manager, client
    client.stop_channels()
    manager.shutdown_kernel(now=True)


@pytest.fixture
def folder(tmp_path):
    return journal.prepare_dir(tmp_path / "executions")


def send_cell(client, code: str) -> str:
    message = client.session.msg("execute_request", {
        "code": code, "silent": False, "store_history": True, "user_expressions": {}, "allow_stdin": False,
        "stop_on_error": True})
    client.shell_channel.send(message)
    return message["header"]["msg_id"]


def printed(record, msg_id: str) -> list[int]:
    execution = record.executions.get(msg_id)
    if execution is None:
        return []
    text = "".join(m["content"]["text"] for m in execution.messages if m["msg_type"] == "stream")
    return [int(n) for n in re.findall(r"^line (\d+)$", text, re.M)]


def ticker(lines: int, period: float) -> str:
    return f"import time\nfor i in range({lines}):\n    print('line', i, flush=True)\n    time.sleep({period})"


def test_a_cell_keeps_landing_in_the_journal_with_no_server_and_a_new_one_reads_it_all(kernel, folder):
    manager, client = kernel
    kernel_id = "k-no-server"

    async def scenario():
        # the kernel manager starts the recorder right after the kernel
        assert await ensure_recorder(kernel_id, manager.connection_file, manager.provisioner.pid, folder, timeout=30)
        first = ExecutionRecorder(Kernels(**{kernel_id: manager}), journal_dir=str(folder))
        first.start()
        first.attach(kernel_id)
        msg_id = send_cell(client, ticker(60, 0.05))
        first.note_request(kernel_id, {"msg_id": msg_id, "session": "page-1"}, {"cellId": "cell-1"})
        await wait_until_async("the first lines in the record", lambda: printed(first.refresh(kernel_id), msg_id),
                               timeout=30)
        first.stop()  # the server is gone: nobody but the recorder listens now
        del first
        path = journal.journal_path(folder, kernel_id)
        size = path.stat().st_size
        await wait_until_async("the journal to grow with no server", lambda: path.stat().st_size > size + 2000,
                               timeout=30)
        second = ExecutionRecorder(Kernels(**{kernel_id: manager}), journal_dir=str(folder))
        record = second.attach(kernel_id)
        assert record.executions[msg_id].cell_id == "cell-1" and record.executions[msg_id].session == "page-1"
        await wait_until_async(
            "the cell to finish", lambda: second.refresh(kernel_id).executions[msg_id].state == "finished",
            timeout=60, describe=lambda: printed(second.records[kernel_id], msg_id)[-3:])
        assert printed(second.records[kernel_id], msg_id) == list(range(60))  # every line, once, in order
        assert second.records[kernel_id].executions[msg_id].messages[0]["msg_type"] == "execute_input"
        assert second.known_kernel_info(kernel_id)["implementation"] == "ipython"  # the recorder asked
        second.stop()

    asyncio.run(scenario())


def test_a_killed_recorder_is_replaced_at_once(kernel, folder, caplog):
    """SIGKILL of the recorder: the server, which watches it (and polls every second), starts a new one.
    What the kernel printed between the kill and the new subscription is the gap; every other
    line is there, once and in order."""
    manager, client = kernel
    kernel_id = "k-killed"
    caplog.set_level(logging.INFO)

    async def scenario():
        recorder = ExecutionRecorder(Kernels(**{kernel_id: manager}), journal_dir=str(folder),
                                     log=logging.getLogger("test.recorder"))
        recorder.start()
        await recorder.ready(kernel_id)
        old = recorder_status(folder, kernel_id)
        assert old["subscribed"] and old["kernel_pid"] == manager.provisioner.pid
        period, lines = 0.02, 250
        msg_id = send_cell(client, ticker(lines, period))
        await wait_until_async("some lines", lambda: len(printed(recorder.refresh(kernel_id), msg_id)) > 20, timeout=30)
        os.kill(old["recorder_pid"], signal.SIGKILL)  # the server watches it: a new one starts at once
        new = await wait_until_async(
            "a new recorder, subscribed",
            lambda: (s := recorder_status(folder, kernel_id) or {}).get("subscribed") and s["recorder_pid"] != old["recorder_pid"] and s,
            timeout=30)
        assert new["kernel_pid"] == manager.provisioner.pid
        await wait_until_async("the cell to finish",
                               lambda: recorder.refresh(kernel_id).executions[msg_id].state == "finished", timeout=60)
        numbers = printed(recorder.records[kernel_id], msg_id)
        missing = sorted(set(range(lines)) - set(numbers))
        assert numbers == sorted(set(numbers)) and numbers[-1] == lines - 1
        assert missing == list(range(missing[0], missing[-1] + 1)) if missing else True  # one gap, no holes
        print(f"\nrecorder killed: {len(missing)} lines of {lines} missing ({len(missing) * period:.2f} s of output)")
        recorder.stop()

    asyncio.run(scenario())
    assert any("is gone; starting a new one" in r.getMessage() for r in caplog.records)


def test_one_recorder_per_kernel_and_it_ends_with_its_kernel(folder, monkeypatch):
    monkeypatch.delenv("JPY_PARENT_PID", raising=False)
    manager = KernelManager(kernel_name="python3")
    manager.start_kernel()
    pid = manager.provisioner.pid

    async def scenario():
        assert await ensure_recorder("k", manager.connection_file, pid, folder, timeout=30)
        first = recorder_status(folder, "k")
        assert await ensure_recorder("k", manager.connection_file, pid, folder, timeout=30)
        assert recorder_status(folder, "k") == first  # not a second one
        manager.shutdown_kernel(now=True)
        await wait_until_async("the recorder to end with its kernel", lambda: recorder_status(folder, "k") is None,
                               timeout=30)
        _, entries = journal.JournalReader(journal.journal_path(folder, "k")).read()
        assert entries[-1]["k"] == "kernel_exited" and entries[-1]["pid"] == pid

    try:
        asyncio.run(scenario())
    finally:
        if manager.has_kernel:
            manager.shutdown_kernel(now=True)


def test_the_recorder_compacts_the_journal_as_it_grows_and_the_record_follows(kernel, folder):
    """Settings as the server writes them, with small bounds: the recorder compacts while the
    cell prints (about 800 KB of journal lines), the file stays near twice what the record keeps,
    and a server reading along, starting over from each snapshot, has the newest lines in order."""
    manager, client = kernel
    kernel_id = "k-compacted"
    bounds = {"compact_bytes": 40_000, "max_execution_bytes": 20_000}

    async def scenario():
        recorder = ExecutionRecorder(Kernels(**{kernel_id: manager}), journal_dir=str(folder))
        recorder.rate_limit = None
        recorder.compact_bytes, recorder.max_execution_bytes = bounds["compact_bytes"], bounds["max_execution_bytes"]
        recorder.start()  # writes the settings the recorder compacts with
        await recorder.ready(kernel_id)
        msg_id = send_cell(client, ticker(3000, 0.0005))
        path = journal.journal_path(folder, kernel_id)
        largest = 0

        def finished():
            nonlocal largest
            largest = max(largest, path.stat().st_size)
            return recorder.refresh(kernel_id).executions.get(msg_id) and recorder.records[kernel_id].executions[msg_id].state == "finished"

        await wait_until_async("the cell to finish", finished, timeout=120, every=0.05)
        kept = printed(recorder.records[kernel_id], msg_id)
        assert kept == list(range(kept[0], 3000)) and 0 < kept[0]  # the newest, in order; the oldest dropped
        assert recorder.records[kernel_id].executions[msg_id].dropped > 0
        log = journal.log_path(folder, kernel_id).read_text()
        assert log.count("compacted") >= 2, log
        _, entries = journal.JournalReader(path).read()
        assert entries[0]["k"] == "snapshot"
        assert printed(journal.replay(kernel_id, journal.read_settings(folder), entries), msg_id) == kept
        written = 3000 * 300  # at least what the kernel's lines took in the journal (a header and its parent's each)
        print(f"\njournal: at most {largest} bytes for more than {written} written, {log.count('compacted')} compactions, "
              f"snapshot {len(journal.encode(entries[0]))} bytes")
        snapshot = len(journal.encode(entries[0]))
        # compacted at twice the snapshot (or the threshold), checked after each batch written
        assert largest < max(bounds["compact_bytes"], 2 * snapshot) + BATCH_BYTES + 10_000 < written / 2
        recorder.stop()

    asyncio.run(scenario())


def test_a_restarted_kernel_gets_a_recorder_of_its_own_at_once(kernel, folder):
    """jupyter_client starts the kernel again (same id, same ports, a new process): the old
    process's recorder ends with it, the next look starts one for the new process, and the old
    process's running cell is ended."""
    manager, client = kernel
    kernel_id = "k-restarted"

    async def scenario():
        recorder = ExecutionRecorder(Kernels(**{kernel_id: manager}), journal_dir=str(folder))
        recorder.start()
        await recorder.ready(kernel_id)
        old_pid = manager.provisioner.pid
        running = send_cell(client, ticker(1000, 0.05))
        await wait_until_async("the cell to print", lambda: printed(recorder.refresh(kernel_id), running), timeout=30)
        manager.restart_kernel(now=True)
        assert manager.provisioner.pid != old_pid
        recorder.sync()  # the poller's next look
        await wait_until_async(
            "a recorder for the new process",
            lambda: (s := recorder_status(folder, kernel_id) or {}).get("subscribed") and s["kernel_pid"] == manager.provisioner.pid,
            timeout=15)
        assert recorder.refresh(kernel_id).executions[running].state == "aborted"
        client.wait_for_ready(timeout=60)
        after = send_cell(client, ticker(3, 0.01))
        await wait_until_async("the new process's cell in the record",
                               lambda: printed(recorder.refresh(kernel_id), after) == [0, 1, 2], timeout=30)
        recorder.stop()

    asyncio.run(scenario())
