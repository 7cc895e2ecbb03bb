"""Immutable views of a meter, built once per change, for whoever shows it.

A reading changes a meter once; a dozen entities then show it. `meter_view` computes what
they show (the balance to the cent, the tier and price now, the days left, whether it is
low) in one pass, so no entity reaches into the engine's live state or repeats a tariff
lookup. The Home Assistant adapter keeps one view per meter and drops it when the meter
changes (coordinator.PrepaidRuntime.view).
"""

from __future__ import annotations

from dataclasses import dataclass
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
    tier: int
    price: Decimal
    days_left: Decimal | None
    desired_relay: Relay
    reported_relay: Relay | None
    relay_reason: str

    @property
    def supply_on(self) -> bool:
        """Return whether the supply is on: as the meter reports it, else as wanted."""
        return (self.reported_relay or self.desired_relay) == "on"


def meter_view(community: Community, meter: MeterState) -> MeterView:
    """Return the view of a meter now (one tariff lookup)."""
    balance = community.balance(meter)
    tier, _period, price = community.price_now(meter)
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
        tier=tier,
        price=price,
        days_left=community.days_left(meter),
        desired_relay=meter.desired_relay,
        reported_relay=meter.reported_relay,
        relay_reason=meter.relay_reason,
    )
