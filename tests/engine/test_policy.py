"""Supply rules: friendly hours, emergency credit, protection, warnings, restore, options."""

from __future__ import annotations

import builtins
from dataclasses import replace
from datetime import UTC, date, datetime, time, timedelta
from decimal import Decimal
import itertools
import json
import sys
from typing import Any
from zoneinfo import ZoneInfo

import holidays
from hypothesis import assume, given, settings, strategies as st
import pytest

from custom_components.prepaid_meter.engine.policy import (
    PolicyConfig,
    PolicyError,
    Reason,
    WarningLevel,
    WarningTracker,
    decide_restore,
    decide_supply,
    estimate_days_left,
    is_friendly,
    library_country,
    next_unfriendly,
    warning_level,
)

SHANGHAI = ZoneInfo("Asia/Shanghai")
LONDON = ZoneInfo("Europe/London")
NEW_YORK = ZoneInfo("America/New_York")
DEFAULT = PolicyConfig()
NO_WEEKENDS = PolicyConfig(friendly_weekends=False)
NO_WINDOW = PolicyConfig(friendly_start=time(0), friendly_end=time(0), friendly_weekends=False)
FEN = Decimal("0.01")
SETTINGS = settings(max_examples=150, deadline=None)

# 2025-03-12 is a Wednesday, 2025-03-14 a Friday, 2025-03-15 a Saturday, 2025-03-17 a Monday.
WEDNESDAY = date(2025, 3, 12)


def sh(day: date, hour: int, minute: int = 0, second: int = 0) -> datetime:
    """Return a moment on the Shanghai wall clock."""
    return datetime(day.year, day.month, day.day, hour, minute, second, tzinfo=SHANGHAI)


# --------------------------------------------------------------------------------------------
# Friendly hours


@pytest.mark.parametrize(
    ("moment", "friendly"),
    [
        (sh(WEDNESDAY, 9, 59, 59), True),
        (sh(WEDNESDAY, 10), False),
        (sh(WEDNESDAY, 12), False),
        (sh(WEDNESDAY, 17, 59, 59), False),
        (sh(WEDNESDAY, 18), True),
        (sh(WEDNESDAY, 23, 59, 59), True),
        (sh(WEDNESDAY + timedelta(days=1), 0), True),
        (sh(WEDNESDAY + timedelta(days=1), 9, 59, 59), True),
        (sh(WEDNESDAY + timedelta(days=1), 10), False),
    ],
)
def test_window_edges_wrap_midnight(moment: datetime, friendly: bool) -> None:
    """The default window is [18:00, 10:00) on the local clock, across midnight."""
    assert is_friendly(moment, DEFAULT) is friendly


@pytest.mark.parametrize(
    ("moment", "friendly"),
    [
        # 09:59:59Z is 17:59:59 in Shanghai (UTC+8, no DST).
        (datetime(2025, 3, 12, 9, 59, 59, tzinfo=UTC), False),
        (datetime(2025, 3, 12, 10, 0, 0, tzinfo=UTC), True),
        (datetime(2025, 3, 13, 1, 59, 59, tzinfo=UTC), True),
        (datetime(2025, 3, 13, 2, 0, 0, tzinfo=UTC), False),
        # the same instants expressed in another zone give the same answer
        (datetime(2025, 3, 12, 5, 59, 59, tzinfo=NEW_YORK), False),
        (datetime(2025, 3, 12, 6, 0, 0, tzinfo=NEW_YORK), True),
    ],
)
def test_window_judged_in_config_timezone(moment: datetime, friendly: bool) -> None:
    """An instant in any zone is converted to the community's local clock first."""
    assert is_friendly(moment, DEFAULT) is friendly


@pytest.mark.parametrize(
    ("moment", "friendly"),
    [
        (datetime(2025, 7, 1, 16, 59, 59, tzinfo=UTC), False),  # 17:59:59 BST
        (datetime(2025, 7, 1, 17, 0, 0, tzinfo=UTC), True),  # 18:00 BST
        (datetime(2025, 7, 2, 8, 59, 59, tzinfo=UTC), True),  # 09:59:59 BST
        (datetime(2025, 7, 2, 9, 0, 0, tzinfo=UTC), False),  # 10:00 BST
        (datetime(2025, 1, 7, 17, 59, 59, tzinfo=UTC), False),  # 17:59:59 GMT
        (datetime(2025, 1, 7, 18, 0, 0, tzinfo=UTC), True),  # 18:00 GMT
    ],
)
def test_window_in_a_zone_with_daylight_saving(moment: datetime, friendly: bool) -> None:
    """In London the window follows the wall clock, summer time or not."""
    config = PolicyConfig(timezone="Europe/London", friendly_weekends=False)
    assert is_friendly(moment, config) is friendly


def test_non_wrapping_window() -> None:
    """A window with start < end is [start, end) within one day."""
    config = PolicyConfig(friendly_start=time(12), friendly_end=time(14), friendly_weekends=False)
    assert not is_friendly(sh(WEDNESDAY, 11, 59, 59), config)
    assert is_friendly(sh(WEDNESDAY, 12), config)
    assert is_friendly(sh(WEDNESDAY, 13, 59, 59), config)
    assert not is_friendly(sh(WEDNESDAY, 14), config)
    assert not is_friendly(sh(WEDNESDAY, 20), config)


@given(st.datetimes(min_value=datetime(2024, 1, 1), max_value=datetime(2026, 12, 31)))
@SETTINGS
def test_equal_start_and_end_means_no_window(local: datetime) -> None:
    """start == end: on a plain weekday nothing is friendly, at any time."""
    moment = local.replace(tzinfo=SHANGHAI)
    assert is_friendly(moment, NO_WINDOW) is False


