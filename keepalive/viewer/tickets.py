"""Signed, expiring, session-bound viewer tickets.

A ticket is ``<payload>.<mac>``: the payload is base64url JSON naming the session, the kind
(``link``: the short-lived one in a shareable URL; ``cookie``: the one the browser keeps after
exchanging a link), the expiry, a nonce and, for a watch-only viewer, ``"w": 1``; the mac is HMAC-SHA256 over the payload with a key
that never leaves the service. Nothing secret is inside a ticket, it only proves that the service
issued it for that session and that it is still fresh.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import secrets
import time
from dataclasses import dataclass
from typing import Literal

#: link/cookie: the viewer's; status-link/status-cookie: the status page's (keepalive.api.status_page).
TicketKind = Literal["link", "cookie", "status-link", "status-cookie"]


class TicketError(Exception):
    """The ticket is not good for this session; ``str(error)`` says why, in words for a user."""


@dataclass(frozen=True)
class Ticket:
    session_id: str
    kind: TicketKind
    expires: int
    nonce: str
    watch_only: bool = False


def _b64encode(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _b64decode(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


class TicketSigner:
    """Issues and checks tickets with one HMAC key (generate one per service start)."""

    def __init__(self, key: bytes | None = None) -> None:
        self._key = key if key is not None else secrets.token_bytes(32)
        if len(self._key) < 16:
            raise ValueError("ticket key too short")
        # Link tickets already exchanged, until they expire: a link works exactly once.
        self._spent: dict[str, int] = {}

    def _mac(self, payload: str) -> str:
        return _b64encode(hmac.new(self._key, payload.encode("ascii"), hashlib.sha256).digest())

    def issue(self, session_id: str, kind: TicketKind, ttl: float, now: float | None = None,
              watch_only: bool = False) -> str:
        now = time.time() if now is None else now
        body = {"s": session_id, "k": kind, "e": int(now + ttl), "n": secrets.token_urlsafe(9)}
        if watch_only:
            body["w"] = 1
        payload = _b64encode(json.dumps(body, separators=(",", ":")).encode())
        return f"{payload}.{self._mac(payload)}"

    def verify(self, ticket: str, session_id: str, kind: TicketKind, now: float | None = None) -> Ticket:
        """The ticket's claims, or :class:`TicketError` if it is forged, stale or for elsewhere."""
        now = time.time() if now is None else now
        payload, sep, mac = (ticket or "").partition(".")
        if not sep or not payload or not mac or len(ticket) > 1024:
            raise TicketError("the viewer ticket is malformed")
        if not hmac.compare_digest(mac, self._mac(payload)):
            raise TicketError("the viewer ticket is not valid (wrong signature)")
        try:
            body = json.loads(_b64decode(payload))
            claims = Ticket(str(body["s"]), body["k"], int(body["e"]), str(body["n"]), body.get("w") == 1)
        except (ValueError, KeyError, TypeError, binascii.Error) as exc:
            raise TicketError("the viewer ticket is malformed") from exc
        if claims.kind != kind:
            raise TicketError("the viewer ticket is not valid here")
        if not hmac.compare_digest(claims.session_id.encode(), session_id.encode()):
            raise TicketError("the viewer ticket belongs to another session")
        if claims.expires <= now:
            raise TicketError("the viewer ticket has expired; ask for a new viewer link")
        return claims

    def check_unspent(self, ticket: str, session_id: str, now: float | None = None,
                      kind: TicketKind = "link") -> Ticket:
        """Check a link ticket without spending it: valid here, not expired, not used yet."""
        now = time.time() if now is None else now
        claims = self.verify(ticket, session_id, kind, now)
        self._spent = {nonce: exp for nonce, exp in self._spent.items() if exp > now}
        if claims.nonce in self._spent:
            raise TicketError("this viewer link was already used; ask for a new one")
        return claims

    def redeem(self, ticket: str, session_id: str, now: float | None = None, kind: TicketKind = "link") -> Ticket:
        """Check a link ticket and spend it, so the same link cannot be used twice."""
        claims = self.check_unspent(ticket, session_id, now, kind)
        self._spent[claims.nonce] = claims.expires
        return claims
