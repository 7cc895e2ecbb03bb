"""Figures a person can trust (issue 9, item 3): days left, today's and this month's use and
cost, the kWh left in the tier, statements of a cycle the tariff has, alarm episodes."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import ROUND_FLOOR, Decimal
from pathlib import Path
from typing import Any

import pytest

from custom_components.prepaid_meter.engine.community import (
    ALARM_CLEAR_S,
    Community,
    CommunityError,
    Event,
)
from custom_components.prepaid_meter.engine.ledger import (
    Cursor,
    EntryKind,
    Ledger,
    Posting,
    SubAccount,
)
from custom_components.prepaid_meter.engine.policy import PolicyConfig
from custom_components.prepaid_meter.engine.safety import SafetyRules
from custom_components.prepaid_meter.engine.tariff import load_preset
from custom_components.prepaid_meter.engine.views import meter_view
from tests.engine.test_community import (
    APRIL,
    M1,
    NOON,
    OPS,
    A,
    Clock,
    R,
    _assign,
    _charges,
    _flush,
    _top_up,
)

HOUR = 3600
DAY = 86_400
PRICE = Decimal("0.4883")  # the flat preset, and the Beijing tariff's first tier
#: How long theft and tamper episodes wait without a sign before they end (a day).
THEFT_CLEAR_S = SafetyRules().theft_clear_s
# 2026-03-01 00:00 in Shanghai.
MARCH_1 = int(datetime(2026, 2, 28, 16, 0, tzinfo=UTC).timestamp())


def _make(ledger: Ledger, clock: Clock, preset: str = "flat", **options: Any) -> Community:
    community = Community(
        ledger,
        load_preset(preset),
        PolicyConfig.from_options(options.pop("policy", {})),
        clock=clock,
        **options,
    )
    community.load()
    return community


def _hourly(
    community: Community,
    clock: Clock,
    start: int,
    hours: int,
    kwh: Decimal | int,
    *,
    seq: int = 1,
    energy: Decimal = Decimal(0),
    commit: bool = True,
) -> tuple[int, Decimal]:
    """Readings every hour from `start` (the first included), each `kwh` after the last.

    Committed after every reading (the integration commits every minute), like the clock.
    Return the next seq and the register.
    """
    for i in range(hours):
        clock.now = start + i * HOUR
        community.handle_reading(R(M1, seq, start + i * HOUR, energy))
        if commit:
            _flush(community)
        seq += 1
        energy += Decimal(kwh)
    return seq, energy - Decimal(kwh)


def _days(value: Decimal) -> Decimal:
    return value.quantize(Decimal("0.1"), rounding=ROUND_FLOOR)


# ---------------------------------------------------------------------------------- days left


def test_days_left_is_unknown_until_a_day_of_use(tmp_path: Path) -> None:
    """23 hours of use: unknown; 24 hours: the balance over a day's cost."""
    clock = Clock(NOON)
    with Ledger(tmp_path / "l.sqlite3") as ledger:
        community = _make(ledger, clock)
        _assign(community)
        _top_up(community, "100", "t1")
        # A baseline at noon, then 1 kWh an hour: the first charge is at 13:00.
        seq, energy = _hourly(community, clock, NOON, 24, 1)  # charges 13:00 .. 11:00: 23 h
        meter = community.meters[M1]
        assert community.daily_cost(meter) is None
        assert community.days_left(meter) is None
        clock.now = NOON + 30 * HOUR  # time alone adds nothing: the readings end at 11:00
        assert community.daily_cost(meter) is None
        # Readings at 12:00 and 13:00: 24 h of readings since the first charge (13:00), 25 kWh.
        _hourly(community, clock, NOON + 24 * HOUR, 2, 1, seq=seq, energy=energy + 1)
        # 25 kWh a day: 12.2075; 100 - 12.2075 = 87.7925 -> 7.19 -> 7.1 days
        assert community.daily_cost(meter) == 25 * PRICE
        assert community.days_left(meter) == Decimal("7.1")
        assert meter_view(community, meter).days_left == Decimal("7.1")


def test_days_left_counts_days_up_to_the_last_reading(tmp_path: Path) -> None:
    """Old readings arriving now (a replay, a meter back after days) are not spread to now."""
    clock = Clock(NOON)
    with Ledger(tmp_path / "l.sqlite3") as ledger:
        community = _make(ledger, clock)
        _assign(community)
        _top_up(community, "100", "t1")
        _hourly(community, clock, NOON, 26, 1)  # 25 kWh in the day after the first charge
        meter = community.meters[M1]
        assert community.daily_cost(meter) == 25 * PRICE
        clock.now = NOON + 6 * 24 * HOUR  # five days of silence since
        assert community.daily_cost(meter) == 25 * PRICE