def test_weekends_are_friendly_all_day() -> None:
    """Saturday and Sunday are friendly all day; Monday morning is in the window anyway."""
    saturday, sunday, monday = (WEDNESDAY + timedelta(days=n) for n in (3, 4, 5))
    for hour in (0, 10, 12, 17):
        assert is_friendly(sh(saturday, hour), DEFAULT)
        assert is_friendly(sh(sunday, hour), DEFAULT)
        assert not is_friendly(sh(saturday, hour if hour >= 10 else 12), NO_WEEKENDS)
    assert is_friendly(sh(sunday, 23, 59, 59), DEFAULT)
    assert is_friendly(sh(monday, 8), DEFAULT)
    assert is_friendly(sh(monday, 9, 59, 59), DEFAULT)
    assert not is_friendly(sh(monday, 10), DEFAULT)


def test_weekend_is_the_local_weekend() -> None:
    """Friday 16:30 UTC is already Saturday in Shanghai; Sunday 16:30 UTC is Monday there."""
    config = PolicyConfig(friendly_start=time(0), friendly_end=time(0), friendly_weekends=True)
    assert is_friendly(datetime(2025, 3, 14, 16, 30, tzinfo=UTC), config)
    assert not is_friendly(datetime(2025, 3, 14, 15, 59, 59, tzinfo=UTC), config)
    assert is_friendly(datetime(2025, 3, 16, 15, 59, 59, tzinfo=UTC), config)
    assert not is_friendly(datetime(2025, 3, 16, 16, 0, tzinfo=UTC), config)


def test_listed_holidays_are_friendly_all_day() -> None:
    """National Day (a Wednesday in 2025) is friendly only when listed."""
    national_day = date(2025, 10, 1)
    listed = PolicyConfig(holidays=frozenset({national_day}))
    for hour in (10, 12, 17):
        assert is_friendly(sh(national_day, hour), listed)
        assert not is_friendly(sh(national_day, hour), DEFAULT)
    assert not is_friendly(sh(national_day + timedelta(days=1), 12), listed)
    assert is_friendly(sh(national_day + timedelta(days=1), 9), listed)


def test_naive_datetime_is_refused() -> None:
    """Without a zone the moment is ambiguous; the caller must pass an aware datetime."""
    with pytest.raises(ValueError, match="aware"):
        is_friendly(datetime(2025, 3, 12, 12), DEFAULT)
    with pytest.raises(ValueError, match="aware"):
        decide_supply(
            Decimal(-100),
            datetime(2025, 3, 12, 12),
            supply_protected=False,
            supply_on=True,
            config=DEFAULT,
        )


# --------------------------------------------------------------------------------------------
# Holidays from the library

CHINA = PolicyConfig(country="CN")
# China's six make-up working days of 2026 (State Council notice, November 2025), all weekends.
CHINA_2026_WORKED_WEEKENDS = (
    date(2026, 1, 4),  # Sunday, for New Year
    date(2026, 2, 14),  # Saturday, for the Spring Festival
    date(2026, 2, 28),  # Saturday, for the Spring Festival
    date(2026, 5, 9),  # Saturday, for Labour Day
    date(2026, 9, 20),  # Sunday, for National Day
    date(2026, 10, 10),  # Saturday, for National Day
)


def test_the_library_knows_china_2026() -> None:
    """The pinned library lists 2026's make-up working days, each a Saturday or Sunday."""
    calendar = holidays.country_holidays("CN", years=2026)
    worked = sorted(day for day in calendar.weekend_workdays if day.year == 2026)
    assert worked == list(CHINA_2026_WORKED_WEEKENDS)
    assert all(day.weekday() >= 5 for day in worked)
    assert date(2026, 10, 1) in calendar
    assert date(2026, 2, 17) in calendar


@pytest.mark.parametrize("day", CHINA_2026_WORKED_WEEKENDS)
def test_a_make_up_working_weekend_day_is_not_friendly(day: date) -> None:
    """A Saturday or Sunday worked in lieu is an ordinary working day: only the window."""
    assert not is_friendly(sh(day, 10), CHINA)
    assert not is_friendly(sh(day, 12), CHINA)
    assert not is_friendly(sh(day, 17, 59, 59), CHINA)
    assert is_friendly(sh(day, 9, 59, 59), CHINA)
    assert is_friendly(sh(day, 18), CHINA)
    # Without a country it is just a weekend day.
    assert is_friendly(sh(day, 12), DEFAULT)


def test_make_up_saturday_edges() -> None:
    """2026-02-14 is worked; the Spring Festival break starts on Sunday the 15th."""
    friday, saturday, sunday = date(2026, 2, 13), date(2026, 2, 14), date(2026, 2, 15)
    assert not is_friendly(sh(friday, 12), CHINA)
    assert is_friendly(sh(friday, 23, 59, 59), CHINA)
    assert is_friendly(sh(saturday, 0), CHINA)
    assert is_friendly(sh(saturday, 9, 59, 59), CHINA)
    assert not is_friendly(sh(saturday, 10), CHINA)
    assert not is_friendly(sh(saturday, 17, 59, 59), CHINA)
    assert is_friendly(sh(saturday, 18), CHINA)
    assert is_friendly(sh(sunday, 12), CHINA)
    # In UTC: Saturday 10:00 Shanghai is 02:00Z.
    assert is_friendly(datetime(2026, 2, 14, 1, 59, 59, tzinfo=UTC), CHINA)
    assert not is_friendly(datetime(2026, 2, 14, 2, 0, tzinfo=UTC), CHINA)


