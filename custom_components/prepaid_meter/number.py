"""Per-meter low-balance threshold (a configuration number, kept across restarts)."""

from __future__ import annotations

from decimal import Decimal

from homeassistant.components.number import (
    NumberDeviceClass,
    NumberEntityDescription,
    NumberMode,
    RestoreNumber,
)
from homeassistant.const import EntityCategory, Platform
from homeassistant.core import HomeAssistant
from homeassistant.helpers.entity_platform import AddConfigEntryEntitiesCallback

from .coordinator import PrepaidConfigEntry, PrepaidRuntime
from .entity import PrepaidMeterEntity

PARALLEL_UPDATES = 0

THRESHOLD = NumberEntityDescription(
    key="low_balance_threshold",
    translation_key="low_balance_threshold",
    device_class=NumberDeviceClass.MONETARY,
    entity_category=EntityCategory.CONFIG,
    native_min_value=0,
    native_max_value=1000,
    native_step=1,
    mode=NumberMode.BOX,
)


async def async_setup_entry(
    hass: HomeAssistant,
    entry: PrepaidConfigEntry,
    async_add_entities: AddConfigEntryEntitiesCallback,
) -> None:
    """Add each meter's threshold number, now and as meters appear."""
    runtime = entry.runtime_data
    runtime.async_remove_unwanted_entities(Platform.NUMBER, [THRESHOLD.key])
    runtime.async_on_new_meter(
        lambda meter_id: async_add_entities(
            PrepaidThresholdNumber(runtime, meter_id, description)
            for description in runtime.meter_descriptions(Platform.NUMBER, meter_id, [THRESHOLD])
        )
    )


class PrepaidThresholdNumber(PrepaidMeterEntity, RestoreNumber):
    """The balance at or below which the meter's low-balance sensor turns on."""

    def __init__(
        self, runtime: PrepaidRuntime, meter_id: str, description: NumberEntityDescription
    ) -> None:
        """Use the community's currency."""
        super().__init__(runtime, meter_id, description)
        self._attr_native_unit_of_measurement = runtime.currency

    async def async_added_to_hass(self) -> None:
        """Take back the value set before the restart."""
        await super().async_added_to_hass()
        last = await self.async_get_last_number_data()
        if last is not None and last.native_value is not None:
            self.runtime.set_low_threshold(self.meter_id, Decimal(str(last.native_value)))

    @property
    def native_value(self) -> float:
        """Return the threshold in use."""
        return float(self.runtime.low_threshold(self.meter_id))

    async def async_set_native_value(self, value: float) -> None:
        """Set the threshold (a display setting: money is never computed from it)."""
        await self.runtime.async_set_low_threshold(
            self.meter_id, Decimal(str(value)), self._context
        )
