"""Shared test set-up.

- pytest-playwright drives Debian's Chromium, never a downloaded one.
- ``keepalive_service`` runs the real ``keepalive serve`` on a free loopback port, waits
  until it answers, yields a handle, and always stops it (and checks nothing is left).

End-to-end tests run three at a time (scripts/test.sh: pytest-xdist, ``-n 3 --dist loadgroup``).
What that asks of a test, and what this file does about it:

- Each xdist worker is a pytest run of its own: session-scoped fixtures (``keepalive_service``,
  ``playwright``) are made once per worker, module-scoped ones once per worker that runs a test
  of the module. The profile template is made once for all workers (``profile_template``).
- The tests of a module that share a module-scoped fixture of their own (a session, a service
  with settings of its own) run on one worker, one after the other: such a test is put in an
  ``xdist_group`` named after its module (``pytest_collection_modifyitems``). A fixture asked
  for by ``request.getfixturevalue`` is not seen: a module that shares something that way gets
  one per worker, which is correct, only slower.
- Two services on one machine must not hand out the same things: each worker's services get
  session uids and X display numbers of their own (``WORKER_SETTINGS``, in the worker's
  environment, so that every service a test starts inherits them; a test that builds a service's
  environment by hand passes ``worker_environment()`` on). Ports come from the kernel (bind to 0),
  state dirs from each test's own temporary folder, session cgroups are named by session id.
- A new test file in the existing style (the session-scoped ``keepalive_service``, its own
  services from ``start_service``/``service_factory``, module-scoped fixtures) needs nothing more.
"""

from __future__ import annotations

import fcntl
import json
import os
import re
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import psutil
import pytest

from keepalive.cli import SERVING_LINE
from keepalive.engine import framebuffer
from tests.waiting import WaitTimeout, wait_until

CHROMIUM = "/usr/bin/chromium"
SESSION_MARKER = "KA_SESSION_ID"


PLAYWRIGHT_FIXTURES = {"page", "context", "browser", "browser_type", "new_context", "playwright"}


#: Where each run's temporary folders go (one ``run-<pid>`` per run), instead of pytest's own
#: ``pytest-of-<user>``: every pytest that starts makes that one 0700 again, and sessions of a
#: run still going, which run as users of their own, could then no longer reach their folders.
RUNS_ROOT = Path(tempfile.gettempdir()) / "keepalive-tests"
#: Finished runs' folders kept for a look afterwards, newest first (as pytest keeps 3).
KEEP_RUNS = 3


#: What each xdist worker's services get of their own, from the worker's number: session users
#: (keepalive/engine/users.py) above the default range, which the services of tests that leave
#: out every KEEPALIVE_* setting (as a user's login would) keep; X displays above the default
#: base (keepalive/engine/allocation.py: display_in_use cannot see a number another service
#: has only just handed out).
def worker_settings(index: int) -> dict[str, str]:
    first_uid = 62000 + 1000 * index
    return {"KEEPALIVE_SESSION_UIDS": f"{first_uid}-{first_uid + 999}",
            "KEEPALIVE_DISPLAY_BASE": str(1100 + 1000 * index)}


WORKER_SETTINGS = tuple(worker_settings(0))


def worker_environment() -> dict[str, str]:
    """This worker's WORKER_SETTINGS as they are in its environment (none outside xdist), for a
    service whose environment a test builds by hand (e.g. a JupyterHub spawner's)."""
    return {name: os.environ[name] for name in WORKER_SETTINGS if name in os.environ}


def pytest_configure(config: pytest.Config) -> None:
    workerinput = getattr(config, "workerinput", None)
    if workerinput is not None:
        for name, value in worker_settings(int(workerinput["workerid"].removeprefix("gw"))).items():
            os.environ.setdefault(name, value)  # what the one running the tests set wins
    if config.option.basetemp is not None or workerinput is not None:
        return  # given on the command line, or an xdist worker (its controller's run folder)
    RUNS_ROOT.mkdir(mode=0o711, exist_ok=True)
    RUNS_ROOT.chmod(0o711)
    finished = [run for run in RUNS_ROOT.glob("run-*")
                if not (run.name[4:].isdigit() and psutil.pid_exists(int(run.name[4:])))]
    for run in sorted(finished, key=lambda run: run.stat().st_mtime, reverse=True)[KEEP_RUNS:]:
        shutil.rmtree(run, ignore_errors=True)
    config.option.basetemp = str(RUNS_ROOT / f"run-{os.getpid()}")


