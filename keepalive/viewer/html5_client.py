"""The xpra HTML5 client as keepalive serves it: its connect settings, and keepalive's own pages.

xpra's client reads every setting with ``Utilities.getparam`` (URL query, then sessionStorage).
keepalive loads one more script right after ``Utilities.js`` that wraps it: settings the service
enforces (the xpra password among them) come from that script, which the proxy serves only to an
authenticated viewer and never caches, so no secret ever sits in a URL.
"""

from __future__ import annotations

import html
import json

#: Served under the viewer path; the name cannot collide with a file of xpra's www dir.
CONNECT_SCRIPT = "keepalive-connect.js"
#: xpra's client navigates here when its connection closes; keepalive answers with its own page.
DISCONNECTED_PAGE = "connect.html"

_ANCHOR = b'src="js/Utilities.js"></script>'


class UnsupportedClient(Exception):
    """The HTML5 client's index.html does not look like the one keepalive knows."""


def inject_connect_script(index_html: bytes) -> bytes:
    """xpra's index.html with keepalive's connect script loaded right after ``Utilities.js``."""
    at = index_html.find(_ANCHOR)
    if at < 0:
        raise UnsupportedClient("xpra's index.html does not load js/Utilities.js")
    at += len(_ANCHOR)
    tag = f'\n\t\t<script type="text/javascript" src="{CONNECT_SCRIPT}"></script>'.encode()
    return index_html[:at] + tag + index_html[at:]


#: Settings that say where the client connects to, and how. Pinned to the page's own origin
#: and the session's viewer path, so that no URL parameter can send the client (and the xpra
#: password it holds) anywhere else.
PINNED = ("server", "port", "ssl", "path", "encryption", "key", "username", "display", "shadow_display")


def connect_script(forced: dict[str, str], defaults: dict[str, str], viewer_path: str) -> str:
    """JavaScript that makes ``Utilities.getparam`` answer keepalive's settings.

    ``forced`` settings win over the URL and sessionStorage; so do the PINNED ones, computed
    from the page's own location and ``viewer_path``; ``defaults`` apply when the URL is silent.
    """
    pinned = {"path": viewer_path, "encryption": "", "key": "", "username": "", "display": "", "shadow_display": ""}
    # json.dumps escapes quotes and backslashes; "<" too, so "</script>" cannot appear
    forced_js = json.dumps({**forced, **pinned}).replace("<", "\\u003c")
    defaults_js = json.dumps(defaults).replace("<", "\\u003c")
    return f"""// keepalive: connect settings for this viewer (not cacheable, served after authentication)
(function () {{
  "use strict";
  var forced = {forced_js};
  var defaults = {defaults_js};
  // the service that served this page is the one to connect to, over the same scheme
  forced.server = window.location.hostname;
  forced.port = window.location.port;
  forced.ssl = window.location.protocol === "https:" ? "true" : "false";
  var original = Utilities.getparam;
  Utilities.getparam = function (prop) {{
    if (Object.prototype.hasOwnProperty.call(forced, prop)) {{
      return forced[prop];
    }}
    var value = original.call(Utilities, prop);
    if ((value === undefined || value === null || value === "") &&
        Object.prototype.hasOwnProperty.call(defaults, prop)) {{
      return defaults[prop];
    }}
    return value;
  }};
}})();
"""


_STYLE = """
  body { font: 16px/1.5 system-ui, sans-serif; margin: 0; display: grid; place-items: center;
         min-height: 100vh; background: #f4f5f7; color: #1d2330; }
  main { max-width: 34rem; margin: 1rem; padding: 1.5rem 2rem; background: #fff;
         border-radius: 8px; box-shadow: 0 1px 4px rgba(0,0,0,.15); }
  h1 { font-size: 1.3rem; margin-top: 0; }
  .reason { background: #fdecea; color: #8a1c12; padding: .5rem .75rem; border-radius: 4px; }
  a.button, button.button { display: inline-block; border: 0; font: inherit; cursor: pointer; padding: .4rem 1rem; background: #1d5fbf; color: #fff;
             border-radius: 4px; text-decoration: none; }
"""


