"""Base entities: one device per meter, one hub device per community."""

from __future__ import annotations

from typing import Any

from homeassistant.core import callback
from homeassistant.helpers.device_registry import DeviceInfo
from homeassistant.helpers.entity import Entity, EntityDescription

from .compat import device_info
from .const import DOMAIN
from .coordinator import PrepaidRuntime
from .engine.community import MeterState
from .engine.views import MeterView


def hub_device_info(runtime: PrepaidRuntime) -> DeviceInfo:
    """Return the community's hub device (registered before its meters)."""
    return DeviceInfo(
        identifiers={(DOMAIN, runtime.community_identifier)},
        name=runtime.community_name,
        manufacturer="Prepaid meter",
        model="Community",
    )


def meter_device_info(runtime: PrepaidRuntime, meter_id: str) -> DeviceInfo:
    """Return the device of one meter, under the community's hub device."""
    meter = runtime.community.meters.get(meter_id)
    household = runtime.household_of(meter_id)
    # A household's meter is named by the household; one not yet assigned by its id, in Home
    # Assistant's language ("Meter 0000...", "电表 0000...").
    naming: dict[str, Any] = (
        {"name": household.label}
        if household
        else {"translation_key": "meter", "translation_placeholders": {"meter_id": meter_id}}
    )
    return device_info(
        (DOMAIN, runtime.community_identifier),
        runtime.hub_device_id,
        identifiers={(DOMAIN, runtime.meter_identifier(meter_id))},
        **naming,
        manufacturer="Prepaid meter",
        model=meter.model if meter and meter.model else None,
        sw_version=meter.firmware if meter else None,
        serial_number=meter_id,
    )


class PrepaidMeterEntity(Entity):
    """An entity of one meter; it updates only when its own meter changes."""

    _attr_has_entity_name = True
    _attr_should_poll = False
    # Measurements may be written on a timer in a large community (see coordinator).
    _measurement = False

    def __init__(
        self, runtime: PrepaidRuntime, meter_id: str, description: EntityDescription
    ) -> None:
        """Bind to the runtime and the meter."""
        self.runtime = runtime
        self.meter_id = meter_id
        self.entity_description = description
        self._attr_unique_id = f"{runtime.community_identifier}_{meter_id}_{description.key}"
        self._attr_device_info = meter_device_info(runtime, meter_id)
        self._shown: tuple[object, ...] | None = None

    @property
    def meter(self) -> MeterState:
        """Return the live state of this entity's meter."""
        return self.runtime.community.meters[self.meter_id]

    @property
    def view(self) -> MeterView:
        """Return what this entity's meter shows now (built once per change, shared)."""
        return self.runtime.view(self.meter_id)

    @property
    def available(self) -> bool:
        """Return False while the broker is unreachable or the meter is gone."""
        return self.runtime.connected and self.meter_id in self.runtime.community.meters

    async def async_added_to_hass(self) -> None:
        """Listen to this meter's updates only."""
        await super().async_added_to_hass()
        self.async_on_remove(
            self.runtime.async_add_meter_listener(
                self.meter_id, self._handle_meter_update, measurement=self._measurement
            )
        )

    @callback
    def _handle_meter_update(self) -> None:
        """Write the state only when what it shows changed (thousands of meters report)."""
        shown = (self.available, self.state, self.extra_state_attributes)
        if shown == self._shown:
            return
        self._shown = shown
        self.async_write_ha_state()


class PrepaidCommunityEntity(Entity):
    """An entity of the community hub device; it updates when totals change."""

    _attr_has_entity_name = True
    _attr_should_poll = False

    def __init__(self, runtime: PrepaidRuntime, description: EntityDescription) -> None:
        """Bind to the runtime."""
        self.runtime = runtime
        self.entity_description = description
        self._attr_unique_id = f"{runtime.community_identifier}_{description.key}"
        self._attr_device_info = hub_device_info(runtime)

    @property
    def available(self) -> bool:
        """Return False while the broker is unreachable."""
        return self.runtime.connected

    async def async_added_to_hass(self) -> None:
        """Listen to community-level updates."""
        await super().async_added_to_hass()
        self.async_on_remove(self.runtime.async_add_community_listener(self.async_write_ha_state))
