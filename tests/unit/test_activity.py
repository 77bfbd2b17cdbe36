"""The activity watcher's run bookkeeping and the webhook's delivery, against a real local receiver."""

from __future__ import annotations

import asyncio
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import SimpleNamespace

import pytest

from keepalive.engine import webhook
from keepalive.engine.activity import ActivityWatcher
from keepalive.engine.events import EventHub
from tests.waiting import wait_until_async


class Receiver:
    """A webhook receiver on loopback answering with the given statuses in turn (then 200)."""

    def __init__(self, statuses: list[int]):
        self.statuses = list(statuses)
        self.bodies: list[dict] = []
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                receiver.bodies.append(json.loads(self.rfile.read(int(self.headers["Content-Length"]))))
                self.send_response(receiver.statuses.pop(0) if receiver.statuses else 200)
                self.end_headers()

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def receiver(request):
    made = []

    def make(statuses=()):
        made.append(Receiver(statuses))
        return made[-1]

    yield make
    for r in made:
        r.close()


async def test_a_failing_receiver_is_retried_until_it_takes_the_call(receiver):
    hook = receiver([500, 503])
    assert await webhook.deliver(hook.url, {"event": "run_finished", "outcome": "ok"}, "s1", backoff=(0.01, 0.01, 0.01))
    assert len(hook.bodies) == 3 and hook.bodies[-1] == {"event": "run_finished", "outcome": "ok"}


async def test_a_receiver_that_refuses_is_not_asked_again(receiver):
    hook = receiver([404])
    assert not await webhook.deliver(hook.url, {"event": "run_finished"}, "s1", backoff=(0.01, 0.01))
    assert len(hook.bodies) == 1


async def test_an_unreachable_receiver_is_given_up_after_the_backoff(receiver, caplog):
    hook = receiver()
    url = hook.url
    hook.close()
    assert not await webhook.deliver(url, {"event": "run_finished"}, "s1", backoff=(0.01, 0.01))
    assert "gave up" in caplog.text and url not in caplog.text  # the URL is a secret


def kernel(runs: int, outcome: str = "ok", busy: float = 5.0) -> dict:
    last = None if runs == 0 else {
        "started_at": 1000.0, "finished_at": 1000.0 + busy, "busy_seconds": busy, "cells": 1,
        "outcome": outcome, "error": {"ename": "ValueError", "evalue": "boom"} if outcome == "error" else None,
    }
    return {"kernel_id": "k1", "execution_state": "idle", "runs_finished": runs, "last_run": last}


async def test_each_run_is_announced_once_and_the_webhook_only_for_long_runs_or_errors(receiver):
    hook = receiver()
    session = SimpleNamespace(id="s1", name="alice", webhook_url=hook.url, webhook_min_busy=3.0)
    hub = EventHub()
    watcher = ActivityWatcher(session, hub)
    with hub.listen("s1") as events:
        watcher._notice_runs([kernel(2)], {"k1": "a.ipynb"})  # the first look: earlier runs are not news
        assert events.empty()
        watcher._notice_runs([kernel(3)], {"k1": "a.ipynb"})
        watcher._notice_runs([kernel(3)], {"k1": "a.ipynb"})  # seen already
        watcher._notice_runs([kernel(4, busy=1.0)], {"k1": "a.ipynb"})  # short: event, no webhook
        watcher._notice_runs([kernel(5, outcome="error", busy=1.0)], {"k1": "a.ipynb"})  # error: webhook
        await asyncio.gather(*watcher.deliveries)
        announced = [events.get_nowait() for _ in range(events.qsize())]
    assert [e.kind for e in announced] == ["run_finished"] * 3
    assert [e.data["outcome"] for e in announced] == ["ok", "ok", "error"]
    assert sorted(b["outcome"] for b in hook.bodies) == ["error", "ok"]  # two deliveries, side by side
    first = next(b for b in hook.bodies if b["outcome"] == "ok")
    assert first["session"] == {"id": "s1", "name": "alice"} and first["notebook"] == "a.ipynb"
    assert first["busy_seconds"] == 5.0 and first["finished_at"].startswith("1970-01-01T00:16:45")


async def test_a_kernel_that_appears_later_has_all_its_runs_announced():
    session = SimpleNamespace(id="s1", name="alice", webhook_url=None, webhook_min_busy=0.0)
    hub = EventHub()
    watcher = ActivityWatcher(session, hub)
    with hub.listen("s1") as events:
        watcher._notice_runs([], {})
        watcher._notice_runs([kernel(1)], {"k1": None})
        assert events.get_nowait().kind == "run_finished"


