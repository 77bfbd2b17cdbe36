"""The execution record: compaction rules (unit) and GET /api/keepalive/executions with a real kernel."""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from datetime import datetime, timezone

import pytest
from tornado.httpclient import HTTPClientError

from keepalive_jupyter.executions import KernelRecord
from tests.waiting import running, wait_until


# --- the record, message by message --------------------------------------------------------


def iopub(parent: str, msg_type: str, content: dict) -> dict:
    return {
        "header": {"msg_id": uuid.uuid4().hex, "msg_type": msg_type},
        "parent_header": {"msg_id": parent},
        "content": content,
        "metadata": {},
    }


def record(**bounds) -> KernelRecord:
    settings = {"max_executions": 10, "max_execution_bytes": 1 << 20, "keep_finished_seconds": 60.0}
    settings.update(bounds)
    return KernelRecord("k", **settings)


def kinds(rec: KernelRecord, msg_id: str) -> list[str]:
    return [m["msg_type"] for m in rec.executions[msg_id].messages]


def test_request_then_outputs_then_idle():
    rec = record()
    rec.note_request("r1", "cell-a", "client-1")
    assert rec.executions["r1"].state == "queued"
    rec.on_iopub(iopub("r1", "status", {"execution_state": "busy"}))
    rec.on_iopub(iopub("r1", "execute_input", {"code": "print(1)", "execution_count": 3}))
    rec.on_iopub(iopub("r1", "stream", {"name": "stdout", "text": "1\n"}))
    rec.on_iopub(iopub("other", "stream", {"name": "stdout", "text": "not ours\n"}))
    assert rec.executions["r1"].state == "running"
    rec.on_iopub(iopub("r1", "status", {"execution_state": "idle"}))
    answer = rec.to_json()
    [execution] = answer["executions"]
    assert execution["cell_id"] == "cell-a" and execution["session"] == "client-1"
    assert execution["state"] == "finished" and execution["execution_count"] == 3
    assert [m["msg_type"] for m in execution["messages"]] == ["execute_input", "stream"]
    seqs = [m["seq"] for m in execution["messages"]]
    assert seqs == sorted(seqs) and answer["seq"] == seqs[-1]
    # `since` leaves out what was fetched already
    assert rec.to_json(since=seqs[0])["executions"][0]["messages"][0]["seq"] == seqs[1]


def test_clear_output_wait_keeps_last_frame_only():
    rec = record()
    rec.note_request("r", "c", "s")
    rec.on_iopub(iopub("r", "execute_input", {"execution_count": 1}))
    for frame in range(5):
        rec.on_iopub(iopub("r", "clear_output", {"wait": True}))
        rec.on_iopub(iopub("r", "stream", {"name": "stdout", "text": f"frame {frame}\n"}))
    # the last clear has taken effect: one pending clear message and the last frame
    assert kinds(rec, "r") == ["execute_input", "clear_output", "stream"]
    assert rec.executions["r"].messages[-1]["content"]["text"] == "frame 4\n"
    # a clear whose next output has not come yet keeps the frame that is still on screen
    rec.on_iopub(iopub("r", "clear_output", {"wait": True}))
    assert kinds(rec, "r") == ["execute_input", "clear_output", "stream", "clear_output"]
    rec.on_iopub(iopub("r", "clear_output", {"wait": False}))
    assert kinds(rec, "r") == ["execute_input", "clear_output"]


def test_display_updates_replace_earlier_updates():
    rec = record()
    rec.note_request("r", "c", "s")
    rec.on_iopub(iopub("r", "execute_input", {"execution_count": 1}))
    data = lambda v: {"data": {"text/plain": str(v)}, "metadata": {}, "transient": {"display_id": "d"}}
    rec.on_iopub(iopub("r", "display_data", data(0)))
    for value in range(1, 100):
        rec.on_iopub(iopub("r", "update_display_data", data(value)))
    assert kinds(rec, "r") == ["execute_input", "display_data", "update_display_data"]
    assert rec.executions["r"].messages[-1]["content"]["data"]["text/plain"] == "99"


def test_bytes_bound_drops_oldest_and_counts():
    rec = record(max_execution_bytes=2000)
    rec.note_request("r", "c", "s")
    rec.on_iopub(iopub("r", "execute_input", {"execution_count": 1}))
    for n in range(100):
        rec.on_iopub(iopub("r", "stream", {"name": "stdout", "text": f"line {n:04d} " + "x" * 40 + "\n"}))
    execution = rec.executions["r"]
    assert execution.total_bytes <= 2000
    assert execution.messages[0]["msg_type"] == "execute_input"
    texts = [m["content"]["text"] for m in execution.messages[1:]]
    assert texts[-1].startswith("line 0099") and execution.dropped == 100 - len(texts)


def test_executions_bound_drops_finished_first():
    rec = record(max_executions=3)
    for n in range(3):
        rec.note_request(f"r{n}", "c", "s")
    rec.on_iopub(iopub("r1", "execute_input", {"execution_count": 1}))
    rec.on_iopub(iopub("r1", "status", {"execution_state": "idle"}))
    rec.note_request("r3", "c", "s")
    assert list(rec.executions) == ["r0", "r2", "r3"]


