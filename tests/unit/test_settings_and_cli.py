"""Settings: defaults from CONTRACT.md, KEEPALIVE_* environment, flags that win."""

from __future__ import annotations

from pathlib import Path

import pytest

from keepalive.cli import build_parser, main, settings_from_args
from keepalive.settings import Settings


def test_defaults_match_the_contract(monkeypatch, tmp_path):
    for name in list(__import__("os").environ):
        if name.startswith("KEEPALIVE_"):
            monkeypatch.delenv(name)
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path))
    monkeypatch.setattr("keepalive.settings.os.geteuid", lambda: 1000)
    settings = Settings()
    assert settings.host == "127.0.0.1"
    assert settings.port == 8900
    assert settings.state_dir == tmp_path / "keepalive"
    monkeypatch.setattr("keepalive.settings.os.geteuid", lambda: 0)
    assert Settings().state_dir == Path("/var/lib/keepalive")  # a system service's place, passable
    assert settings.jupyter_url == ""
    assert settings.chromium == "chromium"
    assert settings.xpra == "xpra"
    assert settings.api_token is None


def test_environment_is_read(monkeypatch, tmp_path):
    monkeypatch.setenv("KEEPALIVE_PORT", "9123")
    monkeypatch.setenv("KEEPALIVE_MAX_SESSIONS", "3")
    monkeypatch.setenv("KEEPALIVE_STATE_DIR", str(tmp_path))
    monkeypatch.setenv("KEEPALIVE_JUPYTER_URL", "http://127.0.0.1:8888/?token=abc")
    settings = Settings()
    assert (settings.port, settings.max_sessions, settings.state_dir) == (9123, 3, tmp_path)
    assert settings.jupyter_url == "http://127.0.0.1:8888/?token=abc"


def test_flags_win_over_the_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("KEEPALIVE_PORT", "9123")
    monkeypatch.setenv("KEEPALIVE_HOST", "127.0.0.2")
    args = build_parser().parse_args(["serve", "--port", "9999", "--state-dir", str(tmp_path)])
    settings = settings_from_args(args)
    assert settings.port == 9999
    assert settings.host == "127.0.0.2"  # not given as a flag: the environment stays
    assert settings.state_dir == tmp_path


def test_every_setting_has_a_documented_flag(capsys):
    with pytest.raises(SystemExit):
        build_parser().parse_args(["serve", "--help"])
    text = capsys.readouterr().out
    for name, field in Settings.model_fields.items():
        assert "--" + name.replace("_", "-") in text
        assert f"KEEPALIVE_{name.upper()}" in text.replace("\n", "").replace(" ", "")
        assert field.description, f"{name} has no description"


def test_a_bad_flag_value_names_the_option(capsys, tmp_path):
    assert main(["serve", "--port", "not-a-port", "--state-dir", str(tmp_path)]) == 2
    assert "--port" in capsys.readouterr().err


def test_no_command_prints_help(capsys):
    assert main([]) == 2
    assert "serve" in capsys.readouterr().out
