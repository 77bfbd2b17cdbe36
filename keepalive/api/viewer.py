"""The viewer: xpra's HTML5 client for one session, proxied under ``/sessions/{id}/viewer/``.

Who may open it: a caller with the API token (``Authorization: Bearer``), or a browser holding the
session's viewer cookie. The cookie comes from a viewer link (``POST /sessions/{id}/viewer-link``):
its ticket works once, for a few minutes. Opening the link shows a page with an "Open the viewer"
button: only that click (a POST of the ticket) spends it, so a link-preview bot or a mail scanner
that fetches the link does not use it up. The ticket is then swapped for the HttpOnly,
SameSite=Strict cookie scoped to the session's viewer path, and the browser moves on to the clean
URL. The websocket checks the same proof before the service opens anything towards xpra.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Annotated
from urllib.parse import parse_qs, urlencode

from fastapi import APIRouter, Body, Depends, HTTPException, Request, WebSocket, status
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from pydantic import BaseModel, ConfigDict, Field

from keepalive.api.deps import Authorized, ManagerDep, SettingsDep
from keepalive.auth import token_matches
from keepalive.engine.manager import SessionManager, SessionNotFound
from keepalive.engine.standby import NoRoomToWake
from keepalive.engine.viewer_server import ViewerServerUnavailable
from keepalive.models import SessionState
from keepalive.viewer import html5_client as html5
from keepalive.viewer.html5_files import CONTENT_SECURITY_POLICY, ClientMissing, Html5Files
from keepalive.viewer.xpra_proxy import ViewerTracker, relay
from keepalive.viewer.tickets import TicketError, TicketKind, TicketSigner
from keepalive.viewer.xpra_options import client_defaults, client_settings

log = logging.getLogger(__name__)

router = APIRouter(tags=["viewer"])

_TICKET_IN_URL = re.compile(r"([?&]ticket=)[^&\s\"]+")


class _RedactTickets(logging.Filter):
    """Keeps viewer tickets out of the logs: uvicorn logs every request's and websocket
    handshake's full path, the websockets library its request line at debug level."""

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.msg, str):
            record.msg = _TICKET_IN_URL.sub(r"\1[redacted]", record.msg)
        if isinstance(record.args, tuple):
            record.args = tuple(
                _TICKET_IN_URL.sub(r"\1[redacted]", arg) if isinstance(arg, str) else arg for arg in record.args
            )
        return True


#: Loggers that write request paths. A filter on a logger sees only its own records, not its children's.
PATH_LOGGERS = ("uvicorn.access", "uvicorn.error", "websockets.server", "websockets.protocol")
for _name in PATH_LOGGERS:
    logging.getLogger(_name).addFilter(_RedactTickets())

COOKIE = "keepalive_viewer"
#: States in which the display is (or is about to be) there for xpra to show.
VIEWABLE = {SessionState.ready, SessionState.recovering, SessionState.standby}  # standby: woken for it
_SECURITY_HEADERS = {"Referrer-Policy": "no-referrer", "X-Content-Type-Options": "nosniff"}
NO_STORE = {"Cache-Control": "no-store", **_SECURITY_HEADERS}


def viewer_url(base_url: str, session_id: str) -> str:
    """The session's viewer address; it carries no secret (opening it needs a ticket or the token)."""
    return f"{base_url.rstrip('/')}/sessions/{session_id}/viewer/"


def viewer_path(session_id: str, root_path: str = "") -> str:
    """The viewer's path on this host; ``root_path`` is where a proxy serves the service (or "")."""
    return f"{root_path}/sessions/{session_id}/viewer/"


def _viewer_path(request: Request, session_id: str) -> str:
    return viewer_path(session_id, request.scope.get("root_path", ""))


# -- per-app state ------------------------------------------------------------------------


