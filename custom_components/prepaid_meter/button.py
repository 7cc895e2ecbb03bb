"""Each meter's buttons: the resident's "restore supply", and "pay" with payments configured.

"Restore supply" is pressed once appliances are safe. "Pay by WeChat" / "Pay by Alipay" (one
per provider on in the options, see payment_panel.py) order the amount chosen on the device
for the household's electricity credit; the device's payment code image shows its QR code.
"""

from __future__ import annotations

from typing import cast

from homeassistant.components.button import (
    ButtonEntity,
    ButtonEntityDescription,
)
from homeassistant.const import Platform
from homeassistant.core import HomeAssistant, callback
from homeassistant.helpers.entity_platform import AddConfigEntryEntitiesCallback

from . import household_entities
from .coordinator import PrepaidConfigEntry, PrepaidRuntime
from .entity import PrepaidMeterEntity
from .household_entry import HouseholdConfigEntry, is_household
from .payment_panel import PROVIDERS, PaymentPanel, async_panel, async_remove_payment_entities

PARALLEL_UPDATES = 1

RESTORE = ButtonEntityDescription(key="restore_supply", translation_key="restore_supply")
#: A pay button per provider (its key is `pay_<provider>`).
PAY: dict[str, ButtonEntityDescription] = {
    provider: ButtonEntityDescription(key=f"pay_{provider}", translation_key=f"pay_{provider}")
    for provider in PROVIDERS
}


async def async_setup_entry(
    hass: HomeAssistant,
    entry: PrepaidConfigEntry,
    async_add_entities: AddConfigEntryEntitiesCallback,
) -> None:
    """Add each meter's restore button and pay buttons, now and as meters appear."""
    if is_household(entry):
        await household_entities.async_setup_buttons(
            hass, cast("HouseholdConfigEntry", entry), async_add_entities
        )
        return
    runtime = entry.runtime_data
    panel = async_panel(hass, entry)
    providers = [
        provider
        for provider in PROVIDERS
        if panel is not None and getattr(panel.settings, provider)
    ]
    async_remove_payment_entities(
        hass, entry, Platform.BUTTON, lambda key: key.removeprefix("pay_") in providers
    )
    pay = [PAY[provider] for provider in providers]
    runtime.async_remove_unwanted_entities(
        Platform.BUTTON, [RESTORE.key, *(description.key for description in pay)]
    )

    @callback
    def add(meter_id: str) -> None:
        entities: list[ButtonEntity] = [
            PrepaidRestoreButton(runtime, meter_id, description)
            for description in runtime.meter_descriptions(Platform.BUTTON, meter_id, [RESTORE])
        ]
        if panel is not None:
            entities += [
                PaymentOrderButton(runtime, panel, meter_id, description)
                for description in runtime.meter_descriptions(Platform.BUTTON, meter_id, pay)
            ]
        async_add_entities(entities)

    runtime.async_on_new_meter(add)


class PrepaidRestoreButton(PrepaidMeterEntity, ButtonEntity):
    """Restores a cut supply when the balance clears the reclose threshold."""

    async def async_press(self) -> None:
        """Ask for the supply back; refused with a translated error while in debt."""
        await self.runtime.async_request_relay(self.meter_id, "on", self._context)


class PaymentOrderButton(PrepaidMeterEntity, ButtonEntity):
    """Orders the chosen amount of electricity credit, paid by one provider."""

    def __init__(
        self,
        runtime: PrepaidRuntime,
        panel: PaymentPanel,
        meter_id: str,
        description: ButtonEntityDescription,
    ) -> None:
        """Bind to the meter and the community's payment panel."""
        super().__init__(runtime, meter_id, description)
        self.panel = panel
        self.provider = description.key.removeprefix("pay_")

    @property
    def available(self) -> bool:
        """Return whether the meter belongs to a household (the broker plays no part)."""
        meter = self.runtime.community.meters.get(self.meter_id)
        return meter is not None and meter.account_id is not None

    async def async_press(self) -> None:
        """Make the order (the household's own resident or an operator); refused in words."""
        await self.panel.async_order(self.meter_id, self.provider, self._context)
