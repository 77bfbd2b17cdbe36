"""A deployment configured from the OmniSci edition of the documents works unchanged.

``c.OmniSciSessionManager.*`` and ``c.OmniSciConfig.*`` are aliases of today's sections (the
HeavyAI names win when both are set, with a warning); ``OMNISCI_PROTOCOL|HOST|PORT`` are read
when the ``HEAVYAI_*`` variables are unset, and the notebook is told to read those.
"""

from __future__ import annotations

import json

import pytest

from heavyai_test_providers import SESSION_ID

OMNISCI_ENV = {"protocol": "OMNISCI_PROTOCOL", "host": "OMNISCI_HOST", "port": "OMNISCI_PORT"}


def get_session(fetch):
    response = fetch("heavyai", "session")
    assert response.code == 200
    return json.loads(response.body)


@pytest.fixture
def heavyai_env(monkeypatch):
    """Only the OmniSci-era variables are set, as an OmniSci deployment's environment has them."""
    for name in ("HEAVYAI_PROTOCOL", "HEAVYAI_HOST", "HEAVYAI_PORT"):
        monkeypatch.delenv(name, raising=False)
    env = {"OMNISCI_PROTOCOL": "binary", "OMNISCI_HOST": "omnisci.example", "OMNISCI_PORT": "6274"}
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    return env


@pytest.mark.parametrize("heavyai_overrides", [{"session_file": None}])
@pytest.mark.parametrize(
    "config_files",
    [{"jupyter_notebook_config.py": "c.OmniSciSessionManager.session_file = '{session_file}'\n"}],
)
def test_omnisci_settings_and_variables_work_unchanged(fetch, session_file):
    session_file.write_text(SESSION_ID)
    body = get_session(fetch)
    assert body["session"] == SESSION_ID
    assert body["connection"] == {"protocol": "binary", "host": "omnisci.example", "port": "6274"}
    assert body["environment"] == OMNISCI_ENV  # the notebook's connection cell reads what is set


@pytest.mark.parametrize(
    "config_files",
    [{"jupyter_server_config.py": "c.OmniSciSessionManager.session_file = '/nonexistent/omnisci'\n"
                                  "c.OmniSciSessionManager.host = 'LEGACY_HOST'\n"}],
)
def test_heavyai_names_win_over_omnisci_ones_with_a_warning(capfd, monkeypatch, fetch, session_file):
    monkeypatch.setenv("LEGACY_HOST", "legacy.example")
    session_file.write_text(SESSION_ID)  # c.HeavyAISessionManager.session_file, as the engine sets it
    body = get_session(fetch)
    assert body["session"] == SESSION_ID
    assert body["connection"]["host"] == "legacy.example"  # set only under the old name: taken
    # the extension app's own logger writes to stderr (it is created after any capture could attach)
    warnings = [line for line in capfd.readouterr().err.splitlines() if "c.OmniSciSessionManager.session_file" in line]
    assert warnings and "using c.HeavyAISessionManager.session_file" in warnings[0]


@pytest.mark.parametrize("extra_config", [{"OmniSciConfig": {"session_manager": "heavyai_test_providers.StaticSessionManager"}}])
def test_omnisci_config_names_the_provider(fetch):
    body = get_session(fetch)
    assert body["session"] == "static-session-id"  # StaticSessionManager's, not the file's


def test_heavyai_variables_win_when_both_are_set(fetch, session_file, monkeypatch):
    monkeypatch.setenv("HEAVYAI_HOST", "heavyai.example")
    session_file.write_text(SESSION_ID)
    body = get_session(fetch)
    assert body["connection"]["host"] == "heavyai.example" and body["environment"]["host"] == "HEAVYAI_HOST"
    assert body["environment"]["port"] == "OMNISCI_PORT"  # HEAVYAI_PORT is unset: the old one is read


def test_differing_heavyai_and_omnisci_variables_warn_once(caplog, fetch, session_file, monkeypatch):
    monkeypatch.setenv("HEAVYAI_HOST", "heavyai.example")  # OMNISCI_HOST is omnisci.example
    monkeypatch.setenv("HEAVYAI_PORT", "6274")  # the same as OMNISCI_PORT: nothing to warn about
    session_file.write_text(SESSION_ID)
    for _ in range(2):
        assert get_session(fetch)["connection"]["host"] == "heavyai.example"
    # the session manager's logger propagates to the server's, which pytest captures
    said = [record.getMessage() for record in caplog.records]
    warnings = [message for message in said if "both HEAVYAI_HOST and OMNISCI_HOST" in message]
    assert len(warnings) == 1 and "using HEAVYAI_HOST" in warnings[0], said
    assert not [message for message in said if "HEAVYAI_PORT and" in message]
    assert not [m for m in said if "omnisci.example" in m or "heavyai.example" in m]  # names, never values


@pytest.mark.parametrize("heavyai_overrides", [{"session_file": None}])
@pytest.mark.parametrize(
    "config_files",
    [{"jupyter_notebook_config.py": "c.OmniSciConfig.session_manager = "
                                    "'heavyai_test_providers.OmniSciEraSessionManager'\n"
                                    "c.OmniSciSessionManager.session_file = '{session_file}'\n"}],
)
def test_a_provider_subclassing_the_omnisci_class_works_unchanged(fetch, session_file):
    session_file.write_text(SESSION_ID)
    body = get_session(fetch)
    assert body["session"] == SESSION_ID and body["query"] == "SELECT 'omnisci-era'"
    assert body["environment"] == OMNISCI_ENV
