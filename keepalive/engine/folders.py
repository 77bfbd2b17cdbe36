"""The state dir's folders for sessions and homes, with the modes per-session users need."""

from __future__ import annotations

import logging
import os

from keepalive.engine.users import unreachable_reason
from keepalive.settings import Settings

log = logging.getLogger(__name__)


class UnusableStateDir(RuntimeError):
    """The state dir cannot hold sessions as configured; the message says why and what to do."""


def prepare_folders(settings: Settings) -> None:
    """The sessions' and homes' parents; with per-session users, passable (never listable) by them."""
    per_user = settings.per_session_users
    for folder in (settings.sessions_dir, settings.homes_dir):
        folder.mkdir(parents=True, exist_ok=True, mode=0o700)
        os.chmod(folder, 0o711 if per_user else 0o700)
    if not per_user:
        log.warning(
            "sessions run as this service's own user (%s): every notebook can read what the service "
            "can. Fine for one person or a trusted team; run the service as root for a user per session.",
            "root, KEEPALIVE_SESSION_USERS=false" if os.geteuid() == 0 else f"uid {os.geteuid()}",
        )
        return
    os.chmod(settings.state_dir, 0o711)  # its own files stay 0600: passing is all users can do
    problem = unreachable_reason(settings.sessions_dir)
    if problem is not None:
        raise UnusableStateDir(problem)
    log.info("each session runs as a user of its own (uids %s)", settings.session_uids)
