"""A JSON body labelled as a form (``curl -d``) is taken as JSON; nothing else changes."""

from __future__ import annotations

from fastapi import FastAPI
from fastapi.testclient import TestClient
from pydantic import BaseModel, ConfigDict

from keepalive.api.json_body import JsonWithoutContentType


class Body(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str


def make_client() -> TestClient:
    app = FastAPI()
    app.add_middleware(JsonWithoutContentType)

    @app.post("/things")
    async def create(body: Body) -> dict:
        return {"name": body.name}

    return TestClient(app)


CURL_FORM = {"Content-Type": "application/x-www-form-urlencoded"}


def test_json_labelled_as_a_form_is_parsed_as_json():
    response = make_client().post("/things", content=b'  {"name": "alice"}', headers=CURL_FORM)
    assert response.status_code == 200, response.text
    assert response.json() == {"name": "alice"}


def test_json_without_any_content_type_is_parsed_as_json():
    response = make_client().post("/things", content=b'{"name": "bob"}')
    assert response.status_code == 200, response.text


def test_json_sent_in_chunks_is_replayed_whole():
    def chunks():
        yield b"   "
        yield b'{"name": '
        yield b'"carol"}'

    response = make_client().post("/things", content=chunks(), headers=CURL_FORM)
    assert response.status_code == 200, response.text
    assert response.json() == {"name": "carol"}


def test_a_real_form_is_still_refused_naming_the_body():
    response = make_client().post("/things", content=b"name=alice", headers=CURL_FORM)
    assert response.status_code == 422
    assert response.json()["detail"][0]["loc"][0] == "body"


def test_broken_json_labelled_as_a_form_is_a_json_error():
    response = make_client().post("/things", content=b'{"name": ', headers=CURL_FORM)
    assert response.status_code == 422
    assert response.json()["detail"][0]["type"] == "json_invalid"


def test_other_content_types_are_left_alone():
    response = make_client().post("/things", content=b'{"name": "x"}', headers={"Content-Type": "application/xml"})
    assert response.status_code == 422  # not relabelled: FastAPI refuses it as before


def test_a_body_over_the_limit_is_refused_before_it_is_read():
    from keepalive.api.body_limit import MAX_BODY_BYTES, BodySizeLimit

    app = FastAPI()
    app.add_middleware(BodySizeLimit)
    seen = []

    @app.post("/things")
    async def create(body: Body) -> dict:
        seen.append(body)
        return {}

    client = TestClient(app)
    big = b'{"name": "' + b"x" * MAX_BODY_BYTES + b'"}'
    assert client.post("/things", content=big, headers={"Content-Type": "application/json"}).status_code == 413

    def chunks():  # no Content-Length: counted as it arrives
        yield b'{"name": "'
        for _ in range(MAX_BODY_BYTES // 65536 + 2):
            yield b"x" * 65536
        yield b'"}'

    response = client.post("/things", content=chunks(), headers={"Content-Type": "application/json"})
    assert response.status_code == 413 and "request body over" in response.json()["detail"]
    assert client.post("/things", json={"name": "small"}).status_code == 200
    assert len(seen) == 1
