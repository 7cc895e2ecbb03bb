"""The restore button: a resident's or operator's request to the service, refusals in words.

The service is mocked at its seam (tests/ha/seam.py).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from homeassistant.components.button.const import SERVICE_PRESS
from homeassistant.const import ATTR_ENTITY_ID, Platform
from homeassistant.core import Context, HomeAssistant
from homeassistant.exceptions import ServiceValidationError
import pytest
from pytest_homeassistant_custom_component.common import MockUser

from custom_components.prepaid_meter.engine.actor import Actor
from custom_components.prepaid_meter.engine.community import CommunityError
from tests.ha.conftest import METER_ID

if TYPE_CHECKING:
    from tests.ha.seam import Seam

pytest_plugins = ["tests.ha.seam"]


@pytest.fixture
def platforms() -> list[Platform]:
    """Set up the button platform only."""
    return [Platform.BUTTON]


async def _press(hass: HomeAssistant, seam: Seam, context: Context | None) -> None:
    await hass.services.async_call(
        Platform.BUTTON,
        SERVICE_PRESS,
        {ATTR_ENTITY_ID: seam.entity_id(Platform.BUTTON, "restore_supply")},
        blocking=True,
        context=context,
    )


async def test_a_resident_press_asks_for_the_supply_as_a_resident(
    hass: HomeAssistant, seam: Seam
) -> None:
    """Pressed by a resident: `request_supply(meter, "on")` with the resident as actor."""
    await seam.household()
    alice = await seam.resident("Alice")
    await _press(hass, seam, Context(user_id=alice.id))
    seam.service.request_supply.assert_awaited_once_with(
        METER_ID,
        "on",
        actor=Actor("resident", user_id=alice.id, name="Alice"),
        operator_override=False,
    )


async def test_an_administrator_press_is_the_operators(
    hass: HomeAssistant, seam: Seam, hass_admin_user: MockUser
) -> None:
    """Pressed by an administrator: the operator's request (never an override)."""
    await seam.household()
    await _press(hass, seam, Context(user_id=hass_admin_user.id))
    seam.service.request_supply.assert_awaited_once_with(
        METER_ID,
        "on",
        actor=Actor("operator", user_id=hass_admin_user.id, name=hass_admin_user.name),
        operator_override=False,
    )


async def test_a_refusal_names_the_cut_in_words(hass: HomeAssistant, seam: Seam) -> None:
    """A restore after a safety cut is the operator's: the reason is translated."""
    await seam.household()
    alice = await seam.resident("Alice")
    seam.service.request_supply.side_effect = CommunityError(
        "restore_needs_operator",
        "Only an operator may restore the supply",
        meter_id=METER_ID,
        reason="arc_fault",
    )
    with pytest.raises(ServiceValidationError) as info:
        await _press(hass, seam, Context(user_id=alice.id))
    assert info.value.translation_key == "restore_needs_operator"
    assert info.value.translation_placeholders == {"meter_id": METER_ID, "reason": "arc fault"}
    assert str(info.value) == (
        f"The supply of meter {METER_ID} was cut for arc fault; only an operator may restore it"
    )  # Home Assistant shows the message without its full stop


async def test_a_button_for_each_meter_as_it_appears(seam: Seam) -> None:
    """A meter announced later gets its button; an unknown id gets none."""
    await seam.announce()
    await seam.announce("000012345679")
    assert seam.entity_id(Platform.BUTTON, "restore_supply", "000012345679")
    await seam.reading(1, "1.000", "999900000001")
    assert len(seam.hass.states.async_entity_ids(Platform.BUTTON)) == 2
