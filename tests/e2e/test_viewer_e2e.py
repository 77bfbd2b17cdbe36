"""The viewer through the real service: xpra's HTML5 client in a real browser, keyboard and
mouse through xpra, and the checks that keep strangers out (page and websocket)."""

from __future__ import annotations

import re
from pathlib import Path

import httpx
import psutil
import pytest
from websockets.exceptions import InvalidStatus
from websockets.sync.client import connect as ws_connect
from Xlib import X
from Xlib import display as xdisplay

from keepalive.engine import framebuffer
from tests.conftest import TEST_ARTIFACTS, session_processes
from tests.e2e.kiosk import kiosk_page
from tests.e2e.viewer_helpers import (
    NewNotebookShown,
    canvas_pixels,
    expired_viewer_link,
    looks_like_jupyterlab,
    new_notebook,
    ocr,
    open_viewer,
    png_size,
    run_in_new_cell,
    screenshot,
    viewer_link,
)
from tests.waiting import wait_until

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def session(keepalive_service):
    created = keepalive_service.start_session(name="viewer-e2e")
    yield created
    keepalive_service.stop_session(created["id"])


def test_viewer_url_carries_no_secret(keepalive_service, session):
    url = session["viewer_url"]
    assert url.endswith(f"/sessions/{session['id']}/viewer/")
    assert keepalive_service.token not in url
    assert "ticket" not in url and "password" not in url


def test_viewer_shows_jupyterlab_and_takes_keyboard_and_mouse(keepalive_service, session, page, playwright):
    page.set_viewport_size({"width": 1280, "height": 800})
    open_viewer(page, keepalive_service, session["id"])
    assert "ticket" not in page.url  # the ticket was swapped for a cookie and left the address bar
    stats = canvas_pixels(page)
    assert looks_like_jupyterlab(stats), stats

    new_notebook(page)
    shown = NewNotebookShown(keepalive_service, session["id"])
    wait_until(shown.what, shown, timeout=120, describe=shown.__str__)
    run_in_new_cell(page, "print(6*7)", playwright, session["id"])
    seen = [""]

    def answer_shown() -> str | None:
        seen[0] = ocr(screenshot(keepalive_service, session["id"]))
        return seen[0] if re.search(r"(?m)^\s*42\s*$", seen[0]) else None

    text = wait_until("42 in the session's screenshot", answer_shown,
                      describe=lambda: f"the screenshot last read:\n{seen[0]}")
    assert "print" in text


def start_ticker(page, service, session_id: str, playwright) -> None:
    """Through the viewer: a new notebook whose first cell prints ``tick-NNN`` every second."""
    new_notebook(page)
    shown = NewNotebookShown(service, session_id)
    wait_until(shown.what, shown, timeout=120, describe=shown.__str__)
    run_in_new_cell(page, 'for i in range(900): print(f"tick-{i:03d}", flush=True); __import__("time").sleep(1)',
                    playwright, session_id)


def ticks_on_screen(service, session_id: str) -> list[int]:
    """The tick numbers the session's screenshot shows (the screenshot is kept should the test fail)."""
    shot = screenshot(service, session_id)
    TEST_ARTIFACTS["last-screenshot.png"] = shot
    return [int(n) for n in re.findall(r"tick-(\d{3})", ocr(shot))]


def kiosk_says(playwright, session_id: str) -> str:
    """What the kiosk page itself holds, for a failure that the screen alone cannot explain: its
    visibility and size, the notebook's cells as typed, and the last ticks in its DOM."""
    with kiosk_page(playwright, session_id) as kiosk:
        return kiosk.evaluate("""() => document.visibilityState + ', ' + window.innerWidth + 'x' +
            window.innerHeight + ', cells typed: ' + JSON.stringify([...document.querySelectorAll(
            '.jp-NotebookPanel:not(.lm-mod-hidden) .jp-Cell .jp-InputArea-editor')].map(e => e.innerText)) +
            ', prompts: ' + JSON.stringify([...document.querySelectorAll('.jp-NotebookPanel:not(.lm-mod-hidden)' +
            ' .jp-InputPrompt')].map(e => e.innerText)) + ', ticks in the page: ' +
            (document.body.innerText.match(/tick-\\d+/g) || []).slice(-3)""")