@pytest.mark.parametrize(
    ("day", "friendly"),
    [
        # Spring Festival 2026: 15 (Sun) to 23 (Mon) February off; back on the 24th.
        (date(2026, 2, 16), True),  # Monday, New Year's Eve
        (date(2026, 2, 17), True),
        (date(2026, 2, 18), True),
        (date(2026, 2, 19), True),
        (date(2026, 2, 20), True),  # Friday, in lieu of 14 February
        (date(2026, 2, 23), True),  # Monday, in lieu of 28 February
        (date(2026, 2, 24), False),
        # National Day 2026: 1 (Thu) to 7 (Wed) October off; back on the 8th.
        (date(2026, 9, 30), False),
        (date(2026, 10, 1), True),
        (date(2026, 10, 2), True),
        (date(2026, 10, 5), True),
        (date(2026, 10, 6), True),
        (date(2026, 10, 7), True),
        (date(2026, 10, 8), False),
        (date(2026, 1, 1), True),  # New Year's Day, Thursday
        (date(2026, 1, 2), True),  # Friday, in lieu of Sunday 4 January
        (date(2026, 1, 5), False),
        (date(2026, 3, 11), False),  # an ordinary Wednesday
    ],
)
def test_library_holidays_are_friendly_all_day(day: date, friendly: bool) -> None:
    """Public holidays of the country's calendar need no typing by the operator."""
    assert is_friendly(sh(day, 12), CHINA) is friendly
    assert is_friendly(sh(day, 10), CHINA) is friendly
    assert is_friendly(sh(day, 17, 59, 59), CHINA) is friendly
    no_weekends = replace(CHINA, friendly_weekends=False)
    assert is_friendly(sh(day, 12), no_weekends) is friendly
    assert not is_friendly(sh(day, 12), NO_WEEKENDS)


def test_operator_removes_a_library_holiday_or_a_weekend_day() -> None:
    """A listed workday is worked whatever the library or the weekend says."""
    national_day, saturday = date(2026, 10, 1), date(2026, 3, 7)
    config = replace(CHINA, workdays=frozenset({national_day, saturday}))
    assert not is_friendly(sh(national_day, 12), config)
    assert not is_friendly(sh(national_day, 10), config)
    assert is_friendly(sh(national_day, 9, 59, 59), config)  # the window stays
    assert is_friendly(sh(national_day, 18), config)
    assert is_friendly(sh(national_day + timedelta(days=1), 12), config)
    assert not is_friendly(sh(saturday, 12), config)
    assert is_friendly(sh(saturday + timedelta(days=1), 12), config)
    # Also without a country; and a listed workday beats a listed holiday.
    plain = PolicyConfig(holidays=frozenset({national_day}), workdays=frozenset({national_day}))
    assert not is_friendly(sh(national_day, 12), plain)


def test_operator_adds_a_holiday_to_the_library() -> None:
    """A listed holiday is friendly, even on a make-up working day."""
    wednesday, worked_saturday = date(2026, 3, 11), date(2026, 2, 14)
    config = replace(CHINA, holidays=frozenset({wednesday, worked_saturday}))
    assert is_friendly(sh(wednesday, 10), config)
    assert is_friendly(sh(wednesday, 17, 59, 59), config)
    assert not is_friendly(sh(wednesday + timedelta(days=1), 12), config)
    assert is_friendly(sh(worked_saturday, 12), config)
    assert not is_friendly(sh(date(2026, 2, 28), 12), config)  # the other one is still worked


def test_another_country_and_its_observed_days() -> None:
    """The code picks the calendar: in Britain Boxing Day 2026 (a Saturday) moves to Monday."""
    britain = PolicyConfig(country="GB", timezone="Europe/London")
    london = ZoneInfo("Europe/London")
    assert is_friendly(datetime(2026, 12, 28, 12, tzinfo=london), britain)
    assert not is_friendly(
        datetime(2026, 12, 28, 12, tzinfo=london), replace(britain, country=None)
    )
    assert not is_friendly(datetime(2026, 12, 29, 12, tzinfo=london), britain)
    assert not is_friendly(datetime(2026, 10, 1, 12, tzinfo=london), britain)  # not British


def test_no_country_means_no_library_holidays() -> None:
    """None or an empty code: only the weekend and the operator's list."""
    for options in ({}, {"country": None}, {"country": ""}, {"country": "  "}):
        config = PolicyConfig.from_options(options)
        assert config.country is None
        assert not is_friendly(sh(date(2026, 10, 1), 12), config)
        assert is_friendly(sh(date(2026, 2, 14), 12), config)  # just a Saturday


def test_country_code_is_normalised() -> None:
    """Any case and surrounding spaces read as the code in capitals."""
    assert PolicyConfig.from_options({"country": " cn "}) == CHINA
    assert PolicyConfig(country="cn") == CHINA
    assert CHINA.country == "CN"


@pytest.mark.parametrize("country", ["XX", "China", "Mars", 86, ["CN"]])
def test_unknown_country_is_an_error(country: object) -> None:
    """A code the library does not know is refused, naming the option."""
    with pytest.raises(PolicyError) as caught:
        PolicyConfig.from_options({"country": country})
    assert caught.value.field == "country"
    assert caught.value.translation_key == "invalid_country"
    assert caught.value.placeholders == {"value": str(country)}
    with pytest.raises(PolicyError, match="country") as direct:
        PolicyConfig(country=country)  # type: ignore[arg-type]
    assert direct.value.translation_key == "invalid_country"


@pytest.mark.parametrize(
    ("code", "country"),
    [
        ("CN", "CN"),
        ("cn", "CN"),
        ("GB", "GB"),
        ("XX", None),
        ("ZZZ", None),
        ("", None),
        (None, None),
    ],
)
def test_library_country_for_a_default(code: str | None, country: str | None) -> None:
    """Home Assistant's country as a default: one the library lacks means none, not an error."""
    assert library_country(code) == country
    assert PolicyConfig.from_options({"country": country}).country == country


def test_library_years_are_worked_out_without_io(monkeypatch: pytest.MonkeyPatch) -> None:
    """Only building the config loads the country; each year's days then come from memory.

    In Home Assistant the years are worked out on the reading path, in the event loop.
    """
    config = PolicyConfig.from_options({"country": "JP", "timezone": "Asia/Tokyo"})
    tokyo = ZoneInfo("Asia/Tokyo")

    def no_open(*args: object, **kwargs: object) -> None:
        raise AssertionError(f"open{args} in the reading path")

    modules = set(sys.modules)
    monkeypatch.setattr(builtins, "open", no_open)
    for year in range(2020, 2031):
        is_friendly(datetime(year, 1, 1, 12, tzinfo=tokyo), config)
        next_unfriendly(datetime(year, 5, 3, 12, tzinfo=tokyo), config)
    monkeypatch.undo()
    assert set(sys.modules) == modules
    assert is_friendly(datetime(2026, 5, 5, 12, tzinfo=tokyo), config)  # Children's Day


