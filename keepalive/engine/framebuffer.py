"""Xvfb's framebuffer in a file of its own, so that the part of it nobody can see is given back.

Xvfb allocates its framebuffer once, at the largest size a viewer may resize the screen to
(RandR can shrink Xvfb's screen, never grow it), and paints all of it when it starts: 16 MiB at
the default 2560x1600, for a session that shows 1280x800 of it whenever nobody watches. Started
with ``-fbdir``, Xvfb maps its framebuffer from a file there instead (an XWD image: a header,
a colormap, then the pixel rows). On tmpfs, punching holes into that file where the pixels lie
outside the screen returns those pages to the system; should the screen grow again (a viewer's
xpra resizes it), Xvfb's drawing fills them in again as it paints them.

Who may touch what: the folder is the service's (0711) and the file in it the session user's
(0600), made before Xvfb starts. Xvfb, running as that user, opens the existing file; the user
cannot put anything else in its place, and the service checks what it opens all the same
(no symlink, one link, the expected owner, the size the header announces) before it punches.
"""

from __future__ import annotations

import ctypes
import logging
import os
import shutil
import stat
import struct
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger(__name__)

#: Debian's shared-memory tmpfs (half the RAM by default).
SHM_ROOT = Path("/dev/shm")
#: The file Xvfb maps for screen 0 of a ``-fbdir``.
FILE_NAME = "Xvfb_screen0"
#: Below this total size /dev/shm is a container's small default (Docker's is 64 MiB): pages a
#: grown screen needs again could then find it full, and Xvfb dies of SIGBUS writing them.
MIN_SHM_TOTAL = 1024**3
#: Room left in /dev/shm, beyond the framebuffer, before a session puts its framebuffer there.
MIN_SHM_FREE = 256 * 1024**2

PAGE = os.sysconf("SC_PAGE_SIZE")
#: fallocate(2): free the range, keep the file's size
FALLOC_FL_KEEP_SIZE = 0x01
FALLOC_FL_PUNCH_HOLE = 0x02
#: XWDColor: pixel (CARD32), red, green, blue (CARD16 each), flags and a pad byte
XWD_COLOR_SIZE = 12
#: The XWD header's fixed part: 25 big-endian CARD32 (the window name follows, in header_size)
XWD_HEADER = struct.Struct(">25I")


@dataclass(frozen=True)
class XwdLayout:
    """Where the pixels are in an XWD framebuffer file (the fields of its header that say so)."""

    header_size: int
    ncolors: int
    bits_per_pixel: int
    bytes_per_line: int
    height: int

    @property
    def pixels_at(self) -> int:
        return self.header_size + self.ncolors * XWD_COLOR_SIZE

    @property
    def file_size(self) -> int:
        return self.pixels_at + self.bytes_per_line * self.height

    @classmethod
    def parse(cls, header: bytes) -> XwdLayout:
        if len(header) < XWD_HEADER.size:
            raise ValueError("not an XWD framebuffer: the header is cut short")
        fields = XWD_HEADER.unpack_from(header)
        layout = cls(header_size=fields[0], ncolors=fields[19], bits_per_pixel=fields[11],
                     bytes_per_line=fields[12], height=fields[5])
        if fields[1] != 7 or layout.header_size < XWD_HEADER.size or layout.bits_per_pixel not in (8, 16, 24, 32):
            raise ValueError(f"not an XWD framebuffer Xvfb writes: version {fields[1]}, "
                             f"{layout.bits_per_pixel} bits per pixel")
        return layout


