"""``POST /sessions/{id}/input`` and the ``input_requested`` event with the real parts: a script
answers a cell's ``input()`` as if typed in the kiosk (the kiosk's page and the file on disk
show it), names the kernel when two wait, and a ``getpass()`` answer is nowhere to be read."""

from __future__ import annotations

import re

from tests.e2e.kiosk import kiosk_page, put_notebook
from tests.e2e.test_activity import EventStream
from tests.e2e.test_outputs_survive import (
    cell_outputs, open_alone_and_run_all, output_text, prompt_text, saved_notebook,
)
from tests.waiting import wait_until

SECRET = "s3cret-answer-7f2e"


def asking(service, session_id: str) -> dict[str, dict]:
    """The session's kernels that wait for input, by notebook, as GET /sessions/{id} shows them."""
    activity = service.client.get(f"/sessions/{session_id}").json()["activity"] or {"kernels": []}
    return {k["notebook"]: k for k in activity["kernels"] if k["running"] and k["running"]["input"]}


def test_a_script_answers_input_as_the_kiosk_would_and_a_password_stays_secret(keepalive_service, playwright):
    service = keepalive_service
    sid = service.start_session(name="answers")["id"]
    stream = EventStream(service, sid)
    post = lambda body: service.client.post(f"/sessions/{sid}/input", json=body)  # noqa: E731

    def timeline_questions() -> list[dict]:
        return [e for e in service.client.get(f"/sessions/{sid}/timeline").json()["events"]
                if e["kind"] == "input_requested"]

    try:
        with kiosk_page(playwright, sid) as page:
            put_notebook(page, "secret.ipynb", ["from getpass import getpass\n"
                                                "token = getpass('token? ')\n"
                                                "print('the token has', len(token), 'characters')"])
            put_notebook(page, "ask.ipynb", ["name = input('name? ')\nprint('hello', name)"])
            nobody = post({"value": "too early"})
            assert nobody.status_code == 409 and "no kernel" in nobody.json()["detail"]

            open_alone_and_run_all(page, "secret.ipynb")
            wait_until("getpass() waiting", lambda: "secret.ipynb" in asking(service, sid), timeout=90, every=0.25)
            # the question goes into the timeline with a picture of the page that asked it
            wait_until("the question's picture in the timeline", lambda: [
                e for e in timeline_questions() if e.get("shot_url")], timeout=60)
            open_alone_and_run_all(page, "ask.ipynb")  # the first kernel goes on waiting meanwhile
            waiting = wait_until("both waiting", lambda: a if len(a := asking(service, sid)) == 2 else None,
                                 timeout=90, every=0.25)
            assert waiting["ask.ipynb"]["running"]["input"] == {"prompt": "name? ", "password": False}
            assert waiting["secret.ipynb"]["running"]["input"] == {"prompt": "token? ", "password": True}

            which = post({"value": "Ada"})
            assert which.status_code == 422 and "kernel_id" in which.json()["detail"]
            assert post({"value": "Ada", "kernel_id": "no-such-kernel"}).status_code == 404
            unknown_field = post({"value": "Ada", "read_only": True})
            assert unknown_field.status_code == 422 and "read_only" in unknown_field.text

            ask_kernel = waiting["ask.ipynb"]["id"]
            answered = post({"value": "Ada", "kernel_id": ask_kernel})
            assert answered.status_code == 200, answered.text
            assert answered.json() == {"kernel_id": ask_kernel, "prompt": "name? "}
            wait_until("the kiosk's cell done", lambda: re.fullmatch(r"\[\d+\]:", prompt_text(page)), timeout=60,
                       every=0.25)
            shown = "\n".join(cell_outputs(page))
            assert "name?  Ada" in shown or "name? Ada" in shown, shown
            assert shown.count("hello Ada") == 1, shown
            ask_file = next(service.state_dir.rglob("ask.ipynb"))
            wait_until("the answer's output in the file on disk", lambda: "hello Ada" in "".join(
                output_text(o) for o in (saved_notebook(ask_file) or {"cells": [{"outputs": []}]})["cells"][0]["outputs"]),
                timeout=30, every=0.25)

        secret_kernel = waiting["secret.ipynb"]["id"]
        answered = post({"value": SECRET, "kernel_id": secret_kernel})
        assert answered.status_code == 200 and answered.json()["prompt"] == "token? "
        wait_until("getpass() answered", lambda: not asking(service, sid), timeout=30, every=0.25)
        again = post({"value": "twice", "kernel_id": secret_kernel})
        assert again.status_code == 409 and secret_kernel in again.json()["detail"]

        requested = wait_until("two input_requested events", lambda: e if len(e := stream.of("input_requested")) == 2
                               else None, timeout=30)
        assert {(e["notebook"], e["prompt"], e["password"]) for e in requested} == {
            ("secret.ipynb", "token? ", True), ("ask.ipynb", "name? ", False)}
        # each goes into the timeline once its thumbnail is taken, which a busy machine may delay
        asked = wait_until("both questions in the timeline", lambda: q if len(q := timeline_questions()) == 2 else None,
                           timeout=30)
        timeline = service.client.get(f"/sessions/{sid}/timeline").json()["events"]
        assert all("shot_url" in e for e in asked), asked
        # the password's answer is nowhere: not in the service's log, the events, the timeline,
        # the session's files (the notebook shows dots), or the Jupyter server's record
        assert SECRET not in service.log_text()
        assert SECRET not in str(stream.events) and SECRET not in str(timeline)
        mine = [service.state_dir / "sessions" / sid, service.state_dir / "homes" / "answers",
                service.state_dir / "timelines" / "answers"]
        for path in (p for folder in mine for p in folder.rglob("*")):
            if path.is_file() and not path.is_symlink():
                assert SECRET.encode() not in path.read_bytes(), f"the password's answer is in {path}"
    finally:
        stream.client.close()
        service.stop_session(sid)
