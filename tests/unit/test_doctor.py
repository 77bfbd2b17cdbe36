"""``keepalive doctor``'s machine checks on machines broken in one way each (no service needed)."""

from __future__ import annotations

import os

import pytest

from keepalive import doctor
from keepalive.settings import Settings


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch):
    for name in ("KEEPALIVE_XPRA", "KEEPALIVE_CHROMIUM", "KEEPALIVE_STATE_DIR", "KEEPALIVE_API_TOKEN"):
        monkeypatch.delenv(name, raising=False)


def by_name(findings):
    return {finding.name: finding for finding in findings}


def test_a_path_without_chromium_fails_with_the_package_to_install(tmp_path, monkeypatch):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    monkeypatch.setenv("PATH", str(bin_dir))  # nothing on PATH at all
    findings = by_name(doctor.machine_findings(Settings(state_dir=tmp_path / "state")))
    assert findings["chromium"].status == doctor.FAIL
    assert findings["chromium"].fix.startswith("apt-get install chromium")
    assert findings["xauth"].status == doctor.FAIL and findings["xauth"].fix == "apt-get install xauth"
    assert "fix: apt-get install chromium" in findings["chromium"].line()


def test_a_state_dir_that_others_can_read_and_a_loose_token_file(tmp_path):
    state = tmp_path / "state"
    state.mkdir(mode=0o755)
    state.chmod(0o755)
    (state / "api-token").write_text("t")
    (state / "api-token").chmod(0o644)
    findings = by_name(doctor.machine_findings(Settings(state_dir=state, session_users=False)))
    assert findings["state_dir"].status == doctor.WARN and findings["state_dir"].fix.startswith(f"chmod 700 {state}:")
    assert findings["token"].status == doctor.FAIL and findings["token"].fix == f"chmod 600 {state / 'api-token'}"


@pytest.mark.skipif(os.geteuid() != 0, reason="a user per session needs a root service")
@pytest.mark.parametrize("mode, status", [(0o711, doctor.OK), (0o700, doctor.WARN), (0o755, doctor.WARN)])
def test_with_a_user_per_session_the_state_dir_must_be_passable_and_nothing_more(tmp_path, mode, status):
    state = tmp_path / "state"
    state.mkdir()
    state.chmod(mode)
    findings = by_name(doctor.machine_findings(Settings(state_dir=state, session_users=True)))
    assert findings["state_dir"].status == status
    assert findings["state_dir"].fix.startswith(f"chmod 711 {state}:")
    assert findings["user"].status == doctor.OK and "keeps its sandbox" in findings["user"].detail


@pytest.mark.skipif(os.geteuid() != 0, reason="about a root service")
def test_root_without_session_users_is_told_chromium_has_no_sandbox(tmp_path):
    user = by_name(doctor.machine_findings(Settings(state_dir=tmp_path, session_users=False)))["user"]
    assert user.status == doctor.WARN and "without its own sandbox" in user.detail


def test_before_the_first_start_the_disk_is_checked_where_the_state_dir_will_be(tmp_path):
    findings = by_name(doctor.machine_findings(Settings(state_dir=tmp_path / "not" / "yet")))
    assert findings["state_dir"].status == doctor.WARN and "does not exist yet" in findings["state_dir"].detail
    assert findings["disk"].detail.endswith(f"free in {tmp_path}")


def test_no_service_is_a_warning_unless_its_url_was_named(tmp_path):
    from keepalive.engine.allocation import free_port

    url = f"http://127.0.0.1:{free_port()}"
    settings = Settings(state_dir=tmp_path)
    assert doctor.service_finding(url, None, settings, explicit=False).status == doctor.WARN
    named = doctor.service_finding(url, None, settings, explicit=True)
    assert named.status == doctor.FAIL and f"no keepalive answers at {url}" in named.detail


def test_a_small_or_missing_shm_is_a_warning_that_says_what_it_costs(tmp_path, monkeypatch):
    from keepalive.engine import framebuffer

    assert by_name(doctor.machine_findings(Settings(state_dir=tmp_path)))["shm"].status == doctor.OK  # Debian's
    monkeypatch.setattr(framebuffer, "SHM_ROOT", tmp_path)  # a plain folder, as in a container without one
    shm = by_name(doctor.machine_findings(Settings(state_dir=tmp_path)))["shm"]
    assert shm.status == doctor.WARN and shm.detail == f"{tmp_path} is not a tmpfs"
    assert "--shm-size" in shm.fix and "whole framebuffer" in shm.fix


def test_the_viewers_html5_client_is_looked_for_beside_xpra(tmp_path, monkeypatch):
    from keepalive.viewer import html5_files

    assert by_name(doctor.machine_findings(Settings(state_dir=tmp_path)))["viewer"].status == doctor.OK  # Debian's
    monkeypatch.setattr(html5_files, "www_dirs", lambda xpra: [tmp_path / "share" / "xpra" / "www"])
    viewer = by_name(doctor.machine_findings(Settings(state_dir=tmp_path)))["viewer"]
    assert viewer.status == doctor.FAIL and str(tmp_path / "share" / "xpra" / "www") in viewer.detail
    assert viewer.fix.startswith("apt-get install xpra")
