"""Who may do what, through Home Assistant: every action and entity control, per person.

Operators (administrators, automations) may do everything. A resident is a user an operator
linked to a household: they restore their own household after a credit cut once paid, read
its statement and set its threshold; nothing else. Each refusal is a translated error and
writes nothing. (The engine's rules themselves: tests/engine/test_permissions.py.)
"""

from __future__ import annotations

import time
from typing import Any

from homeassistant.core import Context, HomeAssistant
from homeassistant.data_entry_flow import FlowResultType
from homeassistant.exceptions import ServiceValidationError, Unauthorized
import pytest
from pytest_homeassistant_custom_component.common import MockConfigEntry

from custom_components.prepaid_meter.const import CONF_COMMUNITY_ID, DOMAIN
from tests.broker import Mosquitto
from tests.ha.conftest import METER_ID
from tests.ha.meter import TestMeter
from tests.ha.test_init import call, entity_id, setup_household, state, wait_until
from tests.ha.test_services import _resident

HOUSEHOLD = "b3-501"
NEIGHBOUR = "b3-502"
NEIGHBOUR_METER = "000012345679"


async def _as(hass: HomeAssistant, user_id: str, domain: str, service: str, /, **data: Any) -> Any:
    """Call an action as a user."""
    return await hass.services.async_call(
        domain,
        service,
        data,
        blocking=True,
        context=Context(user_id=user_id),
        return_response=service == "get_statement",
    )


async def _refused(
    hass: HomeAssistant, user_id: str, domain: str, service: str, /, **data: Any
) -> ServiceValidationError:
    with pytest.raises(ServiceValidationError) as info:
        await _as(hass, user_id, domain, service, **data)
    return info.value


async def test_resident_acts_for_their_own_household_only(
    hass: HomeAssistant,
    init_integration: MockConfigEntry,
    meter: TestMeter,
    mosquitto: Mosquitto,
) -> None:
    """A linked resident restores after a credit cut once paid; the neighbour may not."""
    entry = init_integration
    runtime = entry.runtime_data
    community_id = entry.data[CONF_COMMUNITY_ID]
    async with TestMeter(mosquitto.host, mosquitto.port, community_id, NEIGHBOUR_METER):
        await wait_until(hass, lambda: NEIGHBOUR_METER in runtime.community.meters)
        await call(hass, "assign_meter", meter_id=NEIGHBOUR_METER, household=NEIGHBOUR)
    await setup_household(hass, entry, meter)
    alice = await _resident(hass, HOUSEHOLD, "Alice")
    bob = await _resident(hass, NEIGHBOUR, "Bob")
    stranger = await _resident(hass, None, "Carol")
    assert runtime.service.households_of(alice.id) == {HOUSEHOLD}
    assert runtime.service.users_of(NEIGHBOUR) == {bob.id}

    # The credit runs out: the supply is cut for credit_exhausted.
    now = int(time.time())
    await meter.reading(now - 120, "100.000")
    await meter.reading(now - 60, "200.000")
    await wait_until(hass, lambda: state(hass, entry, "supply") == "off")
    await call(hass, "top_up", household=HOUSEHOLD, amount="500", transaction_id="paid")

    # Neither the neighbour nor an unlinked user may restore it, by action or button.
    for user in (bob, stranger):
        error = await _refused(hass, user.id, DOMAIN, "restore_supply", meter_id=METER_ID)
        assert error.translation_key == "not_your_meter"
        error = await _refused(
            hass, user.id, "button", "press", entity_id=entity_id(hass, entry, "restore_supply")
        )
        assert error.translation_key == "not_your_meter"
    assert runtime.community.meters[METER_ID].desired_relay == "off"

    # Alice may, once paid: recorded as hers.
    await _as(hass, alice.id, DOMAIN, "restore_supply", meter_id=METER_ID)
    await meter.wait_for(lambda: meter.relay == "on")
    assert runtime.community.meters[METER_ID].relay_actor.user_id == alice.id

    # Nobody but an operator cuts: not Alice, not by the switch.
    switch = entity_id(hass, entry, "supply")
    error = await _refused(hass, alice.id, "switch", "turn_off", entity_id=switch)
    assert error.translation_key == "cut_needs_operator"
    assert runtime.community.meters[METER_ID].desired_relay == "on"

    # Statements: her own; the neighbour's and a household that does not exist are both
    # "not yours" (a resident learns nothing of other households).
    statement = await _as(
        hass, alice.id, DOMAIN, "get_statement", household=HOUSEHOLD, cycle="2026-11"
    )
    assert statement is not None
    for household in (NEIGHBOUR, "no-such-home"):
        error = await _refused(
            hass, alice.id, DOMAIN, "get_statement", household=household, cycle="2026-11"
        )
        assert error.translation_key == "not_your_household"
        assert error.translation_placeholders == {"household": household}

    # Thresholds: her own meter's, not the neighbour's.
    number = entity_id(hass, entry, "low_balance_threshold")
    await _as(hass, alice.id, "number", "set_value", entity_id=number, value=35)
    assert runtime.low_threshold(METER_ID) == 35
    registry_id = hass.states.async_entity_ids("number")
    neighbour_number = next(e for e in registry_id if e != number)
    error = await _refused(
        hass, alice.id, "number", "set_value", entity_id=neighbour_number, value=1
    )
    assert error.translation_key == "not_your_meter"

    # Only an operator links people; unlinking takes effect at once.
    with pytest.raises(Unauthorized):
        await _as(hass, alice.id, DOMAIN, "link_user", household=NEIGHBOUR, user_id=alice.id)
    assert runtime.service.households_of(alice.id) == {HOUSEHOLD}
    response = await hass.services.async_call(
        DOMAIN,
        "unlink_user",
        {"household": HOUSEHOLD, "user_id": alice.id},
        blocking=True,
        return_response=True,
    )
    assert response == {
        "household": HOUSEHOLD,
        "user_id": alice.id,
        "linked": False,
        "changed": True,
    }
    error = await _refused(
        hass, alice.id, DOMAIN, "get_statement", household=HOUSEHOLD, cycle="2026-11"
    )
    assert error.translation_key == "not_your_household"


