"""The sessions' Jupyter server launcher (keepalive_jupyter.lean_jupyterlab), in the real Jupyter environment."""

from __future__ import annotations

import subprocess
import textwrap

import pytest

from keepalive.settings import default_jupyter_python


def run_in_jupyter_environment(code: str) -> str:
    result = subprocess.run(
        [str(default_jupyter_python()), "-c", textwrap.dedent(code)], capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr
    return result.stdout.strip()


@pytest.mark.parametrize("package", ["keepalive_jupyter", "server_ext"])
def test_importing_the_extension_package_imports_no_jupyter_server(package):
    """The launcher lives in the extension's package (and is run by its old name too): importing
    the package first must leave it a clean slate."""
    out = run_in_jupyter_environment(
        f"""
        import sys, {package} as package
        print(sorted(m for m in sys.modules if m.split(".")[0] in {{"jupyter_server", "jsonschema", "tornado"}}))
        (point,) = package._jupyter_server_extension_points()
        print(point["module"], point["app"].__name__, package.KeepaliveJupyterExtension is point["app"])
        """
    )
    assert out.splitlines() == ["[]", f"{package} KeepaliveJupyterExtension True"]


def test_the_server_goes_without_the_iri_grammar_that_a_plain_one_loads():
    """What the launcher leaves out, a plain server would load: the saving is real, and still needed."""
    load_server = "import jupyter_server.serverapp, jupyterlab.labapp, keepalive_jupyter.extension, jsonschema\n"
    report = "print(sys.modules.get('rfc3987_syntax') is not None, 'lark' in sys.modules)\n"
    plain = run_in_jupyter_environment("import sys\n" + load_server + report)
    lean = run_in_jupyter_environment(
        "import sys\nfrom keepalive_jupyter import lean_jupyterlab\nlean_jupyterlab.leave_out()\n" + load_server + report
    )
    assert plain == "True True"
    assert lean == "False False"


@pytest.mark.parametrize("launcher", ["keepalive_jupyter.lean_jupyterlab", "server_ext.lean_jupyterlab"])
def test_the_launcher_is_jupyterlab(launcher):
    """Same app, same options: ``--version`` answers as ``python -m jupyterlab --version`` does
    (also under the launcher's old name, which keepalive's engine ran)."""
    python = str(default_jupyter_python())
    lean = subprocess.run([python, "-m", launcher, "--version"], capture_output=True, text=True, timeout=120)
    plain = subprocess.run([python, "-m", "jupyterlab", "--version"], capture_output=True, text=True, timeout=120)
    assert lean.returncode == plain.returncode == 0, lean.stderr
    assert lean.stdout.strip() == plain.stdout.strip() != ""
