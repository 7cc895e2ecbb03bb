"""Benchmark: what receiving QoS 1 telemetry costs the integration's MQTT transport.

    .venv/bin/python benchmarks/bench_link.py                    # 500 msg/s (5,000 meters / 10 s)
    .venv/bin/python benchmarks/bench_link.py --plain            # aiomqtt/paho as they come
    .venv/bin/python benchmarks/bench_link.py --rate 2000 --window 20

It starts its own mosquitto (tests/broker.py), an `MqttTransport` in this process subscribed
to telemetry at QoS 1 (as the integration is) with a handler that only counts, and a publisher
child process that sends prepaid/v1 readings from 5,000 meter ids at `--rate` messages a second,
spread evenly. Over the window it reports this process's CPU (user + system time over wall time,
100 % = one core), split into user and system, and the cost per message. `--plain` runs the
transport without engine/link.py's `tune` (aiomqtt's own reader and writer) for comparison.
"""

from __future__ import annotations

import argparse
import asyncio
import json
from pathlib import Path
import resource
import subprocess
import sys
import tempfile
import time
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from custom_components.prepaid_meter.engine import transport  # noqa: E402
from tests.broker import Mosquitto  # noqa: E402

METERS = 5000
START = 1_764_300_000


def publish(port: int, rate: float, seconds: float) -> int:
    """Publish readings at `rate` a second for `seconds` (the child process); return the count."""
    from paho.mqtt.client import Client  # noqa: PLC0415 - only the child needs it
    from paho.mqtt.enums import CallbackAPIVersion  # noqa: PLC0415

    client = Client(CallbackAPIVersion.VERSION2, client_id="bench-link-publisher")
    client.connect("127.0.0.1", port)
    client.loop_start()
    began = time.monotonic()
    sent = 0
    while (elapsed := time.monotonic() - began) < seconds:
        while sent < int(elapsed * rate):
            meter = sent % METERS
            body = {
                "v": 1,
                "seq": sent // METERS + 1,
                "ts": START + 10 * (sent // METERS),
                "energy_kwh": f"{1000 + sent * 0.001:.3f}",
                "power_w": 850.0,
                "voltage_v": 229.8,
                "current_a": 3.9,
                "neutral_current_a": 3.9,
                "relay": "on",
            }
            client.publish(f"prepaid/bench/{meter:012d}/telemetry", json.dumps(body), qos=1)
            sent += 1
        time.sleep(0.002)
    time.sleep(1)
    client.loop_stop()
    client.disconnect()
    return sent


def _cpu() -> tuple[float, float]:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime, usage.ru_stime


async def measure(rate: float, window: float, plain: bool) -> dict[str, float]:
    """Run broker, transport and publisher; return the figures of the window."""
    if plain:
        module: Any = transport  # the transport module, its `tune` a no-op for this run
        module.tune = lambda *_args, **_kwargs: None
    broker = Mosquitto(Path(tempfile.mkdtemp(prefix="bench-link-")), persistence=False)
    broker.start()
    received = 0

    def handler(_topic: str, _payload: bytes) -> None:
        nonlocal received
        received += 1

    link = transport.MqttTransport(
        transport.TransportConfig(host=broker.host, port=broker.port, client_id="bench-link"),
        handler,
        ["prepaid/bench/+/telemetry"],
    )
    await link.start()
    async with asyncio.timeout(10):
        await link.wait_connected()
    child = subprocess.Popen(  # noqa: ASYNC220 - started once, before the window
        [sys.executable, __file__, "--publish", str(broker.port), str(rate), str(window + 5)],
        stdout=subprocess.PIPE,
    )
    try:
        await asyncio.sleep(2)  # the publisher connects and reaches its rate
        cpu0, got0, wall0 = _cpu(), received, time.monotonic()
        await asyncio.sleep(window)
        cpu1, got1, wall1 = _cpu(), received, time.monotonic()
        sent = int(child.communicate(timeout=window + 30)[0] or 0)
        async with asyncio.timeout(10):
            while received < sent:  # noqa: ASYNC110 - the handler only counts
                await asyncio.sleep(0.05)
    finally:
        child.kill()
        await link.stop()
        broker.stop()
    wall = wall1 - wall0
    user, system = cpu1[0] - cpu0[0], cpu1[1] - cpu0[1]
    count = got1 - got0
    return {
        "rate": count / wall,
        "cpu": 100 * (user + system) / wall,
        "user": 100 * user / wall,
        "system": 100 * system / wall,
        "us_per_msg": 1e6 * (user + system) / max(count, 1),
        "received": received,
        "sent": sent,
    }


def main() -> None:
    """Parse arguments, run, print."""
    if len(sys.argv) == 5 and sys.argv[1] == "--publish":
        print(publish(int(sys.argv[2]), float(sys.argv[3]), float(sys.argv[4])))
        return
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rate", type=float, default=500.0, help="messages a second")
    parser.add_argument("--window", type=float, default=20.0, help="seconds measured")
    parser.add_argument("--plain", action="store_true", help="without engine/link.py's tune")
    args = parser.parse_args()
    result = asyncio.run(measure(args.rate, args.window, args.plain))
    print(
        f"{'plain aiomqtt' if args.plain else 'tuned link'}: {result['rate']:.0f} msg/s received, "
        f"CPU {result['cpu']:.1f}% of a core (user {result['user']:.1f}%, "
        f"system {result['system']:.1f}%), {result['us_per_msg']:.0f} us/message; "
        f"{result['received']}/{result['sent']} delivered"
    )


if __name__ == "__main__":
    main()
