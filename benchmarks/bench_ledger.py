"""Benchmark the ledger at the load of a large community: 5,000 meters each reporting every 10 s.

Each simulated second commits one batch: 500 charges, 500 meter cursors and about 500 usage
deltas, on a real file (WAL, synchronous=FULL) in a temporary directory. The figure that matters
is the CPU time spent per simulated second: the share of one core the ledger needs at that load.

    .venv/bin/python -m benchmarks.bench_ledger --seconds 120

With `--restart-days D` it measures a restart instead: a ledger holding D days of history
(`--per-day` charges per meter per day, 1440 as the community writes them: one a minute) is
generated directly in the file, then a `Community` is loaded from it twice, at noon of the
last day; the first load includes any one-time work (building the days of use from the journal
after the upgrade), the second is an ordinary restart.

    .venv/bin/python -m benchmarks.bench_ledger --meters 5000 --restart-days 30 --per-day 24
"""

from __future__ import annotations

import argparse
from datetime import UTC, date, datetime
from decimal import Decimal
import json
from pathlib import Path
import sqlite3
import tempfile
import time
from zoneinfo import ZoneInfo

from custom_components.prepaid_meter.engine.ledger import (
    Cursor,
    EntryKind,
    Ledger,
    Posting,
    SubAccount,
    UsageDelta,
)

PRICE = Decimal("0.5283")
START = 1_767_225_600  # 2026-01-01 00:00 UTC
CYCLE = "2026-01"


def _written_bytes() -> int | None:
    """Return the bytes this process has caused to be written to storage (Linux), or None."""
    try:
        lines = Path("/proc/self/io").read_text().splitlines()
    except OSError:
        return None
    for line in lines:
        name, _, value = line.partition(":")
        if name == "write_bytes":
            return int(value)
    return None


