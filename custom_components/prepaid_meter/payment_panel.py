"""The household's payment controls on its meter device: amount, pay buttons, payment code.

When the community's options configure payments (payments.py), each meter device (named by
its household) gets, with all entities (coordinator.PAYMENT_KEYS):

- a select "Top-up amount" (select.py): the amounts in PAYMENT_AMOUNTS that one payment may
  be (the options' limit per payment), kept across restarts;
- a button "Pay by WeChat" / "Pay by Alipay" per provider that is on (button.py): an order
  of the chosen amount for the household's electricity credit, by who pressed it (the
  household's own resident or an operator, as the `create_payment_order` action);
- an image "Payment code" (image.py): the QR code (SVG) of the household's newest open order
  that has a payment code, whoever made it (these buttons or the action); unavailable when
  there is none (none made, or paid, expired or closed).

One `PaymentPanel` per community entry keeps the chosen amounts and each household's newest
open order. It reads the orders from the ledger (in the executor): all open ones once at
start, then a household's when something may have changed it: an order that got its payment
code (payments.signal_order: these buttons' or the `create_payment_order` action's), a
payment (`prepaid_meter_payment`) and the order's expiry.
"""

from __future__ import annotations

from collections.abc import Callable, Coroutine, Mapping
from decimal import Decimal
import logging
import time
from typing import Any, Final

from homeassistant.config_entries import ConfigEntryState
from homeassistant.const import Platform
from homeassistant.core import CALLBACK_TYPE, Context, Event, HomeAssistant, callback
from homeassistant.helpers import entity_registry as er
from homeassistant.helpers.dispatcher import async_dispatcher_connect
from homeassistant.helpers.entity import Entity, EntityDescription
from homeassistant.helpers.entity_platform import AddConfigEntryEntitiesCallback
from homeassistant.helpers.event import async_call_later
from homeassistant.util.hass_dict import HassKey

from .const import DOMAIN
from .coordinator import PAYMENT_KEYS, PrepaidConfigEntry, PrepaidRuntime, async_actor, refusal
from .engine.actor import Actor
from .engine.community import CommunityError
from .engine.ledger import PayOrder
from .household_entry import is_household
from .payments import (
    EVENT_PAYMENT,
    PaymentSettings,
    payments_of,
    qr_svg,
    signal_order,
)
from .texts import translated_error

_LOGGER = logging.getLogger(__package__)

__all__ = [
    "PANELS",
    "PROVIDERS",
    "PaymentPanel",
    "amount_choices",
    "async_panel",
    "async_remove_payment_entities",
]

#: The amounts a resident picks from (in the community's currency), those within the limit.
PAYMENT_AMOUNTS: Final = (Decimal(20), Decimal(50), Decimal(100), Decimal(200))
#: The amount chosen until someone picks another (or the largest allowed below it).
DEFAULT_AMOUNT: Final = Decimal(50)
#: The pay buttons' providers, in the order they are shown.
PROVIDERS: Final = ("wechat", "alipay")
#: Orders made this long ago or less are read at start (an order lives 120 minutes at most).
START_WINDOW_S: Final = 3 * 3600
_CENT: Final = Decimal("0.01")

PANELS: HassKey[dict[str, PaymentPanel]] = HassKey(f"{DOMAIN}_payment_panels")


def amount_choices(settings: PaymentSettings) -> list[Decimal]:
    """Return the amounts one payment may be (the limit itself when none of them fits)."""
    allowed = [amount for amount in PAYMENT_AMOUNTS if amount <= settings.max_payment]
    return allowed or [settings.max_payment.quantize(_CENT)]


def _text(amount: Decimal) -> str:
    """Return an amount as the select shows it: "50", "12.50"."""
    return str(amount) if amount == amount.to_integral_value() else str(amount.quantize(_CENT))


def _open(order: PayOrder, now: float) -> bool:
    return order.state == "open" and order.code is not None and now < order.expires_at


