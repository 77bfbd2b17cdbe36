"""Fixtures of the in-process tests of the session manager (test_manager, test_standby)."""

from __future__ import annotations

import pytest

from keepalive.settings import Settings
from tests.unit.fake_parts import FakeWorld
from tests.unit.managed import Managers


@pytest.fixture
def world() -> FakeWorld:
    """The fake machine the sessions' stand-in parts run on."""
    return FakeWorld()


@pytest.fixture
def settings(tmp_path) -> Settings:
    template = tmp_path / "template.tar.gz"
    template.write_bytes(b"")  # never unpacked: the fake display keeps no profile
    return Settings(state_dir=tmp_path / "state", api_token="t", profile_template=template,
                    session_users=False, probe_interval=3600, host="127.0.0.1")


@pytest.fixture
async def managers(settings, world):
    made = Managers(settings, world)
    yield made
    for manager in list(made.open):
        await made.close(manager, stop_sessions=True)
