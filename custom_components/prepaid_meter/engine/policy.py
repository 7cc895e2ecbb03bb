"""Prepaid supply rules: low-balance warnings, when supply may be cut, and when it may return.

Pure logic: no asyncio, no Home Assistant, no clock of its own (every function that depends on
time takes an aware `datetime`), and no I/O except once, when a config with a `country` is
built (the holiday library loads that country). The rules follow two practices:

* UK smart prepayment (Ofgem licence conditions): emergency credit is spent before supply is
  interrupted; supply is never interrupted during "friendly-credit" hours (evenings, nights,
  weekends, public holidays); households flagged as needing protection (vulnerable residents,
  medical equipment) are never cut, their debt is only recorded; supply returns once a top-up
  has paid back the emergency credit used.
* State Grid cost-control meters: two low-balance warning levels, each announced once when the
  balance falls through it; the relay recloses only after a top-up takes the balance above a
  threshold.

Only the electricity balance ever enters these functions. Property and parking fee arrears are
deliberately absent: Article 944 of the Civil Code of the PRC forbids a property manager from
cutting power (or water, heat, gas) to collect property fees, so no fee balance may influence a
cut, a warning that threatens a cut, or a restore.

Sign conventions: a balance is in CNY; negative means the household is in debt (running on
emergency credit, or on friendly-hours credit). The supply is cut only when
`balance < -emergency_credit`; exactly `-emergency_credit` is still within emergency credit.
Restore needs `balance > reclose_threshold` (strictly above: with the default threshold 0 the
emergency credit used must be paid back and at least one fen of credit remain, the UK rule).
`reclose_threshold >= -emergency_credit` is enforced, so a balance that allows a restore never
also triggers a cut (no relay flapping).

Friendly hours are judged on the local wall clock of `PolicyConfig.timezone`. The daily window
is half-open, `[friendly_start, friendly_end)`, and wraps midnight when start > end (the default
18:00-10:00 means no cut in the evening or at night); start == end means no daily window. A
whole local day is friendly when it is a public holiday, or a Saturday or Sunday (with
`friendly_weekends`) that is not a make-up working day; with a window that wraps midnight the
morning after such a day is friendly too, because it lies in the window anyway.

Public holidays and official make-up working days (China's 调休: a Saturday or Sunday worked to
lengthen a holiday) come from the `holidays` library, the calendar of Home Assistant's own
workday integration, for `PolicyConfig.country`; the operator's lists only correct it:
`holidays` adds days, `workdays` removes them. A day listed in `workdays` is never friendly as a
whole day, even when the library calls it a holiday or it is a weekend day. Library holidays
are the country-wide public ones (no regional ones, no half days), observed days included.

Where daylight saving time exists the wall clock decides: an hour repeated in autumn is judged
twice by its wall time, an hour skipped in spring never happens.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields
from datetime import MAXYEAR, MINYEAR, UTC, date, datetime, time, timedelta
from decimal import ROUND_FLOOR, Decimal, InvalidOperation
from enum import IntEnum, StrEnum
import re
import threading
from typing import Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import holidays as holiday_library
import voluptuous as vol

__all__ = [
    "PolicyConfig",
    "PolicyError",
    "Reason",
    "RestoreDecision",
    "SupplyAction",
    "SupplyDecision",
    "WarningEvent",
    "WarningLevel",
    "WarningTracker",
    "decide_restore",
    "decide_supply",
    "estimate_days_left",
    "is_friendly",
    "library_country",
    "next_unfriendly",
    "warning_level",
]

type SupplyAction = Literal["keep", "cut", "defer", "protected_debt"]
type Requester = Literal["resident", "operator", "auto"]

_TIME_RE = re.compile(r"^(\d{2}):(\d{2})(?::(\d{2}))?$")
_US = timedelta(microseconds=1)
_DAY = timedelta(days=1)
_SATURDAY = 5
# The longest run of library holidays and weekend days next_unfriendly has to walk through
# (China's Spring Festival with its weekends is nine days; no calendar comes near this).
_LONGEST_LIBRARY_RUN = 60


class PolicyError(ValueError):
    """Policy options that cannot be used: one clear message naming the option.

    `translation_key` is a stable key for the user interface (an options flow can show it
    under `field`); `placeholders` fills the translated text.
    """

    def __init__(
        self,
        message: str,
        *,
        translation_key: str,
        field: str | None = None,
        placeholders: Mapping[str, str] | None = None,
    ) -> None:
        """Keep the message, the translation key and the option it is about."""
        super().__init__(message)
        self.translation_key = translation_key
        self.field = field
        self.placeholders: dict[str, str] = dict(placeholders or {})


class Reason(StrEnum):
    """Stable, translation-key-like reasons carried by decisions."""

    IN_CREDIT = "in_credit"
    CREDIT_EXHAUSTED = "credit_exhausted"
    FRIENDLY_HOURS = "friendly_hours"
    SUPPLY_PROTECTED = "supply_protected"
    OPERATOR_OVERRIDE = "operator_override"
    AUTO_RESTORE_DISABLED = "auto_restore_disabled"


class WarningLevel(IntEnum):
    """How low a balance is; a higher value is worse."""

    NONE = 0
    LOW = 1
    CRITICAL = 2


# --------------------------------------------------------------------------------------------
# Configuration


@dataclass(frozen=True, slots=True)
class PolicyConfig:
    """The supply rules of one community; build it from options with `from_options`."""

    warn_level_1: Decimal = Decimal(20)
    warn_level_2: Decimal = Decimal(5)
    emergency_credit: Decimal = Decimal(10)
    friendly_start: time = time(18, 0)
    friendly_end: time = time(10, 0)
    friendly_weekends: bool = True
    holidays: frozenset[date] = field(default_factory=frozenset)
    reclose_threshold: Decimal = Decimal(0)
    auto_restore: bool = False
    timezone: str = "Asia/Shanghai"
    country: str | None = None
    workdays: frozenset[date] = field(default_factory=frozenset)
    _days: dict[int, _Days] = field(
        default_factory=dict, init=False, repr=False, compare=False, hash=False
    )

    def __post_init__(self) -> None:
        """Check the rules that tie options together (also for direct construction)."""
        for name in ("warn_level_1", "warn_level_2", "emergency_credit", "reclose_threshold"):
            value = getattr(self, name)
            if not isinstance(value, Decimal) or not value.is_finite():
                raise PolicyError(
                    f"{name} must be a finite Decimal amount, got {value!r}",
                    translation_key="invalid_amount",
                    field=name,
                    placeholders={"value": str(value)},
                )
        for name in ("friendly_start", "friendly_end"):
            value = getattr(self, name)
            if not isinstance(value, time) or value.tzinfo is not None or value.microsecond:
                raise PolicyError(
                    f"{name} must be a local time of day to the second, without a time zone, "
                    f"got {value!r}",
                    translation_key="invalid_time",
                    field=name,
                    placeholders={"value": str(value)},
                )
        _zone(self.timezone)
        country = _country_code(self.country)
        if country != self.country:
            object.__setattr__(self, "country", country)
        if country is not None:
            _calendar(country)  # unknown codes fail here; the library loads its country module
        if self.warn_level_2 < 0:
            raise PolicyError(
                f"warn_level_2 must be 0 or more, got {self.warn_level_2}",
                translation_key="negative_amount",
                field="warn_level_2",
                placeholders={"value": str(self.warn_level_2)},
            )
        if self.warn_level_1 <= self.warn_level_2:
            raise PolicyError(
                f"warn_level_2 ({self.warn_level_2}) must be lower than warn_level_1 "
                f"({self.warn_level_1}): the second warning is the more urgent one",
                translation_key="warn_levels_order",
                field="warn_level_2",
                placeholders={"level_1": str(self.warn_level_1), "level_2": str(self.warn_level_2)},
            )
        if self.emergency_credit < 0:
            raise PolicyError(
                f"emergency_credit must be 0 or more, got {self.emergency_credit}",
                translation_key="negative_amount",
                field="emergency_credit",
                placeholders={"value": str(self.emergency_credit)},
            )
        if self.reclose_threshold < -self.emergency_credit:
            raise PolicyError(
                f"reclose_threshold ({self.reclose_threshold}) must not be below minus the "
                f"emergency credit ({-self.emergency_credit}), or a restored supply would be cut "
                "again at once",
                translation_key="reclose_below_cut",
                field="reclose_threshold",
                placeholders={
                    "value": str(self.reclose_threshold),
                    "minimum": str(-self.emergency_credit),
                },
            )

    @property
    def zone(self) -> ZoneInfo:
        """The community's time zone."""
        return ZoneInfo(self.timezone)

    @classmethod
    def from_options(cls, options: Mapping[str, Any]) -> PolicyConfig:
        """Validate plain options (as a config entry stores them) into a config.

        Missing keys take their defaults and keys that are not policy options are ignored
        (the options mapping of a config entry holds other settings too). Amounts may be
        Decimal, int, a decimal string or a float (read through its shortest repr, never
        binary), times "HH:MM" or "HH:MM:SS" strings, holidays and workdays lists of ISO
        dates, country an ISO 3166 code the `holidays` library knows (any case; None or ""
        for no library holidays). Raises `PolicyError` naming the first bad option.

        With a country this imports the library's module for it and reads its translation
        files (blocking I/O: in Home Assistant call it in the executor, not the event loop);
        the holidays of each year are worked out later, on first use, without I/O.
        """
        if not isinstance(options, Mapping):
            raise PolicyError(
                f"policy options must be a mapping of option names to values, got {options!r}",
                translation_key="invalid_options",
            )
        try:
            valid: dict[str, Any] = _SCHEMA(dict(options))
        except vol.MultipleInvalid as err:  # a Schema call always wraps its errors in this
            raise _policy_error(err.errors[0]) from None
        known = {f.name for f in fields(cls) if f.init}
        return cls(**{key: value for key, value in valid.items() if key in known})

    def to_options(self) -> dict[str, Any]:
        """Return JSON-friendly options that `from_options` reads back to an equal config.

        Amounts are decimal strings (exact), times "HH:MM:SS", holidays and workdays sorted
        ISO dates, country the code or None.
        """
        return {
            "warn_level_1": str(self.warn_level_1),
            "warn_level_2": str(self.warn_level_2),
            "emergency_credit": str(self.emergency_credit),
            "friendly_start": self.friendly_start.isoformat(),
            "friendly_end": self.friendly_end.isoformat(),
            "friendly_weekends": self.friendly_weekends,
            "holidays": [day.isoformat() for day in sorted(self.holidays)],
            "reclose_threshold": str(self.reclose_threshold),
            "auto_restore": self.auto_restore,
            "timezone": self.timezone,
            "country": self.country,
            "workdays": [day.isoformat() for day in sorted(self.workdays)],
        }

    def _friendly_and_working(self, year: int) -> _Days:
        """Return the whole friendly days and the worked weekend days of `year`, cached."""
        found = self._days.get(year)
        if found is None:
            library_holidays, library_workdays = (
                _calendar(self.country).year(year) if self.country else (frozenset(), frozenset())
            )
            found = (
                (library_holidays | self.holidays) - self.workdays,
                library_workdays | self.workdays,
            )
            self._days[year] = found
        return found


