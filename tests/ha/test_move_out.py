"""Move-out settlement in Home Assistant: the final statement, the credit refunded or carried.

The community runs on the session's mosquitto with a test meter on the flat tariff (0.4883 a
kWh): 10 kWh charge 4.883, whose statement is 4.88, so the final statement (the cycle closed
at move-out) leaves exact money to refund or carry: 30 - 4.88 = 25.12.
"""

from __future__ import annotations

import asyncio
from decimal import Decimal
import time
from typing import Any

from homeassistant.core import Context, HomeAssistant
from homeassistant.exceptions import ServiceValidationError, Unauthorized
import pytest
from pytest_homeassistant_custom_component.common import MockConfigEntry, MockUser

from custom_components.prepaid_meter.const import DOMAIN
from custom_components.prepaid_meter.engine.actor import Actor
from custom_components.prepaid_meter.engine.ledger import Entry, EntryKind, Ledger, SubAccount
from custom_components.prepaid_meter.payment_actions import month_report
from tests.ha.conftest import METER_ID
from tests.ha.meter import TestMeter
from tests.ha.test_init import call, setup_household, wait_until
from tests.ha.test_report import assert_report_invariant

HOUSEHOLD = "b3-501"
E = SubAccount.ELECTRICITY


async def respond(hass: HomeAssistant, action: str, **data: Any) -> dict[str, Any]:
    """Call an action of the integration and return its response."""
    response: Any = await hass.services.async_call(
        DOMAIN, action, data, blocking=True, return_response=True
    )
    assert isinstance(response, dict)
    return response


async def _journal(hass: HomeAssistant, ledger: Ledger, account: str) -> list[Entry]:
    return await hass.async_add_executor_job(lambda: ledger.entries(account, limit=1000))


async def _used(hass: HomeAssistant, entry: MockConfigEntry, meter: TestMeter) -> None:
    """Assign the household, top it up with 30 and let it use 10 kWh (charged 4.883)."""
    await setup_household(hass, entry, meter)
    await call(hass, "top_up", household=HOUSEHOLD, amount="30", transaction_id="t1")
    runtime = entry.runtime_data
    now = int(time.time())
    await meter.reading(now - 120, "100.000")
    await meter.reading(now - 60, "110.000")
    await wait_until(hass, lambda: runtime.community.meters[METER_ID].seq == 2)


async def test_refund_settles_once_and_the_next_tenant_starts_at_zero(
    hass: HomeAssistant, init_integration: MockConfigEntry, meter: TestMeter
) -> None:
    """Refund: the final statement closed, one REFUND to zero; a double click refunds once."""
    entry = init_integration
    runtime = entry.runtime_data
    ledger = runtime.community.ledger
    await _used(hass, entry, meter)
    await call(
        hass,
        "charge_fee",
        household=HOUSEHOLD,
        sub_account="property_fee",
        amount="50",
        period="2026-11",
        transaction_id="pf-1",
    )
    settled = await respond(
        hass, "move_out", household=HOUSEHOLD, credit="refund", reason="Lease ended"
    )
    assert settled["meters"] == [METER_ID]
    assert settled["balances"] == {
        "electricity": "25.12",
        "property_fee": "-50.00",
        "parking_fee": "0.00",
    }
    assert settled["refund_due"] == "25.12"
    assert settled["credit"]["action"] == "refund"
    assert settled["credit"]["amount"] == "25.12"
    assert settled["credit"]["already_settled"] is False
    # Fee arrears are listed, never taken from the electricity credit.
    assert settled["arrears"] == {"property_fee": "50.00"}
    assert settled["balances_after"]["electricity"] == "0.00"
    assert settled["balances_after"]["property_fee"] == "-50.00"
    cycle = settled["cycle"]
    assert settled["closed_cycles"] == [cycle]
    assert settled["statement"]["closed"] is True
    assert Decimal(settled["statement"]["total"]) == Decimal("4.88")
    assert await hass.async_add_executor_job(ledger.statement, HOUSEHOLD, cycle) is not None
    journal = await _journal(hass, ledger, HOUSEHOLD)
    [refund] = [e for e in journal if e.kind is EntryKind.REFUND]
    assert refund.amount == Decimal("-25.12") and refund.balance_after == 0
    assert refund.key == settled["credit"]["move_key"] == f"move_out:{HOUSEHOLD}:{cycle}"
    assert refund.meta["reason"] == "Lease ended"
    assert refund.meta["actor"] == str(Actor.AUTOMATION)  # an action called without a user
    assert runtime.community.households[HOUSEHOLD].balances[E] == 0
    # The operator clicks again: the settlement made is answered, nothing is written.
    again = await respond(hass, "move_out", household=HOUSEHOLD, credit="refund")
    assert again["credit"]["already_settled"] is True
    assert again["credit"]["amount"] == "25.12"
    assert len(await _journal(hass, ledger, HOUSEHOLD)) == len(journal)
    # By meter, the meter is free now: refused, nothing written either.
    with pytest.raises(ServiceValidationError) as err:
        await respond(hass, "move_out", meter_id=METER_ID)
    assert err.value.translation_key == "meter_unassigned"
    assert len(await _journal(hass, ledger, HOUSEHOLD)) == len(journal)
    # The moved-out household cannot take a meter again in its closed cycle.
    with pytest.raises(ServiceValidationError) as err:
        await call(hass, "assign_meter", meter_id=METER_ID, household=HOUSEHOLD, label="Again")
    assert err.value.translation_key == "household_cycle_closed"
    # The next tenant: zero balance, tiers from zero (the old household's kWh are not theirs).
    await call(hass, "assign_meter", meter_id=METER_ID, household="b3-502", label="New tenant")
    assert runtime.community.meters[METER_ID].account_id == "b3-502"
    assert runtime.community.meters[METER_ID].billing.cycle_kwh == 0
    balances = await hass.async_add_executor_job(ledger.balances, "b3-502")
    assert set(balances.values()) == {Decimal(0)}
    assert await hass.async_add_executor_job(ledger.usage, "b3-502", cycle) == []
    now = int(time.time())
    await meter.reading(now, "112.000")
    await wait_until(hass, lambda: runtime.community.meters[METER_ID].seq == 3)
    await runtime.service.flush(raise_errors=True)
    [row] = await hass.async_add_executor_job(ledger.usage, "b3-502", cycle)
    assert row.tier == 1 and row.kwh == Decimal(2)
    month = cycle  # the flat tariff's cycle is the calendar month
    report = await hass.async_add_executor_job(
        month_report, ledger, month, runtime.community.tariff.tz
    )
    await assert_report_invariant(hass, ledger, report)
    rows = {row["household"]: row for row in report["households"]}
    assert rows[HOUSEHOLD]["refunds"]["electricity"] == "-25.12"
    assert rows[HOUSEHOLD]["settlements"]["electricity"] == "0.00"  # 0.003, to the cent
    assert rows[HOUSEHOLD]["closing"]["electricity"] == "0.00"


