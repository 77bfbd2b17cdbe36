"""Kernels that outlive their Jupyter server, and a new server that takes them back.

A kernel started by jupyter_client already runs in a session of its own, so a signal to the
server's process group misses it. Two things still end it with its server: ipykernel's parent
poller, which exits the kernel once ``JPY_PARENT_PID`` is no longer its parent, and the server's
own shutdown, which shuts every kernel down. Here kernels are launched ``independent`` (no
``JPY_PARENT_PID``, so no poller), and a server that exits leaves them running.

The server keeps a small book of its kernels (``keepalive-kernels.json`` in its runtime dir:
id, kernel name, pid, connection file, working directory). A new server reads it when it starts
and adopts every kernel whose process still runs, under the same kernel id: the open notebooks'
sessions (kept in a SQLite file by the same server command) then lead their pages to the kernel
they had. A kernel that cannot be adopted is reported, never silently replaced: it is logged and
listed in :attr:`SurvivingKernelManager.lost`.

Only the session's embedded server is configured with this manager (keepalive's Jupyter
command); a JupyterHub user's own server keeps jupyter_server's manager and its lifecycle.
"""

from __future__ import annotations

import json
import os
import select
import signal
import time
from pathlib import Path
from typing import Any

from jupyter_client.provisioning.local_provisioner import LocalProvisioner
from jupyter_server.services.kernels.kernelmanager import AsyncMappingKernelManager, ServerKernelManager
from traitlets import Bool, Unicode, default

#: The book's name in the server's runtime dir (beside the kernels' connection files).
BOOK_NAME = "keepalive-kernels.json"


class ForeignProcess:
    """What jupyter_client expects of a kernel's ``Popen``, for a process another server started.

    Only a parent may wait for a process; anyone may watch a pidfd, which also cannot be fooled
    by a reused pid once opened. The exit status of a process that is not our child is unknown:
    -1 stands for it.
    """

    #: no pipes: the kernel writes to the log its first server gave it
    stdin = stdout = stderr = None

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.returncode: int | None = None
        self._pidfd = os.pidfd_open(pid)

    def poll(self) -> int | None:
        if self.returncode is None:
            ready, _, _ = select.select([self._pidfd], [], [], 0)
            if ready:
                self._ended()
        return self.returncode

    def wait(self, timeout: float | None = None) -> int:
        if self.returncode is None:
            ready, _, _ = select.select([self._pidfd], [], [], timeout)
            if not ready:
                raise TimeoutError(f"kernel process {self.pid} still runs")
            self._ended()
        assert self.returncode is not None
        return self.returncode

    def _ended(self) -> None:
        self.returncode = -1
        os.close(self._pidfd)

    def send_signal(self, signum: int) -> None:
        if self.poll() is None:
            signal.pidfd_send_signal(self._pidfd, signum)

    def terminate(self) -> None:
        self.send_signal(signal.SIGTERM)

    def kill(self) -> None:
        self.send_signal(signal.SIGKILL)


class SurvivingProvisioner(LocalProvisioner):
    """The local provisioner, launching kernels that outlive the server (no parent poller), and
    able to take over a kernel process that an earlier server launched."""

    async def launch_kernel(self, cmd: list[str], **kwargs: Any):
        kwargs["independent"] = True  # jupyter_client then sets no JPY_PARENT_PID
        return await super().launch_kernel(cmd, **kwargs)

    def adopt(self, pid: int, cwd: str | None) -> None:
        self.process = ForeignProcess(pid)
        self.pid = pid
        try:
            self.pgid = os.getpgid(pid)
        except OSError:
            self.pgid = None
        self.cwd = cwd
        assert self.parent is not None
        self.connection_info = self.parent.get_connection_info()


