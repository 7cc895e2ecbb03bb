"""Sensors: each meter's balance, energy, power and cycle figures; the community's totals."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any, cast

from homeassistant.components.sensor import (
    SensorDeviceClass,
    SensorEntity,
    SensorEntityDescription,
    SensorStateClass,
)
from homeassistant.const import (
    PERCENTAGE,
    EntityCategory,
    Platform,
    UnitOfElectricCurrent,
    UnitOfElectricPotential,
    UnitOfEnergy,
    UnitOfPower,
    UnitOfTime,
)
from homeassistant.core import HomeAssistant
from homeassistant.helpers.entity_platform import AddConfigEntryEntitiesCallback
from homeassistant.helpers.typing import StateType
from homeassistant.util import dt as dt_util

from . import household_entities
from .coordinator import PrepaidConfigEntry, PrepaidRuntime
from .engine.ledger import SubAccount
from .engine.views import Line, MeterView
from .entity import PrepaidCommunityEntity, PrepaidMeterEntity
from .household_entry import HouseholdConfigEntry, is_household

PARALLEL_UPDATES = 0
CENT = Decimal("0.01")

type SensorValue = StateType | Decimal | datetime


@dataclass(frozen=True, kw_only=True)
class MeterSensorDescription(SensorEntityDescription):
    """How one meter sensor reads the runtime."""

    value_fn: Callable[[MeterView], SensorValue]
    currency_unit: str | None = None  # "{currency}" or "{currency}/kWh"
    #: When the figure last started from zero (a `total` that resets: today's, this month's).
    last_reset_fn: Callable[[MeterView], datetime] | None = None


@dataclass(frozen=True, kw_only=True)
class CommunitySensorDescription(SensorEntityDescription):
    """How one community sensor reads the runtime."""

    value_fn: Callable[[PrepaidRuntime], SensorValue]
    currency_unit: str | None = None
    #: The households this figure counts, shown as the `households` attribute (unrecorded).
    lines_fn: Callable[[PrepaidRuntime], list[Line]] | None = None
    #: Other attributes (unrecorded), by name.
    attributes_fn: Callable[[PrepaidRuntime], dict[str, Any]] | None = None


def _last_reading(view: MeterView) -> SensorValue:
    ts = view.last_reading_ts
    return None if ts is None else dt_util.utc_from_timestamp(ts)


METER_SENSORS: tuple[MeterSensorDescription, ...] = (
    MeterSensorDescription(
        key="balance",
        translation_key="balance",
        device_class=SensorDeviceClass.MONETARY,
        state_class=SensorStateClass.TOTAL,
        currency_unit="{currency}",
        suggested_display_precision=2,
        value_fn=lambda view: view.balance,
    ),
    MeterSensorDescription(
        key="energy",
        translation_key="energy",
        device_class=SensorDeviceClass.ENERGY,
        state_class=SensorStateClass.TOTAL_INCREASING,
        native_unit_of_measurement=UnitOfEnergy.KILO_WATT_HOUR,
        suggested_display_precision=2,
        value_fn=lambda view: view.energy_kwh,
    ),
    MeterSensorDescription(
        key="power",
        translation_key="power",
        device_class=SensorDeviceClass.POWER,
        state_class=SensorStateClass.MEASUREMENT,
        native_unit_of_measurement=UnitOfPower.WATT,
        value_fn=lambda view: view.power_w,
    ),
    MeterSensorDescription(
        key="voltage",
        translation_key="voltage",
        device_class=SensorDeviceClass.VOLTAGE,
        state_class=SensorStateClass.MEASUREMENT,
        native_unit_of_measurement=UnitOfElectricPotential.VOLT,
        entity_registry_enabled_default=False,
        value_fn=lambda view: view.voltage_v,
    ),
    MeterSensorDescription(
        key="current",
        translation_key="current",
        device_class=SensorDeviceClass.CURRENT,
        state_class=SensorStateClass.MEASUREMENT,
        native_unit_of_measurement=UnitOfElectricCurrent.AMPERE,
        entity_registry_enabled_default=False,
        value_fn=lambda view: view.current_a,
    ),
    MeterSensorDescription(
        key="cycle_energy",
        translation_key="cycle_energy",
        device_class=SensorDeviceClass.ENERGY,
        state_class=SensorStateClass.TOTAL_INCREASING,
        native_unit_of_measurement=UnitOfEnergy.KILO_WATT_HOUR,
        suggested_display_precision=1,
        value_fn=lambda view: view.cycle_kwh,
    ),
    MeterSensorDescription(
        key="cycle_cost",
        translation_key="cycle_cost",
        device_class=SensorDeviceClass.MONETARY,
        state_class=SensorStateClass.TOTAL,
        currency_unit="{currency}",
        suggested_display_precision=2,
        value_fn=lambda view: view.cycle_cost,
    ),
    MeterSensorDescription(key="tier", translation_key="tier", value_fn=lambda view: view.tier),
    MeterSensorDescription(
        key="price",
        translation_key="price",
        currency_unit="{currency}/kWh",
        suggested_display_precision=4,
        value_fn=lambda view: view.price,
    ),
    MeterSensorDescription(
        key="days_left",
        translation_key="days_left",
        device_class=SensorDeviceClass.DURATION,
        native_unit_of_measurement=UnitOfTime.DAYS,
        suggested_display_precision=1,
        value_fn=lambda view: view.days_left,
    ),
    # Today's and this month's use and cost (local day and calendar month of the tariff's
    # zone, whatever its cycle): energy a total that rises and starts again from zero
    # (statistics take the fall as a new meter cycle), money a total with its last reset.
    # Created disabled: the per-meter budget of enabled entities (coordinator) is unchanged.
    MeterSensorDescription(
        key="today_energy",
        translation_key="today_energy",
        device_class=SensorDeviceClass.ENERGY,
        state_class=SensorStateClass.TOTAL_INCREASING,
        native_unit_of_measurement=UnitOfEnergy.KILO_WATT_HOUR,
        suggested_display_precision=2,
        value_fn=lambda view: view.today_kwh,
    ),
    MeterSensorDescription(
        key="today_cost",
        translation_key="today_cost",
        device_class=SensorDeviceClass.MONETARY,
        state_class=SensorStateClass.TOTAL,
        currency_unit="{currency}",
        suggested_display_precision=2,
        value_fn=lambda view: view.today_cost,
        last_reset_fn=lambda view: view.day_started,
    ),
    MeterSensorDescription(
        key="month_energy",
        translation_key="month_energy",
        device_class=SensorDeviceClass.ENERGY,
        state_class=SensorStateClass.TOTAL_INCREASING,
        native_unit_of_measurement=UnitOfEnergy.KILO_WATT_HOUR,
        suggested_display_precision=1,
        value_fn=lambda view: view.month_kwh,
    ),
    MeterSensorDescription(
        key="month_cost",
        translation_key="month_cost",
        device_class=SensorDeviceClass.MONETARY,
        state_class=SensorStateClass.TOTAL,
        currency_unit="{currency}",
        suggested_display_precision=2,
        value_fn=lambda view: view.month_cost,
        last_reset_fn=lambda view: view.month_started,
    ),
    MeterSensorDescription(
        key="tier_energy_left",
        translation_key="tier_energy_left",
        device_class=SensorDeviceClass.ENERGY,
        native_unit_of_measurement=UnitOfEnergy.KILO_WATT_HOUR,
        suggested_display_precision=1,
        value_fn=lambda view: view.tier_kwh_left,
    ),
    MeterSensorDescription(
        key="last_reading",
        translation_key="last_reading",
        device_class=SensorDeviceClass.TIMESTAMP,
        entity_category=EntityCategory.DIAGNOSTIC,
        entity_registry_enabled_default=False,
        value_fn=_last_reading,
    ),
)


def _line_loss(runtime: PrepaidRuntime) -> SensorValue:
    """Return the highest loss rate of the community's areas in percent (None: none known)."""
    rates = [a["loss_rate"] for a in runtime.line_loss if a["loss_rate"] is not None]
    return max(rates) if rates else None


