"""Immutable views of a meter, built once per change, for whoever shows it.

A reading changes a meter once; a dozen entities then show it. `meter_view` takes what
they show (the balance to the cent, whether it is low, the measurements) in one pass; the
tier, price and days left need the tariff and are worked out on the first read of a view
and kept in it, so a large community, whose measurement sensors are written only every few
minutes, does not look the tariff up on every reading for the entities that are written at
once (low balance, supply). The Home Assistant adapter keeps one view per meter and drops
it when the meter changes (coordinator.PrepaidRuntime.view).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from decimal import ROUND_HALF_UP, Decimal
from typing import Any

from .community import (
    ARREARS_AT,
    FEE_SUBS,
    Community,
    DayUse,
    HouseholdState,
    MeterState,
    Relay,
)
from .ledger import SubAccount

__all__ = ["CommunityLists", "MeterView", "community_lists", "meter_view"]

#: How many households each operator list names (the count is always whole).
LIST_LIMIT = 100

CENT = Decimal("0.01")
WATT_HOUR = Decimal("0.001")


@dataclass(frozen=True, slots=True)
class MeterView:
    """What can be shown of one meter at one moment (money to the cent)."""

    meter_id: str
    account_id: str | None
    online: bool | None
    energy_kwh: Decimal | None
    power_w: float | None
    voltage_v: float | None
    current_a: float | None
    last_reading_ts: int | None
    balance: Decimal | None
    low: bool | None
    low_threshold: Decimal
    cycle_kwh: Decimal | None
    cycle_cost: Decimal | None
    desired_relay: Relay
    reported_relay: Relay | None
    relay_reason: str
    #: The kinds of the meter's open alarm episodes (engine/safety.py's AlarmKind), sorted.
    alarms: tuple[str, ...]
    _community: Community = field(repr=False, compare=False)
    _meter: MeterState = field(repr=False, compare=False)
    # Worked out on first read, kept for the life of the view (a frozen view, a mutable cache).
    _priced: list[tuple[int, Decimal]] = field(default_factory=list, repr=False, compare=False)
    _days: list[Decimal | None] = field(default_factory=list, repr=False, compare=False)
    _figures: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)

    def _price_now(self) -> tuple[int, Decimal]:
        if not self._priced:
            tier, _period, price = self._community.price_now(self._meter)
            self._priced.append((tier, price))
        return self._priced[0]

    @property
    def tier(self) -> int:
        """Return the tier the next kWh is billed in (worked out on first read)."""
        return self._price_now()[0]

    @property
    def price(self) -> Decimal:
        """Return the price of the next kWh (worked out on first read)."""
        return self._price_now()[1]

    @property
    def days_left(self) -> Decimal | None:
        """Return the estimated days of credit left (worked out on first read)."""
        if not self._days:
            self._days.append(self._community.days_left(self._meter))
        return self._days[0]

    def _use(self, name: str) -> DayUse | None:
        if name not in self._figures:
            meter = self._meter
            use = (
                self._community.use_today(meter)
                if name == "today"
                else self._community.use_this_month(meter)
            )
            self._figures[name] = use
        figure: DayUse | None = self._figures[name]
        return figure

    @property
    def today_kwh(self) -> Decimal | None:
        """Return the household's kWh today (local day), to the Wh (None: unassigned)."""
        use = self._use("today")
        return None if use is None else use.kwh.quantize(WATT_HOUR)

    @property
    def today_cost(self) -> Decimal | None:
        """Return what today's kWh were billed, to the cent."""
        use = self._use("today")
        return None if use is None else use.cost.quantize(CENT)

    @property
    def month_kwh(self) -> Decimal | None:
        """Return the household's kWh this calendar month (the tariff's zone), to the Wh."""
        use = self._use("month")
        return None if use is None else use.kwh.quantize(WATT_HOUR)

    @property
    def month_cost(self) -> Decimal | None:
        """Return what this month's kWh were billed, to the cent."""
        use = self._use("month")
        return None if use is None else use.cost.quantize(CENT)

    @property
    def day_started(self) -> datetime:
        """Return when today (local day) started: the last reset of today's figures."""
        return self._community.day_started()

    @property
    def month_started(self) -> datetime:
        """Return when this calendar month started: the last reset of the month's figures."""
        return self._community.month_started()

    @property
    def tier_kwh_left(self) -> Decimal | None:
        """Return the kWh left in the current tier, to the Wh (None: the last tier)."""
        if "tier_left" not in self._figures:
            left = self._community.tier_kwh_left(self._meter)
            self._figures["tier_left"] = None if left is None else left.quantize(WATT_HOUR)
        value: Decimal | None = self._figures["tier_left"]
        return value

    @property
    def supply_reason(self) -> str:
        """Return why the supply is as it is; on below zero, it runs on emergency credit.

        (Unless an operator's override restored it in debt: that says why it is on.)
        """
        below_zero = self.balance is not None and self.balance < 0
        if self.desired_relay == "on" and below_zero and self.relay_reason != "operator_override":
            return "emergency_credit"
        return self.relay_reason

    @property
    def supply_on(self) -> bool:
        """Return whether the supply is on: as the meter reports it, else as wanted."""
        return (self.reported_relay or self.desired_relay) == "on"


