"""Fewer system calls under aiomqtt/paho: read the broker's bytes in chunks, write in batches.

paho 2.x, driven by aiomqtt from the event loop, costs several system calls per message:
it reads a packet one byte, then the length byte by byte, then the rest (three or four
`recv` calls), and every QoS 1 message it receives queues a PUBACK that aiomqtt sends by
registering a writer from "another thread" (a wake-up of the loop's self-pipe, two `epoll_ctl`
calls and one `send` per PUBACK). At 500 readings a second that was most of the integration's
CPU (`benchmarks/bench_link.py` measures it).

`tune(client)` changes only how bytes move, not MQTT:

- `LinkSocket` wraps paho's socket. `recv` reads up to 64 KiB at once and serves paho's small
  reads from that buffer; `pending()` tells aiomqtt's reader that buffered bytes are left, so it
  handles every packet of a chunk in one wake-up (aiomqtt already loops on `pending()`, for TLS).
- On the loop's thread, a write paho wants is done by one `loop_write()` per loop turn instead
  of a writer registration, with the socket "corked": every packet of that turn goes out in one
  `send`. What the kernel does not take at once is kept in order and sent when the socket is
  writable. From another thread (paho's connect runs in an executor) aiomqtt's own thread-safe
  path is used unchanged.

Nothing here is acknowledged early: a QoS 1 publish still completes only on the broker's PUBACK.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterable
import contextlib
import logging
import socket
import ssl
import threading
from typing import Any

import aiomqtt

_LOGGER = logging.getLogger(__name__)

#: How much one `recv` asks for: many telemetry packets (~250 bytes each) per system call.
READ_CHUNK = 65536

#: A busy link is read at most this often: what arrived meanwhile is read, handled and
#: acknowledged in one turn of the loop. A quiet link is read at once (a reading that follows
#: another by more than this is not delayed at all). At 500 readings a second,
#: benchmarks/bench_link.py measured 3.9% of a core at 20 ms, 2.4% at 50 ms, 2.0% at 100 ms;
#: 50 ms keeps a cut's added wait well inside its 250 ms budget.
READ_PACE_S = 0.05

_WOULD_BLOCK = (BlockingIOError, ssl.SSLWantReadError, ssl.SSLWantWriteError)


class LinkSocket:
    """paho's socket, read in chunks and written in batches (see the module docstring)."""

    def __init__(self, sock: Any, loop: asyncio.AbstractEventLoop) -> None:
        """Wrap `sock` (a plain or TLS socket, non-blocking) for use on `loop`."""
        self._sock = sock
        self._loop = loop
        self._thread = threading.get_ident() if _on_loop(loop) else None
        self._rbuf = b""
        self._rpos = 0
        self._corked = False
        self._out: list[bytes] = []
        self._writer = False
        self.recv_calls = 0
        self.send_calls = 0

    @property
    def inner(self) -> Any:
        """Return the wrapped socket."""
        return self._sock

    def __getattr__(self, name: str) -> Any:
        """Everything else (fileno, setsockopt, setblocking, ...) is the socket's own."""
        return getattr(self._sock, name)

    # -- reading ------------------------------------------------------------------------

    def recv(self, bufsize: int) -> bytes:
        """Return up to `bufsize` bytes, from the buffer or from one large `recv`."""
        if self._rpos >= len(self._rbuf):
            self.recv_calls += 1
            data: bytes = self._sock.recv(max(bufsize, READ_CHUNK))
            if len(data) <= bufsize:
                return data
            self._rbuf, self._rpos = data, 0
        start = self._rpos
        self._rpos = min(start + bufsize, len(self._rbuf))
        return self._rbuf[start : self._rpos]

    def pending(self) -> int:
        """Return how many received bytes wait (ours, plus TLS's own decrypted ones)."""
        inner = getattr(self._sock, "pending", None)
        return len(self._rbuf) - self._rpos + (inner() if inner is not None else 0)

    # -- writing ------------------------------------------------------------------------

    def send(self, data: bytes) -> int:
        """Send now, or queue behind what waits (corked or not yet taken by the kernel)."""
        if self._corked or self._out:
            self._out.append(bytes(data))
            if not self._corked:
                self._want_writable()
            return len(data)
        self.send_calls += 1
        sent: int = self._sock.send(data)
        return sent

    def waiting(self) -> bool:
        """Return whether bytes wait to be sent (our writer is registered for them)."""
        return bool(self._out)

    def cork(self) -> None:
        """Queue what paho writes until `uncork`."""
        self._corked = True

    def uncork(self) -> None:
        """Send what was queued, in one system call where the kernel takes it all."""
        self._corked = False
        self.flush()

    def flush(self) -> None:
        """Send the queue; keep what the kernel did not take, for when it is writable."""
        if not self._out:
            self._stop_writable()
            return
        data = self._out[0] if len(self._out) == 1 else b"".join(self._out)
        self._out.clear()
        try:
            self.send_calls += 1
            sent = self._sock.send(data)
        except _WOULD_BLOCK:
            sent = 0
        except OSError as err:
            # The link is broken: paho learns it from its next read (or the keepalive) and
            # aiomqtt reconnects; unacknowledged QoS 1 messages are sent again then.
            _LOGGER.debug("MQTT send failed: %s", err)
            self._stop_writable()
            return
        if sent < len(data):
            self._out.append(data[sent:])
            self._want_writable()
        else:
            self._stop_writable()

    def _want_writable(self) -> None:
        if not self._writer and self._thread == threading.get_ident():
            self._writer = True
            self._loop.add_writer(self._sock.fileno(), self.flush)

    def _stop_writable(self) -> None:
        if self._writer:
            self._writer = False
            with contextlib.suppress(ValueError, OSError):
                self._loop.remove_writer(self._sock.fileno())

    def close(self) -> None:
        """Send what waits (a DISCONNECT, say) if the kernel takes it, then close."""
        with contextlib.suppress(OSError, ValueError):
            self.flush()
        self._stop_writable()
        self._sock.close()


