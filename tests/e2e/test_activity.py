"""End to end: what a session is doing, read from its Jupyter server, and a word when the work is done.

A cell sleeps, then prints. GET /sessions/{id} shows the kernel busy on that notebook, then
idle with the time of its last output; the webhook receiver (a small server on loopback) gets
exactly one call, with no secret in it; the events stream delivers the same changes.
"""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx
import pytest

from tests.e2e.kiosk import kiosk_page, open_and_run_all, put_notebook
from tests.integration.jupyter_driver import SessionJupyter
from tests.waiting import wait_until

pytestmark = pytest.mark.e2e

SLEEP = 4
CELL = f"import time\ntime.sleep({SLEEP})\nprint('slept well', flush=True)\n"


class Receiver:
    """Records every webhook call: its raw body."""

    def __init__(self) -> None:
        self.calls: list[bytes] = []
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                receiver.calls.append(self.rfile.read(int(self.headers["Content-Length"])))
                self.send_response(204)
                self.end_headers()

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/done"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()


class EventStream:
    """GET /sessions/{id}/events, read in a thread: the (event, data) pairs so far."""

    def __init__(self, service, session_id: str) -> None:
        self.events: list[tuple[str, dict]] = []
        self.content_type = None
        self.opened = threading.Event()
        self.client = httpx.Client(
            base_url=service.url, headers={"Authorization": f"Bearer {service.token}"}, timeout=None, trust_env=False
        )
        threading.Thread(target=self._read, args=(f"/sessions/{session_id}/events",), daemon=True).start()
        assert self.opened.wait(30), "the events stream did not open"

    def _read(self, path: str) -> None:
        try:
            with self.client.stream("GET", path) as response:
                self.content_type = response.headers.get("content-type")
                self.opened.set()
                kind = None
                for line in response.iter_lines():
                    if line.startswith("event: "):
                        kind = line[len("event: "):]
                    elif line.startswith("data: ") and kind is not None:
                        self.events.append((kind, json.loads(line[len("data: "):])))
        except httpx.HTTPError:
            if not self.client.is_closed:  # closed by close(): the end of reading, not a failure
                raise

    def of(self, kind: str) -> list[dict]:
        return [data for k, data in list(self.events) if k == kind]

    def close(self) -> None:
        self.client.close()


def kernels(service, session_id: str) -> list[dict]:
    activity = service.client.get(f"/sessions/{session_id}").json()["activity"]
    return [] if activity is None else activity["kernels"]


def test_a_run_shows_busy_then_idle_and_is_announced_once(keepalive_service, playwright):
    receiver = Receiver()
    session = keepalive_service.start_session(name="activity", webhook_url=receiver.url, webhook_min_busy=2)
    sid = session["id"]
    assert session["webhook"] is True and receiver.url not in json.dumps(session)
    stream = EventStream(keepalive_service, sid)
    try:
        assert stream.content_type.startswith("text/event-stream")
        wait_until("the stream's opening state", lambda: stream.of("state"), timeout=10)
        assert stream.of("state")[0]["state"] == "ready"
        with kiosk_page(playwright, sid) as page:
            put_notebook(page, "sleeper.ipynb", [CELL])
            open_and_run_all(page, "sleeper.ipynb")
            busy = wait_until(
                "the kernel busy on sleeper.ipynb",
                lambda: [k for k in kernels(keepalive_service, sid) if k["state"] == "busy" and k["notebook"] == "sleeper.ipynb"],
                timeout=60, every=0.25,
            )[0]
            assert busy["running"] is not None and busy["since"] is not None
            idle = wait_until(
                "the kernel idle again, with its last output",
                lambda: [k for k in kernels(keepalive_service, sid)
                         if k["id"] == busy["id"] and k["state"] == "idle" and k["last_run"]],
                timeout=60, every=0.25,
            )[0]
        assert idle["last_output_at"] is not None and idle["last_output_at"] >= busy["since"]
        assert idle["last_run"]["outcome"] == "ok" and idle["last_run"]["busy_seconds"] >= SLEEP

        wait_until("the webhook's call", lambda: receiver.calls, timeout=60)
        # one call, not more: a later look at the same kernel must not announce the run again.
        # Looks come when something changes: a kernel started, then shut down, makes two (each
        # stamps the activity anew), and a wrong second call from the first would be in by then.
        jupyter = SessionJupyter(keepalive_service.state_dir, sid)
        other = jupyter.client.post("/api/kernels", json={"name": "python3"}).json()["id"]
        wait_until("a look that sees a new kernel", lambda: other in [k["id"] for k in kernels(keepalive_service, sid)],
                   timeout=30, every=0.25)
        assert jupyter.client.delete(f"/api/kernels/{other}").status_code == 204
        wait_until("a look that sees it gone", lambda: other not in [k["id"] for k in kernels(keepalive_service, sid)],
                   timeout=30, every=0.25)
        jupyter.client.close()
        assert len(receiver.calls) == 1, receiver.calls
        raw = receiver.calls[0].decode()
        call = json.loads(raw)
        assert call["event"] == "run_finished" and call["outcome"] == "ok" and call["error"] is None
        assert call["session"] == {"id": sid, "name": "activity"} and call["notebook"] == "sleeper.ipynb"
        assert call["busy_seconds"] >= SLEEP
        jupyter_token = next(keepalive_service.state_dir.rglob(f"sessions/{sid}/jupyter.token")).read_text().strip()
        for secret in (keepalive_service.token, jupyter_token):
            assert secret not in raw

        # the stream told the same story: busy, then idle, then the same run's end
        states = [k["state"] for a in stream.of("activity") for k in a["kernels"] if k["id"] == busy["id"]]
        assert "busy" in states and states[-1] == "idle", states
        assert states.index("busy") < len(states) - 1
        # with the run's last lines, which stay off the webhook (a URL of elsewhere)
        assert "tail" not in call
        [finished] = stream.of("run_finished")
        assert finished == {**call, "tail": finished["tail"]} and finished["tail"][-1:] == ["slept well"]
    finally:
        keepalive_service.stop_session(sid)
        wait_until("the stream's last word, stopped", lambda: any(s["state"] == "stopped" for s in stream.of("state")), timeout=60)
        stream.close()
        receiver.server.shutdown()