async def test_a_kernel_lost_with_its_server_is_told_once_and_only_to_a_ready_session(receiver):
    """The Jupyter side lists a kernel it could not take back: one ``kernel_died`` (event, webhook,
    notice), once the session is ready; one lost before a restore is the restore's to tell."""
    from datetime import UTC, datetime

    from keepalive.models import SessionRestored, SessionState

    hook = receiver()
    notices: list[str] = []

    async def notify(text: str) -> None:
        notices.append(text)

    session = SimpleNamespace(id="s1", name="alice", webhook_url=hook.url, webhook_min_busy=0.0,
                              state=SessionState.recovering, notify=notify)
    hub = EventHub()
    watcher = ActivityWatcher(session, hub)
    lost = [{"kernel_id": "k1", "notebook": "work/a.ipynb", "pid": 42, "why": "its process ended",
             "found_at": 1000.0}]
    with hub.listen("s1") as events:
        watcher._notice_lost(lost)  # recovering: its page is about to be replaced
        assert events.empty()
        session.state = SessionState.ready
        watcher._notice_lost(lost)
        watcher._notice_lost(lost)  # told already
        await asyncio.gather(*watcher.deliveries, *watcher._notices)
        (event,) = [events.get_nowait() for _ in range(events.qsize())]
    assert event.kind == "kernel_died"
    assert event.data["reason"] == "ended while its Jupyter server was down"
    assert (event.data["kernel_id"], event.data["notebook"]) == ("k1", "work/a.ipynb")
    assert notices == ["the kernel of work/a.ipynb ended while the Jupyter server was down; "
                       "a new kernel starts with nothing in memory"]
    assert [b["event"] for b in hook.bodies] == ["kernel_died"]

    restored = SessionRestored.model_construct(restored_at=datetime.fromtimestamp(2000.0, UTC))
    watcher._restored = restored
    with hub.listen("s1") as events:
        watcher._notice_lost([{**lost[0], "kernel_id": "k2", "found_at": 1500.0}])
        assert events.empty()


async def test_a_kernel_death_is_in_the_activity_as_soon_as_its_event_is_out():
    """Whoever hears ``kernel_died`` and then reads the session finds the death in its activity,
    even when the look that noticed it fails before its end (the server busy with the OOM)."""
    from datetime import UTC, datetime

    from keepalive.models import Activity, KernelDeath

    async def notify(text: str) -> None:
        pass

    session = SimpleNamespace(id="s1", name="alice", webhook_url=None, notify=notify)
    hub = EventHub()
    watcher = ActivityWatcher(session, hub)
    watcher.latest = Activity(busy=True, kernels=[], updated_at=datetime.now(UTC))
    death = KernelDeath(kernel_id=None, notebook=None, reason="out of memory", limit=2**30,
                        message="the kernel was stopped: out of memory at 1 GiB", at=datetime.now(UTC))
    with hub.listen("s1") as events:
        watcher._announce_death(death)
        await asyncio.gather(*watcher._notices)
        kinds = [events.get_nowait().kind for _ in range(events.qsize())]
    assert kinds == ["kernel_died", "activity"]
    assert watcher.latest.kernel_died == death and watcher.latest.busy is True


class FakeExtension:
    """keepalive_jupyter's activity route on loopback: answers a look with ``after`` only when the
    test says the activity changed (``change``) or the watcher gives up on it."""

    def __init__(self):
        self.version = "v1"
        self.state = "idle"
        self.runs = 0  # the kernel's runs_finished
        self.looks: list[dict] = []  # each look's query
        self.changed = threading.Event()
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):
                from urllib.parse import parse_qs, urlsplit

                query = {k: v[0] for k, v in parse_qs(urlsplit(self.path).query).items()}
                fake.looks.append(query)
                if query.get("after") == fake.version:
                    fake.changed.wait(float(query["wait"]))
                body = json.dumps({"version": fake.version, "lost": [], "notebooks": {"k1": "a.ipynb"},
                                   "kernels": [{"kernel_id": "k1", "execution_state": fake.state,
                                                "runs_finished": fake.runs}]}).encode()
                try:
                    self.send_response(200)
                    self.send_header("Content-Length", str(len(body)))
                    self.end_headers()
                    self.wfile.write(body)
                except OSError:
                    pass  # the watcher gave this look up

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def change(self, state: str, version: str, runs: int | None = None) -> None:
        self.state, self.version = state, version
        self.runs = self.runs if runs is None else runs
        self.changed.set()
        self.changed = threading.Event()

    def close(self):
        self.changed.set()
        self.server.shutdown()
        self.server.server_close()


