"""The kiosk's login and what counts as the server's activity (keepalive_jupyter/kiosk.py)."""

from __future__ import annotations

import time
from http.cookies import SimpleCookie
from types import SimpleNamespace

import pytest
from tornado.httpclient import HTTPClientError

from keepalive_jupyter.executions import KernelActivity
from keepalive_jupyter.kiosk import BUSY_ACTIVITY_SETTING, KIOSK_COOKIE, ActivityPolicy


def cookies_of(response) -> SimpleCookie:
    jar = SimpleCookie()
    for header in response.headers.get_list("Set-Cookie"):
        jar.load(header)
    return jar


def test_kiosk_login_with_a_token_sets_the_login_and_kiosk_cookies(fetch):
    response = fetch("api", "keepalive", "kiosk-login", method="POST", body=b"")
    assert response.code == 204
    jar = cookies_of(response)
    assert jar[KIOSK_COOKIE].value == "1" and jar[KIOSK_COOKIE]["httponly"]
    # jupyter_server's own login cookie, which lets the page load without the token in its URL
    login = [name for name in jar if name.startswith("username-")]
    assert login, list(jar)
    # both outlive the browser: a kiosk started again on its profile (a wake) opens the lab with them
    assert jar[KIOSK_COOKIE]["expires"] and jar[login[0]]["expires"]


def test_kiosk_login_needs_a_token_not_a_cookie(fetch):
    login = cookies_of(fetch("api", "keepalive", "kiosk-login", method="POST", body=b""))
    cookie = "; ".join(f"{name}={morsel.value}" for name, morsel in login.items())
    with pytest.raises(HTTPClientError) as refused:
        fetch("api", "keepalive", "kiosk-login", method="POST", body=b"", headers={"Authorization": "", "Cookie": cookie})
    assert refused.value.code == 403


def test_the_kiosks_requests_are_not_the_servers_activity(fetch, jp_serverapp):
    """The extension's ActivityPolicy (on by default) leaves the kiosk's requests out."""
    settings = jp_serverapp.web_app.settings
    settings.pop("api_last_activity", None)
    fetch("api", "contents", headers={"Cookie": f"{KIOSK_COOKIE}=1"})
    assert "api_last_activity" not in settings
    fetch("api", "contents")
    assert "api_last_activity" in settings


def busy_for(seconds: float) -> KernelActivity:
    activity = KernelActivity()
    activity.busy()
    activity.since = time.time() - seconds
    return activity


@pytest.mark.parametrize(
    ("activity", "counts"),
    [(busy_for(30), True), (busy_for(7200), False), (KernelActivity(), False)],
    ids=["busy", "busy-too-long", "idle"],
)
def test_a_busy_kernel_is_activity_for_busy_max_age(activity, counts):
    settings: dict = {}
    app = SimpleNamespace(web_app=SimpleNamespace(settings=settings))
    recorder = SimpleNamespace(records={"k": SimpleNamespace(activity=activity)})
    ActivityPolicy(app, recorder, busy_max_age=3600).note_busy_kernels()
    assert (BUSY_ACTIVITY_SETTING in settings) is counts