type _Days = tuple[frozenset[date], frozenset[date]]


class _Calendar:
    """The library's public holidays and make-up working days of one country, by year."""

    def __init__(self, country: str) -> None:
        """Load the country (imports its module, reads translation files: blocking I/O)."""
        try:
            self._library = holiday_library.country_holidays(country)
        except NotImplementedError:
            raise PolicyError(
                f"country must be an ISO 3166 country code the holidays library knows, such "
                f"as CN, got {country!r}",
                translation_key="invalid_country",
                field="country",
                placeholders={"value": country},
            ) from None
        self._lock = threading.Lock()
        self._years: dict[int, _Days] = {}

    def year(self, year: int) -> _Days:
        """Return the library's holidays and worked weekend days in `year` (no I/O)."""
        found = self._years.get(year)
        if found is not None:
            return found
        with self._lock:  # the library object fills itself in as years are asked for
            library = self._library
            # A year's calendar can move days into its neighbours (a holiday observed early
            # in January, a weekend worked in December for the next year's holiday), so the
            # neighbours are filled in too. Looking a date up fills in its year.
            for near in range(max(year - 1, MINYEAR), min(year + 1, MAXYEAR) + 1):
                _ = date(near, 1, 1) in library
            found = (
                frozenset(day for day in library if day.year == year),
                frozenset(day for day in library.weekend_workdays if day.year == year),
            )
            self._years[year] = found
        return found


