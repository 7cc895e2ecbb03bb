"""A meter's view: what entities show, computed once per change, money to the cent."""

from __future__ import annotations

from collections.abc import Iterator
import dataclasses
from decimal import Decimal
from pathlib import Path

import pytest

from custom_components.prepaid_meter.engine.ledger import Ledger
from custom_components.prepaid_meter.engine.views import meter_view
from tests.engine.test_community import NOON, Clock, R, _assign, _community, _top_up

M1 = "000000000001"


@pytest.fixture
def clock() -> Clock:
    return Clock(NOON)


@pytest.fixture
def ledger(tmp_path: Path) -> Iterator[Ledger]:
    with Ledger(tmp_path / "community.sqlite3") as opened:
        yield opened


def test_an_unassigned_meter_shows_no_money(ledger: Ledger, clock: Clock) -> None:
    """No household: no balance, not low or not, no days left; the tariff's price still."""
    community = _community(ledger, clock)
    community.handle_announce(M1, model=None, firmware=None, rated_current_a=None)
    community.handle_reading(R(M1, 1, NOON - 60, Decimal("12.3456"), relay="off"))
    view = meter_view(community, community.meters[M1])
    assert (view.balance, view.low, view.days_left, view.account_id) == (None, None, None, None)
    assert view.energy_kwh == Decimal("12.3456")
    assert view.tier == 1 and view.price == Decimal("0.4883")  # Beijing's first tier
    assert view.supply_on is False  # as the meter reports it


def test_a_household_meter_shows_its_money_to_the_cent(ledger: Ledger, clock: Clock) -> None:
    """Balance and cycle cost to the cent; low against the meter's own threshold."""
    community = _community(ledger, clock)
    _assign(community)
    _top_up(community, "25", "tx-1")
    community.handle_reading(R(M1, 1, NOON - 7200, Decimal(100)))
    community.handle_reading(R(M1, 2, NOON, Decimal("110.001")))  # 10.001 kWh x 0.4883
    meter = community.meters[M1]
    view = meter_view(community, meter)
    assert view.balance == Decimal("20.12")  # 25 - 4.8834883
    assert view.cycle_kwh == Decimal("10.001")
    assert view.cycle_cost == Decimal("4.88")
    assert view.low is False  # the first warning level is 20
    meter.low_threshold = Decimal(30)
    assert meter_view(community, meter).low is True
    assert view.supply_on is True


def test_supply_reason_says_emergency_credit_below_zero(ledger: Ledger, clock: Clock) -> None:
    """On with a balance below zero is on emergency credit, not "in credit"; off says why."""
    community = _community(ledger, clock)
    _assign(community)
    _top_up(community, "25", "tx-1")
    community.handle_reading(R(M1, 1, NOON - 60, Decimal(100)))
    view = meter_view(community, community.meters[M1])
    assert (view.desired_relay, view.supply_reason) == ("on", "in_credit")
    below = dataclasses.replace(view, balance=Decimal("-0.01"))
    assert below.supply_reason == "emergency_credit"
    cut = dataclasses.replace(below, desired_relay="off", relay_reason="credit_exhausted")
    assert cut.supply_reason == "credit_exhausted"
    override = dataclasses.replace(below, relay_reason="operator_override")
    assert override.supply_reason == "operator_override"