def test_days_left_of_the_demo_balances_are_days_not_years(tmp_path: Path) -> None:
    """0.88 CNY at ~12.2 CNY a day is under a tenth of a day; 200 CNY about 16 days."""
    clock = Clock(NOON)
    with Ledger(tmp_path / "l.sqlite3") as ledger:
        community = _make(ledger, clock)
        _assign(community)
        _top_up(community, "11.72", "t1")
        _hourly(community, clock, NOON, 26, 1)
        meter = community.meters[M1]
        # 25 kWh (12.2075) in the 24 hours since the first charge; 11.72 - 12.2075 < 0
        assert community.daily_cost(meter) == 25 * PRICE
        assert community.days_left(meter) == 0  # in emergency credit: no credit left
        _top_up(community, "1.37", "t2")  # balance 0.8825
        assert community.balance(meter) == Decimal("0.8825")
        assert community.days_left(meter) == Decimal("0.0")  # 0.072 of a day
        _top_up(community, "200", "t3")  # 200.8825 / 12.2075 = 16.46
        assert community.days_left(meter) == Decimal("16.4")


def test_days_left_use_the_last_week_not_older_days(tmp_path: Path) -> None:
    """Three days at 2 kWh an hour, then eight at 1: only the last 7 days and today count."""
    clock = Clock(MARCH_1)
    with Ledger(tmp_path / "l.sqlite3") as ledger:
        community = _make(ledger, clock)
        _assign(community)
        _top_up(community, "1000", "t1")
        seq, energy = _hourly(community, clock, MARCH_1, 3 * 24, 2)
        # Each reading's energy is the day's of its time: from 03-04 00:00 on, 1 kWh each.
        _hourly(
            community, clock, MARCH_1 + 3 * 24 * HOUR, 8 * 24 + 13, 1, seq=seq, energy=energy + 1
        )
        now = MARCH_1 + 11 * DAY + 12 * HOUR  # 03-12 12:00; the window starts 03-05 00:00
        assert clock.now == now
        meter = community.meters[M1]
        # Readings at 03-05 00:00 .. 03-12 12:00: 7.5 days x 24 + 1 = 181 kWh in 7.5 days
        expected = 181 * PRICE / Decimal("7.5")
        assert community.daily_cost(meter) == expected
        balance = community.balance(meter)
        assert balance is not None
        assert community.days_left(meter) == _days(balance / expected)


def test_days_left_survive_a_restart(tmp_path: Path) -> None:
    """Rebuilt from the journal's charges: the same daily cost, days left and figures."""
    clock = Clock(MARCH_1)
    path = tmp_path / "l.sqlite3"
    with Ledger(path) as ledger:
        community = _make(ledger, clock)
        _assign(community)
        _top_up(community, "300", "t1")
        _hourly(community, clock, MARCH_1, 3 * 24 + 5, 1)
        meter = community.meters[M1]
        before = (
            community.daily_cost(meter),
            community.days_left(meter),
            community.use_today(meter),
            community.use_this_month(meter),
        )
        assert before[1] is not None
    with Ledger(path) as ledger:
        again = _make(ledger, clock)
        meter = again.meters[M1]
        after = (
            again.daily_cost(meter),
            again.days_left(meter),
            again.use_today(meter),
            again.use_this_month(meter),
        )
    assert after == before
    assert after[2] is not None
    assert after[2].kwh == 5  # 03-04 00:00 .. 04:00
    assert after[3] is not None
    assert after[3].kwh == 3 * 24 + 4


def test_a_restart_within_the_first_day_keeps_it_unknown(tmp_path: Path) -> None:
    """No charge, or under a day of them, in the journal: still unknown after a restart."""
    clock = Clock(NOON)
    path = tmp_path / "l.sqlite3"
    with Ledger(path) as ledger:
        community = _make(ledger, clock)
        _assign(community)
        _top_up(community, "100", "t1")
        assert community.days_left(community.meters[M1]) is None
        _hourly(community, clock, NOON, 5, 1)
    with Ledger(path) as ledger:
        again = _make(ledger, clock)
        assert again.days_left(again.meters[M1]) is None
        use = again.use_today(again.meters[M1])
        assert use is not None
        assert (use.kwh, use.cost) == (Decimal(4), 4 * PRICE)


