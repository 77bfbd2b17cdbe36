"""The HeavyAI session handoff: ``GET {base_url}/heavyai/session`` and where its answer comes from.

The JupyterLab side (the ``?heavyai`` workspace of the ``keepalive-heavyai`` labextension) asks
this server which HeavyDB session to use and how the database is reached. A *session manager*
answers, on every request: the default :class:`HeavyAISessionManager` reads the session ID from a
file and the connection from environment variables; a replacement is any subclass of
:class:`BaseSessionManager`, named by ``c.HeavyAIConfig.session_manager``.

Settings are read as HeavyAI's and OmniSci's documents give them: also from the Notebook-era
``jupyter_notebook_config`` files, and under the OmniSci-era section names
(``c.OmniSciSessionManager``, ``c.OmniSciConfig``) as aliases of today's.
"""

from __future__ import annotations

import inspect
import json
import logging
import os
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from jupyter_server.auth.decorator import authorized
from jupyter_server.base.handlers import APIHandler
from tornado import web
from traitlets import TraitError, Type, Unicode
from traitlets.config import Config, LoggingConfigurable
from traitlets.config.loader import ConfigFileNotFound, JSONFileConfigLoader, PyFileConfigLoader

#: Refuse to read session files larger than this: a session file holds an ID, not data.
MAX_SESSION_FILE_BYTES = 64 * 1024


class SessionError(Exception):
    """The session cannot be provided; answered to the client as a JSON error.

    ``status`` is the HTTP status, ``reason`` a short machine-readable code and the message
    (``str(error)``) is shown to the user, so it must never contain the session ID.
    """

    def __init__(self, message: str, *, status: int = 503, reason: str = "unavailable"):
        super().__init__(message)
        self.message = message
        self.status = status
        self.reason = reason


@dataclass
class HeavyAISession:
    """What a session manager provides.

    - ``session``: the HeavyDB session ID (non-empty).
    - ``query``: an SQL query to open with the session, ``""`` for none.
    - ``connection``: ``{"protocol", "host", "port"}`` values; ``None`` for a value that is
      not known (for the default provider: its environment variable is unset or empty).
    - ``environment``: ``{"protocol", "host", "port"}`` names of the environment variables
      the kernel can read these values from; ``None`` (or a missing key) when the value is
      only known to the provider, in which case the notebook uses the value itself.
    """

    session: str
    query: str = ""
    connection: dict[str, str | None] = field(default_factory=dict)
    environment: dict[str, str | None] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        keys = ("protocol", "host", "port")
        return {
            "session": self.session,
            "query": self.query or "",
            "connection": {k: self.connection.get(k) for k in keys},
            "environment": {k: self.environment.get(k) for k in keys},
        }


class BaseSessionManager(LoggingConfigurable):
    """The interface of a HeavyAI session provider.

    Implement :meth:`get_session` in a subclass and select it with::

        c.HeavyAIConfig.session_manager = "your_module.YourImplementation"

    - The class is instantiated once, at server start, as a traitlets ``LoggingConfigurable``:
      it can declare its own ``config=True`` traits (set as ``c.YourImplementation.name``)
      and log with ``self.log``.
    - :meth:`get_session` is called on every ``GET /heavyai/session``; it may be a plain or an
      ``async`` method.  It returns a :class:`HeavyAISession` (or a dict with the same keys),
      or raises :class:`SessionError` with a message for the user and an HTTP status.
      Any other exception is answered as a 500 JSON error without its details.
    - Never log the session ID.
    """

    def get_session(self) -> HeavyAISession:
        """Return the current session, or raise :class:`SessionError`."""
        raise NotImplementedError(f"{type(self).__name__} does not implement get_session()")


def _parse_session_file(text: str, path: str) -> tuple[str, str]:
    """Return (session, query) from a session file's text; raise SessionError if invalid.

    Two forms are accepted, surrounding whitespace ignored: plain text holding only the ID,
    or a JSON object ``{"session": "<id>", "query": "<sql>"}`` (``query`` optional).
    """
    text = text.strip()
    if not text:
        raise SessionError(
            f"No HeavyAI session: the session file is empty: {path}",
            status=404,
            reason="no_session",
        )
    if text.startswith("{"):
        try:
            data = json.loads(text)
        except ValueError:
            raise SessionError(
                f"The HeavyAI session file is not valid JSON: {path}",
                status=500,
                reason="malformed",
            ) from None
        session = data.get("session")
        query = data.get("query")
        if session is not None and not isinstance(session, str):
            raise SessionError(
                f'The HeavyAI session file\'s "session" is not a string: {path}',
                status=500,
                reason="malformed",
            )
        if not session or not session.strip():
            raise SessionError(
                f'No HeavyAI session: the session file has no "session": {path}',
                status=404,
                reason="no_session",
            )
        if query is not None and not isinstance(query, str):
            raise SessionError(
                f'The HeavyAI session file\'s "query" is not a string: {path}',
                status=500,
                reason="malformed",
            )
        session = session.strip()
        query = (query or "").strip()
    else:
        session, query = text, ""
    if any(ch.isspace() for ch in session):
        raise SessionError(
            "The HeavyAI session file must hold only the session ID "
            f'(or JSON {{"session": ..., "query": ...}}): {path}',
            status=500,
            reason="malformed",
        )
    return session, query