async def test_resident_never_restores_after_a_safety_cut(
    hass: HomeAssistant, init_integration: MockConfigEntry, meter: TestMeter
) -> None:
    """After an arc-fault cut even the household's own resident is refused; an operator may."""
    entry = init_integration
    runtime = entry.runtime_data
    await setup_household(hass, entry, meter)
    await call(hass, "top_up", household=HOUSEHOLD, amount="100", transaction_id="t1")
    alice = await _resident(hass, HOUSEHOLD, "Alice")
    now = int(time.time())
    await meter.reading(now - 60, "100.000", events=["arc_fault"])
    await wait_until(hass, lambda: runtime.community.meters[METER_ID].desired_relay == "off")
    assert runtime.community.meters[METER_ID].relay_reason == "arc_fault"
    error = await _refused(hass, alice.id, DOMAIN, "restore_supply", meter_id=METER_ID)
    assert error.translation_key == "restore_needs_operator"
    assert error.translation_placeholders == {"meter_id": METER_ID, "reason": "arc fault"}
    assert runtime.community.meters[METER_ID].desired_relay == "off"
    await call(hass, "restore_supply", meter_id=METER_ID)  # an automation: an operator
    await meter.wait_for(lambda: meter.relay == "on")


async def test_link_user_needs_a_real_user_and_a_household(
    hass: HomeAssistant, init_integration: MockConfigEntry, meter: TestMeter
) -> None:
    """Linking names an existing Home Assistant user and household; twice changes nothing."""
    entry = init_integration
    await setup_household(hass, entry, meter)
    with pytest.raises(ServiceValidationError) as info:
        await call(hass, "link_user", household=HOUSEHOLD, user_id="nobody")
    assert info.value.translation_key == "unknown_user"
    user = await hass.auth.async_create_user("Dan")
    with pytest.raises(ServiceValidationError) as info:
        await call(hass, "link_user", household="no-such-home", user_id=user.id)
    assert info.value.translation_key == "unknown_household"
    first = await hass.services.async_call(
        DOMAIN,
        "link_user",
        {"household": HOUSEHOLD, "user_id": user.id},
        blocking=True,
        return_response=True,
    )
    again = await hass.services.async_call(
        DOMAIN,
        "link_user",
        {"household": HOUSEHOLD, "user_id": user.id},
        blocking=True,
        return_response=True,
    )
    assert (first or {})["changed"] is True
    assert (again or {})["changed"] is False
    # The link is a ledger fact: it survives a reload.
    assert await hass.config_entries.async_reload(entry.entry_id)
    await hass.async_block_till_done()
    assert entry.runtime_data.service.households_of(user.id) == {HOUSEHOLD}


async def test_options_link_and_unlink_a_resident(
    hass: HomeAssistant, init_integration: MockConfigEntry, meter: TestMeter
) -> None:
    """The options' residents step links a user to a household and unlinks them."""
    entry = init_integration
    runtime = entry.runtime_data
    await setup_household(hass, entry, meter)
    erin = await hass.auth.async_create_user("Erin")

    async def residents(**user_input: str) -> Any:
        result = await hass.config_entries.options.async_init(entry.entry_id)
        result = await hass.config_entries.options.async_configure(
            result["flow_id"], {"next_step_id": "residents"}
        )
        assert result["step_id"] == "residents"
        return await hass.config_entries.options.async_configure(result["flow_id"], user_input)

    options = dict(entry.options)
    result = await residents(household=HOUSEHOLD, user=erin.id, link="link")
    assert result["type"] is FlowResultType.CREATE_ENTRY
    assert runtime.service.households_of(erin.id) == {HOUSEHOLD}
    assert entry.options == options  # no option changed: no reload
    assert entry.runtime_data is runtime
    history = await hass.async_add_executor_job(runtime.community.ledger.link_history, HOUSEHOLD)
    assert [(link.user_id, link.linked, link.actor) for link in history] == [
        (erin.id, True, "operator||options")
    ]
    result = await residents(household=HOUSEHOLD, user=erin.id, link="unlink")
    assert result["type"] is FlowResultType.CREATE_ENTRY
    assert runtime.service.households_of(erin.id) == frozenset()


async def test_options_residents_need_a_loaded_community(
    hass: HomeAssistant, config_entry: MockConfigEntry
) -> None:
    """A community that is not loaded cannot link anyone: the step says why."""
    config_entry.add_to_hass(hass)
    result = await hass.config_entries.options.async_init(config_entry.entry_id)
    result = await hass.config_entries.options.async_configure(
        result["flow_id"], {"next_step_id": "residents"}
    )
    assert result["type"] is FlowResultType.ABORT
    assert result["reason"] == "entry_not_loaded"
