"""A session's transitions, its one door, its watchdog and its restart policy, in-process
(no real parts run)."""

from __future__ import annotations

import ast
import asyncio
from pathlib import Path

import pytest

import keepalive
from keepalive.engine.allocation import Allocator
from keepalive.engine.parts import real_parts
from keepalive.engine.session import ALLOWED, InvalidTransition, Session, SessionRecord
from keepalive.engine.watchdog import MAX_RESTARTS, RESTART_BACKOFF, RESTART_WINDOW, RestartPolicy
from keepalive.models import SessionState
from keepalive.settings import Settings


def make_session(tmp_path, **settings) -> Session:
    """A session with real parts that are never started (nothing runs)."""
    record = SessionRecord(id="abcdef012345", name="unit", width=1280, height=800)
    saved = []
    session = Session(record, Settings(state_dir=tmp_path, api_token="t", **settings),
                      real_parts(Allocator(), None, None), persist=saved.append)
    session.saved = saved
    return session


async def set_state(session: Session, state: SessionState) -> None:
    async with session._lock:
        session._set_state(state)


async def test_a_stopped_start_can_never_become_ready(tmp_path):
    session = make_session(tmp_path)
    await set_state(session, SessionState.stopping)
    with pytest.raises(InvalidTransition):
        await set_state(session, SessionState.ready)
    await set_state(session, SessionState.stopped)
    for state in SessionState:
        if state is not SessionState.stopped:
            with pytest.raises(InvalidTransition):
                await set_state(session, state)


async def test_every_state_change_is_persisted(tmp_path):
    session = make_session(tmp_path)
    await set_state(session, SessionState.ready)
    await set_state(session, SessionState.recovering)
    assert [r["state"] for r in session.saved] == ["ready", "recovering"]
    assert SessionState.ready in ALLOWED[SessionState.recovering]


def test_no_state_change_outside_the_sessions_lock(tmp_path):
    session = make_session(tmp_path)
    with pytest.raises(AssertionError, match="outside the session's lock"):
        session._set_state(SessionState.ready)
    assert session.state is SessionState.starting and session.saved == []


def _state_writes(tree: ast.AST) -> list[tuple[str | None, int]]:
    """(enclosing function, line) of every assignment to ``<...>record.state`` or ``record["state"]``."""
    found = []

    def visit(node: ast.AST, function: str | None) -> None:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            function = node.name
        targets = []
        if isinstance(node, ast.Assign):
            targets = node.targets
        elif isinstance(node, (ast.AugAssign, ast.AnnAssign)):
            targets = [node.target]
        for target in targets:
            for part in ast.walk(target):
                if isinstance(part, ast.Attribute) and part.attr == "state" and "record" in ast.unparse(part.value):
                    found.append((function, node.lineno))
                if (isinstance(part, ast.Subscript) and "record" in ast.unparse(part.value)
                        and ast.unparse(part.slice) in ("'state'", '"state"')):
                    found.append((function, node.lineno))
        if isinstance(node, ast.Call) and ast.unparse(node.func).endswith("setattr") and len(node.args) > 1:
            if ast.unparse(node.args[1]) in ("'state'", '"state"'):
                found.append((function, node.lineno))
        for child in ast.iter_child_nodes(node):
            visit(child, function)

    visit(tree, None)
    return found


def test_only_the_door_writes_a_sessions_state():
    package = Path(keepalive.__file__).parent
    writes = {}
    for path in sorted(package.rglob("*.py")):
        for function, line in _state_writes(ast.parse(path.read_text(), str(path))):
            writes.setdefault(str(path.relative_to(package)), []).append((function, line))
    assert {path: [f for f, _ in found] for path, found in writes.items()} == {
        "engine/session.py": ["_set_state"]
    }, writes


def test_no_engine_module_grows_past_500_lines():
    """One concern per module (the standalone bridge script, which runs alone with ``python -I``,
    aside): a file past this has taken on a second job."""
    engine = Path(keepalive.__file__).parent / "engine"
    long = {path.name: n for path in engine.glob("*.py")
            if path.name != "cdp_bridge.py" and (n := len(path.read_text().splitlines())) > 500}
    assert long == {}


def test_the_door_check_sees_a_direct_write():
    found = _state_writes(ast.parse("def adopt(session):\n    session.record.state = 'ready'\n"))
    assert found == [("adopt", 2)]


class HungPage:
    async def evaluate(self, expression):
        await asyncio.sleep(3600)


class HungBrowser:
    page_alive = True
    page = HungPage()

    async def close(self):
        pass


async def test_a_page_that_stops_answering_is_handled_as_a_crash(tmp_path):
    session = make_session(tmp_path, probe_interval=0.02)
    await set_state(session, SessionState.ready)
    session.parts.display.browser = HungBrowser()
    lost = []
    session._part_lost = lost.append
    session.watchdog.start()
    for _ in range(200):
        if lost:
            break
        await asyncio.sleep(0.01)
    await session.watchdog.stop()
    assert lost == ["the page did not answer for 0 s"]


def test_the_restart_policy_backs_off_then_gives_up_within_its_window():
    now = [0.0]
    policy = RestartPolicy(clock=lambda: now[0])
    assert [policy.next_delay() for _ in range(MAX_RESTARTS)] == list(RESTART_BACKOFF)
    assert policy.next_delay() is None  # a burst of crashes: give up
    now[0] += RESTART_WINDOW  # the earlier restarts are out of the window
    assert policy.next_delay() == RESTART_BACKOFF[0]


async def test_a_session_that_keeps_crashing_gives_up_and_keeps_its_kernels(tmp_path):
    session = make_session(tmp_path)
    await set_state(session, SessionState.ready)
    recovered = []

    async def recover(why, delay):
        recovered.append(delay)

    session.recovery._recover = recover
    for _ in range(MAX_RESTARTS):
        session._part_lost("xvfb exited with code 1")
        await session.recovery.task
    ended = []

    async def end(save_profile=False):
        ended.append("everything")

    async def stop_display(reap_leftovers=True):
        ended.append("display")

    session._end = end
    session.parts.display.stop = stop_display
    session._part_lost("xvfb exited with code 1")
    await session.recovery.task
    assert recovered == list(RESTART_BACKOFF)
    assert session.state is SessionState.failed and ended == ["display"]  # the kernels compute on
    assert session.record.error.startswith("xvfb exited with code 1; gave up after 3 restarts")
