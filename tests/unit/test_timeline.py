"""A home's timeline: its file (paging, cursor, since, thumbnails within their room), the recorder
that turns session events into it, and its routes in process."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from types import SimpleNamespace

import pytest
from fastapi.testclient import TestClient

from keepalive.app import create_app
from keepalive.engine import timeline_recorder
from keepalive.engine.events import Event, EventHub
from keepalive.engine.manager import SessionNotFound
from keepalive.engine.timeline import Timeline, Timelines
from keepalive.engine.timeline_recorder import TimelineRecorder
from keepalive.models import SessionState
from keepalive.settings import Settings

T0 = datetime(2026, 12, 5, 8, 0, tzinfo=UTC)


def test_events_come_newest_first_a_page_at_a_time_and_go_on_after_a_reopen(tmp_path):
    timeline = Timeline(tmp_path / "alice", max_bytes=10_000)
    for minute in range(5):
        timeline.add("run", {"n": minute}, at=T0 + timedelta(minutes=minute))
    again = Timeline(tmp_path / "alice", max_bytes=10_000)  # a new service: numbering goes on
    again.add("stopped", {}, at=T0 + timedelta(minutes=5))

    first, cursor = again.page(limit=4)
    assert [e["seq"] for e in first] == [6, 5, 4, 3] and cursor == 3
    rest, end = again.page(before=cursor, limit=4)
    assert [e["seq"] for e in rest] == [2, 1] and end is None
    recent, _ = again.page(since=T0 + timedelta(minutes=3))
    assert [e["kind"] for e in recent] == ["stopped", "run", "run"]
    assert recent[1] == {"seq": 5, "at": (T0 + timedelta(minutes=4)).isoformat(), "kind": "run", "n": 4}


def test_a_line_cut_short_by_a_crash_is_skipped(tmp_path):
    timeline = Timeline(tmp_path / "bob", max_bytes=10_000)
    timeline.add("started", {})
    with open(timeline.events_file, "a") as out:
        out.write('{"seq": 2, "at": "2026-')
    timeline = Timeline(tmp_path / "bob", max_bytes=10_000)
    assert timeline.add("stopped", {})["seq"] == 2
    assert [e["kind"] for e in timeline.page()[0]] == ["stopped", "started"]


def test_thumbnails_stay_within_their_room_the_oldest_go_first_and_their_events_stay(tmp_path):
    timeline = Timeline(tmp_path / "carol", max_bytes=2500)
    for n in range(4):
        timeline.add("run", {"n": n}, shot=bytes([n]) * 1000)
    events, _ = timeline.page()
    assert [e.get("shot") for e in events] == ["4.jpg", "3.jpg", None, None]
    assert len(events) == 4, "an event went with its thumbnail"
    assert timeline.shot("3.jpg").read_bytes() == bytes([2]) * 1000
    assert timeline.shot("1.jpg") is None and timeline.shot("../events.jsonl") is None
    assert oct(timeline.shot("4.jpg").stat().st_mode & 0o777) == "0o600"


def test_a_long_history_keeps_its_newer_half_and_numbering_goes_on(tmp_path, monkeypatch):
    monkeypatch.setattr("keepalive.engine.timeline.MAX_EVENTS_BYTES", 2000)
    timeline = Timeline(tmp_path / "gina", max_bytes=10_000)
    for n in range(40):
        timeline.add("run", {"n": n})
    events, _ = timeline.page(limit=500)
    assert timeline.events_file.stat().st_size <= 2000
    assert events[0]["seq"] == 40 and [e["seq"] for e in events] == list(range(40, 40 - len(events), -1))
    assert 5 < len(events) < 40
    assert Timeline(tmp_path / "gina", max_bytes=10_000).add("stopped", {})["seq"] == 41


def test_deleting_a_home_deletes_its_timeline(tmp_path):
    timelines = Timelines(tmp_path, max_bytes=1000)
    timelines.of("dave").add("started", {})
    assert timelines.exists("dave")
    timelines.delete("dave")
    assert not timelines.exists("dave") and timelines.of("dave").page() == ([], None)


class ShotDisplay:
    def __init__(self) -> None:
        self.shots = 0

    async def thumbnail(self) -> bytes:
        self.shots += 1
        return b"\xff\xd8 a jpeg"


def awake_session(session_id="s1", name="erin"):
    return SimpleNamespace(id=session_id, name=name, state=SessionState.ready,
                           parts=SimpleNamespace(display=ShotDisplay()))


async def settled(recorder: TimelineRecorder) -> None:
    while recorder._tasks:
        await asyncio.gather(*recorder._tasks)


async def test_the_recorder_keeps_what_the_events_said(tmp_path):
    hub, session = EventHub(), awake_session()
    recorder = TimelineRecorder(Timelines(tmp_path, 100_000), session_of=lambda sid: session, shot_every=300)
    hub.observers.append(recorder.observe)
    for state, error in [("starting", None), ("ready", None), ("standby", None), ("ready", None),
                         ("recovering", "the kiosk browser crashed"), ("recovering", "the kiosk browser crashed"),
                         ("ready", None)]:
        hub.publish("s1", "state", {"state": state, "error": error, "restarts": 0})
    run = {"notebook": "a.ipynb", "kernel_id": "k1", "cells": 3, "started_at": T0.isoformat(),
           "finished_at": T0.isoformat(), "busy_seconds": 1.5, "outcome": "ok", "error": None, "tail": ["done"]}
    hub.publish("s1", "run_finished", run)
    hub.publish("s1", "run_finished", {**run, "outcome": "error", "error": {"ename": "ZeroDivisionError",
                                                                             "evalue": "division by zero"}})
    hub.publish("s1", "state", {"state": "stopped", "error": None, "restarts": 0})
    await settled(recorder)

    events = list(reversed(recorder.timelines.of("erin").page()[0]))
    assert [e["kind"] for e in events] == ["started", "standby", "awake", "recovering", "recovered", "run", "stopped",
                                           "run"]  # the error's run waited for its thumbnail
    assert events[4]["from"] == "the kiosk browser crashed"
    ok_run, error_run = events[5], events[7]
    assert ok_run["tail"] == ["done"] and "shot" not in ok_run
    assert error_run["error"]["ename"] == "ZeroDivisionError" and error_run["shot"] == f"{error_run['seq']}.jpg"
    assert session.parts.display.shots == 1


async def test_busy_runs_are_shot_at_most_every_shot_every_and_sleeping_sessions_never(tmp_path):
    hub, session = EventHub(), awake_session()
    recorder = TimelineRecorder(Timelines(tmp_path, 100_000), session_of=lambda sid: session, shot_every=300)
    hub.observers.append(recorder.observe)
    busy = {"busy": True, "kernels": [{"id": "k1", "notebook": "a.ipynb", "state": "busy",
                                       "running": {"tail": ["step 3"]}}]}
    for _ in range(3):
        hub.publish("s1", "activity", busy)
    await settled(recorder)
    events = recorder.timelines.of("erin").page()[0]
    assert [e["kind"] for e in events] == ["busy"] and events[0]["running"][0]["tail"] == ["step 3"]

    recorder._last_shot.clear()
    session.state = SessionState.standby  # the timeline neither wakes it nor records a busy spell without a picture
    hub.publish("s1", "activity", busy)
    hub.publish("s1", "run_finished", {"outcome": "error", "error": {"ename": "E", "evalue": "v"}})
    await settled(recorder)
    events = recorder.timelines.of("erin").page()[0]
    assert [e["kind"] for e in events] == ["run", "busy"] and "shot" not in events[0]
    assert session.parts.display.shots == 1


async def test_a_thumbnail_that_fails_is_tried_again_and_its_event_is_never_lost(tmp_path, monkeypatch):
    monkeypatch.setattr(timeline_recorder, "SHOT_PAUSE", 0.01)
    session = awake_session()
    recorder = TimelineRecorder(Timelines(tmp_path, 100_000), session_of=lambda sid: session, shot_every=300)
    failures = [asyncio.TimeoutError(), asyncio.TimeoutError(), asyncio.TimeoutError()]  # no message at all

    async def thumbnail() -> bytes:
        if failures:
            raise failures.pop()
        return b"\xff\xd8 a jpeg"

    session.parts.display.thumbnail = thumbnail
    asked = {"kernel_id": "k1", "notebook": "a.ipynb", "prompt": "name? ", "password": False}
    recorder.observe(Event("s1", "input_requested", asked))  # fails twice: recorded without a picture
    await settled(recorder)
    recorder.observe(Event("s1", "input_requested", asked))  # fails once, then a picture
    await settled(recorder)
    newest, oldest = recorder.timelines.of("erin").page()[0]
    assert "shot" not in oldest and oldest["prompt"] == "name? "
    assert newest["shot"] == f"{newest['seq']}.jpg" and not failures


async def test_sessions_of_the_pool_are_not_recorded_until_taken(tmp_path):
    hub, session, taken = EventHub(), awake_session(), False
    recorder = TimelineRecorder(Timelines(tmp_path, 100_000), session_of=lambda sid: session if taken else None,
                                shot_every=0)
    hub.observers.append(recorder.observe)
    for state in ("starting", "pooled"):
        hub.publish("s1", "state", {"state": state, "error": None, "restarts": 0})
    taken = True
    hub.publish("s1", "state", {"state": "ready", "error": None, "restarts": 0})
    assert [e["kind"] for e in recorder.timelines.of("erin").page()[0]] == ["started"]


# --- the routes, in process ---------------------------------------------------------------------


class TimelineManager:
    def __init__(self, settings: Settings) -> None:
        self.timeline = SimpleNamespace(timelines=Timelines(settings.timelines_dir, 100_000))
        self.session = SimpleNamespace(id="abc123abc123", name="frank")

    async def open(self) -> None:
        pass

    async def close(self, stop_sessions: bool = False) -> None:
        pass

    def get(self, session_id):
        if session_id != self.session.id:
            raise SessionNotFound(session_id)
        return self.session

    def homes(self):
        return ["frank"]


@pytest.fixture
def timeline_client(tmp_path):
    settings = Settings(state_dir=tmp_path, api_token="t")
    app = create_app(settings)
    manager = app.state.manager = TimelineManager(settings)
    timeline = manager.timeline.timelines.of("frank")
    timeline.add("started", {"session": "abc123abc123"}, at=T0)
    timeline.add("run", {"session": "abc123abc123", "outcome": "error"}, shot=b"\xff\xd8jpeg", at=T0 + timedelta(hours=1))
    with TestClient(app, headers={"Authorization": "Bearer t"}) as client:
        yield client


def test_the_timeline_by_session_and_by_home_with_its_thumbnails(timeline_client):
    by_session = timeline_client.get("/sessions/abc123abc123/timeline").json()
    assert by_session == timeline_client.get("/homes/frank/timeline").json()
    run, started = by_session["events"]
    assert by_session["next"] is None and started["kind"] == "started"
    assert run["shot_url"] == "http://testserver/homes/frank/timeline/shots/2.jpg" and "shot" not in run
    shot = timeline_client.get("/homes/frank/timeline/shots/2.jpg")
    assert shot.status_code == 200 and shot.headers["content-type"] == "image/jpeg" and shot.content == b"\xff\xd8jpeg"
    assert timeline_client.get("/sessions/abc123abc123/timeline/shots/2.jpg").content == b"\xff\xd8jpeg"
    page = timeline_client.get("/homes/frank/timeline", params={"limit": 1}).json()
    assert [e["seq"] for e in page["events"]] == [2] and page["next"] == 2
    older = timeline_client.get("/homes/frank/timeline", params={"before": page["next"]}).json()
    assert [e["seq"] for e in older["events"]] == [1]
    since = timeline_client.get("/homes/frank/timeline", params={"since": "2026-12-05T08:30:00Z"}).json()
    assert [e["seq"] for e in since["events"]] == [2]


@pytest.mark.parametrize("path, params, status, field", [
    ("/homes/frank/timeline", {"limit": 0}, 422, "limit"),
    ("/homes/frank/timeline", {"limit": 501}, 422, "limit"),
    ("/homes/frank/timeline", {"before": "x"}, 422, "before"),
    ("/homes/frank/timeline", {"since": "yesterday"}, 422, "since"),
    ("/homes/frank/timeline", {"since": "2026-12-05T08:30:00"}, 422, "since"),
    ("/homes/nobody/timeline", {}, 404, "nobody"),
    ("/homes/Frank!/timeline", {}, 422, "name"),
    ("/sessions/000000000000/timeline", {}, 404, "000000000000"),
    ("/homes/frank/timeline/shots/1.jpg", {}, 404, "1.jpg"),
    ("/homes/frank/timeline/shots/..%2Fevents.jsonl", {}, 404, "Not Found"),
    ("/homes/frank/timeline/shots/events.jsonl", {}, 422, "shot"),
])
def test_bad_timeline_requests_say_what_was_wrong(timeline_client, path, params, status, field):
    response = timeline_client.get(path, params=params)
    assert response.status_code == status, response.text
    assert field in response.text


def test_the_timeline_needs_the_token(timeline_client):
    assert timeline_client.get("/homes/frank/timeline", headers={"Authorization": ""}).status_code == 401
    assert timeline_client.get("/homes/frank/timeline/shots/2.jpg", headers={"Authorization": ""}).status_code == 401
