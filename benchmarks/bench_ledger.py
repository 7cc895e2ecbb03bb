"""Benchmark the ledger at the load of a large community: 5,000 meters each reporting every 10 s.

Each simulated second commits one batch: 500 charges, 500 meter cursors and about 500 usage
deltas, on a real file (WAL, synchronous=FULL) in a temporary directory. The figure that matters
is the CPU time spent per simulated second: the share of one core the ledger needs at that load.

    .venv/bin/python -m benchmarks.bench_ledger --seconds 120
"""

from __future__ import annotations

import argparse
from decimal import Decimal
from pathlib import Path
import tempfile
import time

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
    args = parser.parse_args()
    meters: int = args.meters
    interval: int = args.interval
    per_second = meters // interval

    with tempfile.TemporaryDirectory(dir=args.dir) as tmp:
        path = Path(tmp) / "community.sqlite"
        ledger = Ledger(path)
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
                            {"meter": meter, "seq": seq},
                        )
                    )
                    unbilled[n] = Decimal(0)
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


if __name__ == "__main__":
    main()
