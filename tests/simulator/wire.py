"""Checks of the wire formats (PROTOCOL.md, Tasmota and Shelly docs) and an MQTT recorder."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
import contextlib
from dataclasses import dataclass, field
from decimal import Decimal
import json
import re
from typing import Any

import aiomqtt

from simulator import SimConfig, build_meters

EVENTS = {
    "cover_open",
    "magnetic_tamper",
    "reverse_energy",
    "overcurrent",
    "arc_fault",
    "relay_fault",
}
_KWH = re.compile(r"\d+\.\d{3}")
_METER_ID = re.compile(r"[A-Za-z0-9_-]{1,64}")
_TASMOTA_TIME = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d")


def _number(value: Any) -> bool:
    return isinstance(value, int | float | Decimal) and not isinstance(value, bool)


def native_telemetry(payload: bytes) -> dict[str, Any]:
    """Return a prepaid/v1 telemetry payload after checking every field and its type."""
    body = json.loads(payload)
    assert isinstance(body, dict)
    assert body["v"] == 1
    assert isinstance(body["seq"], int) and not isinstance(body["seq"], bool)
    assert isinstance(body["ts"], int) and body["ts"] > 1_500_000_000
    assert isinstance(body["energy_kwh"], str) and _KWH.fullmatch(body["energy_kwh"])
    for key in ("power_w", "voltage_v", "current_a", "neutral_current_a", "pf"):
        assert isinstance(body[key], float), key
        assert body[key] >= 0, key
    assert 0 < body["pf"] <= 1
    assert 180 < body["voltage_v"] < 260
    assert body["relay"] in ("on", "off")
    assert isinstance(body["events"], list) and set(body["events"]) <= EVENTS
    return body


def native_announce(payload: bytes, meter_id: str) -> dict[str, Any]:
    """Return an announce payload after checking it."""
    body: dict[str, Any] = json.loads(payload)
    assert body["v"] == 1 and body["meter_id"] == meter_id
    assert _METER_ID.fullmatch(meter_id) and len(meter_id) == 12 and meter_id.isdigit()
    assert isinstance(body["model"], str) and isinstance(body["fw"], str)
    assert body["phases"] == 1 and body["rated_current_a"] in (40, 60)
    assert body["relay"] is True and isinstance(body["caps"], list)
    return body


def tasmota_sensor(payload: bytes) -> dict[str, Any]:
    """Return a Tasmota `tele/<topic>/SENSOR` payload (numbers as Decimal) after checking it."""
    body: dict[str, Any] = json.loads(payload, parse_float=Decimal)
    assert _TASMOTA_TIME.fullmatch(body["Time"])
    energy = body["ENERGY"]
    for key in ("Total", "Yesterday", "Today", "Power", "Factor", "Voltage", "Current"):
        assert _number(energy[key]), key
    assert isinstance(energy["Power"], int) and isinstance(energy["Voltage"], int)
    assert isinstance(energy["Total"], Decimal) and energy["Total"].as_tuple().exponent == -3
    return body


def shelly_status(payload: bytes) -> dict[str, Any]:
    """Return a Shelly `status/switch:0` payload (numbers as Decimal) after checking it."""
    body: dict[str, Any] = json.loads(payload, parse_float=Decimal)
    assert body["id"] == 0 and isinstance(body["output"], bool)
    for key in ("apower", "voltage", "current", "freq"):
        assert _number(body[key]), key
    energy = body["aenergy"]
    assert isinstance(energy["total"], Decimal) and energy["total"] >= 0
    assert isinstance(energy["minute_ts"], int) and energy["minute_ts"] % 60 == 0
    assert len(energy["by_minute"]) == 3 and all(_number(x) for x in energy["by_minute"])
    return body


@dataclass
class Recorder:
    """Every message seen on the subscribed topics, in arrival order."""

    messages: list[tuple[str, bytes, bool]] = field(default_factory=list)
    client: aiomqtt.Client | None = None
    _changed: asyncio.Event = field(default_factory=asyncio.Event)

    def on(self, topic: str) -> list[bytes]:
        """Return the payloads seen on one topic."""
        return [payload for t, payload, _ in self.messages if t == topic]

    async def wait_for(self, check: Callable[[], bool], within: float = 10.0) -> None:
        """Wait until `check()` holds (fail after `within` seconds)."""
        async with asyncio.timeout(within):
            while not check():
                self._changed.clear()
                await self._changed.wait()

    async def publish(self, topic: str, payload: bytes | str) -> None:
        """Publish at QoS 1 on the recorder's own connection."""
        assert self.client is not None
        await self.client.publish(topic, payload, qos=1)


@contextlib.asynccontextmanager
async def record(host: str, port: int, *topics: str) -> AsyncIterator[Recorder]:
    """Subscribe to `topics` and record everything until the block ends."""
    recorder = Recorder()
    async with aiomqtt.Client(host, port) as client:
        recorder.client = client
        await client.subscribe([(topic, 1) for topic in topics])

        async def read() -> None:
            async for message in client.messages:
                payload = message.payload
                assert isinstance(payload, bytes)
                recorder.messages.append((message.topic.value, payload, message.retain))
                recorder._changed.set()

        task = asyncio.create_task(read())
        try:
            yield recorder
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task


async def forget_retained(host: str, port: int, config: SimConfig) -> None:
    """Clear the retained messages a community's meters left (tests share one broker)."""
    topics = {m.topic for meter in build_meters(config) for m in meter.announce() if m.retain}
    topics |= {meter.will().topic for meter in build_meters(config)}
    async with aiomqtt.Client(host, port) as client:
        for topic in sorted(topics):
            await client.publish(topic, b"", qos=1, retain=True)
