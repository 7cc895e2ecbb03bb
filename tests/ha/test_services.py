"""The integration's actions: money movements, permissions, assignment, restore, statements."""

from __future__ import annotations

import asyncio
from datetime import datetime
from decimal import Decimal
from pathlib import Path
import sqlite3
import time
from typing import Any
from unittest.mock import patch
from zoneinfo import ZoneInfo

from homeassistant.auth.models import User
from homeassistant.core import Context, HomeAssistant
from homeassistant.exceptions import HomeAssistantError, ServiceValidationError, Unauthorized
import pytest
from pytest_homeassistant_custom_component.common import MockConfigEntry, async_capture_events
import voluptuous as vol

from custom_components.prepaid_meter.const import CONF_COMMUNITY_ID, DOMAIN
from custom_components.prepaid_meter.coordinator import PrepaidRuntime
from custom_components.prepaid_meter.engine.actor import Actor
from custom_components.prepaid_meter.engine.ledger import EntryKind, SubAccount
from tests.broker import Mosquitto
from tests.ha.conftest import METER_ID
from tests.ha.meter import TestMeter
from tests.ha.test_init import call, entity_id, setup_household, state, wait_until

HOUSEHOLD = "b3-501"
SHANGHAI = ZoneInfo("Asia/Shanghai")


async def respond(
    hass: HomeAssistant, service: str, context: Context | None = None, **data: Any
) -> Any:
    """Call an action and return its response data."""
    return await hass.services.async_call(
        DOMAIN, service, data, blocking=True, return_response=True, context=context
    )


async def _invariant(runtime: PrepaidRuntime) -> list[Any]:
    return await runtime.hass.async_add_executor_job(runtime.community.ledger.check_invariant)


async def _balances(runtime: PrepaidRuntime, account: str = HOUSEHOLD) -> dict[SubAccount, Decimal]:
    return await runtime.hass.async_add_executor_job(runtime.community.ledger.balances, account)


async def _resident(
    hass: HomeAssistant, household: str | None = None, name: str = "resident"
) -> User:
    """Return a user who is not an administrator (the first user created owns the instance).

    With a household, an operator (here an automation) links the user to it.
    """
    if not [u for u in await hass.auth.async_get_users() if not u.system_generated]:
        await hass.auth.async_create_user("Owner", group_ids=["system-admin"])
    user = await hass.auth.async_create_user(name, group_ids=["system-users"])
    assert not user.is_admin
    if household is not None:
        await call(hass, "link_user", household=household, user_id=user.id)
    return user


async def test_adjust_both_ways_keeps_the_invariant(
    hass: HomeAssistant, init_integration: MockConfigEntry, meter: TestMeter
) -> None:
    """Adjustments credit and debit the chosen sub-account, with their reason journaled."""
    entry = init_integration
    runtime = entry.runtime_data
    await setup_household(hass, entry, meter)
    await call(hass, "top_up", household=HOUSEHOLD, amount="100", transaction_id="t1")
    down = await respond(
        hass,
        "adjust",
        household=HOUSEHOLD,
        amount="-12.5",
        reason="meter read twice",
        transaction_id="adj-1",
    )
    assert down == {"household": HOUSEHOLD, "balance": "87.50"}
    up = await respond(
        hass, "adjust", household=HOUSEHOLD, amount=2.25, reason="goodwill", transaction_id="adj-2"
    )
    assert up == {"household": HOUSEHOLD, "balance": "89.75"}
    fee = await respond(
        hass,
        "adjust",
        household=HOUSEHOLD,
        sub_account="property_fee",
        amount="-30",
        reason="late fee",
        transaction_id="adj-3",
    )
    assert fee == {"household": HOUSEHOLD, "balance": "-30.00"}
    await wait_until(hass, lambda: state(hass, entry, "balance") == "89.75")
    household = runtime.community.households[HOUSEHOLD]
    assert household.electricity == Decimal("89.75")
    assert household.balances[SubAccount.PROPERTY_FEE] == Decimal(-30)
    entries = await hass.async_add_executor_job(
        runtime.community.ledger.entries, HOUSEHOLD, SubAccount.ELECTRICITY
    )
    assert [(e.kind, e.amount, e.meta.get("reason")) for e in entries] == [
        (EntryKind.ADJUSTMENT, Decimal("2.25"), "goodwill"),
        (EntryKind.ADJUSTMENT, Decimal("-12.5"), "meter read twice"),
        (EntryKind.TOP_UP, Decimal(100), None),
    ]
    assert entries[0].meta["actor"] == "operator||automation"
    assert Actor.parse(str(entries[0].meta["actor"])) == Actor.AUTOMATION
    with pytest.raises(ServiceValidationError) as info:
        await call(
            hass, "adjust", household=HOUSEHOLD, amount="0", reason="x", transaction_id="adj-4"
        )
    assert info.value.translation_key == "invalid_amount"
    assert await _invariant(runtime) == []


