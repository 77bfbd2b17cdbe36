"""The REST API's request and response bodies (see CONTRACT.md)."""

from __future__ import annotations

from datetime import datetime
from enum import Enum
from typing import Annotated, Literal

from pydantic import AnyHttpUrl, BaseModel, BeforeValidator, ConfigDict, Field, SecretStr, StringConstraints

#: Also names the session's home folder: it can never leave the homes dir.
SESSION_NAME_PATTERN = r"^[a-z0-9][a-z0-9-]{0,62}$"

SessionName = Annotated[
    str,
    StringConstraints(pattern=SESSION_NAME_PATTERN),
    Field(description="1-63 of a-z, 0-9 and '-', starting with a letter or digit."),
]


class SessionState(str, Enum):
    #: started and waiting in the warm pool, nobody's yet (never listed; see keepalive.engine.pool)
    pooled = "pooled"
    starting = "starting"
    ready = "ready"
    recovering = "recovering"
    #: idle: its display and kiosk browser are down on purpose, its Jupyter server and kernels
    #: run on; woken by the next viewer, screenshot, DevTools client or busy kernel
    #: (keepalive.engine.standby)
    standby = "standby"
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


def _memory_size(value: str | int) -> int:
    from keepalive.engine.cgroups import parse_memory_size

    return parse_memory_size(value)


class SessionLimits(BaseModel):
    """What all of a session's processes together may use; each at most the operator's
    KEEPALIVE_SESSION_*_MAX (omitted: that value)."""

    model_config = ConfigDict(extra="forbid")

    memory_max: Annotated[int, BeforeValidator(_memory_size)] | None = Field(
        None, description="Memory, in binary units: \"2G\" (2 GiB), \"2GiB\", \"2048M\", or bytes.")
    cpu_max: float | None = Field(None, gt=0, le=1024, description="CPU cores, e.g. 1.5.")
    pids_max: int | None = Field(None, ge=64, le=4_194_304, description="Processes and threads at once.")


class SessionCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: SessionName | None = None
    heavyai: HeavyAIConnection | None = None
    width: int | None = Field(None, ge=320, le=7680)
    height: int | None = Field(None, ge=240, le=4320)
    webhook_url: Annotated[AnyHttpUrl, Field(max_length=2000)] | None = Field(
        None,
        description="Called (POST, JSON) when a run of cells ends: after webhook_min_busy seconds busy, or in an "
        "error. Default: the service's KEEPALIVE_WEBHOOK_URL. Treated as a secret: never shown again.",
    )
    webhook_min_busy: float | None = Field(
        None, ge=0, le=30 * 86400,
        description="Seconds a run must last to call the webhook (an error always does). Default: KEEPALIVE_WEBHOOK_MIN_BUSY.",
    )
    limits: SessionLimits | None = Field(
        None, description="Per-session limits within the operator's (needs cgroups: the service runs as root).")


class ViewerCounts(BaseModel):
    full: int = Field(0, description="Viewers that may type and click.")
    watch_only: int = Field(0, description="Viewers of a watch-only link: they see, nothing they send reaches the kiosk.")


class SessionHealth(BaseModel):
    xpra: bool = Field(description="The same as display: its older name, kept for the clients that read it.")
    browser: bool
    page: bool
    jupyter: bool
    display: bool = Field(description="The display runs, and the viewer server has not failed.")
    standby: bool | None = Field(None, exclude_if=lambda standby: not standby,
                                 description="Only there, and true, in standby: the display, the browser and "
                                 "its page are down on purpose, and the next viewer, screenshot or DevTools client "
                                 "wakes the session. Left out otherwise, so that an awake session is healthy exactly "
                                 "when every value is true.")


class RunError(BaseModel):
    ename: str
    evalue: str


class Run(BaseModel):
    """A run of cells: from the kernel going busy until nothing is left queued."""

    started_at: datetime
    finished_at: datetime
    busy_seconds: float
    cells: int = Field(description="Cells that ran (cells skipped after an error are not counted).")
    outcome: Literal["ok", "error"]
    error: RunError | None = None


class InputPrompt(BaseModel):
    prompt: str = Field(description="What the cell's input() or getpass() asks.")
    password: bool = Field(description="getpass(): the answer is not shown, stored or logged.")


class RunningCell(BaseModel):
    execution_count: int | None
    started_at: datetime | None
    tail: list[str] = Field(description="The last lines the cell printed, as a terminal shows them.")
    input: InputPrompt | None = Field(
        None, description="What the cell waits for on stdin; answer it with POST /sessions/{id}/input.")


class InputAnswer(BaseModel):
    """``POST /sessions/{id}/input``: the answer to a cell's input() or getpass()."""

    model_config = ConfigDict(extra="forbid")

    value: str = Field(max_length=65_536, description="What the kernel receives, as if typed in the kiosk.")
    kernel_id: Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9-]{1,64}$")] | None = Field(
        None, description="The kernel to answer; needed when more than one waits.")


class InputAnswered(BaseModel):
    kernel_id: str
    prompt: str


class KernelActivity(BaseModel):
    id: str
    notebook: str | None = Field(description="The notebook's path in the session's Jupyter server, if it has one.")
    state: str = Field(description="busy (running cells) or idle; or the kernel's own state (starting, dead...).")
    since: datetime | None = Field(description="When the kernel went busy or idle.")
    last_output_at: datetime | None
    running: RunningCell | None = None
    last_run: Run | None = None


class KernelDeath(BaseModel):
    """A kernel the session lost (to its memory limit, or it ended while the session's Jupyter
    server was down and could not be taken back): what the user is told on return."""

    kernel_id: str | None = Field(description="The kernel, when it is known which one it was (the one busy).")
    notebook: str | None
    reason: Literal["out of memory", "ended while its Jupyter server was down"]
    limit: int | None = Field(description="The session's memory limit in bytes, if it has one.")
    message: str = Field(description="What the user reads, e.g. 'the kernel was stopped: out of memory at 4 GiB'.")
    at: datetime


class SessionRestored(BaseModel):
    """Every process of the session had ended (the machine restarted, or all were killed) and a new
    service started it again: what the user is told on return (keepalive.engine.restore)."""

    reason: Literal["machine restarted", "processes ended"]
    last_alive_at: datetime | None = Field(
        description="When a keepalive service last saw the session alive (its heartbeat, every 10 s while a "
        "service ran; the session may have lived on after its service). null: not known.")
    down_by: datetime = Field(description="When it was down at the latest: the machine's restart (its boot time), "
                              "or when the new service found it gone.")
    restored_at: datetime = Field(description="When it was ready again.")
    new_kernels: bool = Field(True, description="Its kernels are new: variables and running cells are gone; "
                              "the outputs recorded before are kept.")
    message: str = Field(description="What the user reads over JupyterLab.")


class Activity(BaseModel):
    """What a session's kernels are doing, read from its Jupyter server."""

    busy: bool
    kernels: list[KernelActivity]
    updated_at: datetime = Field(description="When the Jupyter server last answered: it answers when something changes.")
    kernel_died: KernelDeath | None = Field(
        None, description="The last kernel the session lost: to its memory limit, or while its Jupyter server was down.")
    restored: SessionRestored | None = Field(
        None, description="Set when the session was restored after every process of it had ended (a reboot).")


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
    activity: Activity | None = Field(None, description="Its kernels, busy or idle; null until first read.")
    webhook: bool = Field(False, description="Whether a webhook is called when a run ends (its URL is never shown).")
    viewers: ViewerCounts = Field(default_factory=ViewerCounts, description="Viewers connected now.")


class SessionList(BaseModel):
    sessions: list[SessionOut]