def test_closing_the_viewer_keeps_the_computation_running(keepalive_service, browser, playwright):
    session = keepalive_service.start_session(name="viewer-detach")
    sid = session["id"]
    context = browser.new_context(viewport={"width": 1100, "height": 700})
    page = context.new_page()
    open_viewer(page, keepalive_service, sid)
    # the kiosk browser follows the viewer's window
    wait_until("the kiosk to take the viewer's size", lambda: png_size(screenshot(keepalive_service, sid))[0] == 1100)

    start_ticker(page, keepalive_service, sid, playwright)

    def ticks() -> list[int]:
        return ticks_on_screen(keepalive_service, sid)

    seen_while_watching = max(wait_until("the first ticks", ticks, describe=lambda: kiosk_says(playwright, sid)))
    context.close()  # nobody watches any more

    # with nobody watching, the session goes back to its own size and keeps printing
    wait_until(
        "the session's own size back",
        lambda: png_size(screenshot(keepalive_service, sid)) == (session["width"], session["height"]),
    )
    printed_alone = wait_until("ticks printed while nobody watched", lambda: max(ticks(), default=0) >= seen_while_watching + 3)
    assert printed_alone

    # a new viewer shows the same JupyterLab, including what arrived meanwhile
    context = browser.new_context(viewport={"width": 1280, "height": 800})
    page = context.new_page()
    open_viewer(page, keepalive_service, sid)
    shown = [int(n) for n in re.findall(r"tick-(\d{3})", ocr(page.screenshot()))]
    assert shown and max(shown) >= seen_while_watching + 3, shown
    context.close()
    assert keepalive_service.client.get(f"/sessions/{sid}").json()["state"] == "ready"
    keepalive_service.stop_session(sid)


def viewer_xpra(session_id: str):
    """The session's xpra server (``xpra start :N``), if one runs."""
    for process in session_processes(session_id):
        try:
            argv = process.cmdline()
        except psutil.NoSuchProcess:  # one that has ended since the listing (or a zombie not yet collected)
            continue
        if any(Path(arg).name == "xpra" for arg in argv[:2]) and "start" in argv[:3]:
            return process
    return None


def chromium_pids(session_id: str) -> set[int]:
    """The session's Chromium processes (its helpers come and go: one may end while listed)."""
    found = set()
    for process in session_processes(session_id):
        try:
            if process.name().startswith("chrom"):
                found.add(process.pid)
        except psutil.NoSuchProcess:
            continue
    return found


def test_xpra_runs_only_while_watched_and_its_death_loses_nothing(keepalive_service, browser, playwright):
    """xpra starts for the first viewer; SIGKILLed while a viewer watches and a cell prints, it
    takes nothing with it: no recovery, the same browser and page, the cell still printing, and
    the next viewer gets a new xpra. With nobody watching, it goes after the linger."""
    service = keepalive_service
    session = service.start_session(name="viewer-server")
    sid = session["id"]
    assert viewer_xpra(sid) is None, "xpra runs before anyone asked to watch"

    context = browser.new_context(viewport={"width": 1280, "height": 800})
    page = context.new_page()
    open_viewer(page, service, sid)
    xpra = viewer_xpra(sid)
    assert xpra is not None
    start_ticker(page, service, sid, playwright)

    def ticks() -> list[int]:
        return ticks_on_screen(service, sid)

    before_kill = max(wait_until("the first ticks", ticks, describe=lambda: kiosk_says(playwright, sid)))
    with kiosk_page(playwright, sid) as kiosk:
        kiosk.evaluate("window.__keepaliveProbe = 'the page before xpra died'")
    before = service.client.get(f"/sessions/{sid}").json()
    chromium = chromium_pids(sid)

    xpra.kill()
    wait_until("the service to see xpra die",
             lambda: service.client.get(f"/sessions/{sid}").json()["health"]["xpra"] is False)
    current = service.client.get(f"/sessions/{sid}").json()
    assert current["state"] == "ready" and current["restarts"] == before["restarts"] == 0
    assert current["health"] == {"xpra": False, "browser": True, "page": True, "jupyter": True, "display": False}
    # the same browser, the same page, and the cell went on printing
    assert chromium <= {p.pid for p in session_processes(sid)}
    with kiosk_page(playwright, sid) as kiosk:
        assert kiosk.evaluate("window.__keepaliveProbe") == "the page before xpra died"

    wait_until("ticks printed after xpra died", lambda: max(ticks(), default=0) >= before_kill + 3,
               describe=lambda: f"ticks on screen {ticks()} (before the kill: {before_kill}); "
                                f"the kiosk page: {kiosk_says(playwright, sid)}")
    context.close()

    # the next viewer brings a new xpra, which shows the same JupyterLab
    context = browser.new_context(viewport={"width": 1280, "height": 800})
    page = context.new_page()
    open_viewer(page, service, sid)
    assert viewer_xpra(sid).pid != xpra.pid
    assert service.client.get(f"/sessions/{sid}").json()["health"]["xpra"] is True
    context.close()
    # nobody watches any more: xpra goes after the linger (the test service's is short)
    wait_until("xpra to go with nobody watching", lambda: viewer_xpra(sid) is None, timeout=60)
    assert service.client.get(f"/sessions/{sid}").json()["health"]["xpra"] is True
    service.stop_session(sid)