# --------------------------------------------------------------------------------------------
# next_unfriendly


@pytest.mark.parametrize(
    ("at", "expected"),
    [
        # National Day week 2026 from the library alone: back on Thursday 8 October.
        (sh(date(2026, 9, 30), 20), sh(date(2026, 10, 8), 10)),
        (sh(date(2026, 10, 3), 12), sh(date(2026, 10, 8), 10)),
        # A worked Saturday ends Friday night's deferral at 10:00 ...
        (sh(date(2026, 2, 13), 20), sh(date(2026, 2, 14), 10)),
        # ... and the Spring Festival break after it runs to Tuesday 24 February.
        (sh(date(2026, 2, 14), 18), sh(date(2026, 2, 24), 10)),
        (sh(date(2026, 2, 14), 17, 59, 59), sh(date(2026, 2, 14), 17, 59, 59)),
        # A worked Sunday: Saturday's deferral ends Sunday 10:00.
        (sh(date(2026, 9, 19), 12), sh(date(2026, 9, 20), 10)),
        # Across the turn of the year: New Year 2026 runs to Saturday, Sunday 4 January is worked.
        (sh(date(2025, 12, 31), 20), sh(date(2026, 1, 4), 10)),
    ],
)
def test_next_unfriendly_follows_the_library(at: datetime, expected: datetime) -> None:
    """Library holidays are skipped, make-up working days are not."""
    assert next_unfriendly(at, CHINA) == expected


def test_next_unfriendly_is_now_outside_friendly_hours() -> None:
    """When a cut is allowed already, the answer is the same instant, in local time."""
    at = datetime(2025, 3, 12, 4, tzinfo=UTC)  # 12:00 Shanghai
    result = next_unfriendly(at, DEFAULT)
    assert result == at
    assert result.tzinfo is UTC


@pytest.mark.parametrize(
    ("at", "holidays", "expected"),
    [
        (sh(WEDNESDAY, 18), (), sh(WEDNESDAY + timedelta(days=1), 10)),
        (sh(WEDNESDAY, 23, 30), (), sh(WEDNESDAY + timedelta(days=1), 10)),
        (sh(WEDNESDAY + timedelta(days=1), 3), (), sh(WEDNESDAY + timedelta(days=1), 10)),
        # Friday evening: the weekend follows, then Monday morning is in the window.
        (sh(date(2025, 3, 14), 20), (), sh(date(2025, 3, 17), 10)),
        (sh(date(2025, 3, 15), 12), (), sh(date(2025, 3, 17), 10)),
        # ... and a listed Monday holiday moves it to Tuesday.
        (sh(date(2025, 3, 14), 20), (date(2025, 3, 17),), sh(date(2025, 3, 18), 10)),
        # National Day week 2025: 1-8 October listed, back on Thursday the 9th.
        (
            sh(date(2025, 9, 30), 20),
            tuple(date(2025, 10, d) for d in range(1, 9)),
            sh(date(2025, 10, 9), 10),
        ),
    ],
)
def test_next_unfriendly_skips_nights_weekends_and_holidays(
    at: datetime, holidays: tuple[date, ...], expected: datetime
) -> None:
    """The UI's "supply will be cut at" moment."""
    config = PolicyConfig(holidays=frozenset(holidays))
    result = next_unfriendly(at, config)
    assert result == expected
    assert result.tzinfo is UTC


# A window ending at 01:30 meets London's daylight-saving changes head on: on 2025-03-30 the
# clock jumps from 01:00 GMT to 02:00 BST (01:30 never happens), on 2025-10-26 it goes back
# from 02:00 BST to 01:00 GMT (01:00-02:00 happens twice).
NIGHT_LONDON = PolicyConfig(
    timezone="Europe/London",
    friendly_start=time(22),
    friendly_end=time(1, 30),
    friendly_weekends=False,
)


def test_next_unfriendly_when_the_window_end_is_skipped_in_spring() -> None:
    """01:30 does not exist that night: the window ends when the clock jumps past it."""
    at = datetime(2025, 3, 29, 23, tzinfo=UTC)  # 23:00 GMT Saturday, in the window
    assert is_friendly(at, NIGHT_LONDON)
    result = next_unfriendly(at, NIGHT_LONDON)
    assert result == datetime(2025, 3, 30, 1, tzinfo=UTC)
    local = result.astimezone(LONDON).replace(tzinfo=None)
    assert local == datetime(2025, 3, 30, 2, 0)  # the wall clock skipped 01:00-02:00
    assert is_friendly(result - timedelta(microseconds=1), NIGHT_LONDON)


def test_repeated_hour_in_autumn_is_judged_by_the_wall_clock() -> None:
    """01:00-01:30 happens twice on 2025-10-26 and is friendly both times."""
    assert not is_friendly(datetime(2025, 10, 26, 0, 59, 59, tzinfo=UTC), NIGHT_LONDON)
    assert is_friendly(datetime(2025, 10, 26, 1, 0, tzinfo=UTC), NIGHT_LONDON)  # 01:00 GMT
    start = datetime(2025, 10, 25, 23, tzinfo=UTC)  # 00:00 BST
    assert next_unfriendly(start, NIGHT_LONDON) == datetime(2025, 10, 26, 0, 30, tzinfo=UTC)
    second_pass = datetime(2025, 10, 26, 1, 10, tzinfo=UTC)  # 01:10 GMT
    assert next_unfriendly(second_pass, NIGHT_LONDON) == datetime(2025, 10, 26, 1, 30, tzinfo=UTC)
    # Unfriendly at 01:45 BST, the clock goes back to 01:00 GMT at 01:00 UTC: friendly again.
    evening = PolicyConfig(
        timezone="Europe/London",
        friendly_start=time(1, 40),
        friendly_end=time(10),
        friendly_weekends=False,
    )
    inside = datetime(2025, 10, 26, 0, 45, tzinfo=UTC)  # 01:45 BST, in [01:40, 10:00)
    assert is_friendly(inside, evening)
    assert next_unfriendly(inside, evening) == datetime(2025, 10, 26, 1, 0, tzinfo=UTC)