async def test_fees_and_payments_stay_in_their_sub_account(
    hass: HomeAssistant, init_integration: MockConfigEntry, meter: TestMeter
) -> None:
    """charge_fee and pay_fee move the fee sub-accounts only; electricity is untouched."""
    entry = init_integration
    runtime = entry.runtime_data
    await setup_household(hass, entry, meter)
    await call(hass, "top_up", household=HOUSEHOLD, amount="40", transaction_id="t1")
    charged = await respond(
        hass,
        "charge_fee",
        household=HOUSEHOLD,
        sub_account="parking_fee",
        amount="150",
        period="2026-03",
        transaction_id="park-03",
    )
    assert charged == {"household": HOUSEHOLD, "balance": "-150.00"}
    await call(
        hass,
        "charge_fee",
        household=HOUSEHOLD,
        sub_account="property_fee",
        amount="300",
        period="2026",
        transaction_id="prop-26",
    )
    paid = await respond(
        hass,
        "pay_fee",
        household=HOUSEHOLD,
        sub_account="parking_fee",
        amount="100",
        period="2026-03",
        transaction_id="park-pay",
    )
    assert paid == {"household": HOUSEHOLD, "balance": "-50.00"}
    balances = await _balances(runtime)
    assert balances == {
        SubAccount.ELECTRICITY: Decimal(40),
        SubAccount.PROPERTY_FEE: Decimal(-300),
        SubAccount.PARKING_FEE: Decimal(-50),
    }
    assert runtime.community.households[HOUSEHOLD].balances == balances
    assert runtime.community.households[HOUSEHOLD].electricity == Decimal(40)
    assert state(hass, entry, "supply") == "on"
    # A fee must be positive: the sign comes from the action.
    with pytest.raises(ServiceValidationError) as info:
        await call(
            hass,
            "charge_fee",
            household=HOUSEHOLD,
            sub_account="parking_fee",
            amount="-5",
            transaction_id="neg",
        )
    assert info.value.translation_key == "invalid_amount"
    # Fees never go to the electricity wallet.
    with pytest.raises(vol.Invalid):
        await call(
            hass,
            "charge_fee",
            household=HOUSEHOLD,
            sub_account="electricity",
            amount="5",
            transaction_id="elec",
        )
    assert await _invariant(runtime) == []


@pytest.mark.parametrize("amount", [True, "abc", "NaN", "Infinity", "-Infinity", "sNaN"])
async def test_amount_that_is_not_a_number_is_refused(
    hass: HomeAssistant, init_integration: MockConfigEntry, amount: object
) -> None:
    """Booleans, words and non-finite numbers fail validation before anything is posted."""
    with pytest.raises(vol.Invalid):
        await call(hass, "top_up", household=HOUSEHOLD, amount=amount, transaction_id="bad")


async def test_assignment_errors(
    hass: HomeAssistant,
    init_integration: MockConfigEntry,
    meter: TestMeter,
    mosquitto: Mosquitto,
) -> None:
    """An unknown meter cannot be assigned; a household keeps to one meter."""
    entry = init_integration
    runtime = entry.runtime_data
    await setup_household(hass, entry, meter)
    with pytest.raises(ServiceValidationError) as info:
        await call(hass, "assign_meter", meter_id="999999999999", household="b9-101")
    assert info.value.translation_key == "unknown_meter"
    assert info.value.translation_placeholders == {"meter_id": "999999999999"}

    second_id = "000087654321"
    community_id = entry.data[CONF_COMMUNITY_ID]
    async with TestMeter(mosquitto.host, mosquitto.port, community_id, second_id):
        await wait_until(hass, lambda: second_id in runtime.community.meters)
        with pytest.raises(ServiceValidationError) as info:
            await call(hass, "assign_meter", meter_id=second_id, household=HOUSEHOLD)
        assert info.value.translation_key == "household_has_meter"
        assert info.value.translation_placeholders == {
            "household": HOUSEHOLD,
            "meter_id": METER_ID,
        }
        assert runtime.community.meters[second_id].account_id is None
        # The unassigned meter cannot be topped up by its id.
        with pytest.raises(ServiceValidationError) as info:
            await call(hass, "top_up", meter_id=second_id, amount="10", transaction_id="t-2")
        assert info.value.translation_key == "meter_unassigned"
        # Without a label the household id is the label; supply_protected is stored.
        response = await respond(
            hass, "assign_meter", meter_id=second_id, household="b3-502", supply_protected=True
        )
        assert response == {"household": "b3-502", "meter_id": second_id, "label": "b3-502"}
        assert runtime.community.households["b3-502"].supply_protected is True
        assert runtime.household_of(second_id) is runtime.community.households["b3-502"]

    for data, key in (
        ({"meter_id": "999999999999"}, "unknown_meter"),
        ({}, "household_or_meter_required"),
    ):
        with pytest.raises(ServiceValidationError) as info:
            await call(hass, "top_up", amount="10", transaction_id="t-3", **data)
        assert info.value.translation_key == key
    assert runtime.community.households[HOUSEHOLD].electricity == 0