def framebuffer_file(session_id: str) -> Path:
    return framebuffer.folder_for(session_id) / framebuffer.FILE_NAME


def framebuffer_held(session_id: str) -> int:
    """Bytes of the session's Xvfb framebuffer file that hold pages (a hole holds none)."""
    return framebuffer_file(session_id).stat().st_blocks * 512


def framebuffer_layout(session_id: str) -> framebuffer.XwdLayout:
    with framebuffer_file(session_id).open("rb") as file:
        return framebuffer.XwdLayout.parse(file.read(framebuffer.XWD_HEADER.size))


def screen_share_lit(service, session_id: str, width: int, height: int) -> float:
    """Share of the X screen's pixels that are not black: what Xvfb's framebuffer itself holds."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("XAUTHORITY", str(service.session_folder(session_id) / "run" / "Xauthority"))
        conn = xdisplay.Display(f":{service.record(session_id)['display']}")
    try:
        image = conn.screen().root.get_image(0, 0, width, height, X.ZPixmap, 0xFFFFFFFF)
    finally:
        conn.close()
    pixels = memoryview(image.data).cast("I")
    sample = pixels[::97]
    return sum(1 for p in sample if p & 0xFFFFFF) / len(sample)


def test_an_unwatched_session_holds_only_its_own_screen_of_the_framebuffer(keepalive_service, browser):
    """Xvfb's framebuffer is the viewers' largest size; whenever the screen is the session's own
    size, the service gives the rest back (keepalive.engine.framebuffer), and what the screen
    shows stays whole: at start, and again after a viewer larger than the session has left."""
    service = keepalive_service
    session = service.start_session(name="framebuffer")
    sid, width, height = session["id"], session["width"], session["height"]
    layout = framebuffer_layout(sid)
    assert layout.height > height  # the viewers' largest size: 2560x1600 by default
    row, most = layout.bytes_per_line, layout.pixels_at + (height + 1) * layout.bytes_per_line
    # the rows below the screen hold nothing; the screen's own rows (whole pages) stay
    assert most < 0.6 * layout.file_size and framebuffer_held(sid) <= most, (framebuffer_held(sid), layout)
    assert screen_share_lit(service, sid, width, height) > 0.5  # JupyterLab: mostly white

    # a viewer larger than the session: the screen grows to its window, and Xvfb paints there
    context = browser.new_context(viewport={"width": 1600, "height": 1000})
    page = context.new_page()
    open_viewer(page, service, sid)
    wait_until("the kiosk to take the viewer's size", lambda: png_size(screenshot(service, sid))[0] == 1600,
             describe=lambda: png_size(screenshot(service, sid)))
    wait_until("Xvfb to use the rows below the session's screen", lambda: framebuffer_held(sid) > most + 50 * row)
    context.close()

    # nobody watches: the session's own size again, and the rest given back again
    wait_until("the session's own size back", lambda: png_size(screenshot(service, sid)) == (width, height))
    wait_until("the framebuffer's unseen part given back",
             lambda: framebuffer_held(sid) <= most, describe=lambda: framebuffer_held(sid))
    # once xpra has gone too, the kiosk window draws on the screen itself again, whole
    wait_until("xpra to go with nobody watching", lambda: viewer_xpra(sid) is None, timeout=60)
    wait_until("JupyterLab on the X screen", lambda: screen_share_lit(service, sid, width, height) > 0.5,
             describe=lambda: screen_share_lit(service, sid, width, height))
    # and the next viewer sees it at once (open_viewer waits for JupyterLab's colours)
    context = browser.new_context(viewport={"width": width, "height": height})
    open_viewer(context.new_page(), service, sid)
    context.close()
    folder = framebuffer.folder_for(sid)
    service.stop_session(sid)
    assert not folder.exists(), "the framebuffer's folder outlived its session"


# -- refusals ------------------------------------------------------------------------------


def test_viewer_without_proof_is_refused_with_a_page(keepalive_service, session, page):
    response = page.goto(session["viewer_url"])
    assert response.status == 401
    assert "text/html" in response.headers["content-type"]
    assert "refused" in page.locator("h1").inner_text().lower()
    assert "viewer link" in page.locator("#reason").inner_text()


def test_viewer_with_a_wrong_ticket_is_refused(keepalive_service, session, page):
    good = viewer_link(keepalive_service, session["id"])
    forged = re.sub(r"ticket=([^&.]+)\.([^&]+)", lambda m: f"ticket={m[1]}.{m[2][::-1]}", good)
    assert forged != good
    response = page.goto(forged)
    assert response.status == 403
    assert "not valid" in page.locator("#reason").inner_text()


def test_viewer_link_of_another_session_is_refused(keepalive_service, session, page):
    link = viewer_link(keepalive_service, session["id"])
    response = page.goto(link.replace(f"/sessions/{session['id']}/", "/sessions/000000000000/"))
    assert response.status == 403
    assert "another session" in page.locator("#reason").inner_text()


def test_viewer_with_an_expired_ticket_is_refused(keepalive_service, session, page):
    link = expired_viewer_link(keepalive_service, session["id"])
    response = page.goto(link)
    assert response.status == 403
    assert "expired" in page.locator("#reason").inner_text()


def test_a_viewer_link_works_once(keepalive_service, session, browser):
    link = viewer_link(keepalive_service, session["id"])
    first = browser.new_context()
    opener = first.new_page()
    assert opener.goto(link).status == 200
    opener.locator("#open").click()
    opener.wait_for_url("**/viewer/")
    second = browser.new_context()  # someone else trying the same link
    page = second.new_page()
    assert page.goto(link).status == 403
    assert "already used" in page.locator("#reason").inner_text()
    first.close()
    second.close()


def test_fetching_a_link_does_not_spend_it(keepalive_service, session, browser):
    """A link-preview bot or a mail scanner GETs the link (maybe twice): the user's click still works."""
    link = viewer_link(keepalive_service, session["id"])
    for _ in range(2):
        preview = httpx.get(link, trust_env=False, follow_redirects=True)
        assert preview.status_code == 200 and 'id="open"' in preview.text
        assert "set-cookie" not in preview.headers
    context = browser.new_context()
    page = context.new_page()
    page.goto(link)
    page.locator("#open").click()
    page.wait_for_url("**/viewer/")
    assert "ticket" not in page.url
    wait_until("the viewer to paint JupyterLab", lambda: looks_like_jupyterlab(canvas_pixels(page)) or None)
    context.close()