_CALENDARS: dict[str, _Calendar] = {}


def _calendar(country: str) -> _Calendar:
    """Return the shared calendar of `country`, loading it the first time."""
    found = _CALENDARS.get(country)
    if found is None:
        found = _CALENDARS.setdefault(country, _Calendar(country))
    return found


def library_country(code: object) -> str | None:
    """Return `code` as a country option if the holidays library knows it, else None.

    For a default taken from elsewhere (Home Assistant's configured country): a country the
    library lacks then means no library holidays instead of a config that cannot be built.
    Loads the country like `PolicyConfig.from_options` (blocking I/O the first time).
    """
    try:
        country = _country_code(code)
        if country is not None:
            _calendar(country)
    except PolicyError:
        return None
    return country


def _country_code(value: object) -> str | None:
    """Normalise a country option: None or "" for none, else the code in capitals."""
    if value is None:
        return None
    if isinstance(value, str):
        return value.strip().upper() or None
    raise PolicyError(
        f"country must be an ISO 3166 country code such as CN, got {value!r}",
        translation_key="invalid_country",
        field="country",
        placeholders={"value": str(value)},
    )


class _Invalid(vol.Invalid):
    """A voluptuous error that also carries the translation key for the user interface.

    The key is kept as `reason_key`: the validator behind `voluptuous` in current Home
    Assistant gives `Invalid` a read-only `translation_key` of its own.
    """

    def __init__(self, message: str, reason_key: str, value: object) -> None:
        super().__init__(message)
        self.reason_key = reason_key
        self.value = value


