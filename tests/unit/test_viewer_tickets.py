"""Viewer tickets: signed, session-bound, expiring, single-use links."""

import pytest

from keepalive.viewer.tickets import TicketError, TicketSigner

NOW = 1_800_000_000.0


@pytest.fixture
def signer():
    return TicketSigner(b"k" * 32)


def test_a_fresh_ticket_verifies_for_its_session(signer):
    ticket = signer.issue("s1", "link", 60, now=NOW)
    claims = signer.verify(ticket, "s1", "link", now=NOW + 59)
    assert claims.session_id == "s1"
    assert claims.kind == "link"
    assert claims.expires == int(NOW + 60)


def test_an_expired_ticket_is_refused(signer):
    ticket = signer.issue("s1", "link", 60, now=NOW)
    with pytest.raises(TicketError, match="expired"):
        signer.verify(ticket, "s1", "link", now=NOW + 60)


def test_a_ticket_is_bound_to_its_session(signer):
    ticket = signer.issue("s1", "link", 60, now=NOW)
    with pytest.raises(TicketError, match="another session"):
        signer.verify(ticket, "s2", "link", now=NOW)


def test_a_link_ticket_is_no_cookie_and_back(signer):
    link = signer.issue("s1", "link", 60, now=NOW)
    cookie = signer.issue("s1", "cookie", 60, now=NOW)
    with pytest.raises(TicketError):
        signer.verify(link, "s1", "cookie", now=NOW)
    with pytest.raises(TicketError):
        signer.verify(cookie, "s1", "link", now=NOW)


def test_another_services_key_does_not_verify(signer):
    ticket = TicketSigner(b"x" * 32).issue("s1", "link", 60, now=NOW)
    with pytest.raises(TicketError, match="signature"):
        signer.verify(ticket, "s1", "link", now=NOW)


@pytest.mark.parametrize("change", ["payload", "mac"])
def test_a_tampered_ticket_is_refused(signer, change):
    payload, mac = signer.issue("s1", "link", 60, now=NOW).split(".")
    if change == "payload":
        # re-sign nothing: extend the expiry by editing the payload
        other_payload = TicketSigner(b"k" * 32).issue("s1", "link", 6000, now=NOW).split(".")[0]
        forged = f"{other_payload}.{mac}"
    else:
        forged = f"{payload}.{mac[:-2]}AA"
    with pytest.raises(TicketError):
        signer.verify(forged, "s1", "link", now=NOW)


@pytest.mark.parametrize("garbage", ["", "abc", ".", "a.b", "x" * 2000, "!!!.???"])
def test_garbage_is_refused_with_a_reason(signer, garbage):
    with pytest.raises(TicketError) as info:
        signer.verify(garbage, "s1", "link", now=NOW)
    assert str(info.value)


def test_a_link_works_only_once(signer):
    ticket = signer.issue("s1", "link", 60, now=NOW)
    signer.redeem(ticket, "s1", now=NOW)
    with pytest.raises(TicketError, match="already used"):
        signer.redeem(ticket, "s1", now=NOW + 1)


def test_two_links_for_one_session_are_independent(signer):
    first = signer.issue("s1", "link", 60, now=NOW)
    second = signer.issue("s1", "link", 60, now=NOW)
    assert first != second
    signer.redeem(first, "s1", now=NOW)
    assert signer.redeem(second, "s1", now=NOW).session_id == "s1"


def test_a_short_key_is_rejected():
    with pytest.raises(ValueError):
        TicketSigner(b"short")
