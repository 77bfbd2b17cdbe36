"""GET /heavyai/session: every session-file form, every error, both config file names."""

from __future__ import annotations

import json

import pytest
from tornado.httpclient import HTTPClientError

from heavyai_test_providers import SESSION_ID

ENVIRONMENT = {"protocol": "HEAVYAI_PROTOCOL", "host": "HEAVYAI_HOST", "port": "HEAVYAI_PORT"}
CONNECTION = {"protocol": "https", "host": "db.example", "port": "6278"}


def get_session(fetch):
    response = fetch("heavyai", "session")
    assert response.code == 200
    assert response.headers["Content-Type"].startswith("application/json")
    assert response.headers["Cache-Control"] == "no-store"
    return json.loads(response.body)


def get_error(fetch, status):
    with pytest.raises(HTTPClientError) as info:
        fetch("heavyai", "session")
    assert info.value.code == status
    body = json.loads(info.value.response.body)
    assert set(body) == {"message", "reason"}, body
    assert "Traceback" not in body["message"]
    return body


# --- file forms -------------------------------------------------------------------------


@pytest.mark.parametrize(
    "text",
    [SESSION_ID, f"{SESSION_ID}\n", f"  \n\t{SESSION_ID} \r\n\n"],
    ids=["bare", "newline", "whitespace"],
)
def test_plain_text_file(fetch, session_file, text):
    session_file.write_text(text)
    assert get_session(fetch) == {
        "session": SESSION_ID,
        "query": "",
        "connection": CONNECTION,
        "environment": ENVIRONMENT,
    }


QUERY = 'SELECT "a\\b", \'c\' FROM t\nWHERE x = \'\'\'"""'


@pytest.mark.parametrize(
    "text",
    [
        json.dumps({"session": SESSION_ID, "query": QUERY}),
        "\n  " + json.dumps({"session": f" {SESSION_ID}\n", "query": QUERY}, indent=2) + "\n\n",
    ],
    ids=["compact", "whitespace"],
)
def test_json_file_with_query(fetch, session_file, text):
    session_file.write_text(text)
    body = get_session(fetch)
    assert body["session"] == SESSION_ID
    assert body["query"] == QUERY
    assert body["connection"] == CONNECTION
    assert body["environment"] == ENVIRONMENT


@pytest.mark.parametrize(
    "data", [{"session": SESSION_ID}, {"session": SESSION_ID, "query": None}, {"session": SESSION_ID, "query": ""}]
)
def test_json_file_without_query(fetch, session_file, data):
    session_file.write_text(json.dumps(data))
    body = get_session(fetch)
    assert body["session"] == SESSION_ID
    assert body["query"] == ""


def test_file_is_read_on_every_request(fetch, session_file):
    session_file.write_text("first-session")
    assert (get_session(fetch))["session"] == "first-session"
    session_file.write_text(json.dumps({"session": "second-session", "query": "SELECT 2"}))
    body = get_session(fetch)
    assert (body["session"], body["query"]) == ("second-session", "SELECT 2")
    session_file.unlink()
    get_error(fetch, 404)


# --- errors -------------------------------------------------------------------------------


@pytest.mark.parametrize("heavyai_overrides", [{"session_file": None}, {"session_file": ""}])
def test_session_file_not_configured(fetch):
    body = get_error(fetch, 503)
    assert body["reason"] == "not_configured"
    assert "c.HeavyAISessionManager.session_file" in body["message"]


def test_missing_file(fetch, session_file):
    body = get_error(fetch, 404)
    assert body["reason"] == "no_session"
    assert str(session_file) in body["message"]
    assert "c.HeavyAISessionManager.session_file" in body["message"]


@pytest.mark.parametrize(
    "text", ["", "  \n\t\n", '{"query": "SELECT 1"}', '{"session": "", "query": ""}', '{"session": "  "}']
)
def test_empty_file_or_session(fetch, session_file, text):
    session_file.write_text(text)
    body = get_error(fetch, 404)
    assert body["reason"] == "no_session"
    assert str(session_file) in body["message"]


