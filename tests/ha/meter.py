"""A prepaid/v1 meter driven by a test: publishes what a test says, acks what it is told."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
import contextlib
from decimal import Decimal
import json
from typing import Any

import aiomqtt


class TestMeter:
    """One meter on its own MQTT connection, with a real last will."""

    __test__ = False

    def __init__(
        self, host: str, port: int, community: str, meter_id: str, prefix: str = "prepaid"
    ) -> None:
        """Prepare; `async with` connects."""
        self.meter_id = meter_id
        self.base = f"{prefix}/{community}/{meter_id}"
        self.seq = 0
        self.energy = Decimal("100.000")
        self.relay = "on"
        self.commands: list[dict[str, Any]] = []
        self.ack_commands = True
        self._client = aiomqtt.Client(
            host,
            port,
            identifier=f"test-meter-{community}-{meter_id}",
            will=aiomqtt.Will(f"{self.base}/availability", b"offline", qos=1, retain=True),
        )
        self._task: asyncio.Task[None] | None = None
        self._changed = asyncio.Event()

    async def __aenter__(self) -> TestMeter:
        """Connect, subscribe to commands, announce and say online."""
        await self._client.__aenter__()
        await self._client.subscribe(f"{self.base}/cmd", qos=1)
        self._task = asyncio.create_task(self._listen())
        await self.publish(
            "announce",
            {
                "v": 1,
                "meter_id": self.meter_id,
                "model": "DDZY-60",
                "fw": "1.4.2",
                "phases": 1,
                "rated_current_a": 60,
                "relay": True,
                "caps": ["neutral_current", "events"],
            },
            retain=True,
        )
        await self._client.publish(f"{self.base}/availability", b"online", qos=1, retain=True)
        return self

    async def __aexit__(self, *exc: object) -> None:
        """Stop listening and disconnect."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        await self._client.__aexit__(None, None, None)

    async def publish(
        self, channel: str, body: dict[str, Any] | bytes, *, retain: bool = False
    ) -> None:
        """Publish on one of this meter's channels."""
        payload = body if isinstance(body, bytes) else json.dumps(body).encode()
        await self._client.publish(f"{self.base}/{channel}", payload, qos=1, retain=retain)

    async def reading(self, ts: int, kwh: str | Decimal, **extra: Any) -> None:
        """Publish a telemetry reading with the next seq; energy only grows while relay is on."""
        self.seq += 1
        self.energy = Decimal(kwh)
        body = {
            "v": 1,
            "seq": self.seq,
            "ts": ts,
            "energy_kwh": str(self.energy),
            "power_w": 850.0,
            "voltage_v": 229.8,
            "current_a": 3.9,
            "neutral_current_a": 3.9,
            "pf": 0.97,
            "relay": self.relay,
            "events": [],
        }
        body.update(extra)
        await self.publish("telemetry", body)

    async def _listen(self) -> None:
        async for message in self._client.messages:
            try:
                command = json.loads(bytes(message.payload))
            except ValueError:
                continue
            self.commands.append(command)
            if command.get("op") == "relay":
                self.relay = command["state"]
            if self.ack_commands:
                await self.publish(
                    "ack", {"v": 1, "id": command["id"], "ok": True, "relay": self.relay}
                )
            self._changed.set()

    async def wait_for(self, predicate: Callable[[], bool], limit: float = 10) -> None:
        """Wait until predicate() holds, re-checking after every command."""
        async with asyncio.timeout(limit):
            while not predicate():
                self._changed.clear()
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(0.1):
                        await self._changed.wait()
