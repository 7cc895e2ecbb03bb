"""Tariff files: presets, versions, cycles, period windows, DST, their errors, the bill command."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from pathlib import Path
import subprocess
import sys
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from custom_components.prepaid_meter.engine.billing import BillingState, bill_interval
from custom_components.prepaid_meter.engine.tariff import (
    Tariff,
    TariffError,
    load_preset,
    load_tariff,
    parse_tariff,
    preset_names,
    to_us,
)

SHANGHAI = ZoneInfo("Asia/Shanghai")
BERLIN = ZoneInfo("Europe/Berlin")

GOOD = """
name: Test
currency: CNY
timezone: Asia/Shanghai
cycle: {period: year, starts: "01-01 00:00"}
periods:
  peak: ["06:00-22:00"]
  valley: ["22:00-06:00"]
tiers:
  - up_to: 3120
    price: {peak: "0.617", valley: "0.307"}
  - price: {peak: "0.977", valley: "0.487"}
"""

VERSIONED_YAML = """
name: Shared keys, two versions
currency: CNY
timezone: Asia/Shanghai
cycle: {period: month, starts: "15 08:00"}
periods:
  peak: "08:00-22:00"
  valley: "22:00-08:00"
versions:
  - effective_from: 2025-01-01
    tiers:
      - up_to: 100
        price: {peak: "0.5", valley: "0.3"}
      - price: {peak: "0.8", valley: "0.6"}
  - effective_from: "2026-03-01T00:00"
    name: From March 2026
    tiers:
      - up_to: 100
        price: {peak: "0.55", valley: "0.33"}
      - price: {peak: "0.88", valley: "0.66"}