@pytest.mark.parametrize(
    ("service", "data"),
    [
        ("top_up", {"household": HOUSEHOLD, "amount": "10", "transaction_id": "r1"}),
        (
            "adjust",
            {"household": HOUSEHOLD, "amount": "10", "reason": "x", "transaction_id": "r2"},
        ),
        (
            "charge_fee",
            {
                "household": HOUSEHOLD,
                "sub_account": "property_fee",
                "amount": "10",
                "transaction_id": "r3",
            },
        ),
        (
            "pay_fee",
            {
                "household": HOUSEHOLD,
                "sub_account": "property_fee",
                "amount": "10",
                "transaction_id": "r4",
            },
        ),
        ("assign_meter", {"meter_id": METER_ID, "household": "b9-999"}),
    ],
)
async def test_money_actions_need_an_administrator(
    hass: HomeAssistant,
    init_integration: MockConfigEntry,
    meter: TestMeter,
    service: str,
    data: dict[str, Any],
) -> None:
    """A resident (non-admin) cannot move money or reassign meters; nothing is written."""
    entry = init_integration
    runtime = entry.runtime_data
    await setup_household(hass, entry, meter)
    resident = await _resident(hass)
    with pytest.raises(Unauthorized):
        await hass.services.async_call(
            DOMAIN, service, data, blocking=True, context=Context(user_id=resident.id)
        )
    # A user id that no longer exists is refused too.
    with pytest.raises(Unauthorized):
        await hass.services.async_call(
            DOMAIN, service, data, blocking=True, context=Context(user_id="gone")
        )
    assert await _balances(runtime) == dict.fromkeys(SubAccount, Decimal(0))
    assert runtime.community.meters[METER_ID].account_id == HOUSEHOLD
    entries = await hass.async_add_executor_job(runtime.community.ledger.entries, HOUSEHOLD)
    assert entries == []


async def test_admin_user_moves_money_and_is_journaled(
    hass: HomeAssistant, init_integration: MockConfigEntry, meter: TestMeter
) -> None:
    """An administrator's top-up is credited and journaled with the user as actor."""
    entry = init_integration
    runtime = entry.runtime_data
    await setup_household(hass, entry, meter)
    admin = await hass.auth.async_create_user("Operator", group_ids=["system-admin"])
    response = await respond(
        hass,
        "top_up",
        Context(user_id=admin.id),
        household=HOUSEHOLD,
        amount="20",
        transaction_id="adm-1",
        channel="cash",
    )
    assert response == {"household": HOUSEHOLD, "balance": "20.00", "duplicate": False}
    entries = await hass.async_add_executor_job(runtime.community.ledger.entries, HOUSEHOLD)
    assert entries[0].meta["actor"] == f"operator|{admin.id}|Operator"
    assert entries[0].meta["channel"] == "cash"


async def _cut(hass: HomeAssistant, entry: MockConfigEntry, meter: TestMeter) -> None:
    """Run the household into debt beyond the emergency credit: the supply is cut."""
    await setup_household(hass, entry, meter)
    now = int(time.time())
    await meter.reading(now - 120, "100.000")
    await meter.reading(now - 60, "200.000")
    await wait_until(hass, lambda: state(hass, entry, "supply") == "off")