def test_finished_executions_expire():
    rec = record(keep_finished_seconds=10)
    rec.note_request("r", "c", "s")
    rec.on_iopub(iopub("r", "execute_input", {"execution_count": 1}))
    rec.on_iopub(iopub("r", "status", {"execution_state": "idle"}))
    rec.prune(now=time.time() + 5)
    assert "r" in rec.executions
    rec.prune(now=time.time() + 11)
    assert "r" not in rec.executions


# --- the endpoint, with a real kernel and a real websocket -----------------------------------


@pytest.fixture
def kernel_id(fetch):
    response = fetch("api", "kernels", method="POST", body=json.dumps({"name": "python3"}))
    kid = json.loads(response.body)["id"]
    yield kid
    try:
        fetch("api", "kernels", kid, method="DELETE")
    except HTTPClientError:
        pass


def execute_request(code: str, cell_id: str, session: str) -> tuple[str, dict]:
    msg_id = uuid.uuid4().hex
    return msg_id, {
        "channel": "shell",
        "header": {
            "msg_id": msg_id, "msg_type": "execute_request", "session": session,
            "username": "test", "version": "5.3", "date": "2026-01-01T00:00:00Z",
        },
        "parent_header": {},
        "metadata": {"cellId": cell_id},
        "content": {"code": code, "silent": False, "store_history": True,
                    "user_expressions": {}, "allow_stdin": False, "stop_on_error": True},
        "buffers": [],
    }


def get_executions(fetch, kid, **params):
    response = fetch("api", "keepalive", "executions", params={"kernel_id": kid, **params})
    assert response.headers["Cache-Control"] == "no-store"
    return json.loads(response.body)


def finished(fetch, kid, msg_id: str) -> list[dict]:
    """[the execution] once the record has it finished, else [] (a condition for wait_until)."""
    mine = [e for e in get_executions(fetch, kid)["executions"] if e["msg_id"] == msg_id]
    return mine if mine and mine[0]["state"] == "finished" else []


def test_endpoint_records_an_execution_whose_page_went_away(fetch, jp_ws_fetch, jp_asyncio_loop, kernel_id):
    session = uuid.uuid4().hex
    ws = jp_asyncio_loop.run_until_complete(
        jp_ws_fetch("api", "kernels", kernel_id, "channels", params={"session_id": session})
    )
    code = "import time\nfor i in range(6):\n    print('tick', i, flush=True)\n    time.sleep(0.3)"
    msg_id, request = execute_request(code, "cell-42", session)
    jp_asyncio_loop.run_until_complete(ws.write_message(json.dumps(request)))
    # The page goes away at once: what follows is seen by nobody but the record.
    ws.close()

    [execution] = wait_until("the execution to finish", lambda: finished(fetch, kernel_id, msg_id), timeout=60,
                             pause=running(jp_asyncio_loop), describe=lambda: get_executions(fetch, kernel_id))
    assert execution["cell_id"] == "cell-42" and execution["session"] == session
    text = "".join(m["content"]["text"] for m in execution["messages"] if m["msg_type"] == "stream")
    assert text == "".join(f"tick {i}\n" for i in range(6))
    assert execution["messages"][0]["msg_type"] == "execute_input"
    assert execution["execution_count"] == 1


def test_endpoint_errors(fetch):
    with pytest.raises(HTTPClientError) as info:
        fetch("api", "keepalive", "executions", params={"kernel_id": "nope"})
    assert info.value.code == 404


def test_endpoint_needs_auth(fetch):
    with pytest.raises(HTTPClientError) as info:
        fetch("api", "keepalive", "executions", params={"kernel_id": "x"}, headers={"Authorization": ""})
    assert info.value.code in (401, 403)


def test_request_skipped_after_an_error_is_aborted():
    rec = record()
    rec.note_request("r1", "a", "s")
    rec.note_request("r2", "b", "s")
    rec.on_iopub(iopub("r1", "status", {"execution_state": "busy"}))
    rec.on_iopub(iopub("r1", "execute_input", {"execution_count": 1}))
    rec.on_iopub(iopub("r1", "error", {"ename": "ValueError", "evalue": "boom", "traceback": []}))
    rec.on_iopub(iopub("r1", "status", {"execution_state": "idle"}))
    assert rec.executions["r2"].state == "queued"
    # ipykernel answers a request it skips with busy/idle and no execute_input
    rec.on_iopub(iopub("r2", "status", {"execution_state": "busy"}))
    rec.on_iopub(iopub("r2", "status", {"execution_state": "idle"}))
    assert rec.executions["r1"].state == "finished"
    assert rec.executions["r2"].state == "aborted" and rec.executions["r2"].messages == []


# --- activity: busy and idle spells, runs, the tail of a running cell -------------------------


def run_cell(rec: KernelRecord, msg_id: str, outputs: list[tuple[str, dict]] = ()) -> None:
    rec.on_iopub(iopub(msg_id, "status", {"execution_state": "busy"}))
    rec.on_iopub(iopub(msg_id, "execute_input", {"execution_count": 1}))
    for msg_type, content in outputs:
        rec.on_iopub(iopub(msg_id, msg_type, content))