times_of_day = st.times().map(lambda t: t.replace(microsecond=0))
configs = st.builds(
    PolicyConfig,
    friendly_start=times_of_day,
    friendly_end=times_of_day,
    friendly_weekends=st.booleans(),
    holidays=st.frozensets(
        st.dates(min_value=date(2024, 12, 20), max_value=date(2025, 4, 10)), max_size=40
    ),
    timezone=st.sampled_from(["Asia/Shanghai", "Europe/London", "America/New_York"]),
    country=st.sampled_from([None, "CN", "GB"]),
    workdays=st.frozensets(
        st.dates(min_value=date(2024, 12, 20), max_value=date(2025, 4, 10)), max_size=10
    ),
)
instants = st.datetimes(
    min_value=datetime(2025, 1, 1), max_value=datetime(2025, 4, 1), timezones=st.just(UTC)
)


@given(config=configs, at=instants, fraction=st.fractions(min_value=0, max_value=1))
@SETTINGS
def test_next_unfriendly_is_the_first_unfriendly_moment(
    config: PolicyConfig, at: datetime, fraction: Any
) -> None:
    """The result is unfriendly, not before `at`, and everything from `at` up to it is friendly.

    The range covers New Year, Spring Festival-like runs of holidays, China's Spring Festival
    2025 with its worked Sunday and Saturday, and the March DST change of London and New York.
    """
    result = next_unfriendly(at, config)
    assert result >= at
    assert not is_friendly(result, config)
    if result > at:
        assert is_friendly(at, config)
        assert is_friendly(result - timedelta(microseconds=1), config)
        span_us = (result - at) // timedelta(microseconds=1)
        inside = at + timedelta(microseconds=int(span_us * fraction))
        assert inside == result or is_friendly(inside, config)


# --------------------------------------------------------------------------------------------
# decide_supply


def test_emergency_credit_edge() -> None:
    """Exactly -emergency_credit is still covered; one fen below is cut (outside hours)."""
    noon = sh(WEDNESDAY, 12)
    kept = decide_supply(
        Decimal("-10.00"), noon, supply_protected=False, supply_on=True, config=DEFAULT
    )
    cut = decide_supply(
        Decimal("-10.01"), noon, supply_protected=False, supply_on=True, config=DEFAULT
    )
    assert (kept.action, kept.reason) == ("keep", "in_credit")
    assert (cut.action, cut.reason) == ("cut", "credit_exhausted")


def test_zero_emergency_credit_cuts_below_zero() -> None:
    """Without emergency credit the cut line is zero itself."""
    config = PolicyConfig(emergency_credit=Decimal(0))
    noon = sh(WEDNESDAY, 12)
    assert decide_supply(Decimal(0), noon, supply_protected=False, supply_on=True, config=config)
    decision = decide_supply(-FEN, noon, supply_protected=False, supply_on=True, config=config)
    assert decision.action == "cut"


@pytest.mark.parametrize(
    ("balance", "at", "protected", "supply_on", "action", "reason"),
    [
        (Decimal(50), sh(WEDNESDAY, 12), False, True, "keep", "in_credit"),
        (Decimal(-5), sh(WEDNESDAY, 12), False, True, "keep", "in_credit"),
        (Decimal(-50), sh(WEDNESDAY, 12), False, True, "cut", "credit_exhausted"),
        (Decimal(-50), sh(WEDNESDAY, 18), False, True, "defer", "friendly_hours"),
        (Decimal(-50), sh(date(2025, 3, 15), 12), False, True, "defer", "friendly_hours"),
        (Decimal(-50), sh(WEDNESDAY, 12), True, True, "protected_debt", "supply_protected"),
        (Decimal(-50), sh(WEDNESDAY, 18), True, True, "protected_debt", "supply_protected"),
        (Decimal(50), sh(WEDNESDAY, 12), True, True, "keep", "in_credit"),
        (Decimal(-50), sh(WEDNESDAY, 12), False, False, "keep", "credit_exhausted"),
    ],
)
def test_supply_decisions(
    *,
    balance: Decimal,
    at: datetime,
    protected: bool,
    supply_on: bool,
    action: str,
    reason: str,
) -> None:
    """Keep in credit, defer in friendly hours, never cut the protected, nothing if off."""
    decision = decide_supply(
        balance, at, supply_protected=protected, supply_on=supply_on, config=DEFAULT
    )
    assert decision.action == action
    assert decision.reason == reason


balances = st.decimals(min_value=-10_000, max_value=10_000, places=2)
amounts = st.decimals(min_value=0, max_value=500, places=2)


@given(
    balance=balances,
    at=instants,
    supply_on=st.booleans(),
    config=configs,
    emergency=amounts,
)
@SETTINGS
def test_protected_households_are_never_cut(
    balance: Decimal, at: datetime, supply_on: bool, config: PolicyConfig, emergency: Decimal
) -> None:
    """For any balance, time and rules a protected household keeps its supply."""
    config = replace(config, emergency_credit=emergency)
    decision = decide_supply(balance, at, supply_protected=True, supply_on=supply_on, config=config)
    assert decision.action != "cut"
    if balance < -emergency:
        assert decision.action == "protected_debt"
        assert decision.reason == Reason.SUPPLY_PROTECTED
    else:
        assert decision.action == "keep"


@given(balance=balances, at=instants, config=configs)
@SETTINGS
def test_cut_only_when_credit_exhausted_outside_friendly_hours(
    balance: Decimal, at: datetime, config: PolicyConfig
) -> None:
    """A cut happens exactly when emergency credit is spent and the moment is unfriendly."""
    decision = decide_supply(balance, at, supply_protected=False, supply_on=True, config=config)
    exhausted = balance < -config.emergency_credit
    assert (decision.action == "cut") is (exhausted and not is_friendly(at, config))
    assert (decision.action == "defer") is (exhausted and is_friendly(at, config))