async def test_restore_supply_operator_override(
    hass: HomeAssistant, init_integration: MockConfigEntry, meter: TestMeter
) -> None:
    """In debt: a resident's override is refused, an administrator's override restores."""
    entry = init_integration
    runtime = entry.runtime_data
    await _cut(hass, entry, meter)
    resident = await _resident(hass, HOUSEHOLD)
    with pytest.raises(ServiceValidationError) as info:
        await hass.services.async_call(
            DOMAIN,
            "restore_supply",
            {"meter_id": METER_ID, "operator_override": True},
            blocking=True,
            context=Context(user_id=resident.id),
        )
    assert info.value.translation_key == "not_admin"
    with pytest.raises(ServiceValidationError) as info:
        await hass.services.async_call(
            DOMAIN,
            "restore_supply",
            {"meter_id": METER_ID},
            blocking=True,
            context=Context(user_id=resident.id),
        )
    assert info.value.translation_key == "credit_exhausted_restore_refused"
    with pytest.raises(ServiceValidationError) as info:
        await call(hass, "restore_supply", meter_id="999999999999")
    assert info.value.translation_key == "unknown_meter"
    assert runtime.community.meters[METER_ID].desired_relay == "off"

    restored = async_capture_events(hass, "prepaid_meter_supply_restored")
    admin = await hass.auth.async_create_user("Operator", group_ids=["system-admin"])
    await hass.services.async_call(
        DOMAIN,
        "restore_supply",
        {"meter_id": METER_ID, "operator_override": True},
        blocking=True,
        context=Context(user_id=admin.id),
    )
    await meter.wait_for(lambda: meter.relay == "on")
    assert state(hass, entry, "supply") == "on"
    assert restored[0].data["reason"] == "operator_override"
    assert (restored[0].data["actor"], restored[0].data["actor_kind"]) == ("Operator", "operator")
    assert restored[0].data["actor_user_id"] == admin.id
    switch = hass.states.get(_switch(hass, entry))
    assert switch is not None
    assert (switch.attributes["actor"], switch.attributes["actor_kind"]) == (
        "Operator",
        "operator",
    )
    assert switch.attributes["reason"] == "operator_override"


async def test_resident_restores_after_a_top_up_as_a_resident(
    hass: HomeAssistant, init_integration: MockConfigEntry, meter: TestMeter
) -> None:
    """The restore button of a resident (not an administrator) is recorded as the resident's."""
    entry = init_integration
    runtime = entry.runtime_data
    await _cut(hass, entry, meter)
    await call(hass, "top_up", household=HOUSEHOLD, amount="500", transaction_id="t-back")
    resident = await _resident(hass, HOUSEHOLD)
    restored = async_capture_events(hass, "prepaid_meter_supply_restored")
    await hass.services.async_call(
        "button",
        "press",
        {"entity_id": entity_id(hass, entry, "restore_supply")},
        blocking=True,
        context=Context(user_id=resident.id),
    )
    await meter.wait_for(lambda: meter.relay == "on")
    actor = Actor("resident", user_id=resident.id, name="resident")
    assert runtime.community.meters[METER_ID].relay_actor == actor
    assert (restored[0].data["reason"], restored[0].data["actor_kind"]) == ("restored", "resident")
    change = runtime.community.ledger.supply_states()[METER_ID]
    assert (change.state, change.actor) == ("on", f"resident|{resident.id}|resident")


async def test_restore_supply_by_automation_and_nameless_admin(
    hass: HomeAssistant, init_integration: MockConfigEntry, meter: TestMeter
) -> None:
    """An automation counts as the operator; an admin without a name is named by id."""
    entry = init_integration
    runtime = entry.runtime_data
    await _cut(hass, entry, meter)
    await call(hass, "restore_supply", meter_id=METER_ID, operator_override=True)
    assert runtime.community.meters[METER_ID].relay_actor == Actor.AUTOMATION
    await hass.services.async_call(
        "switch", "turn_off", {"entity_id": _switch(hass, entry)}, blocking=True
    )
    nameless = await hass.auth.async_create_user(None, group_ids=["system-admin"])  # type: ignore[arg-type]
    await hass.services.async_call(
        DOMAIN,
        "restore_supply",
        {"meter_id": METER_ID, "operator_override": True},
        blocking=True,
        context=Context(user_id=nameless.id),
    )
    assert runtime.community.meters[METER_ID].relay_actor == Actor("operator", user_id=nameless.id)
    assert runtime.community.meters[METER_ID].desired_relay == "on"


def _switch(hass: HomeAssistant, entry: MockConfigEntry) -> str:
    from tests.ha.test_init import entity_id

    return entity_id(hass, entry, "supply")


