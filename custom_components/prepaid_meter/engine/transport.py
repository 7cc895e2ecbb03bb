"""MQTT transport on aiomqtt: one persistent session, reconnects, QoS 1 both ways.

`MqttTransport(config, handler, subscriptions=...)`:

- `await start()` starts a background connection loop and returns at once (use
  `await wait_connected()` (under `asyncio.timeout`) to wait for the first connection);
- `await stop()` disconnects cleanly, processes what was already received (bounded) and leaves
  no task behind;
- `await publish(topic, payload, qos=1, retain=False)` raises `NotConnected` while the link is
  down and `TransportError` when the broker does not confirm in time;
- `await subscribe(topic)` adds a subscription (kept across reconnects);
- `handler(topic, payload)` is called for every message, in order, one at a time; it may be a
  plain function or a coroutine function; its exceptions are logged, never fatal;
- `on_connected()` / `on_disconnected(reason)` are called once per change of state (the
  transport itself logs these at debug level only: the caller logs once for the user).

Session: MQTT 3.1.1 with `clean_session=False` and the stable `client_id` of the config, and
QoS 1 subscriptions, so the broker keeps the subscriptions and queues QoS 1 messages while the
link is down and delivers them after the reconnect. Messages are acknowledged to the broker
once they are in the transport's own in-memory queue (paho acknowledges QoS 1 after its
message callback), which survives reconnects; nothing queued is dropped on a disconnect.

`check_connection(config)` connects once and raises `CannotConnect` or `InvalidAuth` (for a
config flow); `forget_session(config)` makes the broker drop the persistent session (for when
the config entry is removed). TLS contexts load files: `build_ssl_context(config)` is
synchronous and `start()` / `check_connection()` run it in a worker thread.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
import contextlib
from dataclasses import dataclass
import inspect
import logging
import math
import random
import socket
import ssl
import time
import uuid

import aiomqtt
from aiomqtt import MqttCodeError, MqttError

from .link import tune

_LOGGER = logging.getLogger(__name__)

type MessageHandler = Callable[[str, bytes], Awaitable[None] | None]
type Backoff = Callable[[int], float]

# CONNACK codes that mean the credentials were refused: MQTT 3.1.1 (4, 5) and MQTT 5 / paho
# ReasonCode values (134 bad user name or password, 135 not authorised).
_AUTH_CODES = frozenset({4, 5, 134, 135})
# The message handler gives the event loop back at least this often while messages wait.
YIELD_AFTER_S = 0.01
# Nagle's algorithm off (TCP_NODELAY) on the broker connection, plain TCP and TLS alike. With
# it on, a command published right after paho's PUBACK of the reading that caused it waits for
# the broker to ACK that PUBACK, which a quiet broker delays by ~40 ms (delayed ACK): a relay
# cut took ~43 ms instead of ~1 ms. aiomqtt sets these on paho's socket once it is connected.
_SOCKET_OPTIONS: tuple[tuple[int, int, int], ...] = ((socket.IPPROTO_TCP, socket.TCP_NODELAY, 1),)


class TransportError(Exception):
    """The broker could not be reached or did not confirm an operation."""


class NotConnected(TransportError):
    """Publishing while the link to the broker is down."""


class CannotConnect(TransportError):
    """The broker cannot be reached (address, port, TLS, timeout)."""


class InvalidAuth(TransportError):
    """The broker refused the user name or password."""


@dataclass(frozen=True, slots=True, kw_only=True)
class TransportConfig:
    """How to reach the broker.

    `client_id` must be stable and unique per integration instance: it names the persistent
    session in which the broker queues messages while the link is down.
    """

    host: str
    client_id: str
    port: int = 1883
    username: str | None = None
    password: str | None = None
    tls: bool = False
    ca_file: str | None = None
    client_cert: str | None = None
    client_key: str | None = None
    keepalive: int = 60
    timeout: float = 10.0
    clean_session: bool = False


def build_ssl_context(config: TransportConfig) -> ssl.SSLContext | None:
    """Return the TLS context for `config` (None without TLS). Blocking: loads files.

    With `ca_file` the server is verified against that CA, else against the system's CAs;
    `client_cert` (and `client_key`) add a client certificate.
    """
    if not config.tls:
        return None
    context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=config.ca_file)
    if config.client_cert:
        context.load_cert_chain(config.client_cert, config.client_key)
    return context


def exponential_backoff(
    base: float = 1.0, cap: float = 60.0, rand: Callable[[], float] = random.random
) -> Backoff:
    """Return `attempt -> delay`: `min(cap, base * 2**attempt)` scaled by a jitter in [0.5, 1]."""

    def delay(attempt: int) -> float:
        ceiling = min(cap, base * math.pow(2, min(attempt, 32)))
        return ceiling * (0.5 + 0.5 * rand())

    return delay


def _is_auth_error(err: BaseException) -> bool:
    if not isinstance(err, MqttCodeError):
        return False
    rc = err.rc
    value = rc if isinstance(rc, int) else getattr(rc, "value", None)
    return value in _AUTH_CODES


def _client(
    config: TransportConfig,
    context: ssl.SSLContext | None,
    *,
    identifier: str,
    clean_session: bool,
    queue_type: type[asyncio.Queue[aiomqtt.Message]] | None = None,
) -> aiomqtt.Client:
    return aiomqtt.Client(
        config.host,
        config.port,
        username=config.username,
        password=config.password,
        identifier=identifier,
        protocol=aiomqtt.ProtocolVersion.V311,
        clean_session=clean_session,
        keepalive=config.keepalive,
        timeout=config.timeout,
        tls_context=context,
        queue_type=queue_type,
        socket_options=_SOCKET_OPTIONS,
        logger=_LOGGER,
    )


async def _connect_once(config: TransportConfig, identifier: str) -> None:
    """Connect with a clean session and disconnect; map failures to our two errors."""
    try:
        context = await asyncio.to_thread(build_ssl_context, config)
    except (OSError, ssl.SSLError, ValueError) as err:
        raise CannotConnect(f"Cannot load the TLS files: {err}") from err
    client = _client(config, context, identifier=identifier, clean_session=True)
    try:
        async with asyncio.timeout(config.timeout + 5):
            async with client:
                pass
    except MqttError as err:
        if _is_auth_error(err):
            raise InvalidAuth("The broker refused the user name or password") from err
        raise CannotConnect(f"Cannot connect to {config.host}:{config.port}: {err}") from err
    except (OSError, ssl.SSLError, TimeoutError) as err:
        raise CannotConnect(f"Cannot connect to {config.host}:{config.port}: {err}") from err


async def check_connection(config: TransportConfig) -> None:
    """Connect once with a throw-away clean session; raise `CannotConnect` or `InvalidAuth`."""
    await _connect_once(config, f"{config.client_id}-check-{uuid.uuid4().hex[:8]}")


async def forget_session(config: TransportConfig) -> None:
    """Make the broker drop the persistent session of `config.client_id` (entry removed).

    Connecting once with a clean session under the same client id discards the stored
    subscriptions and queued messages. Raises `CannotConnect` / `InvalidAuth` like
    `check_connection`. Call it only after the transport was stopped.
    """
    await _connect_once(config, config.client_id)


class MqttTransport:
    """A reconnecting MQTT client with a persistent session (see the module docstring)."""

    def __init__(
        self,
        config: TransportConfig,
        handler: MessageHandler,
        subscriptions: Sequence[str] = (),
        *,
        on_connected: Callable[[], None] | None = None,
        on_disconnected: Callable[[str], None] | None = None,
        backoff: Backoff | None = None,
        drain_timeout: float = 5.0,
    ) -> None:
        """Prepare the transport; nothing connects until `start()`."""
        self.config = config
        self._handler = handler
        self._subscriptions: list[str] = list(dict.fromkeys(subscriptions))
        self._on_connected = on_connected
        self._on_disconnected = on_disconnected
        self._backoff = backoff or exponential_backoff()
        self._drain_timeout = drain_timeout
        self._inbox: asyncio.Queue[aiomqtt.Message] = asyncio.Queue()
        self._client: aiomqtt.Client | None = None
        self._connected = asyncio.Event()
        self._stopping = asyncio.Event()
        self._run_task: asyncio.Task[None] | None = None
        self._consume_task: asyncio.Task[None] | None = None
        self._ssl_context: ssl.SSLContext | None = None
        self._handler_errors = 0
        self.received = 0
        self.connects = 0

    # -- public ------------------------------------------------------------------------

    @property
    def connected(self) -> bool:
        """Return whether the link to the broker is up."""
        return self._connected.is_set()

    @property
    def subscriptions(self) -> list[str]:
        """Return the topic filters subscribed after every (re)connect."""
        return list(self._subscriptions)

    @property
    def backlog(self) -> int:
        """Return how many received messages wait for the handler."""
        return self._inbox.qsize()

    async def start(self) -> None:
        """Build the TLS context (in a thread) and start connecting in the background."""
        if self._run_task is not None:
            return
        self._ssl_context = await asyncio.to_thread(build_ssl_context, self.config)
        self._stopping.clear()
        self._consume_task = asyncio.create_task(self._consume(), name="prepaid_meter mqtt consume")
        self._run_task = asyncio.create_task(self._run(), name="prepaid_meter mqtt connection")

    async def wait_connected(self) -> None:
        """Wait until connected and subscribed (wrap it in `asyncio.timeout`)."""
        await self._connected.wait()

    async def stop(self) -> None:
        """Disconnect, let the handler finish what was received (bounded), cancel the rest."""
        self._stopping.set()
        run, self._run_task = self._run_task, None
        if run is not None:
            try:
                async with asyncio.timeout(self.config.timeout + 2):
                    await asyncio.shield(run)
            except TimeoutError:
                run.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await run
        consume, self._consume_task = self._consume_task, None
        if consume is not None:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self._drain_timeout):
                    await self._inbox.join()
            consume.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await consume

    async def publish(self, topic: str, payload: bytes, qos: int = 1, retain: bool = False) -> None:
        """Publish and wait for the broker's PUBACK (QoS 1); raise `TransportError` if not."""
        client = self._client
        if client is None or not self._connected.is_set():
            raise NotConnected("Not connected to the MQTT broker")
        try:
            await client.publish(
                topic, payload, qos=qos, retain=retain, timeout=self.config.timeout
            )
        except MqttError as err:
            raise TransportError(f"Publishing to {topic} failed: {err}") from err

    async def subscribe(self, topic: str) -> None:
        """Add a subscription (QoS 1), now if connected, and after every reconnect."""
        if topic in self._subscriptions:
            return
        self._subscriptions.append(topic)
        client = self._client
        if client is not None and self._connected.is_set():
            try:
                await client.subscribe(topic, qos=1)
            except MqttError as err:
                _LOGGER.debug(
                    "Subscribing to %s failed now, will retry on reconnect: %s", topic, err
                )

    # -- internals ---------------------------------------------------------------------

    def _queue_type(self) -> type[asyncio.Queue[aiomqtt.Message]]:
        """Return a queue class whose instances forward into this transport's inbox.

        aiomqtt drops the messages still in its own queue when the link breaks; forwarding
        them at once into `_inbox` (which lives as long as the transport) keeps every message
        that the broker counts as delivered.
        """
        inbox = self._inbox

        class _Forward(asyncio.Queue[aiomqtt.Message]):
            def put_nowait(self, item: aiomqtt.Message) -> None:
                inbox.put_nowait(item)

        return _Forward

    async def _run(self) -> None:
        attempt = 0
        queue_type = self._queue_type()
        while not self._stopping.is_set():
            client = _client(
                self.config,
                self._ssl_context,
                identifier=self.config.client_id,
                clean_session=self.config.clean_session,
                queue_type=queue_type,
            )
            tune(client, _SOCKET_OPTIONS)
            reason = "connection lost"
            try:
                async with client:
                    for topic in self._subscriptions:
                        await client.subscribe(topic, qos=1)
                    self._client = client
                    self.connects += 1
                    attempt = 0
                    self._set_connected(True)
                    reason = await self._wait_disconnect(client)
            except MqttError as err:
                reason = str(err) or type(err).__name__
                if _is_auth_error(err):
                    reason = f"the broker refused the credentials ({err})"
            except OSError as err:  # pragma: no cover - aiomqtt wraps these, but be safe
                reason = str(err)
            finally:
                self._client = None
                await _end_misc_loop(client)
            self._set_connected(False, reason)
            if self._stopping.is_set():
                break
            delay = self._backoff(attempt)
            attempt += 1
            _LOGGER.debug("MQTT reconnect in %.2f s (attempt %d): %s", delay, attempt, reason)
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(delay):
                    await self._stopping.wait()

    async def _wait_disconnect(self, client: aiomqtt.Client) -> str:
        """Return when the link breaks (raises MqttError) or stop() was called."""

        async def drain() -> None:
            # The forwarding queue keeps aiomqtt's own queue empty: this only waits for the
            # disconnection, which ends the iteration with MqttError.
            async for _ in client.messages:
                pass  # pragma: no cover

        link = asyncio.create_task(drain())
        stop = asyncio.create_task(self._stopping.wait())
        try:
            await asyncio.wait({link, stop}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in (link, stop):
                task.cancel()
            results = await asyncio.gather(link, stop, return_exceptions=True)
        if self._stopping.is_set():
            return "stopped"
        error = results[0]
        if isinstance(error, MqttError):
            raise error
        return "connection lost"

    def _set_connected(self, up: bool, reason: str = "") -> None:
        if up == self._connected.is_set():
            return
        if up:
            self._connected.set()
            _LOGGER.debug("Connected to the MQTT broker %s:%s", self.config.host, self.config.port)
            callback: Callable[[], None] | None = self._on_connected
            if callback is not None:
                self._safe_call(callback)
            return
        self._connected.clear()
        if reason == "stopped":
            _LOGGER.debug("Disconnected from the MQTT broker (stopped)")
        else:
            _LOGGER.debug(
                "Lost the MQTT broker %s:%s (%s); reconnecting in the background",
                self.config.host,
                self.config.port,
                reason,
            )
        if self._on_disconnected is not None:
            on_disconnected = self._on_disconnected
            self._safe_call(lambda: on_disconnected(reason))

    @staticmethod
    def _safe_call(callback: Callable[[], None]) -> None:
        try:
            callback()
        except Exception:
            _LOGGER.exception("MQTT connection callback failed")

    async def _consume(self) -> None:
        # `Queue.get` does not suspend while messages wait: a backlog (after a pause of the
        # event loop) would be handled in one go, holding back everything else, the relay
        # commands its readings cause included. Give the loop back every few milliseconds.
        pause_at = time.monotonic() + YIELD_AFTER_S
        while True:
            if time.monotonic() >= pause_at:
                await asyncio.sleep(0)
                pause_at = time.monotonic() + YIELD_AFTER_S
            if self._inbox.empty():
                message = await self._inbox.get()
                pause_at = time.monotonic() + YIELD_AFTER_S
            else:
                message = self._inbox.get_nowait()
            try:
                self.received += 1
                result = self._handler(message.topic.value, message.payload)
                if inspect.isawaitable(result):
                    await result
            except asyncio.CancelledError:
                raise
            except Exception:
                self._handler_errors += 1
                if self._handler_errors <= 10 or self._handler_errors % 1000 == 0:
                    _LOGGER.exception(
                        "The MQTT message handler failed on %s (%d failures so far)",
                        message.topic.value,
                        self._handler_errors,
                    )
            finally:
                self._inbox.task_done()


__all__ = [
    "CannotConnect",
    "InvalidAuth",
    "MqttTransport",
    "NotConnected",
    "TransportConfig",
    "TransportError",
    "build_ssl_context",
    "check_connection",
    "exponential_backoff",
    "forget_session",
]


async def _end_misc_loop(client: aiomqtt.Client) -> None:
    """Finish aiomqtt's housekeeping task of a client that has left its `async with`.

    aiomqtt cancels it from the socket-close callback without awaiting it, so it can outlive
    `stop()` by a loop iteration or two (seen on Python 3.14): end it here, deterministically.
    """
    task: asyncio.Task[None] | None = getattr(client, "_misc_task", None)
    if task is not None and not task.done():
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