class PaymentPanel:
    """A community's payment controls: chosen amounts and each household's open order."""

    def __init__(self, hass: HomeAssistant, runtime: PrepaidRuntime) -> None:
        """Read the settings; `async_start` reads the open orders and listens."""
        self.hass = hass
        self.runtime = runtime
        self.settings = PaymentSettings.from_options(runtime.entry.options)
        self.choices = [_text(amount) for amount in amount_choices(self.settings)]
        default = _text(DEFAULT_AMOUNT)
        below = [c for c in self.choices if Decimal(c) <= DEFAULT_AMOUNT]
        #: The amount each meter's select shows until one is picked.
        self.default = default if default in self.choices else (below or self.choices)[-1]
        self._amounts: dict[str, str] = {}
        #: Each household's newest open order with a payment code.
        self._orders: dict[str, PayOrder] = {}
        self._svgs: dict[str, bytes] = {}  # by order id, while it is shown
        self._reads: dict[str, int] = {}  # read generation per household (newest wins)
        self._expiry: dict[str, CALLBACK_TYPE] = {}
        self._listeners: list[CALLBACK_TYPE] = []
        self._unsubs: list[CALLBACK_TYPE] = []

    # ------------------------------------------------------------------ life cycle

    @callback
    def async_start(self) -> None:
        """Listen for orders and payments; read the open orders in the background."""

        self._unsubs.append(
            async_dispatcher_connect(
                self.hass, signal_order(self.runtime.entry.entry_id), self._ordered
            )
        )

        @callback
        def is_ours(event_data: Mapping[str, Any]) -> bool:
            return bool(event_data.get("community") == self.runtime.community_id)

        self._unsubs.append(
            self.hass.bus.async_listen(EVENT_PAYMENT, self._paid, event_filter=is_ours)
        )
        self._in_background(self._async_read_all())

    @callback
    def async_stop(self) -> None:
        """Stop listening and waiting for expiries."""
        for unsub in (*self._unsubs, *self._expiry.values()):
            unsub()
        self._unsubs.clear()
        self._expiry.clear()

    # ------------------------------------------------------------------ what entities read

    def amount(self, meter_id: str) -> str:
        """Return the amount chosen on a meter's device."""
        return self._amounts.get(meter_id, self.default)

    @callback
    def set_amount(self, meter_id: str, choice: str) -> None:
        """Keep a meter's chosen amount (a choice no longer offered falls back)."""
        self._amounts[meter_id] = choice if choice in self.choices else self.default

    def order(self, account_id: str | None) -> PayOrder | None:
        """Return a household's newest open order with a code, or None."""
        if account_id is None:
            return None
        order = self._orders.get(account_id)
        return order if order is not None and _open(order, time.time()) else None

    async def async_svg(self, order: PayOrder) -> bytes | None:
        """Return the QR code of an order's payment code as SVG bytes (made once)."""
        svg = self._svgs.get(order.order_id)
        if svg is None and order.code is not None:
            text = await self.hass.async_add_executor_job(qr_svg, order.code)
            if text is None:
                return None
            svg = self._svgs[order.order_id] = text.encode()
        return svg

    @callback
    def async_add_listener(self, listener: CALLBACK_TYPE) -> CALLBACK_TYPE:
        """Call `listener` when a household's shown order changes; return the remover."""
        self._listeners.append(listener)
        return lambda: self._listeners.remove(listener)

    # ------------------------------------------------------------------ orders

    async def async_authorize(self, meter_id: str, context: Context | None) -> Actor:
        """Return who asks, if it is the meter's household's own resident or an operator.

        As for the household's statement and the `create_payment_order` action; a refusal is
        the engine's, translated (`not_your_meter`).
        """
        actor = await async_actor(self.hass, context)
        try:
            self.runtime.community.authorize(actor, "statement", meter_id=meter_id)
        except CommunityError as err:
            raise refusal(self.hass, err) from err
        return actor

    async def async_order(self, meter_id: str, provider: str, context: Context | None) -> None:
        """Order the meter's chosen amount of electricity credit by `provider` for whoever asks.

        The household's own resident or an operator (as the `create_payment_order` action);
        refusals are translated errors. The image shows the code once the provider gave it.
        """
        actor = await self.async_authorize(meter_id, context)
        account_id = self.runtime.community.meters[meter_id].account_id
        if account_id is None:
            raise translated_error("meter_unassigned", meter_id=meter_id)
        payments = payments_of(self.hass, self.runtime.entry.entry_id)
        if payments is None:
            raise translated_error("payments_not_configured", community=self.runtime.community_name)
        amount = Decimal(self.amount(meter_id))
        order = await payments.async_create_order(
            account_id, amount, "electricity", provider, actor
        )
        _LOGGER.debug("Order %s made on the device of meter %s", order["order_id"], meter_id)
        await self._async_read(account_id)  # shown when the press returns (the signal reads too)

    @callback
    def _in_background(self, job: Coroutine[Any, Any, Any]) -> None:
        """Run a read as the entry's background task (cancelled when it unloads)."""
        self.runtime.entry.async_create_background_task(
            self.hass, job, "prepaid_meter payment codes"
        )

    @callback
    def _ordered(self, account_id: str) -> None:
        """An order of this household got its payment code: show it."""
        self._in_background(self._async_read(account_id))

    @callback
    def _paid(self, event: Event[Mapping[str, Any]]) -> None:
        """A payment or refund: its household's shown order may be paid now."""
        account_id = event.data.get("household")
        if isinstance(account_id, str):
            self._in_background(self._async_read(account_id))

    # ------------------------------------------------------------------ reading the ledger

    async def _async_read_all(self) -> None:
        ledger = self.runtime.community.ledger
        since = int(time.time()) - START_WINDOW_S
        try:
            orders = await self.hass.async_add_executor_job(
                lambda: ledger.pay_orders(since=since, limit=100_000)
            )
        except Exception:  # the codes show from the next order on
            if self.runtime.entry.state is ConfigEntryState.LOADED:
                _LOGGER.exception(
                    "The open payment orders of %s could not be read", self.runtime.community_name
                )
            return
        newest: dict[str, PayOrder] = {}
        now = time.time()
        for order in orders:  # newest first
            if order.account_id not in newest and _open(order, now):
                newest[order.account_id] = order
        for account_id, order in newest.items():
            if account_id not in self._reads:  # not read since (that one is newer)
                self._show(account_id, order)

    async def _async_read(self, account_id: str) -> list[PayOrder]:
        """Read a household's newest orders (returned); show its newest open one."""
        generation = self._reads[account_id] = self._reads.get(account_id, 0) + 1
        ledger = self.runtime.community.ledger
        try:
            orders = await self.hass.async_add_executor_job(
                lambda: ledger.pay_orders(account_id, limit=10)
            )
        except Exception:
            if self.runtime.entry.state is ConfigEntryState.LOADED:
                _LOGGER.exception("The payment orders of %s could not be read", account_id)
            return []
        if generation == self._reads[account_id]:  # no later read has shown a newer state
            now = time.time()
            self._show(account_id, next((o for o in orders if _open(o, now)), None))
        return orders

    @callback
    def _show(self, account_id: str, order: PayOrder | None) -> None:
        shown = self._orders.get(account_id)
        if order == shown:
            return
        if unsub := self._expiry.pop(account_id, None):
            unsub()
        if shown is not None:
            self._svgs.pop(shown.order_id, None)
        if order is None:
            self._orders.pop(account_id, None)
        else:
            self._orders[account_id] = order

            @callback
            def expired(_now: Any) -> None:
                self._expiry.pop(account_id, None)
                self._in_background(self._async_read(account_id))

            self._expiry[account_id] = async_call_later(
                self.hass, max(order.expires_at - time.time(), 0) + 0.5, expired
            )
        for listener in tuple(self._listeners):
            listener()


