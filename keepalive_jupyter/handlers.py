"""HTTP handlers of the execution record, the kernels' activity and the drafts.

The data behind them lives elsewhere (executions.py, journal.py and recorder.py, drafts.py); the app in
extension.py routes to them under ``{base_url}api/keepalive/``. The other routes' handlers sit
with what they serve: heavyai.py, kiosk.py, kernel_environment.py.
"""

from __future__ import annotations

import json

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
    of its last output, the last lines of a running cell, how its last run ended), and ``lost``: the
    kernels an earlier server of this session left that had ended before this one could take them
    back (keepalive_jupyter/surviving_kernels.py; empty with another kernel manager)."""

    auth_resource = "kernels"
    _track_activity = False  # the service asks every few seconds

    @web.authenticated
    @authorized
    async def get(self):
        recorder = self.settings["keepalive_execution_recorder"]
        recorder.sync()  # a kernel started a moment ago is listed, idle
        self.set_header("Cache-Control", "no-store")
        kernels = [record.activity_json() for record in list(recorder.records.values())]
        lost = getattr(self.kernel_manager, "lost", [])
        self.finish(json.dumps({"kernels": kernels, "lost": lost}, default=str))


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