def _policy_error(error: vol.Invalid) -> PolicyError:
    path = [str(part) for part in error.path]
    name = path[0] if path else None
    key = error.reason_key if isinstance(error, _Invalid) else "invalid_option"
    value = getattr(error, "value", None)
    message = f"{name} {error.msg}" if name else str(error.msg)
    return PolicyError(
        message,
        translation_key=key,
        field=name,
        placeholders={"value": str(value)} if value is not None else None,
    )


def _amount(value: object) -> Decimal:
    """Read an amount of money without ever going through binary floating point."""
    amount: Decimal | None = None
    if isinstance(value, Decimal):
        amount = value
    elif isinstance(value, int) and not isinstance(value, bool):
        amount = Decimal(value)
    elif isinstance(value, float):
        amount = Decimal(repr(value))
    elif isinstance(value, str):
        try:
            amount = Decimal(value.strip())
        except InvalidOperation:
            amount = None
    if amount is None or not amount.is_finite():
        raise _Invalid(
            f"must be an amount in CNY such as 20 or 5.50, got {value!r}", "invalid_amount", value
        )
    return amount


def _time_of_day(value: object) -> time:
    if isinstance(value, time) and value.tzinfo is None and value.microsecond == 0:
        return value
    if isinstance(value, str) and (match := _TIME_RE.match(value.strip())):
        hour, minute, second = (int(part) for part in match.groups("0"))
        if hour < 24 and minute < 60 and second < 60:
            return time(hour, minute, second)
    raise _Invalid(
        f"must be a local time of day as HH:MM or HH:MM:SS such as 18:00, got {value!r}",
        "invalid_time",
        value,
    )


def _holiday(value: object) -> date:
    if isinstance(value, date) and not isinstance(value, datetime):
        return value
    if isinstance(value, str):
        try:
            return date.fromisoformat(value.strip())
        except ValueError:
            pass
    raise _Invalid(
        f"must list dates as YYYY-MM-DD such as 2025-10-01, got {value!r}", "invalid_date", value
    )