class ViewerState:
    """What the viewer keeps for the life of the service: its signing key, viewer counts and
    the HTML5 client's files."""

    def __init__(self, files: Html5Files | None = None) -> None:
        # a fresh key per service start: links and cookies die with the service that issued them
        self.signer = TicketSigner()
        self.tracker = ViewerTracker()
        self._files = files

    def files(self, xpra: str) -> Html5Files:
        """The HTML5 client of the xpra the service runs (raises ClientMissing)."""
        if self._files is None:
            self._files = Html5Files.of_xpra(xpra)
        return self._files


def viewer_state(app) -> ViewerState:
    state = getattr(app.state, "viewer", None)
    if state is None:
        state = app.state.viewer = ViewerState()
    return state


async def get_viewer_state(request: Request) -> ViewerState:
    return viewer_state(request.app)


ViewerStateDep = Annotated[ViewerState, Depends(get_viewer_state)]


# -- the shareable link ---------------------------------------------------------------------


class ViewerLinkRequest(BaseModel):
    # an unknown field is a 422: a client that misspells read_only never gets a full link by mistake
    model_config = ConfigDict(extra="forbid")

    read_only: bool = Field(
        False, description="A watch-only link: the session shows live, but nothing its browser sends (keys, "
        "pointer, clipboard, resizes) reaches the kiosk. Such viewers join beside the others, never take over.",
    )
    ttl: float | None = Field(
        None, gt=0, description="Seconds the link stays valid; at most (and by default) the viewer_ticket_ttl setting."
    )
    keyboard_layout: str | None = Field(
        None, pattern=r"^[A-Za-z0-9_+-]{1,32}$", description="Keyboard layout for this viewer (e.g. 'de', 'fr')."
    )


class ViewerLink(BaseModel):
    url: str = Field(description="Open this once, within the expiry; it carries a single-use ticket.")
    expires_at: datetime
    read_only: bool = Field(description="Whether the link admits a watch-only viewer.")
    status_url: str = Field(description="A single-use link to the session's status page (for a phone), with the "
                            "same rights; valid as long as the viewer link.")


@router.post("/sessions/{session_id}/viewer-link", dependencies=[Authorized], response_model=ViewerLink)
async def create_viewer_link(
    session_id: str,
    request: Request,
    manager: ManagerDep,
    settings: SettingsDep,
    viewer: ViewerStateDep,
    body: Annotated[ViewerLinkRequest | None, Body()] = None,
) -> ViewerLink:
    """A single-use, short-lived link that admits one browser to the session's viewer."""
    try:
        session = manager.get(session_id)
    except SessionNotFound:
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"no session {session_id!r}") from None
    body = body or ViewerLinkRequest()
    session.touch()
    manager.standby.wake_soon(session, "a viewer link was made")  # so the viewer finds it awake, or nearly
    ttl = min(body.ttl or settings.viewer_ticket_ttl, settings.viewer_ticket_ttl)
    now = datetime.now(UTC).timestamp()
    ticket = viewer.signer.issue(session.id, "link", ttl, now=now, watch_only=body.read_only)
    query = {"ticket": ticket}
    if body.keyboard_layout:
        query["keyboard_layout"] = body.keyboard_layout
    url = viewer_url(str(request.base_url), session.id) + "?" + urlencode(query)
    # the same rights on the status page (keepalive.api.status_page), for a phone
    status_ticket = viewer.signer.issue(session.id, "status-link", ttl, now=now, watch_only=body.read_only)
    status_url = f"{str(request.base_url).rstrip('/')}/sessions/{session.id}/status?{urlencode({'ticket': status_ticket})}"
    log.info("%s viewer link made for session %s", "watch-only" if body.read_only else "full", session.id)
    return ViewerLink(url=url, expires_at=datetime.fromtimestamp(int(now + ttl), UTC), read_only=body.read_only,
                      status_url=status_url)


# -- who is asking -------------------------------------------------------------------------


class Refused(Exception):
    def __init__(self, status_code: int, reason: str) -> None:
        super().__init__(reason)
        self.status_code = status_code
        self.reason = reason


def bearer_token(headers) -> str | None:
    scheme, _, credentials = (headers.get("authorization") or "").partition(" ")
    return credentials.strip() if scheme.lower() == "bearer" else None