def meter_view(community: Community, meter: MeterState) -> MeterView:
    """Return the view of a meter now (its tariff figures on first read)."""
    balance = community.balance(meter)
    in_cycle = meter.billing.cycle is not None
    return MeterView(
        meter_id=meter.meter_id,
        account_id=meter.account_id,
        online=meter.online,
        energy_kwh=meter.energy_kwh,
        power_w=meter.power_w,
        voltage_v=meter.voltage_v,
        current_a=meter.current_a,
        last_reading_ts=meter.ts,
        balance=None if balance is None else balance.quantize(CENT),
        low=community.is_low(meter),
        low_threshold=community.low_threshold(meter),
        cycle_kwh=meter.billing.cycle_kwh.quantize(WATT_HOUR) if in_cycle else None,
        cycle_cost=meter.cycle_cost.quantize(CENT) if in_cycle else None,
        desired_relay=meter.desired_relay,
        reported_relay=meter.reported_relay,
        relay_reason=meter.relay_reason,
        alarms=tuple(community.alarms(meter.meter_id)),
        _community=community,
        _meter=meter,
    )


type Line = dict[str, Any]


@dataclass(frozen=True, slots=True)
class CommunityLists:
    """Which households an operator must look at: each list worst first, cut to a limit."""

    arrears: dict[SubAccount, list[Line]]
    cut: list[Line]
    alarmed: list[Line]
    offline: list[Line]
    counts: dict[str, int]


def community_lists(community: Community, limit: int = LIST_LIMIT) -> CommunityLists:
    """Return the households in arrears (by sub-account), cut, alarmed and offline.

    A line names the household (its label and id), the meter and what matters for the list:
    the balance to the cent, why the supply is cut, which alarms are on. Lists are sorted
    worst first (largest debt first; the rest by household) and hold at most `limit` lines;
    `counts` has each list's full length (`arrears_<sub>`, `cut`, `alarmed`, `offline`).
    """
    arrears: dict[SubAccount, list[Line]] = {sub: [] for sub in SubAccount}
    electricity_arrears = arrears[SubAccount.ELECTRICITY]
    for household in community.households.values():
        electricity = household.electricity
        if electricity <= ARREARS_AT:
            electricity_arrears.append(_debt(household, electricity))
        balances = household.balances
        for sub in FEE_SUBS:
            if balances[sub] <= ARREARS_AT:
                arrears[sub].append(_debt(household, balances[sub]))
    cut: list[Line] = []
    alarmed: list[Line] = []
    offline: list[Line] = []
    households = community.households
    watch = community.safety
    for meter in community.meters.values():
        cut_off = meter.desired_relay == "off"
        open_alarms = watch.alarms(meter.meter_id)
        alarmed_now = bool(open_alarms)
        if not (cut_off or alarmed_now or meter.online is False):
            continue  # most meters: nothing to list
        home = households.get(meter.account_id) if meter.account_id else None
        base: Line = {
            "household": home.label if home else None,
            "account_id": meter.account_id,
            "meter_id": meter.meter_id,
        }
        if cut_off:
            balance = home.electricity.quantize(CENT, ROUND_HALF_UP) if home else None
            cut.append({**base, "reason": meter.relay_reason, "balance": _text(balance)})
        if alarmed_now:
            alarmed.append({**base, "alarms": sorted(open_alarms)})
        if meter.online is False:
            offline.append(base)
    counts = {f"arrears_{sub.value}": len(lines) for sub, lines in arrears.items()}
    counts |= {"cut": len(cut), "alarmed": len(alarmed), "offline": len(offline)}
    for sub, lines in arrears.items():
        lines.sort(key=lambda line: (line["_sort"], line["household"]))
        arrears[sub] = [
            {key: value for key, value in line.items() if key != "_sort"} for line in lines[:limit]
        ]
    return CommunityLists(
        arrears=arrears,
        cut=sorted(cut, key=_by_household)[:limit],
        alarmed=sorted(alarmed, key=_by_household)[:limit],
        offline=sorted(offline, key=_by_household)[:limit],
        counts=counts,
    )


def _debt(household: HouseholdState, value: Decimal) -> Line:
    return {
        "household": household.label,
        "account_id": household.account_id,
        "balance": str(value.quantize(CENT, ROUND_HALF_UP)),
        "_sort": value,
    }


def _text(value: Decimal | None) -> str | None:
    return None if value is None else str(value)


def _by_household(line: Line) -> tuple[str, str]:
    return (line["household"] or "", line["meter_id"])
