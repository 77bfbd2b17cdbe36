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