def test_a_run_of_several_cells_ends_once_when_nothing_is_left_waiting():
    rec = record()
    for msg_id in ("r1", "r2", "r3"):
        rec.note_request(msg_id, msg_id, "s")
    run_cell(rec, "r1", [("stream", {"name": "stdout", "text": "one\n"})])
    assert rec.activity_json()["execution_state"] == "busy"
    rec.on_iopub(iopub("r1", "status", {"execution_state": "idle"}))
    assert rec.activity.runs_finished == 0  # two more are queued
    assert rec.activity_json()["queued"] == 2
    run_cell(rec, "r2")
    rec.on_iopub(iopub("r2", "status", {"execution_state": "idle"}))
    run_cell(rec, "r3")
    rec.on_iopub(iopub("r3", "status", {"execution_state": "idle"}))
    activity = rec.activity_json()
    assert activity["execution_state"] == "idle" and activity["runs_finished"] == 1
    assert activity["last_run"]["cells"] == 3 and activity["last_run"]["outcome"] == "ok"
    assert activity["last_output_at"] is not None


def test_a_run_that_errors_says_so_and_counts_the_aborted_cells_out():
    rec = record()
    rec.note_request("r1", "a", "s")
    rec.note_request("r2", "b", "s")
    run_cell(rec, "r1", [("error", {"ename": "ValueError", "evalue": "boom", "traceback": []})])
    rec.on_iopub(iopub("r1", "status", {"execution_state": "idle"}))
    rec.on_iopub(iopub("r2", "status", {"execution_state": "busy"}))
    rec.on_iopub(iopub("r2", "status", {"execution_state": "idle"}))  # aborted: never ran
    run = rec.activity_json()["last_run"]
    assert rec.activity.runs_finished == 1
    assert run["outcome"] == "error" and run["error"] == {"ename": "ValueError", "evalue": "boom"}
    assert run["cells"] == 1
    assert run["tail"] == ["ValueError: boom"]  # the last lines of the cell that ended it


def dated(msg: dict, date: str) -> dict:
    msg["header"]["date"] = date
    return msg


def test_a_runs_length_is_the_kernels_own_busy_to_idle_however_late_they_are_read():
    rec = record()
    rec.note_request("r1", "a", "s")
    # read late (the journal's time says 20:00:10), sent 4 s apart by the kernel
    rec.replay_time = 1796587210.0  # 2026-12-06T20:00:10Z
    rec.on_iopub(dated(iopub("r1", "status", {"execution_state": "busy"}), "2026-12-06T20:00:01.000000Z"))
    rec.on_iopub(dated(iopub("r1", "execute_input", {"execution_count": 1}), "2026-12-06T20:00:01.001000+00:00"))
    rec.replay_time = 1796587210.5
    rec.on_iopub(dated(iopub("r1", "status", {"execution_state": "idle"}), "2026-12-06T20:00:05.002000Z"))
    run = rec.activity_json()["last_run"]
    assert run["busy_seconds"] == 4.002
    assert run["started_at"] == datetime(2026, 12, 6, 20, 0, 1, tzinfo=timezone.utc).timestamp()


@pytest.mark.parametrize(
    "busy, idle, seconds",
    [(None, None, 3.0),  # no dates: when they were read
     ("not a date", "2026-12-06T20:00:14Z", 4.0),  # from when busy was read to when the kernel went idle
     ("2026-12-06T20:00:09Z", "2026-12-06T20:00:05Z", 0.0)],  # a kernel's dates are its word: never below 0
    ids=["undated", "unreadable", "idle-before-busy"],
)
def test_a_kernel_without_good_dates_gets_a_run_length_all_the_same(busy, idle, seconds):
    rec = record()
    rec.note_request("r1", "a", "s")
    rec.replay_time = 1796587210.0  # 2026-12-06T20:00:10Z
    rec.on_iopub(dated(iopub("r1", "status", {"execution_state": "busy"}), busy))
    rec.on_iopub(dated(iopub("r1", "execute_input", {"execution_count": 1}), busy))
    rec.replay_time = 1796587213.0
    rec.on_iopub(dated(iopub("r1", "status", {"execution_state": "idle"}), idle))
    assert rec.activity_json()["last_run"]["busy_seconds"] == seconds


def test_the_tail_of_a_running_cell_is_its_last_lines_as_a_terminal_shows_them():
    rec = record()
    rec.note_request("r1", "cell-a", "s")
    lines = [("stream", {"name": "stdout", "text": f"line {i}\n"}) for i in range(8)]
    run_cell(rec, "r1", [*lines, ("stream", {"name": "stdout", "text": "10%\r50%\r90%"})])
    running = rec.activity_json()["running"]
    assert running["cell_id"] == "cell-a" and running["execution_count"] == 1
    assert running["tail"] == ["line 4", "line 5", "line 6", "line 7", "90%"]