def test_url_parameters_cannot_send_the_viewer_elsewhere(keepalive_service, session, page, tmp_path):
    """server/port/ssl/path in the viewer URL are ignored: the client connects to its own session only."""
    other = keepalive_service.start_session(name="viewer-decoy")  # a session it could be pointed at
    seen_websockets: list[str] = []
    page.on("websocket", lambda ws: seen_websockets.append(ws.url))
    evil = f"&server=evil.invalid&port=1&ssl=true&path=/sessions/{other['id']}/viewer/&encryption=AES&key=k"
    open_viewer(page, keepalive_service, session["id"], query=evil)
    assert seen_websockets, "the client opened no websocket"
    expected = f"ws://{keepalive_service.url.split('://', 1)[1]}/sessions/{session['id']}/viewer/"
    assert all(url.startswith(expected) for url in seen_websockets), seen_websockets
    keepalive_service.stop_session(other["id"])


def test_api_token_opens_the_viewer_page(keepalive_service, session):
    response = keepalive_service.client.get(f"/sessions/{session['id']}/viewer/")
    assert response.status_code == 200
    assert "keepalive-connect.js" in response.text
    wrong = httpx.get(session["viewer_url"], headers={"Authorization": "Bearer nope"}, trust_env=False)
    assert wrong.status_code == 401