async def test_statement_of_a_closed_cycle(
    hass: HomeAssistant, init_integration: MockConfigEntry, meter: TestMeter
) -> None:
    """Readings across a month boundary settle last month; its statement comes back closed."""
    entry = init_integration
    runtime = entry.runtime_data
    await setup_household(hass, entry, meter)
    await call(hass, "top_up", household=HOUSEHOLD, amount="100", transaction_id="t1")
    now = datetime.now(SHANGHAI)
    month_start = now.replace(day=1, hour=0, minute=0, second=0, microsecond=0)
    previous_cycle = datetime.fromtimestamp(month_start.timestamp() - 1, SHANGHAI).strftime("%Y-%m")
    start = int(month_start.timestamp())
    await meter.reading(start - 7200, "100.000")
    await meter.reading(start - 3600, "110.000")  # 10 kWh in last month's cycle
    await meter.reading(max(int(time.time()) - 30, start + 1), "110.000")
    await wait_until(hass, lambda: runtime.community.meters[METER_ID].seq == 3)
    await runtime.async_flush()
    statement = await call(hass, "get_statement", household=HOUSEHOLD, cycle=previous_cycle)
    assert statement["closed"] is True
    assert statement["currency"] == "CNY"
    assert statement["kwh"] == "10.000"
    assert statement["lines"][0]["amount"] == "4.88"
    current = await call(hass, "get_statement", household=HOUSEHOLD, cycle=now.strftime("%Y-%m"))
    assert current["closed"] is False
    with pytest.raises(ServiceValidationError) as info:
        await call(hass, "get_statement", household="nobody", cycle=previous_cycle)
    assert info.value.translation_key == "unknown_household"
    with pytest.raises(vol.Invalid):
        await call(hass, "get_statement", household=HOUSEHOLD, cycle="last month")


async def test_ledger_failure_is_one_clear_error(
    hass: HomeAssistant, init_integration: MockConfigEntry, meter: TestMeter
) -> None:
    """A ledger that fails under an action: a HomeAssistantError, live balances unchanged."""
    entry = init_integration
    runtime = entry.runtime_data
    await setup_household(hass, entry, meter)
    with (
        patch.object(
            runtime.community, "top_up", side_effect=sqlite3.OperationalError("disk I/O error")
        ),
        pytest.raises(HomeAssistantError) as info,
    ):
        await call(hass, "top_up", household=HOUSEHOLD, amount="10", transaction_id="io")
    assert not isinstance(info.value, ServiceValidationError)
    assert info.value.translation_key == "ledger_error"
    assert info.value.translation_placeholders == {"error": "disk I/O error"}
    assert runtime.community.households[HOUSEHOLD].electricity == 0


async def test_config_entry_selection(
    hass: HomeAssistant,
    init_integration: MockConfigEntry,
    config_entry: MockConfigEntry,
    meter: TestMeter,
    tmp_path: Path,
) -> None:
    """With two communities the entry must be named; with none loaded nothing is found."""
    first = init_integration
    await setup_household(hass, first, meter)
    second = MockConfigEntry(
        domain=DOMAIN,
        title="Second community",
        unique_id=f"{config_entry.unique_id}-2",
        data={**config_entry.data, CONF_COMMUNITY_ID: f"{config_entry.data[CONF_COMMUNITY_ID]}x"},
        options=dict(config_entry.options),
    )
    second.add_to_hass(hass)
    assert await hass.config_entries.async_setup(second.entry_id)
    async with asyncio.timeout(10):
        await second.runtime_data.transport.wait_connected()

    top_up: dict[str, Any] = {"household": HOUSEHOLD, "amount": "10", "transaction_id": "sel-1"}
    with pytest.raises(ServiceValidationError) as info:
        await call(hass, "top_up", **top_up)
    assert info.value.translation_key == "entry_not_loaded"
    with pytest.raises(ServiceValidationError) as info:
        await call(hass, "top_up", config_entry_id="not-an-entry", **top_up)
    assert info.value.translation_key == "entry_not_loaded"
    assert info.value.translation_placeholders == {"entry": "not-an-entry"}
    # The second community has no such household; the first one does.
    with pytest.raises(ServiceValidationError) as info:
        await call(hass, "top_up", config_entry_id=second.entry_id, **top_up)
    assert info.value.translation_key == "unknown_household"
    response = await respond(hass, "top_up", config_entry_id=first.entry_id, **top_up)
    assert response["balance"] == "10.00"
    assert first.runtime_data.community.households[HOUSEHOLD].electricity == 10

    assert await hass.config_entries.async_unload(second.entry_id)
    assert await hass.config_entries.async_unload(first.entry_id)
    with pytest.raises(ServiceValidationError) as info:
        await call(hass, "top_up", **top_up)
    assert info.value.translation_key == "entry_not_loaded"
    assert info.value.translation_placeholders == {"entry": ""}
