"""keepalive's kiosk browser on this server: how it logs in, and what counts as activity.

Under JupyterHub a server is culled when it has been idle for a while, and "idle" is what the
server reports as its last activity. A kiosk JupyterLab that keepalive keeps open polls the
server all day, so left alone it would keep the server (and its pod) alive forever. The rule
here: the kiosk's own requests are not activity; a kernel running a cell is, for at most
``busy_max_age`` seconds; a user's requests (their own JupyterLab, or keepalive's viewer through
jupyter-server-proxy) are, as always.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime

from jupyter_server.base.handlers import APIHandler
from tornado import web
from tornado.ioloop import PeriodicCallback
from traitlets import Bool, Float
from traitlets.config import LoggingConfigurable

#: Set on the kiosk browser by the login below; marks its requests as the kiosk's.
KIOSK_COOKIE = "keepalive-kiosk"
#: Days the kiosk's cookie lasts, as long as jupyter_server's login cookie (tornado's default):
#: a kiosk browser started again on its saved profile (a wake from standby) opens JupyterLab
#: with both before keepalive logs it in again.
KIOSK_COOKIE_DAYS = 30
#: jupyter_server's last_activity() counts every setting whose name ends in "_last_activity".
BUSY_ACTIVITY_SETTING = "keepalive_busy_last_activity"


class KioskLoginHandler(APIHandler):
    """``POST /api/keepalive/kiosk-login``: the kiosk browser logs in with a token in a header.

    jupyter_server answers a token-authenticated request with its login cookie by itself;
    JupyterHub's single-user server does not (it keeps a token only from a ``?token=`` URL, and
    only if allowed). So under JupyterHub the token this request came with is stored the way
    the hub's own OAuth login stores it. Either way the kiosk's page loads with a clean URL.
    """

    _track_activity = False

    @web.authenticated
    async def post(self):
        if not self.token_authenticated:
            raise web.HTTPError(403, "The kiosk logs in with a token in the Authorization header")
        hub_auth = getattr(self.identity_provider, "hub_auth", None)
        if hub_auth is not None and hasattr(hub_auth, "set_cookie"):
            hub_auth.set_cookie(self, hub_auth.get_token(self, in_cookie=False))
        self.set_cookie(KIOSK_COOKIE, "1", path=self.base_url, httponly=True, expires_days=KIOSK_COOKIE_DAYS)
        self.set_status(204)
        self.finish()


def is_kiosk_request(handler: web.RequestHandler) -> bool:
    return bool(handler.get_cookie(KIOSK_COOKIE))


class ActivityPolicy(LoggingConfigurable):
    """What of keepalive's doing counts as this server's activity (``c.ActivityPolicy.*``)."""

    kiosk_counts = Bool(
        False,
        help="Count the requests of keepalive's kiosk browser as activity of this server. Off: a "
        "server that only a kiosk looks at can be culled as idle (JupyterHub's idle culler).",
    ).tag(config=True)
    busy_counts = Bool(
        True,
        help="Count a kernel running a cell as activity, even when it prints nothing, so that a "
        "long computation keeps its server from being culled.",
    ).tag(config=True)
    busy_max_age = Float(
        24 * 3600.0,
        help="Seconds a kernel's busy spell counts as activity at most (0: no limit), so that a "
        "cell that never ends does not keep the server alive forever.",
    ).tag(config=True)
    busy_interval = Float(60.0, help="Seconds between two looks at the kernels.").tag(config=True)

    def __init__(self, serverapp, recorder, **kwargs):
        super().__init__(**kwargs)
        self.settings = serverapp.web_app.settings
        self.recorder = recorder
        self._poller: PeriodicCallback | None = None

    def start(self) -> None:
        if not self.kiosk_counts:
            _leave_kiosk_requests_out()
        if self.busy_counts:
            self._poller = PeriodicCallback(self.note_busy_kernels, self.busy_interval * 1000)
            self._poller.start()

    def stop(self) -> None:
        if self._poller is not None:
            self._poller.stop()

    def note_busy_kernels(self) -> None:
        """Record now as activity if a kernel has been busy for less than ``busy_max_age``."""
        now = time.time()
        for record in list(self.recorder.records.values()):
            activity = record.activity
            if activity.execution_state != "busy":
                continue
            if self.busy_max_age and now - activity.since > self.busy_max_age:
                continue
            self.settings[BUSY_ACTIVITY_SETTING] = datetime.now(UTC)
            return


_original_update_api_activity = APIHandler.update_api_activity


def _update_api_activity(self: APIHandler) -> None:
    if is_kiosk_request(self):
        return
    _original_update_api_activity(self)


def _leave_kiosk_requests_out() -> None:
    """Make the API handlers skip recording activity for the kiosk's requests.

    jupyter_server records API activity in ``APIHandler.update_api_activity`` and offers no
    other hook for it (``?no_track_activity`` needs the caller's help, and the kiosk is a stock
    JupyterLab), so that one method is wrapped, once per process.
    """
    APIHandler.update_api_activity = _update_api_activity
