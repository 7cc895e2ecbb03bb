"""The low-balance threshold number: the engine's value, set through the service, restored.

The service is mocked at its seam (tests/ha/seam.py): setting the number asks
`CommunityService.set_low_threshold` with who asked; the number shows what the engine holds.
"""

from __future__ import annotations

from decimal import Decimal
from typing import TYPE_CHECKING

from homeassistant.components.number.const import ATTR_VALUE, SERVICE_SET_VALUE
from homeassistant.const import ATTR_ENTITY_ID, Platform
from homeassistant.core import Context, HomeAssistant, State
from homeassistant.exceptions import ServiceValidationError
import pytest
from pytest_homeassistant_custom_component.common import (
    MockUser,
    mock_restore_cache_with_extra_data,
)

from custom_components.prepaid_meter.engine.actor import Actor
from custom_components.prepaid_meter.engine.community import CommunityError
from tests.ha.conftest import METER_ID

if TYPE_CHECKING:
    from tests.ha.seam import Seam

pytest_plugins = ["tests.ha.seam"]

KEY = "low_balance_threshold"


@pytest.fixture
def platforms() -> list[Platform]:
    """Set up the number platform only."""
    return [Platform.NUMBER]


async def _set(hass: HomeAssistant, seam: Seam, value: float, context: Context) -> None:
    await hass.services.async_call(
        Platform.NUMBER,
        SERVICE_SET_VALUE,
        {ATTR_ENTITY_ID: seam.entity_id(Platform.NUMBER, KEY), ATTR_VALUE: value},
        blocking=True,
        context=context,
    )


async def test_shows_the_first_warning_level_until_set(seam: Seam) -> None:
    """By default the threshold is the community's first warning level, in its currency."""
    await seam.household()
    state = seam.state(Platform.NUMBER, KEY)
    assert Decimal(state.state) == seam.community.policy.warn_level_1 == Decimal(20)
    assert state.attributes["unit_of_measurement"] == "CNY"
    assert (state.attributes["min"], state.attributes["max"], state.attributes["step"]) == (
        0,
        1000,
        1,
    )


async def test_setting_asks_the_service_with_who_asked(
    hass: HomeAssistant, seam: Seam, hass_admin_user: MockUser
) -> None:
    """The value and the person go to the service; the number follows the engine after."""
    await seam.household()
    await _set(hass, seam, 35, Context(user_id=hass_admin_user.id))
    seam.service.set_low_threshold.assert_called_once_with(
        METER_ID,
        Decimal(35),
        actor=Actor("operator", user_id=hass_admin_user.id, name=hass_admin_user.name),
    )
    # The service sets it in the engine and says the meter changed: the number shows it.
    seam.community.set_low_threshold(METER_ID, Decimal(35))
    seam.runtime.meter_changed(METER_ID)
    await hass.async_block_till_done()
    assert Decimal(seam.state(Platform.NUMBER, KEY).state) == 35


async def test_a_refusal_is_a_translated_error(hass: HomeAssistant, seam: Seam) -> None:
    """The engine refuses a resident the threshold of a meter not theirs: said in words."""
    await seam.household()
    bob = await seam.resident("Bob")
    seam.service.set_low_threshold.side_effect = CommunityError(
        "not_your_meter", "Meter is not of a household you are linked to", meter_id=METER_ID
    )
    with pytest.raises(ServiceValidationError) as info:
        await _set(hass, seam, 5, Context(user_id=bob.id))
    assert seam.service.set_low_threshold.call_args.kwargs == {
        "actor": Actor("resident", user_id=bob.id, name="Bob")
    }
    assert info.value.translation_key == "not_your_meter"
    assert str(info.value) == (f"Meter {METER_ID} does not belong to a household you are linked to")
    assert Decimal(seam.state(Platform.NUMBER, KEY).state) == 20


async def test_the_value_before_a_restart_is_given_back_to_the_service(seam: Seam) -> None:
    """A number restored from Home Assistant's last state sets the engine's threshold."""
    hass = seam.hass
    entity_id = f"number.meter_{METER_ID}_low_balance_threshold"
    mock_restore_cache_with_extra_data(
        hass,
        [
            (
                State(entity_id, "45.0"),
                {
                    "native_max_value": 1000,
                    "native_min_value": 0,
                    "native_step": 1,
                    "native_unit_of_measurement": "CNY",
                    "native_value": 45.0,
                },
            )
        ],
    )
    await seam.announce()
    assert seam.entity_id(Platform.NUMBER, KEY) == entity_id
    seam.service.set_low_threshold.assert_called_once_with(
        METER_ID, Decimal("45.0"), actor=Actor.SYSTEM
    )
