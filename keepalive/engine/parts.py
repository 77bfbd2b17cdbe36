"""How a session gets its parts: the display and the Jupyter side, made by a factory.

The session hands its parts what they need from it as callables (``PartHooks``); the parts
never import the session. The service makes real parts (``real_parts``); unit tests hand the
manager and the session stand-ins of the same shape.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from playwright.async_api import Playwright

from keepalive.engine.allocation import Allocator
from keepalive.engine.cdp_gateway import CdpGateway
from keepalive.engine.cgroups import CgroupPlan
from keepalive.engine.containment import Containment
from keepalive.engine.display import Display, ExitHandler, Spawn
from keepalive.engine.jupyter_side import JupyterSide
from keepalive.engine.layout import SessionLayout
from keepalive.engine.record import SessionRecord
from keepalive.engine.users import SessionUser
from keepalive.settings import Settings


@dataclass
class PartHooks:
    """What a session gives its parts: its record (never its state: only the session changes
    that), and callables into it."""

    record: SessionRecord
    settings: Settings
    user: SessionUser | None
    layout: Callable[[], SessionLayout]
    environment: Callable[[], dict[str, str]]
    spawn: Spawn
    on_exit: ExitHandler
    on_browser_lost: Callable[[str], None]
    niceness: Callable[[], int]
    persist: Callable[[], None]


@dataclass
class Parts:
    display: Display
    jupyter: JupyterSide
    #: What holds the session's processes together; None: the weakest mode (its marker).
    containment: Containment | None = None


PartsFactory = Callable[[PartHooks], Parts]


def real_parts(
    allocator: Allocator, playwright: Playwright | None, gateway: CdpGateway | None, plan: CgroupPlan | None = None,
) -> PartsFactory:
    """The parts a session of the service runs: real processes, a real browser over CDP, in a
    cgroup of its own when the service has a ``plan`` for them (keepalive.engine.containment)."""

    def make(hooks: PartHooks) -> Parts:
        containment = Containment(hooks.record.id, plan, hooks.user, hooks.record.cgroup)
        jupyter = JupyterSide(
            hooks.record, hooks.settings, layout=hooks.layout, on_exit=hooks.on_exit,
            niceness=hooks.niceness, persist=hooks.persist, user=hooks.user,
            launch_options=containment.launch_options,
        )
        display = Display(
            hooks.record, hooks.settings, allocator=allocator, playwright=playwright, layout=hooks.layout,
            environment=hooks.environment, spawn=hooks.spawn, on_exit=hooks.on_exit,
            on_browser_lost=hooks.on_browser_lost, persist=hooks.persist,
            cdp_url=lambda: gateway.url(hooks.record.id), cdp_headers=lambda: gateway.service_headers,
            user=hooks.user, spared=jupyter.spared,
        )
        return Parts(display, jupyter, containment)

    return make
