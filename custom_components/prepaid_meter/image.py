"""The household's payment code: the QR code of its newest open order (an SVG image).

payment_panel.py keeps each household's newest open order; this image shows its code, for
the resident to scan with WeChat or Alipay. Unavailable when the household has none (none
made, or paid, expired or closed); its state (the time the image changed) moves with the
order shown.
"""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from homeassistant.components.image import ImageEntity, ImageEntityDescription
from homeassistant.const import Platform
from homeassistant.core import HomeAssistant, callback
from homeassistant.helpers.entity_platform import AddConfigEntryEntitiesCallback

from .coordinator import PrepaidConfigEntry, PrepaidRuntime
from .engine.ledger import PayOrder
from .entity import PrepaidMeterEntity
from .payment_panel import PaymentPanel, async_setup_payment_platform

PARALLEL_UPDATES = 0

CODE = ImageEntityDescription(key="payment_code", translation_key="payment_code")
SVG = "image/svg+xml"
CENT = Decimal("0.01")


async def async_setup_entry(
    hass: HomeAssistant,
    entry: PrepaidConfigEntry,
    async_add_entities: AddConfigEntryEntitiesCallback,
) -> None:
    """Add each meter's payment code when the community takes payments."""
    async_setup_payment_platform(
        hass,
        entry,
        Platform.IMAGE,
        CODE,
        lambda runtime, panel, meter_id, chosen: PaymentCodeImage(
            hass, runtime, panel, meter_id, chosen
        ),
        async_add_entities,
    )


class PaymentCodeImage(PrepaidMeterEntity, ImageEntity):
    """The QR code of the household's newest open payment order."""

    _attr_content_type = SVG

    def __init__(
        self,
        hass: HomeAssistant,
        runtime: PrepaidRuntime,
        panel: PaymentPanel,
        meter_id: str,
        description: ImageEntityDescription,
    ) -> None:
        """Bind to the meter and the community's payment panel."""
        PrepaidMeterEntity.__init__(self, runtime, meter_id, description)
        ImageEntity.__init__(self, hass)
        self.panel = panel
        self._order: PayOrder | None = None

    async def async_added_to_hass(self) -> None:
        """Show the household's order now, and follow it."""
        await super().async_added_to_hass()
        self._order = self._current()
        if self._order is not None:
            self._attr_image_last_updated = datetime.now(UTC)
        self.async_on_remove(self.panel.async_add_listener(self._handle_meter_update))

    def _current(self) -> PayOrder | None:
        meter = self.runtime.community.meters.get(self.meter_id)
        return self.panel.order(None if meter is None else meter.account_id)

    @callback
    def _handle_meter_update(self) -> None:
        """Show another order (or none) when the household's newest open one changes."""
        order = self._current()
        if order != self._order:
            self._order = order
            self._attr_image_last_updated = None if order is None else datetime.now(UTC)
        super()._handle_meter_update()

    @property
    def available(self) -> bool:
        """Return whether there is an order to pay (the broker plays no part)."""
        return self._order is not None

    @property
    def extra_state_attributes(self) -> dict[str, Any] | None:
        """Return what the shown order is for: id, amount, purpose, provider and expiry."""
        order = self._order
        if order is None:
            return None
        return {
            "order_id": order.order_id,
            "amount": str(order.amount.quantize(CENT)),
            "purpose": order.purpose.value,
            "provider": order.provider,
            "expires_at": datetime.fromtimestamp(order.expires_at, UTC).isoformat(),
        }

    async def async_image(self) -> bytes | None:
        """Return the QR code of the shown order as SVG, or None without one."""
        order = self._current()
        if order is None:
            return None
        return await self.panel.async_svg(order)
