"""What kernels started after a pool session is taken inherit (keepalive_jupyter/kernel_environment.py)."""

from __future__ import annotations

import json
import os

import pytest
from tornado.httpclient import HTTPClientError


@pytest.fixture
def restore_process(monkeypatch):
    """The handler changes this process's environment and working directory: put both back."""
    for name in ("HEAVYAI_PROTOCOL", "HEAVYAI_HOST", "HEAVYAI_PORT"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.chdir(os.getcwd())  # restored at teardown


def put(fetch, body: dict, **headers):
    return fetch("api", "keepalive", "kernel-environment", method="PUT", body=json.dumps(body), **headers)


def test_the_connection_and_the_root_directory_are_what_kernels_get(fetch, jp_root_dir, tmp_path, restore_process):
    os.chdir(tmp_path)  # as a pool server: started somewhere else than its root
    response = put(fetch, {"variables": {"HEAVYAI_HOST": "db.example", "HEAVYAI_PORT": "6278"}})
    assert response.code == 204
    assert os.environ["HEAVYAI_HOST"] == "db.example" and os.environ["HEAVYAI_PORT"] == "6278"
    assert os.path.realpath(os.getcwd()) == os.path.realpath(jp_root_dir)


@pytest.mark.parametrize(("variables", "said"), [
    ({"PATH": "/tmp/evil"}, "'PATH' may not be set here"),
    ({"HEAVYAI_HOST": 5}, "HEAVYAI_HOST: expected a string"),
    ({"HEAVYAI_HOST": "x" * 5000}, "HEAVYAI_HOST: expected a string"),
    ("not an object", "Expected"),
])
def test_anything_else_is_refused_and_nothing_changes(fetch, variables, said, restore_process):
    before = dict(os.environ)
    with pytest.raises(HTTPClientError) as refused:
        put(fetch, {"variables": variables})
    assert refused.value.code == 400
    assert said in refused.value.response.body.decode()
    assert dict(os.environ) == before


def test_a_cookie_is_not_enough(fetch, restore_process):
    with pytest.raises(HTTPClientError) as refused:
        put(fetch, {"variables": {}}, headers={"Authorization": ""})
    assert refused.value.code in (401, 403)