async def test_carry_moves_the_credit_to_the_next_tenant(
    hass: HomeAssistant, init_integration: MockConfigEntry, meter: TestMeter
) -> None:
    """Carry to a new household: two entries, one key, in one transaction; assigned after."""
    entry = init_integration
    runtime = entry.runtime_data
    ledger = runtime.community.ledger
    await _used(hass, entry, meter)
    settled = await respond(
        hass,
        "move_out",
        meter_id=METER_ID,
        credit="carry",
        next_household="b3-502",
        next_label="Building 3, flat 502",
    )
    assert settled["refund_due"] == "0.00"
    assert settled["credit"] == {
        "action": "carry",
        "amount": "25.12",
        "next_household": "b3-502",
        "move_key": settled["credit"]["move_key"],
        "already_settled": False,
    }
    move_key = settled["credit"]["move_key"]
    [out] = [e for e in await _journal(hass, ledger, HOUSEHOLD) if e.kind is EntryKind.ADJUSTMENT]
    [into] = await _journal(hass, ledger, "b3-502")
    assert (out.key, out.amount, out.balance_after) == (
        f"{move_key}:out",
        Decimal("-25.12"),
        Decimal(0),
    )
    assert (into.key, into.amount, into.kind) == (
        f"{move_key}:in",
        Decimal("25.12"),
        EntryKind.ADJUSTMENT,
    )
    assert out.meta["move_out"] == into.meta["move_out"] == move_key
    assert out.meta["actor"] == into.meta["actor"]
    assert into.meta["from"] == HOUSEHOLD and out.meta["to"] == "b3-502"
    household = await hass.async_add_executor_job(ledger.household, "b3-502")
    assert household is not None and household.label == "Building 3, flat 502"
    # Assigned the meter, the next tenant holds the credit and starts its tiers at zero.
    await call(hass, "assign_meter", meter_id=METER_ID, household="b3-502", label="B3 502")
    assert runtime.community.households["b3-502"].balances[E] == Decimal("25.12")
    assert runtime.community.meters[METER_ID].billing.cycle_kwh == 0
    # Repeated for the old household: answered as made, nothing carried twice.
    again = await respond(
        hass,
        "move_out",
        household=HOUSEHOLD,
        credit="carry",
        next_household="b3-502",
    )
    assert again["credit"]["already_settled"] is True
    assert again["credit"]["next_household"] == "b3-502"
    assert len(await _journal(hass, ledger, "b3-502")) == 1
    report = await hass.async_add_executor_job(
        month_report, ledger, settled["cycle"], runtime.community.tariff.tz
    )
    await assert_report_invariant(hass, ledger, report)
    rows = {row["household"]: row for row in report["households"]}
    assert rows[HOUSEHOLD]["carried"]["electricity"] == "-25.12"
    assert rows["b3-502"]["carried"]["electricity"] == "25.12"
    assert rows["b3-502"]["adjustments"]["electricity"] == "0.00"
    assert report["totals"]["carried"]["electricity"] == "0.00"


