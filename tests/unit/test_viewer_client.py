"""The HTML5 client's connect settings and keepalive's pages (no xpra needed)."""

import json
import shutil
import subprocess
from pathlib import Path

import pytest

from keepalive.settings import Settings
from keepalive.viewer import html5_client as client
from keepalive.viewer.screen import xrandr_script
from keepalive.viewer.xpra_options import client_defaults, client_settings, viewer_screen, xpra_viewer_flags

XPRA_INDEX = Path("/usr/share/xpra/www/index.html")


def test_connect_script_is_loaded_right_after_utilities():
    page = XPRA_INDEX.read_bytes()
    patched = client.inject_connect_script(page)
    utilities = patched.index(b'src="js/Utilities.js"')
    ours = patched.index(b'src="keepalive-connect.js"')
    first_use = patched.index(b"Utilities.getparam", ours)
    assert utilities < ours < first_use


def test_an_unknown_index_is_refused():
    with pytest.raises(client.UnsupportedClient):
        client.inject_connect_script(b"<html></html>")


def test_connect_script_cannot_be_broken_out_of():
    script = client.connect_script({"password": '</script><script>alert(1)</script>"'}, {}, "/sessions/s1/viewer/")
    assert "</script>" not in script


def test_settings_off_by_default_and_password_forced(tmp_path):
    settings = Settings(state_dir=tmp_path)
    forced = client_settings(settings, "pw")
    assert forced["password"] == "pw"
    assert {forced[k] for k in ("sound", "clipboard", "printing", "file_transfer")} == {"no"}
    # xpra shares with everyone; the takeover of full viewers is the service's (xpra_proxy)
    assert forced["sharing"] == "yes" and forced["steal"] == "yes"
    assert client_defaults(settings) == {"keyboard_layout": "us"}
    assert client_defaults(Settings(state_dir=tmp_path, viewer_keyboard_layout="")) == {}


def test_xpra_flags_follow_the_settings(tmp_path):
    on = Settings(state_dir=tmp_path, viewer_sharing="share", viewer_clipboard=True, viewer_sound=True)
    flags = xpra_viewer_flags(on)
    assert "--sharing=yes" in flags and "--clipboard=yes" in flags and "--speaker=on" in flags
    assert "--microphone=off" in flags
    off = xpra_viewer_flags(Settings(state_dir=tmp_path))
    assert "--sharing=yes" in off and "--clipboard=no" in off and "--printing=no" in off
    assert "--resize-display=yes" in off
    assert "--resize-display=no" in xpra_viewer_flags(Settings(state_dir=tmp_path, viewer_resize=False))


def test_xvfb_screen_is_large_enough_for_viewers(tmp_path):
    settings = Settings(state_dir=tmp_path, viewer_max_width=1920, viewer_max_height=1080)
    assert viewer_screen(settings, 1280, 800) == (1920, 1080)
    assert viewer_screen(settings, 2560, 800) == (2560, 1080)
    no_resize = Settings(state_dir=tmp_path, viewer_resize=False)
    assert viewer_screen(no_resize, 1280, 800) == (1280, 800)


def test_xrandr_script_sets_exactly_the_size():
    script = xrandr_script(1024, 768)
    assert "--output screen --mode keepalive-1024x768" in script


@pytest.mark.parametrize("layout", ["de ch", "us;rm", "x" * 40])
def test_a_bad_keyboard_layout_setting_is_rejected(tmp_path, layout):
    with pytest.raises(ValueError):
        Settings(state_dir=tmp_path, viewer_keyboard_layout=layout)


def test_pages_escape_what_they_show():
    page = client.refused_page("<b>bad</b>")
    assert "<b>bad</b>" not in page and "&lt;b&gt;" in page
    redirect = client.redirect_page('/sessions/x/viewer/?keyboard_layout="><script>')
    assert '"><script>' not in redirect


def run_connect_script(query: dict[str, str], location: dict[str, str]) -> dict:
    """Run the connect script in node against a stand-in of xpra's Utilities; answer every PINNED param."""
    node = shutil.which("node")
    assert node, "node is needed (scripts/setup.sh installs it)"
    script = client.connect_script({"password": "pw"}, {"keyboard_layout": "us"}, "/sessions/s1/viewer/")
    harness = (
        f"var window = {{location: {json.dumps(location)}}};\n"
        f"var query = {json.dumps(query)};\n"
        "var Utilities = {getparam: function (p) { return Object.prototype.hasOwnProperty.call(query, p) ? query[p] : null; }};\n"
        + script
        + f"\nvar out = {{}}; {json.dumps([*client.PINNED, 'password', 'keyboard_layout'])}.forEach(function (p) {{ out[p] = Utilities.getparam(p); }});"
        "\nconsole.log(JSON.stringify(out));"
    )
    done = subprocess.run([node, "-e", harness], capture_output=True, text=True, check=True)
    return json.loads(done.stdout)


def test_no_url_parameter_can_send_the_client_elsewhere():
    evil = {name: "evil.example" for name in client.PINNED} | {"ssl": "true", "port": "1", "password": "x"}
    answers = run_connect_script(evil, {"hostname": "127.0.0.1", "port": "8900", "protocol": "http:"})
    assert answers == {
        "server": "127.0.0.1", "port": "8900", "ssl": "false", "path": "/sessions/s1/viewer/",
        "encryption": "", "key": "", "username": "", "display": "", "shadow_display": "",
        "password": "pw", "keyboard_layout": "us",
    }


def test_the_client_follows_the_page_to_https_and_keeps_url_defaults():
    answers = run_connect_script({"keyboard_layout": "de"}, {"hostname": "kept.example", "port": "", "protocol": "https:"})
    assert (answers["server"], answers["port"], answers["ssl"]) == ("kept.example", "", "true")
    assert answers["keyboard_layout"] == "de"  # a default, not pinned: the URL may choose it
