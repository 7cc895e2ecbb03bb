"""Tariff files: the YAML format of TARIFFS.md, validated into immutable objects.

A tariff answers one question quickly: for a moment in time, which version, cycle and
time-of-use period apply, and until when (`Timeline.segment_at`). Billing walks those
segments; nothing here knows about readings or money movements.
"""

from __future__ import annotations

from bisect import bisect_right
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from decimal import Decimal, InvalidOperation
import itertools
from pathlib import Path
import re
from typing import Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import yaml

PRESETS_DIR = Path(__file__).parent / "presets"
FLAT_PERIOD = "flat"
MINUTES_PER_DAY = 1440
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_US = timedelta(microseconds=1)
_WINDOW_RE = re.compile(r"^(\d{2}):(\d{2})-(\d{2}):(\d{2})$")
_YEAR_START_RE = re.compile(r"^(\d{2})-(\d{2}) (\d{2}):(\d{2})$")
_MONTH_START_RE = re.compile(r"^(\d{2}) (\d{2}):(\d{2})$")
_NAME_RE = re.compile(r"^[a-z][a-z0-9_]{0,31}$")

type CyclePeriod = Literal["month", "year"]


class TariffError(ValueError):
    """A tariff file that cannot be used; the message says what and where."""


def to_us(moment: datetime) -> int:
    """Return an aware datetime as integer microseconds since the UNIX epoch (exact)."""
    return (moment - _EPOCH) // _US


def from_us(us: int) -> datetime:
    """Return integer microseconds since the epoch as an aware UTC datetime."""
    return _EPOCH + timedelta(microseconds=us)


@dataclass(frozen=True, slots=True)
class Tier:
    """One step of the tier ladder: kWh of the cycle up to `up_to` (None: no limit)."""

    up_to: Decimal | None
    prices: Mapping[str, Decimal]


