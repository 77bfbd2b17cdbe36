"""A session's viewer server: xpra on the session's display, running only while someone watches.

The display (Xvfb) and the kiosk browser belong to the session and run all the time; xpra is
what lets a person see and drive them. It costs 40 MiB or more per session (a Python process
with GTK and image encoders), which an idle session with nobody watching does not need. So it
starts when a viewer asks for the session (its page or its websocket) and ends ``linger``
seconds after the last viewer left. Nothing is lost either way: xpra takes the kiosk window
over when it starts and hands it back to the root window when it ends, or when it is killed
(X's save-set), and the browser never notices.

An xpra that dies while it should run is logged and shown in health (``healthy``) until the next
viewer brings up a new one.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from pathlib import Path


from keepalive.engine.errors import first_line
from keepalive.engine.httpclient import new_client
from keepalive.engine.process import ChildFailed, ChildProcess

log = logging.getLogger(__name__)

#: What xpra says when its port is taken by someone else.
PORT_TAKEN = "Address already in use"
#: Starts tried for one viewer before it is told xpra cannot start. A start can fail for a
#: moment's reason: the port taken by someone else (another port is tried), or an X error in
#: xpra's own set-up while the kiosk's windows change under it ("BadWindow" in x11_init).
START_ATTEMPTS = 3


class ViewerServerUnavailable(RuntimeError):
    """xpra could not be started for a viewer; the message says why."""


async def xpra_answers(port: int) -> bool:
    """xpra's HTTP server serves its HTML5 client: the viewer can be shown."""
    async with new_client(timeout=2.0) as client:
        response = await client.get(f"http://127.0.0.1:{port}/")
    return response.status_code < 500


class ViewerServer:
    def __init__(
        self,
        session_id: str,
        spawn: Callable[[int, Callable[[ChildProcess, int | None], None]], ChildProcess],
        *,
        port: Callable[[], int | None],
        new_port: Callable[[], int],
        display_up: Callable[[], bool],
        linger: float,
        start_timeout: float,
    ) -> None:
        """``spawn(port, on_exit)``: a new, not yet started xpra for the session's display;
        ``port()``: the loopback port the session reserved for it; ``new_port()``: another one,
        when someone else took that; ``display_up()``: whether there is a display to show (not
        while it starts or is restarted)."""
        self.session_id = session_id
        self._spawn = spawn
        self._port = port
        self._new_port = new_port
        self._display_up = display_up
        self.linger = linger
        self.start_timeout = start_timeout
        self.process: ChildProcess | None = None
        #: Viewers connected right now (websockets); pages fetched without one do not count.
        self.viewers = 0
        #: Why the last xpra ended without being asked to, until a new one runs.
        self.failure: str | None = None
        # Guards every start and stop of xpra, so that two viewers arriving together start one
        # xpra, and a stop after the linger never ends an xpra a viewer has just been given.
        self._lock = asyncio.Lock()
        self._linger: asyncio.TimerHandle | None = None
        self._stopping: asyncio.Task[None] | None = None  # the stop after the linger, held until done
        self._closed = False
        self._starting = False  # within _start: an exit there is a failed start, not a crash

    # -- what the session and the API ask -------------------------------------------------

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.running

    @property
    def healthy(self) -> bool:
        return self.failure is None

    async def ensure(self, join: bool = False) -> int:
        """xpra's port once it serves the viewer, starting it if needed (or ViewerServerUnavailable).

        ``join``: a viewer connects now and counts until it calls ``left()``. Without it (a page
        load) xpra still goes after the linger unless a viewer joins meanwhile.
        """
        async with self._lock:
            if self._closed:
                raise ViewerServerUnavailable("the session's display is stopping")
            if not self._display_up():
                raise ViewerServerUnavailable("the session's display is not running (it is being restarted)")
            if not self.running:
                await self._start()
            if join:
                self.viewers += 1
                self._cancel_linger()
            elif self.viewers == 0:
                self._arm_linger()
            port = self._port()
            assert port is not None
            return port

    def left(self) -> None:
        """A viewer that joined (``ensure(join=True)``) is gone."""
        self.viewers = max(0, self.viewers - 1)
        if self.viewers == 0:
            self._arm_linger()

    async def stop(self, close: bool = False) -> None:
        """End xpra now (the display is going, or the session is). ``close``: never start again.

        Whatever an xpra died of before (its display's death, most likely) is forgotten: the
        next viewer starts a new one on the new display.
        """
        self._cancel_linger()
        async with self._lock:
            self._closed = self._closed or close
            await self._terminate()
            self.failure = None

    def adopt(self, pid: int | None, started_at: float | None, log_path: Path) -> None:
        """An xpra an earlier service started; it goes after the linger unless a viewer comes."""
        if pid is None:
            return
        self.process = ChildProcess.adopt("xpra", pid, started_at, log_path=log_path, on_exit=self._exited)
        if self.running:
            self._arm_linger()

    def detach(self) -> None:
        self._cancel_linger()
        if self.process is not None:
            self.process.detach()

    # -- inside -----------------------------------------------------------------------------

    async def _start(self) -> None:
        self._starting = True
        try:
            await self._start_attempts()
        finally:
            self._starting = False

    async def _start_attempts(self) -> None:
        for attempt in range(1, START_ATTEMPTS + 1):
            port = self._port()
            if port is None:
                raise ViewerServerUnavailable("the session has no display")
            self.process = self._spawn(port, self._exited)
            try:
                await self.process.start()
                await self.process.wait_ready(lambda: xpra_answers(port), self.start_timeout, what="serving the viewer")
            except (ChildFailed, OSError) as error:  # OSError: xpra cannot be run at all
                await self._terminate()
                why = first_line(error)
                if attempt == START_ATTEMPTS or isinstance(error, OSError) or not self._display_up():
                    raise ViewerServerUnavailable(f"xpra did not start: {why}") from error
                if PORT_TAKEN in str(error):
                    log.warning("session %s: port %s was taken by someone else; trying another", self.session_id, port)
                    self._new_port()
                else:
                    log.warning("session %s: xpra did not start (%s); trying again", self.session_id, why)
                continue
            self.failure = None
            log.info("session %s: xpra pid %s serves the viewer on port %s", self.session_id, self.process.pid, port)
            return

    async def _terminate(self) -> None:
        if self.process is not None:
            was_running = self.process.running
            await self.process.terminate(timeout=8.0)
            if was_running:
                log.info("session %s: xpra (pid %s) stopped", self.session_id, self.process.pid)
            self.process = None

    def _exited(self, child: ChildProcess, code: int | None) -> None:
        self.failure = f"xpra exited with code {code}"
        if self._starting:
            return  # it died while starting: _start says so, and tries again
        log.error("session %s: xpra (pid %s) exited unexpectedly with code %s; the next viewer starts a new one",
                  self.session_id, child.pid, code)

    def _arm_linger(self) -> None:
        self._cancel_linger()
        loop = asyncio.get_running_loop()
        self._linger = loop.call_later(self.linger, self._linger_over)

    def _cancel_linger(self) -> None:
        if self._linger is not None:
            self._linger.cancel()
            self._linger = None

    def _linger_over(self) -> None:
        self._linger = None
        self._stopping = asyncio.get_running_loop().create_task(self._stop_unwatched())

    async def _stop_unwatched(self) -> None:
        async with self._lock:
            if self.viewers == 0 and self.running:
                log.info("session %s: nobody has watched for %.0f s; stopping xpra", self.session_id, self.linger)
                await self._terminate()