def test_activity_endpoint_lists_kernels(fetch, kernel_id):
    def listed() -> list:
        return [k for k in json.loads(fetch("api", "keepalive", "activity").body)["kernels"] if k["kernel_id"] == kernel_id]

    mine = wait_until("the kernel in the activity", listed, timeout=30)
    assert mine[0]["execution_state"] == "idle" and mine[0]["running"] is None


def test_an_activity_request_with_after_waits_for_a_change(fetch, jp_fetch, jp_asyncio_loop):
    """``after``: the answer comes when the activity differs from that version, not before."""
    first = json.loads(fetch("api", "keepalive", "activity").body)
    # nothing changes: the answer comes once the wait is over, with the same version
    unchanged = json.loads(fetch("api", "keepalive", "activity", params={"after": first["version"], "wait": "0.5"}).body)
    assert unchanged["version"] == first["version"] and unchanged["kernels"] == first["kernels"]

    async def kernel_started_while_waiting():
        waiting = asyncio.ensure_future(
            jp_fetch("api", "keepalive", "activity", params={"after": first["version"], "wait": "120"})
        )
        await asyncio.sleep(0)
        assert not waiting.done()
        started = await jp_fetch("api", "kernels", method="POST", body=json.dumps({"name": "python3"}))
        return json.loads(started.body)["id"], json.loads((await waiting).body)

    kernel_id, changed = jp_asyncio_loop.run_until_complete(kernel_started_while_waiting())
    try:
        assert changed["version"] != first["version"]
        assert kernel_id in [k["kernel_id"] for k in changed["kernels"]]
    finally:
        fetch("api", "kernels", kernel_id, method="DELETE")


@pytest.mark.parametrize("wait", ["soon", "nan", "inf"])
def test_an_activity_wait_that_is_not_a_number_of_seconds_is_400(fetch, wait):
    with pytest.raises(HTTPClientError) as refused:
        fetch("api", "keepalive", "activity", params={"after": "x", "wait": wait})
    assert refused.value.code == 400 and "wait" in str(refused.value.response.body)


# --- input(): asked again by a page that did not start the execution -------------------------


def input_request(parent: str, prompt: str, password: bool = False) -> dict:
    message = iopub(parent, "input_request", {"prompt": prompt, "password": password})
    message["header"]["session"] = "kernel-session"
    return message


def test_input_request_is_pending_until_answered_then_shown_as_answered():
    rec = record()
    rec.note_request("r1", "cell-a", "client-1")
    rec.on_iopub(iopub("r1", "execute_input", {"execution_count": 1}))
    asked = input_request("r1", "Name?")
    rec.on_input_request(asked)
    pending = rec.to_json()["executions"][0]["input_request"]
    assert pending["prompt"] == "Name?" and pending["password"] is False
    assert pending["header"]["msg_id"] == asked["header"]["msg_id"]

    rec.on_input_reply("reply-1", "some-other-request", "ignored")
    assert rec.executions["r1"].input_request is not None

    rec.on_input_reply("reply-1", asked["header"]["msg_id"], "Ada")
    execution = rec.to_json()["executions"][0]
    assert execution["input_request"] is None
    [answer] = [m for m in execution["messages"] if m["msg_type"] == "stream"]
    assert answer["content"] == {"name": "stdin", "text": "Name? Ada\n"}
    assert answer["metadata"] == {"keepalive_input_request": asked["header"]["msg_id"]}


def test_the_activity_says_what_a_running_cell_asks_and_a_watcher_hears_of_it():
    rec = record()
    rec.note_request("r1", "cell-a", "client-1")
    run_cell(rec, "r1")
    before = rec.activity_mark()
    assert rec.activity_json()["running"]["input"] is None
    asked = input_request("r1", "token?", password=True)
    rec.on_input_request(asked)
    assert rec.activity_json()["running"]["input"] == {"prompt": "token?", "password": True}
    assert rec.activity_mark() != before, "a held activity look would not be answered"
    asking = rec.activity_mark()
    rec.on_input_reply("reply-1", asked["header"]["msg_id"], "hunter2")
    assert rec.activity_json()["running"]["input"] is None and rec.activity_mark() != asking


def test_a_password_answer_is_never_recorded():
    rec = record()
    asked = input_request("r1", "Password:", password=True)
    rec.on_input_request(asked)
    rec.on_input_reply("reply-1", asked["header"]["msg_id"], "hunter2")
    text = json.dumps(rec.to_json())
    assert "hunter2" not in text
    assert "Password: \u00b7\u00b7\u00b7\u00b7\u00b7\u00b7\u00b7\u00b7\n" in json.loads(text)["executions"][0]["messages"][0]["content"]["text"]


def test_an_unanswered_request_ends_with_its_execution():
    rec = record()
    rec.note_request("r1", "a", "s")
    rec.on_iopub(iopub("r1", "execute_input", {"execution_count": 1}))
    rec.on_input_request(input_request("r1", "Name?"))
    rec.on_iopub(iopub("r1", "status", {"execution_state": "idle"}))
    assert rec.executions["r1"].input_request is None


