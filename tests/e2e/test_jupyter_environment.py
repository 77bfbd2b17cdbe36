"""The sessions' Jupyter side lives in its own environment (.venv-jupyter), not the service's.

A notebook in a real session installs and removes a package with ``%pip``: the service's
environment does not change at all. And what a data scientist expects to just work there
does: a ``tqdm.notebook`` bar and an ``ipywidgets`` slider render in the kiosk page.
"""

from __future__ import annotations

import base64
import hashlib
import os
import re
import sys
import zipfile
from pathlib import Path

import pytest
from playwright.sync_api import expect

from keepalive.settings import default_jupyter_python
from tests.e2e.kiosk import kiosk_page, open_and_run_all, put_notebook

pytestmark = pytest.mark.e2e

PROBE = "keepalive_env_probe"
UI_TIMEOUT_MS = 90_000


def make_wheel(folder: Path) -> Path:
    """A one-module wheel, made here: the install needs no package index."""
    wheel = folder / f"{PROBE}-1.0-py3-none-any.whl"
    files = {
        f"{PROBE}.py": b"ANSWER = 42\n",
        f"{PROBE}-1.0.dist-info/METADATA": f"Metadata-Version: 2.1\nName: {PROBE}\nVersion: 1.0\n".encode(),
        f"{PROBE}-1.0.dist-info/WHEEL": b"Wheel-Version: 1.0\nGenerator: keepalive-tests\nRoot-Is-Purelib: true\nTag: py3-none-any\n",
    }
    record = []
    for name, data in files.items():
        digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
        record.append(f"{name},sha256={digest},{len(data)}")
    record.append(f"{PROBE}-1.0.dist-info/RECORD,,")
    with zipfile.ZipFile(wheel, "w") as archive:
        for name, data in files.items():
            archive.writestr(name, data)
        archive.writestr(f"{PROBE}-1.0.dist-info/RECORD", "\n".join(record) + "\n")
    wheel.chmod(0o644)
    return wheel


def environment_snapshot(prefix: Path) -> dict[str, float]:
    """Every installed distribution of an environment, with its metadata's modification time."""
    return {str(p.relative_to(prefix)): p.stat().st_mtime for p in prefix.glob("lib/python3*/site-packages/*.dist-info")}


def test_notebook_pip_leaves_the_service_alone_and_widgets_render(keepalive_service, playwright, tmp_path_factory):
    jupyter_prefix = default_jupyter_python().parent.parent
    service_prefix = Path(sys.prefix)
    assert jupyter_prefix != service_prefix, "the sessions' Jupyter runs in the service's own environment"
    wheel = make_wheel(tmp_path_factory.mktemp("wheel", numbered=True))
    wheel.parent.chmod(0o755)
    before = environment_snapshot(service_prefix)
    assert before, f"no distributions found in {service_prefix}"
    session = keepalive_service.start_session(name="jupyter-env")
    # With a user per session (the service runs as root) the shared Jupyter environment is
    # read-only to notebooks: %pip works in the home's own venv on top of it. Otherwise in .venv-jupyter.
    per_user = os.geteuid() == 0
    jupyter_before = environment_snapshot(jupyter_prefix)
    install_dir = (
        keepalive_service.state_dir / "homes" / "jupyter-env" / "home" / ".local" / "keepalive-venv"
        if per_user else jupyter_prefix
    )
    cells = [
        f"%pip install --no-deps --no-index --no-cache-dir {wheel}",
        f"import importlib, {PROBE}; print('probe from', {PROBE}.__file__, {PROBE}.ANSWER)",
        "from tqdm.notebook import tqdm\nfor _ in tqdm(range(5), desc='probe-bar'):\n    pass",
        "import ipywidgets\nipywidgets.IntSlider(value=7, max=10, description='probe-slider')",
        f"%pip uninstall -y {PROBE}",
        "import os\nprint('service variables:', sorted(k for k in os.environ if k.startswith('KEEPALIVE')))",
    ]
    with kiosk_page(playwright, session["id"]) as page:
        put_notebook(page, "environment.ipynb", cells)
        open_and_run_all(page, "environment.ipynb")
        outputs = page.locator(".jp-OutputArea-output")
        expect(outputs.filter(has_text="Successfully uninstalled")).to_have_count(1, timeout=UI_TIMEOUT_MS)
        probe = outputs.filter(has_text="probe from").inner_text()
        assert re.search(rf"probe from {re.escape(str(install_dir))}/(\S+/)?{PROBE}\.py 42", probe), probe
        # tqdm's notebook bar is an ipywidgets progress bar: rendered, full, with its label
        bar = page.locator(".jp-OutputArea-output .widget-hprogress")
        expect(bar).to_have_count(1, timeout=UI_TIMEOUT_MS)
        expect(page.locator(".jp-OutputArea-output", has=page.locator(".widget-hprogress"))).to_contain_text("5/5")
        slider = page.locator(".jp-OutputArea-output .widget-slider")
        expect(slider).to_have_count(1)
        expect(slider).to_contain_text("probe-slider")
        expect(slider.locator(".widget-readout")).to_have_text("7")
        assert not page.locator(".jp-OutputArea-output", has_text="Error displaying widget").count()
        # the kernel inherited nothing of the service's own settings (its API token among them)
        expect(outputs.filter(has_text="service variables:")).to_have_text("service variables: []")
    # the package came and went where the notebook may install, and nowhere else
    assert not list(install_dir.glob(f"**/{PROBE}*"))
    if per_user:
        assert environment_snapshot(jupyter_prefix) == jupyter_before
    assert not list(jupyter_prefix.glob(f"lib/python3*/site-packages/{PROBE}*"))
    assert not list(service_prefix.glob(f"lib/python3*/site-packages/{PROBE}*"))
    assert environment_snapshot(service_prefix) == before
    keepalive_service.stop_session(session["id"])
