"""The resident's "restore supply" button: pressed once appliances are safe."""

from __future__ import annotations

from typing import cast

from homeassistant.components.button import (
    ButtonEntity,
    ButtonEntityDescription,
)
from homeassistant.const import Platform
from homeassistant.core import HomeAssistant
from homeassistant.helpers.entity_platform import AddConfigEntryEntitiesCallback

from . import household_entities
from .coordinator import PrepaidConfigEntry
from .entity import PrepaidMeterEntity
from .household_entry import HouseholdConfigEntry, is_household

PARALLEL_UPDATES = 1

RESTORE = ButtonEntityDescription(key="restore_supply", translation_key="restore_supply")


async def async_setup_entry(
    hass: HomeAssistant,
    entry: PrepaidConfigEntry,
    async_add_entities: AddConfigEntryEntitiesCallback,
) -> None:
    """Add each meter's restore button, now and as meters appear."""
    if is_household(entry):
        await household_entities.async_setup_buttons(
            hass, cast("HouseholdConfigEntry", entry), async_add_entities
        )
        return
    runtime = entry.runtime_data
    runtime.async_remove_unwanted_entities(Platform.BUTTON, [RESTORE.key])
    runtime.async_on_new_meter(
        lambda meter_id: async_add_entities(
            PrepaidRestoreButton(runtime, meter_id, description)
            for description in runtime.meter_descriptions(Platform.BUTTON, meter_id, [RESTORE])
        )
    )


class PrepaidRestoreButton(PrepaidMeterEntity, ButtonEntity):
    """Restores a cut supply when the balance clears the reclose threshold."""

    async def async_press(self) -> None:
        """Ask for the supply back; refused with a translated error while in debt."""
        await self.runtime.async_request_relay(self.meter_id, "on", self._context)
