"""The API token: configured, or generated once and kept in the state dir."""

from __future__ import annotations

import hmac
import secrets
from pathlib import Path

from keepalive.files import write_private


def load_or_create_token(configured: str | None, token_file: Path) -> tuple[str, bool]:
    """Return ``(token, created)``. ``created`` is True only when a new token was written."""
    if configured:
        return configured, False
    if token_file.exists():
        token = token_file.read_text().strip()
        if token:
            return token, False
    token_file.parent.mkdir(parents=True, exist_ok=True)
    token = secrets.token_urlsafe(32)
    write_private(token_file, token + "\n")
    return token, True


def token_matches(expected: str, presented: str | None) -> bool:
    """Constant-time comparison, so the token cannot be guessed byte by byte."""
    if not presented:
        return False
    return hmac.compare_digest(expected.encode(), presented.encode())