#: Folders whose tests run real services, sessions and browsers: all of them marked ``e2e``.
#: scripts/test.sh runs the others in parallel (``-m "not e2e"``), these three at a time.
END_TO_END = ("e2e", "integration")
#: Fixture scopes wider than a test and narrower than the run: what a module's tests share.
SHARED_SCOPES = ("package", "module", "class")


def shares_a_module_fixture(item: pytest.Item) -> bool:
    """Whether the test uses a module- (or class-) scoped fixture of the test suite's own; not
    a plugin's (baseid ""), which every test of a kind may use without sharing anything."""
    info = getattr(item, "_fixtureinfo", None)
    if info is None:
        return False
    return any(definition.scope in SHARED_SCOPES and definition.baseid
               for definitions in info.name2fixturedefs.values() for definition in definitions)


@pytest.hookimpl(tryfirst=True)  # before xdist's own, which reads the xdist_group marks
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Mark the end-to-end tests; put those that share a module's fixture in one xdist group;
    run the Playwright tests last, whatever order the paths were given in.

    pytest-playwright's sync API keeps an event loop running in the main thread from its
    first test to the end of the session; asyncio-based tests (pytest-asyncio, pytest-jupyter)
    collected after it would find that loop busy. (A module with both kinds makes its
    module-scoped fixtures twice: test_limits' service.)
    """
    tests = Path(__file__).parent
    for item in items:
        relative = item.path.relative_to(tests) if item.path.is_relative_to(tests) else item.path
        if relative.parts[:1] and relative.parts[0] in END_TO_END:
            item.add_marker(pytest.mark.e2e)
            if shares_a_module_fixture(item):
                item.add_marker(pytest.mark.xdist_group(str(relative)))
    # per test, not per module: a module's asyncio test after its own Playwright test failed
    # ("Playwright Sync API inside the asyncio loop", test_sessions' screenshot test)
    items.sort(key=lambda item: bool(PLAYWRIGHT_FIXTURES & set(getattr(item, "fixturenames", ()))))
    workerinput = getattr(config, "workerinput", None)
    if workerinput is not None and config.option.basetemp is not None:
        write_groups(Path(config.option.basetemp).parent / GROUPS_FILE, items, workerinput["workerid"])


# -- xdist groups ------------------------------------------------------------------------------
# xdist's own loadgroup marks a grouped test by a suffix to its node id, which pytest 9 no
# longer lets a plugin change (the id is computed): every test would be a group of its own. So
# the workers write each grouped test's group into the run's folder as they collect, and the
# controller's scheduler (ModuleGroupScheduling) reads it once every worker has collected.

#: The file, in the run's folder, that maps each grouped test's node id to its group.
GROUPS_FILE = "xdist-groups.json"


def write_groups(path: Path, items: list[pytest.Item], worker: str) -> None:
    """Every item's xdist_group (its marks' names, joined), for the items that have one."""
    groups = {}
    for item in items:
        names = sorted({str(mark.args[0] if mark.args else mark.kwargs.get("name", "default"))
                        for mark in item.iter_markers("xdist_group")})
        if names:
            groups[item.nodeid] = "_".join(names)
    writing = path.with_name(f"{path.name}.{worker}")
    writing.write_text(json.dumps(groups))
    writing.replace(path)  # each worker collects the same tests: any one's file will do


def pytest_xdist_make_scheduler(config: pytest.Config, log):
    """``--dist loadgroup``: xdist's LoadScope scheduling, with the scopes from GROUPS_FILE
    (a grouped test goes with its group, any other test alone). Largest groups are sent first."""
    if config.getvalue("dist") != "loadgroup":
        return None
    from xdist.scheduler import LoadScopeScheduling

    class ModuleGroupScheduling(LoadScopeScheduling):
        groups: dict[str, str] | None = None

        def _split_scope(self, nodeid: str) -> str:
            if self.groups is None:  # asked for once every worker has collected, so written
                self.groups = json.loads((Path(config.option.basetemp) / GROUPS_FILE).read_text())
            return self.groups.get(nodeid, nodeid)

    return ModuleGroupScheduling(config, log)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo):
    """A failing test's report ends with the tail of each running service's log.

    CI keeps only what pytest prints: without the service's own account (a recovery that
    failed, a child that exited), a timeout in an end-to-end test says what went wrong but
    never why.
    """
    outcome = yield
    report = outcome.get_result()
    if not report.failed:
        return
    kept = keep_logs(item.nodeid, report.when)
    if kept is not None:
        report.sections.append(("kept logs", str(kept)))
    for service in LIVE_SERVICES:
        try:
            lines = service.log_text().splitlines()
        except OSError:
            continue
        report.sections.append((f"keepalive service log ({service.url}), last lines", "\n".join(lines[-SERVICE_LOG_LINES:])))
    for name, path in OTHER_LOGS.items():
        try:
            lines = path.read_text(errors="replace").splitlines()
        except OSError:
            continue
        report.sections.append((f"{name}, last lines", "\n".join(lines[-SERVICE_LOG_LINES:])))


#: Where the logs of failed tests are kept, a folder per test: readable after the run is over
#: (the services' state dirs, and with them the sessions' logs, go at teardown).
KEPT_LOGS = Path(os.environ.get("TMPDIR") or "/tmp") / "keepalive-test-logs"
#: The folders kept in this run, for the summary at its end.
KEPT: list[Path] = []


def keep_logs(nodeid: str, phase: str) -> Path | None:
    """Copy every running service's log and its sessions' logs (and OTHER_LOGS, OTHER_STATE_DIRS'
    sessions' logs, the test browser's console, TEST_ARTIFACTS) to ``KEPT_LOGS/<test id>/``;
    returns that folder, or None when there was nothing to keep."""
    folder = KEPT_LOGS / re.sub(r"[^\w.\[\]-]+", "_", nodeid).strip("_") / phase
    sources: list[tuple[Path, Path]] = []
    for service in LIVE_SERVICES:
        here = Path(f"service-{service.url.rsplit(':', 1)[-1]}")
        sources.append((service.log_path, here / "service.log"))
        for session_logs in (service.state_dir / "sessions").glob("*/logs"):
            for log in session_logs.glob("*.log"):
                sources.append((log, here / "sessions" / session_logs.parent.name / log.name))
    sources += [(path, Path(f"{name.replace(' ', '-')}.log")) for name, path in OTHER_LOGS.items()]
    for name, state_dir in OTHER_STATE_DIRS.items():  # services no test started itself (the hub's)
        for log in (state_dir / "sessions").glob("*/logs/*.log"):
            sources.append((log, Path(name.replace(" ", "-")) / "sessions" / log.parent.parent.name / log.name))
    kept = {Path(name): data for name, data in TEST_ARTIFACTS.items()}
    if PAGE_CONSOLE:
        kept[Path("test-browser-console.log")] = ("\n".join(PAGE_CONSOLE) + "\n").encode()
    for source, target in sources:
        try:
            kept[target] = source.read_bytes()
        except OSError:
            continue  # a session that just went, a log not written yet
    if not kept:
        return None
    for target, data in kept.items():
        (folder / target).parent.mkdir(parents=True, exist_ok=True)
        (folder / target).write_bytes(data)
    KEPT.append(folder)
    return folder


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    """Under xdist the folders are kept by the workers: the controller learns them from the
    reports, for its summary."""
    for name, content in report.sections:
        if name == "kept logs" and Path(content) not in KEPT:
            KEPT.append(Path(content))


def pytest_terminal_summary(terminalreporter) -> None:
    if KEPT:
        terminalreporter.section("logs of failed tests, kept")
        for folder in KEPT:
            terminalreporter.write_line(str(folder))


#: How much of a service's log a failing test's report shows.
SERVICE_LOG_LINES = 120
#: Logs of other running parts (a JupyterHub and what it runs), by name, shown the same way.
OTHER_LOGS: dict[str, Path] = {}
#: State dirs of services started by other parts (keepalive under a JupyterHub), by name: their
#: sessions' logs (xpra's, Chromium's) are kept with a failing test's logs.
OTHER_STATE_DIRS: dict[str, Path] = {}


def make_passable(path: Path) -> None:
    """As root, let session users pass through the folders above ``path`` (o+x, never o+r).

    pytest makes its temporary folders 0700; a state dir inside one could not hold sessions that
    run as users of their own (the service refuses such a state dir, naming the folder).
    """
    if os.geteuid() != 0:
        return
    for folder in [path, *path.parents]:
        if folder == Path("/") or not folder.exists():
            continue
        mode = folder.stat().st_mode
        if not mode & 0o001:
            folder.chmod((mode & 0o7777) | 0o001)


@pytest.fixture(autouse=True)
def _passable_tmp_path(request) -> None:
    if "tmp_path" in request.fixturenames:
        make_passable(request.getfixturevalue("tmp_path"))


def run_coroutine(coroutine):
    """``asyncio.run`` in a thread of its own: works even while Playwright's loop runs here."""
    import asyncio
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(1) as pool:
        return pool.submit(asyncio.run, coroutine).result()


