"""HTTP handlers of the execution record, the kernels' activity and the drafts.

The data behind them lives elsewhere (executions.py, journal.py and recorder.py, drafts.py); the app in
extension.py routes to them under ``{base_url}api/keepalive/``. The other routes' handlers sit
with what they serve: heavyai.py, kiosk.py, kernel_environment.py.
"""

from __future__ import annotations

import hashlib
import json
import math
import time

from jupyter_server.auth.decorator import authorized
from jupyter_server.base.handlers import APIHandler
from jupyter_server.utils import ensure_async
from tornado import web


class ExecutionsHandler(APIHandler):
    """``GET /api/keepalive/executions?kernel_id=K[&since=N]``: the kernel's recorded executions.

    ``since`` (a sequence number from an earlier answer) leaves out the messages already fetched.
    """

    # What it returns is kernel output: guard it as the kernels API is guarded.
    auth_resource = "kernels"
    # keepalive's kiosk asks this often: its questions are not the user's activity (see kiosk.py)
    _track_activity = False

    @web.authenticated
    @authorized
    async def get(self):
        recorder = self.settings["keepalive_execution_recorder"]
        kernel_id = self.get_argument("kernel_id", "")
        try:
            since = int(self.get_argument("since", "0"))
        except ValueError:
            raise web.HTTPError(400, "since must be an integer") from None
        if kernel_id not in self.kernel_manager:
            raise web.HTTPError(404, "No such kernel")
        recorder.attach(kernel_id)
        record = recorder.refresh(kernel_id)  # what its journal gained since the last look
        self.set_header("Cache-Control", "no-store")
        if record is None:
            self.finish(json.dumps({"kernel_id": kernel_id, "seq": 0, "executions": []}))
            return
        self.finish(json.dumps(record.to_json(since), default=str))


class ActivityHandler(APIHandler):
    """``GET /api/keepalive/activity``: what every kernel is doing (busy or idle since when, the time
    of its last output, the last lines of a running cell, how its last run ended), the notebook
    each kernel runs for, and ``lost``: the kernels an earlier server of this session left that
    had ended before this one could take them back (keepalive_jupyter/surviving_kernels.py; empty
    with another kernel manager).

    ``?after=V&wait=S``: V is the ``version`` of an earlier answer. While the answer would still
    be V, it waits, at most S seconds (up to MAX_WAIT): the service follows a session with one
    request that this server answers when something happens, instead of asking every few seconds.
    """

    auth_resource = "kernels"
    _track_activity = False  # the service's looks are not the user's activity

    #: The longest wait a request may ask for, in seconds.
    MAX_WAIT = 300.0
    #: While waiting, the answer is made again this often even if no kernel did anything: a
    #: notebook renamed, or a kernel started by another route, changes it too.
    RECHECK_SECONDS = 10.0
    _gone = False  # the client closed the connection

    def on_connection_close(self):
        self._gone = True
        super().on_connection_close()

    @web.authenticated
    @authorized
    async def get(self):
        recorder = self.settings["keepalive_execution_recorder"]
        after = self.get_argument("after", None)
        try:
            wait = float(self.get_argument("wait", "0"))
        except ValueError:
            wait = math.nan
        if not math.isfinite(wait):
            raise web.HTTPError(400, "wait must be a number of seconds")
        wait = min(max(wait, 0.0), self.MAX_WAIT)
        deadline = time.monotonic() + wait
        recorder.sync()  # a kernel started a moment ago is listed, idle
        while True:
            answer = await self._answer(recorder)
            left = deadline - time.monotonic()
            if answer["version"] != after or left <= 0 or self._gone:
                break
            await recorder.activity_changed(min(left, self.RECHECK_SECONDS))
        if self._gone:
            return  # the client left; nobody to answer
        self.set_header("Cache-Control", "no-store")
        self.finish(json.dumps(answer, default=str))

    async def _answer(self, recorder) -> dict:
        kernels = [record.activity_json() for record in list(recorder.records.values())]
        lost = getattr(self.kernel_manager, "lost", [])
        notebooks = {}
        for session in await ensure_async(self.session_manager.list_sessions()):
            kernel = session.get("kernel") or {}
            if kernel.get("id"):
                notebooks[kernel["id"]] = session.get("path")
        answer = {"kernels": kernels, "lost": lost, "notebooks": notebooks}
        encoded = json.dumps(answer, sort_keys=True, default=str).encode()
        return {**answer, "version": hashlib.sha256(encoded).hexdigest()[:16]}


class DraftsHandler(APIHandler):
    """Unsaved cell sources of a notebook (see drafts.py).

    ``GET ?path=P``: the drafts that still apply to the file (a deleted cell as ``{"id",
    "deleted": true}``). ``POST`` ``{"path", "base", "page", "seq", "cells": [{"id", "cell_type",
    "source", "after"}], "deleted": [id, ...]}``: cells the page changed or deleted. ``DELETE
    ?path=P``: the page closed the notebook; its drafts go.
    """

    auth_resource = "contents"

    @property
    def drafts(self):
        return self.settings["keepalive_drafts"]

    @web.authenticated
    @authorized
    async def get(self):
        path = self.get_argument("path", "").strip("/")
        self.set_header("Cache-Control", "no-store")
        cells: list = []
        if path in self.drafts.notebooks:
            try:
                model = await ensure_async(self.contents_manager.get(path, content=True, type="notebook"))
            except web.HTTPError as e:
                if e.status_code != 404:
                    raise
                self.drafts.forget(path)  # the notebook is gone (or was renamed): so are its drafts
            else:
                cells = self.drafts.get(path, model["content"], model.get("last_modified"))
        self.finish(json.dumps({"path": path, "cells": cells}))

    @web.authenticated
    @authorized
    async def post(self):
        body = self.get_json_body() or {}
        path, cells = body.get("path"), body.get("cells")
        if not isinstance(path, str) or not path.strip("/") or not isinstance(cells, list):
            raise web.HTTPError(400, "path (a string) and cells (a list) are needed")
        base, page, seq, deleted = body.get("base"), body.get("page"), body.get("seq"), body.get("deleted")
        self.drafts.put(
            path, [c for c in cells if isinstance(c, dict)], base if isinstance(base, str) else None,
            page if isinstance(page, str) else None, seq if isinstance(seq, int) else 0,
            [i for i in deleted if isinstance(i, str)] if isinstance(deleted, list) else None,
        )
        self.set_status(204)
        self.finish()

    @web.authenticated
    @authorized
    async def delete(self):
        self.drafts.forget(self.get_argument("path", ""))
        self.set_status(204)
        self.finish()
