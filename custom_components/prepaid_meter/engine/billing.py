"""Pricing consumption under a tariff, by the billing rules of TARIFFS.md.

Energy between two register readings is spread evenly over the time between them and cut at
every time-of-use, cycle and tariff-version boundary (rule 2). Tiers fill in time order with the
cycle's kWh of all periods together, split exactly at each `up_to` (rule 3), scaled for accounts
opened mid-cycle (rule 4). A statement has one line per (cycle, tier, period) (rule 5).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime
from decimal import ROUND_HALF_UP, Decimal, localcontext
from typing import Any

from .tariff import Segment, Tariff, TariffError, Timeline, to_us

KWH = Decimal("0.001")
CENT = Decimal("0.01")
# Pieces of one interval carry this many decimals; the last piece takes the remainder so
# the pieces always add up to the interval's energy exactly.
PIECE_QUANTUM = Decimal("1E-12")
_ZERO = Decimal(0)


class BillingError(ValueError):
    """Readings that cannot be billed (time going backwards, nonsense values)."""


@dataclass(frozen=True, slots=True)
class Piece:
    """One priced slice of consumption; `amount` is exact (not rounded)."""

    cycle: str
    tier: int
    period: str
    kwh: Decimal
    price: Decimal

    @property
    def amount(self) -> Decimal:
        """Return kwh x price at full precision."""
        return self.kwh * self.price


@dataclass(slots=True)
class BillingState:
    """Where one household stands in its current cycle; enough to price the next reading."""

    opened: date | None = None
    cycle: str | None = None
    cycle_kwh: Decimal = _ZERO
    limits: tuple[Decimal | None, ...] = ()
    timeline: Timeline | None = field(default=None, repr=False, compare=False)


def _limits(segment: Segment, opened: date | None) -> tuple[Decimal | None, ...]:
    """Return the cycle's tier limits, scaled by the part of the cycle the account was open."""
    ups = [tier.up_to for tier in segment.version.tiers]
    start_day = segment.cycle_start.date()
    end_day = segment.cycle_end.date()
    if opened is None or opened <= start_day or opened >= end_day:
        return tuple(ups)
    days_open = Decimal((end_day - opened).days)
    days_total = Decimal((end_day - start_day).days)
    return tuple(
        None if up is None else (up * days_open / days_total).quantize(KWH, ROUND_HALF_UP)
        for up in ups
    )


def _enter(state: BillingState, segment: Segment) -> None:
    if state.cycle != segment.cycle:
        state.cycle = segment.cycle
        state.cycle_kwh = _ZERO
        state.limits = _limits(segment, state.opened)


def _fill(state: BillingState, segment: Segment, kwh: Decimal, out: list[Piece]) -> None:
    """Put `kwh` into tiers in order, starting from the cycle's kWh so far."""
    tiers = segment.version.tiers
    remaining = kwh
    index = 0
    limits = state.limits
    while remaining > 0:
        while limits[index] is not None and state.cycle_kwh >= limits[index]:  # type: ignore[operator]
            index += 1
        limit = limits[index]
        take = remaining if limit is None else min(remaining, limit - state.cycle_kwh)
        out.append(
            Piece(
                segment.cycle, index + 1, segment.period, take, tiers[index].prices[segment.period]
            )
        )
        state.cycle_kwh += take
        remaining -= take


