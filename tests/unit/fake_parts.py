"""Stand-in session parts for in-process tests of the session and the manager.

They have the shape of keepalive.engine.display.Display and keepalive.engine.jupyter_side.
JupyterSide, but run nothing: a ``FakeWorld`` plays the machine, handing out pids that stay
"alive" until a part stops them, so that a second manager on the same world can adopt what a
first one left, as a second service adopts real processes.
"""

from __future__ import annotations

import asyncio
import itertools
from contextlib import asynccontextmanager

from keepalive.engine.jupyter import JupyterEndpoint
from keepalive.engine.parts import PartHooks, Parts
from keepalive.engine.viewer_server import ViewerServer


class FakeWorld:
    """The machine the fake parts run on: which pids live, and what is made to fail."""

    def __init__(self) -> None:
        self._pids = itertools.count(10_000)
        self.alive: set[int] = set()
        #: Part names ("jupyter", "display", "page") whose next start fails.
        self.fail: set[str] = set()
        #: Part names whose every start fails, until taken out.
        self.fail_always: set[str] = set()
        #: Set while a start should hang until released (a slow start); ``waiting`` is set
        #: once a start hangs there.
        self.hold: asyncio.Event | None = None
        self.waiting = asyncio.Event()

    def spawn(self) -> tuple[int, float]:
        pid = next(self._pids)
        self.alive.add(pid)
        return pid, float(pid)

    def kill(self, pid: int | None) -> None:
        self.alive.discard(pid)

    def runs(self, pid: int | None) -> bool:
        return pid in self.alive

    def process_runs(self, pid: int | None, started_at: float | None) -> bool:
        """keepalive.engine.process.same_process on this machine (a pid's start time is the pid)."""
        return pid in self.alive and started_at == float(pid)

    async def step(self, part: str) -> None:
        if self.hold is not None:
            self.waiting.set()
            await self.hold.wait()
        if part in self.fail or part in self.fail_always:
            self.fail.discard(part)
            raise RuntimeError(f"the fake {part} failed to start")

    def factory(self, allocator, playwright, gateway, cgroup_plan=None):
        """Has the shape of keepalive.engine.parts.real_parts."""

        def make(hooks: PartHooks) -> Parts:
            jupyter = FakeJupyter(self, hooks)
            return Parts(FakeDisplay(self, hooks, allocator), jupyter)

        return make

    @asynccontextmanager
    async def playwright(self):
        yield None


class FakeJupyter:
    def __init__(self, world: FakeWorld, hooks: PartHooks) -> None:
        self.world, self.record = world, hooks.record
        self._persist = hooks.persist
        self.endpoint: JupyterEndpoint | None = None
        self.heavyai_handoff = None

    @property
    def pid(self) -> int | None:
        return self.record.jupyter_pid if self.endpoint is not None else None

    @property
    def healthy(self) -> bool:
        return self.world.runs(self.pid)

    @property
    def lost(self) -> bool:
        return not self.world.runs(self.pid)

    def children(self) -> list:
        return []

    def spared(self) -> set[int]:
        return set()

    async def answers(self, timeout: float) -> bool:
        return True

    lab_path = "/lab"

    async def landing_path(self) -> str:
        return "/lab?reset"

    async def start(self, env) -> JupyterEndpoint:
        await self.world.step("jupyter")
        self.record.jupyter_pid, self.record.jupyter_started_at = self.world.spawn()
        self.endpoint = JupyterEndpoint("http://127.0.0.1:1", "token")
        self.record.jupyter_url = self.endpoint.url
        self._persist()
        return self.endpoint

    async def restart(self, env) -> None:
        await self.stop()
        await self.start(env)

    def adopt(self) -> None:
        self.endpoint = JupyterEndpoint(self.record.jupyter_url or "http://127.0.0.1:1", "token")

    def detach(self) -> None:
        pass

    async def stop(self) -> None:
        if self.endpoint is not None:
            self.world.kill(self.record.jupyter_pid)
            self.endpoint = None

    async def stop_hung(self) -> None:
        await self.stop()

    def heavyai_variables(self) -> dict[str, str]:
        return {}

    def write_heavyai_handoff(self, heavyai) -> None:
        self.heavyai_handoff = heavyai

    async def prepare_kernels(self) -> None:
        pass

    async def carry_drafts(self, requests) -> None:
        pass


class FakeBrowser:
    async def take_over(self, endpoint, path, **options) -> None:
        self.taken = path