def _holidays(value: object) -> frozenset[date]:
    if isinstance(value, (str, bytes, Mapping)) or not hasattr(value, "__iter__"):
        raise _Invalid(
            f"must be a list of dates as YYYY-MM-DD, got {value!r}", "invalid_date", value
        )
    return frozenset(_holiday(item) for item in value)


def _country(value: object) -> str | None:
    try:
        code = _country_code(value)
        if code is not None:
            _calendar(code)
    except PolicyError:
        raise _Invalid(
            f"must be an ISO 3166 country code the holidays library knows, such as CN, "
            f"got {value!r}",
            "invalid_country",
            value,
        ) from None
    return code


def _flag(value: object) -> bool:
    if isinstance(value, bool):
        return value
    raise _Invalid(f"must be true or false, got {value!r}", "invalid_bool", value)


def _timezone(value: object) -> str:
    if isinstance(value, str):
        try:
            _zone(value)
        except PolicyError:
            pass
        else:
            return value
    raise _Invalid(
        f"must be an IANA time zone such as Asia/Shanghai, got {value!r}",
        "invalid_timezone",
        value,
    )


def _zone(key: str) -> ZoneInfo:
    try:
        return ZoneInfo(key)
    except (ZoneInfoNotFoundError, ValueError, TypeError):
        raise PolicyError(
            f"timezone must be an IANA time zone such as Asia/Shanghai, got {key!r}",
            translation_key="invalid_timezone",
            field="timezone",
            placeholders={"value": str(key)},
        ) from None


_VALIDATORS: dict[str, Callable[[Any], Any]] = {
    "warn_level_1": _amount,
    "warn_level_2": _amount,
    "emergency_credit": _amount,
    "friendly_start": _time_of_day,
    "friendly_end": _time_of_day,
    "friendly_weekends": _flag,
    "holidays": _holidays,
    "reclose_threshold": _amount,
    "auto_restore": _flag,
    "timezone": _timezone,
    "country": _country,
    "workdays": _holidays,
}
_SCHEMA = vol.Schema(
    {vol.Optional(name): check for name, check in _VALIDATORS.items()}, extra=vol.ALLOW_EXTRA
)


# --------------------------------------------------------------------------------------------
# Warnings


def warning_level(balance: Decimal, config: PolicyConfig) -> WarningLevel:
    """Return how low `balance` is: at or below level 2 CRITICAL, at or below level 1 LOW."""
    if balance <= config.warn_level_2:
        return WarningLevel.CRITICAL
    if balance <= config.warn_level_1:
        return WarningLevel.LOW
    return WarningLevel.NONE


@dataclass(frozen=True, slots=True)
class WarningEvent:
    """A balance fell through a warning level: tell the household once."""

    key: str
    level: WarningLevel
    previous: WarningLevel
    balance: Decimal


