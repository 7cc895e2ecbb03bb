"""Binary sensors of each meter: low balance, online, supply on, alarm, and one per alarm kind.

The alarm sensor is on while the safety watch has any episode open on the meter
(engine/safety.py), the open kinds in its `alarms` attribute: what an operator sees on the
meter's device page. The sensors per kind are created disabled (an operator reads the
community's alarmed list and the `prepaid_meter_alarm` events, and enables those worth a
sensor of their own).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, cast

# Home Assistant 2026 defines it in binary_sensor.const and re-exports it implicitly.
from homeassistant.components.binary_sensor import (  # type: ignore[attr-defined, unused-ignore]
    BinarySensorDeviceClass,
    BinarySensorEntity,
    BinarySensorEntityDescription,
)
from homeassistant.const import EntityCategory, Platform
from homeassistant.core import HomeAssistant
from homeassistant.helpers.entity_platform import AddConfigEntryEntitiesCallback

from . import household_entities
from .coordinator import PrepaidConfigEntry
from .engine.safety import ALARM_KINDS
from .engine.views import MeterView
from .entity import PrepaidMeterEntity
from .household_entry import HouseholdConfigEntry, is_household

PARALLEL_UPDATES = 0


@dataclass(frozen=True, kw_only=True)
class MeterBinarySensorDescription(BinarySensorEntityDescription):
    """How one binary sensor reads the runtime."""

    value_fn: Callable[[MeterView], bool | None]
    always_available: bool = False
    attributes_fn: Callable[[MeterView], dict[str, Any]] | None = None


BINARY_SENSORS: tuple[MeterBinarySensorDescription, ...] = (
    MeterBinarySensorDescription(
        key="low_balance",
        translation_key="low_balance",
        device_class=BinarySensorDeviceClass.PROBLEM,
        value_fn=lambda view: view.low,
    ),
    MeterBinarySensorDescription(
        key="online",
        translation_key="online",
        device_class=BinarySensorDeviceClass.CONNECTIVITY,
        entity_category=EntityCategory.DIAGNOSTIC,
        value_fn=lambda view: view.online is True,
        always_available=True,
    ),
    MeterBinarySensorDescription(
        key="supply_on",
        translation_key="supply_on",
        device_class=BinarySensorDeviceClass.POWER,
        value_fn=lambda view: view.supply_on,
    ),
    MeterBinarySensorDescription(
        key="alarm",
        translation_key="alarm",
        device_class=BinarySensorDeviceClass.PROBLEM,
        value_fn=lambda view: bool(view.alarms),
        attributes_fn=lambda view: {"alarms": list(view.alarms)},
    ),
)

#: Each alarm kind's device class: a hazard is "safety", a cover or magnet "tamper".
ALARM_DEVICE_CLASSES: dict[str, BinarySensorDeviceClass] = {
    "overload": BinarySensorDeviceClass.SAFETY,
    "surge": BinarySensorDeviceClass.SAFETY,
    "arc_fault": BinarySensorDeviceClass.SAFETY,
    "tamper": BinarySensorDeviceClass.TAMPER,
}


def _alarm(kind: str) -> MeterBinarySensorDescription:
    return MeterBinarySensorDescription(
        key=f"alarm_{kind}",
        translation_key=f"alarm_{kind}",
        device_class=ALARM_DEVICE_CLASSES.get(kind, BinarySensorDeviceClass.PROBLEM),
        entity_registry_enabled_default=False,
        value_fn=lambda view: kind in view.alarms,
    )


#: One binary sensor per alarm kind (alarm_overload, ..., alarm_offline).
ALARM_SENSORS: tuple[MeterBinarySensorDescription, ...] = tuple(_alarm(k) for k in ALARM_KINDS)
METER_BINARY_SENSORS = BINARY_SENSORS + ALARM_SENSORS


async def async_setup_entry(
    hass: HomeAssistant,
    entry: PrepaidConfigEntry,
    async_add_entities: AddConfigEntryEntitiesCallback,
) -> None:
    """Add each meter's binary sensors, now and as meters appear."""
    if is_household(entry):
        await household_entities.async_setup_binary_sensors(
            hass, cast("HouseholdConfigEntry", entry), async_add_entities
        )
        return
    runtime = entry.runtime_data

    runtime.async_remove_unwanted_entities(
        Platform.BINARY_SENSOR, (d.key for d in METER_BINARY_SENSORS)
    )

    def add_meter(meter_id: str) -> None:
        async_add_entities(
            PrepaidBinarySensor(runtime, meter_id, description)
            for description in runtime.meter_descriptions(
                Platform.BINARY_SENSOR, meter_id, METER_BINARY_SENSORS
            )
        )

    runtime.async_on_new_meter(add_meter)


class PrepaidBinarySensor(PrepaidMeterEntity, BinarySensorEntity):
    """A binary sensor of one meter."""

    entity_description: MeterBinarySensorDescription

    @property
    def available(self) -> bool:
        """Connectivity stays available (it says offline); others follow the broker."""
        if self.entity_description.always_available:
            return self.meter_id in self.runtime.community.meters
        return super().available

    @property
    def is_on(self) -> bool | None:
        """Return the value from the live meter state."""
        return self.entity_description.value_fn(self.view)

    @property
    def extra_state_attributes(self) -> dict[str, Any] | None:
        """Return the open alarm kinds (the alarm sensor only)."""
        attributes_fn = self.entity_description.attributes_fn
        return None if attributes_fn is None else attributes_fn(self.view)
