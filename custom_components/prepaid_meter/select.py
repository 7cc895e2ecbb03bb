"""The household's top-up amount (a select on its meter device, with payments configured).

payment_panel.py keeps the choice; the device's pay buttons order that amount.
"""

from __future__ import annotations

from homeassistant.components.select import SelectEntity, SelectEntityDescription
from homeassistant.const import Platform
from homeassistant.core import HomeAssistant
from homeassistant.helpers.entity_platform import AddConfigEntryEntitiesCallback
from homeassistant.helpers.restore_state import RestoreEntity

from .coordinator import PrepaidConfigEntry, PrepaidRuntime
from .entity import PrepaidMeterEntity
from .payment_panel import PaymentPanel, async_setup_payment_platform

PARALLEL_UPDATES = 0

AMOUNT = SelectEntityDescription(key="payment_amount", translation_key="payment_amount")


async def async_setup_entry(
    hass: HomeAssistant,
    entry: PrepaidConfigEntry,
    async_add_entities: AddConfigEntryEntitiesCallback,
) -> None:
    """Add each meter's top-up amount when the community takes payments."""
    async_setup_payment_platform(
        hass,
        entry,
        Platform.SELECT,
        AMOUNT,
        PaymentAmountSelect,
        async_add_entities,
    )


class PaymentAmountSelect(PrepaidMeterEntity, SelectEntity, RestoreEntity):
    """The amount the device's pay buttons order (within the limit per payment)."""

    def __init__(
        self,
        runtime: PrepaidRuntime,
        panel: PaymentPanel,
        meter_id: str,
        description: SelectEntityDescription,
    ) -> None:
        """Offer the amounts the options allow (in the community's currency)."""
        super().__init__(runtime, meter_id, description)
        self.panel = panel
        self._attr_options = list(panel.choices)

    async def async_added_to_hass(self) -> None:
        """Take back the amount chosen before the restart."""
        await super().async_added_to_hass()
        last = await self.async_get_last_state()
        if last is not None and last.state in self.panel.choices:
            self.panel.set_amount(self.meter_id, last.state)

    @property
    def available(self) -> bool:
        """Return whether the meter belongs to a household (the broker plays no part)."""
        meter = self.runtime.community.meters.get(self.meter_id)
        return meter is not None and meter.account_id is not None

    @property
    def current_option(self) -> str:
        """Return the chosen amount."""
        return self.panel.amount(self.meter_id)

    async def async_select_option(self, option: str) -> None:
        """Choose an amount: the household's own resident or an operator."""
        await self.panel.async_authorize(self.meter_id, self._context)
        self.panel.set_amount(self.meter_id, option)
        self.async_write_ha_state()