#: What a test keeps for a look should it fail (the last screenshot it read, ...), by file name;
#: emptied before each test.
TEST_ARTIFACTS: dict[str, bytes] = {}


@pytest.fixture(autouse=True)
def _fresh_test_artifacts() -> None:
    TEST_ARTIFACTS.clear()


#: What the test's own browser pages printed (console messages, uncaught errors), kept with a
#: failing test's logs: xpra's HTML5 client says there why it painted nothing.
PAGE_CONSOLE: list[str] = []


@pytest.fixture
def context(context):
    """pytest-playwright's context, every page of which reports its console to PAGE_CONSOLE."""
    PAGE_CONSOLE.clear()

    def listen(page) -> None:
        def note(kind: str, text: str) -> None:
            PAGE_CONSOLE.append(f"{time.strftime('%H:%M:%S')} {page.url} {kind}: {text}")

        page.on("console", lambda message: note(f"console.{message.type}", message.text))
        page.on("pageerror", lambda error: note("uncaught", str(error)))

    context.on("page", listen)
    yield context
    PAGE_CONSOLE.clear()


@pytest.fixture(scope="session")
def browser_type_launch_args(browser_type_launch_args):
    return {
        **browser_type_launch_args,
        "executable_path": CHROMIUM,
        "args": [
            "--no-sandbox",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--disable-quic",
            "--no-first-run",
        ],
    }


