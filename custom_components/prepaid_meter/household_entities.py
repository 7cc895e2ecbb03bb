"""The entities of a household entry: one device, its account as the community publishes it.

The platforms (sensor.py, binary_sensor.py, button.py) hand a household entry to the setup
functions here. Entity descriptions are data; values come from `HouseholdRuntime`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from decimal import Decimal
import logging
from typing import Final

# Home Assistant 2026 defines it in binary_sensor.const and re-exports it implicitly.
from homeassistant.components.binary_sensor import (  # type: ignore[attr-defined, unused-ignore]
    BinarySensorDeviceClass,
    BinarySensorEntity,
    BinarySensorEntityDescription,
)
from homeassistant.components.button import ButtonEntity, ButtonEntityDescription
from homeassistant.components.sensor import (
    SensorDeviceClass,
    SensorEntity,
    SensorEntityDescription,
    SensorStateClass,
)
from homeassistant.const import UnitOfEnergy, UnitOfTime
from homeassistant.core import HomeAssistant, callback
from homeassistant.exceptions import HomeAssistantError
from homeassistant.helpers.device_registry import DeviceInfo
from homeassistant.helpers.entity import Entity, EntityDescription
from homeassistant.helpers.entity_platform import AddConfigEntryEntitiesCallback
from homeassistant.helpers.typing import StateType

from .const import DOMAIN
from .engine.transport import TransportError
from .household_entry import HouseholdConfigEntry, HouseholdRuntime

_LOGGER = logging.getLogger(__package__)

type SensorValue = StateType | Decimal

#: States of the supply reason sensor: why the supply is off ("none" while it is on).
SUPPLY_REASONS: Final = (
    "none",
    "credit_exhausted",
    "overload",
    "arc_fault",
    "theft_suspected",
    "tamper",
    "manual",
    "other",
)
#: The community's refusal keys (docs/HOUSEHOLD.md), each with its own translated error.
REFUSALS: Final = {
    "restore_needs_operator": "household_refused_needs_operator",
    "not_paid": "household_refused_not_paid",
    "credit_exhausted_restore_refused": "household_refused_not_paid",
    "expired_request": "household_refused_expired",
    "rate_limited": "household_refused_rate_limited",
    "invalid_request": "household_refused_invalid_request",
}


def _supply_reason(runtime: HouseholdRuntime) -> SensorValue:
    view = runtime.view
    if view is None:
        return None
    if view.relay == "on":
        return "none"
    if view.reason is None:
        return None if view.relay is None else "other"
    return view.reason if view.reason in SUPPLY_REASONS else "other"


def _energy(runtime: HouseholdRuntime) -> SensorValue:
    reading = runtime.reading
    return None if reading is None else reading.energy_kwh


def _account[T](read: Callable[..., T]) -> Callable[[HouseholdRuntime], T | None]:
    """Read a value of the account (None before the first account)."""

    def value(runtime: HouseholdRuntime) -> T | None:
        view = runtime.view
        return None if view is None else read(view)

    return value


@dataclass(frozen=True, kw_only=True)
class HouseholdSensorDescription(SensorEntityDescription):
    """How one household sensor reads the runtime."""

    value_fn: Callable[[HouseholdRuntime], SensorValue]
    currency_unit: str | None = None  # "{currency}" or "{currency}/kWh"
    #: False: the meter's own telemetry, shown whenever the link is up.
    from_account: bool = True


@dataclass(frozen=True, kw_only=True)
class HouseholdBinarySensorDescription(BinarySensorEntityDescription):
    """How one household binary sensor reads the account."""

    value_fn: Callable[[HouseholdRuntime], bool | None]


HOUSEHOLD_SENSORS: tuple[HouseholdSensorDescription, ...] = (
    HouseholdSensorDescription(
        key="balance",
        translation_key="balance",
        device_class=SensorDeviceClass.MONETARY,
        state_class=SensorStateClass.TOTAL,
        currency_unit="{currency}",
        suggested_display_precision=2,
        value_fn=_account(lambda view: view.balance),
    ),
    HouseholdSensorDescription(
        key="days_left",
        translation_key="days_left",
        device_class=SensorDeviceClass.DURATION,
        native_unit_of_measurement=UnitOfTime.DAYS,
        suggested_display_precision=1,
        value_fn=_account(lambda view: view.days_left),
    ),
    # The meter's cumulative register, for the Energy dashboard.
    HouseholdSensorDescription(
        key="energy",
        translation_key="energy",
        device_class=SensorDeviceClass.ENERGY,
        state_class=SensorStateClass.TOTAL_INCREASING,
        native_unit_of_measurement=UnitOfEnergy.KILO_WATT_HOUR,
        suggested_display_precision=2,
        value_fn=_energy,
        from_account=False,
    ),
    # Today's and this month's figures start again from zero: energy rises (a fall is a new
    # cycle for statistics); money has no state class, as the payload does not say when the
    # day began in the community's zone (a `total` without it would count the fall).
    HouseholdSensorDescription(
        key="today_energy",
        translation_key="today_energy",
        device_class=SensorDeviceClass.ENERGY,
        state_class=SensorStateClass.TOTAL_INCREASING,
        native_unit_of_measurement=UnitOfEnergy.KILO_WATT_HOUR,
        suggested_display_precision=2,
        value_fn=_account(lambda view: view.today_kwh),
    ),
    HouseholdSensorDescription(
        key="today_cost",
        translation_key="today_cost",
        device_class=SensorDeviceClass.MONETARY,
        currency_unit="{currency}",
        suggested_display_precision=2,
        value_fn=_account(lambda view: view.today_cost),
    ),
    HouseholdSensorDescription(
        key="month_energy",
        translation_key="month_energy",
        device_class=SensorDeviceClass.ENERGY,
        state_class=SensorStateClass.TOTAL_INCREASING,
        native_unit_of_measurement=UnitOfEnergy.KILO_WATT_HOUR,
        suggested_display_precision=1,
        value_fn=_account(lambda view: view.month_kwh),
    ),
    HouseholdSensorDescription(
        key="month_cost",
        translation_key="month_cost",
        device_class=SensorDeviceClass.MONETARY,
        currency_unit="{currency}",
        suggested_display_precision=2,
        value_fn=_account(lambda view: view.month_cost),
    ),
    HouseholdSensorDescription(
        key="price",
        translation_key="price",
        currency_unit="{currency}/kWh",
        suggested_display_precision=4,
        value_fn=_account(lambda view: view.price),
    ),
    HouseholdSensorDescription(
        key="tier", translation_key="tier", value_fn=_account(lambda view: view.tier)
    ),
    HouseholdSensorDescription(
        key="supply_reason",
        translation_key="supply_reason",
        device_class=SensorDeviceClass.ENUM,
        options=list(SUPPLY_REASONS),
        value_fn=_supply_reason,
    ),
)

HOUSEHOLD_BINARY_SENSORS: tuple[HouseholdBinarySensorDescription, ...] = (
    HouseholdBinarySensorDescription(
        key="low_balance",
        translation_key="low_balance",
        device_class=BinarySensorDeviceClass.PROBLEM,
        value_fn=_account(lambda view: view.low),
    ),
    HouseholdBinarySensorDescription(
        key="supply_on",
        translation_key="supply_on",
        device_class=BinarySensorDeviceClass.POWER,
        value_fn=_account(lambda view: None if view.relay is None else view.relay == "on"),
    ),
)

HOUSEHOLD_RESTORE = ButtonEntityDescription(key="restore_supply", translation_key="restore_supply")


def household_device_info(runtime: HouseholdRuntime) -> DeviceInfo:
    """Return the household's one device."""
    return DeviceInfo(
        identifiers={(DOMAIN, runtime.identifier)},
        translation_key="household",
        manufacturer="Prepaid meter",
        model="Household",
        serial_number=runtime.meter_id,
    )


