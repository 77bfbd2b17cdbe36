"""Replacement session managers (and constants) used by the tests (importable by name: 'heavyai_test_providers.X')."""

from __future__ import annotations

from traitlets import Unicode

from jupyterlab_omnisci.serverextension import OmniSciSessionManager
from keepalive_jupyter.heavyai import BaseSessionManager, HeavyAISession, SessionError

SECRET = "s3cr3t-provider-detail"

#: A session ID shaped like HeavyDB's.
SESSION_ID = "b7f2c9e4a1d84c0f9e6a3b5d7c8e9f01"


class StaticSessionManager(BaseSessionManager):
    """Answers a fixed session with literal connection values, configurable by traitlets."""

    session_id = Unicode("static-session-id", help="The session ID to hand out.").tag(config=True)

    def get_session(self):
        return HeavyAISession(
            session=self.session_id,
            query="SELECT 1",
            connection={"protocol": "binary", "host": "vault.example", "port": "6274"},
            environment={},
        )


class AsyncDictSessionManager(BaseSessionManager):
    """An async provider returning a plain dict."""

    async def get_session(self):
        return {
            "session": "async-session-id",
            "query": "",
            "connection": {"protocol": "http", "host": "h", "port": "1"},
            "environment": {"protocol": "P", "host": "H", "port": "N"},
        }


class RefusingSessionManager(BaseSessionManager):
    def get_session(self):
        raise SessionError("The vault says no.", status=403, reason="denied")


class BrokenSessionManager(BaseSessionManager):
    def get_session(self):
        raise RuntimeError(f"connection string with {SECRET}")


class NotASessionManager:
    """Has the method, but is not a BaseSessionManager subclass."""

    def get_session(self):
        return {"session": "x"}


class OmniSciEraSessionManager(OmniSciSessionManager):
    """A replacement provider as written against the OmniSci edition: it subclasses the old
    default provider by its old name and keeps its file reading, adding a query of its own."""

    def get_session(self):
        session = super().get_session()
        session.query = "SELECT 'omnisci-era'"
        return session
