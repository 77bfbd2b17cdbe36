"""The session lifecycle against the real service: real xpra, Chromium and Jupyter on loopback."""

from __future__ import annotations

import io
import json
import stat
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import psutil
import pytest
from PIL import Image, ImageStat

from tests.conftest import SESSION_MARKER, session_processes
from tests.integration.jupyter_driver import SessionJupyter, ticks
from tests.waiting import wait_until


def process_ended(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def assert_jupyterlab_png(png: bytes, width: int, height: int) -> Image.Image:
    image = Image.open(io.BytesIO(png))
    assert image.format == "PNG"
    # the kiosk page fills the session's screen exactly
    assert image.size == (width, height)
    rgb = image.convert("RGB")
    colors = rgb.getcolors(maxcolors=1 << 16)
    assert colors is None or len(colors) > 50, "screenshot is (nearly) a single colour"
    assert max(ImageStat.Stat(rgb).stddev) > 10, "screenshot has no contrast: blank page?"
    return rgb


def test_start_screenshot_list_delete(keepalive_service):
    service = keepalive_service
    session = service.start_session(name="lifecycle")
    assert session["state"] == "ready"
    assert session["name"] == "lifecycle"
    assert session["health"] == {"xpra": True, "browser": True, "page": True, "jupyter": True, "display": True}
    assert session["restarts"] == 0
    assert (session["width"], session["height"]) == (1280, 800)
    session_id = session["id"]

    png = service.client.get(f"/sessions/{session_id}/screenshot")
    assert png.status_code == 200
    assert png.headers["content-type"] == "image/png"
    image = assert_jupyterlab_png(png.content, 1280, 800)
    # JupyterLab's top menu bar is white and its launcher/dock area is lighter than a blank X screen
    assert image.getpixel((640, 5))[0] > 200

    listed = service.client.get("/sessions").json()["sessions"]
    assert session_id in [item["id"] for item in listed]
    assert service.client.get(f"/sessions/{session_id}").json()["state"] == "ready"

    health = service.client.get("/health")
    assert health.status_code == 200
    assert health.json()["status"] == "ok"
    assert health.json()["sessions"]["ready"] >= 1

    folder = service.state_dir / "sessions" / session_id
    record = json.loads((folder / "session.json").read_text())
    xpra_port = record["xpra_port"]

    def listening() -> bool:
        return any(c.laddr.port == xpra_port for c in psutil.net_connections("tcp") if c.status == "LISTEN")

    # xpra runs only for viewers: nobody has asked for the viewer yet
    assert not listening() and record["xpra_pid"] is None
    assert service.client.get(f"/sessions/{session_id}/viewer/").status_code == 200
    assert listening()
    pids = [p.pid for p in session_processes(session_id)]
    assert len(pids) >= 5, "expected Xvfb, the bridge, Chromium, Jupyter and xpra at least"

    assert service.client.delete(f"/sessions/{session_id}").status_code == 204
    assert session_processes(session_id) == [], "a process of the session survived DELETE"
    assert not any(psutil.pid_exists(pid) and psutil.Process(pid).status() != "zombie" for pid in pids)
    assert not folder.exists()
    assert not listening()
    assert not Path(f"/tmp/.X11-unix/X{record['display']}").exists()
    assert service.client.get(f"/sessions/{session_id}").status_code == 404


def test_session_is_isolated_and_keeps_no_secret_in_view(keepalive_service):
    service = keepalive_service
    session = service.start_session(name="isolated", width=1024, height=768)
    session_id = session["id"]
    folder = service.state_dir / "sessions" / session_id
    assert oct(stat.S_IMODE((folder / "run").stat().st_mode)) == "0o700"

    # xpra, which runs while someone watches, is checked with the rest
    assert service.client.get(f"/sessions/{session_id}/viewer/").status_code == 200
    for process in session_processes(session_id):
        try:
            env = process.environ()
        except psutil.Error:
            continue
        if SESSION_MARKER not in env:
            # Chromium strips the environment of what it forks from its zygote; those
            # processes still name the session's profile on their command line
            assert any(str(folder) in arg for arg in process.cmdline()), process.cmdline()[:3]
            continue
        # everything inside the session's own folder, or its name's home (what outlives it)
        home = service.state_dir / "homes" / "isolated"
        for name in ("XDG_CONFIG_HOME", "XDG_DATA_HOME", "XDG_CACHE_HOME", "XDG_STATE_HOME", "HOME"):
            assert env[name].startswith(str(home) + "/"), (process.name(), name, env[name])
        assert env["XDG_RUNTIME_DIR"].startswith(str(folder) + "/"), (process.name(), env["XDG_RUNTIME_DIR"])
        # nothing of the service's own environment (its settings, its API token) reaches a session
        assert not [k for k in env if k.startswith("KEEPALIVE_")], (process.name(), sorted(env))
        assert service.token not in "\n".join(env.values()), process.name()
        # the Jupyter token travels in the environment, never on a command line `ps` shows
        assert not any("token" in arg.lower() for arg in process.cmdline() if "=" in arg and "Token" not in arg)

    assert_jupyterlab_png(service.client.get(f"/sessions/{session_id}/screenshot").content, 1024, 768)

    token = None
    for process in session_processes(session_id):
        try:
            token = token or process.environ().get("JUPYTER_TOKEN")
        except psutil.Error:
            continue
    assert token, "the embedded Jupyter server has a token"
    text = json.dumps(service.client.get("/sessions").json()) + service.log_text()
    assert token not in text
    assert service.token not in text
    child_logs = list((folder / "logs").glob("*.log"))
    assert {p.name for p in child_logs} >= {"jupyter.log", "xvfb.log", "browser.log", "xpra.log"}
    for path in child_logs:
        assert token not in path.read_text(errors="replace"), f"the Jupyter token is in {path.name}"
    service.stop_session(session_id)


def test_two_sessions_started_at_the_same_instant(keepalive_service):
    service = keepalive_service
    with ThreadPoolExecutor(2) as pool:
        responses = list(pool.map(lambda name: service.client.post("/sessions", json={"name": name}), ["twin-a", "twin-b"]))
    sessions = []
    for response in responses:
        assert response.status_code == 201, response.text
        sessions.append(response.json())
        service.started.append(sessions[-1]["id"])
    records = [
        service.record(s["id"]) for s in sessions
    ]
    assert records[0]["display"] != records[1]["display"]
    assert records[0]["xpra_port"] != records[1]["xpra_port"]
    for session in sessions:
        shot = service.client.get(f"/sessions/{session['id']}/screenshot")
        assert_jupyterlab_png(shot.content, 1280, 800)
    for session in sessions:
        service.stop_session(session["id"])
        assert session_processes(session["id"]) == []


def test_wait_false_answers_202_then_becomes_ready(keepalive_service):
    service = keepalive_service
    response = service.client.post("/sessions", params={"wait": "false"}, json={"name": "background"})
    assert response.status_code == 202, response.text
    body = response.json()
    service.started.append(body["id"])
    assert body["state"] == "starting"
    screenshot = service.client.get(f"/sessions/{body['id']}/screenshot")
    assert screenshot.status_code == 409
    state = wait_until("the background start to end", lambda: (
        s := service.client.get(f"/sessions/{body['id']}").json()["state"]) != "starting" and s, timeout=180)
    assert state == "ready"
    service.stop_session(body["id"])


def test_heavyai_connection_reaches_the_jupyter_server(keepalive_service):
    service = keepalive_service
    secret = "s3ss10n-" + "x" * 24
    session = service.start_session(
        name="heavy",
        heavyai={"protocol": "https", "host": "db.example", "port": 6274, "session_id": secret, "query": "SELECT 1"},
    )
    session_id = session["id"]
    folder = service.state_dir / "sessions" / session_id
    handoff = folder / "heavyai-session.json"
    assert stat.S_IMODE(handoff.stat().st_mode) == 0o600
    assert json.loads(handoff.read_text()) == {"session": secret, "query": "SELECT 1"}

    jupyter = [p for p in session_processes(session_id) if "jupyterlab" in " ".join(p.cmdline())]
    assert len(jupyter) == 1
    env = jupyter[0].environ()
    assert (env["HEAVYAI_PROTOCOL"], env["HEAVYAI_HOST"], env["HEAVYAI_PORT"]) == ("https", "db.example", "6274")
    assert f"--HeavyAISessionManager.session_file={handoff}" in jupyter[0].cmdline()
    assert secret not in " ".join(jupyter[0].cmdline())

    everything = json.dumps(session) + json.dumps(service.client.get("/sessions").json()) + service.log_text()
    assert secret not in everything
    service.stop_session(session_id)


def crash_victims(session_id: str, part: str) -> list[psutil.Process]:
    processes = session_processes(session_id)
    if part == "browser":  # the browser process itself (no --type=)
        return [
            p for p in processes
            if p.name() in ("chromium", "chrome") and not any(a.startswith("--type=") for a in p.cmdline())
        ]
    if part == "renderer":  # the page's renderer(s): the page crashes, the browser lives
        return [p for p in processes if "--type=renderer" in p.cmdline() and "--top-chrome-webui" not in p.cmdline()]
    if part == "xpra":  # the xpra server (xpra start :N ...), not its helpers
        return [p for p in processes
                if "start" in p.cmdline()[:3] and any(arg.rsplit("/", 1)[-1] == "xpra" for arg in p.cmdline()[:2])]
    if part == "xvfb":  # the display: the browser on it goes down with it
        return [p for p in processes if p.name() == "Xvfb"]
    return [p for p in processes if "jupyterlab" in " ".join(p.cmdline())]


@pytest.mark.parametrize("part", ["browser", "renderer", "xvfb", "jupyter"])
def test_a_crashed_part_is_recovered_and_counted(keepalive_service, part):
    """SIGKILL of a part while a cell prints: recovered, counted, and the computation goes on,
    in the very same kernel process, also when the Jupyter server itself was killed (its kernels
    outlive it: keepalive_jupyter/surviving_kernels.py)."""
    service = keepalive_service
    session = service.start_session(name=f"crashy-{part}")
    session_id = session["id"]
    home = service.state_dir / "homes" / session["name"]
    jupyter = SessionJupyter(service.state_dir, session_id)
    kernel_id, kernel_pid = jupyter.start_ticker()
    jupyter.close()
    victims = crash_victims(session_id, part)
    assert victims, f"no {part} process found"
    for victim in victims:
        victim.kill()

    seen_states = set()

    def recovered():
        current = service.client.get(f"/sessions/{session_id}").json()
        seen_states.add(current["state"])
        return current if current["restarts"] >= 1 and current["state"] == "ready" else None

    current = wait_until(f"recovery from a killed {part}", recovered, timeout=180, every=0.2)
    assert current["restarts"] == 1
    assert "recovering" in seen_states or part == "renderer"  # a renderer comes back in a blink
    assert current["health"] == {"xpra": True, "browser": True, "page": True, "jupyter": True, "display": True}
    assert_jupyterlab_png(service.client.get(f"/sessions/{session_id}/screenshot").content, 1280, 800)
    assert not process_ended(kernel_pid), f"the kernel did not survive a killed {part}"
    before = ticks(home)
    wait_until("the cell to keep printing", lambda: ticks(home) >= before + 3, timeout=30)
    jupyter = SessionJupyter(service.state_dir, session_id)  # a new server, for a killed one
    assert kernel_id in [kernel["id"] for kernel in jupyter.client.get("/api/kernels").json()]
    jupyter.close()
    service.stop_session(session_id)
    assert session_processes(session_id) == []


def test_a_crash_loop_gives_up_while_the_kernels_live(keepalive_service):
    """Four browser crashes within minutes: the session is failed, its display stopped, and the
    Jupyter server with its kernel and the running cell go on."""
    service = keepalive_service
    session = service.start_session(name="crash-loop")
    session_id = session["id"]
    home = service.state_dir / "homes" / "crash-loop"
    jupyter = SessionJupyter(service.state_dir, session_id)
    _, kernel_pid = jupyter.start_ticker()
    for restart in range(1, 5):
        victims = wait_until("a browser to kill", lambda: crash_victims(session_id, "browser"), timeout=120)
        for victim in victims:
            victim.kill()
        if restart < 4:
            wait_until(f"restart {restart}", lambda: (s := service.client.get(f"/sessions/{session_id}").json())
                       ["restarts"] >= restart and s["state"] == "ready", timeout=180)
    failed = wait_until("the session to give up", lambda: (s := service.client.get(f"/sessions/{session_id}").json())
                        ["state"] == "failed" and s, timeout=120)
    assert "gave up after 3 restarts" in failed["error"] and "keep running" in failed["error"]
    assert failed["health"]["jupyter"] is True
    assert psutil.pid_exists(kernel_pid)
    before = ticks(home)
    wait_until("the cell to keep printing", lambda: ticks(home) >= before + 3, timeout=30)
    assert jupyter.client.get("/api/status").status_code == 200
    jupyter.close()
    service.stop_session(session_id)
    assert session_processes(session_id) == []


def test_metrics_show_a_real_session_and_its_cost(keepalive_service):
    from prometheus_client.parser import text_string_to_metric_families

    service = keepalive_service
    session = service.start_session(name="measured")
    response = service.client.get("/metrics")
    assert response.status_code == 200, response.text
    found = {
        (sample.name, sample.labels.get("session_id"), sample.labels.get("kind")): sample.value
        for family in text_string_to_metric_families(response.text) for sample in family.samples
    }
    sid = session["id"]
    assert found[("keepalive_session_memory_uss_bytes", sid, None)] > 100 * 1024 * 1024  # Chromium alone is more
    assert found[("keepalive_session_processes", sid, None)] >= 5  # Xvfb, bridge, Chromium (2+), Jupyter
    assert found[("keepalive_session_cpu_seconds_total", sid, None)] > 0
    assert found[("keepalive_session_start_seconds_count", None, "cold")] >= 1
    service.stop_session(sid)


def test_a_screenshot_shows_the_page_as_it_is_at_that_moment(keepalive_service, playwright):
    """No stale frame: what the page changed just before is in the picture, and gone once undone.

    pytest-playwright's ``playwright`` fixture, not a ``sync_playwright()`` of its own: that
    fixture keeps its event loop running in this worker from its first test on, and a second
    sync API refuses to start inside it.
    """
    from tests.e2e.kiosk import kiosk_page

    service = keepalive_service
    session = service.start_session(name="fresh-shot")
    magenta = (200, 30, 160)
    cover = (
        "color => { const d = document.createElement('div'); d.id = 'keepalive-test-cover';"
        " d.style.cssText = `position:fixed;inset:0;z-index:99999;background:rgb(${color})`;"
        " document.body.appendChild(d); }"
    )

    def centre() -> tuple[int, int, int]:
        png = service.client.get(f"/sessions/{session['id']}/screenshot")
        assert png.status_code == 200
        return Image.open(io.BytesIO(png.content)).convert("RGB").getpixel((640, 400))

    with kiosk_page(playwright, session["id"]) as kiosk:
        for _ in range(3):  # each time right after the change: no waiting for a frame to come
            kiosk.evaluate(cover, ",".join(map(str, magenta)))
            assert centre() == magenta
            kiosk.evaluate("() => document.getElementById('keepalive-test-cover').remove()")
            assert centre() != magenta