"""


def _local(
    tz: ZoneInfo, year: int, month: int, day: int, hour: int = 0, minute: int = 0
) -> datetime:
    return datetime(year, month, day, hour, minute, tzinfo=tz)


def _flat(**changes: Any) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "name": "t",
        "currency": "CNY",
        "timezone": "Asia/Shanghai",
        "cycle": {"period": "month"},
        "tiers": [{"price": "1"}],
    }
    doc.update(changes)
    return doc


def _tou(periods: Any, **changes: Any) -> dict[str, Any]:
    names = list(periods) if isinstance(periods, dict) else []
    return _flat(periods=periods, tiers=[{"price": dict.fromkeys(names, "1")}], **changes)


def _by_period(
    tariff: Tariff, t0: datetime, t1: datetime, kwh: str, state: BillingState | None = None
) -> dict[str, Decimal]:
    totals: dict[str, Decimal] = {}
    for piece in bill_interval(tariff, state or BillingState(), t0, t1, Decimal(kwh)):
        totals[piece.period] = totals.get(piece.period, Decimal(0)) + piece.kwh
    return totals


# ---------------------------------------------------------------------------- presets, broken files


def test_presets_load_with_sources() -> None:
    """Every shipped preset is valid and names its published source."""
    assert set(preset_names()) >= {
        "beijing_monthly",
        "zhejiang_yearly_tou",
        "shanghai_yearly_tou",
        "flat",
    }
    for name in preset_names():
        tariff = load_preset(name)
        assert tariff.currency == "CNY"
        text = (
            Path(__file__).parents[2]
            / "custom_components/prepaid_meter/engine/presets"
            / f"{name}.yaml"
        ).read_text()
        assert "Source:" in text or "China Daily" in text


def test_unknown_preset() -> None:
    """An unknown preset id lists the known ones."""
    with pytest.raises(TariffError, match="unknown tariff preset 'nope'"):
        load_preset("nope")


BROKEN = [
    (GOOD.replace('"0.617"', '"-0.617"'), "cannot be negative"),
    (GOOD.replace('peak: "0.977"', 'noon: "0.977"'), "unknown period 'noon'"),
    (
        GOOD.replace(
            "up_to: 3120", 'up_to: 3120\n    price: {peak: "1", valley: "1"}\n  - up_to: 100'
        ),
        "must ascend",
    ),
    (GOOD.replace('valley: ["22:00-06:00"]', 'valley: ["21:00-06:00"]'), "overlaps"),
    (
        GOOD.replace('valley: ["22:00-06:00"]', 'valley: ["23:00-06:00"]'),
        "22:00-23:00 belongs to no period",
    ),
    (GOOD.replace('"0.617"', "0.617"), "quoted strings"),
    (GOOD.replace('"0.617"', '"abc"'), "not a decimal"),
    (GOOD.replace("Asia/Shanghai", "Mars/Olympus"), "unknown time zone"),
    (GOOD.replace("period: year", "period: week"), "must be month or year"),
    (GOOD.replace('"01-01 00:00"', '"02-30 00:00"'), "not a valid date"),
    (GOOD.replace('  - price: {peak: "0.977", valley: "0.487"}', ""), "the last tier has no up_to"),
    (GOOD.replace('["06:00-22:00"]', '["6-22"]'), "HH:MM-HH:MM"),
    (GOOD.replace("currency: CNY\n", ""), "currency: required"),
    ("[1, 2]", "must be a mapping"),
]


@pytest.mark.parametrize(("text", "message"), BROKEN)
def test_broken_files_raise_one_clear_error(tmp_path: Path, text: str, message: str) -> None:
    """Each broken tariff raises TariffError naming the problem and the file."""
    path = tmp_path / "t.yaml"
    path.write_text(text)
    with pytest.raises(TariffError, match=message) as info:
        load_tariff(path)
    assert str(path) in str(info.value)
    assert "\n" not in str(info.value)


def test_malformed_yaml_and_missing_file(tmp_path: Path) -> None:
    """Unreadable files are errors, not exceptions of the YAML library."""
    path = tmp_path / "bad.yaml"
    path.write_text("name: [unclosed\n")
    with pytest.raises(TariffError, match="not valid YAML at line"):
        load_tariff(path)
    with pytest.raises(TariffError, match="cannot read"):
        load_tariff(tmp_path / "missing.yaml")


# ---------------------------------------------------------------------------- versions


def test_versions_must_increase() -> None:
    """Versions out of date order are refused."""
    doc = {
        "currency": "CNY",
        "timezone": "Asia/Shanghai",
        "versions": [
            {
                "effective_from": "2026-07-01",
                "cycle": {"period": "month"},
                "tiers": [{"price": "1"}],
            },
            {
                "effective_from": "2026-01-01",
                "cycle": {"period": "month"},
                "tiers": [{"price": "2"}],
            },
        ],
    }
    with pytest.raises(TariffError, match="effective_from dates must increase"):
        parse_tariff(doc)


def test_versions_share_the_top_level_keys(tmp_path: Path) -> None:
    """Keys beside `versions` apply to every version; each version brings its own prices."""
    path = tmp_path / "versions.yaml"
    path.write_text(VERSIONED_YAML)
    tariff = load_tariff(path)
    assert tariff.name == "Shared keys, two versions"
    assert tariff.currency == "CNY"
    assert [v.name for v in tariff.versions] == ["Shared keys, two versions", "From March 2026"]
    first, second = tariff.versions
    assert first.effective_from == _local(SHANGHAI, 2025, 1, 1)  # a YAML date, local midnight
    assert second.effective_from == _local(SHANGHAI, 2026, 3, 1)
    assert first.cycle == second.cycle
    assert first.periods == second.periods == ("peak", "valley")
    assert tariff.periods == ("peak", "valley")

    march = to_us(_local(SHANGHAI, 2026, 3, 1))
    version, start, end = tariff.version_at(march - 1)
    assert (version, end) == (first, march)
    assert start < to_us(_local(SHANGHAI, 2000, 1, 1))  # the first version covers all before
    version, start, end = tariff.version_at(march)
    assert (version, start, end) == (second, march, None)
    version, _start, _end = tariff.version_at(to_us(_local(SHANGHAI, 1999, 1, 1)))
    assert version is first


def test_energy_across_a_version_change_uses_both_prices(tmp_path: Path) -> None:
    """Energy used around the change is split in proportion to time, each part at its price."""
    path = tmp_path / "versions.yaml"
    path.write_text(VERSIONED_YAML)
    tariff = load_tariff(path)
    state = BillingState()
    pieces = bill_interval(
        tariff,
        state,
        _local(SHANGHAI, 2026, 2, 28, 23, 0),
        _local(SHANGHAI, 2026, 3, 1, 1, 0),
        Decimal(2),
    )
    assert [(p.period, p.kwh, p.price) for p in pieces] == [
        ("valley", Decimal(1), Decimal("0.3")),
        ("valley", Decimal(1), Decimal("0.33")),
    ]
    assert {p.cycle for p in pieces} == {"2026-02"}  # same cycle: the change is not a cycle


def test_version_details_must_agree() -> None:
    """Versions share currency, time zone and cycle rule, and each names its start."""
    base = {"cycle": {"period": "month"}, "tiers": [{"price": "1"}]}
    shared = {"currency": "CNY", "timezone": "Asia/Shanghai"}
    cases: list[tuple[dict[str, Any], str]] = [
        ({**shared, "versions": []}, "non-empty list"),
        ({**shared, "versions": {"a": 1}}, "non-empty list"),
        ({**shared, "versions": ["text"]}, r"versions\[0\]: must be a mapping"),
        (
            {
                **shared,
                "versions": [
                    {**base, "effective_from": "2026-01-01"},
                    {**base, "effective_from": "2026-06-01", "currency": "EUR"},
                ],
            },
            "every version must share them",
        ),
        (
            {
                **shared,
                "versions": [
                    {**base, "effective_from": "2026-01-01"},
                    {**base, "effective_from": "2026-06-01", "cycle": {"period": "year"}},
                ],
            },
            "same cycle rule",
        ),
        (
            {**shared, "versions": [{**base, "effective_from": "2026-01-01"}, base]},
            r"versions\[1\]\.effective_from: required",
        ),
        (
            {**shared, "versions": [{**base, "effective_from": "first of May"}, base]},
            "not an ISO date",
        ),
        (
            {**shared, "versions": [{**base, "effective_from": [2026]}, base]},
            "not an ISO date",
        ),
    ]
    for doc, message in cases:
        with pytest.raises(TariffError, match=message):
            parse_tariff(doc)


def test_effective_from_with_its_own_offset() -> None:
    """A datetime with an offset is taken as written; one without is local time."""
    base = {"cycle": {"period": "month"}, "tiers": [{"price": "1"}]}
    tariff = parse_tariff(
        {
            "currency": "CNY",
            "timezone": "Asia/Shanghai",
            "versions": [
                {**base, "effective_from": datetime(2026, 1, 1, tzinfo=UTC)},
                {**base, "effective_from": datetime(2026, 6, 1, 8, 0)},
                {**base, "effective_from": date(2026, 9, 1)},
            ],
        }
    )
    starts = [v.effective_from for v in tariff.versions]
    assert starts == [
        datetime(2026, 1, 1, tzinfo=UTC),
        _local(SHANGHAI, 2026, 6, 1, 8, 0),
        _local(SHANGHAI, 2026, 9, 1),
    ]
    assert tariff.name == ""  # no name anywhere: empty, not an error


# ---------------------------------------------------------------------------- cycles


def test_month_cycle_starting_on_the_fifteenth() -> None:
    """A cycle from the 15th at 08:00 runs to the next 15th; its id is the starting month."""
    tariff = parse_tariff(_flat(cycle={"period": "month", "starts": "15 08:00"}))
    timeline = tariff.timeline()
    cases = [
        (_local(SHANGHAI, 2026, 3, 10, 12), "2026-02", (2026, 2, 15), (2026, 3, 15)),
        (_local(SHANGHAI, 2026, 3, 15, 7, 59), "2026-02", (2026, 2, 15), (2026, 3, 15)),
        (_local(SHANGHAI, 2026, 3, 15, 8, 0), "2026-03", (2026, 3, 15), (2026, 4, 15)),
        (_local(SHANGHAI, 2026, 1, 10), "2025-12", (2025, 12, 15), (2026, 1, 15)),
        (_local(SHANGHAI, 2026, 12, 20), "2026-12", (2026, 12, 15), (2027, 1, 15)),
    ]
    for moment, cycle, start, end in cases:
        segment = timeline.segment_at(to_us(moment))
        assert segment.cycle == cycle, moment
        assert segment.cycle_start == _local(SHANGHAI, *start, 8), moment
        assert segment.cycle_end == _local(SHANGHAI, *end, 8), moment
    # Energy across the start is split between the two cycles.
    pieces = bill_interval(
        tariff,
        BillingState(),
        _local(SHANGHAI, 2026, 3, 15, 7),
        _local(SHANGHAI, 2026, 3, 15, 9),
        Decimal(4),
    )
    assert [(p.cycle, p.kwh) for p in pieces] == [("2026-02", Decimal(2)), ("2026-03", Decimal(2))]


def test_year_cycle_starting_in_july() -> None:
    """A yearly cycle from 1 July: March belongs to the cycle that started last July."""
    tariff = parse_tariff(_flat(cycle={"period": "year", "starts": "07-01 00:00"}))
    timeline = tariff.timeline()
    march = timeline.segment_at(to_us(_local(SHANGHAI, 2026, 3, 1)))
    assert march.cycle == "2025"
    assert march.cycle_start == _local(SHANGHAI, 2025, 7, 1)
    assert march.cycle_end == _local(SHANGHAI, 2026, 7, 1)
    august = timeline.segment_at(to_us(_local(SHANGHAI, 2026, 8, 1)))
    assert august.cycle == "2026"
    default = parse_tariff(_flat(cycle={"period": "year"}))
    assert default.versions[0].cycle.month == 1
    assert default.timeline().segment_at(to_us(_local(SHANGHAI, 2026, 3, 1))).cycle == "2026"


@pytest.mark.parametrize(
    ("cycle", "message"),
    [
        ({"period": "year", "starts": "7-1 00:00"}, 'not "MM-DD HH:MM"'),
        ({"period": "year", "starts": "02-29 00:00"}, "not a valid date and time"),
        ({"period": "month", "starts": "15"}, 'not "DD HH:MM"'),
        ({"period": "month", "starts": "29 00:00"}, "the day must be 1 to 28, got 29"),
        ({"period": "month", "starts": "00 00:00"}, "the day must be 1 to 28, got 0"),
        ({"period": "month", "starts": "01 25:00"}, "has an invalid time"),
        ("monthly", "cycle: must be a mapping"),
    ],
)
def test_bad_cycle_rules(cycle: Any, message: str) -> None:
    """Each bad cycle rule is one error naming the key."""
    with pytest.raises(TariffError, match=message):
        parse_tariff(_flat(cycle=cycle))


# ---------------------------------------------------------------------------- period windows


def test_periods_as_single_strings_and_24_00() -> None:
    """A period may be one "HH:MM-HH:MM" string; a window may end at 24:00."""
    tariff = parse_tariff(_tou({"day": "08:00-24:00", "night": "00:00-08:00"}))
    version = tariff.versions[0]
    assert version.windows == ((0, 480, "night"), (480, 1440, "day"))
    assert version.periods == ("day", "night")
    assert version.period_at(0) == (0, 480, "night")
    assert version.period_at(1439) == (480, 1440, "day")
    totals = _by_period(tariff, _local(SHANGHAI, 2026, 3, 10), _local(SHANGHAI, 2026, 3, 11), "24")
    assert totals == {"night": Decimal(8), "day": Decimal(16)}


def test_windows_wrapping_to_midnight_and_adjacent_windows_merge() -> None:
    """22:00-00:00 ends the day; adjacent windows of one period become one window."""
    tariff = parse_tariff(
        _tou(
            {
                "peak": ["08:00-12:00", "12:00-17:00"],
                "valley": ["22:00-00:00", "00:00-08:00"],
                "flat_rate": "17:00-22:00",
            }
        )
    )
    assert tariff.versions[0].windows == (
        (0, 480, "valley"),
        (480, 1020, "peak"),
        (1020, 1320, "flat_rate"),
        (1320, 1440, "valley"),
    )
    segment = tariff.timeline().segment_at(to_us(_local(SHANGHAI, 2026, 3, 10, 9)))
    assert segment.period == "peak"
    assert segment.start_us == to_us(_local(SHANGHAI, 2026, 3, 10, 8))
    assert segment.end_us == to_us(_local(SHANGHAI, 2026, 3, 10, 17))


@pytest.mark.parametrize(
    ("periods", "message"),
    [
        ({}, "empty; omit it"),
        ("peak", "periods: must be a mapping"),
        ({"Peak": "00:00-24:00"}, "'Peak' is not a valid period name"),
        ({"peak": []}, 'a list of "HH:MM-HH:MM" windows'),
        ({"peak": 7}, 'a list of "HH:MM-HH:MM" windows'),
        ({"peak": "08:00-08:00"}, "is empty"),
        ({"peak": "24:00-08:00", "valley": "08:00-24:00"}, "starts at 24:00"),
        ({"peak": "10:60-24:00", "valley": "00:00-10:00"}, "has an invalid time"),
        ({"peak": "00:00-24:30"}, "has an invalid time"),
        ({"peak": "00:00-22:00"}, "22:00-24:00 belongs to no period"),
    ],
)
def test_bad_period_windows(periods: Any, message: str) -> None:
    """Every malformed window is one error naming the period."""
    with pytest.raises(TariffError, match=message):
        parse_tariff(_tou(periods))


# ---------------------------------------------------------------------------- tiers and prices


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"tiers": []}, "tiers: required, a non-empty list"),
        ({"tiers": [{"price": "1"}, {"price": "2"}]}, r"tiers\[0\]\.up_to: required"),
        ({"tiers": [{"up_to": 10}, {"price": "1"}]}, r"tiers\[0\]\.price: required"),
        ({"tiers": ["1"]}, r"tiers\[0\]: must be a mapping"),
        ({"tiers": [{"price": ["1"]}]}, "is not a decimal number"),
        ({"tiers": [{"price": "Infinity"}]}, "is not a decimal number"),
        ({"tiers": [{"price": True}]}, "quoted strings"),
        ({"tiers": [{"up_to": "ten", "price": "1"}, {"price": "1"}]}, "not a decimal"),
        ({"name": "t", "currency": " "}, "currency: required"),
        ({"timezone": ""}, "timezone: required"),
    ],
)
def test_bad_tiers_and_prices(changes: dict[str, Any], message: str) -> None:
    """Missing or malformed tiers and prices are each one clear error."""
    with pytest.raises(TariffError, match=message):
        parse_tariff(_flat(**changes))


def test_prices_per_period_must_match_the_periods() -> None:
    """With periods, each tier prices every period, and only those."""
    periods = {"peak": "08:00-22:00", "valley": "22:00-08:00"}
    with pytest.raises(TariffError, match="no price for period 'valley'"):
        parse_tariff(_flat(periods=periods, tiers=[{"price": {"peak": "1"}}]))
    with pytest.raises(TariffError, match=r"give a price per period \(peak, valley\)"):
        parse_tariff(_flat(periods=periods, tiers=[{"price": "1"}]))


def test_integer_prices_and_limits_are_exact() -> None:
    """Integers are accepted as exact decimals (only floats are refused)."""
    tariff = parse_tariff(_flat(tiers=[{"up_to": 100, "price": 1}, {"price": " 2.5 "}]))
    tiers = tariff.versions[0].tiers
    assert tiers[0].up_to == Decimal(100)
    assert tiers[0].prices == {"flat": Decimal(1)}
    assert tiers[1].prices == {"flat": Decimal("2.5")}


# ---------------------------------------------------------------------------- DST


def _berlin(periods: dict[str, str]) -> Tariff:
    return parse_tariff(
        {
            "name": "Berlin",
            "currency": "EUR",
            "timezone": "Europe/Berlin",
            "cycle": {"period": "month"},
            "periods": periods,
            "tiers": [{"price": dict.fromkeys(periods, "0.3")}],
        }
    )


@pytest.mark.parametrize(
    ("day", "hours", "night_hours"),
    [
        # 29 March 2026: 02:00 CET jumps to 03:00 CEST; 00:00-06:00 lasts five hours.
        (29, 5, 2),
        # 25 October 2026: 03:00 CEST falls back to 02:00 CET; 00:00-06:00 lasts seven hours.
        (25, 7, 4),
    ],
)
def test_dst_days_with_boundaries_on_whole_hours(day: int, hours: int, night_hours: int) -> None:
    """On both DST days energy follows real time and local windows; nothing is lost."""
    tariff = _berlin({"night": "00:00-03:00", "day": "03:00-24:00"})
    month = 3 if day == 29 else 10
    t0, t1 = _local(BERLIN, 2026, month, day), _local(BERLIN, 2026, month, day, 6)
    assert t1.astimezone(UTC) - t0.astimezone(UTC) == timedelta(hours=hours)
    totals = _by_period(tariff, t0, t1, str(hours))
    assert totals == {"night": Decimal(night_hours), "day": Decimal(hours - night_hours)}
    assert sum(totals.values()) == hours


def test_dst_whole_day_totals() -> None:
    """A whole 23-hour and 25-hour day bill all their energy, the night window at its length."""
    tariff = _berlin({"night": "00:00-06:00", "day": "06:00-24:00"})
    spring = _by_period(tariff, _local(BERLIN, 2026, 3, 29), _local(BERLIN, 2026, 3, 30), "23")
    assert spring == {"night": Decimal(5), "day": Decimal(18)}
    autumn = _by_period(tariff, _local(BERLIN, 2026, 10, 25), _local(BERLIN, 2026, 10, 26), "25")
    assert autumn == {"night": Decimal(7), "day": Decimal(18)}


@pytest.mark.parametrize(
    ("month", "day", "hours", "night_hours"),
    [(3, 29, 5, Decimal(2)), (10, 25, 7, Decimal(3))],
    ids=["spring", "autumn"],
)
def test_dst_boundary_inside_the_changed_hour(
    month: int, day: int, hours: int, night_hours: Decimal
) -> None:
    """A window edge at 02:30 local: each real half hour goes to the window its clock shows."""
    tariff = _berlin({"night": "00:00-02:30", "day": "02:30-24:00"})
    totals = _by_period(
        tariff, _local(BERLIN, 2026, month, day), _local(BERLIN, 2026, month, day, 6), str(hours)
    )
    assert totals == {"night": night_hours, "day": hours - night_hours}


# ---------------------------------------------------------------------------- the bill command


def _bill(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "custom_components.prepaid_meter.engine", "bill", *args],
        capture_output=True,
        text=True,
        check=False,
        cwd=Path(__file__).parents[2],
    )


def test_bill_command_prints_json() -> None:
    """The bill command prints the statement of TARIFFS.md."""
    golden = Path(__file__).parent / "golden"
    result = _bill(
        "--tariff",
        str(golden / "zhejiang_yearly.yaml"),
        "--readings",
        str(golden / "zhejiang_yearly.csv"),
    )
    assert result.returncode == 0, result.stderr
    assert '"total": "1626.00"' in result.stdout
    assert '"lines"' in result.stdout


@pytest.mark.parametrize(
    ("csv", "message"),
    [
        (
            "ts,energy_kwh\n2026-01-02T00:00:00+08:00,1\n2026-01-01T00:00:00+08:00,2\n",
            "timestamps must increase",
        ),
        ("ts,kwh\n", "header must be 'ts,energy_kwh'"),
        ("ts,energy_kwh\nyesterday,1\n2026-01-01T00:00:00+08:00,2\n", "neither ISO 8601 nor UNIX"),
        ("ts,energy_kwh\n2026-01-01T00:00:00,1\n2026-01-02T00:00:00,2\n", "no UTC offset"),
        (
            "ts,energy_kwh\n2026-01-01T00:00:00+08:00,x\n2026-01-02T00:00:00+08:00,2\n",
            "not a decimal",
        ),
        ("ts,energy_kwh\n2026-01-01T00:00:00+08:00,1\n", "at least two readings"),
    ],
)
def test_bill_command_errors(tmp_path: Path, csv: str, message: str) -> None:
    """Bad input exits non-zero with one clear line on stderr and nothing on stdout."""
    readings = tmp_path / "r.csv"
    readings.write_text(csv)
    tariff = Path(__file__).parent / "golden" / "beijing_monthly.yaml"
    result = _bill("--tariff", str(tariff), "--readings", str(readings))
    assert result.returncode == 1
    assert result.stdout == ""
    assert message in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_bill_command_bad_tariff(tmp_path: Path) -> None:
    """A broken tariff file is one line on stderr."""
    tariff = tmp_path / "t.yaml"
    tariff.write_text(GOOD.replace('"0.617"', '"-1"'))
    result = _bill(
        "--tariff",
        str(tariff),
        "--readings",
        str(Path(__file__).parent / "golden" / "zhejiang_yearly.csv"),
    )
    assert result.returncode == 1
    assert "cannot be negative" in result.stderr
    result = _bill("--tariff", str(tariff), "--readings", "x.csv", "--opened", "2026-13-01")
    assert result.returncode == 2
    assert "not a date" in result.stderr
