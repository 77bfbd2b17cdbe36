"""Kernels go first when a session runs out of memory.

keepalive starts a session's Jupyter server (and its kiosk) at a raised OOM score, and tells
the server, in ``KA_KERNEL_OOM_SCORE_ADJ``, the higher score its kernels get: each kernel
is raised to it as it starts or restarts, so the OOM killer, in the session's memory cgroup or
on the whole machine, ends a kernel that grew too big before it touches the browser or this
server. Raising a score needs no privilege; the kernels' children inherit theirs.
"""

from __future__ import annotations

import os

#: Set by keepalive in the server's environment; nothing happens without it.
VARIABLE = "KA_KERNEL_OOM_SCORE_ADJ"
KERNEL_ACTIONS = "https://events.jupyter.org/jupyter_server/kernel_actions/v1"


def score() -> int | None:
    try:
        return int(os.environ[VARIABLE])
    except (KeyError, ValueError):
        return None


def watch_kernels(serverapp, log) -> None:
    """Raise every kernel the server starts or restarts to the score keepalive asked for."""
    wanted = score()
    if wanted is None:
        return

    async def on_kernel_action(logger, schema_id: str, data: dict) -> None:
        if data.get("status") != "success" or data.get("action") not in ("start", "restart"):
            return
        try:
            kernel = serverapp.kernel_manager.get_kernel(data["kernel_id"])
        except KeyError:
            return  # ended meanwhile
        pid = getattr(getattr(kernel, "provisioner", None), "pid", None)
        if pid is None:
            return  # not a local process (a gateway's kernel)
        try:
            with open(f"/proc/{pid}/oom_score_adj", "w") as handle:
                handle.write(str(wanted))
        except OSError as error:
            log.warning("keepalive_jupyter: cannot raise the OOM score of kernel %s: %s", data["kernel_id"], error)

    serverapp.event_logger.add_listener(schema_id=KERNEL_ACTIONS, listener=on_kernel_action)