def main() -> None:
    """Run the benchmark and print its figures."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--meters", type=int, default=5000, help="meters (one per household)")
    parser.add_argument("--interval", type=int, default=10, help="seconds between readings")
    parser.add_argument("--seconds", type=int, default=60, help="simulated seconds of load")
    parser.add_argument("--dir", type=Path, default=None, help="directory for the ledger file")
    parser.add_argument(
        "--keys",
        choices=["meter", "time"],
        default="meter",
        help="charge keys charge:{meter}:{seq} (as the community writes them) or "
        "charge:{ts}:{meter} (time-ordered: the key index grows at one end)",
    )
    parser.add_argument(
        "--charge-every",
        type=int,
        default=1,
        help="write a meter's charge only every Nth reading, for the sum since its last one "
        "(1 = a charge per reading, as the community writes them)",
    )
    parser.add_argument(
        "--report-every", type=int, default=0, help="print the CPU share every N simulated seconds"
    )
    parser.add_argument(
        "--restart-days",
        type=int,
        default=0,
        help="measure a restart with this many days of history instead (see above)",
    )
    parser.add_argument(
        "--per-day",
        type=int,
        default=1440,
        help="with --restart-days: charge entries per meter per day (1440: one a minute)",
    )
    args = parser.parse_args()
    if args.restart_days:
        restart(args.meters, args.restart_days, args.per_day, args.dir)
        return
    meters: int = args.meters
    interval: int = args.interval
    per_second = meters // interval

    with tempfile.TemporaryDirectory(dir=args.dir) as tmp:
        path = Path(tmp) / "community.sqlite"
        ledger = Ledger(path)
        # Charges are summed per local day too, as the community's ledger does.
        ledger.set_day_zone(ZoneInfo("Asia/Shanghai"), date(2025, 12, 1))
        setup = time.perf_counter()
        for n in range(meters):
            account = f"A{n:05d}"
            ledger.ensure_household(account, f"Building {n // 100} flat {n % 100}", START)
            ledger.assign_meter(f"M{n:05d}", account)
            ledger.post(
                Posting(
                    f"topup:{account}",
                    account,
                    SubAccount.ELECTRICITY,
                    EntryKind.TOP_UP,
                    Decimal("200"),
                    START,
                    {"channel": "wechat"},
                )
            )
        setup = time.perf_counter() - setup

        energy = [Decimal("1000.000")] * meters
        unbilled = [Decimal(0)] * meters
        unbilled_kwh = [Decimal(0)] * meters
        written_before = _written_bytes()
        cpu = 0.0
        wall = 0.0
        worst = 0.0
        window = 0.0
        window_written = written_before
        postings_written = 0
        for second in range(args.seconds):
            ts = START + 60 + second
            postings: list[Posting] = []
            cursors: list[Cursor] = []
            usage: list[UsageDelta] = []
            for i in range(per_second):
                n = (second * per_second + i) % meters
                seq = (second * per_second + i) // meters + 1
                kwh = Decimal("0.003") + Decimal(n % 7) / 1000
                energy[n] += kwh
                amount = kwh * PRICE
                account = f"A{n:05d}"
                meter = f"M{n:05d}"
                unbilled[n] += amount
                unbilled_kwh[n] += kwh
                if seq % args.charge_every == 0:
                    # The community's keys are charge:{meter}:{seq}; "time" puts the reading's
                    # time first, so that the unique key index grows at one end.
                    key = (
                        f"charge:{meter}:{seq}" if args.keys == "meter" else f"charge:{ts}:{meter}"
                    )
                    postings.append(
                        Posting(
                            key,
                            account,
                            SubAccount.ELECTRICITY,
                            EntryKind.CHARGE,
                            -unbilled[n],
                            ts,
                            {"meter_id": meter, "last_seq": seq, "kwh": str(unbilled_kwh[n])},
                        )
                    )
                    unbilled[n] = Decimal(0)
                    unbilled_kwh[n] = Decimal(0)
                cursors.append(Cursor(meter, seq, ts, energy[n]))
                usage.append(UsageDelta(account, CYCLE, 1, "flat", kwh, amount))
            # The batch is built by the caller (billing) in production; time only the ledger.
            c0 = time.process_time()
            w0 = time.perf_counter()
            results = ledger.commit_batch(postings, cursors, usage)
            took = time.process_time() - c0
            wall += time.perf_counter() - w0
            cpu += took
            window += took
            worst = max(worst, took)
            postings_written += sum(not r.duplicate for r in results)
            if args.report_every and (second + 1) % args.report_every == 0:
                journal = meters + postings_written
                now_written = _written_bytes()
                io = ""
                if now_written is not None and window_written is not None:
                    rate = (now_written - window_written) / args.report_every
                    io = f", writes {rate / 1e6:.2f} MB/s"
                print(
                    f"  seconds {second + 2 - args.report_every}-{second + 1}: CPU share "
                    f"{window / args.report_every:.1%}{io}, journal {journal} entries",
                    flush=True,
                )
                window = 0.0
                window_written = now_written

        written_after = _written_bytes()
        check = time.perf_counter()
        problems = ledger.check_invariant()
        check = time.perf_counter() - check
        entries = postings_written + meters
        entries_per_second = postings_written / args.seconds
        ledger.close()
        size = sum(f.stat().st_size for f in Path(tmp).iterdir())

    share = cpu / args.seconds
    print(f"meters {meters}, one reading each per {interval} s -> {per_second} readings/s")
    if args.charge_every > 1:
        print(f"one charge entry per {args.charge_every} readings of a meter")
    print(
        f"simulated seconds {args.seconds}, batches {args.seconds}, "
        f"charges written {postings_written}"
    )
    print(f"setup ({meters} households + meters + top-ups, one commit each): {setup:.2f} s wall")
    print(
        f"commit_batch CPU total {cpu:.3f} s, mean {cpu / args.seconds * 1000:.2f} ms, "
        f"worst {worst * 1000:.2f} ms; wall mean {wall / args.seconds * 1000:.2f} ms"
    )
    print(
        f"CPU share of one core at {meters:,} meters / {interval} s: {share:.1%} (target under 10%)"
    )
    print(
        f"file size {size / 1e6:.1f} MB for {entries} entries "
        f"({size / max(entries, 1):.0f} bytes per entry incl. WAL and indexes)"
    )
    if written_before is not None and written_after is not None:
        rate = (written_after - written_before) / args.seconds
        print(
            f"storage writes during the load: {rate / 1e6:.2f} MB per simulated second "
            f"({rate * 86400 / 1e9:.0f} GB per day: WAL frames plus checkpoints)"
        )
    growth = size / entries * entries_per_second * 86400
    print(f"file growth per day at this load: {growth / 1e9:.2f} GB")
    print(f"check_invariant over {entries} entries: {check:.2f} s, {len(problems)} mismatches")


# 2026-01-01 00:00 in Shanghai (the flat preset's zone): the month the restart history fills.
_MONTH_START = int(datetime(2025, 12, 31, 16, 0, tzinfo=UTC).timestamp())
_UNIT = 10_000_000  # money in the generated journal: integer units of 1e-7


def _units(value: int) -> str:
    """Return integer 1e-7 units as the ledger's decimal text."""
    return str(Decimal(value).scaleb(-7).normalize()) if value else "0"