def test_unreadable_file(fetch, session_file):
    session_file.mkdir()  # a directory: open() fails even for root
    body = get_error(fetch, 500)
    assert body["reason"] == "unreadable"
    assert str(session_file) in body["message"]
    assert "cannot be read" in body["message"]


@pytest.mark.parametrize(
    "content",
    [
        b'{"session": "zq9secret", ',  # truncated JSON
        b'{"session": 12345, "zq9secret": 1}',  # wrong type
        b'{"session": "zq9secret", "query": ["SELECT 1"]}',
        b"zq9secret zq9other",  # plain text must be the ID only
        b"zq9secret\nzq9other\n",
        b"\xff\xfe\x00zq9secret",
        b"zq9secret" * 8000,
    ],
    ids=["truncated", "session-type", "query-type", "words", "lines", "binary", "huge"],
)
def test_malformed_file(fetch, session_file, content, all_logs):
    session_file.write_bytes(content)
    body = get_error(fetch, 500)
    assert body["reason"] == "malformed"
    assert str(session_file) in body["message"]
    # Whatever was in the file stays out of the answer and out of the log.
    assert "zq9" not in body["message"]
    assert all_logs, "no log line was captured at all: the capture is broken"
    assert not [line for line in all_logs if "zq9" in line]


@pytest.mark.parametrize("unset", [["HEAVYAI_HOST"], ["HEAVYAI_PROTOCOL", "HEAVYAI_HOST", "HEAVYAI_PORT"]])
def test_unset_environment_is_null(fetch, session_file, monkeypatch, unset):
    session_file.write_text(SESSION_ID)
    for name in unset:
        monkeypatch.delenv(name)
    body = get_session(fetch)
    for key, name in ENVIRONMENT.items():
        assert body["connection"][key] == (None if name in unset else CONNECTION[key])
    assert body["environment"] == ENVIRONMENT


def test_empty_environment_value_is_null(fetch, session_file, monkeypatch):
    session_file.write_text(SESSION_ID)
    monkeypatch.setenv("HEAVYAI_PORT", "")
    body = get_session(fetch)
    assert body["connection"]["port"] is None
    assert body["connection"]["host"] == "db.example"


# --- authentication and authorization -------------------------------------------------------


def test_requires_authentication(fetch, session_file):
    session_file.write_text(SESSION_ID)
    with pytest.raises(HTTPClientError) as info:
        fetch("heavyai", "session", headers={"Authorization": ""})
    assert info.value.code == 403
    assert SESSION_ID.encode() not in (info.value.response.body or b"")


@pytest.fixture
def deny_heavyai(jp_server_config):
    """An Authorizer that refuses the 'heavyai' resource and allows the rest."""
    from jupyter_server.auth import Authorizer

    class DenyHeavyAI(Authorizer):
        def is_authorized(self, handler, user, action, resource):
            return resource != "heavyai"

    jp_server_config.ServerApp.authorizer_class = DenyHeavyAI
    return jp_server_config


def test_authorizer_is_consulted(deny_heavyai, fetch, session_file):
    session_file.write_text(SESSION_ID)
    with pytest.raises(HTTPClientError) as info:
        fetch("heavyai", "session")
    assert info.value.code == 403
    assert SESSION_ID.encode() not in (info.value.response.body or b"")
    # Other APIs are still allowed: the refusal is specific to our resource.
    assert (fetch("api", "status")).code == 200


def test_session_id_never_logged(fetch, session_file, all_logs):
    session_file.write_text(json.dumps({"session": SESSION_ID, "query": "SELECT 42"}))
    get_session(fetch)
    session_file.unlink()
    get_error(fetch, 404)
    assert all_logs, "no log line was captured at all: the capture is broken"
    assert not [line for line in all_logs if SESSION_ID in line]


# --- settings: names of the environment variables, both config file names -------------------------