def _arrears(sub: SubAccount) -> Callable[[PrepaidRuntime], SensorValue]:
    def value(runtime: PrepaidRuntime) -> SensorValue:
        arrears: dict[SubAccount, int] = runtime.totals["arrears"]
        return arrears[sub]

    return value


def _arrears_lines(sub: SubAccount) -> Callable[[PrepaidRuntime], list[Line]]:
    return lambda runtime: runtime.lists.arrears[sub]


COMMUNITY_SENSORS: tuple[CommunitySensorDescription, ...] = (
    CommunitySensorDescription(
        key="total_balance",
        translation_key="total_balance",
        device_class=SensorDeviceClass.MONETARY,
        state_class=SensorStateClass.TOTAL,
        currency_unit="{currency}",
        suggested_display_precision=2,
        value_fn=lambda rt: rt.totals["total_balance"].quantize(CENT),
    ),
    *(
        CommunitySensorDescription(
            key=f"arrears_{sub.value}",
            translation_key=f"arrears_{sub.value}",
            state_class=SensorStateClass.MEASUREMENT,
            value_fn=_arrears(sub),
            lines_fn=_arrears_lines(sub),
        )
        for sub in SubAccount
    ),
    CommunitySensorDescription(
        key="supplies_cut",
        translation_key="supplies_cut",
        state_class=SensorStateClass.MEASUREMENT,
        value_fn=lambda rt: rt.totals["supplies_cut"],
        lines_fn=lambda rt: rt.lists.cut,
    ),
    CommunitySensorDescription(
        key="meters_alarmed",
        translation_key="meters_alarmed",
        state_class=SensorStateClass.MEASUREMENT,
        value_fn=lambda rt: rt.lists.counts["alarmed"],
        lines_fn=lambda rt: rt.lists.alarmed,
    ),
    CommunitySensorDescription(
        key="meters_offline",
        translation_key="meters_offline",
        state_class=SensorStateClass.MEASUREMENT,
        value_fn=lambda rt: rt.lists.counts["offline"],
        lines_fn=lambda rt: rt.lists.offline,
    ),
    CommunitySensorDescription(
        key="top_ups_today",
        translation_key="top_ups_today",
        device_class=SensorDeviceClass.MONETARY,
        state_class=SensorStateClass.TOTAL,
        currency_unit="{currency}",
        suggested_display_precision=2,
        value_fn=lambda rt: rt.community.top_ups_today,
    ),
    CommunitySensorDescription(
        # Energy that the master meter of an area measured and its households' meters did not
        # (engine/safety.py); the worst area's, each area's in the `areas` attribute.
        key="line_loss_rate",
        translation_key="line_loss_rate",
        native_unit_of_measurement=PERCENTAGE,
        state_class=SensorStateClass.MEASUREMENT,
        suggested_display_precision=1,
        value_fn=_line_loss,
        attributes_fn=lambda rt: {"areas": rt.line_loss},
    ),
    CommunitySensorDescription(
        key="fee_collection_rate",
        translation_key="fee_collection_rate",
        native_unit_of_measurement=PERCENTAGE,
        state_class=SensorStateClass.MEASUREMENT,
        suggested_display_precision=1,
        value_fn=lambda rt: rt.fee_collection_rate,
    ),
)


