"""Benchmark: thousands of simulated meters from one process against a real mosquitto.

    .venv/bin/python benchmarks/bench_simulator.py                  # 5,000 meters, 10 s interval
    .venv/bin/python benchmarks/bench_simulator.py --interval 1     # 5,000 msg/s offered
    .venv/bin/python benchmarks/bench_simulator.py --connection-per-meter   # 5,000 connections

It starts its own mosquitto (tests/broker.py), runs `python -m simulator` as a child process
(`--quiet`, real time, `--speed 1`), and a subscriber here that counts the telemetry the broker
delivers (QoS 0 subscription, so the count costs the broker little). After a warm-up (connect,
announce, first round of readings) it measures a window and reports:
- telemetry messages per second delivered through the broker (and distinct meters heard),
- the simulator process's CPU share (user + system time over wall time, from /proc, where 100 %
  is one core) and the broker's,
- whether the simulator exited 0 after `--duration` (it says offline for every meter first).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
from pathlib import Path
import sys
import tempfile
import time

import aiomqtt

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.broker import Mosquitto  # noqa: E402


def cpu_seconds(pid: int) -> float:
    """Return user + system CPU seconds a process has used so far (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class Counter:
    """Counts telemetry messages and the meters they come from."""

    def __init__(self) -> None:
        self.count = 0
        self.meters: set[str] = set()

    async def run(self, broker: Mosquitto, community: str, ready: asyncio.Event) -> None:
        async with aiomqtt.Client(
            broker.host, broker.port, max_queued_incoming_messages=0
        ) as client:
            await client.subscribe(f"prepaid/{community}/+/telemetry", qos=0)
            ready.set()
            async for message in client.messages:
                self.count += 1
                self.meters.add(message.topic.value)


async def bench(
    meters: int, interval: float, warmup: float, window: float, *, per_meter: bool = False
) -> int:
    community = "bench"
    with tempfile.TemporaryDirectory() as tmp:
        broker = Mosquitto(Path(tmp), persistence=False)
        broker.start()
        broker_pid = broker._proc.pid if broker._proc else None
        counter = Counter()
        ready = asyncio.Event()
        reader = asyncio.create_task(counter.run(broker, community, ready))
        await ready.wait()
        command = [
            sys.executable, "-m", "simulator", "--broker", broker.url, "--community", community,
            "--meters", str(meters), "--interval", str(interval), "--seed", "1", "--quiet",
            "--duration", str(warmup + window + 2),
        ] + (["--connection-per-meter"] if per_meter else [])  # fmt: skip
        started = time.monotonic()
        proc = await asyncio.create_subprocess_exec(
            *command, cwd=ROOT, stderr=asyncio.subprocess.PIPE
        )
        try:
            await asyncio.sleep(warmup)
            c0, m0, t0 = counter.count, len(counter.meters), time.monotonic()
            sim0 = cpu_seconds(proc.pid)
            bro0 = cpu_seconds(broker_pid) if broker_pid else 0.0
            counter.meters.clear()
            await asyncio.sleep(window)
            c1, t1 = counter.count, time.monotonic()
            sim1 = cpu_seconds(proc.pid)
            bro1 = cpu_seconds(broker_pid) if broker_pid else 0.0
            heard = len(counter.meters)
            _, err = await asyncio.wait_for(proc.communicate(), 120)
            stderr = err.decode(errors="replace")
        finally:
            if proc.returncode is None:
                proc.kill()
            reader.cancel()
            with contextlib.suppress(asyncio.CancelledError, aiomqtt.MqttError):
                await reader
            await asyncio.sleep(0.1)  # let the client's disconnect callbacks run
            broker.stop()
        total = time.monotonic() - started
        elapsed = t1 - t0
        rate = (c1 - c0) / elapsed
        print(f"command: {' '.join(command[1:])}")
        print(f"machine: {os.cpu_count()} CPUs, Python {sys.version.split()[0]}")
        print(f"meters {meters}, interval {interval:g} s: offered {meters / interval:.1f} msg/s")
        print(f"warm-up {warmup:g} s ({c0} telemetry messages, {m0} meters heard)")
        print(f"window {elapsed:.1f} s: {c1 - c0} telemetry delivered = {rate:.1f} msg/s")
        print(f"meters heard in the window: {heard}")
        print(f"simulator CPU {100 * (sim1 - sim0) / elapsed:.1f} % of one core over the window")
        if broker_pid:
            print(
                f"mosquitto CPU {100 * (bro1 - bro0) / elapsed:.1f} % of one core over the window"
            )
        print(f"simulator exit status {proc.returncode} after {total:.1f} s")
        if stderr.strip():
            print("simulator stderr:", stderr.strip()[-2000:])
        return proc.returncode or 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--meters", type=int, default=5_000)
    parser.add_argument("--interval", type=float, default=10.0)
    parser.add_argument("--warmup", type=float, default=20.0, help="seconds before measuring")
    parser.add_argument("--window", type=float, default=60.0, help="seconds measured")
    parser.add_argument(
        "--connection-per-meter", action="store_true", help="one MQTT connection per meter"
    )
    args = parser.parse_args()
    return asyncio.run(
        bench(
            args.meters,
            args.interval,
            args.warmup,
            args.window,
            per_meter=args.connection_per_meter,
        )
    )


if __name__ == "__main__":
    sys.exit(main())
