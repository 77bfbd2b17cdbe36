"""GET /metrics in process: who may scrape, and what the text holds (with stand-in sessions)."""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from types import SimpleNamespace

import pytest
from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families

from keepalive.app import create_app
from keepalive.models import SessionState
from keepalive.settings import Settings


class StandInGateway:
    def clients(self, session_id: str) -> int:
        return 2 if session_id == "aaaaaaaaaaaa" else 0


class StandInManager:
    """The two sessions a scrape sees: one ready (restarted once), one starting."""

    def __init__(self, folder: Path) -> None:
        self.gateway = StandInGateway()
        self.start_observers = []
        self.pool = SimpleNamespace(size=2, waiting=1, filling=1, hits=3, misses=Counter({"empty": 2}))
        self.sessions = [
            SimpleNamespace(id="aaaaaaaaaaaa", name="alice", state=SessionState.ready,
                            record=SimpleNamespace(restarts=1), layout=SimpleNamespace(folder=folder / "a")),
            SimpleNamespace(id="bbbbbbbbbbbb", name="bob", state=SessionState.starting,
                            record=SimpleNamespace(restarts=0), layout=SimpleNamespace(folder=folder / "b")),
        ]

    async def open(self) -> None:
        pass

    async def close(self, stop_sessions: bool = False) -> None:
        pass

    def list(self):
        return self.sessions

    def get(self, session_id):
        from keepalive.engine.manager import SessionNotFound

        raise SessionNotFound(session_id)


@pytest.fixture
def app(tmp_path):
    app = create_app(Settings(state_dir=tmp_path, api_token="t", metrics_token="scrape-only"))
    app.state.manager = StandInManager(tmp_path)
    return app


def samples(text: str) -> dict[tuple[str, tuple], float]:
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text) for sample in family.samples
    }


def test_metrics_need_the_api_token_or_the_metrics_token(app):
    with TestClient(app) as client:
        assert client.get("/metrics").status_code == 401
        assert client.get("/metrics", headers={"Authorization": "Bearer wrong"}).status_code == 401
        assert client.get("/metrics", headers={"Authorization": "Bearer t"}).status_code == 200
        only = client.get("/metrics", headers={"Authorization": "Bearer scrape-only"})
        assert only.status_code == 200 and only.headers["content-type"].startswith("text/plain")
        # the metrics token opens nothing else
        assert client.get("/sessions", headers={"Authorization": "Bearer scrape-only"}).status_code == 401


def test_metrics_hold_sessions_clients_starts_and_requests(app):
    with TestClient(app, headers={"Authorization": "Bearer t"}) as client:
        client.get("/sessions/zzzzzzzzzzzz")  # a 404 on a templated route
        app.state.metrics.session_started(SimpleNamespace(start_seconds=4.2, from_pool=False))
        app.state.metrics.session_started(SimpleNamespace(start_seconds=0.2, from_pool=True))
        found = samples(client.get("/metrics").text)
    assert found[("keepalive_sessions", (("state", "ready"),))] == 1
    assert found[("keepalive_sessions", (("state", "starting"),))] == 1
    assert found[("keepalive_sessions", (("state", "failed"),))] == 0
    alice = (("name", "alice"), ("session_id", "aaaaaaaaaaaa"))
    assert found[("keepalive_session_restarts_total", alice)] == 1
    assert found[("keepalive_devtools_clients", alice)] == 2
    assert found[("keepalive_session_start_seconds_count", (("kind", "cold"),))] == 1
    assert found[("keepalive_session_start_seconds_sum", (("kind", "cold"),))] == pytest.approx(4.2)
    assert found[("keepalive_session_start_seconds_sum", (("kind", "warm"),))] == pytest.approx(0.2)
    assert found[("keepalive_pool_size", ())] == 2
    assert found[("keepalive_pool_sessions", (("state", "waiting"),))] == 1
    assert found[("keepalive_pool_sessions", (("state", "starting"),))] == 1
    assert found[("keepalive_pool_hits_total", ())] == 3
    assert found[("keepalive_pool_misses_total", (("reason", "empty"),))] == 2
    # counted by template, not by raw path: no series per session id
    route = (("method", "GET"), ("route", "/sessions/{session_id}"), ("status", "404"))
    assert found[("keepalive_http_requests_total", route)] == 1
