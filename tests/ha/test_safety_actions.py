"""The safety watch's actions, on a real broker and ledger: acknowledge an alarm, a
household's care settings, an area's master meter; operators only; refusals translated."""

from __future__ import annotations

import time
from typing import Any

from homeassistant.core import Context, HomeAssistant
from homeassistant.exceptions import ServiceValidationError, Unauthorized
import pytest
from pytest_homeassistant_custom_component.common import MockConfigEntry, async_capture_events
import voluptuous as vol

from custom_components.prepaid_meter.const import DOMAIN
from tests.ha.conftest import METER_ID
from tests.ha.meter import TestMeter
from tests.ha.test_init import setup_household, wait_until

HOUSEHOLD = "b3-501"


async def respond(
    hass: HomeAssistant, service: str, context: Context | None = None, **data: Any
) -> Any:
    """Call an action and return its response data."""
    return await hass.services.async_call(
        DOMAIN, service, data, blocking=True, return_response=True, context=context
    )


async def test_acknowledge_an_open_alarm(
    hass: HomeAssistant, init_integration: MockConfigEntry, meter: TestMeter
) -> None:
    """A cover opened: an operator acknowledges the tamper alarm (journaled with who, an
    event on the bus); a kind not open is the translated `no_open_alarm`."""
    entry = init_integration
    runtime = entry.runtime_data
    await setup_household(hass, entry, meter)
    with pytest.raises(ServiceValidationError) as err:
        await respond(hass, "acknowledge_alarm", meter_id=METER_ID, alarm="tamper")
    assert err.value.translation_key == "no_open_alarm"
    assert err.value.translation_placeholders == {"meter_id": METER_ID, "kind": "tamper"}
    with pytest.raises(vol.Invalid):
        await respond(hass, "acknowledge_alarm", meter_id=METER_ID, alarm="fire")
    alarms = async_capture_events(hass, "prepaid_meter_alarm")
    await meter.reading(int(time.time()) - 5, "100.500", events=["cover_open"])
    await wait_until(hass, lambda: bool(alarms))
    assert [(e.data["type"], e.data["state"]) for e in alarms] == [("tamper", "start")]
    acked = async_capture_events(hass, "prepaid_meter_alarm_acknowledged")
    answer = await respond(hass, "acknowledge_alarm", meter_id=METER_ID, alarm="tamper")
    assert answer == {"meter_id": METER_ID, "alarm": "tamper"}
    await hass.async_block_till_done()
    assert [(e.data["type"], e.data["household"], e.data["actor_kind"]) for e in acked] == [
        ("tamper", "Household 3-501", "operator")
    ]
    journal = await hass.async_add_executor_job(runtime.community.ledger.safety_acks)
    assert [(a.meter_id, a.account_id, a.kind) for a in journal] == [
        (METER_ID, HOUSEHOLD, "tamper")
    ]


async def test_household_safety_and_master_meter(
    hass: HomeAssistant, init_integration: MockConfigEntry, meter: TestMeter
) -> None:
    """Care and vacant flags and own rules of a household; a bad rule, an unknown household
    and a master meter of a household are each one translated error and change nothing."""
    entry = init_integration
    runtime = entry.runtime_data
    await setup_household(hass, entry, meter)
    answer = await respond(
        hass, "set_household_safety", household=HOUSEHOLD, care=True, rules={"care_hours": 8}
    )
    assert answer == {
        "household": HOUSEHOLD,
        "care": True,
        "vacant": False,
        "rules": {"care_hours": 8},
        "changed": True,
    }
    assert runtime.community.safety.rules_for(HOUSEHOLD).care_hours == 8
    assert runtime.community.safety.household(HOUSEHOLD).care is True
    answer = await respond(hass, "set_household_safety", household=HOUSEHOLD, vacant=True)
    assert (answer["care"], answer["vacant"], answer["changed"]) == (True, True, True)
    with pytest.raises(ServiceValidationError) as err:
        await respond(
            hass, "set_household_safety", household=HOUSEHOLD, rules={"overload_s": "soon"}
        )
    assert err.value.translation_key == "invalid_safety_rule"
    assert "overload_s" in (err.value.translation_placeholders or {})["error"]
    with pytest.raises(ServiceValidationError) as err:
        await respond(hass, "set_household_safety", household="nobody", care=True)
    assert err.value.translation_key == "unknown_household"
    history = await hass.async_add_executor_job(runtime.community.ledger.safety_history)
    assert len(history) == 2
    with pytest.raises(ServiceValidationError) as err:
        await respond(hass, "set_master_meter", area="b3", meter_id=METER_ID, meters=["x"])
    assert err.value.translation_key == "unknown_meter"
    with pytest.raises(ServiceValidationError) as err:
        await respond(hass, "set_master_meter", area="b3", meter_id=METER_ID)
    assert err.value.translation_key == "invalid_area"
    with pytest.raises(ServiceValidationError) as err:
        await respond(hass, "set_master_meter", area="b3")
    assert err.value.translation_key == "invalid_area"  # no such area to remove
    assert runtime.community.areas == {}


async def test_safety_actions_are_an_operators(
    hass: HomeAssistant, init_integration: MockConfigEntry, meter: TestMeter
) -> None:
    """A resident may not acknowledge, set care or declare an area."""
    await setup_household(hass, init_integration, meter)
    if not [u for u in await hass.auth.async_get_users() if not u.system_generated]:
        await hass.auth.async_create_user("Owner", group_ids=["system-admin"])
    resident = await hass.auth.async_create_user("Alice", group_ids=["system-users"])
    context = Context(user_id=resident.id)
    for service, data in (
        ("acknowledge_alarm", {"meter_id": METER_ID, "alarm": "tamper"}),
        ("set_household_safety", {"household": HOUSEHOLD, "care": True}),
        ("set_master_meter", {"area": "b3", "meter_id": METER_ID, "meters": [METER_ID]}),
    ):
        with pytest.raises(Unauthorized):
            await respond(hass, service, context=context, **data)
    assert init_integration.runtime_data.community.households[HOUSEHOLD].care is False