async def async_setup_entry(
    hass: HomeAssistant,
    entry: PrepaidConfigEntry,
    async_add_entities: AddConfigEntryEntitiesCallback,
) -> None:
    """Add the community's sensors, each known meter's, and new meters' as they appear."""
    if is_household(entry):
        await household_entities.async_setup_sensors(
            hass, cast("HouseholdConfigEntry", entry), async_add_entities
        )
        return
    runtime = entry.runtime_data
    async_add_entities(
        PrepaidCommunitySensor(runtime, description) for description in COMMUNITY_SENSORS
    )

    runtime.async_remove_unwanted_entities(Platform.SENSOR, (d.key for d in METER_SENSORS))

    def add_meter(meter_id: str) -> None:
        async_add_entities(
            PrepaidMeterSensor(runtime, meter_id, description)
            for description in runtime.meter_descriptions(Platform.SENSOR, meter_id, METER_SENSORS)
        )

    runtime.async_on_new_meter(add_meter)


def _unit(template: str | None, currency: str) -> str | None:
    return None if template is None else template.format(currency=currency)


class PrepaidMeterSensor(PrepaidMeterEntity, SensorEntity):
    """A sensor of one meter."""

    entity_description: MeterSensorDescription
    _measurement = True

    def __init__(
        self, runtime: PrepaidRuntime, meter_id: str, description: MeterSensorDescription
    ) -> None:
        """Set the currency unit where the description asks for it."""
        super().__init__(runtime, meter_id, description)
        if description.currency_unit is not None:
            self._attr_native_unit_of_measurement = _unit(
                description.currency_unit, runtime.currency
            )

    @property
    def native_value(self) -> SensorValue:
        """Return the value from the meter's view (built once per change)."""
        return self.entity_description.value_fn(self.view)

    @property
    def last_reset(self) -> datetime | None:
        """Return when a figure that starts again (today's, this month's cost) last did."""
        last_reset_fn = self.entity_description.last_reset_fn
        return None if last_reset_fn is None else last_reset_fn(self.view)


class PrepaidCommunitySensor(PrepaidCommunityEntity, SensorEntity):
    """A sensor of the community."""

    entity_description: CommunitySensorDescription
    # The lists change with every cut and top-up; the count is what history needs.
    _unrecorded_attributes = frozenset({"households", "areas"})

    def __init__(self, runtime: PrepaidRuntime, description: CommunitySensorDescription) -> None:
        """Set the currency unit where the description asks for it."""
        super().__init__(runtime, description)
        if description.currency_unit is not None:
            self._attr_native_unit_of_measurement = _unit(
                description.currency_unit, runtime.currency
            )

    @property
    def native_value(self) -> SensorValue:
        """Return the value from the community totals."""
        return self.entity_description.value_fn(self.runtime)

    @property
    def extra_state_attributes(self) -> dict[str, Any] | None:
        """Name the households counted (worst first, at most views.LIST_LIMIT)."""
        description = self.entity_description
        if description.attributes_fn is not None:
            return description.attributes_fn(self.runtime)
        lines_fn = description.lines_fn
        return None if lines_fn is None else {"households": lines_fn(self.runtime)}
