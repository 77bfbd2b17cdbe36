"""Prometheus metrics: what runs, what it costs, how the API is used (``GET /metrics``).

Most figures are read when Prometheus scrapes, from the session manager and the processes
themselves (nothing is counted twice, nothing goes stale); only what happens between scrapes
is counted as it happens: session start times and API requests. Each app has its own figures,
so that several apps in one process (tests) never share them.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import psutil
from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector
from starlette.types import ASGIApp, Receive, Scope, Send

from keepalive.engine.reaper import session_processes
from keepalive.models import SessionState

#: Session starts last seconds: buckets around that, up to the start timeout's default.
START_BUCKETS = (0.25, 0.5, 1, 2, 3, 4, 5, 6, 8, 10, 15, 20, 30, 60, 120)


@dataclass(frozen=True)
class SessionFacts:
    """What a scrape reports of one session, taken on the event loop (where sessions change)."""

    id: str
    name: str
    state: SessionState
    restarts: int
    folder: Path
    viewers: int
    devtools_clients: int


class SessionCollector(Collector):
    """Sessions by state, and per session: restarts, memory (USS), CPU time, viewers, DevTools
    clients. Reads the processes (slow: /proc/*/smaps) from the facts it was given, in a thread."""

    def __init__(self, sessions: list[SessionFacts]) -> None:
        self._sessions = sessions

    def collect(self) -> Iterator:
        by_state = GaugeMetricFamily("keepalive_sessions", "Sessions by state.", labels=["state"])
        for state in SessionState:
            by_state.add_metric([state.value], sum(1 for s in self._sessions if s.state is state))
        yield by_state

        labels = ["session_id", "name"]
        restarts = CounterMetricFamily(
            "keepalive_session_restarts", "Automatic recoveries of a session (any part).", labels=labels)
        memory = GaugeMetricFamily(
            "keepalive_session_memory_uss_bytes", "Unique memory of all of a session's processes.", labels=labels)
        cpu = CounterMetricFamily(
            "keepalive_session_cpu_seconds", "CPU time of a session's live processes (user + system).", labels=labels)
        processes = GaugeMetricFamily("keepalive_session_processes", "Processes of a session.", labels=labels)
        viewers = GaugeMetricFamily("keepalive_viewer_connections", "Viewers connected to a session.", labels=labels)
        devtools = GaugeMetricFamily(
            "keepalive_devtools_clients", "DevTools clients connected to a session (keepalive's own not counted).",
            labels=labels)
        for session in self._sessions:
            key = [session.id, session.name]
            restarts.add_metric(key, session.restarts)
            uss, seconds, count = _usage(session)
            memory.add_metric(key, uss)
            cpu.add_metric(key, seconds)
            processes.add_metric(key, count)
            viewers.add_metric(key, session.viewers)
            devtools.add_metric(key, session.devtools_clients)
        yield from (restarts, memory, cpu, processes, viewers, devtools)


@dataclass(frozen=True)
class PoolFacts:
    size: int
    waiting: int
    filling: int
    hits: int
    misses: dict[str, int]


class PoolCollector(Collector):
    """The warm pool: its size, its sessions, and how often a start found one waiting."""

    def __init__(self, pool: PoolFacts) -> None:
        self._pool = pool

    def collect(self) -> Iterator:
        pool = self._pool
        yield GaugeMetricFamily("keepalive_pool_size", "Sessions the warm pool keeps (KEEPALIVE_POOL_SIZE).", value=pool.size)
        sessions = GaugeMetricFamily("keepalive_pool_sessions", "Warm pool sessions by state.", labels=["state"])
        sessions.add_metric(["waiting"], pool.waiting)
        sessions.add_metric(["starting"], pool.filling)
        yield sessions
        yield CounterMetricFamily("keepalive_pool_hits", "Session starts served from the warm pool.", value=pool.hits)
        misses = CounterMetricFamily(
            "keepalive_pool_misses", "Session starts the warm pool could not serve, by reason.", labels=["reason"])
        for reason, count in sorted(pool.misses.items()):
            misses.add_metric([reason], count)
        yield misses


def _usage(session: SessionFacts) -> tuple[int, float, int]:
    """USS bytes, CPU seconds and count of the session's processes (gone ones are skipped)."""
    uss, seconds, count = 0, 0.0, 0
    for process in session_processes(session.id, session.folder):
        try:
            with process.oneshot():
                uss += process.memory_full_info().uss
                times = process.cpu_times()
                seconds += times.user + times.system
            count += 1
        except psutil.Error:
            continue
    return uss, seconds, count


class Metrics:
    """The figures counted as they happen; ``render`` adds the ones read at scrape time."""

    def __init__(self) -> None:
        self.session_start = Histogram(
            "keepalive_session_start_seconds", "From a start request to JupyterLab on screen.",
            ["kind"], buckets=START_BUCKETS, registry=None,
        )
        self.session_wake = Histogram(
            "keepalive_session_wake_seconds", "From a use of a session in standby to its page on screen again.",
            buckets=START_BUCKETS, registry=None,
        )
        self.requests = Counter(
            "keepalive_http_requests", "API requests by route (its template), method and status.",
            ["route", "method", "status"], registry=None,
        )

    def session_started(self, session) -> None:
        if session.start_seconds is not None:
            self.session_start.labels("warm" if session.from_pool else "cold").observe(session.start_seconds)

    def session_woke(self, seconds: float) -> None:
        self.session_wake.observe(seconds)

    @staticmethod
    def facts(manager, viewers) -> list[SessionFacts]:
        """Call on the event loop: the sessions as they are now."""
        return [
            SessionFacts(s.id, s.name, s.state, s.record.restarts, s.layout.folder,
                         viewers.count(s.id) if viewers is not None else 0, manager.gateway.clients(s.id))
            for s in manager.list()
        ]

    @staticmethod
    def pool_facts(pool) -> PoolFacts:
        """Call on the event loop: the warm pool as it is now."""
        return PoolFacts(pool.size, pool.waiting, pool.filling, pool.hits, dict(pool.misses))

    def render(self, sessions: list[SessionFacts], pool: PoolFacts | None = None) -> bytes:
        """The Prometheus text for one scrape (reads /proc: call it in a thread)."""
        registry = CollectorRegistry(auto_describe=False)
        collectors = [SessionCollector(sessions), self.session_start, self.session_wake, self.requests]
        if pool is not None:
            collectors.append(PoolCollector(pool))
        for collector in collectors:
            registry.register(collector)
        return generate_latest(registry)


class RequestCounter:
    """ASGI middleware: counts each HTTP request by its route's template (never the raw path,
    which holds ids and would make a series per session)."""

    def __init__(self, app: ASGIApp, metrics: Metrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        status = {"code": 500}

        async def remember_status(message) -> None:
            if message["type"] == "http.response.start":
                status["code"] = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, remember_status)
        finally:
            template = getattr(scope.get("route"), "path", None) or "unmatched"
            self.metrics.requests.labels(template, scope["method"], str(status["code"])).inc()
