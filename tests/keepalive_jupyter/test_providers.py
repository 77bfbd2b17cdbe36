"""c.HeavyAIConfig.session_manager: replacement providers, as classes and import strings."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from tornado.httpclient import HTTPClientError

import heavyai_test_providers as providers

HERE = Path(__file__).parent


def _provider(value, **sections):
    return {"HeavyAIConfig": {"session_manager": value}, **sections}


@pytest.mark.parametrize(
    "extra_config",
    [
        _provider("heavyai_test_providers.StaticSessionManager"),
        _provider(providers.StaticSessionManager),
    ],
    ids=["import-string", "class"],
)
def test_replacement_provider(fetch):
    body = json.loads(fetch("heavyai", "session").body)
    assert body == {
        "session": "static-session-id",
        "query": "SELECT 1",
        "connection": {"protocol": "binary", "host": "vault.example", "port": "6274"},
        "environment": {"protocol": None, "host": None, "port": None},
    }


@pytest.mark.parametrize(
    "extra_config",
    [
        _provider(
            "heavyai_test_providers.StaticSessionManager",
            StaticSessionManager={"session_id": "configured-id"},
        )
    ],
)
def test_replacement_provider_has_its_own_settings(fetch):
    assert json.loads(fetch("heavyai", "session").body)["session"] == "configured-id"


@pytest.mark.parametrize(
    "config_files",
    [
        {
            "jupyter_notebook_config.py": (
                'c.HeavyAIConfig.session_manager = "heavyai_test_providers.StaticSessionManager"\n'
                'c.StaticSessionManager.session_id = "from-notebook-config"\n'
            )
        }
    ],
)
def test_replacement_provider_from_notebook_config(fetch):
    """The setting exactly as the HeavyAI documentation shows it, in the file it names."""
    assert json.loads(fetch("heavyai", "session").body)["session"] == "from-notebook-config"


@pytest.mark.parametrize("extra_config", [_provider("heavyai_test_providers.AsyncDictSessionManager")])
def test_async_provider_returning_dict(fetch):
    body = json.loads(fetch("heavyai", "session").body)
    assert body["session"] == "async-session-id"
    assert body["environment"] == {"protocol": "P", "host": "H", "port": "N"}


@pytest.mark.parametrize("extra_config", [_provider("heavyai_test_providers.RefusingSessionManager")])
def test_provider_session_error(fetch):
    with pytest.raises(HTTPClientError) as info:
        fetch("heavyai", "session")
    assert info.value.code == 403
    assert json.loads(info.value.response.body) == {"message": "The vault says no.", "reason": "denied"}


@pytest.mark.parametrize("extra_config", [_provider("heavyai_test_providers.BrokenSessionManager")])
def test_provider_crash_is_a_json_500_without_details(fetch, all_logs):
    with pytest.raises(HTTPClientError) as info:
        fetch("heavyai", "session")
    assert info.value.code == 500
    body = json.loads(info.value.response.body)
    assert body["reason"] == "provider_error"
    assert "BrokenSessionManager" in body["message"]
    assert providers.SECRET not in info.value.response.body.decode()
    assert [line for line in all_logs if "BrokenSessionManager failed" in line]
    assert not [line for line in all_logs if providers.SECRET in line]


def test_default_provider_is_documented_class():
    from keepalive_jupyter.heavyai import BaseSessionManager, HeavyAIConfig, HeavyAISessionManager

    trait = HeavyAIConfig.class_traits()["session_manager"]
    assert trait.default_value is HeavyAISessionManager
    assert trait.klass is BaseSessionManager
    assert "BaseSessionManager" in trait.help
    for cls in (HeavyAIConfig, HeavyAISessionManager):
        for name, t in cls.class_traits(config=True).items():
            assert t.help, f"{cls.__name__}.{name} has no help"
    assert "get_session" in BaseSessionManager.__doc__


def _start_server(tmp_path, config_text):
    """Run a real `jupyter server` with a config file; return (returncode, output)."""
    config_dir = tmp_path / "config"
    config_dir.mkdir()
    (config_dir / "jupyter_server_config.py").write_text(
        "c.ServerApp.jpserver_extensions = {'keepalive_jupyter': True}\n" + config_text
    )
    env = {
        **os.environ,
        "JUPYTER_CONFIG_DIR": str(config_dir),
        "JUPYTER_RUNTIME_DIR": str(tmp_path / "runtime"),
        "PYTHONPATH": os.pathsep.join([str(HERE), os.environ.get("PYTHONPATH", "")]),
    }
    proc = subprocess.run(
        [sys.executable, "-m", "jupyter_server", "--no-browser", "--ServerApp.port=0",
         "--ServerApp.ip=127.0.0.1", f"--ServerApp.root_dir={tmp_path}"],
        env=env, capture_output=True, text=True, timeout=120,
    )
    return proc.returncode, proc.stdout + proc.stderr


@pytest.mark.parametrize(
    "value, expected",
    [
        ("heavyai_test_providers.NotASessionManager", "NotASessionManager"),
        ("heavyai_test_providers.DoesNotExist", "DoesNotExist"),
        ("no_such_module_zz.Provider", "no_such_module_zz"),
    ],
    ids=["not-a-subclass", "missing-class", "missing-module"],
)
def test_bad_provider_fails_start_up(tmp_path, value, expected):
    code, output = _start_server(tmp_path, f"c.HeavyAIConfig.session_manager = {value!r}\n")
    assert code != 0, output
    assert "c.HeavyAIConfig.session_manager must name a subclass of " in output, output
    assert "keepalive_jupyter.heavyai.BaseSessionManager" in output
    assert expected in output
    assert "is running at" not in output
