"""Hands out X display numbers and loopback ports that nobody else is using.

Reservations are held in-process under a lock, so two sessions started at the same
instant never get the same number; the checks against the system catch what other
programs (or a previous run of the service) hold.
"""

from __future__ import annotations

import socket
import threading
from pathlib import Path

X11_SOCKET_DIR = Path("/tmp/.X11-unix")
X_LOCK_DIR = Path("/tmp")


class AllocationError(RuntimeError):
    pass


def display_in_use(number: int) -> bool:
    return (X11_SOCKET_DIR / f"X{number}").exists() or (X_LOCK_DIR / f".X{number}-lock").exists()


def port_is_free(port: int, host: str = "127.0.0.1") -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        try:
            probe.bind((host, port))
        except OSError:
            return False
    return True


def free_port(host: str = "127.0.0.1") -> int:
    """A port the kernel considers free right now (bind to 0 and let go)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind((host, 0))
        return probe.getsockname()[1]


class Allocator:
    """Display numbers from ``display_base`` up, and ephemeral loopback ports."""

    def __init__(self, display_base: int = 100, display_span: int = 1000) -> None:
        self._display_base = display_base
        self._display_span = display_span
        self._displays: set[int] = set()
        self._ports: set[int] = set()
        self._lock = threading.Lock()

    def display(self) -> int:
        with self._lock:
            for number in range(self._display_base, self._display_base + self._display_span):
                if number not in self._displays and not display_in_use(number):
                    self._displays.add(number)
                    return number
        raise AllocationError(
            f"no free X display between :{self._display_base} and :{self._display_base + self._display_span - 1}"
        )

    def port(self) -> int:
        with self._lock:
            for _ in range(50):
                port = free_port()
                if port not in self._ports:
                    self._ports.add(port)
                    return port
        raise AllocationError("no free loopback port")

    def reserve(self, display: int | None, port: int | None) -> None:
        """Note numbers a session adopted from an earlier service already holds."""
        with self._lock:
            if display is not None:
                self._displays.add(display)
            if port is not None:
                self._ports.add(port)

    def release_display(self, number: int) -> None:
        with self._lock:
            self._displays.discard(number)

    def release_port(self, port: int) -> None:
        with self._lock:
            self._ports.discard(port)

    @property
    def reserved(self) -> tuple[frozenset[int], frozenset[int]]:
        with self._lock:
            return frozenset(self._displays), frozenset(self._ports)