def test_unassigned_meters_and_households_without_use_have_no_days_left(
    tmp_path: Path,
) -> None:
    """No household: no figures; a household that used nothing for a day: unknown."""
    clock = Clock(NOON)
    with Ledger(tmp_path / "l.sqlite3") as ledger:
        community = _make(ledger, clock)
        community.handle_announce(M1, model=None, firmware=None, rated_current_a=None)
        community.handle_reading(R(M1, 1, NOON, Decimal(1)))
        meter = community.meters[M1]
        assert community.days_left(meter) is None
        assert community.use_today(meter) is None
        assert community.use_this_month(meter) is None
        view = meter_view(community, meter)
        assert (view.today_kwh, view.today_cost, view.month_kwh, view.month_cost) == (
            None,
            None,
            None,
            None,
        )


def test_charges_of_an_earlier_version_count_by_their_registers(tmp_path: Path) -> None:
    """Charge entries without `kwh` in their meta: the register difference between them."""
    clock = Clock(NOON)
    path = tmp_path / "l.sqlite3"
    with Ledger(path) as ledger:
        community = _make(ledger, clock)
        _assign(community)
        for ts, register, amount in ((NOON - 120, "10", "1.0"), (NOON - 60, "12.5", "1.2")):
            ledger.commit_batch(
                [
                    Posting(
                        key=f"charge:{M1}:{ts}:{register}",
                        account_id=A,
                        sub=SubAccount.ELECTRICITY,
                        kind=EntryKind.CHARGE,
                        amount=-Decimal(amount),
                        ts=ts,
                        meta={"meter_id": M1, "first_seq": 1, "last_seq": 1},
                    )
                ],
                [Cursor(M1, 1, ts, Decimal(register))],
                [],
            )
    with Ledger(path) as ledger:
        again = _make(ledger, clock)
        use = again.use_today(again.meters[M1])
        assert use is not None
        assert (use.kwh, use.cost) == (Decimal("2.5"), Decimal("2.2"))


# ------------------------------------------------------------------------ today and this month


def test_a_batch_across_midnight_is_two_charges_on_their_days(tmp_path: Path) -> None:
    """Readings before and after local midnight in one commit: one charge entry per day."""
    clock = Clock(APRIL - 120)
    path = tmp_path / "l.sqlite3"
    with Ledger(path) as ledger:
        community = _make(ledger, clock, "zhejiang_yearly")
        _assign(community)
        _top_up(community, "100", "t1")
        for seq, ts, register in ((1, APRIL - 120, 10), (2, APRIL - 60, 12), (3, APRIL + 60, 15)):
            clock.now = ts
            community.handle_reading(R(M1, seq, ts, Decimal(register)))
        _flush(community)
        assert [key for key, _amount in _charges(ledger)] == [
            f"charge:{M1}:{APRIL + 60}:15",
            f"charge:{M1}:{APRIL - 60}:12",
        ]
        meter = community.meters[M1]
        today, month = community.use_today(meter), community.use_this_month(meter)
        assert today is not None
        assert month is not None
        # April 1st: the reading after midnight (3 kWh); the month is April's (the same)
        assert (today.kwh, today.cost) == (Decimal(3), Decimal("1.614"))
        assert (month.kwh, month.cost) == (Decimal(3), Decimal("1.614"))
        view = meter_view(community, meter)
        assert (view.today_kwh, view.today_cost) == (Decimal("3.000"), Decimal("1.61"))
        assert view.day_started == datetime.fromtimestamp(APRIL, UTC)
        assert view.month_started == datetime.fromtimestamp(APRIL, UTC)
        assert view.cycle_kwh == Decimal("5.000")  # the yearly cycle goes on
    with Ledger(path) as ledger:
        again = _make(ledger, clock, "zhejiang_yearly")
        today = again.use_today(again.meters[M1])
        assert today is not None
        assert (today.kwh, today.cost) == (Decimal(3), Decimal("1.614"))