def session_processes(session_id: str | None = None, state_dir: Path | None = None) -> list[psutil.Process]:
    """Processes of keepalive sessions: of one session, or of any under ``state_dir``.

    Found independently of keepalive's own reaper: by the environment marker, or by the
    session folder in the command line (Chromium empties its zygote children's environment).
    """
    found = []
    for process in psutil.process_iter():
        try:
            env = process.environ()
            argv = " ".join(process.cmdline())
        except (psutil.Error, OSError):
            continue
        marker = env.get(SESSION_MARKER)
        if marker is not None:
            if session_id is not None and marker != session_id:
                continue
            if state_dir is not None and not env.get("XDG_RUNTIME_DIR", "").startswith(str(state_dir)):
                continue
            found.append(process)
        elif "/sessions/" in argv:
            if session_id is not None and f"/sessions/{session_id}/" not in argv:
                continue
            if state_dir is not None and str(state_dir) not in argv:
                continue
            if session_id is None and state_dir is None:
                continue
            found.append(process)
    return found


@dataclass
class Service:
    """A running ``keepalive serve``: its URL, token, an authenticated client, its state dir."""

    url: str
    token: str
    state_dir: Path
    log_path: Path
    process: subprocess.Popen
    client: httpx.Client = field(init=False)
    started: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.client = httpx.Client(
            base_url=self.url,
            headers={"Authorization": f"Bearer {self.token}"},
            timeout=240,
            trust_env=False,
        )

    def start_session(self, **body) -> dict:
        """POST /sessions and insist on 201; the session is stopped at teardown if still there."""
        response = self.client.post("/sessions", json=body)
        assert response.status_code == 201, response.text
        session = response.json()
        self.started.append(session["id"])
        return session

    def stop_session(self, session_id: str) -> None:
        response = self.client.delete(f"/sessions/{session_id}")
        assert response.status_code in (204, 404), response.text

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace")

    def session_folder(self, session_id: str) -> Path:
        return self.state_dir / "sessions" / session_id

    def record(self, session_id: str) -> dict:
        """The session's record as the service last wrote it (its folder's session.json)."""
        return json.loads((self.session_folder(session_id) / "session.json").read_text())


