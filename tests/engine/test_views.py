"""A meter's view: what entities show, computed once per change, money to the cent."""

from __future__ import annotations

from collections.abc import Iterator
import dataclasses
from decimal import Decimal
from pathlib import Path

import pytest

from custom_components.prepaid_meter.engine.ledger import Ledger, SubAccount
from custom_components.prepaid_meter.engine.views import community_lists, meter_view
from tests.engine.test_community import NOON, OPS, Clock, R, _assign, _community, _top_up

M1 = "000000000001"
M2 = "000000000002"


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


def test_community_lists_name_the_households_to_look_at(ledger: Ledger, clock: Clock) -> None:
    """Arrears worst first per sub-account, cut with why, alarmed, offline; cut to a limit."""
    community = _community(ledger, clock)
    _assign(community)
    _assign(community, M2, "b3-u2-502")
    community.handle_announce(M1, model=None, firmware=None, rated_current_a=None)
    community.handle_announce(M2, model=None, firmware=None, rated_current_a=None)
    community.request_relay(M1, "off", actor=OPS)
    # A neutral gap for a minute: a suspected theft episode opens on M2 (the watch's truth).
    for seq in (1, 2):
        community.handle_reading(
            R(M2, seq, NOON - 180 + seq * 60, Decimal(1), current_a=5.0, neutral_current_a=1.0)
        )
    community.meters[M2].online = False
    empty = community_lists(community)
    assert empty.arrears[SubAccount.ELECTRICITY] == []
    assert empty.cut == [
        {
            "household": "Household b3-u2-501",
            "account_id": "b3-u2-501",
            "meter_id": M1,
            "reason": "manual",
            "balance": "0.00",
        }
    ]
    assert [line["meter_id"] for line in empty.offline] == [M2]
    assert empty.alarmed[0]["alarms"] == ["theft_suspected"]
    assert meter_view(community, community.meters[M2]).alarms == ("theft_suspected",)
    for account in ("b3-u2-501", "b3-u2-502"):
        community.households[account].balances[SubAccount.PROPERTY_FEE] = Decimal(
            "-10.005" if account.endswith("1") else "-99"
        )
    lists = community_lists(community, limit=1)
    assert lists.arrears[SubAccount.PROPERTY_FEE] == [
        {"household": "Household b3-u2-502", "account_id": "b3-u2-502", "balance": "-99.00"}
    ]
    assert lists.counts == {
        "arrears_electricity": 0,
        "arrears_property_fee": 2,
        "arrears_parking_fee": 0,
        "cut": 1,
        "alarmed": 1,
        "offline": 1,
    }


def test_arrears_are_debts_to_the_cent(ledger: Ledger, clock: Clock) -> None:
    """-0.004 reads 0.00: not in arrears; -0.005 reads -0.01: in arrears (lists and totals)."""
    community = _community(ledger, clock)
    _assign(community)
    _assign(community, M2, "b3-u2-502")
    households = community.households
    households["b3-u2-501"].balances[SubAccount.PARKING_FEE] = Decimal("-0.004")
    households["b3-u2-502"].balances[SubAccount.PARKING_FEE] = Decimal("-0.005")
    lists = community_lists(community)
    assert lists.arrears[SubAccount.PARKING_FEE] == [
        {"household": "Household b3-u2-502", "account_id": "b3-u2-502", "balance": "-0.01"}
    ]
    assert community.totals()["arrears"][SubAccount.PARKING_FEE] == 1