def _on_loop(loop: asyncio.AbstractEventLoop) -> bool:
    try:
        return asyncio.get_running_loop() is loop
    except RuntimeError:
        return False


def _callback(found: Callable[..., None] | None) -> Callable[..., None]:
    if found is None:  # aiomqtt sets all four in its constructor
        raise RuntimeError("aiomqtt did not set paho's socket callbacks")
    return found


def tune(client: aiomqtt.Client, socket_options: Iterable[tuple[int, int, int]] = ()) -> None:
    """Make `client` (not yet connected) use a `LinkSocket` and batched writes on this loop.

    `socket_options` are set on each new socket (aiomqtt sets its own only on a plain
    `socket.socket`, which a `LinkSocket` is not).
    """
    options = tuple(socket_options)
    loop = asyncio.get_running_loop()
    loop_thread = threading.get_ident()
    paho = client._client
    open_socket = _callback(paho.on_socket_open)
    register_write = _callback(paho.on_socket_register_write)
    unregister_write = _callback(paho.on_socket_unregister_write)
    scheduled = False

    close_socket = _callback(paho.on_socket_close)
    last_read = -READ_PACE_S
    resuming: asyncio.TimerHandle | None = None

    def fail(err: Exception) -> None:
        # As aiomqtt's own reader and writer do: the link broke, the client disconnects.
        disconnected: asyncio.Future[None] = client._disconnected
        if not disconnected.done():
            disconnected.set_exception(err)

    def read_all(link: LinkSocket) -> None:
        nonlocal last_read
        last_read = loop.time()
        try:
            while paho._sock is link:
                paho.loop_read()
                if link.pending() <= 0:
                    break
        except Exception as err:
            fail(err)

    def on_readable(link: LinkSocket) -> None:
        nonlocal resuming
        due = last_read + READ_PACE_S
        if loop.time() >= due:
            read_all(link)
            return
        loop.remove_reader(link.fileno())
        resuming = loop.call_at(due, resume, link)

    def resume(link: LinkSocket) -> None:
        nonlocal resuming
        resuming = None
        if paho._sock is not link:
            return
        loop.add_reader(link.fileno(), on_readable, link)
        read_all(link)

    def install_reader(link: LinkSocket) -> None:
        # Runs after aiomqtt's own add_reader (both were queued in this order from the
        # connecting thread) and takes its place.
        if paho._sock is link:
            loop.add_reader(link.fileno(), on_readable, link)

    def on_socket_open(pclient: Any, userdata: Any, sock: Any) -> None:
        if isinstance(sock, socket.socket):
            for option in options:
                sock.setsockopt(*option)
        link = LinkSocket(sock, loop)
        link._thread = loop_thread
        pclient._sock = link
        open_socket(pclient, userdata, link)
        loop.call_soon_threadsafe(install_reader, link)

    def on_socket_close(pclient: Any, userdata: Any, sock: Any) -> None:
        nonlocal resuming
        if resuming is not None:
            resuming.cancel()
            resuming = None
        close_socket(pclient, userdata, sock)

    def write_now() -> None:
        nonlocal scheduled
        scheduled = False
        link = paho._sock
        if not isinstance(link, LinkSocket):
            if link is not None:
                paho.loop_write()
            return
        link.cork()
        try:
            paho.loop_write()
        except Exception as err:
            fail(err)
        finally:
            link.uncork()

    def on_register_write(pclient: Any, userdata: Any, sock: Any) -> None:
        nonlocal scheduled
        if threading.get_ident() != loop_thread:
            register_write(pclient, userdata, sock)
            return
        if not scheduled:
            scheduled = True
            loop.call_soon(write_now)

    def on_unregister_write(pclient: Any, userdata: Any, sock: Any) -> None:
        # aiomqtt's would remove the writer that sends what the kernel has not yet taken.
        if isinstance(sock, LinkSocket) and sock.waiting():
            return
        unregister_write(pclient, userdata, sock)

    paho.on_socket_open = on_socket_open
    paho.on_socket_close = on_socket_close
    paho.on_socket_register_write = on_register_write
    paho.on_socket_unregister_write = on_unregister_write