#: The OmniSci edition's environment variables, read when the HeavyAI ones are unset.
OMNISCI_VARIABLES = {"protocol": "OMNISCI_PROTOCOL", "host": "OMNISCI_HOST", "port": "OMNISCI_PORT"}


class HeavyAISessionManager(BaseSessionManager):
    """Default provider: session ID from a file, connection from environment variables."""

    protocol = Unicode(
        "HEAVYAI_PROTOCOL",
        help="Name of the environment variable holding the HeavyDB protocol "
        "(binary, http or https).",
    ).tag(config=True)

    host = Unicode(
        "HEAVYAI_HOST",
        help="Name of the environment variable holding the HeavyDB host name.",
    ).tag(config=True)

    port = Unicode(
        "HEAVYAI_PORT",
        help="Name of the environment variable holding the HeavyDB port.",
    ).tag(config=True)

    session_file = Unicode(
        "",
        help="Path of the file the HeavyDB session ID is read from, on every request "
        "(the session is ephemeral). Plain text holding only the ID, or JSON "
        '{"session": "<id>", "query": "<sql>"}. Must be set: there is no default.',
    ).tag(config=True)

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        #: Variables already warned about: the warning is said once, not on every request.
        self._warned_both_set: set[str] = set()

    def _environment(self) -> dict[str, str]:
        """The variable to read for each part of the connection.

        A name left at its default (``HEAVYAI_*``) whose variable is unset falls back to the
        OmniSci-era ``OMNISCI_*`` when that one is set: a deployment set up from the OmniSci
        documents works unchanged, and the notebook reads the variable that is really there.
        """
        environment = {"protocol": self.protocol, "host": self.host, "port": self.port}
        for key, name in environment.items():
            default = self.traits()[key].default_value
            legacy = OMNISCI_VARIABLES[key]
            if name != default or not os.environ.get(legacy):
                continue
            if not os.environ.get(name):
                environment[key] = legacy
            elif os.environ[name] != os.environ[legacy]:
                self._warn_both_set(name, legacy)
        return environment

    def _warn_both_set(self, name: str, legacy: str) -> None:
        """Say once per pair that the OmniSci-era variable is ignored (names only, never values)."""
        if name not in self._warned_both_set:
            self._warned_both_set.add(name)
            self.log.warning("HeavyAI: both %s and %s are set and differ; using %s", name, legacy, name)

    def _read_session_file(self) -> tuple[str, str]:
        if not self.session_file:
            raise SessionError(
                "No HeavyAI session file is configured: "
                "set c.HeavyAISessionManager.session_file.",
                status=503,
                reason="not_configured",
            )
        path = os.path.expanduser(self.session_file)
        try:
            with open(path, "rb") as f:
                raw = f.read(MAX_SESSION_FILE_BYTES + 1)
        except FileNotFoundError:
            raise SessionError(
                "No HeavyAI session: the session file does not exist: "
                f"{path} (c.HeavyAISessionManager.session_file)",
                status=404,
                reason="no_session",
            ) from None
        except OSError as e:
            raise SessionError(
                f"The HeavyAI session file cannot be read ({e.strerror or type(e).__name__}): "
                f"{path} (c.HeavyAISessionManager.session_file)",
                status=500,
                reason="unreadable",
            ) from None
        if len(raw) > MAX_SESSION_FILE_BYTES:
            raise SessionError(
                f"The HeavyAI session file is too large for a session ID "
                f"(over {MAX_SESSION_FILE_BYTES} bytes): {path}",
                status=500,
                reason="malformed",
            )
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError:
            raise SessionError(
                f"The HeavyAI session file is not UTF-8 text: {path}",
                status=500,
                reason="malformed",
            ) from None
        return _parse_session_file(text, path)

    def get_session(self) -> HeavyAISession:
        session, query = self._read_session_file()
        environment = self._environment()
        # An unset or empty variable is reported as None, never as "" that looks valid.
        connection = {key: (os.environ.get(name) or None) for key, name in environment.items()}
        return HeavyAISession(
            session=session, query=query, connection=connection, environment=environment
        )