@dataclass(frozen=True, slots=True)
class CycleRule:
    """When billing cycles start: yearly on month/day or monthly on day, at a local time."""

    period: CyclePeriod
    month: int
    day: int
    at: time

    def start_of(self, local: datetime) -> datetime:
        """Return the local start of the cycle that contains `local`."""
        tz = local.tzinfo
        if self.period == "year":
            start = datetime.combine(date(local.year, self.month, self.day), self.at, tz)
            if local < start:
                start = datetime.combine(date(local.year - 1, self.month, self.day), self.at, tz)
            return start
        start = datetime.combine(date(local.year, local.month, self.day), self.at, tz)
        if local < start:
            start = self.next_start(start, back=True)
        return start

    def next_start(self, start: datetime, *, back: bool = False) -> datetime:
        """Return the start of the cycle after (or, with back, before) the one at `start`."""
        step = -1 if back else 1
        if self.period == "year":
            return start.replace(year=start.year + step)
        month_index = start.year * 12 + start.month - 1 + step
        return start.replace(year=month_index // 12, month=month_index % 12 + 1)

    def cycle_id(self, start: datetime) -> str:
        """Return `YYYY` or `YYYY-MM`: the year or month in which the cycle starts."""
        return (
            f"{start.year:04d}" if self.period == "year" else f"{start.year:04d}-{start.month:02d}"
        )


@dataclass(frozen=True, slots=True)
class TariffVersion:
    """One tariff in force from `effective_from` (None: since always) until the next version."""

    name: str
    effective_from: datetime | None
    cycle: CycleRule
    periods: tuple[str, ...]
    # Sorted, non-overlapping windows covering the whole day: (start_min, end_min, period).
    windows: tuple[tuple[int, int, str], ...]
    tiers: tuple[Tier, ...]

    def period_at(self, minute_of_day: int) -> tuple[int, int, str]:
        """Return the window (start, end, period) that contains the minute of the day."""
        starts = [w[0] for w in self.windows]
        return self.windows[bisect_right(starts, minute_of_day) - 1]


@dataclass(frozen=True, slots=True)
class Segment:
    """A stretch of time [start_us, end_us) with one version, cycle and period."""

    start_us: int
    end_us: int
    version: TariffVersion
    cycle: str
    cycle_start: datetime
    cycle_end: datetime
    period: str


@dataclass(frozen=True, slots=True)
class Tariff:
    """A validated tariff: one or more versions sharing currency, timezone and cycle rule."""

    name: str
    currency: str
    tz: ZoneInfo
    versions: tuple[TariffVersion, ...]

    @property
    def periods(self) -> tuple[str, ...]:
        """Return the period names of the newest version (for display)."""
        return self.versions[-1].periods

    def version_at(self, us: int) -> tuple[TariffVersion, int, int | None]:
        """Return the version in force at `us` with its start and the next version's start."""
        starts = self._version_starts()
        index = max(bisect_right(starts, us) - 1, 0)
        start = starts[index] if index > 0 else -(2**62)
        end = starts[index + 1] if index + 1 < len(starts) else None
        return self.versions[index], start, end

    def _version_starts(self) -> list[int]:
        return [to_us(v.effective_from) if v.effective_from else -(2**62) for v in self.versions]

    def timeline(self) -> Timeline:
        """Return a fresh segment finder (cheap; it caches the last segment it found)."""
        return Timeline(self)


class Timeline:
    """Finds the segment containing a moment, caching the last one (readings come in order)."""

    __slots__ = ("_last", "_tariff", "_version_starts")

    def __init__(self, tariff: Tariff) -> None:
        """Bind to one tariff."""
        self._tariff = tariff
        self._last: Segment | None = None
        self._version_starts = tariff._version_starts()

    def segment_at(self, us: int) -> Segment:
        """Return the segment containing the instant `us` (microseconds since the epoch)."""
        last = self._last
        if last is not None and last.start_us <= us < last.end_us:
            return last
        tariff = self._tariff
        starts = self._version_starts
        index = max(bisect_right(starts, us) - 1, 0)
        version = tariff.versions[index]
        seg_start = starts[index] if index > 0 else -(2**62)
        seg_end = starts[index + 1] if index + 1 < len(starts) else 2**62

        local = from_us(us).astimezone(tariff.tz)
        cycle_start = version.cycle.start_of(local)
        cycle_end = version.cycle.next_start(cycle_start)
        seg_start = max(seg_start, to_us(cycle_start))
        seg_end = min(seg_end, to_us(cycle_end))

        minute = local.hour * 60 + local.minute
        w_start, w_end, period = version.period_at(minute)
        day = local.date()
        midnight = datetime.combine(day, time(0), tariff.tz)
        # Wall-clock edges, resolved on the side of a repeated hour that `local` is on.
        window_start = (midnight + timedelta(minutes=w_start)).replace(fold=local.fold)
        window_end = (midnight + timedelta(minutes=w_end)).replace(fold=local.fold)
        seg_start = max(seg_start, to_us(window_start))
        seg_end = min(seg_end, to_us(window_end))
        if seg_end <= us:  # an edge inside a skipped hour can resolve behind us
            seg_end = us + 60_000_000
        # A segment never spans a change of UTC offset (daylight saving time): past it the
        # wall clock, and so the period, may differ from what the window says.
        seg_end = _next_offset_change(us, seg_end, tariff.tz, local.utcoffset())
        seg_start = min(seg_start, us)
        segment = Segment(
            seg_start,
            seg_end,
            version,
            version.cycle.cycle_id(cycle_start),
            cycle_start,
            cycle_end,
            period,
        )
        self._last = segment
        return segment


def _next_offset_change(start_us: int, end_us: int, tz: ZoneInfo, offset: timedelta | None) -> int:
    """Return the first instant in (start, end) where the zone's UTC offset changes, or end."""

    def offset_at(us: int) -> timedelta | None:
        return from_us(us).astimezone(tz).utcoffset()

    if offset_at(end_us - 1) == offset:
        return end_us
    low, high = start_us // 1_000_000, (end_us - 1) // 1_000_000 + 1  # whole seconds
    while high - low > 1:
        middle = (low + high) // 2
        if offset_at(middle * 1_000_000) == offset:
            low = middle
        else:
            high = middle
    return max(min(high * 1_000_000, end_us), start_us + 1)


# --- parsing -------------------------------------------------------------------------------


def load_tariff(path: str | Path) -> Tariff:
    """Read and validate a tariff YAML file (blocking I/O: call it from an executor)."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as err:
        raise TariffError(f"{path}: cannot read the tariff file ({err.strerror})") from err
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark is not None else ""
        raise TariffError(f"{path}: not valid YAML{where}") from err
    try:
        return parse_tariff(data)
    except TariffError as err:
        raise TariffError(f"{path}: {err}") from None


def preset_names() -> tuple[str, ...]:
    """Return the shipped preset ids (file stems under engine/presets/)."""
    return tuple(sorted(p.stem for p in PRESETS_DIR.glob("*.yaml")))


def load_preset(name: str) -> Tariff:
    """Load a shipped preset by id."""
    if name not in preset_names():
        raise TariffError(f"unknown tariff preset {name!r}; known: {', '.join(preset_names())}")
    return load_tariff(PRESETS_DIR / f"{name}.yaml")


def parse_tariff(data: Any) -> Tariff:
    """Validate a parsed YAML document into a Tariff, or raise TariffError naming the key."""
    if not isinstance(data, Mapping):
        raise TariffError("a tariff must be a mapping with name, currency, timezone and tiers")
    if "versions" in data:
        raw_versions = data["versions"]
        if not isinstance(raw_versions, list) or not raw_versions:
            raise TariffError("versions: must be a non-empty list of tariffs")
        shared = {k: v for k, v in data.items() if k != "versions"}
        docs = [{**shared, **_mapping(v, f"versions[{i}]")} for i, v in enumerate(raw_versions)]
    else:
        docs = [dict(data)]

    currency = _text(docs[0], "currency", "")
    tz_name = _text(docs[0], "timezone", "")
    try:
        tz = ZoneInfo(tz_name)
    except (ZoneInfoNotFoundError, ValueError) as err:
        raise TariffError(f"timezone: unknown time zone {tz_name!r}") from err

    versions: list[TariffVersion] = []
    for index, doc in enumerate(docs):
        where = f"versions[{index}]." if len(docs) > 1 else ""
        if _text(doc, "currency", where) != currency or _text(doc, "timezone", where) != tz_name:
            raise TariffError(f"{where}currency/timezone: every version must share them")
        versions.append(_parse_version(doc, tz, where, needs_start=len(docs) > 1))

    if len(versions) > 1:
        for earlier, later in itertools.pairwise(versions):
            assert earlier.effective_from is not None
            assert later.effective_from is not None
            if later.effective_from <= earlier.effective_from:
                raise TariffError("versions: effective_from dates must increase")
            if later.cycle != earlier.cycle:
                raise TariffError("versions: every version must use the same cycle rule")
        # The first version also covers any time before its date (readings older than it).
    name = str(data.get("name") or versions[-1].name)
    return Tariff(name=name, currency=currency, tz=tz, versions=tuple(versions))


def _mapping(value: Any, where: str) -> Mapping[str, Any]:
    if not isinstance(value, Mapping):
        raise TariffError(f"{where}: must be a mapping")
    return value


def _text(doc: Mapping[str, Any], key: str, where: str) -> str:
    value = doc.get(key)
    if not isinstance(value, str) or not value.strip():
        raise TariffError(f"{where}{key}: required, a non-empty string")
    return value.strip()


def _decimal(value: Any, where: str) -> Decimal:
    if isinstance(value, (bool, float)):
        raise TariffError(
            f'{where}: write decimals as quoted strings (e.g. "0.4883"), got {value!r}'
        )
    if isinstance(value, int):
        return Decimal(value)
    if isinstance(value, str):
        try:
            number = Decimal(value.strip())
        except InvalidOperation:
            raise TariffError(f"{where}: {value!r} is not a decimal number") from None
        if number.is_finite():
            return number
    raise TariffError(f"{where}: {value!r} is not a decimal number")


def _parse_version(
    doc: Mapping[str, Any], tz: ZoneInfo, where: str, *, needs_start: bool
) -> TariffVersion:
    name = str(doc.get("name") or "")
    effective = _parse_effective(doc.get("effective_from"), tz, where, needs_start=needs_start)
    cycle = _parse_cycle(doc.get("cycle"), where)
    windows, periods = _parse_periods(doc.get("periods"), where)
    tiers = _parse_tiers(doc.get("tiers"), periods, where)
    return TariffVersion(name, effective, cycle, periods, windows, tiers)


def _parse_effective(value: Any, tz: ZoneInfo, where: str, *, needs_start: bool) -> datetime | None:
    if value is None:
        if needs_start:
            raise TariffError(f"{where}effective_from: required for each version")
        return None
    if isinstance(value, datetime):
        moment = value
    elif isinstance(value, date):
        moment = datetime.combine(value, time(0))
    elif isinstance(value, str):
        try:
            moment = datetime.fromisoformat(value.strip())
        except ValueError:
            raise TariffError(f"{where}effective_from: {value!r} is not an ISO date") from None
    else:
        raise TariffError(f"{where}effective_from: {value!r} is not an ISO date")
    return moment if moment.tzinfo else moment.replace(tzinfo=tz)


def _parse_cycle(value: Any, where: str) -> CycleRule:
    doc = _mapping(value, f"{where}cycle")
    period = doc.get("period")
    starts = doc.get("starts")
    if period == "year":
        text = "01-01 00:00" if starts is None else str(starts)
        match = _YEAR_START_RE.match(text)
        if not match:
            raise TariffError(f'{where}cycle.starts: {text!r} is not "MM-DD HH:MM"')
        month, day, hour, minute = (int(g) for g in match.groups())
        try:
            date(2025, month, day)  # a non-leap year: 02-29 would skip cycles
            at = time(hour, minute)
        except ValueError:
            raise TariffError(
                f"{where}cycle.starts: {text!r} is not a valid date and time"
            ) from None
        return CycleRule("year", month, day, at)
    if period == "month":
        text = "01 00:00" if starts is None else str(starts)
        match = _MONTH_START_RE.match(text)
        if not match:
            raise TariffError(f'{where}cycle.starts: {text!r} is not "DD HH:MM"')
        day, hour, minute = (int(g) for g in match.groups())
        if not 1 <= day <= 28:
            raise TariffError(f"{where}cycle.starts: the day must be 1 to 28, got {day}")
        try:
            at = time(hour, minute)
        except ValueError:
            raise TariffError(f"{where}cycle.starts: {text!r} has an invalid time") from None
        return CycleRule("month", 1, day, at)
    raise TariffError(f"{where}cycle.period: must be month or year, got {period!r}")


def _minute(hour: str, minute: str, text: str, where: str) -> int:
    h, m = int(hour), int(minute)
    if m >= 60 or h > 24 or (h == 24 and m):
        raise TariffError(f"{where}: {text!r} has an invalid time")
    return h * 60 + m


def _parse_periods(
    value: Any, where: str
) -> tuple[tuple[tuple[int, int, str], ...], tuple[str, ...]]:
    if value is None:
        return ((0, MINUTES_PER_DAY, FLAT_PERIOD),), (FLAT_PERIOD,)
    doc = _mapping(value, f"{where}periods")
    if not doc:
        raise TariffError(f"{where}periods: empty; omit it for a single flat period")
    windows: list[tuple[int, int, str]] = []
    for name, raw_spans in doc.items():
        if not isinstance(name, str) or not _NAME_RE.match(name):
            raise TariffError(f"{where}periods: {name!r} is not a valid period name")
        spans = [raw_spans] if isinstance(raw_spans, str) else raw_spans
        if not isinstance(spans, list) or not spans:
            raise TariffError(f'{where}periods.{name}: a list of "HH:MM-HH:MM" windows')
        for span in spans:
            text = str(span)
            match = _WINDOW_RE.match(text.replace(" ", ""))
            if not match:
                raise TariffError(f'{where}periods.{name}: {text!r} is not "HH:MM-HH:MM"')
            start = _minute(match[1], match[2], text, f"{where}periods.{name}")
            end = _minute(match[3], match[4], text, f"{where}periods.{name}")
            if start == end:
                raise TariffError(f"{where}periods.{name}: {text!r} is empty")
            if start >= MINUTES_PER_DAY:
                raise TariffError(f"{where}periods.{name}: {text!r} starts at 24:00")
            if end > start:
                windows.append((start, end, name))
            else:  # wraps midnight
                windows.append((start, MINUTES_PER_DAY, name))
                if end:
                    windows.append((0, end, name))
    windows.sort()
    cursor = 0
    for start, end, name in windows:
        if start < cursor:
            raise TariffError(f"{where}periods: {name} overlaps another period at {_hhmm(start)}")
        if start > cursor:
            raise TariffError(
                f"{where}periods: {_hhmm(cursor)}-{_hhmm(start)} belongs to no period"
            )
        cursor = end
    if cursor != MINUTES_PER_DAY:
        raise TariffError(f"{where}periods: {_hhmm(cursor)}-24:00 belongs to no period")
    # Merge adjacent windows of the same period so segments are as long as possible.
    merged: list[tuple[int, int, str]] = []
    for window in windows:
        if merged and merged[-1][2] == window[2] and merged[-1][1] == window[0]:
            merged[-1] = (merged[-1][0], window[1], window[2])
        else:
            merged.append(window)
    return tuple(merged), tuple(str(n) for n in doc)


def _hhmm(minute: int) -> str:
    return f"{minute // 60:02d}:{minute % 60:02d}"


def _parse_tiers(value: Any, periods: Sequence[str], where: str) -> tuple[Tier, ...]:
    if not isinstance(value, list) or not value:
        raise TariffError(f"{where}tiers: required, a non-empty list")
    tiers: list[Tier] = []
    previous = Decimal(0)
    for index, raw in enumerate(value):
        here = f"{where}tiers[{index}]"
        doc = _mapping(raw, here)
        last = index == len(value) - 1
        up_to: Decimal | None = None
        if "up_to" in doc and doc["up_to"] is not None:
            if last:
                raise TariffError(f"{here}.up_to: the last tier has no up_to")
            up_to = _decimal(doc["up_to"], f"{here}.up_to")
            if up_to <= previous:
                raise TariffError(
                    f"{here}.up_to: tiers must ascend ({up_to} is not above {previous})"
                )
            previous = up_to
        elif not last:
            raise TariffError(f"{here}.up_to: required on every tier but the last")
        tiers.append(Tier(up_to, _parse_prices(doc.get("price"), periods, f"{here}.price")))
    return tuple(tiers)


def _parse_prices(value: Any, periods: Sequence[str], where: str) -> Mapping[str, Decimal]:
    if value is None:
        raise TariffError(f"{where}: required")
    if isinstance(value, Mapping):
        unknown = [str(k) for k in value if k not in periods]
        if unknown:
            raise TariffError(
                f"{where}: unknown period {unknown[0]!r} (periods: {', '.join(periods)})"
            )
        missing = [p for p in periods if p not in value]
        if missing:
            raise TariffError(f"{where}: no price for period {missing[0]!r}")
        prices = {p: _decimal(value[p], f"{where}.{p}") for p in periods}
    else:
        if periods != (FLAT_PERIOD,):
            raise TariffError(f"{where}: give a price per period ({', '.join(periods)})")
        prices = {FLAT_PERIOD: _decimal(value, where)}
    for period, price in prices.items():
        if price < 0:
            raise TariffError(f"{where}.{period}: a price cannot be negative ({price})")
    return prices
