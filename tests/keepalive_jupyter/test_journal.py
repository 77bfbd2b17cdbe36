"""Each kernel's journal (journal.py): torn last records, reading on from an offset, compaction that
keeps sequence numbers and order, concurrent appenders, and what never reaches the disk."""

from __future__ import annotations

import json
import multiprocessing
import os
import time
import uuid

import pytest

from keepalive_jupyter import journal
from keepalive_jupyter.executions import IOPubRateLimit, KernelRecord

SETTINGS = {**journal.DEFAULT_SETTINGS, "max_executions": 10, "rate_limit": None}
#: when the entries of these tests were written (finished executions are kept for a while after)
T0 = time.time()


def iopub(parent: str, msg_type: str, content: dict, at: float = 0.0) -> dict:
    return {"k": "iopub", "t": T0 + at, "m": at, "n": 10,
            "header": {"msg_id": uuid.uuid4().hex, "msg_type": msg_type},
            "parent_header": {"msg_id": parent, "msg_type": "execute_request"},
            "metadata": {}, "content": content}


def run(msg_id: str, lines: list[str], cell: str = "c", finish: bool = True) -> list[dict]:
    """The entries of one execution: the server's request note, then what the kernel published."""
    entries = [{"k": "request", "t": T0, "msg_id": msg_id, "cell_id": cell, "session": "page"},
               iopub(msg_id, "status", {"execution_state": "busy"}),
               iopub(msg_id, "execute_input", {"code": "", "execution_count": 1})]
    entries += [iopub(msg_id, "stream", {"name": "stdout", "text": line}) for line in lines]
    if finish:
        entries.append(iopub(msg_id, "status", {"execution_state": "idle"}))
    return entries


def texts(record: KernelRecord, msg_id: str) -> list[str]:
    return [m["content"]["text"] for m in record.executions[msg_id].messages if m["msg_type"] == "stream"]


@pytest.fixture
def path(tmp_path):
    return journal.journal_path(journal.prepare_dir(tmp_path / "journals"), "k")


def test_the_folder_is_private(tmp_path):
    folder = journal.prepare_dir(tmp_path / "a" / "b")
    assert folder.stat().st_mode & 0o777 == 0o700
    writer = journal.JournalWriter(journal.journal_path(folder, "k"))
    writer.append([{"k": "kernel", "pid": 1}])
    assert journal.journal_path(folder, "k").stat().st_mode & 0o777 == 0o600


