"""The extension under each of its names: ``keepalive_jupyter``, and the older ``server_ext`` and
``jupyterlab_omnisci.serverextension``. Any one enabled serves everything; several enabled
serve it once (one app with routes, one execution recorder, one drafts store)."""

from __future__ import annotations

import json

import pytest
from tornado.routing import PathMatches
from traitlets.config import Config

from heavyai_test_providers import SESSION_ID
from keepalive_jupyter.extension import KeepaliveJupyterExtension

NAMES = ["keepalive_jupyter", "server_ext", "jupyterlab_omnisci.serverextension"]


@pytest.fixture(
    params=[[name] for name in NAMES] + [NAMES, ["keepalive_jupyter", "server_ext"]],
    ids=lambda names: "+".join(names),
)
def enabled(request):
    return request.param


@pytest.fixture
def jp_server_config(heavyai_settings, heavyai_env, enabled):
    return Config({"ServerApp": {"jpserver_extensions": dict.fromkeys(enabled, True)}, **heavyai_settings})


def serving_apps(serverapp) -> list[KeepaliveJupyterExtension]:
    """The extension's apps that put their routes and settings into the server."""
    apps = {app for apps in serverapp.extension_manager.extension_apps.values() for app in apps}
    return [app for app in apps if isinstance(app, KeepaliveJupyterExtension) and app._serves]


def routes_ending(web_app, suffix: str) -> list:
    """Every route of the web app whose pattern ends with ``suffix``."""
    found = []

    def walk(router):
        for rule in getattr(router, "rules", []):
            if hasattr(rule.target, "rules"):
                walk(rule.target)
            elif isinstance(rule.matcher, PathMatches) and rule.matcher.regex.pattern.endswith(suffix):
                found.append(rule)

    walk(web_app.default_router)
    return found


def test_any_name_serves_the_extension_once(jp_serverapp, fetch, session_file, enabled):
    session_file.write_text(SESSION_ID)
    assert json.loads(fetch("heavyai", "session").body)["session"] == SESSION_ID
    activity = json.loads(fetch("api", "keepalive", "activity").body)
    assert (activity["kernels"], activity["lost"], activity["notebooks"]) == ([], [], {})

    (app,) = serving_apps(jp_serverapp)
    settings = jp_serverapp.web_app.settings
    assert settings["keepalive_execution_recorder"] is app.execution_recorder
    assert settings["keepalive_drafts"] is app.drafts
    for route in ("/heavyai/session$", "/api/keepalive/activity$", "/api/keepalive/drafts$"):
        assert len(routes_ending(jp_serverapp.web_app, route)) == 1, route
    # every enabled name is there, each with an app: the others stand by
    apps = jp_serverapp.extension_manager.extension_apps
    assert {name for name in enabled if apps.get(name)} == set(enabled)


def test_the_old_import_paths_give_the_same_classes():
    import jupyterlab_omnisci.serverextension as omnisci
    import server_ext
    import server_ext.app
    import server_ext.session
    from keepalive_jupyter import heavyai

    for name in ("BaseSessionManager", "HeavyAISession", "HeavyAISessionManager", "SessionError"):
        assert getattr(server_ext.session, name) is getattr(heavyai, name)
    assert server_ext.app.HeavyAIConfig is heavyai.HeavyAIConfig
    assert server_ext.HeavyAIExtension is server_ext.app.HeavyAIExtension is KeepaliveJupyterExtension
    assert omnisci.OmniSciSessionManager is heavyai.HeavyAISessionManager
    assert omnisci.OmniSciConfig is heavyai.HeavyAIConfig