#: Services started by start_service and not yet stopped: tests.e2e.kiosk finds sessions there.
LIVE_SERVICES: list[Service] = []


def start_service(state_dir: Path, extra_env: dict[str, str] | None = None, timeout: float = 60) -> Service:
    state_dir.mkdir(parents=True, exist_ok=True)
    make_passable(state_dir)
    token = secrets.token_urlsafe(16)
    env = {
        **os.environ,
        "KEEPALIVE_STATE_DIR": str(state_dir),
        "KEEPALIVE_API_TOKEN": token,
        # any free port, bound by the service itself and named in its banner: a port found free
        # here could be taken before the service binds it (as a Jupyter server's was, in CI)
        "KEEPALIVE_PORT": "0",
        "KEEPALIVE_HOST": "127.0.0.1",
        # xpra ends this long after the last viewer left (60 s by default): short, so that the
        # viewer tests see it come and go. (A page whose websocket comes after the linger ran
        # out, on a slow machine, starts a new xpra: slower, nothing lost.)
        "KEEPALIVE_VIEWER_LINGER": "4",
        **(extra_env or {}),
    }
    # a template made once per test run keeps every service from making its own
    template = os.environ.get("KEEPALIVE_TEST_PROFILE_TEMPLATE")
    if template and "KEEPALIVE_PROFILE_TEMPLATE" not in env:
        env["KEEPALIVE_PROFILE_TEMPLATE"] = template
    log_path = state_dir / "service.log"
    with log_path.open("wb") as log_file:
        process = subprocess.Popen(
            [sys.executable, "-m", "keepalive", "serve"],
            env=env,
            stdout=log_file,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )

    def banner_url() -> str | None:
        found = SERVING_LINE.search(log_path.read_text(errors="replace"))
        return found and found.group(1)

    try:
        url = wait_until("keepalive serve's banner", banner_url, timeout=timeout, every=0.1,
                         describe=lambda: log_path.read_text(), process=process)
        wait_until("keepalive serve to answer", lambda: answers(f"{url}/health", (200, 503)), timeout=timeout,
                   every=0.1, describe=lambda: log_path.read_text(), process=process)
    except WaitTimeout:
        process.kill()
        raise
    service = Service(url=url, token=token, state_dir=state_dir, log_path=log_path, process=process)
    LIVE_SERVICES.append(service)
    return service


def answers(url: str, statuses: tuple[int, ...] = (200,), **headers: str) -> bool:
    """Whether ``url`` answers with one of ``statuses`` (a condition for ``wait_until``)."""
    try:
        return httpx.get(url, headers=headers, timeout=2, trust_env=False).status_code in statuses
    except httpx.HTTPError:
        return False


def stop_service(service: Service, timeout: float = 60) -> int:
    """SIGTERM, as a user's Ctrl-C or systemd would; returns the exit code."""
    if service in LIVE_SERVICES:
        LIVE_SERVICES.remove(service)
    for session_id in service.started:
        try:
            service.client.delete(f"/sessions/{session_id}", timeout=60)
        except httpx.HTTPError:
            pass
    service.client.close()
    if service.process.poll() is None:
        service.process.send_signal(signal.SIGTERM)
        try:
            service.process.wait(timeout)
        except subprocess.TimeoutExpired:
            service.process.kill()
            service.process.wait()
            raise AssertionError(f"keepalive serve ignored SIGTERM for {timeout} s")
    return service.process.returncode


def end_serve(url: str, headers: dict, serve: subprocess.Popen, log_path: Path) -> None:
    """Stop what a ``serve`` the test started left running (sessions outlive the service), then
    SIGTERM its process group (serve.sh and the service), insisting on a clean exit."""
    for session in httpx.get(f"{url}/sessions", headers=headers, trust_env=False).json()["sessions"]:
        httpx.delete(f"{url}/sessions/{session['id']}", headers=headers, timeout=120, trust_env=False)
    os.killpg(serve.pid, signal.SIGTERM)
    assert serve.wait(60) == 0, log_path.read_text()


