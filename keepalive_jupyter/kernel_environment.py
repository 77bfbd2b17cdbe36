"""``PUT {base_url}api/keepalive/kernel-environment``: what kernels started from now on inherit.

A session taken from keepalive's warm pool has a Jupyter server that was started before anyone
knew whose it would be, so its environment lacks the user's HeavyAI connection, and its working
directory is the pool's own folder (a kernel started without a notebook path, a console, runs
there). keepalive calls this when the session is taken: the connection goes into the server's
environment, and the server moves to its root directory, which now leads to the user's home. The
kernels the user starts afterwards inherit both, exactly as those of a session started cold do.

Only the variables the HeavyAI session manager reads the connection from may be set: this is
no general way into the server's environment.
"""

from __future__ import annotations

import json
import os

from jupyter_server.base.handlers import APIHandler
from tornado import web

from .heavyai import HeavyAISessionManager

#: A connection's protocol, host or port: short values, nothing that could carry a payload.
MAX_VALUE_LENGTH = 1024


def settable_names(manager) -> set[str]:
    """The environment variables the configured session manager reads the connection from."""
    if not isinstance(manager, HeavyAISessionManager):
        return set()
    return {manager.protocol, manager.host, manager.port}


class KernelEnvironmentHandler(APIHandler):
    """Sets the HeavyAI connection variables in the server's environment and moves the server
    to its root directory again (token only)."""

    _track_activity = False

    @web.authenticated
    async def put(self):
        if not self.token_authenticated:
            raise web.HTTPError(403, "The kernel environment is set with a token in the Authorization header")
        try:
            body = json.loads(self.request.body or b"{}")
        except ValueError:
            raise web.HTTPError(400, "The body is not JSON") from None
        variables = body.get("variables") if isinstance(body, dict) else None
        if not isinstance(variables, dict):
            raise web.HTTPError(400, 'Expected {"variables": {"NAME": "value", ...}}')
        allowed = settable_names(self.settings.get("heavyai_session_manager"))
        for name, value in variables.items():
            if name not in allowed:
                raise web.HTTPError(400, f"{name!r} may not be set here (allowed: {', '.join(sorted(allowed)) or 'none'})")
            if not isinstance(value, str) or len(value) > MAX_VALUE_LENGTH or "\0" in value:
                raise web.HTTPError(400, f"{name}: expected a string of at most {MAX_VALUE_LENGTH} characters")
        os.environ.update(variables)
        root = self.settings.get("server_root_dir")
        if root:
            os.chdir(root)  # the path is looked up again: it may lead elsewhere than at the start
        self.log.info("keepalive: kernels started from now on get %s and start in %s",
                      ", ".join(sorted(variables)) or "no new variables", root or os.getcwd())
        self.set_status(204)
        self.finish()