class HouseholdEntity(Entity):
    """An entity of the household device; it follows the runtime's changes."""

    _attr_has_entity_name = True
    _attr_should_poll = False

    def __init__(self, runtime: HouseholdRuntime, description: EntityDescription) -> None:
        """Bind to the runtime."""
        self.runtime = runtime
        self.entity_description = description
        self._attr_unique_id = (
            f"household_{runtime.details.prefix}_{runtime.community_id}_{runtime.meter_id}"
            f"_{description.key}"
        )
        self._attr_device_info = household_device_info(runtime)
        self._shown: tuple[object, ...] | None = None

    @property
    def available(self) -> bool:
        """Return False without the link, before the first account, or when it is stale."""
        return self.runtime.available

    async def async_added_to_hass(self) -> None:
        """Follow the runtime."""
        await super().async_added_to_hass()
        self.async_on_remove(self.runtime.async_add_listener(self._handle_update))

    @callback
    def _handle_update(self) -> None:
        """Write the state only when what it shows changed."""
        shown = (self.available, self.state, self.extra_state_attributes, self.unit_of_measurement)
        if shown == self._shown:
            return
        self._shown = shown
        self.async_write_ha_state()


class HouseholdSensor(HouseholdEntity, SensorEntity):
    """A sensor of the household."""

    entity_description: HouseholdSensorDescription

    @property
    def available(self) -> bool:
        """Telemetry needs only the link; the account's figures need a recent account."""
        if not self.entity_description.from_account:
            return self.runtime.connected
        return super().available

    @property
    def native_value(self) -> SensorValue:
        """Return the value from the account or the meter's reading."""
        return self.entity_description.value_fn(self.runtime)

    @property
    def native_unit_of_measurement(self) -> str | None:
        """Return the unit; money in the account's currency."""
        template = self.entity_description.currency_unit
        if template is None:
            return self.entity_description.native_unit_of_measurement
        currency = self.runtime.currency
        return template.format(currency=currency) if currency else None