@dataclass(frozen=True)
class Pass:
    """What a single-use link admits a browser to (the viewer, the status page): the page's name,
    the cookie the link leaves for it, and the ticket kinds of the link and of that cookie."""

    what: str
    cookie: str
    link: TicketKind
    kept: TicketKind


VIEWER_PASS = Pass("viewer", COOKIE, "link", "cookie")


def check_access(
    api_token: str, signer: TicketSigner, session_id: str, headers, cookies: dict[str, str], kind: Pass = VIEWER_PASS
) -> bool:
    """Whether the caller may only watch (the API token: never); :class:`Refused` unless the API
    token or a valid cookie of ``kind`` comes along."""
    presented = bearer_token(headers)
    if presented is not None:
        if token_matches(api_token, presented):
            return False
        raise Refused(status.HTTP_401_UNAUTHORIZED, "The API token is wrong.")
    cookie = cookies.get(kind.cookie)
    if not cookie:
        raise Refused(
            status.HTTP_401_UNAUTHORIZED,
            f"This {kind.what} needs a {kind.what} link (with its ticket) or the API token.",
        )
    try:
        return signer.verify(cookie, session_id, kind.kept).watch_only
    except TicketError as exc:
        raise Refused(status.HTTP_403_FORBIDDEN, f"Your {kind.what} pass is no longer valid: {exc}.") from None


def refused_page(refusal: Refused) -> HTMLResponse:
    headers = dict(NO_STORE)
    if refusal.status_code == status.HTTP_401_UNAUTHORIZED:
        headers["WWW-Authenticate"] = 'Bearer realm="keepalive viewer"'
    return HTMLResponse(html5.refused_page(refusal.reason), status_code=refusal.status_code, headers=headers)


def _viewable(manager: SessionManager, session_id: str):
    """The session, if its viewer can be shown; otherwise an HTML error response."""
    try:
        session = manager.get(session_id)
    except SessionNotFound:
        return None, HTMLResponse(html5.not_found_page(session_id), status_code=404, headers=NO_STORE)
    if session.state not in VIEWABLE:
        return None, _unavailable(f"The session is {session.state.value}.", 503)
    return session, None


def _unavailable(reason: str, status_code: int = 502) -> HTMLResponse:
    """The viewer cannot be shown (xpra not answering, no such file): a page that says why."""
    return HTMLResponse(html5.unavailable_page(reason), status_code=status_code, headers=NO_STORE)


# -- HTTP ----------------------------------------------------------------------------------


@router.get("/sessions/{session_id}/viewer", include_in_schema=False)
async def viewer_without_slash(session_id: str, request: Request) -> RedirectResponse:
    # the HTML5 client loads its files relative to the page: the path must end in "/"
    query = f"?{request.url.query}" if request.url.query else ""
    return RedirectResponse(_viewer_path(request, session_id) + query, status_code=status.HTTP_307_TEMPORARY_REDIRECT)


@router.get("/sessions/{session_id}/viewer/{path:path}", summary="The session's viewer (xpra HTML5 client)")
async def viewer_http(
    session_id: str, path: str, request: Request, manager: ManagerDep, settings: SettingsDep, viewer: ViewerStateDep
) -> Response:
    """Serve the viewer to whoever proves access; a ``?ticket=`` is swapped for a cookie first."""
    api_token = request.app.state.api_token
    ticket = request.query_params.get("ticket")
    if ticket is not None:
        return confirm_ticket(VIEWER_PASS, viewer.signer, session_id, ticket, _clean_url(session_id, request),
                              request.cookies)
    try:
        check_access(api_token, viewer.signer, session_id, request.headers, request.cookies)
    except Refused as refusal:
        return refused_page(refusal)
    session, error = _viewable(manager, session_id)
    if error is not None:
        return error

    # keepalive's own files first: none of them needs xpra running
    if path == html5.CONNECT_SCRIPT:
        script = html5.connect_script(
            client_settings(settings, session.xpra_password), client_defaults(settings), _viewer_path(request, session_id)
        )
        return Response(script, media_type="text/javascript", headers=NO_STORE)
    if path == html5.DISCONNECTED_PAGE:
        return HTMLResponse(html5.disconnected_page(), headers=NO_STORE)
    try:
        files = viewer.files(settings.xpra)
    except ClientMissing as exc:
        return _unavailable(f"{exc}.", 503)
    if path in ("", "index.html"):
        try:  # xpra is started for the viewer now (if it is not running): the page connects to it
            await manager.standby.wake(session)
            await session.viewer_port()
        except (ViewerServerUnavailable, NoRoomToWake) as exc:
            return _unavailable(f"The viewer could not be started: {exc}.", 503)
        return _index(files)
    found = files.get(path)
    if found is None:
        return _unavailable(f"There is no viewer file {path!r}.", 404)
    return Response(found.content, media_type=found.content_type, headers=NO_STORE)


