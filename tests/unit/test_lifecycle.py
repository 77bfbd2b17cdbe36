"""A session's transitions and its watchdog, in-process (no real parts)."""

from __future__ import annotations

import asyncio

import pytest

from keepalive.engine.allocation import Allocator
from keepalive.engine.session import ALLOWED, InvalidTransition, Session, SessionRecord
from keepalive.models import SessionState
from keepalive.settings import Settings


def make_session(tmp_path, **settings) -> Session:
    record = SessionRecord(id="abcdef012345", name="unit", width=1280, height=800)
    saved = []
    session = Session(record, Settings(state_dir=tmp_path, api_token="t", **settings), Allocator(), None, None, None,
                      persist=saved.append)
    session.saved = saved
    return session


def test_a_stopped_start_can_never_become_ready(tmp_path):
    session = make_session(tmp_path)
    session._set_state(SessionState.stopping)
    with pytest.raises(InvalidTransition):
        session._set_state(SessionState.ready)
    session._set_state(SessionState.stopped)
    for state in SessionState:
        if state is not SessionState.stopped:
            with pytest.raises(InvalidTransition):
                session._set_state(state)


def test_every_state_change_is_persisted(tmp_path):
    session = make_session(tmp_path)
    session._set_state(SessionState.ready)
    session._set_state(SessionState.recovering)
    assert [r["state"] for r in session.saved] == ["ready", "recovering"]
    assert SessionState.ready in ALLOWED[SessionState.recovering]


class HungPage:
    async def evaluate(self, expression):
        await asyncio.sleep(3600)


class HungBrowser:
    page_alive = True
    page = HungPage()


async def test_a_page_that_stops_answering_is_handled_as_a_crash(tmp_path):
    session = make_session(tmp_path, probe_interval=0.02)
    session._set_state(SessionState.ready)
    session.browser = HungBrowser()
    lost = []
    session._part_lost = lost.append
    session._start_watchdog()
    for _ in range(200):
        if lost:
            break
        await asyncio.sleep(0.01)
    await session._stop_watchdog()
    assert lost == ["the page did not answer for 0 s"]
