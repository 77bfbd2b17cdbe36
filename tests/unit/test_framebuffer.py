"""Xvfb's framebuffer file: which pages lie outside the screen, and giving them back on tmpfs."""

from __future__ import annotations

import os
import struct

import pytest

from keepalive.engine import framebuffer
from keepalive.engine.framebuffer import PAGE, XwdLayout, offscreen_ranges, release_offscreen

SHM = framebuffer.SHM_ROOT


def xwd_header(width: int, height: int, bits_per_pixel: int = 32, ncolors: int = 256, header_size: int = 160) -> bytes:
    """The header Xvfb writes: 25 big-endian CARD32, then the window name up to header_size."""
    bytes_per_line = width * bits_per_pixel // 8
    fields = [header_size, 7, 2, 24, width, height, 0, 0, 32, 0, 32, bits_per_pixel, bytes_per_line,
              4, 0xFF0000, 0xFF00, 0xFF, 8, ncolors, ncolors, width, height, 0, 0, 0]
    return struct.pack(">25I", *fields).ljust(header_size, b"\0")


def layout_of(width: int, height: int, **kwargs) -> XwdLayout:
    return XwdLayout.parse(xwd_header(width, height, **kwargs))


@pytest.mark.parametrize("screen", [(1280, 800), (1281, 799), (320, 240), (1000, 1600), (2560, 1599)])
def test_offscreen_ranges_are_whole_pages_that_hold_no_visible_pixel(screen):
    layout = layout_of(2560, 1600)
    width, height = screen
    ranges = offscreen_ranges(layout, width, height)
    assert ranges, "a screen smaller than the framebuffer leaves something to give back"
    ends = 0
    for offset, length in ranges:
        assert offset % PAGE == 0 and length % PAGE == 0 and length > 0
        assert offset > ends or ends == 0, "ranges come in order, apart"
        ends = offset + length
        assert layout.pixels_at <= offset and ends <= layout.file_size
        # no byte of any visible row in it
        for row in range(height):
            row_start = layout.pixels_at + row * layout.bytes_per_line
            visible = (row_start, row_start + width * 4)
            assert ends <= visible[0] or offset >= visible[1], (row, offset, length)
    # every whole page below the screen goes
    covered = {page for offset, length in ranges for page in range(offset // PAGE, (offset + length) // PAGE)}
    below = layout.pixels_at + height * layout.bytes_per_line
    assert set(range(-(-below // PAGE), layout.file_size // PAGE)) <= covered


def test_a_screen_as_large_as_the_framebuffer_gives_nothing_back():
    layout = layout_of(1280, 800)
    assert offscreen_ranges(layout, 1280, 800) == []


def test_half_the_rows_of_the_default_framebuffer_go_at_the_default_session_size():
    released = sum(length for _, length in offscreen_ranges(layout_of(2560, 1600), 1280, 800))
    assert released >= 2560 * 800 * 4 - PAGE  # the 800 rows below at least


@pytest.mark.parametrize("header", [b"", b"\0" * 100, xwd_header(64, 64, bits_per_pixel=12)])
def test_a_header_xvfb_did_not_write_is_refused(header):
    with pytest.raises(ValueError):
        XwdLayout.parse(header)


@pytest.fixture
def shm_folder():
    if not framebuffer._is_tmpfs(SHM):
        pytest.fail(f"{SHM} is not a tmpfs here: Debian mounts one, and keepalive's framebuffer needs it")
    folder = SHM / f"keepalive-test-{os.getpid()}"
    folder.mkdir(mode=0o700)
    yield folder
    for child in folder.iterdir():
        child.unlink()
    folder.rmdir()


def write_framebuffer(folder, width: int, height: int) -> tuple[XwdLayout, bytes]:
    header = xwd_header(width, height)
    layout = XwdLayout.parse(header)
    pixels = bytes(range(1, 256)) * (layout.file_size // 255 + 1)
    content = header + b"\x11" * (layout.pixels_at - len(header)) + pixels[: layout.file_size - layout.pixels_at]
    (folder / framebuffer.FILE_NAME).write_bytes(content)
    return layout, content


def test_release_gives_the_pages_back_and_keeps_every_visible_pixel(shm_folder):
    layout, content = write_framebuffer(shm_folder, 1024, 768)
    path = shm_folder / framebuffer.FILE_NAME
    before = os.stat(path).st_blocks * 512
    released = release_offscreen(shm_folder, 500, 300)
    after = os.stat(path).st_blocks * 512
    assert released > 0 and before - after == released
    now = path.read_bytes()
    assert len(now) == len(content)  # the size Xvfb mapped stays
    assert now[: layout.pixels_at] == content[: layout.pixels_at]  # the header and colormap
    for row in range(300):
        start = layout.pixels_at + row * layout.bytes_per_line
        assert now[start:start + 500 * 4] == content[start:start + 500 * 4], row
    for offset, length in offscreen_ranges(layout, 500, 300):
        assert now[offset:offset + length] == bytes(length)  # holes read as zeros


def test_release_refuses_a_file_that_is_not_the_framebuffer(shm_folder, tmp_path):
    layout, content = write_framebuffer(shm_folder, 256, 256)
    path = shm_folder / framebuffer.FILE_NAME
    with open(path, "ab") as grown:  # not the size its header says
        grown.write(b"x")
    with pytest.raises(ValueError, match="header says"):
        release_offscreen(shm_folder, 100, 100)
    # a symlink to something else is never followed (the session's user could make one)
    victim = tmp_path / "victim"
    victim.write_bytes(content)
    path.unlink()
    path.symlink_to(victim)
    with pytest.raises(OSError):
        release_offscreen(shm_folder, 100, 100)
    assert victim.read_bytes() == content
    # nor a file of another owner than the session's
    path.unlink()
    write_framebuffer(shm_folder, 256, 256)
    with pytest.raises(ValueError, match="not the session's"):
        release_offscreen(shm_folder, 100, 100, owner_uid=os.geteuid() + 1)


def test_prepare_makes_a_private_file_in_a_folder_only_the_service_lists(monkeypatch):
    session_id = f"unit{os.getpid()}"
    folder = framebuffer.prepare(session_id, 16 * 1024**2, None)
    try:
        assert folder == framebuffer.folder_for(session_id)
        assert folder.stat().st_mode & 0o777 == 0o711
        assert (folder / framebuffer.FILE_NAME).stat().st_mode & 0o777 == 0o600
        # a display restart finds it there: the same folder, a fresh file
        (folder / framebuffer.FILE_NAME).write_bytes(b"old")
        assert framebuffer.prepare(session_id, 16 * 1024**2, None) == folder
        assert (folder / framebuffer.FILE_NAME).stat().st_size == 0
    finally:
        framebuffer.remove(session_id)
    assert not framebuffer.folder_for(session_id).exists()


def test_prepare_leaves_the_framebuffer_to_xvfb_without_a_roomy_tmpfs(monkeypatch, tmp_path):
    monkeypatch.setattr(framebuffer, "SHM_ROOT", tmp_path)  # a disk, not a tmpfs
    assert framebuffer.prepare("disk", 16 * 1024**2, None) is None
    monkeypatch.setattr(framebuffer, "SHM_ROOT", SHM)
    assert framebuffer.prepare("huge", 1024**5, None) is None  # more than it could ever hold
    assert not framebuffer.folder_for("huge").exists() and not framebuffer.folder_for("disk").exists()
