"""Billing rules of TARIFFS.md: golden cases, tier order, proration, and split invariance."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
import itertools
import json
from pathlib import Path
from typing import Any

from hypothesis import given, settings, strategies as st
import pytest

from custom_components.prepaid_meter.engine.__main__ import read_readings
from custom_components.prepaid_meter.engine.billing import (
    BillingError,
    BillingState,
    bill_interval,
    bill_readings,
    current_price,
    statement_for,
)
from custom_components.prepaid_meter.engine.tariff import Tariff, load_preset, load_tariff

HERE = Path(__file__).parent
SHARED_GOLDEN = HERE.parents[2] / "shared" / "golden"
CST = timedelta(hours=8)


def _golden_cases() -> list[Any]:
    cases: dict[str, Any] = {}
    for folder, expected_file in (
        (HERE / "golden", "expected.json"),
        (HERE / "golden", "expected_local.json"),
        (SHARED_GOLDEN, "expected.json"),
    ):
        if not (folder / expected_file).exists():
            continue
        for name, expected in json.loads((folder / expected_file).read_text()).items():
            cases[f"{folder.parent.name}/{name}"] = pytest.param(
                folder, name, expected, id=f"{folder.parent.name}-{name}"
            )
    return list(cases.values())


@pytest.mark.parametrize(("folder", "name", "expected"), _golden_cases())
def test_golden(folder: Path, name: str, expected: dict[str, Any]) -> None:
    """Every golden case is billed to the cent, cycle by cycle."""
    tariff = load_tariff(folder / f"{name}.yaml")
    readings = read_readings(folder / f"{name}.csv")
    opened = date.fromisoformat(expected["opened"]) if "opened" in expected else None
    bill = bill_readings(tariff, readings, opened)
    assert {c.cycle: str(c.total) for c in bill.cycles} == expected["cycles"]
    assert str(bill.total) == expected["total"]
    for cycle in bill.cycles:
        assert sum(line.kwh for line in cycle.lines) == cycle.kwh
        for line in cycle.lines:
            assert line.amount == (line.kwh * line.price).quantize(Decimal("0.01"))


def _at(text: str) -> datetime:
    return datetime.fromisoformat(text)


def _priced(tariff: Tariff, state: BillingState, t0: str, t1: str, kwh: str) -> Decimal:
    pieces = bill_interval(tariff, state, _at(t0), _at(t1), Decimal(kwh))
    return sum((p.amount for p in pieces), Decimal(0))


def test_tiers_fill_in_time_order_shanghai() -> None:
    """The same 150 kWh across Shanghai's 3,120 kWh line: 83.35 peak first, 83.95 valley first."""
    tariff = load_preset("shanghai_yearly_tou")
    peak_first = BillingState()
    _priced(tariff, peak_first, "2026-05-01T06:00+08:00", "2026-05-01T07:00+08:00", "0")
    peak_first.cycle_kwh = Decimal(3100)
    cost = _priced(tariff, peak_first, "2026-05-01T07:00+08:00", "2026-05-01T21:00+08:00", "100")
    cost += _priced(tariff, peak_first, "2026-05-01T22:00+08:00", "2026-05-02T05:00+08:00", "50")
    assert cost.quantize(Decimal("0.01")) == Decimal("83.35")

    valley_first = BillingState()
    _priced(tariff, valley_first, "2026-05-01T06:00+08:00", "2026-05-01T07:00+08:00", "0")
    valley_first.cycle_kwh = Decimal(3100)
    cost = _priced(tariff, valley_first, "2026-05-01T22:00+08:00", "2026-05-02T05:00+08:00", "50")
    cost += _priced(tariff, valley_first, "2026-05-02T07:00+08:00", "2026-05-02T21:00+08:00", "100")
    assert cost.quantize(Decimal("0.01")) == Decimal("83.95")