@callback
def async_panel(hass: HomeAssistant, entry: PrepaidConfigEntry) -> PaymentPanel | None:
    """Return the entry's payment panel (made by the first platform asking), or None.

    None when the options configure no payments.
    """
    if not PaymentSettings.from_options(entry.options).enabled:
        return None
    panels = hass.data.setdefault(PANELS, {})
    panel = panels.get(entry.entry_id)
    if panel is None:
        panel = panels[entry.entry_id] = PaymentPanel(hass, entry.runtime_data)
        panel.async_start()

        @callback
        def remove() -> None:
            panel.async_stop()
            panels.pop(entry.entry_id, None)

        entry.async_on_unload(remove)
    return panel


@callback
def async_remove_payment_entities(
    hass: HomeAssistant, entry: PrepaidConfigEntry, domain: str, keep: Callable[[str], bool]
) -> None:
    """Remove a platform's payment entities the options no longer ask for (payments off)."""
    registry = er.async_get(hass)
    for item in er.async_entries_for_config_entry(registry, entry.entry_id):
        if item.domain != domain:
            continue
        for key in PAYMENT_KEYS:
            if item.unique_id.endswith(f"_{key}") and not keep(key):
                registry.async_remove(item.entity_id)


@callback
def async_setup_payment_platform[D: EntityDescription](
    hass: HomeAssistant,
    entry: PrepaidConfigEntry,
    platform: Platform,
    description: D,
    make: Callable[[PrepaidRuntime, PaymentPanel, str, D], Entity],
    async_add_entities: AddConfigEntryEntitiesCallback,
) -> None:
    """Set up a platform's one payment entity per meter (the amount select, the code image).

    Only when the community takes payments; with payments off, those registered are removed.
    A household's own instance has none: it pays through its community's.
    """
    if is_household(entry):
        return
    panel = async_panel(hass, entry)
    if panel is None:
        async_remove_payment_entities(hass, entry, platform, lambda _key: False)
        return
    runtime = entry.runtime_data
    runtime.async_remove_unwanted_entities(platform, [description.key])
    runtime.async_on_new_meter(
        lambda meter_id: async_add_entities(
            make(runtime, panel, meter_id, chosen)
            for chosen in runtime.meter_descriptions(platform, meter_id, [description])
        )
    )