class HeavyAIConfig(LoggingConfigurable):
    """Settings of the HeavyAI session handoff (``c.HeavyAIConfig.*``)."""

    session_manager = Type(
        default_value=HeavyAISessionManager,
        klass=BaseSessionManager,
        help="The session manager that provides the HeavyAI session: a subclass of "
        "keepalive_jupyter.heavyai.BaseSessionManager (server_ext.session.BaseSessionManager is the "
        'same class), given as a class or as an import string "your_module.YourImplementation". '
        "Checked when the server starts.",
    ).tag(config=True)


#: Legacy (Notebook-era) config files, read as well because the HeavyAI documentation tells
#: users to put these settings there.  jupyter_server itself does not read them.
LEGACY_CONFIG_NAME = "jupyter_notebook_config"

#: Setting sections of the OmniSci edition of this handoff, and their names today.
OMNISCI_ALIASES = {"OmniSciSessionManager": "HeavyAISessionManager", "OmniSciConfig": "HeavyAIConfig"}


def legacy_notebook_config(config_file_paths: Iterable[str], log: logging.Logger) -> Config:
    """jupyter_notebook_config.{json,py} from the server's config path, merged."""
    config = Config()
    # Lowest priority first, as traitlets applications do.
    for directory in reversed(list(config_file_paths)):
        for loader_class, ext in ((PyFileConfigLoader, ".py"), (JSONFileConfigLoader, ".json")):
            loader = loader_class(LEGACY_CONFIG_NAME + ext, path=directory, log=log)
            try:
                loaded = loader.load_config()
            except ConfigFileNotFound:
                continue
            log.debug("HeavyAI: read settings from %s", loader.full_filename)
            config.merge(loaded)
    return config


def effective_config(server_config: Config, config_file_paths: Iterable[str], log: logging.Logger) -> Config:
    """The legacy notebook config, overridden by the server's config files and command line;
    then the OmniSci-era section names (OMNISCI_ALIASES) as aliases of today's."""
    config = legacy_notebook_config(config_file_paths, log)
    config.merge(server_config)
    for old, new in OMNISCI_ALIASES.items():
        for key, value in config.get(old, {}).items():
            if key in config.get(new, {}):
                log.warning("HeavyAI: both c.%s.%s and c.%s.%s are set; using c.%s.%s", old, key, new, key, new, key)
                continue
            config[new][key] = value
    return config


def create_session_manager(
    server_config: Config, config_file_paths: Iterable[str], log: logging.Logger
) -> BaseSessionManager:
    """The configured session manager, made once at server start; a setting that names no
    BaseSessionManager subclass stops the server with a message that says so."""
    config = effective_config(server_config, config_file_paths, log)
    try:
        manager_class = HeavyAIConfig(config=config, log=log).session_manager
    except TraitError as e:
        raise SystemExit(
            "HeavyAI server extension: c.HeavyAIConfig.session_manager must name a "
            "subclass of keepalive_jupyter.heavyai.BaseSessionManager (also importable as "
            "server_ext.session.BaseSessionManager), as a class or an import string such as "
            f"'your_module.YourImplementation': {e}"
        ) from None
    log.info("HeavyAI: session manager %s.%s", manager_class.__module__, manager_class.__qualname__)
    return manager_class(config=config, log=log)


#: Resource name for jupyter_server's Authorizer (``is_authorized(handler, user, action, resource)``).
AUTH_RESOURCE = "heavyai"
#: Where the extension keeps the session manager in the web app's settings.
SESSION_MANAGER_SETTING = "heavyai_session_manager"


class SessionHandler(APIHandler):
    """``GET /heavyai/session``: the current HeavyAI session, as JSON."""

    auth_resource = AUTH_RESOURCE

    def _error(self, status: int, reason: str, message: str) -> None:
        self.set_status(status)
        self.set_header("Content-Type", "application/json")
        self.finish(json.dumps({"message": message, "reason": reason}))

    @web.authenticated
    @authorized
    async def get(self):
        manager = self.settings[SESSION_MANAGER_SETTING]
        # The answer carries a secret: never cache it.
        self.set_header("Cache-Control", "no-store")
        try:
            result = manager.get_session()
            if inspect.isawaitable(result):
                result = await result
            if isinstance(result, dict):
                result = HeavyAISession(**result)
            if not isinstance(result, HeavyAISession) or not result.session:
                raise TypeError(f"get_session() returned {type(result).__name__}, not a session")
        except SessionError as e:
            self.log.warning("HeavyAI session unavailable (%s): %s", e.reason, e.message)
            return self._error(e.status, e.reason, e.message)
        except Exception as e:
            # The details may carry secrets; log the type only.
            self.log.error(
                "HeavyAI session manager %s failed: %s", type(manager).__name__, type(e).__name__
            )
            return self._error(
                500,
                "provider_error",
                f"The HeavyAI session manager {type(manager).__name__} failed "
                "(see the Jupyter server log).",
            )
        self.finish(json.dumps(result.to_json()))