@pytest.fixture(scope="session")
def profile_template(tmp_path_factory, worker_id) -> Iterator[Path]:
    """One Chromium profile template for the whole run, made by keepalive's own code: by the
    first xdist worker that asks, in the run's folder, which every worker's folder is in
    (a Chromium run of some 10 s, once instead of once per worker)."""
    from keepalive.engine.profile import make_template

    if worker_id == "master":
        path = tmp_path_factory.mktemp("template") / "profile.tar.gz"
        run_coroutine(make_template(CHROMIUM, path))
    else:
        folder = tmp_path_factory.getbasetemp().parent / "template"
        folder.mkdir(mode=0o700, exist_ok=True)
        path = folder / "profile.tar.gz"
        with (folder / "lock").open("w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)  # the others wait for the first one's
            if not path.exists():
                making = folder / f"making-{worker_id}.tar.gz"
                run_coroutine(make_template(CHROMIUM, making))
                making.replace(path)
    previous = os.environ.get("KEEPALIVE_TEST_PROFILE_TEMPLATE")
    os.environ["KEEPALIVE_TEST_PROFILE_TEMPLATE"] = str(path)
    yield path
    if previous is None:
        os.environ.pop("KEEPALIVE_TEST_PROFILE_TEMPLATE", None)
    else:
        os.environ["KEEPALIVE_TEST_PROFILE_TEMPLATE"] = previous


def framebuffer_leftovers(service: Service) -> list[str]:
    """Framebuffer folders (keepalive.engine.framebuffer) in /dev/shm of this service's sessions."""
    log = service.log_text()
    return [folder.name for folder in framebuffer.SHM_ROOT.glob("keepalive-fb-*")
            if f"session {folder.name.removeprefix('keepalive-fb-')}" in log]


@pytest.fixture(scope="session")
def keepalive_service(tmp_path_factory, profile_template) -> Iterator[Service]:
    """The real service, shared by the tests of a run; sessions they start are stopped after."""
    service = start_service(tmp_path_factory.mktemp("keepalive-state"))
    yield service
    code = stop_service(service)
    leftovers = session_processes(state_dir=service.state_dir)
    assert code == 0, f"keepalive serve exited with {code}:\n{service.log_text()[-4000:]}"
    assert not leftovers, f"processes outlived the service: {[p.pid for p in leftovers]}"
    assert not framebuffer_leftovers(service), "framebuffers in /dev/shm outlived their sessions"


@pytest.fixture(autouse=True)
def _sessions_end_with_their_test(request) -> Iterator[None]:
    """A test's own sessions on the shared service are stopped when the test ends, passed or
    failed: one failure must not leave sessions behind that push the next tests past
    MAX_SESSIONS. Sessions that a module's fixtures share (started before the test) stay."""
    if "keepalive_service" not in request.fixturenames:
        yield
        return
    service = request.getfixturevalue("keepalive_service")
    before = len(service.started)
    yield
    for session_id in service.started[before:]:
        try:
            service.client.delete(f"/sessions/{session_id}", timeout=60)
        except httpx.HTTPError:
            pass
    del service.started[before:]


@pytest.fixture
def service_factory(tmp_path_factory, profile_template) -> Iterator:
    """Start extra services with their own settings (e.g. MAX_SESSIONS); all stopped at teardown.
    Services of one name share a state dir."""
    services: list[Service] = []
    # not the test's tmp_path, whose name is the test's: a session's sockets live in the state
    # dir, and a socket's path may not be longer than 107 bytes
    folder = tmp_path_factory.mktemp("services")

    def make(name: str = "svc", **env: str) -> Service:
        service = start_service(folder / name, {f"KEEPALIVE_{key.upper()}": str(value) for key, value in env.items()})
        services.append(service)
        return service

    yield make
    # the newest first: services on one state dir follow each other, and the live one stops its sessions
    for service in reversed(services):
        stop_service(service)
    for service in services:
        assert session_processes(state_dir=service.state_dir) == []
        assert framebuffer_leftovers(service) == [], "framebuffers in /dev/shm outlived their sessions"
