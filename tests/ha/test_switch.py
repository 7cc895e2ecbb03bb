"""The supply switch: shows what the engine wants, asks the service, says why it refused.

The service is mocked at its seam (tests/ha/seam.py): turning the switch asks
`CommunityService.request_supply` with who asked; only the engine changes what it shows.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

from homeassistant.const import (
    ATTR_ENTITY_ID,
    SERVICE_TURN_OFF,
    SERVICE_TURN_ON,
    STATE_UNAVAILABLE,
    Platform,
)
from homeassistant.core import Context, HomeAssistant
from homeassistant.exceptions import HomeAssistantError, ServiceValidationError
import pytest
from pytest_homeassistant_custom_component.common import MockUser

from custom_components.prepaid_meter.const import DOMAIN
from custom_components.prepaid_meter.engine.actor import Actor
from custom_components.prepaid_meter.engine.community import CommunityError
from custom_components.prepaid_meter.engine.ledger import LedgerError
from tests.ha.conftest import METER_ID

if TYPE_CHECKING:
    from tests.ha.seam import Seam

pytest_plugins = ["tests.ha.seam"]


@pytest.fixture
def platforms() -> list[Platform]:
    """Set up the switch platform only."""
    return [Platform.SWITCH]


async def _switch(hass: HomeAssistant, seam: Seam, action: str, context: Context | None) -> None:
    await hass.services.async_call(
        Platform.SWITCH,
        action,
        {ATTR_ENTITY_ID: seam.entity_id(Platform.SWITCH, "supply")},
        blocking=True,
        context=context,
    )


async def test_shows_the_wanted_supply_and_who_decided(seam: Seam) -> None:
    """On while in credit; a credit cut by the engine turns it off, saying why and by whom."""
    await seam.household()
    state = seam.state(Platform.SWITCH, "supply")
    assert state.state == "on"
    assert state.attributes["reason"] == "in_credit"
    assert (state.attributes["actor"], state.attributes["actor_kind"]) == ("system", "system")
    assert state.attributes["reported"] is None  # the meter has said nothing yet
    now = int(time.time())
    await seam.reading(now - 120, "100.000")
    assert seam.state(Platform.SWITCH, "supply").attributes["reported"] == "on"
    await seam.reading(now - 60, "230.000")  # 63.48 of 50.00, past the emergency credit
    state = seam.state(Platform.SWITCH, "supply")
    assert state.state == "off"
    assert state.attributes["reason"] == "credit_exhausted"
    assert state.attributes["reported"] == "on"  # wanted off; the meter is told until it agrees


async def test_turn_off_asks_the_service_as_the_operator(
    hass: HomeAssistant, seam: Seam, hass_admin_user: MockUser
) -> None:
    """An administrator's turn-off is the operator's request; the switch waits for the engine."""
    await seam.household()
    await _switch(hass, seam, SERVICE_TURN_OFF, Context(user_id=hass_admin_user.id))
    seam.service.request_supply.assert_awaited_once_with(
        METER_ID,
        "off",
        actor=Actor("operator", user_id=hass_admin_user.id, name=hass_admin_user.name),
        operator_override=False,
    )
    # Nothing decided yet (the mock did nothing): the switch shows the engine's wish.
    assert seam.state(Platform.SWITCH, "supply").state == "on"


async def test_turn_on_by_an_automation(hass: HomeAssistant, seam: Seam) -> None:
    """With no user (an automation, a script) the request is the operator "automation"."""
    await seam.household()
    await _switch(hass, seam, SERVICE_TURN_ON, None)
    seam.service.request_supply.assert_awaited_once_with(
        METER_ID, "on", actor=Actor.AUTOMATION, operator_override=False
    )


async def test_a_refusal_is_a_translated_error(
    hass: HomeAssistant, seam: Seam, hass_admin_user: MockUser
) -> None:
    """The engine's refusal reaches the person in words, with its placeholders."""
    await seam.household()
    seam.service.request_supply.side_effect = CommunityError(
        "credit_exhausted_restore_refused",
        "Supply of meter stays off",
        meter_id=METER_ID,
        balance="-13.48",
    )
    with pytest.raises(ServiceValidationError) as info:
        await _switch(hass, seam, SERVICE_TURN_ON, Context(user_id=hass_admin_user.id))
    assert info.value.translation_domain == DOMAIN
    assert info.value.translation_key == "credit_exhausted_restore_refused"
    assert info.value.translation_placeholders == {"meter_id": METER_ID, "balance": "-13.48"}
    assert str(info.value) == (
        f"The supply of meter {METER_ID} stays off: the balance -13.48 is not above the "
        "restore threshold. Top up first"
    )  # Home Assistant shows the message without its full stop


async def test_a_ledger_failure_is_one_clear_error(
    hass: HomeAssistant, seam: Seam, hass_admin_user: MockUser
) -> None:
    """A decision the ledger could not save: Home Assistant's error, naming the cause."""
    await seam.household()
    seam.service.request_supply.side_effect = LedgerError("database is locked")
    with pytest.raises(HomeAssistantError) as info:
        await _switch(hass, seam, SERVICE_TURN_OFF, Context(user_id=hass_admin_user.id))
    assert not isinstance(info.value, ServiceValidationError)
    assert info.value.translation_key == "ledger_error"
    assert info.value.translation_placeholders == {"error": "database is locked"}


async def test_unavailable_while_the_broker_is_away(seam: Seam) -> None:
    """No broker, no control: the switch is unavailable until the link is back."""
    await seam.household()
    await seam.connection(False, "timed out")
    assert seam.state(Platform.SWITCH, "supply").state == STATE_UNAVAILABLE
    await seam.connection(True)
    assert seam.state(Platform.SWITCH, "supply").state == "on"