def test_a_torn_last_record_is_skipped_and_does_not_swallow_the_next(path):
    writer = journal.JournalWriter(path)
    writer.append(run("r1", ["one\n"], finish=False))
    # a writer died in the middle of its write: half a line, no newline
    whole = journal.encode(iopub("r1", "stream", {"name": "stdout", "text": "torn\n"}))
    with open(path, "ab") as handle:
        handle.write(whole[: len(whole) // 2])
    reader = journal.JournalReader(path)
    _, entries = reader.read()
    record = journal.replay("k", SETTINGS, entries)
    assert texts(record, "r1") == ["one\n"]  # the torn line is not read (not fatal either)
    # the next append (another writer, or a new recorder) starts on a line of its own
    journal.JournalWriter(path).append([iopub("r1", "stream", {"name": "stdout", "text": "two\n"})])
    _, more = reader.read()
    for entry in more:
        journal.apply(record, entry)
    assert texts(record, "r1") == ["one\n", "two\n"]
    assert reader.torn == 1


def test_reading_goes_on_from_where_it_stopped_and_waits_for_a_whole_line(path):
    writer = journal.JournalWriter(path)
    reader = journal.JournalReader(path)
    assert reader.read() == (False, [])  # no journal yet
    writer.append(run("r1", ["a\n"], finish=False))
    from_start, entries = reader.read()
    assert from_start and [e["k"] for e in entries] == ["request", "iopub", "iopub", "iopub"]
    offset = reader.offset
    assert offset == path.stat().st_size
    line = journal.encode(iopub("r1", "stream", {"name": "stdout", "text": "b\n"}))
    with open(path, "ab") as handle:  # a write seen half done
        handle.write(line[:10])
        handle.flush()
        assert reader.read() == (False, []) and reader.offset == offset
        handle.write(line[10:])
    from_start, entries = reader.read()
    assert not from_start and [e["content"]["text"] for e in entries] == ["b\n"]
    assert reader.offset == path.stat().st_size


def test_compaction_keeps_the_record_its_sequence_numbers_and_order(path):
    writer = journal.JournalWriter(path)
    for n in range(30):  # more executions than kept: the oldest go
        writer.append(run(f"r{n}", [f"{n}.{i}\n" for i in range(5)], cell=f"cell-{n}", finish=n < 29))
    _, entries = journal.JournalReader(path).read()
    before = journal.replay("k", SETTINGS, entries)
    size_before = path.stat().st_size
    new_size = journal.compact(path, "k", SETTINGS)
    assert new_size == path.stat().st_size < size_before
    from_start, compacted = journal.JournalReader(path).read()
    assert from_start and [e["k"] for e in compacted] == ["snapshot"]
    after = journal.replay("k", SETTINGS, compacted)
    assert after.to_json() == before.to_json()
    assert after.seq == before.seq and list(after.executions) == [f"r{n}" for n in range(20, 30)]
    assert after.executions["r29"].state == "running"
    # what comes after the snapshot goes on from its sequence numbers
    writer.append([iopub("r29", "stream", {"name": "stdout", "text": "later\n"})])
    _, entries = journal.JournalReader(path).read()
    record = journal.replay("k", SETTINGS, entries)
    last = record.executions["r29"].messages[-1]
    assert last["content"]["text"] == "later\n" and last["seq"] == before.seq + 1


def test_a_reader_starts_over_when_the_journal_was_compacted(path):
    writer = journal.JournalWriter(path)
    reader = journal.JournalReader(path)
    writer.append(run("r1", ["a\n"], finish=False))
    reader.read()
    writer.append([iopub("r1", "stream", {"name": "stdout", "text": "b\n"})])
    journal.compact(path, "k", SETTINGS)
    writer.append([iopub("r1", "stream", {"name": "stdout", "text": "c\n"})])  # reopens the new file
    from_start, entries = reader.read()
    assert from_start and entries[0]["k"] == "snapshot"
    assert texts(journal.replay("k", SETTINGS, entries), "r1") == ["a\n", "b\n", "c\n"]


def test_the_journal_stays_bounded_by_what_the_record_keeps(path):
    """A long run of printing executions: compacted whenever it doubles, the file never grows
    past twice the snapshot plus the threshold (as the recorder process does it)."""
    settings = {**SETTINGS, "max_executions": 3, "keep_finished_seconds": 1e9, "compact_bytes": 20_000}
    writer = journal.JournalWriter(path)
    compacted, largest = 0, 0
    for n in range(300):
        writer.append(run(f"r{n}", [f"line {i}\n" for i in range(20)]))
        size = path.stat().st_size
        largest = max(largest, size)
        if size > max(settings["compact_bytes"], 2 * compacted):
            compacted = journal.compact(path, "k", settings)
    assert largest < 3 * settings["compact_bytes"]
    _, entries = journal.JournalReader(path).read()
    record = journal.replay("k", settings, entries)
    assert list(record.executions) == ["r297", "r298", "r299"]
    assert texts(record, "r299") == [f"line {i}\n" for i in range(20)]


def _append_numbered(path: str, writer_name: str, count: int, halfway, resume) -> None:
    """Append ``count`` entries; at half of them, say so and wait until told to go on."""
    writer = journal.JournalWriter(path)
    for n in range(count):
        if n == count // 2:
            halfway.release()
            resume.wait()
        writer.append([{"k": "request", "t": 1.0, "msg_id": f"{writer_name}-{n}", "cell_id": None, "session": None}])


def test_two_appenders_and_compactions_lose_nothing_and_keep_each_ones_order(path):
    """Two processes append (as the recorder and the server do) while the file is compacted
    again and again: every entry of both is in the record, each writer's in its order. Both
    writers stop halfway until a compaction has run, so that at least one compaction falls
    between their writes however fast this machine runs them; the others race them."""
    settings = {**SETTINGS, "max_executions": 100_000}
    count = 1500
    context = multiprocessing.get_context("fork")
    halfway, resume = context.Semaphore(0), context.Event()
    writers = [context.Process(target=_append_numbered, args=(str(path), name, count, halfway, resume))
               for name in ("a", "b")]
    for process in writers:
        process.start()
    for _ in writers:
        assert halfway.acquire(timeout=60), "a writer never got halfway"
    journal.compact(path, "k", settings)  # both stand still, each with half its entries written
    resume.set()
    while any(process.is_alive() for process in writers):
        journal.compact(path, "k", settings)
    for process in writers:
        process.join()
        assert process.exitcode == 0
    journal.compact(path, "k", settings)  # and once after the last write
    _, entries = journal.JournalReader(path).read()
    ids = list(journal.replay("k", settings, entries).executions)
    assert len(ids) == 2 * count and len(set(ids)) == 2 * count
    for name in ("a", "b"):
        assert [i for i in ids if i.startswith(name)] == [f"{name}-{n}" for n in range(count)]


def test_the_order_in_the_file_is_the_order_applied():
    """A request note written before the kernel's execute_input names the cell; one that comes
    after (a client the server did not see first) still fills it in."""
    record = journal.replay("k", SETTINGS, run("r1", ["x\n"]))
    assert record.executions["r1"].cell_id == "c" and record.executions["r1"].state == "finished"
    late = [iopub("r2", "execute_input", {"execution_count": 2}),
            {"k": "request", "t": 1.0, "msg_id": "r2", "cell_id": "late", "session": "p"}]
    record = journal.replay("k", SETTINGS, late)
    assert record.executions["r2"].cell_id == "late"


def test_times_are_when_things_happened_not_when_they_were_read():
    record = journal.replay("k", SETTINGS, run("r1", ["x\n"]))
    execution = record.executions["r1"]
    assert execution.requested_at == T0 and execution.started_at == T0 and execution.finished_at == T0
    assert record.activity.last_run["finished_at"] == T0


def test_a_new_kernel_process_ends_the_old_ones_executions():
    entries = [{"k": "recorder", "t": 1.0, "pid": 10}, *run("r1", ["x\n"], finish=False),
               {"k": "kernel", "t": 2.0, "pid": 10},  # the same process: nothing happens
               ]
    record = journal.replay("k", SETTINGS, entries)
    assert record.executions["r1"].state == "running"
    journal.apply(record, {"k": "kernel", "t": 3.0, "pid": 11})
    assert record.executions["r1"].state == "aborted" and record.kernel_pid == 11
    assert record.activity.last_run["error"]["ename"] == "KernelRestarted"
    # the old process's recorder says it ended after the new one was noted: no news for the new one's cells
    for entry in run("r2", ["y\n"], finish=False):
        journal.apply(record, entry)
    journal.apply(record, {"k": "kernel_exited", "t": 3.5, "pid": 10})
    assert record.executions["r2"].state == "running"
    record = journal.replay("k", SETTINGS, [*entries, {"k": "kernel_exited", "t": 3.0, "pid": 10}])
    assert record.executions["r1"].state == "aborted"


def test_welcome_messages_to_new_subscribers_are_not_the_kernels_doing():
    limited = {**SETTINGS, "rate_limit": {"enabled": True, "msg_rate_limit": 1, "data_rate_limit": 0, "window": 1.0}}
    entries = run("r", [], finish=False)
    entries += [iopub("", "iopub_welcome", {"subscription": "x"}) for _ in range(5)]
    entries.append(iopub("r", "stream", {"name": "stdout", "text": "shown\n"}))
    assert texts(journal.replay("k", limited, entries), "r") == ["shown\n"]  # the welcomes did not count


def test_a_snapshot_keeps_the_rate_limit_where_it_was():
    limited = {**SETTINGS, "rate_limit": {"enabled": True, "msg_rate_limit": 10, "data_rate_limit": 0, "window": 1.0}}
    entries = run("r", [], finish=False)
    entries += [iopub("r", "stream", {"name": "stdout", "text": f"{i}\n"}, at=i / 100) for i in range(15)]
    record = journal.replay("k", limited, entries)
    copy = journal.new_record("k", limited)
    copy.restore(json.loads(json.dumps(record.snapshot())))
    tail = [iopub("r", "stream", {"name": "stdout", "text": "still limited\n"}, at=0.5),
            iopub("r", "stream", {"name": "stdout", "text": "later\n"}, at=2.0)]
    for entry in tail:
        journal.apply(record, entry)
        journal.apply(copy, entry)
    assert copy.to_json() == record.to_json()
    assert texts(copy, "r")[-1] == "later\n" and "still limited\n" not in texts(copy, "r")
    assert isinstance(copy.rate_limit, IOPubRateLimit)


def test_settings_round_trip_and_defaults(tmp_path):
    assert journal.read_settings(tmp_path) == journal.DEFAULT_SETTINGS
    journal.write_settings(tmp_path, {"max_executions": 7, "rate_limit": None})
    settings = journal.read_settings(tmp_path)
    assert settings["max_executions"] == 7 and settings["rate_limit"] is None
    assert not [p for p in os.listdir(tmp_path) if p.startswith(".")]


def test_the_folder_a_kernel_manager_passes_is_the_one_the_record_reads():
    from traitlets.config import Config

    from keepalive_jupyter.recorder import ExecutionRecorder

    config = Config()
    assert journal.configured_dir(config) == journal.DEFAULT_DIR == ExecutionRecorder.journal_dir.default_value
    config.ExecutionRecorder.journal_dir = "/somewhere/else"
    assert journal.configured_dir(config) == "/somewhere/else"
    assert ExecutionRecorder(None, config=config).journal_dir == "/somewhere/else"