def test_this_month_is_the_calendar_month_of_the_tariffs_zone(tmp_path: Path) -> None:
    """A yearly tariff: the month's figures start on the 1st at local midnight."""
    clock = Clock(APRIL - 2 * HOUR)
    with Ledger(tmp_path / "l.sqlite3") as ledger:
        community = _make(ledger, clock, "zhejiang_yearly")
        _assign(community)
        _top_up(community, "100", "t1")
        _hourly(community, clock, APRIL - 2 * HOUR, 5, 2)  # 03-31 22:00 .. 04-01 02:00
        meter = community.meters[M1]
        month = community.use_this_month(meter)
        assert month is not None
        assert month.kwh == 6  # 00:00, 01:00, 02:00
        community.tick()  # the day rolled: March's days are forgotten
        assert min(community.households[A].days) >= datetime(2026, 3, 25).date()
        view = meter_view(community, meter)
        assert view.month_kwh == Decimal("6.000")
        assert view.month_cost == Decimal("3.23")  # 6 x 0.538 = 3.228
        assert view.today_cost == Decimal("3.23")


# ------------------------------------------------------------------------------ kWh in the tier


def test_kwh_left_in_the_tier(tmp_path: Path) -> None:
    """Beijing monthly, opened on 03-10: tiers scaled by 22/31 (170.323, 283.871 kWh)."""
    clock = Clock(NOON)
    with Ledger(tmp_path / "l.sqlite3") as ledger:
        community = _make(ledger, clock, "beijing_monthly")
        _assign(community)
        _top_up(community, "1000", "t1")
        meter = community.meters[M1]
        assert community.tier_kwh_left(meter) == Decimal("170.323")
        _hourly(community, clock, NOON, 2, Decimal("10.5"), commit=False)
        assert meter_view(community, meter).tier_kwh_left == Decimal("159.823")
        _hourly(community, clock, NOON + 2 * HOUR, 1, 0, seq=3, energy=Decimal(250))
        assert community.tier_kwh_left(meter) == Decimal("33.871")
        _hourly(community, clock, NOON + 3 * HOUR, 1, 0, seq=4, energy=Decimal(500))
        assert community.tier_kwh_left(meter) is None  # the last tier
    with Ledger(tmp_path / "flat.sqlite3") as ledger:
        flat = _make(ledger, clock)
        _assign(flat)
        assert flat.tier_kwh_left(flat.meters[M1]) is None


# --------------------------------------------------------------------------------- statements


@pytest.mark.parametrize(
    ("preset", "cycle", "expected"),
    [
        ("beijing_monthly", "2026", "YYYY-MM"),
        ("beijing_monthly", "2026-13", "YYYY-MM"),
        ("beijing_monthly", "2026-3", "YYYY-MM"),
        ("zhejiang_yearly", "2026-11", "YYYY"),
        ("zhejiang_yearly", "26", "YYYY"),
        ("zhejiang_yearly", "\uff12\uff10\uff12\uff16", "YYYY"),  # full-width digits
    ],
)
def test_a_cycle_the_tariff_has_not_is_an_error(
    tmp_path: Path, preset: str, cycle: str, expected: str
) -> None:
    """Not an empty statement: a translated error naming the cycle and the form expected."""
    clock = Clock(NOON)
    with Ledger(tmp_path / "l.sqlite3") as ledger:
        community = _make(ledger, clock, preset)
        _assign(community)
        with pytest.raises(CommunityError) as caught:
            community.statement(A, cycle, actor=OPS)
    assert caught.value.key == "cycle_not_of_tariff"
    assert caught.value.placeholders == {"cycle": cycle, "expected": expected}


@pytest.mark.parametrize(
    ("preset", "cycle"), [("beijing_monthly", "2026-03"), ("zhejiang_yearly", "2026")]
)
def test_a_cycle_of_the_tariff_gives_its_statement(tmp_path: Path, preset: str, cycle: str) -> None:
    """The right form: the running statement, as before."""
    clock = Clock(NOON)
    with Ledger(tmp_path / "l.sqlite3") as ledger:
        community = _make(ledger, clock, preset)
        _assign(community)
        statement = community.statement(A, cycle)
    assert statement["cycle"] == cycle
    assert statement["closed"] is False


# ------------------------------------------------------------------------------ alarm episodes


def _alarms(events: list[Event]) -> list[tuple[str, str]]:
    return [(e.kind, e.data["type"]) for e in events if e.kind in ("alarm", "alarm_cleared")]