def test_a_new_page_answers_an_input_asked_after_the_old_one_went(fetch, jp_ws_fetch, jp_asyncio_loop, kernel_id):
    """The request reaches the kernel's stdin after the first websocket closed (jupyter_server
    buffers it for that page's session key); a page with another key answers it."""
    run = jp_asyncio_loop.run_until_complete
    first = uuid.uuid4().hex
    ws = run(jp_ws_fetch("api", "kernels", kernel_id, "channels", params={"session_id": first}))
    msg_id, request = execute_request("import time\ntime.sleep(1)\nname = input('Name?')\nprint('hello', name)", "cell-7", first)
    request["content"]["allow_stdin"] = True
    run(ws.write_message(json.dumps(request)))
    ws.close()

    def execution() -> dict:
        # {} until the server has passed the request on (the websocket closed right after it)
        return next((e for e in get_executions(fetch, kernel_id)["executions"] if e["msg_id"] == msg_id), {})

    pending = wait_until("the input request in the record", lambda: execution().get("input_request"), timeout=60,
                         pause=running(jp_asyncio_loop), describe=execution)
    assert pending["prompt"] == "Name?"

    second = uuid.uuid4().hex
    ws = run(jp_ws_fetch("api", "kernels", kernel_id, "channels", params={"session_id": second}))
    reply = {
        "channel": "stdin",
        "header": {"msg_id": uuid.uuid4().hex, "msg_type": "input_reply", "session": second,
                   "username": "test", "version": "5.3", "date": "2026-01-01T00:00:00Z"},
        "parent_header": pending["header"],
        "metadata": {},
        "content": {"status": "ok", "value": "keepalive"},
        "buffers": [],
    }
    run(ws.write_message(json.dumps(reply)))
    done = wait_until("the execution to finish", lambda: (e := execution())["state"] == "finished" and e, timeout=60,
                      pause=running(jp_asyncio_loop), describe=execution)
    ws.close()
    text = "".join(m["content"]["text"] for m in done["messages"] if m["msg_type"] == "stream")
    assert text == "Name? keepalive\nhello keepalive\n"
    assert done["input_request"] is None


def input_reply(session: str, request: dict, value: str) -> dict:
    return {
        "channel": "stdin",
        "header": {"msg_id": uuid.uuid4().hex, "msg_type": "input_reply", "session": session,
                   "username": "test", "version": "5.3", "date": "2026-01-01T00:00:00Z"},
        "parent_header": request["header"],
        "metadata": {},
        "content": {"status": "ok", "value": value},
        "buffers": [],
    }


@pytest.mark.parametrize("order", ["old-closes-first", "new-connects-first"])
def test_an_input_asked_after_a_new_page_connected_still_reaches_the_record(
    fetch, jp_ws_fetch, jp_asyncio_loop, kernel_id, order
):
    """The kernel sends an input request to the stdin socket of the connection whose page ran
    the cell. When that page is gone and another one has connected before the kernel asks (a
    browser that came back quickly), jupyter_server has closed the old connection's sockets:
    the request would reach nobody, and the kernel would wait for ever."""
    import asyncio

    run = jp_asyncio_loop.run_until_complete
    first, second = uuid.uuid4().hex, uuid.uuid4().hex
    ws = run(jp_ws_fetch("api", "kernels", kernel_id, "channels", params={"session_id": first}))
    code = "import time\ntime.sleep(3)\nname = input('Name?')\nprint('hello', name)"
    msg_id, request = execute_request(code, "cell-8", first)
    request["content"]["allow_stdin"] = True
    run(ws.write_message(json.dumps(request)))

    def execution() -> dict:
        return next((e for e in get_executions(fetch, kernel_id)["executions"] if e["msg_id"] == msg_id), {})

    wait_until("the cell to run", lambda: execution().get("state") == "running", timeout=30, every=0.1,
               pause=running(jp_asyncio_loop), describe=execution)
    if order == "old-closes-first":
        ws.close()
        run(asyncio.sleep(0.3))  # the server handles the close (it buffers for the old page)
        ws2 = run(jp_ws_fetch("api", "kernels", kernel_id, "channels", params={"session_id": second}))
    else:
        ws2 = run(jp_ws_fetch("api", "kernels", kernel_id, "channels", params={"session_id": second}))
        ws.close()
    assert execution().get("input_request") is None  # the kernel has not asked yet

    pending = wait_until("the input request in the record", lambda: execution().get("input_request"), timeout=20,
                         pause=running(jp_asyncio_loop), describe=execution)
    assert pending["prompt"] == "Name?"
    run(ws2.write_message(json.dumps(input_reply(second, pending, "keepalive"))))
    done = wait_until("the execution to finish", lambda: (e := execution())["state"] == "finished" and e, timeout=20,
                      pause=running(jp_asyncio_loop), describe=execution)
    ws2.close()
    text = "".join(m["content"]["text"] for m in done["messages"] if m["msg_type"] == "stream")
    assert text == "Name? keepalive\nhello keepalive\n"


def kernel_info_request(session: str) -> tuple[str, dict]:
    msg_id = uuid.uuid4().hex
    return msg_id, {
        "channel": "shell",
        "header": {"msg_id": msg_id, "msg_type": "kernel_info_request", "session": session,
                   "username": "test", "version": "5.3", "date": "2026-01-01T00:00:00Z"},
        "parent_header": {}, "metadata": {}, "content": {}, "buffers": [],
    }


