"""The HTML5 client's files as the service serves them, from a www dir of the test's own."""

from __future__ import annotations

from pathlib import Path

import pytest

from keepalive.viewer.html5_files import ClientMissing, Html5Files, www_dirs


@pytest.fixture
def www(tmp_path) -> Path:
    root = tmp_path / "share" / "xpra" / "www"
    (root / "js" / "lib").mkdir(parents=True)
    (root / "index.html").write_text("<html>index</html>")
    (root / "js" / "Client.js").write_text("var client;")
    (root / "css").mkdir()
    (root / "css" / "client.css").write_text("body {}")
    # as Debian ships it: jquery.js is a link out of the www dir
    elsewhere = tmp_path / "javascript" / "jquery.js"
    elsewhere.parent.mkdir()
    elsewhere.write_text("var jQuery;")
    (root / "js" / "lib" / "jquery.js").symlink_to(elsewhere)
    (tmp_path / "secret.txt").write_text("not for viewers")
    return root


def test_client_files_come_with_their_type(www):
    files = Html5Files(www)
    script = files.get("js/Client.js")
    assert script is not None and script.content == b"var client;" and script.content_type.startswith("text/javascript")
    assert files.get("css/client.css").content_type.startswith("text/css")
    assert files.get("index.html").content_type.startswith("text/html")
    assert files.get("js/lib/jquery.js").content == b"var jQuery;"  # the package's own link is followed


@pytest.mark.parametrize("path", ["../secret.txt", "js/../../secret.txt", "/etc/passwd", "js", "server-info.json",
                                  "js/Missing.js", "connect.html", "js//Client.js"])
def test_anything_but_a_client_file_is_none(www, path):
    assert Html5Files(www).get(path) is None


def test_only_files_that_exist_are_kept(www):
    files = Html5Files(www)
    for n in range(200):
        assert files.get(f"js/missing{n}.js") is None
    assert files.get("js/Client.js") is not None
    assert list(files._cache) == ["js/Client.js"]


def test_the_client_is_found_beside_the_xpra_that_runs(www, tmp_path):
    xpra = tmp_path / "bin" / "xpra"
    xpra.parent.mkdir()
    xpra.write_text("#!/bin/sh\n")
    xpra.chmod(0o755)
    assert www_dirs(str(xpra))[0] == www
    assert Html5Files.of_xpra(str(xpra)).www_dir == www


def test_a_missing_client_names_where_it_was_looked_for(tmp_path):
    with pytest.raises(ClientMissing) as missing:
        Html5Files.first_of([tmp_path / "a", tmp_path / "b"])
    assert str(tmp_path / "a") in str(missing.value) and str(tmp_path / "b") in str(missing.value)