def bill_interval(
    tariff: Tariff, state: BillingState, t0: datetime, t1: datetime, kwh: Decimal
) -> list[Piece]:
    """Price `kwh` used between t0 and t1 (aware datetimes), advancing `state`.

    Returns the pieces in time order. Zero energy still moves the state into t1's cycle.
    t1 == t0 (two readings in the same second) prices the energy at that instant.
    """
    start, end = to_us(t0), to_us(t1)
    if end < start:
        raise BillingError(
            f"readings must move forward in time ({t0.isoformat()} -> {t1.isoformat()})"
        )
    if kwh < 0:
        raise BillingError("energy between readings cannot be negative")
    timeline = state.timeline
    if timeline is None:
        timeline = state.timeline = tariff.timeline()
    pieces: list[Piece] = []
    segment = timeline.segment_at(start)
    if end <= segment.end_us:  # the common case: a short interval inside one segment
        _enter(state, segment)
        if kwh:
            _fill(state, segment, kwh, pieces)
        return pieces
    total = Decimal(end - start)
    allocated = _ZERO
    moment = start
    with localcontext() as ctx:
        ctx.prec = 40
        while moment < end:
            segment = timeline.segment_at(moment)
            stop = min(segment.end_us, end)
            if stop == end:
                share = kwh - allocated
            else:
                share = (kwh * (stop - moment) / total).quantize(PIECE_QUANTUM)
                allocated += share
            _enter(state, segment)
            if share:
                _fill(state, segment, share, pieces)
            moment = stop
    return pieces


def _standing(
    tariff: Tariff, state: BillingState, at: datetime
) -> tuple[Segment, int, Decimal | None, Decimal]:
    """Return the segment at `at`, the tier index the next kWh is in, its limit, kWh used."""
    timeline = state.timeline or tariff.timeline()
    segment = timeline.segment_at(to_us(at))
    if state.cycle == segment.cycle:
        limits, used = state.limits, state.cycle_kwh
    else:
        limits, used = _limits(segment, state.opened), _ZERO
    index = 0
    while limits[index] is not None and used >= limits[index]:  # type: ignore[operator]
        index += 1
    return segment, index, limits[index], used


def current_price(tariff: Tariff, state: BillingState, at: datetime) -> tuple[int, str, Decimal]:
    """Return (tier, period, price) that the next kWh used at `at` would be billed at."""
    segment, index, _limit, _used = _standing(tariff, state, at)
    return index + 1, segment.period, segment.version.tiers[index].prices[segment.period]


def tier_room(tariff: Tariff, state: BillingState, at: datetime) -> Decimal | None:
    """Return the kWh left in the tier the next kWh used at `at` is in, this cycle.

    None in the last tier (a flat tariff has only that one): there is no tier above.
    """
    _segment, _index, limit, used = _standing(tariff, state, at)
    return None if limit is None else limit - used


# --- statements ----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class StatementLine:
    """kWh (3 decimals) x price = amount (rounded half-up to the cent)."""

    tier: int
    period: str
    kwh: Decimal
    price: Decimal
    amount: Decimal

    def to_json(self) -> dict[str, Any]:
        """Return the line as TARIFFS.md prints it."""
        return {
            "tier": self.tier,
            "period": self.period,
            "kwh": str(self.kwh),
            "price": str(self.price),
            "amount": str(self.amount),
        }


@dataclass(frozen=True, slots=True)
class CycleStatement:
    """One cycle's lines; `total` is the sum of the lines' amounts."""

    cycle: str
    kwh: Decimal
    lines: tuple[StatementLine, ...]

    @property
    def total(self) -> Decimal:
        """Return the sum of the lines."""
        return sum((line.amount for line in self.lines), _ZERO)

    def to_json(self) -> dict[str, Any]:
        """Return the cycle as TARIFFS.md prints it."""
        return {
            "cycle": self.cycle,
            "kwh": str(self.kwh),
            "lines": [line.to_json() for line in self.lines],
            "total": str(self.total),
        }


def _round_kwh(values: Sequence[Decimal]) -> list[Decimal]:
    """Round to 3 decimals so the rounded values add up to the rounded total.

    Largest-remainder rounding: the lines of a statement then add up to the cycle's kWh,
    which is what the resident's register shows.
    """
    target = sum(values, _ZERO).quantize(KWH, ROUND_HALF_UP)
    floors = [v.quantize(KWH, rounding="ROUND_FLOOR") for v in values]
    short = int((target - sum(floors, _ZERO)) / KWH)
    order = sorted(range(len(values)), key=lambda i: values[i] - floors[i], reverse=True)
    for i in order[:short]:
        floors[i] += KWH
    return floors


