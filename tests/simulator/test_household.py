"""The load model: exact, deterministic, realistic in shape, and each kind as described."""

from __future__ import annotations

import datetime as dt
import statistics

from hypothesis import given, settings, strategies as st
import pytest

from simulator.household import DAY, HOUR, KINDS, NOMINAL_VOLTAGE, Household

# 2026-11-27 00:00 China Standard Time, and the same instant in mid-July.
NOV = int(dt.datetime(2026, 11, 27, tzinfo=dt.timezone(dt.timedelta(hours=8))).timestamp())
JUL = int(dt.datetime(2026, 7, 15, tzinfo=dt.timezone(dt.timedelta(hours=8))).timestamp())


@settings(max_examples=60, deadline=None)
@given(
    seed=st.integers(0, 2**48),
    kind=st.sampled_from(KINDS),
    start=st.integers(0, 400 * DAY),
    span=st.integers(0, 2 * HOUR),
)
def test_energy_is_the_exact_sum_of_power(seed: int, kind: str, start: int, span: int) -> None:
    """energy_j(t0, t1) is exactly the per-second sum of power_at (integer joules)."""
    house = Household.create(seed, kind)
    t0 = NOV - 200 * DAY + start
    assert house.energy_j(t0, t0 + span) == sum(house.power_at(t) for t in range(t0, t0 + span))


@settings(max_examples=150, deadline=None)
@given(
    seed=st.integers(0, 2**48),
    kind=st.sampled_from(KINDS),
    a=st.integers(0, 40 * DAY),
    b=st.integers(0, 40 * DAY),
    c=st.integers(0, 40 * DAY),
)
def test_energy_adds_up_over_long_spans(seed: int, kind: str, a: int, b: int, c: int) -> None:
    """Splitting an interval anywhere gives the same energy: no loss or double count."""
    t0, t1, t2 = sorted((NOV + a, NOV + b, NOV + c))
    house = Household.create(seed, kind)
    whole = house.energy_j(t0, t2)
    assert whole == house.energy_j(t0, t1) + house.energy_j(t1, t2)
    assert whole >= 0
    assert house.energy_j(t2, t0) == (0 if t2 > t0 else whole)


def test_same_seed_same_household_and_days() -> None:
    """A seed fixes the household and every day, independent of call order or caching."""
    first, second = Household.create(42), Household.create(42)
    late = [first.power_at(NOV + 5 * DAY + s) for s in range(0, DAY, 97)]
    early = [first.power_at(NOV + s) for s in range(0, DAY, 97)]
    assert early == [second.power_at(NOV + s) for s in range(0, DAY, 97)]
    assert late == [second.power_at(NOV + 5 * DAY + s) for s in range(0, DAY, 97)]
    assert first.energy_j(NOV, NOV + 3 * DAY) == second.energy_j(NOV, NOV + 3 * DAY)
    other = Household.create(43)
    assert [other.power_at(NOV + s) for s in range(0, DAY, 97)] != early


def test_households_differ() -> None:
    """Different households use different amounts, in a realistic range (kWh a day)."""
    daily = [Household.create(seed).energy_j(NOV, NOV + DAY) / 3_600_000 for seed in range(60)]
    assert 3 < statistics.mean(daily) < 20
    assert max(daily) > 1.8 * min(daily)
    assert len({round(d, 3) for d in daily}) == len(daily)
    assert {Household.create(seed).rated_current_a for seed in range(60)} == {40, 60}


def test_daily_curve_has_morning_and_evening_peaks() -> None:
    """Averaged over households: night is low, 07:00 is higher, 19:00-22:00 is the peak."""
    houses = [Household.create(seed) for seed in range(80)]

    def mean_w(hour: int) -> float:
        t = NOV + hour * HOUR
        return statistics.mean(h.energy_j(t, t + HOUR) / HOUR for h in houses)

    night = mean_w(3)
    assert mean_w(7) > 2 * night
    assert min(mean_w(h) for h in (19, 20, 21)) > 4 * night
    assert mean_w(20) > mean_w(15)


def test_summer_air_conditioning_raises_use() -> None:
    """July (air conditioners) uses more than late November on average."""
    houses = [Household.create(seed) for seed in range(60)]
    july = statistics.mean(h.energy_j(JUL, JUL + 3 * DAY) for h in houses)
    november = statistics.mean(h.energy_j(NOV, NOV + 3 * DAY) for h in houses)
    assert july > 1.2 * november


def test_appliance_events_are_realistic() -> None:
    """Kettles are about 2 kW for minutes; events vary from day to day."""
    house = Household.create(7)
    apps = [
        a
        for day in range(house.day_index(NOV), house.day_index(NOV) + 30)
        for a in house.day(day).appliances
    ]
    kettles = [a for a in apps if a.name == "kettle"]
    assert kettles
    assert all(1_800 <= k.watts <= 2_200 and 150 <= k.end - k.start <= 330 for k in kettles)
    assert {a.name for a in apps} >= {"kettle", "rice_cooker", "washing_machine"}
    assert house.day(house.day_index(NOV)) != house.day(house.day_index(NOV) + 1)


def test_elderly_inactive_only_the_fridge_runs() -> None:
    """For days on end only standby and the fridge's on/off cycle show."""
    house = Household.create(5, "elderly-inactive")
    levels = {house.power_at(t) for t in range(NOV, NOV + 2 * DAY, 30)}
    assert levels == {house.standby_w, house.standby_w + house.fridge_w}
    fridge_share = (
        house.energy_j(NOV, NOV + 2 * DAY) / (2 * DAY) - house.standby_w
    ) / house.fridge_w
    assert 0.25 < fridge_share < 0.55


def test_vacant_almost_nothing() -> None:
    """A vacant flat draws a few watts of standby and nothing else."""
    house = Household.create(5, "vacant")
    assert max(house.power_at(t) for t in range(NOV, NOV + DAY, 60)) <= 8
    assert house.energy_j(NOV, NOV + 30 * DAY) / 3_600_000 < 6


@pytest.mark.parametrize("seed", range(5))
def test_overload_goes_past_the_rating_for_minutes(seed: int) -> None:
    """An overload household exceeds rated current x 220 V for minutes, several times a day."""
    house = Household.create(seed, "overload")
    limit = house.rated_current_a * NOMINAL_VOLTAGE
    over = [t for t in range(NOV, NOV + DAY) if house.power_at(t) > limit]
    assert 3 * 60 <= len(over) <= 7 * 15 * 60
    assert house.overcurrent_between(NOV, NOV + DAY)
    assert house.overcurrent_between(over[0], over[0] + 1)
    ordinary = Household.create(seed)
    assert not ordinary.overcurrent_between(NOV, NOV + 30 * DAY)


def test_theft_tamper_events_and_bypass_share() -> None:
    """A theft household has tamper events every day and meters only part of its load."""
    house = Household.create(9, "theft")
    events = house.tamper_between(NOV, NOV + 3 * DAY)
    assert 3 <= len(events) <= 9
    assert set(events) <= {"cover_open", "magnetic_tamper"}
    assert 300 <= house.metered_permille <= 600
    assert Household.create(9).tamper_between(NOV, NOV + 3 * DAY) == []


def test_unknown_kind_is_one_clear_error() -> None:
    """A typo in a kind names the choices."""
    with pytest.raises(ValueError, match="unknown household kind 'theif'"):
        Household.create(1, "theif")
