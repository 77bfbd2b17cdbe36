"""Old import path of the HeavyAI session providers: see ``keepalive_jupyter.heavyai``."""

from keepalive_jupyter.heavyai import (  # noqa: F401
    MAX_SESSION_FILE_BYTES,
    OMNISCI_VARIABLES,
    BaseSessionManager,
    HeavyAISession,
    HeavyAISessionManager,
    SessionError,
)

__all__ = ["BaseSessionManager", "HeavyAISession", "HeavyAISessionManager", "SessionError"]