def statement_for(
    cycle: str,
    usage: Iterable[tuple[int, str, Decimal, Decimal]],
    periods: Sequence[str] = (),
) -> CycleStatement:
    """Build a cycle statement from (tier, period, kwh, price) rows at full precision.

    Rows with the same (tier, period) and price are merged; lines are ordered by tier, then
    by the tariff's period order (`periods`), then by first appearance.
    """
    merged: dict[tuple[int, str, Decimal], Decimal] = {}
    for tier, period, kwh, price in usage:
        key = (tier, period, price)
        merged[key] = merged.get(key, _ZERO) + kwh
    rank = {name: i for i, name in enumerate(periods)}
    keys = sorted(merged, key=lambda k: (k[0], rank.get(k[1], len(rank))))
    rounded = _round_kwh([merged[k] for k in keys])
    lines = tuple(
        StatementLine(tier, period, kwh, price, (kwh * price).quantize(CENT, ROUND_HALF_UP))
        for (tier, period, price), kwh in zip(keys, rounded, strict=True)
        if kwh or merged[(tier, period, price)]
    )
    total_kwh = sum(rounded, _ZERO)
    return CycleStatement(cycle, total_kwh, lines)


@dataclass(frozen=True, slots=True)
class RegisterReset:
    """A register that went down: a reset or a replaced meter; billed as nothing."""

    at: datetime
    before: Decimal
    after: Decimal


@dataclass(frozen=True, slots=True)
class Bill:
    """Every cycle's statement for a run of readings, and the resets found on the way."""

    currency: str
    cycles: tuple[CycleStatement, ...]
    resets: tuple[RegisterReset, ...]

    @property
    def total(self) -> Decimal:
        """Return the sum of the cycles' totals."""
        return sum((c.total for c in self.cycles), _ZERO)

    def to_json(self) -> dict[str, Any]:
        """Return the bill in the `bill` command's JSON shape."""
        return {
            "currency": self.currency,
            "cycles": [c.to_json() for c in self.cycles],
            "total": str(self.total),
            "resets": [
                {"ts": r.at.isoformat(), "from": str(r.before), "to": str(r.after)}
                for r in self.resets
            ],
        }


def bill_readings(
    tariff: Tariff, readings: Iterable[tuple[datetime, Decimal]], opened: date | None = None
) -> Bill:
    """Bill a run of (time, cumulative register) readings; the first one is the baseline."""
    state = BillingState(opened=opened)
    cycles: dict[str, list[tuple[int, str, Decimal, Decimal]]] = {}
    resets: list[RegisterReset] = []
    previous: tuple[datetime, Decimal] | None = None
    for moment, energy in readings:
        if energy < 0 or not energy.is_finite():
            raise BillingError(f"{moment.isoformat()}: the register cannot read {energy}")
        if previous is None:
            previous = (moment, energy)
            continue
        last_moment, last_energy = previous
        if moment <= last_moment:
            raise BillingError(
                f"{moment.isoformat()}: timestamps must increase "
                f"(the reading before is {last_moment.isoformat()})"
            )
        if energy < last_energy:
            resets.append(RegisterReset(moment, last_energy, energy))
            delta = _ZERO
        else:
            delta = energy - last_energy
        for piece in bill_interval(tariff, state, last_moment, moment, delta):
            cycles.setdefault(piece.cycle, []).append(
                (piece.tier, piece.period, piece.kwh, piece.price)
            )
        previous = (moment, energy)
    statements = tuple(statement_for(cycle, rows, tariff.periods) for cycle, rows in cycles.items())
    return Bill(tariff.currency, statements, tuple(resets))


__all__ = [
    "Bill",
    "BillingError",
    "BillingState",
    "CycleStatement",
    "Piece",
    "StatementLine",
    "TariffError",
    "bill_interval",
    "bill_readings",
    "current_price",
    "statement_for",
    "tier_room",
]