def _page(title: str, body: str, head: str = "") -> str:
    return (
        "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
        "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">"
        f"<title>{html.escape(title)}</title>{head}<style>{_STYLE}</style></head>"
        f"<body><main>{body}</main></body></html>\n"
    )


def refused_page(reason: str) -> str:
    """The page a viewer without a valid ticket or token sees (HTTP 401/403)."""
    return _page(
        "Viewer access refused - keepalive",
        "<h1>Viewer access refused</h1>"
        f"<p class=\"reason\" id=\"reason\">{html.escape(reason)}</p>"
        "<p>A viewer link works once and only for a few minutes. Open the session again from the "
        "keepalive dashboard, or ask whoever shared the session for a new viewer link.</p>",
    )


def not_found_page(session_id: str) -> str:
    return _page(
        "No such session - keepalive",
        f"<h1>No such session</h1><p class=\"reason\">There is no session {html.escape(session_id)!s}; "
        "it may have been stopped.</p>",
    )


def unavailable_page(reason: str) -> str:
    return _page(
        "Session not viewable - keepalive",
        f"<h1>The session cannot be viewed right now</h1><p class=\"reason\">{html.escape(reason)}</p>"
        "<p>It may still be starting or recovering; reload this page in a moment.</p>",
    )


def confirm_page(session_id: str, clean_url: str, ticket: str, what: str = "viewer") -> str:
    """What a viewer (or status page) link shows: a button that spends the ticket (a POST),
    nothing spent before.

    Link previews, mail scanners and prefetchers fetch links; a GET must not use the link up.
    """
    action = html.escape(clean_url, quote=True)
    return _page(
        f"Open the session's {what} - keepalive",
        f"<h1>Open the {what} of session {html.escape(session_id)}</h1>"
        f"<p>This link works once. Opening the {what} admits this browser to the session.</p>"
        f"<form method=\"post\" action=\"{action}\">"
        f"<input type=\"hidden\" name=\"ticket\" value=\"{html.escape(ticket, quote=True)}\">"
        f"<button class=\"button\" id=\"open\" type=\"submit\">Open the {what}</button></form>",
    )


def redirect_page(clean_url: str, what: str = "viewer") -> str:
    """Sent with the cookie when a link ticket is exchanged: goes on to the clean viewer URL.

    A page rather than a 30x: after a redirect that began on another site (a link in a chat),
    the browser would not send a SameSite=Strict cookie; a same-site navigation from this page does.
    """
    target = json.dumps(clean_url).replace("<", "\\u003c")
    escaped = html.escape(clean_url, quote=True)
    return _page(
        f"Opening the {what} - keepalive",
        f"<h1>Opening the {what}...</h1><p><a class=\"button\" href=\"{escaped}\">Continue</a></p>"
        f"<script>window.location.replace({target});</script>",
        head=f"<meta http-equiv=\"refresh\" content=\"0;url={escaped}\">",
    )


def disconnected_page() -> str:
    """Replaces xpra's connect form: the viewer is closed, the session keeps running."""
    return _page(
        "Viewer disconnected - keepalive",
        "<h1>Viewer disconnected</h1>"
        "<p class=\"reason\" id=\"reason\">The connection to the session was closed.</p>"
        "<p>The session and its computations keep running.</p>"
        "<p><a class=\"button\" id=\"reconnect\" href=\"./\">Reconnect</a></p>"
        "<script>(function () {"
        "  var reason = null;"
        # xpra's client leaves the reason (and its password) in sessionStorage: show one, drop both
        "  try { reason = sessionStorage.getItem('disconnect');"
        "        sessionStorage.removeItem('password'); sessionStorage.removeItem('disconnect'); }"
        "  catch (e) {}"
        "  if (reason) { document.getElementById('reason').textContent = reason; }"
        "})();</script>",
    )