class WarningTracker:
    """Turn successive balances of many households into warnings, once per downward crossing.

    Per key (a meter or household id) the tracker remembers the worst level already announced.
    A balance at a worse level emits one `WarningEvent` (falling straight from NONE to
    CRITICAL emits one CRITICAL event, not two). The tracker re-arms a level only when the
    balance climbs above that level's threshold plus `hysteresis` (1 CNY by default), or at
    once on a top-up (`update(..., top_up=True)`), so a balance hovering around a threshold
    does not repeat the warning. `levels()` and `initial` let the caller keep the state across
    restarts so nobody is warned twice for the same fall.
    """

    def __init__(
        self,
        config: PolicyConfig,
        *,
        hysteresis: Decimal = Decimal(1),
        initial: Mapping[str, WarningLevel] | None = None,
    ) -> None:
        """Start with the announced levels of `initial` (NONE for keys not listed)."""
        if not isinstance(hysteresis, Decimal) or not hysteresis.is_finite() or hysteresis < 0:
            raise ValueError(f"hysteresis must be a Decimal of 0 or more, got {hysteresis!r}")
        self.config = config
        self.hysteresis = hysteresis
        self._announced: dict[str, WarningLevel] = {
            key: WarningLevel(level) for key, level in (initial or {}).items()
        }

    def update(self, key: str, balance: Decimal, *, top_up: bool = False) -> WarningEvent | None:
        """Record the latest balance of `key`; return an event when it got worse."""
        previous = self._announced.get(key, WarningLevel.NONE)
        level = warning_level(balance, self.config)
        if level > previous:
            self._announced[key] = level
            return WarningEvent(key=key, level=level, previous=previous, balance=balance)
        if top_up:
            rearmed = level
        else:
            rearmed = min(previous, warning_level(balance - self.hysteresis, self.config))
        if rearmed == WarningLevel.NONE:
            self._announced.pop(key, None)
        else:
            self._announced[key] = rearmed
        return None

    def level(self, key: str) -> WarningLevel:
        """Return the worst level announced for `key` and not re-armed since."""
        return self._announced.get(key, WarningLevel.NONE)

    def levels(self) -> dict[str, WarningLevel]:
        """Return the announced levels of all keys above NONE (to persist them)."""
        return dict(self._announced)

    def forget(self, key: str) -> None:
        """Drop what is known about `key` (a meter removed, a household moved out)."""
        self._announced.pop(key, None)


# --------------------------------------------------------------------------------------------
# Friendly hours


def _local(at: datetime, config: PolicyConfig) -> datetime:
    if at.tzinfo is None or at.utcoffset() is None:
        raise ValueError(f"a time-zone-aware datetime is needed, got {at!r}")
    return at.astimezone(config.zone)


def _in_window(moment: time, config: PolicyConfig) -> bool:
    start, end = config.friendly_start, config.friendly_end
    if start == end:
        return False
    if start < end:
        return start <= moment < end
    return moment >= start or moment < end


def _friendly_day(day: date, config: PolicyConfig) -> bool:
    friendly, working = config._friendly_and_working(day.year)
    if day in friendly:
        return True
    return config.friendly_weekends and day.weekday() >= _SATURDAY and day not in working


def _friendly_local(local: datetime, config: PolicyConfig) -> bool:
    return _friendly_day(local.date(), config) or _in_window(local.time(), config)


def is_friendly(at: datetime, config: PolicyConfig) -> bool:
    """Return whether `at` lies in friendly hours, when supply is never cut.

    Friendly: inside the daily window, on a public holiday (the library's for
    `config.country` and the listed `holidays`, less the listed `workdays`), or on a Saturday or
    Sunday (with `friendly_weekends`) that is neither a make-up working day of the library nor
    a listed workday, all judged on the local wall clock of `config.timezone`.
    """
    return _friendly_local(_local(at, config), config)


def _next_change(local: datetime, config: PolicyConfig) -> datetime:
    """Return the first instant after `local` at which friendliness may change.

    That is the next window edge or local midnight on the wall clock, or a UTC offset change
    (daylight saving) before it, whichever comes first. Assumes at most one offset change in
    the span to the next wall-clock edge (under a day), true of every real time zone.
    """
    wall = local.replace(tzinfo=None)
    edges = sorted({config.friendly_start, config.friendly_end})
    target = next(
        (datetime.combine(wall.date(), edge) for edge in edges if edge > wall.time()),
        datetime.combine(wall.date() + _DAY, time()),
    )
    step = target - wall
    base = local.astimezone(UTC)
    offset = local.utcoffset()
    candidate = (base + step).astimezone(config.zone)
    if candidate.utcoffset() == offset:
        return candidate
    low, high = 0, step // _US  # offset unchanged at low, changed at high
    while high - low > 1:
        middle = (low + high) // 2
        if (base + middle * _US).astimezone(config.zone).utcoffset() == offset:
            low = middle
        else:
            high = middle
    return (base + high * _US).astimezone(config.zone)