def test_a_flickering_theft_is_one_episode(tmp_path: Path) -> None:
    """A bypass whose load comes and goes, read every minute for an hour: one alarm; it
    clears after a day without a sign (THEFT_CLEAR_S); a new sign is a new episode."""
    clock = Clock(NOON + 3 * DAY)  # every reading, the quiet day's too, is in the past
    with Ledger(tmp_path / "l.sqlite3") as ledger:
        community = _make(ledger, clock)
        _assign(community)
        _top_up(community, "100", "t1")
        events: list[Event] = []
        seq = 1
        for minute in range(60):
            loaded = minute % 3 != 2  # every third reading the bypassed load is off
            events += community.handle_reading(
                R(
                    M1,
                    seq,
                    NOON + minute * 60,
                    Decimal(seq),
                    current_a=5.0 if loaded else 1.0,
                    neutral_current_a=1.0,
                )
            )
            seq += 1
        assert _alarms(events) == [("alarm", "theft_suspected")]
        assert "theft_suspected" in community.alarms(M1)
        quiet_from = NOON + 60 * 60
        events = []
        # Interference ends after a quiet day (theft_clear_s), not after ALARM_CLEAR_S.
        for step in range(THEFT_CLEAR_S // 600 + 1):
            events += community.handle_reading(
                R(
                    M1,
                    seq,
                    quiet_from + step * 600,
                    Decimal(seq),
                    current_a=1.0,
                    neutral_current_a=1.0,
                )
            )
            seq += 1
            if step * 600 == ALARM_CLEAR_S:
                assert _alarms(events) == []  # a hazard's quiet time is not enough
        cleared = [e for e in events if e.kind == "alarm_cleared"]
        assert _alarms(events) == [("alarm_cleared", "theft_suspected")]
        assert cleared[0].data["household"] == f"Household {A}"
        assert cleared[0].data["started"] == NOON + 60
        assert "theft_suspected" not in community.alarms(M1)
        ts = quiet_from + THEFT_CLEAR_S + 120
        events = []
        for i in range(2):
            events += community.handle_reading(
                R(M1, seq + i, ts + i * 60, Decimal(seq + i), current_a=5.0, neutral_current_a=1.0)
            )
        assert _alarms(events) == [("alarm", "theft_suspected")]


def test_tamper_and_overload_are_episodes_too(tmp_path: Path) -> None:
    """A cover open in every reading: one alarm; an overload for 25 minutes: one (the safety
    watch's overload is a sustained one: 120 s at the rated current or more)."""
    clock = Clock(NOON + 3 * DAY)  # every reading, the quiet day's too, is in the past
    with Ledger(tmp_path / "l.sqlite3") as ledger:
        community = _make(ledger, clock, protective_cut=False)
        _assign(community)
        events: list[Event] = []
        for seq in range(1, 31):
            events += community.handle_reading(
                R(
                    M1,
                    seq,
                    NOON + seq * 50,
                    Decimal(seq),
                    current_a=70.0,
                    neutral_current_a=70.0,
                    events=("cover_open",),
                )
            )
        assert sorted(_alarms(events)) == [("alarm", "overload"), ("alarm", "tamper")]
        last = NOON + 30 * 50
        events = community.handle_reading(R(M1, 31, last + ALARM_CLEAR_S, Decimal(31)))
        assert _alarms(events) == [("alarm_cleared", "overload")]  # tamper: a quiet day
        events = []
        times = [*range(last + ALARM_CLEAR_S + 600, last + THEFT_CLEAR_S, 600)]
        for seq, ts in enumerate([*times, last + THEFT_CLEAR_S], start=32):
            events += community.handle_reading(R(M1, seq, ts, Decimal(31)))
        assert _alarms(events) == [("alarm_cleared", "tamper")]
        assert community.alarms(M1) == []


def test_readings_without_a_sign_end_the_episode(tmp_path: Path) -> None:
    """The meter's overcurrent report for 150 s: an overload; readings without currents and
    without the report end it once ALARM_CLEAR_S have passed since the last sign."""
    clock = Clock(NOON + DAY)  # every reading is in the past
    with Ledger(tmp_path / "l.sqlite3") as ledger:
        community = _make(ledger, clock)
        _assign(community)
        community.handle_reading(R(M1, 1, NOON, Decimal(1), events=("overcurrent",)))
        events = community.handle_reading(R(M1, 2, NOON + 150, Decimal(1), events=("overcurrent",)))
        assert _alarms(events) == [("alarm", "overload")]
        quiet: dict[str, Any] = {"current_a": None, "neutral_current_a": None}
        events = community.handle_reading(R(M1, 3, NOON + 750, Decimal(1), **quiet))
        assert _alarms(events) == []
        assert community.alarms(M1) == ["overload"]
        events = community.handle_reading(R(M1, 4, NOON + 150 + ALARM_CLEAR_S, Decimal(1), **quiet))
        assert _alarms(events) == [("alarm_cleared", "overload")]