def test_interval_split_in_proportion_to_time_across_periods() -> None:
    """Energy over 20:00-24:00 splits 2/4 peak and 2/4 valley at 22:00 (Shanghai)."""
    tariff = load_preset("shanghai_yearly_tou")
    pieces = bill_interval(
        tariff,
        BillingState(),
        _at("2026-05-01T20:00+08:00"),
        _at("2026-05-02T00:00+08:00"),
        Decimal("8"),
    )
    assert [(p.period, p.kwh) for p in pieces] == [("peak", Decimal(4)), ("valley", Decimal(4))]


def test_interval_split_across_cycle_boundary_resets_tiers() -> None:
    """Beijing: a reading spanning midnight of 1 April puts half in March, half in April."""
    tariff = load_preset("beijing_monthly")
    state = BillingState()
    bill_interval(
        tariff, state, _at("2026-03-01T00:00+08:00"), _at("2026-03-31T00:00+08:00"), Decimal(500)
    )
    pieces = bill_interval(
        tariff, state, _at("2026-03-31T12:00+08:00"), _at("2026-04-01T12:00+08:00"), Decimal(10)
    )
    assert [(p.cycle, p.tier, p.kwh) for p in pieces] == [
        ("2026-03", 3, Decimal(5)),
        ("2026-04", 1, Decimal(5)),
    ]
    assert state.cycle == "2026-04"
    assert state.cycle_kwh == Decimal(5)


def test_versions_price_energy_by_version_in_force(tmp_path: Path) -> None:
    """A price change on 1 July applies to energy used from then on."""
    path = tmp_path / "versions.yaml"
    path.write_text(
        """
name: Two versions
currency: CNY
timezone: Asia/Shanghai
versions:
  - effective_from: 2026-01-01
    cycle: {period: year, starts: "01-01 00:00"}
    tiers: [{price: "0.5"}]
  - effective_from: "2026-07-01T00:00"
    cycle: {period: year, starts: "01-01 00:00"}
    tiers: [{price: "0.6"}]
"""
    )
    tariff = load_tariff(path)
    pieces = bill_interval(
        tariff,
        BillingState(),
        _at("2026-06-30T12:00+08:00"),
        _at("2026-07-01T12:00+08:00"),
        Decimal(10),
    )
    assert [(p.price, p.kwh) for p in pieces] == [
        (Decimal("0.5"), Decimal(5)),
        (Decimal("0.6"), Decimal(5)),
    ]


def test_current_price_follows_tier_and_period() -> None:
    """The price entity shows the tier the next kWh falls in."""
    tariff = load_preset("shanghai_yearly_tou")
    state = BillingState()
    assert current_price(tariff, state, _at("2026-05-01T12:00+08:00")) == (
        1,
        "peak",
        Decimal("0.617"),
    )
    bill_interval(
        tariff, state, _at("2026-01-01T00:00+08:00"), _at("2026-05-01T00:00+08:00"), Decimal(3200)
    )
    assert current_price(tariff, state, _at("2026-05-01T23:00+08:00")) == (
        2,
        "valley",
        Decimal("0.337"),
    )


def test_register_reset_bills_nothing_and_is_reported() -> None:
    """A register that goes down starts a new baseline."""
    tariff = load_preset("flat")
    readings = [
        (_at("2026-05-01T00:00+08:00"), Decimal(100)),
        (_at("2026-05-02T00:00+08:00"), Decimal(110)),
        (_at("2026-05-03T00:00+08:00"), Decimal(2)),
        (_at("2026-05-04T00:00+08:00"), Decimal(12)),
    ]
    bill = bill_readings(tariff, readings)
    assert bill.cycles[0].kwh == Decimal(20)
    assert [(r.before, r.after) for r in bill.resets] == [(Decimal(110), Decimal(2))]


def test_time_going_backwards_is_an_error() -> None:
    """A non-monotonic timestamp is refused, naming the reading."""
    tariff = load_preset("flat")
    with pytest.raises(BillingError, match="timestamps must increase"):
        bill_readings(
            tariff,
            [
                (_at("2026-05-02T00:00+08:00"), Decimal(1)),
                (_at("2026-05-01T00:00+08:00"), Decimal(2)),
            ],
        )


