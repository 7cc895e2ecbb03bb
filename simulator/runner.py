"""A simulated community on a real MQTT broker: `Community(config)`, `await run()`, `await stop()`.

Connections. A real meter has its own MQTT connection and its own last will. Thousands of
connections from one process are heavy (a socket, a paho client and a thread-pool connect each),
so by default meters share a small pool of connections, `pool_size` meters each (250: 5,000
meters use 20 connections). A shared connection cannot carry a per-meter last will, so:
- meters of the `offline` scenario always get a dedicated connection whose will is their own
  offline availability; going offline drops that connection without a DISCONNECT (the socket is
  shut down) so the broker really fires the will, and coming back reconnects;
- `connection_per_meter=True` (`--connection-per-meter`) gives every meter its own connection
  and its own will, at the cost of one socket per meter (mind `ulimit -n` on both sides);
- pooled meters say `offline` themselves when the simulator stops cleanly; if the process is
  killed, their availability stays `online` until they are seen again.

Time. A reading is due every `interval` real seconds per meter (meters are spread evenly over
the interval); its `ts` is the simulated time it was due at: `start + (phase + k * interval) *
speed`. Payloads therefore depend on the seed and the schedule only, not on how busy the
machine is. A meter that cannot send (its connection is down, or the `offline` scenario has it
off the network) keeps metering and keeps its messages in a backlog, sent oldest first when it is
back; `seq` keeps increasing.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import secrets
import socket
import sys
import time
from typing import Final

import aiomqtt

from simulator.config import SimConfig
from simulator.household import Household
from simulator.meter import Profile, Publish, SimMeter
from simulator.profiles import PROFILES, make_profile
from simulator.status import Snapshot, Stats

_LOGGER: Final = logging.getLogger("simulator")
_CHUNK: Final = 100


class SimulatorError(Exception):
    """The simulator cannot run; the message says why."""


class LinkDown(Exception):
    """The connection is not up; the message stays in the backlog."""


class SimClock:
    """Simulated time: `start` at `begin()`, advancing `speed` simulated seconds per second."""

    def __init__(self, start: float, speed: float) -> None:
        """Prepare a clock; it stands still at `start` until `begin()`."""
        self.start = start
        self.speed = speed
        self._t0: float | None = None

    def begin(self) -> None:
        """Start the clock now (event-loop time)."""
        self._t0 = asyncio.get_running_loop().time()

    @property
    def t0(self) -> float:
        """Return the loop time at which the clock started."""
        if self._t0 is None:
            raise RuntimeError("the clock has not started")
        return self._t0

    def now(self) -> float:
        """Return the simulated UNIX time now."""
        if self._t0 is None:
            return self.start
        return self.start + (asyncio.get_running_loop().time() - self._t0) * self.speed


def build_meters(config: SimConfig) -> list[SimMeter]:
    """Return the community's meters: the same config and seed always give the same ones."""
    rng = random.Random(f"community:{config.seed}:{config.community}")
    count = config.meters
    numbers = rng.sample(range(10**8), count)
    tails = rng.sample(range(1 << 24), count)
    kinds = [name for name, n in config.scenarios for _ in range(n)]
    kinds += ["ordinary"] * (count - len(kinds))
    rng.shuffle(kinds)
    profiles: dict[str, Profile] = {
        name: make_profile(name, config.prefix, config.community) for name in PROFILES
    }
    meters = []
    for index in range(count):
        meter_id = f"0000{numbers[index]:08d}"
        profile = config.profile
        if profile == "mix":
            profile = rng.choices(PROFILES, weights=(6, 2, 2))[0]
        tail = tails[index]
        if profile == "tasmota":
            device_id = f"tasmota_{tail:06X}"
        elif profile == "shelly":
            device_id = f"shellyplus1pm-a8032a{tail:06x}"
        else:
            device_id = meter_id
        house = Household.create(
            rng.getrandbits(48), kinds[index], utc_offset_s=config.utc_offset_s
        )
        meters.append(
            SimMeter.create(
                index,
                meter_id,
                profiles[profile],
                house,
                scenario=kinds[index],
                device_id=device_id,
                offline_after=config.offline_after,
                offline_for=config.offline_for,
                reset_after=config.reset_after,
                garbage_rate=config.garbage_rate,
            )
        )
    return meters


