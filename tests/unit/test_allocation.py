"""Display numbers and ports: never handed out twice, system-held ones skipped."""

from __future__ import annotations

import socket
from concurrent.futures import ThreadPoolExecutor

import pytest

from keepalive.engine import allocation
from keepalive.engine.allocation import AllocationError, Allocator


@pytest.fixture
def fake_x(tmp_path, monkeypatch):
    sockets = tmp_path / "x11"
    sockets.mkdir()
    monkeypatch.setattr(allocation, "X11_SOCKET_DIR", sockets)
    monkeypatch.setattr(allocation, "X_LOCK_DIR", tmp_path)
    return tmp_path


def test_displays_in_use_are_skipped(fake_x):
    (fake_x / "x11" / "X500").touch()
    (fake_x / ".X501-lock").touch()
    allocator = Allocator(display_base=500)
    assert allocator.display() == 502
    assert allocator.display() == 503


def test_released_display_is_handed_out_again(fake_x):
    allocator = Allocator(display_base=500)
    first = allocator.display()
    allocator.release_display(first)
    assert allocator.display() == first


def test_concurrent_requests_never_collide(fake_x):
    allocator = Allocator(display_base=500)
    with ThreadPoolExecutor(16) as pool:
        displays = list(pool.map(lambda _: allocator.display(), range(64)))
        ports = list(pool.map(lambda _: allocator.port(), range(64)))
    assert len(set(displays)) == 64
    assert len(set(ports)) == 64


def test_exhausted_displays_raise(fake_x):
    allocator = Allocator(display_base=500, display_span=2)
    allocator.display(), allocator.display()
    with pytest.raises(AllocationError, match=":500"):
        allocator.display()


def test_ports_are_free_loopback_ports():
    allocator = Allocator()
    port = allocator.port()
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", port))  # would raise if something held it
    assert port in allocator.reserved[1]
    allocator.release_port(port)
    assert port not in allocator.reserved[1]
