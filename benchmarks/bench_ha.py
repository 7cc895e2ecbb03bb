"""Benchmark: the integration inside a real Home Assistant, with mosquitto and the simulator.

    .venv/bin/python benchmarks/bench_ha.py                       # 1,000 and 5,000 meters
    .venv/bin/python benchmarks/bench_ha.py --meters 5000 --recorder
    .venv/bin/python benchmarks/bench_ha.py --meters 1000 --warmup 60 --window 60 --cuts 100

For each meter count it writes a Home Assistant config folder in a temporary directory with
`demo.config.prepare` (the demo's setup: owner user, token, one prepaid_meter entry, every
meter assigned to a household with credit so billing runs), starts its own mosquitto
(tests/broker.py), `python -m homeassistant` on a free port and `python -m simulator` (real
time: `--speed 1`, a reading per meter every `--interval` 10 s), and measures:

(a) CPU: the hass process's user + system time from /proc/<pid>/stat over `--window` seconds
    after `--warmup` seconds (the first readings discover every meter and create its entities),
    as a share of one core (target: under 25 % at 5,000 meters).

(b) Cut latency: `--cuts` households get a tiny opening balance, sized with the simulator's own
    deterministic load model and the tariff so that each runs out at a different moment inside
    the measured window (emergency credit 0, no friendly hours: the credit rule alone decides).
    A separate aiomqtt client here subscribes to `prepaid/demo/+/telemetry` and
    `prepaid/demo/+/cmd` and replays the integration's billing (`engine.billing.bill_interval`
    from each household's exact opening balance) on the telemetry as it arrives, to find the
    reading that takes the balance below 0; the latency is the time from that telemetry
    message to the `{"op": "relay", "state": "off"}` command, both as this client receives
    them from the broker. Target: p99 under 1 s. When Home Assistant falls behind the
    readings, this latency shows how far behind it is.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import ROUND_CEILING, Decimal
import json
import os
from pathlib import Path
import shutil
import statistics
import sys
import tempfile
import time
from typing import Any
import urllib.error

import aiomqtt
from homeassistant.const import __version__ as HA_VERSION

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from custom_components.prepaid_meter.engine.actor import Actor  # noqa: E402
from custom_components.prepaid_meter.engine.billing import (  # noqa: E402
    BillingState,
    bill_interval,
)
from custom_components.prepaid_meter.engine.community import Community  # noqa: E402
from custom_components.prepaid_meter.engine.ledger import EntryKind, Ledger, SubAccount  # noqa: E402
from custom_components.prepaid_meter.engine.policy import PolicyConfig  # noqa: E402
from custom_components.prepaid_meter.engine.tariff import Tariff, load_preset  # noqa: E402
from demo.config import TARIFF, DemoSettings, Prepared, ledger_file, prepare  # noqa: E402
from demo.processes import (  # noqa: E402
    Child,
    api_get,
    free_port,
    start_hass,
    start_simulator,
    wait_for_hass,
)
from simulator import SimConfig, build_meters  # noqa: E402
from tests.broker import Mosquitto  # noqa: E402

COMMUNITY = "demo"
PREFIX = "prepaid"
SEED = 11
PLENTY = Decimal(5_000)
CENT = Decimal("0.01")
FINE = Decimal("0.0001")
J_PER_KWH = Decimal(3_600_000)
#: No friendly hours (start == end is an empty window, weekends not friendly), no emergency
#: credit: a household is cut by the first reading that takes its balance below 0.
OPTIONS: dict[str, Any] = {
    "warn_level_1": "20",
    "warn_level_2": "5",
    "emergency_credit": "0",
    "friendly_start": "00:00:00",
    "friendly_end": "00:00:00",
    "friendly_weekends": False,
}


def cpu_seconds(pid: int) -> float:
    """Return user + system CPU seconds a process has used so far (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def percentile(values: list[float], pct: float) -> float:
    """Return the nearest-rank percentile of `values` (not empty)."""
    ordered = sorted(values)
    rank = max(1, min(len(ordered), int(-(-pct * len(ordered) // 100))))
    return ordered[rank - 1]


def cut_budgets(
    meters: int, cuts: int, start: int, warmup: float, window: float, interval: float
) -> tuple[dict[str, Decimal], dict[str, float]]:
    """Return opening balances that run out inside the window, and each one's target offset.

    The simulator's load model is deterministic: `Household.energy_j(t0, t1)` is what the
    meter will register, so pricing it with the tariff from the simulated start to a target
    moment gives the credit that lasts until then (rounded up to a cent, at least 0.01).
    """
    tariff = load_preset(TARIFF)
    opened = datetime.fromtimestamp(start - 60, tariff.tz).date()
    planned = build_meters(SimConfig(community=COMMUNITY, meters=meters, seed=SEED))
    step = max(1, meters // cuts)
    chosen = [planned[i * step] for i in range(min(cuts, meters))]
    budgets: dict[str, Decimal] = {}
    targets: dict[str, float] = {}
    # Cuts spread over the window's middle 80 %, from `interval` after the warm-up.
    first, span = warmup + interval, max(window * 0.8 - interval, interval)
    for k, meter in enumerate(chosen):
        offset = first + span * (k + 0.5) / len(chosen)
        t1 = start + int(offset)
        joules = meter.household.energy_j(start, t1)
        kwh = Decimal(joules) / J_PER_KWH
        cost = Decimal(0)
        if kwh > 0:
            state = BillingState(opened=opened)
            pieces = bill_interval(
                tariff,
                state,
                datetime.fromtimestamp(start, UTC),
                datetime.fromtimestamp(t1, UTC),
                kwh,
            )
            cost = sum((p.amount for p in pieces), Decimal(0))
        budgets[meter.meter_id] = max(FINE, cost.quantize(FINE, rounding=ROUND_CEILING))
        targets[meter.meter_id] = offset
    return budgets, targets


def set_budgets(settings: DemoSettings, prepared: Prepared, budgets: dict[str, Decimal]) -> None:
    """Bring each cut household's balance to its budget (4 decimals) with an adjustment.

    A top-up has whole cents (the demo setup made it: the budget rounded up to a cent); the
    adjustment takes off the rest, so a household runs out within a reading of its target.
    """
    tariff = load_preset(TARIFF)
    policy = PolicyConfig.from_options({"timezone": str(tariff.tz), **settings.options})
    ledger = Ledger(ledger_file(settings.config_dir, settings.community))
    try:
        community = Community(ledger, tariff, policy, clock=lambda: float(settings.start - 60))
        for meter in prepared.meters:
            budget = budgets.get(meter.meter_id)
            if budget is None or budget == meter.top_up:
                continue
            community.post_money(
                meter.account_id,
                SubAccount.ELECTRICITY,
                EntryKind.ADJUSTMENT,
                budget - meter.top_up,
                f"bench-budget-{meter.account_id}",
                actor=Actor("operator", name="bench"),
            )
    finally:
        ledger.close()


@dataclass
class Account:
    """A cut household as the watcher replays its billing, reading by reading."""

    budget: Decimal
    state: BillingState
    prev: tuple[int, Decimal] | None = None
    spent: Decimal = Decimal(0)
    #: When this client received the telemetry that took the balance below 0.
    exhausted_at: float | None = None
    cmd_at: float | None = None


@dataclass
class Watcher:
    """Receives telemetry and commands; finds each cut household's exhausting reading.

    The exhausting reading is found by replaying the integration's own billing
    (`engine.billing.bill_interval`, the household's opening balance, emergency credit 0) on
    the telemetry as it arrives, so the latency stays right even when Home Assistant lags
    by more than a reading interval.
    """

    accounts: dict[str, Account]
    tariff: Tariff
    telemetry: int = 0
    other_cuts: int = 0
    early_cuts: int = 0
    all_cut: asyncio.Event = field(default_factory=asyncio.Event)

    def on_telemetry(self, account: Account, payload: bytes, now: float) -> None:
        """Bill one reading of a watched meter; note the moment its credit runs out."""
        try:
            body = json.loads(payload)
            ts, energy = int(body["ts"]), Decimal(str(body["energy_kwh"]))
        except (ValueError, TypeError, KeyError, ArithmeticError):
            return
        prev = account.prev
        if prev is not None and (ts <= prev[0] or energy < prev[1]):
            return
        account.prev = (ts, energy)
        if prev is None:
            return  # the baseline
        pieces = bill_interval(
            self.tariff,
            account.state,
            datetime.fromtimestamp(prev[0], UTC),
            datetime.fromtimestamp(ts, UTC),
            energy - prev[1],
        )
        account.spent += sum((p.amount for p in pieces), Decimal(0))
        if account.budget - account.spent < 0:
            account.exhausted_at = now

    async def run(self, broker: Mosquitto, ready: asyncio.Event) -> None:
        """Subscribe and watch until cancelled."""
        async with aiomqtt.Client(
            broker.host, broker.port, max_queued_incoming_messages=0
        ) as client:
            await client.subscribe(f"{PREFIX}/{COMMUNITY}/+/telemetry", qos=0)
            await client.subscribe(f"{PREFIX}/{COMMUNITY}/+/cmd", qos=0)
            ready.set()
            async for message in client.messages:
                now = time.monotonic()
                parts = message.topic.value.split("/")
                meter_id, channel = parts[2], parts[3]
                account = self.accounts.get(meter_id)
                if channel == "telemetry":
                    self.telemetry += 1
                    if account is not None and account.exhausted_at is None:
                        self.on_telemetry(account, bytes(message.payload), now)
                    continue
                try:
                    body = json.loads(message.payload)
                except (ValueError, TypeError):
                    continue
                if body.get("op") != "relay" or body.get("state") != "off":
                    continue
                if account is None:
                    self.other_cuts += 1
                elif account.cmd_at is None:
                    account.cmd_at = now
                    if account.exhausted_at is None:
                        self.early_cuts += 1
                    if all(a.cmd_at is not None for a in self.accounts.values()):
                        self.all_cut.set()


async def measure(
    meters: int,
    *,
    interval: float,
    warmup: float,
    window: float,
    cuts: int,
    recorder: bool,
    recorder_exclude: tuple[str, ...],
    drain: float,
    tmp: Path,
    gc_probe: bool = False,
) -> dict[str, Any]:
    """Run one case; return its figures."""
    broker = Mosquitto(tmp / "broker", persistence=False)
    broker.start()
    children: list[Child] = []
    watcher_task: asyncio.Task[None] | None = None
    try:
        start = int(time.time())
        budgets, targets = cut_budgets(meters, cuts, start, warmup, window, interval)
        top_ups = {m: b.quantize(CENT, rounding=ROUND_CEILING) for m, b in budgets.items()}
        settings = DemoSettings(
            config_dir=tmp / "config",
            http_port=free_port(),
            broker_host=broker.host,
            broker_port=broker.port,
            community=COMMUNITY,
            prefix=PREFIX,
            meters=meters,
            seed=SEED,
            scenarios=(),
            start=start,
            options=OPTIONS,
            top_ups={
                m.meter_id: top_ups.get(m.meter_id, PLENTY)
                for m in build_meters(SimConfig(community=COMMUNITY, meters=meters, seed=SEED))
            },
            minimal=True,
            recorder=recorder,
            recorder_exclude=recorder_exclude,
        )
        began = time.monotonic()
        prepared = await asyncio.to_thread(prepare, settings)
        await asyncio.to_thread(set_budgets, settings, prepared, budgets)
        setup_s = time.monotonic() - began
        gc_log = tmp / "gc.log"
        if gc_probe:  # the hass child inherits these (demo.config.environment)
            os.environ["PYTHONPATH"] = os.pathsep.join(
                filter(None, [str(ROOT / "benchmarks" / "gc_probe"), os.environ.get("PYTHONPATH")])
            )
            os.environ["PREPAID_BENCH_GC_LOG"] = str(gc_log)
        hass = start_hass(settings.config_dir, tmp / "hass.log")
        children.append(hass)
        hass_ready_s = await asyncio.to_thread(
            wait_for_hass, hass, prepared.url, prepared.token, 300.0
        )
        tariff = load_preset(TARIFF)
        opened = datetime.fromtimestamp(start - 60, tariff.tz).date()
        watcher = Watcher(
            {m: Account(b, BillingState(opened=opened)) for m, b in budgets.items()}, tariff
        )
        ready = asyncio.Event()
        watcher_task = asyncio.create_task(watcher.run(broker, ready))
        await asyncio.wait_for(ready.wait(), 10)
        sim_args = [*settings.simulator_args(speed=1.0, interval=interval), "--quiet"]
        sim = start_simulator(sim_args, tmp / "simulator.log")
        children.append(sim)
        sim_started = time.monotonic()

        await asyncio.sleep(warmup)
        if not sim.running() or watcher.telemetry == 0:
            raise RuntimeError(f"the simulator is not sending readings:\n{sim.tail()}")

        t0, m0 = time.monotonic(), watcher.telemetry
        h0, s0, b0 = cpu_seconds(hass.pid), cpu_seconds(sim.pid), _broker_cpu(broker)
        await asyncio.sleep(window)
        t1, m1 = time.monotonic(), watcher.telemetry
        h1, s1, b1 = cpu_seconds(hass.pid), cpu_seconds(sim.pid), _broker_cpu(broker)
        elapsed = t1 - t0
        rss_mb, peak_mb = memory_mb(hass.pid)
        pauses = gc_pauses(gc_log, t0, t1) if gc_probe else None

        # Give the last planned cuts time to happen (a reading or two after the window).
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(watcher.all_cut.wait(), drain)
        # Counted after the measurement: serialising every state stalls Home Assistant.
        states = await asyncio.to_thread(api_get, prepared.url, prepared.token, "/api/states", 60)
        entities = len(states)
        del states
        done = {
            m: (a.exhausted_at, a.cmd_at)
            for m, a in watcher.accounts.items()
            if a.exhausted_at is not None and a.cmd_at is not None
        }
        latencies = [cmd - tele for tele, cmd in done.values()]
        in_window = [cmd - tele for tele, cmd in done.values() if t0 <= tele <= t1]
        offsets = [tele - sim_started - targets[m] for m, (tele, _cmd) in done.items()]
        exhausted = sum(1 for a in watcher.accounts.values() if a.exhausted_at is not None)
        error_lines = [
            line
            for line in (tmp / "hass.log").read_text(errors="replace").splitlines()
            if " ERROR " in line
        ]
        errors = len(error_lines)
        our_errors = sum(1 for line in error_lines if "prepaid_meter" in line)
        return {
            "meters": meters,
            "interval": interval,
            "recorder": recorder,
            "recorder_exclude": recorder_exclude,
            "setup_s": setup_s,
            "hass_ready_s": hass_ready_s,
            "entities": entities,
            "window_s": elapsed,
            "telemetry_per_s": (m1 - m0) / elapsed,
            "hass_cpu_pct": 100 * (h1 - h0) / elapsed,
            "sim_cpu_pct": 100 * (s1 - s0) / elapsed,
            "broker_cpu_pct": 100 * (b1 - b0) / elapsed,
            "cuts_planned": len(top_ups),
            "exhausted": exhausted,
            "early_cuts": watcher.early_cuts,
            "latencies": latencies,
            "latencies_in_window": in_window,
            "cut_vs_plan_s": offsets,
            "other_cuts": watcher.other_cuts,
            "hass_errors": errors,
            "our_errors": our_errors,
            "sim_args": sim_args,
            "rss_mb": rss_mb,
            "peak_rss_mb": peak_mb,
            "gc_pauses": pauses,
        }
    finally:
        for child in reversed(children):
            await asyncio.to_thread(child.stop, 60)
        if watcher_task is not None:
            watcher_task.cancel()
            with contextlib.suppress(asyncio.CancelledError, aiomqtt.MqttError):
                await watcher_task
        await asyncio.sleep(0.1)
        broker.stop()


def memory_mb(pid: int) -> tuple[float, float]:
    """Return a process's resident memory now and at its peak (VmRSS, VmHWM), in MB."""
    fields = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        name, _, value = line.partition(":")
        if name in ("VmRSS", "VmHWM"):
            fields[name] = int(value.split()[0]) / 1024  # kB
    return fields.get("VmRSS", 0.0), fields.get("VmHWM", 0.0)


def gc_pauses(log: Path, t0: float, t1: float) -> list[float]:
    """Return the full collections' durations (s) that started inside [t0, t1]."""
    if not log.exists():
        return []
    found = []
    for line in log.read_text().splitlines():
        began, seconds = (float(x) for x in line.split())
        if t0 <= began <= t1:
            found.append(seconds)
    return found


def _broker_cpu(broker: Mosquitto) -> float:
    proc = broker._proc  # the benchmark reads the broker's CPU time
    return cpu_seconds(proc.pid) if proc is not None else 0.0


def report(result: dict[str, Any]) -> None:
    """Print one case's figures."""
    lat = result["latencies"]
    print(
        f"\n== {result['meters']} meters, a reading every {result['interval']:g} s "
        f"({'with' if result['recorder'] else 'without'} recorder"
        + (
            f", excluding {', '.join(result['recorder_exclude'])})"
            if result["recorder_exclude"]
            else ")"
        )
    )
    print(
        f"setup {result['setup_s']:.1f} s; Home Assistant loaded the entry in "
        f"{result['hass_ready_s']:.1f} s; {result['entities']} entities"
    )
    print(
        f"window {result['window_s']:.1f} s: telemetry {result['telemetry_per_s']:.1f} msg/s "
        f"through the broker"
    )
    print(
        f"(a) hass CPU {result['hass_cpu_pct']:.1f} % of one core "
        f"(simulator {result['sim_cpu_pct']:.1f} %, mosquitto {result['broker_cpu_pct']:.1f} %)"
    )
    if lat:
        print(
            f"(b) cut latency, exhausting telemetry -> relay off cmd: {len(lat)} cuts of "
            f"{result['exhausted']} households that ran out ({result['cuts_planned']} planned): "
            f"p50 {1000 * percentile(lat, 50):.0f} ms, "
            f"p99 {1000 * percentile(lat, 99):.0f} ms, max {1000 * max(lat):.0f} ms, "
            f"mean {1000 * statistics.fmean(lat):.0f} ms"
        )
        inside = result["latencies_in_window"]
        if inside:
            print(
                f"    inside the CPU window: {len(inside)} cuts, "
                f"p50 {1000 * percentile(inside, 50):.0f} ms, "
                f"p99 {1000 * percentile(inside, 99):.0f} ms"
            )
        off = result["cut_vs_plan_s"]
        print(
            f"    cut moment minus planned moment: median {statistics.median(off):+.0f} s "
            f"(range {min(off):+.0f} .. {max(off):+.0f} s)"
        )
    else:
        print(f"(b) no cut seen among {result['cuts_planned']} households")
    if result["early_cuts"]:
        print(f"    relay-off before the replayed billing ran out: {result['early_cuts']}")
    if result["other_cuts"]:
        print(f"    relay-off commands to households with plenty of credit: {result['other_cuts']}")
    print(
        f"hass memory: RSS {result['rss_mb']:.0f} MB at the end of the window "
        f"(peak {result['peak_rss_mb']:.0f} MB)"
    )
    pauses = result["gc_pauses"]
    if pauses is not None:
        if pauses:
            print(
                f"full collections in the window: {len(pauses)}, "
                f"median {1000 * statistics.median(pauses):.0f} ms, "
                f"max {1000 * max(pauses):.0f} ms"
            )
        else:
            print("full collections in the window: none")
    print(
        f"ERROR lines in the Home Assistant log: {result['hass_errors']} "
        f"({result['our_errors']} from prepaid_meter)"
    )
    print("simulator: python -m simulator " + " ".join(result["sim_args"]))


def main() -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument(
        "--meters", type=int, action="append", help="meter count (repeatable; default 1000, 5000)"
    )
    parser.add_argument("--interval", type=float, default=10.0, help="seconds between readings")
    parser.add_argument("--warmup", type=float, default=90.0, help="seconds before measuring")
    parser.add_argument("--window", type=float, default=60.0, help="seconds measured")
    parser.add_argument("--cuts", type=int, default=100, help="households with a tiny balance")
    parser.add_argument("--recorder", action="store_true", help="run Home Assistant's recorder")
    parser.add_argument(
        "--recorder-exclude",
        action="append",
        default=[],
        metavar="GLOB",
        help="an entity glob the recorder leaves out (repeatable; implies --recorder)",
    )
    parser.add_argument(
        "--drain", type=float, default=120.0, help="seconds to wait for late cuts after the window"
    )
    parser.add_argument("--keep", type=Path, default=None, help="keep the folders here")
    parser.add_argument(
        "--gc-probe", action="store_true", help="time Home Assistant's full garbage collections"
    )
    parser.add_argument(
        "--no-heap-freeze",
        action="store_true",
        help="make gc.freeze() a no-op in Home Assistant (implies --gc-probe)",
    )
    args = parser.parse_args()
    if args.no_heap_freeze:
        os.environ["PREPAID_BENCH_NO_FREEZE"] = "1"
    counts = args.meters or [1_000, 5_000]
    print("command: .venv/bin/python benchmarks/bench_ha.py " + " ".join(sys.argv[1:]))
    print(
        f"machine: {os.cpu_count()} CPUs, Python {sys.version.split()[0]}, "
        f"homeassistant=={HA_VERSION}"
    )
    status = 0
    for count in counts:
        with tempfile.TemporaryDirectory(prefix=f"bench_ha_{count}_") as tmp:
            folder = Path(tmp)
            if args.keep is not None:
                folder = args.keep / f"{count}"
                shutil.rmtree(folder, ignore_errors=True)  # nothing of an earlier run
                folder.mkdir(parents=True)
            try:
                result = asyncio.run(
                    measure(
                        count,
                        interval=args.interval,
                        warmup=args.warmup,
                        window=args.window,
                        cuts=min(args.cuts, count),
                        recorder=args.recorder or bool(args.recorder_exclude),
                        recorder_exclude=tuple(args.recorder_exclude),
                        drain=args.drain,
                        tmp=folder,
                        gc_probe=args.gc_probe or args.no_heap_freeze,
                    )
                )
            except (RuntimeError, urllib.error.URLError, OSError) as err:
                print(f"\n== {count} meters: failed: {err}")
                status = 1
                continue
            report(result)
    return status


if __name__ == "__main__":
    sys.exit(main())