class Link:
    """One MQTT connection carrying one meter (with its will) or a pool of meters."""

    def __init__(
        self,
        name: str,
        meters: list[SimMeter],
        config: SimConfig,
        stats: Stats,
        clock: SimClock,
        *,
        dedicated: bool,
    ) -> None:
        """Prepare the connection; nothing happens until `run()`."""
        self.name = name
        self.meters = meters
        self.dedicated = dedicated
        self._config = config
        self._stats = stats
        self._clock = clock
        self._by_topic = {topic: m for m in meters for topic in m.command_topics()}
        self.connected = asyncio.Event()
        self.allowed = True
        self._allowed = asyncio.Event()
        self._allowed.set()
        self._closing = asyncio.Event()
        self._dropping = asyncio.Event()
        self.first_attempt = asyncio.Event()
        self.first_error: Exception | None = None
        self._client: aiomqtt.Client | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    # -- for meters ----------------------------------------------------------------------

    async def publish(self, message: Publish) -> None:
        """Send one message at its QoS and wait for the broker's PUBACK; raise if down."""
        client = self._client
        if client is None or not self.connected.is_set():
            raise LinkDown(self.name)
        try:
            await client.publish(
                message.topic,
                message.payload,
                qos=message.qos,
                retain=message.retain,
                timeout=self._config.publish_timeout,
            )
        except aiomqtt.MqttError:
            self._stats.publish_errors += 1
            raise
        self._stats.published += 1

    def drop(self) -> None:
        """Fall off the network: the socket closes without DISCONNECT, so the will fires."""
        self.allowed = False
        self._allowed.clear()
        self.connected.clear()
        self._dropping.set()

    def resume(self) -> None:
        """Come back: reconnect (announce and online are published before anything else)."""
        self.allowed = True
        self._allowed.set()

    async def close(self) -> None:
        """Say offline for every meter that is connected, disconnect, and end `run()`."""
        self._closing.set()
        self._allowed.set()

    # -- the connection ------------------------------------------------------------------

    async def run(self) -> None:
        """Keep the connection up (reconnecting with backoff) until `close()`."""
        backoff = 0.2
        while not self._closing.is_set():
            await self._allowed.wait()
            if self._closing.is_set():
                break
            try:
                await self._connect_once()
                backoff = 0.2
            except aiomqtt.MqttError as err:
                self._stats.connect_errors += 1
                if not self.first_attempt.is_set():
                    self.first_error = err
                    self.first_attempt.set()
                _LOGGER.debug("%s: %s", self.name, err)
            finally:
                self.connected.clear()
                self._client = None
            if self._closing.is_set() or not self.allowed:
                continue
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._closing.wait(), backoff)
            backoff = min(backoff * 2, 10.0)
        for task in list(self._tasks):
            task.cancel()

    def _client_for(self) -> aiomqtt.Client:
        broker = self._config.broker
        will = None
        if self.dedicated:
            last = self.meters[0].will()
            will = aiomqtt.Will(last.topic, last.payload, last.qos, last.retain)
        client = aiomqtt.Client(
            broker.host,
            broker.port,
            username=broker.username,
            password=broker.password,
            identifier=f"sim-{self._config.community}-{self.name}-{secrets.token_hex(3)}",
            will=will,
            clean_session=True,
            keepalive=30,
            # A meter's ack or reading right after a PUBACK must not wait ~40 ms (Nagle).
            socket_options=((socket.IPPROTO_TCP, socket.TCP_NODELAY, 1),),
            timeout=self._config.publish_timeout,
            max_inflight_messages=100,
        )
        client.pending_calls_threshold = 1_000_000
        return client

    async def _connect_once(self) -> None:
        client = self._client_for()
        async with client:
            self._client = client
            self._stats.connects += 1
            topics = list(self._by_topic)
            for i in range(0, len(topics), _CHUNK):
                await client.subscribe([(topic, 1) for topic in topics[i : i + _CHUNK]])
            hello = [m for meter in self.meters for m in meter.announce()]
            for i in range(0, len(hello), _CHUNK):
                await asyncio.gather(
                    *(
                        client.publish(m.topic, m.payload, qos=m.qos, retain=m.retain)
                        for m in hello[i : i + _CHUNK]
                    )
                )
            self._stats.published += len(hello)
            self.connected.set()
            if not self.first_attempt.is_set():
                self.first_attempt.set()
            await self._serve(client)

    async def _serve(self, client: aiomqtt.Client) -> None:
        reader = asyncio.create_task(self._read(client))
        closing = asyncio.create_task(self._closing.wait())
        dropping = asyncio.create_task(self._dropping.wait())
        try:
            await asyncio.wait({reader, closing, dropping}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            closing.cancel()
            dropping.cancel()
        if reader.done():
            reader.result()  # the connection broke: raises MqttError
            return
        self.connected.clear()
        if self._dropping.is_set():
            self._dropping.clear()
            _abort(client)
            with contextlib.suppress(aiomqtt.MqttError, TimeoutError):
                await asyncio.wait_for(reader, 5)
            reader.cancel()
            return
        # Closing: a clean DISCONNECT suppresses the will, so say offline first.
        await self._say_offline(client)
        reader.cancel()
        with contextlib.suppress(asyncio.CancelledError, aiomqtt.MqttError):
            await reader

    async def _say_offline(self, client: aiomqtt.Client) -> None:
        wills = [meter.will() for meter in self.meters]
        for i in range(0, len(wills), _CHUNK):
            results = await asyncio.gather(
                *(
                    client.publish(m.topic, m.payload, qos=m.qos, retain=m.retain, timeout=5)
                    for m in wills[i : i + _CHUNK]
                ),
                return_exceptions=True,
            )
            self._stats.published += sum(1 for r in results if r is None)

    async def _read(self, client: aiomqtt.Client) -> None:
        async for message in client.messages:
            meter = self._by_topic.get(message.topic.value)
            payload = message.payload
            if meter is None or not isinstance(payload, bytes | bytearray):
                continue
            self._stats.commands += 1
            answers = meter.handle(message.topic.value, bytes(payload), int(self._clock.now()))
            for answer in answers:
                task = asyncio.create_task(self._answer(answer))
                self._tasks.add(task)
                task.add_done_callback(self._tasks.discard)

    async def _answer(self, message: Publish) -> None:
        with contextlib.suppress(LinkDown, aiomqtt.MqttError):
            await self.publish(message)


def _abort(client: aiomqtt.Client) -> None:
    """Shut the connection's socket down without an MQTT DISCONNECT (a network failure)."""
    sock = client._client.socket()
    if isinstance(sock, socket.socket):
        with contextlib.suppress(OSError):
            sock.shutdown(socket.SHUT_RDWR)


class Community:
    """A simulated community: `Community(config)`, then `await run()`; `await stop()` ends it.

    The meters and their connections exist (deterministically, from the seed) as soon as the
    object is built, so `community.meters` can be inspected without a broker. A Community runs
    once.
    """

    def __init__(self, config: SimConfig) -> None:
        """Build the meters; connect nothing yet."""
        self.config = config
        self.start = float(int(config.start if config.start is not None else time.time()))
        self.meters = build_meters(config)
        self.stats = Stats()
        self.clock = SimClock(self.start, config.speed)
        phase_rng = random.Random(f"phases:{config.seed}")
        self._phases = [phase_rng.uniform(0, config.interval) for _ in self.meters]
        self.links: list[Link] = []
        self._link_of: dict[int, Link] = {}
        self._make_links()
        self._stop = asyncio.Event()
        self._finished = asyncio.Event()
        self._running = False
        self._ran = False

    def _make_links(self) -> None:
        cfg = self.config
        pooled: list[SimMeter] = []
        for meter in self.meters:
            if cfg.connection_per_meter or meter.scenario == "offline":
                link = Link(meter.meter_id, [meter], cfg, self.stats, self.clock, dedicated=True)
                self.links.append(link)
                self._link_of[meter.index] = link
            else:
                pooled.append(meter)
        for i in range(0, len(pooled), cfg.pool_size):
            group = pooled[i : i + cfg.pool_size]
            link = Link(
                f"pool{i // cfg.pool_size}", group, cfg, self.stats, self.clock, dedicated=False
            )
            self.links.append(link)
            for meter in group:
                self._link_of[meter.index] = link

    def link_of(self, meter: SimMeter) -> Link:
        """Return the connection a meter uses."""
        return self._link_of[meter.index]

    async def run(self) -> None:
        """Connect, run the meters until `stop()` or `duration`, then go offline and disconnect.

        Raises `SimulatorError` when the broker cannot be reached at all at the start.
        """
        if self._ran:
            raise SimulatorError("a Community runs once; build a new one to run again")
        self._ran = self._running = True
        tasks: list[asyncio.Task[None]] = []
        link_tasks: list[asyncio.Task[None]] = []
        try:
            self.clock.begin()
            link_tasks = [asyncio.create_task(link.run()) for link in self.links]
            first = self.links[0]
            await asyncio.wait_for(first.first_attempt.wait(), self.config.publish_timeout + 5)
            if first.first_error is not None and not first.connected.is_set():
                url = self.config.broker.url
                raise SimulatorError(
                    f"cannot connect to the MQTT broker at {url}: {first.first_error}"
                )
            for meter in self.meters:
                tasks.append(asyncio.create_task(self._meter_loop(meter)))
            if not self.config.quiet:
                tasks.append(asyncio.create_task(self._status_loop()))
            stop = asyncio.create_task(self._stop.wait())
            try:
                await asyncio.wait({stop}, timeout=self.config.duration)
            finally:
                stop.cancel()
        except TimeoutError:
            raise SimulatorError(
                f"cannot connect to the MQTT broker at {self.config.broker.url}: timed out"
            ) from None
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            for link in self.links:
                await link.close()
            if link_tasks:
                _, late = await asyncio.wait(link_tasks, timeout=15)
                for task in late:
                    task.cancel()
                await asyncio.gather(*link_tasks, return_exceptions=True)
            if tasks and not self.config.quiet:
                print(self.snapshot().line() + " | stopped", file=sys.stderr, flush=True)
            self._running = False
            self._finished.set()

    async def stop(self) -> None:
        """Stop a running community and wait until it has said offline and disconnected."""
        self._stop.set()
        if self._running:
            await self._finished.wait()

    async def _meter_loop(self, meter: SimMeter) -> None:
        cfg = self.config
        link = self._link_of[meter.index]
        loop = asyncio.get_running_loop()
        phase = self._phases[meter.index]
        k = 0
        while True:
            offset = phase + k * cfg.interval
            delay = self.clock.t0 + offset - loop.time()
            if delay > 0:
                await asyncio.sleep(delay)
            if meter.offline_now():
                if link.allowed:
                    link.drop()
            elif not link.allowed:
                link.resume()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(link.connected.wait(), max(cfg.interval, 1.0))
            meter.queue_reading(int(self.start + offset * cfg.speed))
            await self._flush(meter, link)
            k += 1

    async def _flush(self, meter: SimMeter, link: Link) -> None:
        while meter.outbox and link.connected.is_set():
            try:
                await link.publish(meter.outbox[0])
            except (LinkDown, aiomqtt.MqttError):
                return
            meter.outbox.popleft()

    async def _status_loop(self) -> None:
        cfg = self.config
        print(
            f"[{cfg.community}] {cfg.meters} meters on {len(self.links)} MQTT connection(s) to "
            f"{cfg.broker.url}, seed {cfg.seed}, interval {cfg.interval:g}s, speed {cfg.speed:g}x",
            file=sys.stderr,
            flush=True,
        )
        ahead = self.runs_ahead_after()
        if ahead is not None and (cfg.duration is None or ahead < cfg.duration):
            print(
                f"[{cfg.community}] note: after {ahead:.0f} s the readings' ts will be more than "
                "10 minutes ahead of the real clock, and PROTOCOL.md has the platform reject "
                "those; with --speed, give a --start in the past",
                file=sys.stderr,
                flush=True,
            )
        self.stats.rate()
        while True:
            await asyncio.sleep(cfg.status_every)
            print(self.snapshot().line(), file=sys.stderr, flush=True)

    def runs_ahead_after(self, margin: float = 600.0) -> float | None:
        """Return the real seconds (from the start) after which simulated time is more than
        `margin` ahead of the real clock, or None if it never gets there."""
        lead = self.start - time.time() - margin  # how far ahead it is at the start
        if lead > 0:
            return 0.0
        if self.config.speed <= 1:
            return None
        return -lead / (self.config.speed - 1)

    def snapshot(self) -> Snapshot:
        """Return the figures of the status line."""
        online = 0
        for link in self.links:
            if link.connected.is_set():
                online += len(link.meters)
        return Snapshot(
            community=self.config.community,
            meters=len(self.meters),
            online=online,
            rate=self.stats.rate(),
            relays_off=sum(1 for m in self.meters if not m.relay_on),
            backlog=sum(len(m.outbox) for m in self.meters),
            published=self.stats.published,
            sim_time=self.clock.now(),
            sim_start=self.start,
            utc_offset_s=self.config.utc_offset_s,
        )
