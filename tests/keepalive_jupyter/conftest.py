"""Fixtures for the HeavyAI server extension's handler tests (pytest-jupyter)."""

from __future__ import annotations

import logging

import pytest
from traitlets.config import Config

# pytest-jupyter ships no pytest11 entry point: import its fixtures (and hooks) here so that
# only this directory uses them.
from pytest_jupyter.jupyter_server import *  # noqa: F403

@pytest.fixture
def session_file(tmp_path):
    """Where the session file is (not created: each test writes what it needs)."""
    return tmp_path / "heavyai-session"


@pytest.fixture
def heavyai_overrides():
    """Changes to the HeavyAISessionManager section; a value of None removes the setting."""
    return {}


@pytest.fixture
def extra_config():
    """More config sections (e.g. HeavyAIConfig, a replacement provider's own)."""
    return {}


@pytest.fixture
def heavyai_settings(session_file, heavyai_overrides, extra_config):
    """The HeavyAI part of the server config, as the engine's command line would give it."""
    section = {"session_file": str(session_file), **heavyai_overrides}
    section = {k: v for k, v in section.items() if v is not None}
    return {"HeavyAISessionManager": section, **extra_config}


@pytest.fixture
def config_files():
    """{file name: text} written into the Jupyter config dir before the server starts.

    ``{session_file}`` in a text is replaced by the test's session file path.
    """
    return {}


@pytest.fixture
def heavyai_env(monkeypatch):
    """The connection as the session engine sets it: three environment variables."""
    env = {"HEAVYAI_PROTOCOL": "https", "HEAVYAI_HOST": "db.example", "HEAVYAI_PORT": "6278"}
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    return env


@pytest.fixture
def jp_server_config(heavyai_settings, config_files, jp_config_dir, heavyai_env, session_file):
    for name, text in config_files.items():
        (jp_config_dir / name).write_text(text.replace("{session_file}", str(session_file)))
    return Config({"ServerApp": {"jpserver_extensions": {"keepalive_jupyter": True}}, **heavyai_settings})


@pytest.fixture
def fetch(jp_fetch, jp_asyncio_loop):
    """jp_fetch, run to completion on the server's loop.

    The tests are plain functions: with pytest-asyncio in auto mode, ``async def`` tests would
    run on pytest-asyncio's loop while the server under test waits on pytest-jupyter's.
    """

    def _fetch(*parts, **kwargs):
        return jp_asyncio_loop.run_until_complete(jp_fetch(*parts, **kwargs))

    return _fetch


class _Collect(logging.Handler):
    def __init__(self):
        super().__init__(level=logging.DEBUG)
        self.lines: list[str] = []

    def emit(self, record):
        self.lines.append(self.format(record))


@pytest.fixture
def all_logs():
    """Every line any logger emits during the test (handlers on every known logger)."""
    handler = _Collect()
    loggers = [logging.getLogger()] + [
        lg for lg in logging.Logger.manager.loggerDict.values() if isinstance(lg, logging.Logger)
    ]
    for lg in loggers:
        lg.addHandler(handler)
    yield handler.lines
    for lg in loggers:
        lg.removeHandler(handler)
