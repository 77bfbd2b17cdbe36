"""The one settings object: defaults < ``KEEPALIVE_*`` environment < command-line flags."""

from __future__ import annotations

import os
from pathlib import Path

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


def default_state_dir() -> Path:
    """``$XDG_STATE_HOME/keepalive``, or ``~/.local/state/keepalive`` (the XDG default)."""
    base = os.environ.get("XDG_STATE_HOME") or Path.home() / ".local" / "state"
    return Path(base) / "keepalive"


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="KEEPALIVE_", extra="ignore")

    host: str = Field("127.0.0.1", description="Address the service listens on.")
    port: int = Field(8900, ge=0, le=65535, description="Port the service listens on (0: any free port).")
    state_dir: Path = Field(
        default_factory=default_state_dir,
        description="Where the API token, the profile template and the session folders live.",
    )
    api_token: SecretStr | None = Field(
        None,
        description="Bearer token for the API. Unset: generated on first start and stored in the state dir (0600).",
    )
    jupyter_url: str = Field(
        "",
        description="An existing Jupyter server for every session (its token in the URL's ?token=). "
        "Empty: each session gets its own embedded Jupyter server.",
    )
    chromium: str = Field("chromium", description="Chromium executable (name on PATH or path).")
    xpra: str = Field("xpra", description="xpra executable (name on PATH or path).")
    max_sessions: int = Field(8, ge=1, description="Live sessions allowed at once; one more answers 429.")
    profile_template: Path | None = Field(
        None,
        description="Chromium profile template tarball. Unset: keepalive makes one in the state dir on first use.",
    )
    start_timeout: float = Field(120.0, gt=0, description="Seconds a session may take to become ready.")
    default_width: int = Field(1280, ge=320, le=7680, description="Screen width of a session that names none.")
    default_height: int = Field(800, ge=240, le=4320, description="Screen height of a session that names none.")
    display_base: int = Field(
        100, ge=1, le=60000, description="Lowest X display number handed to sessions (xpra's :N)."
    )
    log_level: str = Field("info", description="Log level of the service (debug, info, warning, error).")

    @field_validator("jupyter_url")
    @classmethod
    def _strip_trailing_slash(cls, value: str) -> str:
        return value.rstrip("/")

    @property
    def sessions_dir(self) -> Path:
        return self.state_dir / "sessions"

    @property
    def token_file(self) -> Path:
        return self.state_dir / "api-token"
