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
from decimal import Decimal

from .community import Community, MeterState, Relay

__all__ = ["MeterView", "meter_view"]

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
    _community: Community = field(repr=False, compare=False)
    _meter: MeterState = field(repr=False, compare=False)
    # Worked out on first read, kept for the life of the view (a frozen view, a mutable cache).
    _priced: list[tuple[int, Decimal]] = field(default_factory=list, repr=False, compare=False)
    _days: list[Decimal | None] = field(default_factory=list, repr=False, compare=False)

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
        _community=community,
        _meter=meter,
    )
