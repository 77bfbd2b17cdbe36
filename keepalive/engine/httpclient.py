"""The service's HTTP clients (to its sessions' Jupyter servers, its viewer's xpra, webhooks),
made on one TLS context.

A new ``httpx.AsyncClient`` loads the CA bundle into a new SSL context, whether or not it ever
speaks TLS: that was most of the service's own CPU with sessions idle, paid at every watchdog
probe of every session's Jupyter server. The context is made once, verifying as httpx's default
does (certifi's bundle), so a webhook over HTTPS is checked exactly as before.
"""

from __future__ import annotations

import functools
import ssl
from typing import Any

import certifi
import httpx


@functools.cache
def tls_context() -> ssl.SSLContext:
    return ssl.create_default_context(cafile=certifi.where())


def new_client(**options: Any) -> httpx.AsyncClient:
    """An ``httpx.AsyncClient`` that ignores proxy settings of the environment (the service's
    requests stay on loopback, or go to the one address configured)."""
    return httpx.AsyncClient(verify=tls_context(), trust_env=False, **options)
