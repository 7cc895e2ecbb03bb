"""engine/link.py: paho's socket read in chunks and written in batches, on real sockets."""

from __future__ import annotations

import asyncio
import socket

import pytest

from custom_components.prepaid_meter.engine.link import READ_CHUNK, LinkSocket

pytestmark = pytest.mark.mqtt


def pair() -> tuple[socket.socket, socket.socket]:
    """Return a connected, non-blocking pair of stream sockets."""
    ours, theirs = socket.socketpair()
    ours.setblocking(False)
    theirs.setblocking(False)
    return ours, theirs


async def test_small_reads_are_served_from_one_recv() -> None:
    ours, theirs = pair()
    link = LinkSocket(ours, asyncio.get_running_loop())
    theirs.sendall(b"\x30\x05hello" * 100)  # a hundred tiny "packets"
    await asyncio.sleep(0.01)
    got = b""
    while link.pending() or not got:
        got += link.recv(1) + link.recv(1)
        got += link.recv(5)
    assert got == b"\x30\x05hello" * 100
    assert link.recv_calls == 1
    assert link.pending() == 0
    with pytest.raises(BlockingIOError):  # nothing buffered and nothing arrived
        link.recv(1)
    ours.close()
    theirs.close()


async def test_a_read_as_large_as_the_request_is_not_buffered() -> None:
    ours, theirs = pair()
    link = LinkSocket(ours, asyncio.get_running_loop())
    theirs.sendall(b"abc")
    await asyncio.sleep(0.01)
    assert link.recv(READ_CHUNK) == b"abc"
    assert link.pending() == 0
    theirs.close()
    await asyncio.sleep(0.01)
    assert link.recv(1) == b""  # the peer closed: paho sees the end of the stream
    ours.close()


async def test_corked_writes_go_out_in_one_send_in_order() -> None:
    ours, theirs = pair()
    link = LinkSocket(ours, asyncio.get_running_loop())
    link.cork()
    for n in range(50):
        assert link.send(b"puback%02d" % n) == 8
    with pytest.raises(BlockingIOError):
        theirs.recv(4096)  # nothing sent while corked
    link.uncork()
    assert link.send_calls == 1
    await asyncio.sleep(0.01)
    assert theirs.recv(4096) == b"".join(b"puback%02d" % n for n in range(50))
    ours.close()
    theirs.close()


async def test_what_the_kernel_does_not_take_is_sent_when_writable_in_order() -> None:
    ours, theirs = pair()
    ours.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
    theirs.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    link = LinkSocket(ours, asyncio.get_running_loop())
    chunk = bytes(range(256)) * 64  # 16 KiB
    link.cork()
    for _ in range(64):  # 1 MiB: far more than the buffers hold
        link.send(chunk)
    link.uncork()
    assert link.waiting()  # the rest waits for the socket to be writable
    link.cork()
    link.send(b"the end")  # queued behind the rest, never ahead of it
    link.uncork()
    received = bytearray()
    want = 64 * len(chunk) + len(b"the end")
    async with asyncio.timeout(10):
        while len(received) < want:
            try:
                received += theirs.recv(65536)
            except BlockingIOError:
                await asyncio.sleep(0.001)
    assert bytes(received) == chunk * 64 + b"the end"
    await asyncio.sleep(0.01)
    assert not link.waiting()
    ours.close()
    theirs.close()


async def test_close_sends_what_waits_first() -> None:
    ours, theirs = pair()
    link = LinkSocket(ours, asyncio.get_running_loop())
    link.cork()
    link.send(b"\xe0\x00")  # DISCONNECT
    link.close()
    await asyncio.sleep(0.01)
    assert theirs.recv(16) == b"\xe0\x00"
    theirs.close()