def offscreen_ranges(layout: XwdLayout, width: int, height: int) -> list[tuple[int, int]]:
    """(offset, length) of every whole page of the file that holds no pixel of the top-left
    ``width`` x ``height`` (what the screen shows), in order and apart."""
    visible_bytes = -(-width * layout.bits_per_pixel // 8)
    spans: list[tuple[int, int]] = []
    rows = min(height, layout.height)
    if visible_bytes < layout.bytes_per_line:  # the right of each row the screen shows
        for row in range(rows):
            start = layout.pixels_at + row * layout.bytes_per_line
            spans.append((start + visible_bytes, start + layout.bytes_per_line))
    spans.append((layout.pixels_at + rows * layout.bytes_per_line, layout.file_size))  # the rows below
    ranges: list[tuple[int, int]] = []
    for start, end in spans:
        first, last = -(-start // PAGE) * PAGE, end // PAGE * PAGE  # whole pages only
        if last <= first:
            continue
        if ranges and ranges[-1][0] + ranges[-1][1] == first:
            ranges[-1] = (ranges[-1][0], last - ranges[-1][0])
        else:
            ranges.append((first, last - first))
    return ranges


def folder_for(session_id: str) -> Path:
    return SHM_ROOT / f"keepalive-fb-{session_id}"


def _is_tmpfs(path: Path) -> bool:
    try:
        mounts = Path("/proc/self/mounts").read_text().splitlines()
    except OSError:
        return False
    return any(len(f := line.split()) > 2 and f[1] == str(path) and f[2] == "tmpfs" for line in mounts)


def shm_problem(size: int = 0) -> str | None:
    """Why a framebuffer of ``size`` bytes cannot go to /dev/shm; None when it can."""
    if not _is_tmpfs(SHM_ROOT):
        return f"{SHM_ROOT} is not a tmpfs"
    shm = os.statvfs(SHM_ROOT)
    total, free = shm.f_blocks * shm.f_frsize, shm.f_bavail * shm.f_frsize
    if total < MIN_SHM_TOTAL:
        return f"{SHM_ROOT} holds {total / 2**20:.0f} MiB, less than {MIN_SHM_TOTAL / 2**30:.0f} GiB"
    if free < size + MIN_SHM_FREE:
        return f"{SHM_ROOT} has {free / 2**20:.0f} MiB free"
    return None


def prepare(session_id: str, size: int, owner: tuple[int, int] | None) -> Path | None:
    """The folder for ``Xvfb -fbdir``, with the file Xvfb will map in it; None when /dev/shm is
    not a tmpfs with room to spare (Xvfb then keeps its framebuffer in its own memory)."""
    problem = shm_problem(size)
    if problem:
        log.info("session %s: %s: its framebuffer stays whole in Xvfb's memory", session_id, problem)
        return None
    folder = folder_for(session_id)
    try:
        os.mkdir(folder, 0o711)
    except FileExistsError:  # a display restart: it must still be the one this service made
        info = os.lstat(folder)
        if not stat.S_ISDIR(info.st_mode) or info.st_uid != os.geteuid() or info.st_mode & 0o022:
            log.warning("%s is not the service's own folder: the framebuffer stays in Xvfb's memory", folder)
            return None
    os.chmod(folder, 0o711)  # whatever the umask: the session's user passes through, lists nothing
    descriptor = os.open(folder / FILE_NAME, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    try:
        if owner is not None:
            os.fchown(descriptor, *owner)
    finally:
        os.close(descriptor)
    return folder


_libc: ctypes.CDLL | None = None


def _punch(descriptor: int, offset: int, length: int) -> None:
    global _libc
    if _libc is None:
        _libc = ctypes.CDLL(None, use_errno=True)
        _libc.fallocate.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_long, ctypes.c_long]
    if _libc.fallocate(descriptor, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, offset, length) != 0:
        errno = ctypes.get_errno()
        raise OSError(errno, f"fallocate: {os.strerror(errno)}")


def release_offscreen(folder: Path, width: int, height: int, owner_uid: int | None = None) -> int:
    """Give back the pages of Xvfb's framebuffer file outside a ``width`` x ``height`` screen;
    returns how many bytes. Safe at any time: Xvfb draws nothing outside its screen, and a page
    it writes again is simply there again. OSError/ValueError when the file is not what it must be."""
    descriptor = os.open(folder / FILE_NAME, os.O_RDWR | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    try:
        info = os.fstat(descriptor)
        expected_uid = os.geteuid() if owner_uid is None else owner_uid
        if not stat.S_ISREG(info.st_mode) or info.st_nlink != 1 or info.st_uid != expected_uid:
            raise ValueError(f"{folder / FILE_NAME} is not the session's framebuffer file")
        layout = XwdLayout.parse(os.pread(descriptor, XWD_HEADER.size, 0))
        if info.st_size != layout.file_size:
            raise ValueError(f"{folder / FILE_NAME} holds {info.st_size} bytes, its header says {layout.file_size}")
        released = 0
        for offset, length in offscreen_ranges(layout, width, height):
            _punch(descriptor, offset, length)
            released += length
        return released
    finally:
        os.close(descriptor)


def remove(session_id: str) -> None:
    """The session's framebuffer folder, once its Xvfb is gone (the pages go with the last map)."""
    shutil.rmtree(folder_for(session_id), ignore_errors=True)