async def test_an_idle_session_is_looked_at_once_then_told_of_changes_and_woken_on_demand():
    """No poll while nothing changes: one look, then one held look that the server answers when
    a kernel goes busy; ``wake`` (the session is ready again) gives up a held look for a new one."""
    from keepalive.models import SessionState

    server = FakeExtension()
    oom_reads = []
    session = SimpleNamespace(
        id="s1", name="alice", webhook_url=None, webhook_min_busy=0.0, state=SessionState.ready,
        settings=SimpleNamespace(activity_interval=0.02),
        endpoint=SimpleNamespace(url=server.url, auth_headers={}),
        containment=SimpleNamespace(oom_kills=lambda: oom_reads.append(1) or 0, memory_max=lambda: None),
    )
    hub = EventHub()
    watcher = ActivityWatcher(session, hub)
    try:
        with hub.listen("s1") as events:
            watcher.start()
            await wait_until_async("two looks", lambda: len(server.looks) == 2)
            assert "after" not in server.looks[0] and server.looks[1]["after"] == "v1"
            assert watcher.latest.kernels[0].notebook == "a.ipynb" and not watcher.latest.busy
            # twenty intervals go by (the cgroup's OOM count is read each one): no other look
            seen = len(oom_reads)
            await wait_until_async("twenty intervals", lambda: len(oom_reads) >= seen + 20)
            assert len(server.looks) == 2

            server.change("busy", "v2")
            await wait_until_async("the busy kernel", lambda: watcher.latest.busy)
            await wait_until_async("a third look", lambda: len(server.looks) == 3)
            assert server.looks[2]["after"] == "v2"
            watcher.wake()
            await wait_until_async("a look at once", lambda: len(server.looks) >= 4)
            assert "after" not in server.looks[3]
            kinds = [events.get_nowait().kind for _ in range(events.qsize())]
        assert kinds == ["activity", "activity"]  # idle, then busy
    finally:
        await watcher.stop()
        server.close()


async def test_a_cell_that_ran_between_two_looks_counts_as_busy_for_standby():
    """A short job goes busy and idle again before the held look answers: the look sees it idle,
    with one more run finished, and tells ``on_busy`` all the same (a session in standby wakes)."""
    from keepalive.models import SessionState

    server = FakeExtension()
    told: list[str] = []
    session = SimpleNamespace(
        id="s1", name="alice", webhook_url=None, webhook_min_busy=0.0, state=SessionState.standby,
        settings=SimpleNamespace(activity_interval=0.02),
        endpoint=SimpleNamespace(url=server.url, auth_headers={}),
        containment=SimpleNamespace(oom_kills=lambda: 0, memory_max=lambda: None),
    )
    watcher = ActivityWatcher(session, EventHub(), on_busy=lambda s, why: told.append(why))
    try:
        watcher.start()
        await wait_until_async("the held look", lambda: len(server.looks) == 2)
        assert told == []  # idle, nothing ran since the first look
        server.change("idle", "v2", runs=1)
        await wait_until_async("the run told", lambda: told)
        assert told == ["a kernel of it ran a cell"] and not watcher.latest.busy
    finally:
        await watcher.stop()
        server.close()


async def test_a_cell_waiting_for_input_is_announced_once_with_its_prompt_and_never_an_answer(receiver):
    from datetime import UTC, datetime

    from keepalive.engine.activity import kernel_activity
    from keepalive.models import Activity

    hook = receiver()
    session = SimpleNamespace(id="s1", name="alice", webhook_url=hook.url, webhook_min_busy=60.0)
    hub = EventHub()
    watcher = ActivityWatcher(session, hub)

    def look(asking: str | None) -> None:
        running = {"execution_count": 1, "started_at": 1000.0, "tail": [],
                   "input": None if asking is None else {"prompt": asking, "password": asking.startswith("token")}}
        kernel = {"kernel_id": "k1", "execution_state": "busy", "running": running}
        watcher._notice_inputs(Activity(busy=True, kernels=[kernel_activity(kernel, "a.ipynb")], updated_at=datetime.now(UTC)))

    with hub.listen("s1") as events:
        look(None)
        look("name? ")
        look("name? ")  # still the same question: not news
        look(None)  # answered
        look("token? ")  # a new question
        await asyncio.gather(*watcher.deliveries)
        announced = [events.get_nowait() for _ in range(events.qsize())]
    assert [(e.kind, e.data["prompt"], e.data["password"]) for e in announced] == [
        ("input_requested", "name? ", False), ("input_requested", "token? ", True)]
    assert announced[0].data["session"] == {"id": "s1", "name": "alice"} and announced[0].data["notebook"] == "a.ipynb"
    assert sorted(b["prompt"] for b in hook.bodies) == ["name? ", "token? "]
    assert all(set(b) == {"event", "session", "kernel_id", "notebook", "prompt", "password", "at", "status_path"}
               for b in hook.bodies)
    # where to answer it, and nothing that opens it by itself
    assert {b["status_path"] for b in hook.bodies} == {"/sessions/s1/status"}