def _ws_url(service, session_id: str) -> str:
    return service.url.replace("http://", "ws://") + f"/sessions/{session_id}/viewer/"


def _viewer_cookie(service, session_id: str) -> str:
    """Spend a link the way a browser does (open it, submit its form) and return the cookie it got."""
    link = viewer_link(service, session_id)
    with httpx.Client(trust_env=False) as client:
        page = client.get(link)
        assert page.status_code == 200 and "set-cookie" not in page.headers
        ticket = re.search(r'name="ticket" value="([^"]+)"', page.text)[1]
        response = client.post(link.split("?", 1)[0], data={"ticket": ticket})
        assert response.status_code == 200
        set_cookie = response.headers["set-cookie"]
    assert "HttpOnly" in set_cookie and "SameSite=strict" in set_cookie.replace("Strict", "strict")
    assert f"Path=/sessions/{session_id}/viewer/" in set_cookie
    return set_cookie.split(";", 1)[0]


@pytest.mark.parametrize("proof", ["nothing", "forged-cookie", "wrong-ticket", "expired-ticket", "other-session"])
def test_websocket_refuses_without_a_valid_pass(keepalive_service, session, proof):
    url = _ws_url(keepalive_service, session["id"])
    headers = {}
    if proof == "forged-cookie":
        headers["Cookie"] = "keepalive_viewer=eyJzIjoieCJ9.forged"
    elif proof == "wrong-ticket":
        link = viewer_link(keepalive_service, session["id"])
        url += "?ticket=" + link.split("ticket=", 1)[1][::-1]
    elif proof == "expired-ticket":
        url += "?" + expired_viewer_link(keepalive_service, session["id"]).split("?", 1)[1]
    elif proof == "other-session":
        other = keepalive_service.start_session(name="viewer-other")
        headers["Cookie"] = _viewer_cookie(keepalive_service, other["id"])
        keepalive_service.stop_session(other["id"])
    with pytest.raises(InvalidStatus) as refused:
        ws_connect(url, subprotocols=["binary"], additional_headers=headers)
    assert refused.value.response.status_code == 403


def test_websocket_accepts_a_fresh_ticket_once(keepalive_service, session):
    link = viewer_link(keepalive_service, session["id"])
    url = _ws_url(keepalive_service, session["id"]) + "?" + link.split("?", 1)[1]
    with ws_connect(url, subprotocols=["binary"]) as ws:
        assert ws.subprotocol == "binary"
    with pytest.raises(InvalidStatus):
        ws_connect(url, subprotocols=["binary"])


def test_websocket_with_a_viewer_cookie_reaches_xpra(keepalive_service, session):
    cookie = _viewer_cookie(keepalive_service, session["id"])
    with ws_connect(
        _ws_url(keepalive_service, session["id"]), subprotocols=["binary"], additional_headers={"Cookie": cookie}
    ) as ws:
        assert ws.subprotocol == "binary"


def test_websocket_from_another_origin_is_refused(keepalive_service, session):
    cookie = _viewer_cookie(keepalive_service, session["id"])
    with pytest.raises(InvalidStatus) as refused:
        ws_connect(
            _ws_url(keepalive_service, session["id"]),
            subprotocols=["binary"],
            additional_headers={"Cookie": cookie},
            origin="http://evil.example",
        )
    assert refused.value.response.status_code == 403


def test_tickets_stay_out_of_the_service_log(keepalive_service, session, page):
    link = viewer_link(keepalive_service, session["id"])
    page.goto(link)
    page.locator("#open").click()
    page.wait_for_url("**/viewer/")
    ticket = link.split("ticket=", 1)[1]
    # a non-browser client presenting a ticket on the websocket handshake: uvicorn logs that path too
    socket_ticket = viewer_link(keepalive_service, session["id"]).split("ticket=", 1)[1]
    ws_url = keepalive_service.url.replace("http", "ws", 1) + f"/sessions/{session['id']}/viewer/?ticket={socket_ticket}"
    with ws_connect(ws_url, subprotocols=["binary"], open_timeout=30) as ws:
        assert ws.subprotocol == "binary"
    log = keepalive_service.log_text()
    for secret in (ticket, socket_ticket):
        assert secret not in log and secret.split(".")[1] not in log
    assert "ticket=[redacted]" in log  # the paths were logged, without their tickets
    assert keepalive_service.token not in log