def test_a_page_that_connects_while_a_cell_runs_gets_kernel_info_at_once(fetch, jp_ws_fetch, jp_asyncio_loop, kernel_id):
    """The kernel answers shell requests only between cells; the server answers kernel_info for
    it (with the kernel's own earlier answer), then says the kernel is still busy."""
    import asyncio

    run = jp_asyncio_loop.run_until_complete

    async def reply_to(ws, msg_id: str, timeout: float) -> tuple[dict, list[dict]]:
        """The shell reply to msg_id, and the iopub messages seen on the way."""
        seen = []
        deadline = time.monotonic() + timeout
        while True:
            raw = await asyncio.wait_for(ws.read_message(), max(0.1, deadline - time.monotonic()))
            msg = json.loads(raw)
            if msg["channel"] == "iopub":
                seen.append(msg)
            elif msg["parent_header"].get("msg_id") == msg_id:
                return msg, seen

    first = uuid.uuid4().hex
    ws = run(jp_ws_fetch("api", "kernels", kernel_id, "channels", params={"session_id": first}))
    info_id, request = kernel_info_request(first)
    run(ws.write_message(json.dumps(request)))
    original, _ = run(reply_to(ws, info_id, 30))
    msg_id, request = execute_request("import time\ntime.sleep(20)", "cell-1", first)
    run(ws.write_message(json.dumps(request)))
    wait_until("the cell to run", lambda: [e for e in get_executions(fetch, kernel_id)["executions"]
                                           if e["msg_id"] == msg_id and e["state"] == "running"],
               timeout=30, every=0.1, pause=running(jp_asyncio_loop))

    second = uuid.uuid4().hex
    ws2 = run(jp_ws_fetch("api", "kernels", kernel_id, "channels", params={"session_id": second}))
    info_id, request = kernel_info_request(second)
    run(ws2.write_message(json.dumps(request)))
    reply, iopub = run(reply_to(ws2, info_id, 5))  # the cell has 20 s to go
    assert reply["header"]["msg_type"] == "kernel_info_reply"
    assert reply["content"]["protocol_version"] == original["content"]["protocol_version"]
    assert "kernel subshells" in reply["content"].get("supported_features", [])
    states = [(m["parent_header"].get("msg_id"), m["content"]["execution_state"]) for m in iopub if m["msg_type"] == "status"]
    def cell_busy() -> bool:
        """Reads the next message: true once the kernel said it is still busy with the cell."""
        if (msg_id, "busy") not in states:
            msg = json.loads(run(asyncio.wait_for(ws2.read_message(), 5)))
            if msg["channel"] == "iopub" and msg["msg_type"] == "status":
                states.append((msg["parent_header"].get("msg_id"), msg["content"]["execution_state"]))
        return (msg_id, "busy") in states

    wait_until("the kernel still busy with the cell", cell_busy, timeout=5, every=0, describe=lambda: states)
    assert (info_id, "idle") in states and states.index((info_id, "idle")) < states.index((msg_id, "busy"))

    # comms go to keepalive's subshell for the kernel, which answers while the cell runs
    comm_id = uuid.uuid4().hex
    request = {
        "channel": "shell",
        "header": {"msg_id": comm_id, "msg_type": "comm_info_request", "session": second,
                   "username": "test", "version": "5.3", "date": "2026-01-01T00:00:00Z"},
        "parent_header": {}, "metadata": {}, "content": {}, "buffers": [],
    }
    run(ws2.write_message(json.dumps(request)))
    reply, _ = run(reply_to(ws2, comm_id, 5))
    assert reply["header"]["msg_type"] == "comm_info_reply" and reply["content"]["status"] == "ok"
    assert [e for e in get_executions(fetch, kernel_id)["executions"] if e["msg_id"] == msg_id][0]["state"] == "running"
    ws.close()
    ws2.close()
    fetch("api", "kernels", kernel_id, "interrupt", method="POST", body="")


def test_a_kernel_that_dies_mid_run_ends_its_run(fetch, jp_ws_fetch, jp_asyncio_loop, kernel_id, jp_serverapp):
    """jupyter_client starts a dead kernel again, saying nothing of the cell it ran: the record
    notices the new process and ends the run (as an error), so the kernel shows idle."""
    import os
    import signal

    session = uuid.uuid4().hex
    ws = jp_asyncio_loop.run_until_complete(
        jp_ws_fetch("api", "kernels", kernel_id, "channels", params={"session_id": session})
    )
    msg_id, request = execute_request("import time\ntime.sleep(60)", "cell-dies", session)
    jp_asyncio_loop.run_until_complete(ws.write_message(json.dumps(request)))

    def mine():
        return [e for e in get_executions(fetch, kernel_id)["executions"] if e["msg_id"] == msg_id]

    wait_until("the cell to run", lambda: mine() and mine()[0]["state"] == "running", pause=running(jp_asyncio_loop),
               describe=mine)
    manager = jp_serverapp.web_app.settings["keepalive_execution_recorder"].kernel_manager
    os.kill(manager.get_kernel(kernel_id).provisioner.pid, signal.SIGKILL)
    wait_until("the record to end the execution", lambda: mine()[0]["state"] == "aborted",
               pause=running(jp_asyncio_loop), describe=mine)
    [kernel] = [k for k in json.loads(fetch("api", "keepalive", "activity").body)["kernels"] if k["kernel_id"] == kernel_id]
    assert kernel["execution_state"] == "idle" and kernel["last_run"]["error"]["ename"] == "KernelRestarted"
    ws.close()


