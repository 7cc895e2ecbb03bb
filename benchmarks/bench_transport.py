"""Benchmark parsing and normalising meter messages: native prepaid/v1, Tasmota and Shelly.

For each profile, `--messages` realistic payloads (default 200,000, spread over 1,000 meters,
in time order) go through `profile.parse(topic, payload, now)` and then `MeterGate.check`,
in one process on one core, timed with `time.perf_counter`. No broker is involved: this is the
CPU cost per message of everything after the network. Target: at least 20,000 messages/s.

    .venv/bin/python -m benchmarks.bench_transport --messages 200000
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from dataclasses import dataclass
import datetime as dt
import gc
import json
import time

from custom_components.prepaid_meter.engine.profiles import (
    NativeProfile,
    Profile,
    ShellyProfile,
    TasmotaProfile,
)
from custom_components.prepaid_meter.engine.protocol import Accepted, MeterGate, Reading

START = 1_764_300_000  # 2025-11-28 03:20 UTC
TARGET_PER_S = 20_000


def native_message(meter: int, step: int) -> tuple[str, bytes]:
    """Return one prepaid/v1 telemetry message."""
    body = {
        "v": 1,
        "seq": step + 1,
        "ts": START + 10 * step,
        "energy_kwh": f"{1000 + step * 0.011 + meter:.3f}",
        "power_w": 850.0 + meter % 50,
        "voltage_v": 229.8,
        "current_a": 3.9,
        "neutral_current_a": 3.9,
        "pf": 0.97,
        "relay": "on",
        "events": [],
    }
    return f"prepaid/bench/{meter:012d}/telemetry", json.dumps(body).encode()


def tasmota_message(meter: int, step: int) -> tuple[str, bytes]:
    """Return one Tasmota `tele/<topic>/SENSOR` message (zone-less UTC time)."""
    moment = dt.datetime.fromtimestamp(START + 10 * step, dt.UTC).strftime("%Y-%m-%dT%H:%M:%S")
    energy = {
        "TotalStartTime": "2024-01-01T00:00:00",
        "Total": round(1000 + step * 0.011 + meter, 3),
        "Yesterday": 3.2,
        "Today": 1.1,
        "Power": 850 + meter % 50,
        "ApparentPower": 900,
        "ReactivePower": 100,
        "Factor": 0.97,
        "Voltage": 230,
        "Current": 3.9,
    }
    return f"tele/plug{meter:06d}/SENSOR", json.dumps({"Time": moment, "ENERGY": energy}).encode()


def shelly_message(meter: int, step: int) -> tuple[str, bytes]:
    """Return one Shelly Gen2 `<id>/status/switch:0` message."""
    ts = START + 10 * step
    body = {
        "id": 0,
        "source": "timer",
        "output": True,
        "apower": 850.0 + meter % 50,
        "voltage": 229.8,
        "freq": 50.0,
        "current": 3.9,
        "pf": 0.97,
        "aenergy": {
            "total": round((1000 + step * 0.011 + meter) * 1000, 3),
            "by_minute": [141.6, 141.6, 141.6],
            "minute_ts": ts - ts % 60,
        },
        "temperature": {"tC": 40.1, "tF": 104.2},
    }
    return f"shelly{meter:06d}/status/switch:0", json.dumps(body).encode()


@dataclass(frozen=True, slots=True)
class Result:
    """One profile's figures."""

    name: str
    messages: int
    seconds: float
    readings: int
    accepted: int

    @property
    def per_second(self) -> float:
        """Return messages per second."""
        return self.messages / self.seconds


def run(
    name: str,
    profile: Profile,
    make: Callable[[int, int], tuple[str, bytes]],
    total: int,
    meters: int,
) -> Result:
    """Time parse + gate over `total` prepared messages."""
    messages = [make(n % meters, n // meters) for n in range(total)]
    gate = MeterGate(clock=lambda: float(START + 10 * (total // meters) + 60))
    now = float(START)
    readings = accepted = 0
    gc.collect()
    started = time.perf_counter()
    for topic, payload in messages:
        parsed = profile.parse(topic, payload, now)
        if isinstance(parsed, Reading):
            readings += 1
            if isinstance(gate.check(parsed), Accepted):
                accepted += 1
    elapsed = time.perf_counter() - started
    return Result(name, total, elapsed, readings, accepted)


def main() -> None:
    """Run the benchmark and print one line per profile."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=200_000)
    parser.add_argument("--meters", type=int, default=1_000)
    args = parser.parse_args()
    cases: list[tuple[str, Profile, Callable[[int, int], tuple[str, bytes]]]] = [
        ("native", NativeProfile("bench"), native_message),
        ("tasmota", TasmotaProfile(), tasmota_message),
        ("shelly", ShellyProfile(), shelly_message),
    ]
    print(f"{args.messages:,} messages per profile, {args.meters:,} meters, parse + gate, 1 core")
    worst = float("inf")
    for name, profile, make in cases:
        result = run(name, profile, make, args.messages, args.meters)
        worst = min(worst, result.per_second)
        print(
            f"{name:8s} {result.per_second:12,.0f} msg/s  {result.seconds:6.2f} s  "
            f"{1e6 * result.seconds / result.messages:6.1f} us/msg  "
            f"readings {result.readings:,}  accepted {result.accepted:,}"
        )
        if result.accepted != result.messages:
            raise SystemExit(f"{name}: only {result.accepted} of {result.messages} accepted")
    verdict = "meets" if worst >= TARGET_PER_S else "misses"
    print(f"slowest profile {worst:,.0f} msg/s: {verdict} the target of {TARGET_PER_S:,} msg/s")


if __name__ == "__main__":
    main()