def _generate(path: Path, meters: int, days: int, per_day: int) -> int:
    """Write `days` days of charges for `meters` meters straight into the ledger file.

    Rows as `Community.commit` writes them (key, meta with kwh, running balance after), in
    time order, through one raw connection: far quicker than committing batches. Return the
    number of charge entries.
    """
    ledger = Ledger(path)  # the schema of the code under test
    for n in range(meters):
        account = f"A{n:05d}"
        ledger.ensure_household(account, f"Building {n // 100} flat {n % 100}", _MONTH_START)
        ledger.assign_meter(f"M{n:05d}", account)
    ledger.close()
    step = 86_400 // per_day
    kwh = Decimal("0.005") * 1440 / per_day
    charge = int(kwh * PRICE * _UNIT)  # exact: kwh x price has at most 7 places here
    kwh_text = str(kwh)
    top_up = 1000 * _UNIT
    conn = sqlite3.connect(path, autocommit=True)
    conn.execute("PRAGMA synchronous=OFF")
    conn.execute("BEGIN")
    next_id = int(conn.execute("SELECT coalesce(max(id), 0) FROM journal").fetchone()[0])
    rows: list[tuple[object, ...]] = []
    for n in range(meters):
        next_id += 1
        rows.append(
            (next_id, f"topup:A{n:05d}", _MONTH_START, f"A{n:05d}", "electricity", "top_up",
             _units(top_up), "{}", _units(top_up))
        )  # fmt: skip
    conn.executemany(_SQL_INSERT, rows)
    count = 0
    for i in range(1, days * per_day + 1):
        ts = _MONTH_START + i * step
        balance = top_up - i * charge
        after = _units(balance)
        amount = _units(-charge)
        rows = []
        for n in range(meters):
            next_id += 1
            meter = f"M{n:05d}"
            register = kwh * i
            meta = json.dumps(
                {"first_seq": i, "kwh": kwh_text, "last_seq": i, "meter_id": meter},
                separators=(",", ":"),
            )
            rows.append(
                (next_id, f"charge:{meter}:{ts}:{register}", ts, f"A{n:05d}", "electricity",
                 "charge", amount, meta, after)
            )  # fmt: skip
        conn.executemany(_SQL_INSERT, rows)
        count += len(rows)
        if i % per_day == 0:
            conn.execute("COMMIT")
            conn.execute("BEGIN")
    final = _units(top_up - days * per_day * charge)
    conn.executemany(
        "UPDATE balances SET balance = ? WHERE account_id = ? AND sub = 'electricity'",
        [(final, f"A{n:05d}") for n in range(meters)],
    )
    last_ts = _MONTH_START + days * per_day * step
    conn.executemany(
        "UPDATE meters SET last_seq = ?, last_ts = ?, last_energy = ? WHERE meter_id = ?",
        [(days * per_day, last_ts, str(kwh * days * per_day), f"M{n:05d}") for n in range(meters)],
    )
    conn.execute("COMMIT")
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    conn.close()
    return count


_SQL_INSERT = (
    "INSERT INTO journal (id, key, ts, account_id, sub, kind, amount, meta, balance_after) "
    "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)"
)


def restart(meters: int, days: int, per_day: int, directory: Path | None) -> None:
    """Generate the history, then time two loads of the community from it."""
    # Imported here: the ledger benchmark above needs nothing but the ledger.
    from custom_components.prepaid_meter.engine.community import Community  # noqa: PLC0415
    from custom_components.prepaid_meter.engine.policy import PolicyConfig  # noqa: PLC0415
    from custom_components.prepaid_meter.engine.tariff import load_preset  # noqa: PLC0415

    now = _MONTH_START + (days - 1) * 86_400 + 12 * 3600  # noon of the last day
    with tempfile.TemporaryDirectory(dir=directory) as tmp:
        path = Path(tmp) / "community.sqlite"
        t0 = time.perf_counter()
        charges = _generate(path, meters, days, per_day)
        generated = time.perf_counter() - t0
        size = sum(f.stat().st_size for f in Path(tmp).iterdir())
        print(
            f"history: {meters} meters x {days} days x {per_day} charges a day = "
            f"{charges:,} charge entries, {size / 1e9:.2f} GB, generated in {generated:.0f} s"
        )
        tariff = load_preset("flat")
        for attempt in ("first load (after the upgrade)", "second load (a restart)"):
            t0 = time.perf_counter()
            ledger = Ledger(path)
            community = Community(ledger, tariff, PolicyConfig.from_options({}), clock=lambda: now)
            community.load()
            took = time.perf_counter() - t0
            meter = community.meters["M00000"]
            month = community.use_this_month(meter)
            print(
                f"{attempt}: {took:.2f} s (open + Community.load); M00000 this month "
                f"{month.kwh if month else None} kWh, {month.cost if month else None}, "
                f"days left {community.days_left(meter)}",
                flush=True,
            )
            ledger.close()


if __name__ == "__main__":
    main()