def _index(files: Html5Files) -> Response:
    index = files.get("index.html")
    if index is None:  # there when the service first looked, gone since
        return _unavailable(f"xpra's HTML5 client in {files.www_dir} has no index.html.", 503)
    try:
        page = html5.inject_connect_script(index.content)
    except html5.UnsupportedClient as exc:
        return _unavailable(f"{exc}.", 503)
    headers = {**NO_STORE, "Content-Security-Policy": CONTENT_SECURITY_POLICY}
    return Response(page, media_type=index.content_type, headers=headers)


def _clean_url(session_id: str, request: Request) -> str:
    """The viewer's own address with the request's query minus any ticket (keyboard_layout stays)."""
    rest = [(k, v) for k, v in request.query_params.multi_items() if k != "ticket"]
    return _viewer_path(request, session_id) + (f"?{urlencode(rest)}" if rest else "")


def confirm_ticket(kind: Pass, signer: TicketSigner, session_id: str, ticket: str, clean_url: str,
                   cookies: dict[str, str]) -> Response:
    """A link was opened: show what it is for and let the user spend it; a GET spends nothing."""
    try:
        signer.check_unspent(ticket, session_id, kind=kind.link)
    except TicketError as exc:
        # the same browser reopening a link it already used still holds a good cookie
        try:
            check_access("", signer, session_id, {}, cookies, kind)
        except Refused:
            log.info("%s link of session %s refused: %s", kind.what, session_id, exc)
            return refused_page(Refused(status.HTTP_403_FORBIDDEN, f"{str(exc).capitalize()}."))
        return HTMLResponse(html5.redirect_page(clean_url, kind.what), headers=NO_STORE)
    return HTMLResponse(html5.confirm_page(session_id, clean_url, ticket, kind.what), headers=NO_STORE)


async def spend_link(kind: Pass, request: Request, manager: SessionManager, settings, signer: TicketSigner,
                     session_id: str, cookie_path: str, next_url: str) -> Response:
    """The user pressed a link's button: spend its ticket (a form field), and set the cookie of
    ``kind``, limited to ``cookie_path``, with the link's rights; then on to ``next_url``."""
    body = await request.body()
    if len(body) > 4096:
        return refused_page(Refused(status.HTTP_400_BAD_REQUEST, f"That is not a {kind.what} link's form."))
    tickets = parse_qs(body.decode("ascii", "replace")).get("ticket", [])
    if len(tickets) != 1:
        return refused_page(Refused(status.HTTP_400_BAD_REQUEST, f"No {kind.what} ticket came with the request."))
    try:
        claims = signer.redeem(tickets[0], session_id, kind=kind.link)
    except TicketError as exc:
        log.info("%s link of session %s refused: %s", kind.what, session_id, exc)
        return refused_page(Refused(status.HTTP_403_FORBIDDEN, f"{str(exc).capitalize()}."))
    try:
        manager.get(session_id)
    except SessionNotFound:
        return HTMLResponse(html5.not_found_page(session_id), status_code=404, headers=NO_STORE)
    response = HTMLResponse(html5.redirect_page(next_url, kind.what), headers=NO_STORE)
    response.set_cookie(
        kind.cookie,
        signer.issue(session_id, kind.kept, settings.viewer_cookie_ttl, watch_only=claims.watch_only),
        max_age=int(settings.viewer_cookie_ttl),
        path=cookie_path,
        httponly=True,
        samesite="strict",
        secure=request.url.scheme == "https",
    )
    log.info("%s %s link for session %s exchanged for a cookie",
             "watch-only" if claims.watch_only else "full", kind.what, session_id)
    return response


