"""The supply relay of each meter, as a switch that obeys the prepaid rules."""

from __future__ import annotations

from typing import Any

# Home Assistant 2026 defines it in switch.const and re-exports it implicitly.
from homeassistant.components.switch import (  # type: ignore[attr-defined, unused-ignore]
    SwitchDeviceClass,
    SwitchEntity,
    SwitchEntityDescription,
)
from homeassistant.const import Platform
from homeassistant.core import HomeAssistant
from homeassistant.helpers.entity_platform import AddConfigEntryEntitiesCallback

from .coordinator import PrepaidConfigEntry
from .entity import PrepaidMeterEntity

PARALLEL_UPDATES = 1

SUPPLY = SwitchEntityDescription(
    key="supply", translation_key="supply", device_class=SwitchDeviceClass.SWITCH
)


async def async_setup_entry(
    hass: HomeAssistant,
    entry: PrepaidConfigEntry,
    async_add_entities: AddConfigEntryEntitiesCallback,
) -> None:
    """Add each meter's supply switch, now and as meters appear."""
    runtime = entry.runtime_data
    runtime.async_remove_unwanted_entities(Platform.SWITCH, [SUPPLY.key])
    runtime.async_on_new_meter(
        lambda meter_id: async_add_entities(
            PrepaidSupplySwitch(runtime, meter_id, description)
            for description in runtime.meter_descriptions(Platform.SWITCH, meter_id, [SUPPLY])
        )
    )


class PrepaidSupplySwitch(PrepaidMeterEntity, SwitchEntity):
    """On means the supply is wanted on; turning it on with credit exhausted is refused."""

    @property
    def is_on(self) -> bool:
        """Return the desired relay state (the meter is told until it agrees)."""
        return self.meter.desired_relay == "on"

    @property
    def extra_state_attributes(self) -> dict[str, Any]:
        """Say who or what set the relay (as the supply events do), and why."""
        meter = self.meter
        return {
            "reason": self.view.supply_reason,
            **meter.relay_actor.event_data(),
            "reported": meter.reported_relay,
            "deferred": meter.deferred,
        }

    async def async_turn_on(self, **kwargs: Any) -> None:
        """Restore the supply, if the balance allows it."""
        await self.runtime.async_request_relay(self.meter_id, "on", self._context)

    async def async_turn_off(self, **kwargs: Any) -> None:
        """Cut the supply by hand."""
        await self.runtime.async_request_relay(self.meter_id, "off", self._context)
