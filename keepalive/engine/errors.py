"""Saying what went wrong in one line."""

from __future__ import annotations


def first_line(error: BaseException) -> str:
    """The first line of ``error``'s message (Playwright's run to many), or its type's name when it
    has none (``asyncio.wait_for``'s TimeoutError says nothing)."""
    lines = str(error).strip().splitlines()
    return lines[0] if lines else type(error).__name__