@router.post("/sessions/{session_id}/viewer/", include_in_schema=False)
async def spend_ticket(
    session_id: str, request: Request, manager: ManagerDep, settings: SettingsDep, viewer: ViewerStateDep
) -> Response:
    """The user opened the viewer from a link: spend its ticket, set the viewer cookie."""
    return await spend_link(VIEWER_PASS, request, manager, settings, viewer.signer, session_id,
                            _viewer_path(request, session_id), _clean_url(session_id, request))


# -- websocket -----------------------------------------------------------------------------


def _same_origin(websocket: WebSocket) -> bool:
    """A browser's websocket must come from the service's own pages (no cross-site hijacking)."""
    origin = websocket.headers.get("origin")
    if origin is None:  # not a browser: the token or cookie check alone decides
        return True
    host = websocket.headers.get("host", "")
    return origin.split("://", 1)[-1].rstrip("/") == host


@router.websocket("/sessions/{session_id}/viewer/{path:path}")
async def viewer_websocket(session_id: str, path: str, websocket: WebSocket) -> None:
    """Relay xpra's websocket, after the same access check as the viewer page (or a link ticket)."""
    app = websocket.app
    viewer = viewer_state(app)
    manager: SessionManager = app.state.manager
    try:
        if not _same_origin(websocket):
            raise Refused(status.HTTP_403_FORBIDDEN, "cross-origin viewer connection")
        ticket = websocket.query_params.get("ticket")
        if ticket is not None:
            # a non-browser client may present a link ticket directly (spent like any link)
            try:
                watch_only = viewer.signer.redeem(ticket, session_id).watch_only
            except TicketError as exc:
                raise Refused(status.HTTP_403_FORBIDDEN, str(exc)) from None
        else:
            watch_only = check_access(app.state.api_token, viewer.signer, session_id, websocket.headers, websocket.cookies)
    except Refused as refusal:
        log.info("viewer websocket for session %s refused: %s", session_id, refusal.reason)
        # closing before accepting answers the handshake with HTTP 403: nothing reaches xpra
        await websocket.close(code=4403 if refusal.status_code == 403 else 4401)
        return
    try:
        session = manager.get(session_id)
    except SessionNotFound:
        await websocket.close(code=4404)
        return
    if session.state not in VIEWABLE:
        await websocket.close(code=1013)  # try again later
        return
    try:
        await manager.standby.wake(session)
        port = await session.viewer_port(join=True)
        await manager.standby.watchers_changed(session)
    except (ViewerServerUnavailable, NoRoomToWake) as exc:
        log.warning("viewer websocket for session %s: %s", session_id, exc)
        await websocket.close(code=1013)
        return

    async def restore_size() -> None:
        # xpra sized the screen to the viewer; with nobody watching it goes back to the session's
        if app.state.settings.viewer_resize and session.display is not None and session.state in VIEWABLE:
            await session.fit_screen()

    try:
        take_over = app.state.settings.viewer_sharing == "takeover"
        async with viewer.tracker.viewing(session_id, restore_size, watch_only, take_over) as connection:
            log.info("%s viewer connected to session %s (%s)", "watch-only" if watch_only else "full", session_id,
                     viewer.tracker.counts(session_id))
            await relay(websocket, port, connection)
    finally:
        session.viewer_server.left()  # the last one out starts xpra's linger
        session.touch()  # standby counts from the last viewer's leaving
        await manager.standby.watchers_changed(session)
    log.info("viewer left session %s", session_id)
