"""`python -m custom_components.prepaid_meter.engine bill ...`: recompute a bill from readings.

For operators settling a dispute: every yuan of the result is explained by its lines.
"""

from __future__ import annotations

import argparse
import csv
from datetime import UTC, date, datetime
from decimal import Decimal, InvalidOperation
import json
from pathlib import Path
import sys

from .billing import BillingError, bill_readings
from .tariff import TariffError, load_tariff


class InputError(ValueError):
    """A readings file that cannot be used."""


def read_readings(path: Path) -> list[tuple[datetime, Decimal]]:
    """Read `ts,energy_kwh` rows; ts is ISO 8601 with an offset or UNIX seconds."""
    try:
        handle = path.open(newline="", encoding="utf-8")
    except OSError as err:
        raise InputError(f"{path}: cannot read the readings file ({err.strerror})") from err
    rows: list[tuple[datetime, Decimal]] = []
    with handle:
        reader = csv.reader(handle)
        header = [h.strip() for h in next(reader, [])]
        if header != ["ts", "energy_kwh"]:
            raise InputError(
                f"{path}: the header must be 'ts,energy_kwh', got {','.join(header)!r}"
            )
        for number, row in enumerate(reader, start=2):
            if not row or not "".join(row).strip():
                continue
            if len(row) != 2:
                raise InputError(f"{path}:{number}: expected 2 columns, got {len(row)}")
            rows.append(
                (
                    _parse_ts(row[0].strip(), f"{path}:{number}"),
                    _parse_kwh(row[1], f"{path}:{number}"),
                )
            )
    if len(rows) < 2:
        raise InputError(f"{path}: at least two readings are needed (a baseline and one more)")
    return rows


def _parse_ts(text: str, where: str) -> datetime:
    try:
        return datetime.fromtimestamp(float(Decimal(text)), UTC)
    except (InvalidOperation, ValueError, OverflowError):
        pass
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise InputError(f"{where}: {text!r} is neither ISO 8601 nor UNIX seconds") from None
    if moment.tzinfo is None:
        raise InputError(f"{where}: {text!r} has no UTC offset (e.g. +08:00)")
    return moment


def _parse_kwh(text: str, where: str) -> Decimal:
    try:
        value = Decimal(text.strip())
    except InvalidOperation:
        raise InputError(f"{where}: energy_kwh {text.strip()!r} is not a decimal number") from None
    if not value.is_finite() or value < 0:
        raise InputError(f"{where}: energy_kwh {text.strip()!r} is not a register value")
    return value


def main(argv: list[str] | None = None) -> int:
    """Run the command line; return the exit code."""
    parser = argparse.ArgumentParser(prog="python -m custom_components.prepaid_meter.engine")
    commands = parser.add_subparsers(dest="command", required=True)
    bill = commands.add_parser("bill", help="recompute a bill from raw readings")
    bill.add_argument("--tariff", required=True, type=Path, help="tariff YAML file")
    bill.add_argument("--readings", required=True, type=Path, help="CSV with ts,energy_kwh")
    bill.add_argument("--opened", help="account opening date YYYY-MM-DD (prorates tiers)")
    args = parser.parse_args(argv)

    try:
        opened = date.fromisoformat(args.opened) if args.opened else None
    except ValueError:
        print(f"error: --opened {args.opened!r} is not a date YYYY-MM-DD", file=sys.stderr)
        return 2
    try:
        tariff = load_tariff(args.tariff)
        readings = read_readings(args.readings)
        result = bill_readings(tariff, readings, opened)
    except (TariffError, InputError, BillingError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    json.dump(result.to_json(), sys.stdout, indent=2, ensure_ascii=False)
    sys.stdout.write("\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