def next_unfriendly(at: datetime, config: PolicyConfig) -> datetime:
    """Return the first moment at or after `at` outside friendly hours, as a UTC datetime.

    It is `at` itself when `at` is not friendly; otherwise the moment a deferred cut becomes
    allowed (for "supply will be cut at ..."). Friday evening with the default rules gives
    Monday 10:00 local; a listed holiday on that Monday moves it to Tuesday 10:00. The result
    is in UTC because a local datetime inside an hour repeated in autumn never compares equal
    to a datetime of another zone (PEP 495); convert it for display.
    """
    moment = _local(at, config)
    # Every weekday that is not a holiday has unfriendly time, so the search ends after the
    # run of consecutive holidays and weekend days; each day has at most three edges.
    library_run = _LONGEST_LIBRARY_RUN if config.country else 0
    for _ in range(8 * (len(config.holidays) + library_run + 8)):
        if not _friendly_local(moment, config):
            return moment.astimezone(UTC)
        moment = _next_change(moment, config)
    raise AssertionError("no unfriendly moment found")  # pragma: no cover


# --------------------------------------------------------------------------------------------
# Decisions


@dataclass(frozen=True, slots=True)
class SupplyDecision:
    """What to do with a household's supply now, and why (a `Reason` value)."""

    action: SupplyAction
    reason: str


@dataclass(frozen=True, slots=True)
class RestoreDecision:
    """Whether a supply that was cut may be restored, and why (a `Reason` value)."""

    allowed: bool
    reason: str


def decide_supply(
    balance: Decimal,
    at: datetime,
    *,
    supply_protected: bool,
    supply_on: bool,
    config: PolicyConfig,
) -> SupplyDecision:
    """Decide on the supply for an electricity `balance` (never a fee balance) at `at`.

    * within credit, emergency credit included (`balance >= -emergency_credit`): keep;
    * below it and the household protected: `protected_debt` (never cut, record the debt);
    * below it and the supply already off: keep (restoring is `decide_restore`'s job);
    * below it in friendly hours: `defer` (the household runs into debt and is reported);
    * otherwise: cut.
    """
    local = _local(at, config)
    if balance >= -config.emergency_credit:
        return SupplyDecision("keep", Reason.IN_CREDIT)
    if supply_protected:
        return SupplyDecision("protected_debt", Reason.SUPPLY_PROTECTED)
    if not supply_on:
        return SupplyDecision("keep", Reason.CREDIT_EXHAUSTED)
    if _friendly_local(local, config):
        return SupplyDecision("defer", Reason.FRIENDLY_HOURS)
    return SupplyDecision("cut", Reason.CREDIT_EXHAUSTED)


def decide_restore(
    balance: Decimal,
    *,
    requested_by: Requester,
    operator_override: bool,
    config: PolicyConfig,
) -> RestoreDecision:
    """Decide whether a cut supply may be restored for an electricity `balance`.

    Allowed when `balance > reclose_threshold` (strictly). An automatic request ("auto") is
    refused unless `config.auto_restore`. Below the threshold only an operator may restore,
    with `operator_override`; a resident's (or an automatic) override is ignored.
    """
    if requested_by == "auto" and not config.auto_restore:
        return RestoreDecision(allowed=False, reason=Reason.AUTO_RESTORE_DISABLED)
    if balance > config.reclose_threshold:
        return RestoreDecision(allowed=True, reason=Reason.IN_CREDIT)
    if requested_by == "operator" and operator_override:
        return RestoreDecision(allowed=True, reason=Reason.OPERATOR_OVERRIDE)
    return RestoreDecision(allowed=False, reason=Reason.CREDIT_EXHAUSTED)


_TENTH = Decimal("0.1")


def estimate_days_left(balance: Decimal, daily_cost: Decimal | None) -> Decimal | None:
    """Return the days until `balance` reaches zero at `daily_cost` CNY a day.

    Rounded down to a tenth of a day (never optimistic); 0 when nothing is left; None when
    the daily cost is unknown or not positive (no usage, no estimate). Emergency credit is
    not counted: it is a safety net, not credit to plan with.
    """
    if daily_cost is None or daily_cost <= 0:
        return None
    if balance <= 0:
        return Decimal(0)
    return (balance / daily_cost).quantize(_TENTH, rounding=ROUND_FLOOR)
