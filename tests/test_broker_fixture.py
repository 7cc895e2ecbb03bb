"""The broker fixture itself: a real mosquitto round-trips a QoS 1 message."""

from __future__ import annotations

import aiomqtt

from tests.broker import Mosquitto


async def test_round_trip(mosquitto: Mosquitto) -> None:
    """A message published to the fixture's broker comes back to a subscriber."""
    async with aiomqtt.Client(mosquitto.host, mosquitto.port, identifier="fixture-test") as client:
        await client.subscribe("fixture/test", qos=1)
        await client.publish("fixture/test", b"hello", qos=1)
        async for message in client.messages:
            assert message.payload == b"hello"
            assert message.topic.matches("fixture/test")
            break