@given(
    balance=balances,
    emergency=amounts,
    gap=amounts,
    at=instants,
)
@SETTINGS
def test_a_restorable_balance_is_never_cut(
    balance: Decimal, emergency: Decimal, gap: Decimal, at: datetime
) -> None:
    """Whatever the threshold allowed by validation, restore and cut never disagree."""
    config = PolicyConfig(
        emergency_credit=emergency, reclose_threshold=-emergency + gap, auto_restore=True
    )
    restore = decide_restore(balance, requested_by="auto", operator_override=False, config=config)
    supply = decide_supply(balance, at, supply_protected=False, supply_on=True, config=config)
    if restore.allowed:
        assert supply.action == "keep"


# --------------------------------------------------------------------------------------------
# decide_restore


@pytest.mark.parametrize(
    ("balance", "requested_by", "override", "allowed", "reason"),
    [
        (Decimal("0.01"), "resident", False, True, "in_credit"),
        (Decimal(0), "resident", False, False, "credit_exhausted"),
        (Decimal(-3), "resident", False, False, "credit_exhausted"),
        (Decimal(-3), "resident", True, False, "credit_exhausted"),
        (Decimal(-3), "operator", False, False, "credit_exhausted"),
        (Decimal(-3), "operator", True, True, "operator_override"),
        (Decimal(50), "operator", False, True, "in_credit"),
        (Decimal(50), "auto", False, False, "auto_restore_disabled"),
        (Decimal(-3), "auto", True, False, "auto_restore_disabled"),
    ],
)
def test_restore_rules(
    balance: Decimal, requested_by: Any, override: bool, allowed: bool, reason: str
) -> None:
    """Restore above the threshold (strictly); below it only an operator may override."""
    decision = decide_restore(
        balance, requested_by=requested_by, operator_override=override, config=DEFAULT
    )
    assert (decision.allowed, decision.reason) == (allowed, reason)


def test_auto_restore_when_enabled() -> None:
    """With auto_restore, automatic requests follow the threshold and cannot override."""
    config = PolicyConfig(auto_restore=True, reclose_threshold=Decimal(5))
    assert decide_restore(
        Decimal("5.01"), requested_by="auto", operator_override=False, config=config
    ).allowed
    refused = decide_restore(Decimal(5), requested_by="auto", operator_override=True, config=config)
    assert (refused.allowed, refused.reason) == (False, "credit_exhausted")


@given(balance=balances, override=st.booleans())
@SETTINGS
def test_a_resident_never_restores_below_the_threshold(balance: Decimal, override: bool) -> None:
    """The resident's answer depends on the balance only, never on the override flag."""
    decision = decide_restore(
        balance, requested_by="resident", operator_override=override, config=DEFAULT
    )
    assert decision.allowed is (balance > DEFAULT.reclose_threshold)


# --------------------------------------------------------------------------------------------
# Warnings


@pytest.mark.parametrize(
    ("balance", "level"),
    [
        (Decimal("20.01"), WarningLevel.NONE),
        (Decimal(20), WarningLevel.LOW),
        (Decimal("5.01"), WarningLevel.LOW),
        (Decimal(5), WarningLevel.CRITICAL),
        (Decimal(-40), WarningLevel.CRITICAL),
    ],
)
def test_warning_levels(balance: Decimal, level: WarningLevel) -> None:
    """At or below level 1: LOW; at or below level 2: CRITICAL."""
    assert warning_level(balance, DEFAULT) is level


@given(a=balances, b=balances)
@SETTINGS
def test_warning_level_never_improves_as_balance_falls(a: Decimal, b: Decimal) -> None:
    """Monotone: a lower balance is never a better level."""
    low, high = sorted((a, b))
    assert warning_level(low, DEFAULT) >= warning_level(high, DEFAULT)


def _run(tracker: WarningTracker, key: str, values: list[str]) -> list[WarningLevel]:
    return [
        event.level
        for value in values
        if (event := tracker.update(key, Decimal(value))) is not None
    ]


def test_tracker_emits_once_per_downward_crossing() -> None:
    """25 -> 19 warns LOW once; further falls warn CRITICAL once; deeper debt is silent."""
    tracker = WarningTracker(DEFAULT)
    first = tracker.update("m1", Decimal(19))
    assert first is not None
    assert (first.key, first.level, first.previous, first.balance) == (
        "m1",
        WarningLevel.LOW,
        WarningLevel.NONE,
        Decimal(19),
    )
    assert _run(tracker, "m1", ["18", "17", "4", "3", "-3", "-20"]) == [WarningLevel.CRITICAL]
    assert tracker.level("m1") is WarningLevel.CRITICAL


def test_tracker_falling_straight_to_critical_emits_one_event() -> None:
    """Skipping LOW gives one CRITICAL warning, not two."""
    tracker = WarningTracker(DEFAULT)
    assert _run(tracker, "m1", ["30", "2", "1"]) == [WarningLevel.CRITICAL]


def test_tracker_hysteresis_stops_hovering_spam() -> None:
    """Hovering around 20 warns once; only climbing above 21 re-arms the warning."""
    tracker = WarningTracker(DEFAULT)
    hovering = ["20.50", "19.90", "20.30", "19.50", "20.90", "19.99", "21.00", "19.80"]
    assert _run(tracker, "m1", hovering) == [WarningLevel.LOW]
    assert _run(tracker, "m1", ["21.01", "20.00"]) == [WarningLevel.LOW]
    # Critical hovering at 5 re-arms to LOW above 6, not to NONE.
    assert _run(tracker, "m1", ["4.9", "5.5", "4.8", "6.00", "4.7"]) == [WarningLevel.CRITICAL]
    assert _run(tracker, "m1", ["6.01", "5.00"]) == [WarningLevel.CRITICAL]
    assert tracker.level("m1") is WarningLevel.CRITICAL