def test_statement_lines_add_up_to_cycle_kwh() -> None:
    """Largest-remainder rounding keeps sum(lines) == cycle kWh."""
    statement = statement_for(
        "2026",
        [
            (1, "peak", Decimal("0.3334"), Decimal(1)),
            (1, "valley", Decimal("0.3333"), Decimal(1)),
            (2, "peak", Decimal("0.3333"), Decimal(1)),
        ],
        ("peak", "valley"),
    )
    assert statement.kwh == Decimal("1.000")
    assert sum(line.kwh for line in statement.lines) == Decimal("1.000")


# --- properties --------------------------------------------------------------------------

START = datetime(2026, 1, 1, tzinfo=UTC) - CST
TARIFFS = ["beijing_monthly", "shanghai_yearly_tou", "zhejiang_yearly_tou", "flat"]

readings_strategy = st.lists(
    st.tuples(
        st.integers(min_value=60, max_value=5 * 86400),  # seconds since the previous reading
        st.integers(min_value=0, max_value=400_000),  # Wh since the previous reading
    ),
    min_size=1,
    max_size=25,
)


def _readings(steps: list[tuple[int, int]]) -> list[tuple[datetime, Decimal]]:
    moment, energy = START, Decimal("1000.000")
    out = [(moment, energy)]
    for seconds, wh in steps:
        moment += timedelta(seconds=seconds)
        energy += Decimal(wh) / 1000
        out.append((moment, energy))
    return out


def _bill_json(name: str, readings: list[tuple[datetime, Decimal]]) -> Any:
    return bill_readings(load_preset(name), readings).to_json()


@settings(max_examples=120, deadline=None)
@given(st.sampled_from(TARIFFS), readings_strategy, st.data())
def test_interpolated_readings_change_nothing(
    name: str, steps: list[tuple[int, int]], data: st.DataObject
) -> None:
    """Reporting the same consumption with more readings gives the same bill, to the cent."""
    readings = _readings(steps)
    finer: list[tuple[datetime, Decimal]] = [readings[0]]
    for (t0, e0), (t1, e1) in itertools.pairwise(readings):
        total = int((t1 - t0).total_seconds())
        cuts = sorted(set(data.draw(st.lists(st.integers(1, total - 1), max_size=4))))
        for cut in cuts:
            # Interpolated exactly: Wh deltas times whole seconds over whole seconds.
            finer.append((t0 + timedelta(seconds=cut), e0 + (e1 - e0) * cut / total))
        finer.append((t1, e1))
    assert _bill_json(name, finer) == _bill_json(name, readings)


@settings(max_examples=120, deadline=None)
@given(readings_strategy, st.data())
def test_any_split_within_one_cycle_gives_same_bill_without_periods(
    steps: list[tuple[int, int]], data: st.DataObject
) -> None:
    """Without time-of-use periods, only the cycle's total matters: any split bills the same."""
    readings = [(m, e) for m, e in _readings(steps) if m < START + timedelta(days=31)]
    first, last = readings[0], readings[-1]
    if len(readings) < 2:
        return
    coarse = [first, last]
    assert _bill_json("beijing_monthly", readings) == _bill_json("beijing_monthly", coarse)


@settings(max_examples=150, deadline=None)
@given(st.sampled_from(TARIFFS), readings_strategy)
def test_pieces_conserve_energy(name: str, steps: list[tuple[int, int]]) -> None:
    """The priced pieces of an interval add up to its energy exactly, whatever they cross."""
    tariff = load_preset(name)
    state = BillingState()
    readings = _readings(steps)
    for (t0, e0), (t1, e1) in itertools.pairwise(readings):
        pieces = bill_interval(tariff, state, t0, t1, e1 - e0)
        assert sum((p.kwh for p in pieces), Decimal(0)) == e1 - e0
        assert all(p.kwh > 0 for p in pieces)