# --- jupyter_server's IOPub rate limit --------------------------------------------------------


def test_the_record_keeps_what_the_rate_limit_lets_through_and_its_notice():
    from keepalive_jupyter.executions import IOPubRateLimit

    rec = KernelRecord("k", 10, 1 << 24, 60.0, IOPubRateLimit(msg_rate_limit=10, data_rate_limit=0, window=1.0))
    rec.note_request("r", "c", "s")
    rec.on_iopub(iopub("r", "execute_input", {"code": "", "execution_count": 1}), now=0.0)
    for i in range(15):  # 15 messages in the first 0.15 s: over 10/s in a 1 s window after 10
        rec.on_iopub(iopub("r", "stream", {"name": "stdout", "text": f"{i}\n"}), now=i / 100)
    rec.on_iopub(iopub("r", "stream", {"name": "stdout", "text": "later\n"}), now=1.5)  # the window is empty again
    texts = [m["content"].get("text") for m in rec.executions["r"].messages[1:]]
    assert texts[:10] == [f"{i}\n" for i in range(10)]
    assert texts[10].startswith("IOPub message rate exceeded.") and "iopub_msg_rate_limit=10" in texts[10]
    assert rec.executions["r"].messages[11]["content"]["name"] == "stderr"
    assert texts[11:] == ["later\n"]


def test_an_idle_kernel_starts_the_rate_limit_afresh_and_it_can_be_off():
    from keepalive_jupyter.executions import IOPubRateLimit

    rec = KernelRecord("k", 10, 1 << 24, 60.0, IOPubRateLimit(msg_rate_limit=1, data_rate_limit=0, window=1.0))
    for run in ("r1", "r2"):
        rec.note_request(run, "c", "s")
        rec.on_iopub(iopub(run, "execute_input", {"code": "", "execution_count": 1}), now=0.0)
        rec.on_iopub(iopub(run, "stream", {"name": "stdout", "text": "a\n"}), now=0.0)
        rec.on_iopub(iopub(run, "stream", {"name": "stdout", "text": "b\n"}), now=0.0)
        rec.on_iopub(iopub(run, "status", {"execution_state": "idle"}), now=0.0)
        assert [m["content"].get("text", "")[:4] for m in rec.executions[run].messages[1:]] == ["a\n", "IOPu"]
    off = record()  # no limit given: everything is kept
    off.note_request("r", "c", "s")
    for i in range(5000):
        off.on_iopub(iopub("r", "stream", {"name": "stdout", "text": "x"}), now=0.0)
    assert len(off.executions["r"].messages) == 5000


def test_the_rate_limit_drops_exactly_what_jupyter_servers_own_drops(monkeypatch):
    """The same messages at the same times through jupyter_server's own limit (as a websocket
    applies it) and through the record's: the same ones are sent, the same notices written."""
    from jupyter_server.services.kernels.connection import channels
    from traitlets.config import Config

    from keepalive_jupyter.executions import IOPubRateLimit
    from keepalive_jupyter.recorder import iopub_rate_limit

    clock = [0.0]

    class Loop:
        @staticmethod
        def current():
            return Loop

        @staticmethod
        def time():
            return clock[0]

    monkeypatch.setattr(channels, "IOLoop", Loop)
    config = Config()
    config.ZMQChannelsWebsocketConnection.iopub_msg_rate_limit = 50.0
    config.ZMQChannelsWebsocketConnection.iopub_data_rate_limit = 2000.0
    config.ZMQChannelsWebsocketConnection.rate_limit_window = 0.5
    connection = channels.ZMQChannelsWebsocketConnection(config=config)
    notices: list[str] = []
    connection.write_stderr = lambda text, parent: notices.append(text + "\n")
    settings = iopub_rate_limit(channels.ZMQChannelsWebsocketConnection, config)
    assert settings == {"enabled": True, "msg_rate_limit": 50.0, "data_rate_limit": 2000.0, "window": 0.5}
    rec = KernelRecord("k", 10, 1 << 24, 60.0, IOPubRateLimit(**settings))
    rec.note_request("r", "c", "s")
    rec.on_iopub(iopub("r", "execute_input", {"code": "", "execution_count": 1}), now=0.0)

    sent_by_server = []
    # bursts of short and long lines, display data and comm messages, with pauses between them
    steps = [(i * 0.001, "stream", "x" * (1 + (i % 7) * 20)) for i in range(300)]
    steps += [(1.0 + i * 0.002, "display_data", "") for i in range(100)]
    steps += [(1.5 + i * 0.01, "comm_msg", "") for i in range(50)]
    steps += [(3.0 + i * 0.003, "stream", "y" * 90) for i in range(300)]
    for n, (when, msg_type, text) in enumerate(steps):
        clock[0] = when
        content = {"name": "stdout", "text": text} if msg_type == "stream" else {"data": {"text/plain": str(n)}}
        msg = iopub("r", msg_type, content)
        msg["content"]["n"] = n
        parts = [json.dumps(msg[key]).encode() for key in ("header", "parent_header", "metadata", "content")]
        if not connection._limit_rate("iopub", {"header": msg["header"], "parent_header": msg["parent_header"],
                                                 "content": msg["content"]}, parts):
            sent_by_server.append(n)
        rec.on_iopub(msg, size=sum(len(p) for p in parts), now=when)
    recorded = [m for m in rec.executions["r"].messages[1:]]
    kept = [m["content"]["n"] for m in recorded if "n" in m["content"]]
    assert kept == [n for n in sent_by_server if steps[n][1] != "comm_msg"]  # comms are not outputs
    assert 0 < len(sent_by_server) < len(steps)
    assert [m["content"]["text"] for m in recorded if m["content"].get("name") == "stderr"] == notices
    assert len(notices) >= 2


