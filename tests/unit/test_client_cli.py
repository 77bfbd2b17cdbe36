"""The client subcommands' own logic: arguments, token discovery, tables, exit codes (no service)."""

from __future__ import annotations

import pytest

from keepalive import api_client as client_module
from keepalive.cli import build_parser, main
from keepalive.api_client import ClientError, default_url, find_token


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch):
    for name in ("KEEPALIVE_URL", "KEEPALIVE_HOST", "KEEPALIVE_PORT", "KEEPALIVE_API_TOKEN", "KEEPALIVE_STATE_DIR"):
        monkeypatch.delenv(name, raising=False)


def test_url_comes_from_the_environment_or_the_services_own_settings(monkeypatch):
    assert default_url() == "http://127.0.0.1:8900"
    monkeypatch.setenv("KEEPALIVE_PORT", "9100")
    monkeypatch.setenv("KEEPALIVE_HOST", "0.0.0.0")  # a service listening everywhere is on loopback too
    assert default_url() == "http://127.0.0.1:9100"
    monkeypatch.setenv("KEEPALIVE_URL", "http://example.test:1/")
    assert default_url() == "http://example.test:1"


def test_token_from_named_file_then_environment_then_state_dir(monkeypatch, tmp_path):
    (tmp_path / "api-token").write_text("from-state-dir\n")
    assert find_token(None, tmp_path) == "from-state-dir"
    monkeypatch.setenv("KEEPALIVE_API_TOKEN", "from-env")
    assert find_token(None, tmp_path) == "from-env"  # the environment wins over the state dir
    other = tmp_path / "other"
    other.write_text("from-file")
    assert find_token(other, tmp_path) == "from-file"  # a flag wins over the environment


def test_a_missing_token_says_where_it_looked(tmp_path):
    with pytest.raises(ClientError) as error:
        find_token(None, tmp_path)
    assert error.value.exit_code == ClientError.UNAUTHORIZED
    assert str(tmp_path / "api-token") in str(error.value) and "KEEPALIVE_API_TOKEN" in str(error.value)


def test_no_client_command_takes_a_token_on_the_command_line():
    parser = build_parser()
    for command in ("start", "list", "show", "stop", "screenshot", "viewer-link", "doctor", "serve"):
        sub = parser._subparsers._group_actions[0].choices[command]
        flags = {flag for action in sub._actions for flag in action.option_strings}
        assert "--api-token" not in flags and "--token" not in flags, command


def test_serve_reads_its_token_from_a_file(tmp_path):
    from keepalive.cli import settings_from_args

    token = tmp_path / "token"
    token.write_text("s3cret\n")
    args = build_parser().parse_args(["serve", "--api-token-file", str(token), "--state-dir", str(tmp_path)])
    assert settings_from_args(args).api_token.get_secret_value() == "s3cret"
    empty = tmp_path / "empty"
    empty.write_text("")
    assert main(["serve", "--api-token-file", str(empty), "--state-dir", str(tmp_path)]) == 2


def test_stop_needs_names_or_all_but_not_both(capsys, monkeypatch):
    monkeypatch.setenv("KEEPALIVE_API_TOKEN", "t")
    assert main(["stop"]) == 2
    assert main(["stop", "abc", "--all"]) == 2
    assert "not both" in capsys.readouterr().err


def test_an_unreachable_service_exits_3_with_one_line(capsys, monkeypatch):
    from keepalive.engine.allocation import free_port

    monkeypatch.setenv("KEEPALIVE_API_TOKEN", "t")
    assert main(["list", "--url", f"http://127.0.0.1:{free_port()}"]) == 3
    err = capsys.readouterr().err.strip()
    assert err.startswith("keepalive list: cannot reach keepalive at") and "\n" not in err


def test_a_heavyai_handoff_needs_a_host(capsys, monkeypatch):
    monkeypatch.setenv("KEEPALIVE_API_TOKEN", "t")
    assert main(["start", "--heavyai-port", "6274"]) == 2
    assert "--heavyai-host" in capsys.readouterr().err


@pytest.mark.parametrize("health, shown", [
    ({"xpra": True, "browser": True, "page": True, "jupyter": True, "display": True}, "ok"),
    ({"xpra": False, "browser": True, "page": False, "jupyter": True, "display": False}, "down: xpra,page,display"),
    ({"xpra": False, "browser": False, "page": False, "jupyter": True, "display": False, "standby": True}, "asleep"),
    ({"xpra": False, "browser": False, "page": False, "jupyter": False, "display": False, "standby": True},
     "asleep, down: jupyter"),
])
def test_health_column_names_what_is_down_and_a_session_asleep(health, shown):
    from keepalive.client_commands import _health

    assert _health({"health": health}) == shown


def test_api_errors_are_flattened_to_one_line():
    import httpx

    response = httpx.Response(422, json={"detail": [{"loc": ["body", "name"], "msg": "String should match pattern"}]})
    assert client_module._detail(response) == "name: String should match pattern"


def test_serve_banner_examples_name_only_what_the_client_would_miss(tmp_path, monkeypatch):
    from keepalive.cli import start_examples
    from keepalive.settings import Settings

    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "xdg"))
    monkeypatch.setattr("keepalive.settings.os.geteuid", lambda: 1000)  # root's default is /var/lib
    default = Settings(state_dir=tmp_path / "xdg" / "keepalive")
    token_line, curl_line, client_line = start_examples(default, "http://127.0.0.1:8900")
    assert token_line == f"TOKEN=$(cat {default.token_file})"
    assert curl_line == ('curl --json \'{"name": "alice"}\' -H "Authorization: Bearer $TOKEN" '
                         "http://127.0.0.1:8900/sessions")
    assert client_line == "# or: keepalive start --name alice"

    elsewhere = Settings(state_dir=tmp_path / "other")
    client_line = start_examples(elsewhere, "http://127.0.0.1:9001")[2]
    assert client_line == (f"# or: keepalive start --url http://127.0.0.1:9001 "
                           f"--token-file {elsewhere.token_file} --name alice")

    configured = Settings(state_dir=tmp_path / "other", api_token="configured-token")
    token_line, _, client_line = start_examples(configured, "http://127.0.0.1:9001")
    assert "cat" not in token_line and "--token-file" not in client_line  # the file is not the token
    assert "configured-token" not in " ".join(start_examples(configured, "http://127.0.0.1:9001"))


def test_ctrl_c_while_waiting_names_the_session_left_starting(capsys, monkeypatch):
    from keepalive import client_commands

    monkeypatch.setenv("KEEPALIVE_API_TOKEN", "t")
    monkeypatch.setattr(client_module.Client, "start", lambda self, body, wait: {"id": "s1", "state": "starting"})

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(client_commands, "_wait_until_ready", interrupted)
    assert main(["start", "--name", "x"]) == 130
    assert capsys.readouterr().err.strip() == (
        "keepalive start: interrupted; session s1 goes on starting (keepalive stop s1)"
    )
