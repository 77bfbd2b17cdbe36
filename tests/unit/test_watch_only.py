"""A watch-only viewer's stream, screened (keepalive.viewer.watch_only), and who takes over whom
(keepalive.viewer.xpra_proxy.ViewerTracker)."""

from __future__ import annotations

import asyncio

import pytest

from keepalive.viewer import bencode
from keepalive.viewer.watch_only import HEADER, NotScreenable, WatchOnlyFilter, frame
from keepalive.viewer.xpra_proxy import ViewerTracker


def packets_of(frames: list[bytes]) -> list[list]:
    out = []
    for data in frames:
        magic, flags, level, index, size = HEADER.unpack_from(data)
        assert (magic, flags, level, index, size) == (b"P", 0, 0, 0, len(data) - HEADER.size)
        out.append(bencode.decode(data[HEADER.size:]))
    return out


def test_bencode_reads_what_the_html5_client_writes_and_writes_it_back_unchanged():
    # as bencode.js writes it: dictionary order kept, booleans as 0/1, a fraction as it prints
    written = b"l5:hellod7:version5:3.1.39:encodingsl3:png4:jpege12:refresh_ratei59.94e5:sharei1e5:dpi.xi-96eee"
    packet = bencode.decode(written)
    assert packet[0] == b"hello" and list(packet[1]) == [b"version", b"encodings", b"refresh_rate", b"share", b"dpi.x"]
    assert packet[1][b"refresh_rate"] == b"59.94" and packet[1][b"dpi.x"] == -96
    assert bencode.encode(packet) == written


@pytest.mark.parametrize("broken", [b"", b"i12", b"ixe", b"l5:hello", b"5:abc", b"d1:ai1e", b"di1ei2ee", b"i1ei2e",
                                    b"l" * 40 + b"e" * 40])
def test_bencode_refuses_what_is_not(broken):
    with pytest.raises(bencode.BencodeError):
        bencode.decode(broken)


def hello(**extra) -> list:
    capabilities = {b"version": b"3.1.3", b"encodings": [b"jpeg", b"png"], b"share": 0, b"steal": 1, b"keyboard": 1,
                    b"xkbmap_layout": b"de", b"clipboard": 1, b"clipboard.want_targets": 1, b"desktop_size": [3840, 2160],
                    b"screen_sizes": [[b"HTML", 3840, 2160]], b"dpi": 192, b"uuid": b"the-drivers-uuid",
                    b"request": b"detach", b"stop_request": 1, b"screenshot_request": 1, b"start": [b"xterm"],
                    b"mmap": 1, b"mmap_file": b"/home/user/notebooks/train.ipynb", b"cipher": b"AES",
                    b"challenge_response": b"abc"}
    return [b"hello", {**capabilities, **{k.encode(): v for k, v in extra.items()}}]


def test_a_watch_only_hello_joins_beside_the_others_and_brings_nothing_of_its_own():
    screen = WatchOnlyFilter()
    ((_, first),) = packets_of(screen.feed(frame(hello())))
    ((_, again),) = packets_of(screen.feed(frame(hello())))  # the hello again, after xpra's challenge
    assert first[b"share"] == 1 and first[b"keyboard"] == 0 and first[b"clipboard"] == 0
    for gone in (b"xkbmap_layout", b"clipboard.want_targets", b"desktop_size", b"screen_sizes", b"dpi", b"request",
                 b"stop_request", b"screenshot_request", b"start", b"mmap", b"mmap_file", b"cipher"):
        assert gone not in first, gone
    # kept: what it needs to be drawn to, and its answer to the password's challenge
    assert first[b"encodings"] == [b"jpeg", b"png"] and first[b"challenge_response"] == b"abc"
    # a uuid of its own (another viewer's would disconnect that one), the same through the challenge
    assert first[b"uuid"] != b"the-drivers-uuid" and first[b"uuid"] == again[b"uuid"]


def test_only_what_concerns_its_own_picture_reaches_xpra():
    screen = WatchOnlyFilter()
    sent = [[b"key-action", 1, b"a", 1, [], 97, b"a", 38, 0], [b"button-action", 1, 1, 1, [10, 10], []],
            [b"pointer-position", 1, [5, 5], []], [b"clipboard-token", b"CLIPBOARD"], [b"desktop_size", 800, 600],
            [b"configure-window", 1, 0, 0, 10, 10, {}], [b"focus", 1], [b"layout-changed", b"fr", b""],
            [b"start-command", b"xterm", b"xterm", 0], [b"send-file", b"x", b"", 1, 1, b"data"],
            [b"damage-sequence", 7, 1, 800, 600, 12, b""], [b"ping", 123], [b"buffer-refresh", -1, 0, 100, {}, {}]]
    # all in one websocket message, then a packet split across two
    passed = screen.feed(b"".join(frame(packet) for packet in sent))
    split = frame([b"ping_echo", 1, 2, 3, 4, 5])
    assert screen.feed(split[:5]) == []
    passed += screen.feed(split[5:])
    assert [p[0] for p in packets_of(passed)] == [b"damage-sequence", b"ping", b"buffer-refresh", b"ping_echo"]
    assert passed[1] == frame([b"ping", 123])  # passed on byte for byte
    assert screen.dropped["key-action"] == 1 and screen.dropped["clipboard-token"] == 1 and sum(screen.dropped.values()) == 10


@pytest.mark.parametrize("data", [
    b"GET / HTTP/1.1\r\n\r\n",                                  # not xpra's protocol
    HEADER.pack(b"P", 0, 1, 0, 3) + b"abc",                    # compressed
    HEADER.pack(b"P", 2, 0, 0, 3) + b"abc",                    # encrypted
    HEADER.pack(b"P", 0, 0, 1, 3) + b"abc",                    # a raw chunk
    HEADER.pack(b"P", 1, 0, 0, 3) + b"abc",                    # rencode
    HEADER.pack(b"P", 0, 0, 0, 64 * 1024 * 1024),              # too large to be any of its packets
    HEADER.pack(b"P", 0, 0, 0, 4) + b"i1ex",                   # not bencode
    HEADER.pack(b"P", 0, 0, 0, 3) + b"i1e",                    # no packet type
    frame([b"hello", b"not capabilities"]),
])
def test_what_cannot_be_screened_ends_the_connection(data):
    with pytest.raises(NotScreenable):
        WatchOnlyFilter().feed(data)


async def test_a_full_viewer_takes_over_from_full_ones_only():
    tracker, left = ViewerTracker(), []

    async def last_left() -> None:
        left.append(True)

    async with tracker.viewing("s", last_left, take_over=True) as driver:
        async with tracker.viewing("s", last_left, watch_only=True, take_over=True) as watcher:
            assert tracker.counts("s") == {"full": 1, "watch_only": 1}
            assert not driver.ended.is_set(), "a watch-only viewer took over"
            async with tracker.viewing("s", last_left, take_over=True) as newcomer:
                assert driver.ended.is_set() and driver.why == "another viewer took over this session"
                assert not watcher.ended.is_set() and not newcomer.ended.is_set()
                assert tracker.counts("s") == {"full": 2, "watch_only": 1}  # until the relay of the first ends
            async with tracker.viewing("s", last_left, take_over=False) as sharing:
                assert not watcher.ended.is_set() and not sharing.ended.is_set()
    assert tracker.counts("s") == {"full": 0, "watch_only": 0} and left == [True]
    await asyncio.sleep(0)
