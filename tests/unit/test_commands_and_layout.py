"""Command lines and the session environment, built without running anything."""

from __future__ import annotations

import stat

from keepalive.engine.commands import (
    ScreenSize,
    chromium_command,
    jupyter_command,
    write_xpra_config,
    xpra_command,
    xvfb_command,
)
from keepalive.engine.layout import SESSION_MARKER, SessionLayout


def option(argv: list[str], name: str) -> str:
    values = [arg.split("=", 1)[1] for arg in argv if arg.startswith(name + "=")]
    assert len(values) == 1, (name, argv)
    return values[0]


def test_xpra_joins_the_running_display_on_loopback_behind_a_password(tmp_path):
    layout = SessionLayout(tmp_path / "s")
    argv = xpra_command("xpra", 123, 40000, layout, ["--sharing=yes"])
    assert argv[:3] == ["xpra", "start", ":123"]
    assert option(argv, "--bind-tcp") == "127.0.0.1:40000"
    assert option(argv, "--tcp-auth") == f"file:filename={layout.xpra_password_file}"
    assert option(argv, "--daemon") == "no"
    assert option(argv, "--bind") == "none"  # no unix socket: deep state dirs pass AF_UNIX's limit
    # a viewers' server only: the display and the browser are the session's, and outlive it
    assert option(argv, "--use-display") == "yes"
    assert option(argv, "--exit-with-children") == "no"
    assert not [arg for arg in argv if arg.startswith(("--xvfb", "--start-child"))]
    assert argv[-1] == "--sharing=yes"  # the viewer flags come last: they win


def test_xvfb_has_the_session_cookie_no_tcp_and_the_viewers_framebuffer(tmp_path):
    layout = SessionLayout(tmp_path / "with space")
    argv = xvfb_command("Xvfb", 7, layout, ScreenSize(1280, 800), ScreenSize(2560, 1600))
    assert argv[:2] == ["Xvfb", ":7"]
    assert argv[argv.index("-auth") + 1] == str(layout.xauthority)  # one argument, spaces and all
    assert argv[argv.index("-nolisten") + 1] == "tcp"
    assert argv[argv.index("-screen") + 2] == "2560x1600x24+32"
    assert xvfb_command("Xvfb", 7, layout, ScreenSize(1280, 800))[argv.index("-screen") + 2] == "1280x800x24+32"
    assert argv[argv.index("+extension") + 1] == "Composite"  # xpra needs it when a viewer comes
    assert "-fbdir" not in argv  # the framebuffer in Xvfb's own memory, unless a folder is given
    in_file = xvfb_command("Xvfb", 7, layout, ScreenSize(1280, 800), ScreenSize(2560, 1600), tmp_path / "fb dir")
    assert in_file[in_file.index("-fbdir") + 1] == str(tmp_path / "fb dir")


def test_kiosk_chromium_has_no_cdp_port_only_a_pipe_and_its_own_profile(tmp_path):
    layout = SessionLayout(tmp_path / "with space")
    argv = chromium_command("/usr/bin/chromium", layout, ScreenSize(1024, 768))
    assert "--kiosk" in argv and "--no-first-run" in argv
    assert "--remote-debugging-pipe" in argv
    assert not [a for a in argv if a.startswith("--remote-debugging-port") or a.startswith("--remote-debugging-address")]
    assert option(argv, "--user-data-dir") == str(layout.profile_dir)
    assert option(argv, "--window-size") == "1024,768"
    assert "--disable-background-networking" in argv
    # one of each: Chromium keeps only the last of a repeated switch
    assert "CDPScreenshotNewSurface" in option(argv, "--enable-features").split(",")
    assert "BackForwardCache" in option(argv, "--disable-features").split(",")
    assert argv[-1] == "about:blank"


def test_jupyter_command_carries_no_token(tmp_path):
    layout = SessionLayout(tmp_path / "s")
    argv = jupyter_command(layout, "/opt/jupyter-env/bin/python")
    assert argv[:3] == ["/opt/jupyter-env/bin/python", "-m", "keepalive_jupyter.lean_jupyterlab"]
    assert "--ip=127.0.0.1" in argv
    assert option(argv, "--HeavyAISessionManager.session_file") == str(layout.heavyai_session_file)
    assert not [arg for arg in argv if "token" in arg.lower()]


def test_environment_keeps_everything_inside_the_session_folder(tmp_path):
    layout = SessionLayout(tmp_path / "s")
    layout.create()
    env = layout.environment("abc", base={"PATH": "/usr/bin", "DISPLAY": ":0", "HOME": "/root"})
    assert env[SESSION_MARKER] == "abc"
    assert "DISPLAY" not in env
    assert env["PATH"] == "/usr/bin"
    for name in ("HOME", "XDG_CONFIG_HOME", "XDG_DATA_HOME", "XDG_CACHE_HOME", "XDG_STATE_HOME", "XDG_RUNTIME_DIR"):
        assert env[name].startswith(str(layout.folder)), name
    assert stat.S_IMODE(layout.runtime_dir.stat().st_mode) == 0o700
    assert stat.S_IMODE(layout.folder.stat().st_mode) == 0o700


def test_children_inherit_only_an_allow_list_of_the_services_environment(tmp_path):
    layout = SessionLayout(tmp_path / "s")
    service_env = {
        "PATH": "/usr/bin", "LANG": "C.UTF-8", "LC_ALL": "C.UTF-8", "https_proxy": "http://proxy:3128",
        "KEEPALIVE_API_TOKEN": "service-token", "KEEPALIVE_JUPYTER_URL": "http://h/?token=t",
        "JUPYTER_TOKEN": "other", "AWS_SECRET_ACCESS_KEY": "s3cret", "DBUS_SESSION_BUS_ADDRESS": "unix:x",
        "PYTHONPATH": "/service/lib", "VIRTUAL_ENV": "/service/.venv",
    }
    env = layout.environment("abc", base=service_env)
    kept = {k for k in service_env if k in env}
    assert kept == {"PATH", "LANG", "LC_ALL", "https_proxy"}
    assert not [v for v in env.values() if "token" in v.lower() or "s3cret" in v]


def test_xpra_config_clears_debians_xsession_start(tmp_path):
    layout = SessionLayout(tmp_path / "s")
    layout.create()
    env = write_xpra_config(layout)
    text = (layout.xpra_conf_dir / "xpra.conf").read_text()
    assert env == {"XPRA_USER_CONF_DIRS": str(layout.xpra_conf_dir)}
    assert "start =\n" in text
