"""The REST API's request and response bodies (see CONTRACT.md)."""

from __future__ import annotations

from datetime import datetime
from enum import Enum
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, StringConstraints

#: Also names the session's home folder: it can never leave the homes dir.
SESSION_NAME_PATTERN = r"^[a-z0-9][a-z0-9-]{0,62}$"

SessionName = Annotated[
    str,
    StringConstraints(pattern=SESSION_NAME_PATTERN),
    Field(description="1-63 of a-z, 0-9 and '-', starting with a letter or digit."),
]


class SessionState(str, Enum):
    starting = "starting"
    ready = "ready"
    recovering = "recovering"
    stopping = "stopping"
    stopped = "stopped"
    failed = "failed"


class HeavyAIConnection(BaseModel):
    """Where the user's HeavyDB is and the session Immerse already authenticated."""

    model_config = ConfigDict(extra="forbid")

    protocol: Literal["http", "https", "binary"] = "https"
    host: Annotated[str, StringConstraints(min_length=1, max_length=253, pattern=r"^[A-Za-z0-9.\-:\[\]]+$")]
    port: int = Field(6278, ge=1, le=65535)
    session_id: SecretStr | None = Field(None, description="HeavyDB session ID; never echoed back.")
    query: str | None = Field(None, max_length=100_000, description="SQL to place in the workspace.")


class SessionCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: SessionName | None = None
    heavyai: HeavyAIConnection | None = None
    width: int | None = Field(None, ge=320, le=7680)
    height: int | None = Field(None, ge=240, le=4320)


class SessionHealth(BaseModel):
    xpra: bool
    browser: bool
    page: bool
    jupyter: bool


class SessionOut(BaseModel):
    id: str
    name: str
    state: SessionState
    created_at: datetime
    width: int
    height: int
    viewer_url: str
    screenshot_url: str
    cdp_url: str = Field(
        description="The browser's DevTools websocket, for Playwright's connect_over_cdp with the header "
        "'Authorization: Bearer <API token>'.",
    )
    health: SessionHealth
    restarts: int
    error: str | None = Field(None, description="Why the session failed, when it did.")


class SessionList(BaseModel):
    sessions: list[SessionOut]