class FakeDisplay:
    def __init__(self, world: FakeWorld, hooks: PartHooks, allocator) -> None:
        self.world, self.record, self._allocator = world, hooks.record, allocator
        self._persist = hooks.persist
        self.xpra_password = "secret"
        self.browser: FakeBrowser | None = None
        self.page_open = False
        self.notices: list[str] = []
        self.saves = 0  # save_notebooks() calls
        self.watched = False  # what set_watched() told the page last
        self.quits: list[bool] = []  # each stop(): whether the browser was asked to close itself
        self.start_urls: list[str] = []  # each restart(): the page the browser was started on
        self.opened: list[bool] = []  # each open_page(): whether the browser was started on the page

        def no_xpra(port, on_exit):
            raise RuntimeError("no xpra in unit tests")

        self.viewer_server = ViewerServer(
            self.record.id, no_xpra, port=lambda: self.record.xpra_port, new_port=lambda: 0,
            display_up=lambda: self.running, linger=1.0, start_timeout=1.0,
        )

    def runs(self, name: str) -> bool:
        return self.world.runs(self.record.xvfb_pid if name == "xvfb" else self.record.browser_pid)

    @property
    def running(self) -> bool:
        return self.runs("xvfb") and self.runs("browser")

    @property
    def shows(self) -> bool:
        return self.runs("xvfb")

    @property
    def browser_connected(self) -> bool:
        return self.browser is not None and self.runs("browser")

    @property
    def page_alive(self) -> bool:
        return self.page_open and self.browser_connected

    def children(self) -> list:
        return []

    def pids(self) -> dict:
        return {"xvfb": self.record.xvfb_pid, "browser": self.record.browser_pid, "xpra": None}

    async def page_answers(self, timeout: float) -> bool:
        return True

    async def bridge_answers(self) -> bool:
        return self.runs("browser")

    async def unsent_drafts(self) -> list:
        return []

    async def set_watched(self, watched: bool) -> None:
        self.watched = watched

    async def save_notebooks(self) -> int:
        if "save" in self.world.fail:
            raise RuntimeError("the fake page cannot save")
        self.saves += 1
        return 0

    async def notify(self, text: str) -> None:
        self.notices.append(text)

    async def screenshot(self) -> bytes:
        return b"\x89PNG"

    async def restore_profile(self, template) -> str:
        return "the template"

    async def save_profile(self) -> None:
        pass

    async def start(self, env) -> None:
        await self.world.step("display")
        if self.record.display is None:
            self.record.display = self._allocator.display()
        if self.record.xpra_port is None:
            self.record.xpra_port = self._allocator.port()
        self.record.xvfb_pid, self.record.xvfb_started_at = self.world.spawn()
        self.record.browser_pid, self.record.browser_started_at = self.world.spawn()
        self._persist()

    async def restart(self, env, start_url="about:blank") -> None:
        self.start_urls.append(start_url)
        await self.start(env)

    async def open_page(self, endpoint, path, connect_timeout=None, opened=False) -> None:
        await self.world.step("page")
        self.opened.append(opened)
        self.browser = FakeBrowser()
        self.page_open = True

    async def close_page(self) -> None:
        self.browser, self.page_open = None, False

    async def fit_screen(self) -> bool:
        return True

    async def viewer_port(self, join: bool = False) -> int:
        return await self.viewer_server.ensure(join)

    def release_numbers(self) -> None:
        if self.record.display is not None:
            self._allocator.release_display(self.record.display)
            self.record.display = None
        if self.record.xpra_port is not None:
            self._allocator.release_port(self.record.xpra_port)
            self.record.xpra_port = None

    def adopt(self) -> None:
        if "adopt" in self.world.fail:
            raise RuntimeError("the fake display's record is unreadable")
        self._allocator.reserve(self.record.display, self.record.xpra_port)

    async def reconnect(self) -> bool:
        self.browser = FakeBrowser()
        self.page_open = True
        return True

    async def detach(self) -> None:
        await self.close_page()

    async def stop(self, reap_leftovers: bool = True, quit_browser: bool = False) -> None:
        self.quits.append(quit_browser)
        if "display stop" in self.world.fail:
            self.world.fail.discard("display stop")
            raise RuntimeError("the fake display could not stop")
        await self.close_page()
        await self.viewer_server.stop()
        self.world.kill(self.record.browser_pid)
        self.world.kill(self.record.xvfb_pid)
