"""A small client of keepalive's REST API, for the command line (``keepalive start|list|...``).

Where the service is and how to prove who we are, in this order:
- the URL: ``--url``, else ``KEEPALIVE_URL``, else ``http://KEEPALIVE_HOST:KEEPALIVE_PORT``
  (``127.0.0.1:8900`` by default);
- the token: ``--token-file``, else ``KEEPALIVE_API_TOKEN``, else the state dir's ``api-token``
  (the file ``keepalive serve`` wrote); a flag wins over the environment, as with every setting.
  Never a command-line value: ``ps`` shows those to everyone.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from keepalive.settings import default_state_dir

DEFAULT_URL = "http://127.0.0.1:8900"


class ClientError(Exception):
    """What went wrong, in one line, with the exit code a script can test."""

    #: Exit codes of the client commands (README: "Command line").
    API_ERROR = 1
    USAGE = 2
    UNREACHABLE = 3
    UNAUTHORIZED = 4

    def __init__(self, message: str, exit_code: int = API_ERROR) -> None:
        super().__init__(message)
        self.exit_code = exit_code


def default_url() -> str:
    if os.environ.get("KEEPALIVE_URL"):
        return os.environ["KEEPALIVE_URL"].rstrip("/")
    host = os.environ.get("KEEPALIVE_HOST", "127.0.0.1")
    if host in ("0.0.0.0", "::", ""):
        host = "127.0.0.1"  # listening everywhere includes loopback
    host = f"[{host}]" if ":" in host else host
    return f"http://{host}:{os.environ.get('KEEPALIVE_PORT', '8900')}"


def token_file_for(state_dir: Path | None) -> Path:
    state = state_dir or Path(os.environ.get("KEEPALIVE_STATE_DIR") or default_state_dir())
    return state / "api-token"


def find_token(token_file: Path | None, state_dir: Path | None = None) -> str:
    """The API token from a named file, the environment or the state dir; a clear error if none.

    A ``--token-file`` given on the command line wins over ``KEEPALIVE_API_TOKEN`` (flags win
    over the environment): whoever names a file means that file.
    """
    if token_file is None and os.environ.get("KEEPALIVE_API_TOKEN"):
        return os.environ["KEEPALIVE_API_TOKEN"]
    path = token_file or token_file_for(state_dir)
    try:
        token = path.read_text().strip()
    except FileNotFoundError:
        raise ClientError(
            f"no API token: set KEEPALIVE_API_TOKEN or pass --token-file ({path} does not exist)",
            ClientError.UNAUTHORIZED,
        ) from None
    except OSError as error:
        raise ClientError(f"cannot read the API token from {path}: {error.strerror}", ClientError.UNAUTHORIZED) from None
    if not token:
        raise ClientError(f"the API token file {path} is empty", ClientError.UNAUTHORIZED)
    return token


def _detail(response: httpx.Response) -> str:
    """The service's own explanation of an error, flattened to one line."""
    try:
        detail = response.json().get("detail", response.text)
    except ValueError:
        detail = response.text
    if isinstance(detail, list):  # FastAPI's 422: one entry per bad field
        detail = "; ".join(
            f"{'.'.join(str(part) for part in item.get('loc', [])[1:]) or 'body'}: {item.get('msg')}" for item in detail
        )
    return " ".join(str(detail).split())


@dataclass
class Client:
    url: str
    token: str
    timeout: float = 30.0

    def __post_init__(self) -> None:
        self._http = httpx.Client(
            base_url=self.url,
            headers={"Authorization": f"Bearer {self.token}"},
            timeout=self.timeout,
            trust_env=False,
        )

    def close(self) -> None:
        self._http.close()

    def request(self, method: str, path: str, *, ok: tuple[int, ...] = (200,), **kwargs: Any) -> httpx.Response:
        try:
            response = self._http.request(method, path, **kwargs)
        except httpx.TimeoutException:
            raise ClientError(f"{self.url} did not answer {method} {path} in time", ClientError.UNREACHABLE) from None
        except httpx.HTTPError as error:
            raise ClientError(f"cannot reach keepalive at {self.url}: {error}", ClientError.UNREACHABLE) from None
        if response.status_code in ok:
            return response
        if response.status_code == 401:
            raise ClientError(f"{self.url} refused the API token (401)", ClientError.UNAUTHORIZED)
        raise ClientError(f"{method} {path}: {response.status_code} {_detail(response)}")

    # -- sessions -------------------------------------------------------------------------

    def sessions(self) -> list[dict]:
        return self.request("GET", "/sessions").json()["sessions"]

    def session(self, id_or_name: str) -> dict:
        """A session by id, or by name among the live ones."""
        matches = [s for s in self.sessions() if id_or_name in (s["id"], s["name"])]
        if not matches:
            raise ClientError(f"no session with id or name {id_or_name!r}")
        by_id = [s for s in matches if s["id"] == id_or_name]
        return (by_id or matches)[0]

    def start(self, body: dict, wait: bool) -> dict:
        response = self.request(
            "POST", "/sessions", ok=(201, 202), params={"wait": str(wait).lower()}, json=body,
            timeout=None if wait else self.timeout,
        )
        return response.json()

    def stop(self, session_id: str) -> None:
        self.request("DELETE", f"/sessions/{session_id}", ok=(204, 404), timeout=120)

    def restart_jupyter(self, session_id: str) -> dict:
        return self.request("POST", f"/sessions/{session_id}/restart-jupyter").json()

    def screenshot(self, session_id: str) -> bytes:
        return self.request("GET", f"/sessions/{session_id}/screenshot").content

    def viewer_link(self, session_id: str, keyboard_layout: str | None = None, read_only: bool = False) -> dict:
        body = {**({"keyboard_layout": keyboard_layout} if keyboard_layout else {}), **({"read_only": True} if read_only else {})}
        body = body or None
        return self.request("POST", f"/sessions/{session_id}/viewer-link", json=body).json()

    def health(self) -> tuple[int, dict]:
        response = self.request("GET", "/health", ok=(200, 503))
        return response.status_code, response.json()