def test_tracker_top_up_rearms_at_once() -> None:
    """After a top-up the current level counts, without hysteresis."""
    tracker = WarningTracker(DEFAULT)
    assert _run(tracker, "m1", ["4"]) == [WarningLevel.CRITICAL]
    assert tracker.update("m1", Decimal("5.50"), top_up=True) is None
    assert tracker.level("m1") is WarningLevel.LOW
    assert _run(tracker, "m1", ["4.90"]) == [WarningLevel.CRITICAL]
    assert tracker.update("m1", Decimal("20.50"), top_up=True) is None
    assert tracker.level("m1") is WarningLevel.NONE
    assert _run(tracker, "m1", ["20"]) == [WarningLevel.LOW]


def test_tracker_keys_are_independent_and_state_survives_restart() -> None:
    """Each household has its own state; `levels()` seeds a new tracker without re-warning."""
    tracker = WarningTracker(DEFAULT)
    assert _run(tracker, "a", ["10"]) == [WarningLevel.LOW]
    assert _run(tracker, "b", ["3"]) == [WarningLevel.CRITICAL]
    assert _run(tracker, "c", ["100"]) == []
    saved = tracker.levels()
    assert saved == {"a": WarningLevel.LOW, "b": WarningLevel.CRITICAL}
    restarted = WarningTracker(DEFAULT, initial=saved)
    assert _run(restarted, "a", ["9"]) == []
    assert _run(restarted, "b", ["2"]) == []
    assert _run(restarted, "a", ["4"]) == [WarningLevel.CRITICAL]
    restarted.forget("a")
    assert restarted.level("a") is WarningLevel.NONE
    assert _run(restarted, "a", ["4"]) == [WarningLevel.CRITICAL]


def test_tracker_refuses_negative_hysteresis() -> None:
    """A negative hysteresis would make no sense."""
    with pytest.raises(ValueError, match="hysteresis"):
        WarningTracker(DEFAULT, hysteresis=Decimal(-1))


def _threshold(level: WarningLevel) -> Decimal:
    return DEFAULT.warn_level_1 if level is WarningLevel.LOW else DEFAULT.warn_level_2


@given(st.lists(st.decimals(min_value=-10, max_value=30, places=1), min_size=1, max_size=60))
@SETTINGS
def test_tracker_neither_spams_nor_misses(walk: list[Decimal]) -> None:
    """Without top-ups, a level is warned again only after the balance cleared it by 1 CNY,
    and a fall back to a level after clearing it is always warned."""
    tracker = WarningTracker(DEFAULT)
    events = {i: e for i, b in enumerate(walk) if (e := tracker.update("m", b)) is not None}
    for i, event in events.items():
        assert event.level is warning_level(walk[i], DEFAULT)
        assert event.level > event.previous
    for level in (WarningLevel.LOW, WarningLevel.CRITICAL):
        warned = [i for i, e in events.items() if e.level >= level]
        cleared = [i for i, b in enumerate(walk) if b > _threshold(level) + 1]
        # events that take the announced level from below `level` to it or beyond
        warned = [i for i, e in events.items() if e.previous < level <= e.level]
        cleared = [i for i, b in enumerate(walk) if b > _threshold(level) + 1]
        for before, after in itertools.pairwise(warned):
            assert any(before < k < after for k in cleared)
        reached = [i for i, b in enumerate(walk) if warning_level(b, DEFAULT) >= level]
        for start in [-1, *cleared]:
            later = [i for i in reached if i > start]
            if later:
                assert later[0] in warned


# --------------------------------------------------------------------------------------------
# estimate_days_left


@pytest.mark.parametrize(
    ("balance", "daily", "days"),
    [
        (Decimal(30), Decimal(3), Decimal("10.0")),
        (Decimal(10), Decimal(3), Decimal("3.3")),
        (Decimal("0.01"), Decimal(100), Decimal("0.0")),
        (Decimal(0), Decimal(3), Decimal(0)),
        (Decimal(-5), Decimal(3), Decimal(0)),
        (Decimal(30), None, None),
        (Decimal(30), Decimal(0), None),
    ],
)
def test_estimate_days_left(balance: Decimal, daily: Decimal | None, days: Decimal | None) -> None:
    """Rounded down to a tenth of a day; no estimate without a positive daily cost."""
    assert estimate_days_left(balance, daily) == days


@given(balance=st.decimals(min_value="0.01", max_value=5000, places=2), daily=amounts)
@SETTINGS
def test_estimate_is_never_optimistic(balance: Decimal, daily: Decimal) -> None:
    """The estimate times the daily cost never exceeds the balance, by less than 0.1 day."""
    assume(daily > 0)
    days = estimate_days_left(balance, daily)
    assert days is not None
    assert days * daily <= balance < (days + Decimal("0.1")) * daily


# --------------------------------------------------------------------------------------------
# Options


def test_from_options_defaults_and_round_trip() -> None:
    """Empty options give the defaults; to_options survives JSON and reads back equal."""
    assert PolicyConfig.from_options({}) == DEFAULT
    options = json.loads(json.dumps(DEFAULT.to_options()))
    assert PolicyConfig.from_options(options) == DEFAULT
    assert DEFAULT.zone == SHANGHAI


def test_from_options_reads_plain_values() -> None:
    """Strings, floats (through their repr), ints and objects all read exactly."""
    config = PolicyConfig.from_options(
        {
            "warn_level_1": 30.1,
            "warn_level_2": "7.50",
            "emergency_credit": 0,
            "friendly_start": "20:00",
            "friendly_end": time(7, 30),
            "friendly_weekends": False,
            "holidays": ["2025-10-01", date(2025, 10, 2), "2025-10-01"],
            "reclose_threshold": Decimal("0.5"),
            "auto_restore": True,
            "timezone": "Europe/London",
            "tariff": "flat",  # another part of the entry's options: ignored
        }
    )
    assert config == PolicyConfig(
        warn_level_1=Decimal("30.1"),
        warn_level_2=Decimal("7.50"),
        emergency_credit=Decimal(0),
        friendly_start=time(20),
        friendly_end=time(7, 30),
        friendly_weekends=False,
        holidays=frozenset({date(2025, 10, 1), date(2025, 10, 2)}),
        reclose_threshold=Decimal("0.5"),
        auto_restore=True,
        timezone="Europe/London",
    )
    assert PolicyConfig.from_options({"friendly_start": "18:00:00"}) == DEFAULT
    assert PolicyConfig.from_options({"_days": {}}) == DEFAULT  # not an option