class HouseholdBinarySensor(HouseholdEntity, BinarySensorEntity):
    """A binary sensor of the household."""

    entity_description: HouseholdBinarySensorDescription

    @property
    def is_on(self) -> bool | None:
        """Return the value from the account."""
        return self.entity_description.value_fn(self.runtime)


class HouseholdRestoreButton(HouseholdEntity, ButtonEntity):
    """Asks the community for the supply back; says why when it refuses."""

    async def async_press(self) -> None:
        """Publish a restore request and wait for the answer (see ANSWER_WAIT_S)."""
        try:
            request_id, answer = await self.runtime.async_request_restore()
        except TransportError as err:
            raise HomeAssistantError(
                translation_domain=DOMAIN,
                translation_key="household_request_not_sent",
                translation_placeholders={"error": str(err)},
            ) from err
        if answer is None:
            raise HomeAssistantError(
                translation_domain=DOMAIN, translation_key="household_request_unanswered"
            )
        if answer.ok:
            _LOGGER.info("The community accepted restore request %s", request_id)
            return
        reason = answer.reason or "unknown"
        key = REFUSALS.get(reason)
        if key is None:
            raise HomeAssistantError(
                translation_domain=DOMAIN,
                translation_key="household_restore_refused",
                translation_placeholders={"reason": reason},  # an unknown key, as sent
            )
        raise HomeAssistantError(translation_domain=DOMAIN, translation_key=key)


async def async_setup_sensors(
    hass: HomeAssistant,
    entry: HouseholdConfigEntry,
    async_add_entities: AddConfigEntryEntitiesCallback,
) -> None:
    """Add the household's sensors."""
    runtime = entry.runtime_data
    async_add_entities(HouseholdSensor(runtime, d) for d in HOUSEHOLD_SENSORS)


async def async_setup_binary_sensors(
    hass: HomeAssistant,
    entry: HouseholdConfigEntry,
    async_add_entities: AddConfigEntryEntitiesCallback,
) -> None:
    """Add the household's binary sensors."""
    runtime = entry.runtime_data
    async_add_entities(HouseholdBinarySensor(runtime, d) for d in HOUSEHOLD_BINARY_SENSORS)


async def async_setup_buttons(
    hass: HomeAssistant,
    entry: HouseholdConfigEntry,
    async_add_entities: AddConfigEntryEntitiesCallback,
) -> None:
    """Add the household's restore button."""
    async_add_entities([HouseholdRestoreButton(entry.runtime_data, HOUSEHOLD_RESTORE)])
