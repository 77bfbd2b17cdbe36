"""Takes a JSON body sent without a JSON content type as JSON.

``curl -d '{"name": "alice"}'`` labels its body ``application/x-www-form-urlencoded``; FastAPI
would then answer 422 for a perfectly good body. This API has no form routes, so a body that
is labelled a form (or nothing at all) and opens with ``{`` is relabelled ``application/json``
and parsed (and validated) as usual. Anything else passes through untouched.
"""

from __future__ import annotations

from starlette.types import ASGIApp, Message, Receive, Scope, Send

#: Content types curl and similar tools send by default for ``-d``/``--data``.
RELABELLED = (b"", b"application/x-www-form-urlencoded", b"text/plain")
#: Only this much is held back to look at the first character; bodies are small JSON here.
PEEK_LIMIT = 1 << 20


class JsonWithoutContentType:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] not in ("POST", "PUT", "PATCH"):
            await self.app(scope, receive, send)
            return
        headers = dict(scope["headers"])
        content_type = headers.get(b"content-type", b"").split(b";")[0].strip().lower()
        if content_type not in RELABELLED:
            await self.app(scope, receive, send)
            return
        # Read the first chunk(s) until a non-blank byte shows what the body is.
        held: list[Message] = []
        size = 0
        first = b""
        while True:
            message = await receive()
            held.append(message)
            if message["type"] != "http.request":
                break
            chunk = message.get("body", b"")
            size += len(chunk)
            first = (first + chunk).lstrip()[:1]
            if first or not message.get("more_body", False) or size > PEEK_LIMIT:
                break
        if first == b"{":
            scope = dict(scope)
            scope["headers"] = [(k, v) for k, v in scope["headers"] if k != b"content-type"] + [
                (b"content-type", b"application/json")
            ]

        async def replay() -> Message:
            return held.pop(0) if held else await receive()

        await self.app(scope, replay, send)