#: The burst test's limit, low enough that any machine's kernel passes it (the default, 1000
#: messages/s over 3 s, is more than a slow machine's kernel prints).
LOW_IOPUB_LIMIT = {"jupyter_server_config.json": json.dumps(
    {"ServerApp": {"iopub_msg_rate_limit": 100, "rate_limit_window": 3}})}


@pytest.mark.parametrize("config_files", [LOW_IOPUB_LIMIT], ids=["100-per-s"])
def test_a_burst_past_the_rate_limit_is_recorded_as_a_page_would_get_it(fetch, jp_ws_fetch, jp_asyncio_loop, kernel_id):
    """A real kernel prints 5000 lines as fast as it can while no page is connected: the record
    holds what the server's rate limit (set low here: 100 messages/s over 3 s) would have let
    through to a page, and the server's notice, not all 5000 lines."""
    session = uuid.uuid4().hex
    ws = jp_asyncio_loop.run_until_complete(
        jp_ws_fetch("api", "kernels", kernel_id, "channels", params={"session_id": session})
    )
    msg_id, request = execute_request("for i in range(5000):\n    print(i, flush=True)", "cell-1", session)
    jp_asyncio_loop.run_until_complete(ws.write_message(json.dumps(request)))

    async def taken() -> None:
        while json.loads(await ws.read_message())["parent_header"].get("msg_id") != msg_id:
            pass

    # the page goes once the kernel has the request: closed at once, the request went with the
    # connection on a loaded machine (a CI run: nothing ran, the record stayed empty)
    jp_asyncio_loop.run_until_complete(asyncio.wait_for(taken(), 60))
    ws.close()
    mine = wait_until("the execution to finish", lambda: finished(fetch, kernel_id, msg_id), timeout=120,
                      pause=running(jp_asyncio_loop))
    streams = [m["content"] for m in mine[0]["messages"] if m["msg_type"] == "stream"]
    printed = [int(n) for s in streams if s["name"] == "stdout" for n in s["text"].split()]
    assert printed == sorted(set(printed)) and 0 < len(printed) < 5000, len(printed)
    assert any(s["name"] == "stderr" and s["text"].startswith("IOPub message rate exceeded.") for s in streams)


def test_a_new_pages_own_requests_do_not_start_the_rate_limit_afresh():
    """The idle status of a comm or kernel info request (a recovered page asks those while the
    cell runs) leaves the count as it is; the idle of an execution clears it."""
    from keepalive_jupyter.executions import IOPubRateLimit

    rec = KernelRecord("k", 10, 1 << 24, 60.0, IOPubRateLimit(msg_rate_limit=1, data_rate_limit=0, window=1.0))
    rec.note_request("r", "c", "s")
    rec.on_iopub(iopub("r", "stream", {"name": "stdout", "text": "a\n"}), now=0.0)
    for parent_type in ("comm_info_request", "kernel_info_request", "debug_request"):
        idle = iopub("other", "status", {"execution_state": "idle"})
        idle["parent_header"]["msg_type"] = parent_type
        rec.on_iopub(idle, now=0.0)
    rec.on_iopub(iopub("r", "stream", {"name": "stdout", "text": "b\n"}), now=0.0)
    texts = [m["content"]["text"] for m in rec.executions["r"].messages]
    assert texts[0] == "a\n" and texts[1].startswith("IOPub message rate exceeded.") and len(texts) == 2
    done = iopub("r", "status", {"execution_state": "idle"})
    done["parent_header"]["msg_type"] = "execute_request"
    rec.on_iopub(done, now=0.0)
    rec.note_request("r2", "c", "s")
    rec.on_iopub(iopub("r2", "stream", {"name": "stdout", "text": "c\n"}), now=0.0)
    assert [m["content"]["text"] for m in rec.executions["r2"].messages] == ["c\n"]