@pytest.mark.parametrize(
    "heavyai_overrides", [{"protocol": "DB_PROTO", "host": "DB_HOST", "port": "DB_PORT"}]
)
def test_environment_variable_names_are_settings(fetch, session_file, monkeypatch):
    session_file.write_text(SESSION_ID)
    monkeypatch.setenv("DB_PROTO", "binary")
    monkeypatch.setenv("DB_HOST", "other.example")
    monkeypatch.delenv("DB_PORT", raising=False)
    body = get_session(fetch)
    assert body["environment"] == {"protocol": "DB_PROTO", "host": "DB_HOST", "port": "DB_PORT"}
    assert body["connection"] == {"protocol": "binary", "host": "other.example", "port": None}


def _settings_py(prefix, session_file="{session_file}"):
    return (
        f"c.HeavyAISessionManager.session_file = {session_file!r}\n"
        f"c.HeavyAISessionManager.protocol = '{prefix}_PROTOCOL'\n"
        f"c.HeavyAISessionManager.host = '{prefix}_HOST'\n"
        f"c.HeavyAISessionManager.port = '{prefix}_PORT'\n"
    )


@pytest.fixture
def prefixed_env(monkeypatch):
    for prefix in ("SRV", "NB"):
        monkeypatch.setenv(f"{prefix}_PROTOCOL", f"{prefix.lower()}-proto")
        monkeypatch.setenv(f"{prefix}_HOST", f"{prefix.lower()}.example")
        monkeypatch.setenv(f"{prefix}_PORT", "1111" if prefix == "SRV" else "2222")


def _prefixed(prefix):
    return {
        "protocol": f"{prefix.lower()}-proto",
        "host": f"{prefix.lower()}.example",
        "port": "1111" if prefix == "SRV" else "2222",
    }


@pytest.mark.parametrize("heavyai_overrides", [{"session_file": None}])
@pytest.mark.parametrize(
    "config_files, prefix",
    [
        ({"jupyter_server_config.py": _settings_py("SRV")}, "SRV"),
        ({"jupyter_notebook_config.py": _settings_py("NB")}, "NB"),
        (
            {
                "jupyter_notebook_config.json": json.dumps(
                    {"HeavyAISessionManager": {"session_file": "{session_file}", "host": "NB_HOST"}}
                )
            },
            None,
        ),
    ],
    ids=["jupyter_server_config.py", "jupyter_notebook_config.py", "jupyter_notebook_config.json"],
)
def test_settings_from_config_file(fetch, session_file, prefixed_env, config_files, prefix):
    session_file.write_text(SESSION_ID)
    body = get_session(fetch)
    assert body["session"] == SESSION_ID
    if prefix:
        assert body["environment"] == {k: f"{prefix}_{k.upper()}" for k in ENVIRONMENT}
        assert body["connection"] == _prefixed(prefix)
    else:
        assert body["environment"] == {**ENVIRONMENT, "host": "NB_HOST"}
        assert body["connection"] == {**CONNECTION, "host": "nb.example"}


@pytest.mark.parametrize("heavyai_overrides", [{"session_file": None}])
@pytest.mark.parametrize(
    "config_files",
    [
        {
            # The legacy file sets everything; the server's file overrides the names only.
            "jupyter_notebook_config.py": _settings_py("NB"),
            "jupyter_server_config.py": "c.HeavyAISessionManager.host = 'SRV_HOST'\n",
        }
    ],
)
def test_server_config_wins_over_notebook_config(fetch, session_file, prefixed_env):
    session_file.write_text(SESSION_ID)
    body = get_session(fetch)
    assert body["session"] == SESSION_ID  # session_file from jupyter_notebook_config.py
    assert body["environment"] == {"protocol": "NB_PROTOCOL", "host": "SRV_HOST", "port": "NB_PORT"}
    assert body["connection"] == {"protocol": "nb-proto", "host": "srv.example", "port": "2222"}


@pytest.mark.parametrize(
    "heavyai_overrides", [{"session_file": "/nonexistent/from-command-line"}]
)
@pytest.mark.parametrize("config_files", [{"jupyter_notebook_config.py": _settings_py("NB")}])
def test_command_line_wins_over_notebook_config(fetch):
    body = get_error(fetch, 404)
    assert "/nonexistent/from-command-line" in body["message"]
