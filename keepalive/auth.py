"""The API token: configured, or generated once and kept in the state dir."""

from __future__ import annotations

import hmac
import os
import secrets
from pathlib import Path


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
    # O_EXCL + 0600: the token is never readable by others, not even for an instant.
    tmp = token_file.with_suffix(".tmp")
    tmp.unlink(missing_ok=True)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(token + "\n")
    tmp.replace(token_file)
    return token, True


def token_matches(expected: str, presented: str | None) -> bool:
    """Constant-time comparison, so the token cannot be guessed byte by byte."""
    if not presented:
        return False
    return hmac.compare_digest(expected.encode(), presented.encode())