class SurvivingServerKernelManager(ServerKernelManager):
    """A kernel's manager whose local kernels are launched by :class:`SurvivingProvisioner`."""

    async def _async_pre_start_kernel(self, **kw: Any):
        if self.provisioner is None and _uses_local_provisioner(self.kernel_spec):
            self.provisioner = SurvivingProvisioner(
                kernel_id=self.kernel_id or kw.get("kernel_id") or "", kernel_spec=self.kernel_spec, parent=self
            )
        return await super()._async_pre_start_kernel(**kw)

    async def _async_launch_kernel(self, kernel_cmd: list[str], **kw: Any) -> None:
        await super()._async_launch_kernel(kernel_cmd, **kw)
        # a new process, also when the restarter launched it: the book must name its pid
        if isinstance(self.parent, SurvivingKernelManager) and self.kernel_id in self.parent:
            self.parent._write_book()


def _uses_local_provisioner(kernel_spec) -> bool:
    """Whether the spec asks for jupyter_client's default provisioner (or none): others are
    the spec's own business."""
    wanted = ((getattr(kernel_spec, "metadata", None) or {}).get("kernel_provisioner") or {}).get("provisioner_name")
    return wanted in (None, "local-provisioner")


class SurvivingKernelManager(AsyncMappingKernelManager):
    """jupyter_server's kernel manager, with kernels that outlive the server (see the module)."""

    book_path = Unicode(help="The book of running kernels; default: keepalive-kernels.json in the runtime dir.").tag(
        config=True
    )
    keep_kernels_on_exit = Bool(
        True, help="Leave the kernels running when the server exits (a new server adopts them)."
    ).tag(config=True)

    @default("kernel_manager_class")
    def _default_kernel_manager_class(self):
        return "keepalive_jupyter.surviving_kernels.SurvivingServerKernelManager"

    @default("book_path")
    def _default_book_path(self):
        return str(Path(self.connection_dir) / BOOK_NAME)

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        #: Kernels in the book that could not be adopted: {"kernel_id", "kernel_name", "notebook",
        #: "pid", "why", "found_at"} (``GET /api/keepalive/activity`` lists them as ``lost``).
        self.lost: list[dict] = []

    # -- the book ----------------------------------------------------------------------------

    def _read_book(self) -> dict[str, dict]:
        try:
            book = json.loads(Path(self.book_path).read_text())
        except FileNotFoundError:
            return {}
        except (OSError, ValueError) as error:
            self.log.warning("keepalive: the book of kernels cannot be read (%s); no kernel adopted", error)
            return {}
        return {k: v for k, v in book.items() if isinstance(v, dict)} if isinstance(book, dict) else {}

    def _write_book(self) -> None:
        """Every kernel this server manages now, written whole (a temporary file renamed over)."""
        book = {}
        for kernel_id, km in list(self._kernels.items()):
            provisioner = km.provisioner
            pid = getattr(provisioner, "pid", None)
            if pid is None:
                continue
            book[kernel_id] = {
                "kernel_name": km.kernel_name,
                "pid": pid,
                "connection_file": km.connection_file,
                "cwd": str(getattr(provisioner, "cwd", "") or ""),
                "started_at": getattr(km, "keepalive_started_at", time.time()),
                "notebook": getattr(km, "keepalive_notebook", None),
            }
        path = Path(self.book_path)
        temporary = path.with_name(f".{path.name}.{os.getpid()}")
        descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o600)
        with os.fdopen(descriptor, "w") as file:
            json.dump(book, file)
        os.replace(temporary, path)

    # -- what changes the book ----------------------------------------------------------------

    async def _async_start_kernel(self, *, kernel_id=None, path=None, **kwargs):
        known = kernel_id is not None and kernel_id in self
        kernel_id = await super()._async_start_kernel(kernel_id=kernel_id, path=path, **kwargs)
        if not known:
            km = self.get_kernel(kernel_id)
            km.keepalive_started_at = time.time()
            km.keepalive_notebook = self._notebook_of(kwargs.get("env") or {})
            self._write_book()
        return kernel_id

    start_kernel = _async_start_kernel

    def remove_kernel(self, kernel_id):
        km = super().remove_kernel(kernel_id)
        self._write_book()
        return km

    def _notebook_of(self, env: dict) -> str | None:
        """The notebook (or console) a kernel is started for, as jupyter_server names it to the
        kernel (an OS path), relative to the server's root where it lies below it."""
        path = env.get("JPY_SESSION_NAME") or None
        if path and os.path.isabs(path):
            relative = os.path.relpath(path, self.root_dir)
            if not relative.startswith(os.pardir):
                return relative
        return path

    # -- exit and adoption ---------------------------------------------------------------------

    async def _async_shutdown_all(self, now: bool = False) -> None:
        if not self.keep_kernels_on_exit:
            await super()._async_shutdown_all(now=now)
            return
        # The server exits: let go of every kernel, leaving it running and in the book.
        for kernel_id, km in list(self._kernels.items()):
            self.stop_watching_activity(kernel_id)
            km.stop_restarter()
            km._close_control_socket()
        self.log.info("keepalive: the server exits; %d kernel(s) left running for the next one", len(self._kernels))

    shutdown_all = _async_shutdown_all

    def adopt_running(self) -> list[str]:
        """Take over the kernels of the book whose processes still run; returns their ids.

        A kernel is adopted only if its process is this user's and names its connection file in
        its command line (a pid in the book may have been reused since).
        """
        adopted = []
        for kernel_id, entry in self._read_book().items():
            if kernel_id in self:
                continue
            why = self._cannot_adopt(entry)
            if why is None:
                try:
                    self._adopt(kernel_id, entry)
                except Exception as error:  # one bad entry must not keep the server from starting
                    why = f"could not be taken over: {error}"
                else:
                    adopted.append(kernel_id)
                    continue
            self.log.warning("keepalive: kernel %s (%s, pid %s) is gone: %s", kernel_id,
                             entry.get("kernel_name"), entry.get("pid"), why)
            self.lost.append({"kernel_id": kernel_id, "kernel_name": entry.get("kernel_name"),
                              "notebook": entry.get("notebook"), "pid": entry.get("pid"), "why": why,
                              "found_at": time.time()})
        self._write_book()  # the lost ones leave it
        if adopted:
            self.log.info("keepalive: adopted %d running kernel(s): %s", len(adopted), ", ".join(adopted))
        return adopted

    @staticmethod
    def _cannot_adopt(entry: dict) -> str | None:
        pid, connection_file = entry.get("pid"), entry.get("connection_file")
        if not isinstance(pid, int) or not isinstance(connection_file, str):
            return "its entry in the book is incomplete"
        try:
            owner = os.stat(f"/proc/{pid}").st_uid
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        except OSError:
            return "its process ended"
        if owner != os.getuid() or os.fsencode(connection_file) not in cmdline:
            return "its process ended (the pid now belongs to another process)"
        if not os.path.isfile(connection_file):
            return "its connection file is gone"
        return None

    def _adopt(self, kernel_id: str, entry: dict) -> None:
        km = self.kernel_manager_factory(
            parent=self, log=self.log, connection_file=entry["connection_file"], kernel_name=entry["kernel_name"],
        )
        km.load_connection_file()
        km.kernel_id = kernel_id
        provisioner = SurvivingProvisioner(kernel_id=kernel_id, kernel_spec=km.kernel_spec, parent=km)
        provisioner.adopt(entry["pid"], entry.get("cwd") or None)
        km.provisioner = provisioner
        # what a restart launches again: the same working directory, this server's environment
        km._launch_args = {"cwd": entry.get("cwd") or self.root_dir}
        km._attempted_start = True
        km.ready.set_result(None)
        km.keepalive_started_at = entry.get("started_at", time.time())
        km.keepalive_notebook = entry.get("notebook")
        km.execution_state = "idle"  # until its next status message says otherwise
        km.reason = ""
        self._kernels[kernel_id] = km
        self._kernel_connections[kernel_id] = 0
        self._kernel_ports[kernel_id] = km.ports
        self.start_watching_activity(kernel_id)
        self.add_restart_callback(kernel_id, lambda: self._handle_kernel_died(kernel_id), "dead")
        km.start_restarter()
        km._connect_control_socket()
        if not self._initialized_culler:
            self.initialize_culler()