def test_country_and_workdays_round_trip() -> None:
    """The new options read, write and read back equal, through JSON."""
    config = PolicyConfig.from_options(
        {
            "country": "cn",
            "holidays": ["2026-03-11"],
            "workdays": ["2026-10-01", date(2026, 3, 7), "2026-10-01"],
        }
    )
    assert config == replace(
        CHINA,
        holidays=frozenset({date(2026, 3, 11)}),
        workdays=frozenset({date(2026, 3, 7), date(2026, 10, 1)}),
    )
    options = config.to_options()
    assert options["country"] == "CN"
    assert options["workdays"] == ["2026-03-07", "2026-10-01"]
    assert PolicyConfig.from_options(json.loads(json.dumps(options))) == config
    assert DEFAULT.to_options()["country"] is None
    assert DEFAULT.to_options()["workdays"] == []


@pytest.mark.parametrize(
    ("options", "field", "key"),
    [
        ({"warn_level_2": 25}, "warn_level_2", "warn_levels_order"),
        ({"warn_level_1": 5}, "warn_level_2", "warn_levels_order"),
        ({"warn_level_2": -1}, "warn_level_2", "negative_amount"),
        ({"emergency_credit": "-0.01"}, "emergency_credit", "negative_amount"),
        ({"reclose_threshold": -11}, "reclose_threshold", "reclose_below_cut"),
        ({"warn_level_1": "twenty"}, "warn_level_1", "invalid_amount"),
        ({"warn_level_1": "NaN"}, "warn_level_1", "invalid_amount"),
        ({"emergency_credit": float("inf")}, "emergency_credit", "invalid_amount"),
        ({"emergency_credit": True}, "emergency_credit", "invalid_amount"),
        ({"friendly_start": "25:00"}, "friendly_start", "invalid_time"),
        ({"friendly_end": "10:60"}, "friendly_end", "invalid_time"),
        ({"friendly_end": "6pm"}, "friendly_end", "invalid_time"),
        ({"friendly_start": 18}, "friendly_start", "invalid_time"),
        ({"holidays": ["2025-02-30"]}, "holidays", "invalid_date"),
        ({"holidays": ["2025-10-01", "1 October"]}, "holidays", "invalid_date"),
        ({"holidays": "2025-10-01"}, "holidays", "invalid_date"),
        ({"holidays": [datetime(2025, 10, 1, tzinfo=UTC)]}, "holidays", "invalid_date"),
        ({"holidays": 20251001}, "holidays", "invalid_date"),
        ({"friendly_weekends": "yes"}, "friendly_weekends", "invalid_bool"),
        ({"timezone": "Mars/Olympus"}, "timezone", "invalid_timezone"),
        ({"timezone": 8}, "timezone", "invalid_timezone"),
        ({"workdays": ["2026-10-32"]}, "workdays", "invalid_date"),
        ({"workdays": "2026-10-01"}, "workdays", "invalid_date"),
        ({"country": "XX"}, "country", "invalid_country"),
    ],
)
def test_from_options_errors_name_the_field(options: dict[str, Any], field: str, key: str) -> None:
    """Each bad value raises one PolicyError (a ValueError) naming the option."""
    with pytest.raises(PolicyError) as caught:
        PolicyConfig.from_options(options)
    error = caught.value
    assert isinstance(error, ValueError)
    assert error.field == field
    assert error.translation_key == key
    assert str(error).startswith(field) or field in str(error)
    assert "\n" not in str(error)


def test_direct_construction_is_checked_too() -> None:
    """The cross-field rules hold however the config is built."""
    with pytest.raises(PolicyError, match="warn_level_2"):
        PolicyConfig(warn_level_1=Decimal(5), warn_level_2=Decimal(5))
    with pytest.raises(PolicyError, match="friendly_start"):
        PolicyConfig(friendly_start=time(18, 0, 0, 5))
    with pytest.raises(PolicyError, match="timezone"):
        PolicyConfig(timezone="Nowhere/Land")
    with pytest.raises(PolicyError, match="emergency_credit") as caught:
        PolicyConfig(emergency_credit=Decimal("Infinity"))
    assert caught.value.translation_key == "invalid_amount"


def test_options_must_be_a_mapping() -> None:
    """Anything but a mapping is refused with one message, not a TypeError."""
    with pytest.raises(PolicyError, match="mapping") as caught:
        PolicyConfig.from_options(["warn_level_1", 20])  # type: ignore[arg-type]
    assert caught.value.field is None
    assert caught.value.translation_key == "invalid_options"


money = st.decimals(min_value=0, max_value=1000, places=2)


@given(
    level_2=money,
    above=st.decimals(min_value="0.01", max_value=1000, places=2),
    emergency=money,
    gap=money,
    config=configs,
    auto=st.booleans(),
)
@SETTINGS
def test_options_round_trip(
    *,
    level_2: Decimal,
    above: Decimal,
    emergency: Decimal,
    gap: Decimal,
    config: PolicyConfig,
    auto: bool,
) -> None:
    """Any valid config survives to_options, JSON and from_options unchanged."""
    full = PolicyConfig(
        warn_level_1=level_2 + above,
        warn_level_2=level_2,
        emergency_credit=emergency,
        friendly_start=config.friendly_start,
        friendly_end=config.friendly_end,
        friendly_weekends=config.friendly_weekends,
        holidays=config.holidays,
        reclose_threshold=gap - emergency,
        auto_restore=auto,
        timezone=config.timezone,
        country=config.country,
        workdays=config.workdays,
    )
    assert PolicyConfig.from_options(json.loads(json.dumps(full.to_options()))) == full
