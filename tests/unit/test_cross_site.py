"""keepalive.api.cross_site: a write another site's page makes is refused; scripts and the
service's own pages pass. In process, through the whole app (its middleware order included)."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

from keepalive.api.cross_site import foreign_reason
from keepalive.app import create_app
from keepalive.settings import Settings

TOKEN = "t0ken"


@pytest.fixture
def client(tmp_path):
    app = create_app(Settings(state_dir=tmp_path, api_token=TOKEN))
    return TestClient(app, base_url="http://hub.example:8000")  # no lifespan: no engine is started


def post(client, **headers):
    # a JSON body labelled text/plain, as an HTML form with enctype="text/plain" sends it; the
    # name is invalid, so a request that gets through answers 422 without starting anything
    return client.post("/sessions", content=b'{"name": "-bad-"}',
                       headers={"Authorization": f"Bearer {TOKEN}", "Content-Type": "text/plain", **headers})


@pytest.mark.parametrize("headers", [
    {"Origin": "http://evil.example", "Sec-Fetch-Site": "cross-site"},
    {"Origin": "http://evil.example"},  # an older browser: no Sec-Fetch-Site
    {"Sec-Fetch-Site": "same-site", "Origin": "http://other.hub.example:8000"},
    {"Origin": "null"},
])
def test_a_write_from_another_sites_page_is_refused_before_the_route(client, headers):
    response = post(client, **headers)
    assert response.status_code == 403
    assert response.json()["detail"].startswith("cross-site request refused")


@pytest.mark.parametrize("headers", [
    {},  # curl -d, a script with a hub token: no Origin at all
    {"Origin": "http://hub.example:8000", "Sec-Fetch-Site": "same-origin"},  # the dashboard
    {"Origin": "http://hub.example:8000"},
    {"Sec-Fetch-Site": "none"},  # typed by the user
])
def test_scripts_and_the_services_own_pages_still_write(client, headers):
    response = post(client, **headers)
    assert response.status_code == 422  # reached the route: the body was read as JSON and checked
    assert response.json()["detail"][0]["loc"][-1] == "name"


def test_reads_are_never_refused(client):
    response = client.get("/sessions/abc", headers={"Authorization": f"Bearer {TOKEN}",
                                                    "Origin": "http://evil.example", "Sec-Fetch-Site": "cross-site"})
    assert response.status_code != 403


def test_a_proxied_request_is_matched_on_its_forwarded_host() -> None:
    headers = {b"host": b"127.0.0.1:8900", b"x-forwarded-host": b"hub.example", b"origin": b"https://hub.example"}
    assert foreign_reason(headers) is None
    assert foreign_reason({**headers, b"origin": b"https://evil.example"}) is not None
