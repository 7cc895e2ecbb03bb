"""Benchmark the billing engine: readings priced per second, and a community's full path.

1. Pricing in memory: `bill_interval` on 10-second readings under Shanghai's yearly tiers with
   peak/valley (the segment cache makes most readings a single lookup; boundaries and tier
   crossings happen as in real data). Target: at least 50,000 readings per second on one core.
2. The full path at a large community's load: 5,000 meters reporting every 10 s, through
   `Community.handle_reading` (gate, pricing, policy, alarms) with a ledger commit every
   `--commit-every` simulated seconds (60, as the integration does) on a real SQLite file
   (WAL, synchronous=FULL). The figures are CPU seconds per simulated second (the share of
   one core; target under 10%), journal entries and bytes written to disk per second.

    .venv/bin/python -m benchmarks.bench_engine [--readings 300000] [--meters 5000] [--seconds 600]
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal
import itertools
from pathlib import Path
import tempfile
import time

from custom_components.prepaid_meter.engine.actor import Actor
from custom_components.prepaid_meter.engine.billing import BillingState, bill_interval
from custom_components.prepaid_meter.engine.community import Community
from custom_components.prepaid_meter.engine.ledger import Ledger
from custom_components.prepaid_meter.engine.policy import PolicyConfig
from custom_components.prepaid_meter.engine.tariff import load_preset

START = datetime(2026, 12, 30, 0, 0, tzinfo=UTC)  # crosses the yearly cycle on the way


@dataclass(frozen=True, slots=True)
class Reading:
    """A reading as the protocol module delivers it."""

    meter_id: str
    seq: int | None
    ts: int
    energy_kwh: Decimal
    power_w: float | None = 800.0
    voltage_v: float | None = 229.0
    current_a: float | None = 3.5
    neutral_current_a: float | None = 3.5
    relay: str | None = "on"
    events: tuple[str, ...] = field(default_factory=tuple)


def bench_pricing(count: int) -> float:
    """Return readings priced per second by bill_interval on one core."""
    tariff = load_preset("shanghai_yearly_tou")
    state = BillingState()
    state.cycle_kwh = Decimal(3000)
    step = timedelta(seconds=10)
    moments = [START + step * i for i in range(count + 1)]
    delta = Decimal("0.003")  # 1.08 kW
    started = time.process_time()
    for t0, t1 in itertools.pairwise(moments):
        bill_interval(tariff, state, t0, t1, delta)
    elapsed = time.process_time() - started
    return count / elapsed


def _written_bytes() -> int:
    with open("/proc/self/io", encoding="ascii") as io:
        for line in io:
            if line.startswith("write_bytes:"):
                return int(line.split()[1])
    return 0


def bench_community(
    meters: int, seconds: int, interval: int, commit_every: int
) -> tuple[float, int, int, int]:
    """Return (CPU share, readings, journal entries, bytes written) for the full path."""
    with tempfile.TemporaryDirectory() as tmp:
        now = [START.timestamp() + interval]
        ledger = Ledger(Path(tmp) / "bench.sqlite3")
        community = Community(
            ledger, load_preset("shanghai_yearly_tou"), PolicyConfig(), clock=lambda: now[0]
        )
        community.load()
        ids = [f"{i:012d}" for i in range(meters)]
        for meter_id in ids:
            info = community.assign_meter(meter_id, f"hh-{meter_id}", f"Household {meter_id}")
            community.apply_assignment(meter_id, info)
            community.apply_top_up(
                community.top_up(
                    f"hh-{meter_id}",
                    Decimal(10_000),
                    f"tx-{meter_id}",
                    "app",
                    actor=Actor("operator", name="bench"),
                )
            )
        base = int(START.timestamp())
        energy = [Decimal(1000)] * meters
        seq = [0] * meters
        per_second = meters // interval
        readings = 0
        written = _written_bytes()
        started = time.process_time()
        for second in range(seconds):
            now[0] = base + second + interval
            for k in range(per_second):
                i = (second * per_second + k) % meters
                seq[i] += 1
                energy[i] += Decimal("0.003")
                community.handle_reading(Reading(ids[i], seq[i], base + second, energy[i]))
                readings += 1
            if (second + 1) % commit_every == 0:
                community.apply_results(community.commit(community.take_batch()))
        community.apply_results(community.commit(community.take_batch()))
        cpu = time.process_time() - started
        written = _written_bytes() - written
        charges = (
            len([e for e in ledger.entries(f"hh-{ids[0]}", limit=1_000_000) if e.kind == "charge"])
            * meters
        )
        problems = ledger.check_invariant()
        ledger.close()
        if problems:
            raise SystemExit(f"ledger invariant broken: {problems[:3]}")
        return cpu / seconds, readings, charges, written


def main() -> None:
    """Run both benchmarks and print the figures."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--readings", type=int, default=300_000)
    parser.add_argument("--meters", type=int, default=5000)
    parser.add_argument("--interval", type=int, default=10)
    parser.add_argument("--seconds", type=int, default=600)
    parser.add_argument("--commit-every", type=int, default=60)
    args = parser.parse_args()

    rate = bench_pricing(args.readings)
    print(f"pricing: {rate:,.0f} readings/s on one core (target >= 50,000)")
    share, readings, charges, written = bench_community(
        args.meters, args.seconds, args.interval, args.commit_every
    )
    print(
        f"community: {args.meters} meters every {args.interval} s, {readings} readings over "
        f"{args.seconds} simulated s, a commit every {args.commit_every} s: {share:.1%} of one "
        f"core (target < 10%); ~{charges / args.seconds:.0f} charge entries/s, "
        f"{written / args.seconds / 1e6:.2f} MB/s written"
    )


if __name__ == "__main__":
    main()