@pytest.mark.parametrize(
    ("data", "key"),
    [
        ({"credit": "carry"}, "next_household_required"),
        ({"credit": "carry", "next_household": "nobody"}, "unknown_next_household"),
        ({"credit": "carry", "next_household": HOUSEHOLD}, "next_household_same"),
        ({"credit": "refund", "next_household": "b3-502"}, "next_household_only_with_carry"),
    ],
)
async def test_bad_input_changes_nothing(
    hass: HomeAssistant,
    init_integration: MockConfigEntry,
    meter: TestMeter,
    data: dict[str, str],
    key: str,
) -> None:
    """One translated error; the meter stays assigned, no entry, no household, no statement."""
    entry = init_integration
    runtime = entry.runtime_data
    ledger = runtime.community.ledger
    await _used(hass, entry, meter)
    await runtime.service.flush(raise_errors=True)
    before = await _journal(hass, ledger, HOUSEHOLD)
    households = await hass.async_add_executor_job(ledger.households)
    with pytest.raises(ServiceValidationError) as err:
        await respond(hass, "move_out", household=HOUSEHOLD, **data)
    assert err.value.translation_key == key
    assert runtime.community.meters[METER_ID].account_id == HOUSEHOLD
    assert await _journal(hass, ledger, HOUSEHOLD) == before
    assert await hass.async_add_executor_job(ledger.households) == households
    assert await hass.async_add_executor_job(ledger.open_cycles, HOUSEHOLD) != []


async def test_a_household_without_meter_is_settled_and_a_resident_refused(
    hass: HomeAssistant,
    init_integration: MockConfigEntry,
    meter: TestMeter,
    hass_read_only_user: MockUser,
) -> None:
    """A household whose meter was unassigned before its move-out was settled (by hand, or
    a move-out interrupted there) is settled when asked: its credit refunded, once; one
    with nothing left to settle is one error. Residents may not."""
    entry = init_integration
    ledger = entry.runtime_data.community.ledger
    await setup_household(hass, entry, meter)
    await call(hass, "top_up", household=HOUSEHOLD, amount="10", transaction_id="t1")
    await entry.runtime_data.service.unassign(METER_ID)
    settled = await respond(hass, "move_out", household=HOUSEHOLD)
    assert settled["meters"] == [] and settled["refund_due"] == "10.00"
    assert settled["credit"]["action"] == "refund"
    assert await hass.async_add_executor_job(ledger.balance, HOUSEHOLD, E) == Decimal(0)
    again = await respond(hass, "move_out", household=HOUSEHOLD)
    assert again["credit"]["already_settled"] is True
    refunds = [e for e in await _journal(hass, ledger, HOUSEHOLD) if e.kind is EntryKind.REFUND]
    assert [e.amount for e in refunds] == [Decimal("-10")]
    await entry.runtime_data.service.assign(METER_ID, "b3-999", "Nobody home")
    await entry.runtime_data.service.unassign(METER_ID)  # no credit, nothing used
    with pytest.raises(ServiceValidationError) as err:
        await respond(hass, "move_out", household="b3-999")
    assert err.value.translation_key == "household_has_no_meter"
    resident = hass_read_only_user
    assert not resident.is_admin
    with pytest.raises(Unauthorized):
        await hass.services.async_call(
            DOMAIN,
            "move_out",
            {"household": HOUSEHOLD},
            blocking=True,
            return_response=True,
            context=Context(user_id=resident.id),
        )


async def test_a_double_click_settles_once(
    hass: HomeAssistant, init_integration: MockConfigEntry, meter: TestMeter
) -> None:
    """Two calls at once: the second waits for the first and answers its settlement."""
    entry = init_integration
    ledger = entry.runtime_data.community.ledger
    await _used(hass, entry, meter)
    first, second = await asyncio.gather(
        respond(hass, "move_out", household=HOUSEHOLD),
        respond(hass, "move_out", household=HOUSEHOLD),
    )
    assert [first["credit"]["already_settled"], second["credit"]["already_settled"]] == [
        False,
        True,
    ]
    assert first["credit"]["amount"] == second["credit"]["amount"] == "25.12"
    refunds = [e for e in await _journal(hass, ledger, HOUSEHOLD) if e.kind is EntryKind.REFUND]
    assert len(refunds) == 1
