"""The household's payment controls: top-up amount, pay buttons and the payment code image.

On a community whose options configure both local providers (the `pay` fixture of
tests/ha/test_payments.py: the session's mosquitto, a test meter, simulator/payprovider.py).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from decimal import Decimal
import time
from typing import Any
from unittest.mock import patch

from homeassistant.const import STATE_UNAVAILABLE
from homeassistant.core import Context, HomeAssistant
from homeassistant.exceptions import ServiceValidationError
from homeassistant.helpers import entity_registry as er
from homeassistant.helpers.template import Template
from homeassistant.setup import async_setup_component
from homeassistant.util import dt as dt_util
import pytest
from pytest_homeassistant_custom_component.common import MockConfigEntry
from pytest_homeassistant_custom_component.typing import ClientSessionGenerator

from custom_components.prepaid_meter import coordinator
from custom_components.prepaid_meter.const import DOMAIN
from custom_components.prepaid_meter.dashboard import (
    CARD_TYPES,
    async_load_words,
    resident_dashboard,
)
from custom_components.prepaid_meter.payment_panel import PANELS, amount_choices
from custom_components.prepaid_meter.payments import CONF_PAYMENTS, PaymentSettings, qr_svg
from tests.ha import test_payments
from tests.ha.conftest import METER_ID
from tests.ha.meter import TestMeter
from tests.ha.test_dashboard import cards_of, frontend_cards
from tests.ha.test_init import setup_household
from tests.ha.test_payments import HOUSEHOLD, Pay

# test_payments' fixtures, by their names: a community with both local providers on.
provider_keys = test_payments.provider_keys
pay = test_payments.pay
PAYMENT_KEYS = {
    ("select", "payment_amount"),
    ("image", "payment_code"),
    ("button", "pay_wechat"),
    ("button", "pay_alipay"),
}


@pytest.fixture(autouse=True)
async def views_first(hass: HomeAssistant) -> None:
    """Set up what registers HTTP views before the `pay` fixture starts the test client.

    A running aiohttp test server's router takes no new view; in Home Assistant the image
    component and this integration are set up before its server starts (or it allows them).
    """
    assert await async_setup_component(hass, "image", {})
    assert await async_setup_component(hass, DOMAIN, {})


def _entity(hass: HomeAssistant, entry: MockConfigEntry, domain: str, key: str) -> str | None:
    return er.async_get(hass).async_get_entity_id(
        domain, DOMAIN, entry.runtime_data.meter_unique_id(METER_ID, key)
    )


def _id(pay: Pay, domain: str, key: str) -> str:
    found = _entity(pay.hass, pay.entry, domain, key)
    assert found is not None, key
    return found


async def _until(hass: HomeAssistant, predicate: Callable[[], bool], limit: float = 10) -> None:
    async with asyncio.timeout(limit):
        while not predicate():
            await asyncio.sleep(0.02)
            await hass.async_block_till_done()


def _attributes(hass: HomeAssistant, entity_id: str) -> dict[str, Any]:
    state = hass.states.get(entity_id)
    assert state is not None
    return dict(state.attributes)


async def _press(pay: Pay, provider: str, context: Context | None = None) -> None:
    await pay.hass.services.async_call(
        "button",
        "press",
        {"entity_id": _id(pay, "button", f"pay_{provider}")},
        blocking=True,
        context=context,
    )


async def _choose(pay: Pay, option: str, context: Context | None = None) -> None:
    await pay.hass.services.async_call(
        "select",
        "select_option",
        {"entity_id": _id(pay, "select", "payment_amount"), "option": option},
        blocking=True,
        context=context,
    )


def test_amount_choices_stay_within_the_limit_per_payment() -> None:
    """20, 50, 100, 200 up to the limit; the limit itself when none fits."""

    def choices(limit: str) -> list[Decimal]:
        return amount_choices(PaymentSettings.from_options({CONF_PAYMENTS: {"max_payment": limit}}))

    assert choices("2000") == [Decimal(20), Decimal(50), Decimal(100), Decimal(200)]
    assert choices("100") == [Decimal(20), Decimal(50), Decimal(100)]
    assert choices("80") == [Decimal(20), Decimal(50)]
    assert choices("12.5") == [Decimal("12.50")]


async def test_the_button_s_order_shows_as_a_qr_code(
    pay: Pay, hass_client: ClientSessionGenerator
) -> None:
    """Pick an amount, press a pay button: the image is the QR code of that order's code."""
    hass = pay.hass
    image, amount = _id(pay, "image", "payment_code"), _id(pay, "select", "payment_amount")
    select = _attributes(hass, amount)
    assert select["options"] == ["20", "50", "100", "200"]  # the limit is 1000
    assert hass.states.get(amount).state == "50"  # type: ignore[union-attr]
    assert hass.states.get(image).state == STATE_UNAVAILABLE  # type: ignore[union-attr]
    client = await hass_client()

    await _choose(pay, "200")
    await _press(pay, "alipay")
    await hass.async_block_till_done()
    state = hass.states.get(image)
    assert state is not None and state.state != STATE_UNAVAILABLE
    first = state.state  # the time the image changed
    shown = dict(state.attributes)
    assert (shown["amount"], shown["provider"], shown["purpose"]) == (
        "200.00",
        "alipay",
        "electricity",
    )
    order = pay.payments.desk.order(shown["order_id"])
    assert order is not None and order.account_id == HOUSEHOLD and order.code is not None
    response = await client.get(f"/api/image_proxy/{image}")
    assert response.status == 200
    assert response.headers["Content-Type"] == "image/svg+xml"
    assert (await response.read()).decode() == qr_svg(order.code)

    # A newer order: another picture, another time.
    await _choose(pay, "20")
    await _press(pay, "wechat")
    await hass.async_block_till_done()
    state = hass.states.get(image)
    assert state is not None and state.attributes["order_id"] != order.order_id
    assert state.attributes["amount"] == "20.00" and state.attributes["provider"] == "wechat"
    assert state.state != first
    newer = pay.payments.desk.order(state.attributes["order_id"])
    assert newer is not None and newer.code is not None
    response = await client.get(f"/api/image_proxy/{image}")
    assert (await response.read()).decode() == qr_svg(newer.code)

    # Paid: the household's newest open order is the older one again.
    [delivery] = await pay.wechat.scan(newer.code)
    assert delivery.acknowledged
    await _until(hass, lambda: _attributes(hass, image).get("order_id") == order.order_id)
    [delivery] = await pay.alipay.scan(order.code)
    assert delivery.acknowledged
    await _until(hass, lambda: hass.states.get(image).state == STATE_UNAVAILABLE)  # type: ignore[union-attr]
    assert await pay.balance() == Decimal(220)


async def test_an_expired_order_leaves_the_image(pay: Pay) -> None:
    """An order whose time is up is not shown any more (nothing to pay)."""
    hass = pay.hass
    image = _id(pay, "image", "payment_code")
    desk = pay.payments.desk
    # Made 899 s ago by the desk's clock: it expires in about a second.
    with patch.object(desk, "clock", lambda: time.time() - desk.order_ttl_s + 1.5):
        response = await pay.order("30.00")
    await _until(hass, lambda: _attributes(hass, image).get("order_id") == response["order_id"])
    await _until(hass, lambda: hass.states.get(image).state == STATE_UNAVAILABLE, limit=5)  # type: ignore[union-attr]


async def test_who_may_pay_and_choose(pay: Pay) -> None:
    """The household's own resident and operators; a neighbour is refused, nothing made."""
    hass = pay.hass
    neighbour = await test_payments._resident(hass)
    resident = await test_payments._resident(hass, HOUSEHOLD)
    with pytest.raises(ServiceValidationError) as caught:
        await _press(pay, "wechat", Context(user_id=neighbour.id))
    assert caught.value.translation_key == "not_your_meter"
    with pytest.raises(ServiceValidationError) as caught:
        await _choose(pay, "100", Context(user_id=neighbour.id))
    assert caught.value.translation_key == "not_your_meter"
    assert pay.payments.desk.orders(HOUSEHOLD) == []
    assert hass.states.get(_id(pay, "select", "payment_amount")).state == "50"  # type: ignore[union-attr]

    await _choose(pay, "100", Context(user_id=resident.id))
    await _press(pay, "wechat", Context(user_id=resident.id))
    [order] = pay.payments.desk.orders(HOUSEHOLD)
    assert (order.amount, order.provider, order.purpose) == (Decimal(100), "wechat", "electricity")
    assert order.actor.startswith("resident")
    await _press(pay, "alipay")  # an administrator
    assert len(pay.payments.desk.orders(HOUSEHOLD)) == 2


async def test_an_order_over_the_day_s_limit_is_refused_in_words(pay: Pay) -> None:
    """The desk's limits hold for the button too (3000 a day in these options)."""
    await _choose(pay, "200")
    for _ in range(5):
        await _press(pay, "wechat")
    with pytest.raises(ServiceValidationError) as caught:
        await _press(pay, "wechat")  # a sixth open order
    assert caught.value.translation_key == "payment_too_many_open_orders"


async def test_an_unassigned_meter_s_controls_are_unavailable(pay: Pay, meter: TestMeter) -> None:
    """Moved out: nothing to pay for on that device; pressing says why."""
    hass = pay.hass
    await _press(pay, "wechat")
    assert hass.states.get(_id(pay, "image", "payment_code")).state != STATE_UNAVAILABLE  # type: ignore[union-attr]
    await pay.entry.runtime_data.service.unassign(METER_ID)  # what move-out does to it
    await hass.async_block_till_done()
    for domain, key in PAYMENT_KEYS:
        state = hass.states.get(_id(pay, domain, key))
        assert state is not None and state.state == STATE_UNAVAILABLE, key
    await _press(pay, "wechat")  # Home Assistant skips an unavailable entity
    assert len(pay.payments.desk.orders(HOUSEHOLD)) == 1
    panel = hass.data[PANELS][pay.entry.entry_id]
    with pytest.raises(ServiceValidationError) as caught:  # asked all the same: refused
        await panel.async_order(METER_ID, "wechat", None)
    assert caught.value.translation_key == "meter_unassigned"
    assert len(pay.payments.desk.orders(HOUSEHOLD)) == 1


async def test_the_entities_follow_the_options(
    hass: HomeAssistant, init_integration: MockConfigEntry, meter: TestMeter
) -> None:
    """Without payments, none; with them, one pay button per provider that is on; off again,
    gone. They count in the entity budget."""
    entry = init_integration
    await setup_household(hass, entry, meter)
    assert all(_entity(hass, entry, domain, key) is None for domain, key in PAYMENT_KEYS)
    assert entry.runtime_data.entities_per_meter == coordinator.ENTITIES_PER_METER

    hass.config_entries.async_update_entry(
        entry, options={**entry.options, CONF_PAYMENTS: {"alipay": True, "max_payment": "100"}}
    )
    await hass.async_block_till_done()  # reloaded
    found = {(d, k) for d, k in PAYMENT_KEYS if _entity(hass, entry, d, k) is not None}
    assert found == PAYMENT_KEYS - {("button", "pay_wechat")}
    assert entry.runtime_data.entities_per_meter == coordinator.ENTITIES_PER_METER + 3
    amount = _entity(hass, entry, "select", "payment_amount")
    assert amount is not None
    assert _attributes(hass, amount)["options"] == ["20", "50", "100"]

    hass.config_entries.async_update_entry(
        entry, options={k: v for k, v in entry.options.items() if k != CONF_PAYMENTS}
    )
    await hass.async_block_till_done()
    assert all(_entity(hass, entry, domain, key) is None for domain, key in PAYMENT_KEYS)


async def test_a_large_community_gets_them_only_with_all_entities(
    hass: HomeAssistant, init_integration: MockConfigEntry, meter: TestMeter
) -> None:
    """The essential set leaves them out; payments lower the size at which it applies."""
    entry = init_integration
    await setup_household(hass, entry, meter)
    payments = {CONF_PAYMENTS: {"wechat": True, "alipay": True}}
    with patch.object(coordinator, "ESSENTIAL_ABOVE", 0):  # any community counts as large
        hass.config_entries.async_update_entry(entry, options={**entry.options, **payments})
        await hass.async_block_till_done()  # reloaded
        assert entry.runtime_data.meter_entities == "essential"
        assert all(_entity(hass, entry, domain, key) is None for domain, key in PAYMENT_KEYS)
    # With 4 more entities per meter, fewer meters fill the budget than without them.
    runtime = entry.runtime_data
    one = runtime.community.meters[METER_ID]
    fits = coordinator.ENTITY_BUDGET // (coordinator.ENTITIES_PER_METER + 4)
    assert fits < coordinator.ESSENTIAL_ABOVE
    runtime._meter_entities = None  # decided once a load: decide again
    with patch.dict(runtime.community.meters, {f"m{i:04d}": one for i in range(fits)}):
        assert runtime.meter_entities == "essential"  # one more than fits
    runtime._meter_entities = None
    with patch.dict(runtime.community.meters, {f"m{i:04d}": one for i in range(fits - 1)}):
        assert runtime.meter_entities == "all"
        assert runtime.entities_per_meter == coordinator.ENTITIES_PER_METER + 4


async def test_the_household_dashboard_has_the_top_up_cards(pay: Pay) -> None:
    """Amount, both pay buttons and the code (shown while there is one), in core cards."""
    hass = pay.hass
    runtime = pay.entry.runtime_data
    words = await async_load_words(hass)
    config = resident_dashboard(runtime, er.async_get(hass), words, HOUSEHOLD)
    cards = list(cards_of(config))
    assert {card["type"] for card in cards} <= frontend_cards()
    assert {card["type"] for card in cards} <= CARD_TYPES
    by_entity = {card.get("entity"): card for card in cards}
    code = by_entity[_id(pay, "image", "payment_code")]
    assert code["type"] == "picture-entity"
    [shown_while] = [c for c in cards if c.get("card") is code]
    assert shown_while["conditions"] == [
        {"condition": "state", "entity": code["entity"], "state_not": "unavailable"}
    ]
    amount = by_entity[_id(pay, "select", "payment_amount")]
    assert amount["type"] == "tile" and amount["name"] == "Top-up amount"
    for provider, name in (("wechat", "Pay by WeChat"), ("alipay", "Pay by Alipay")):
        button = by_entity[_id(pay, "button", f"pay_{provider}")]
        assert button["name"] == name
        assert button["tap_action"]["perform_action"] == "button.press"
        # The frontend's press is the button's press: an order of the chosen amount.
        await hass.services.async_call(
            "button", "press", button["tap_action"]["target"], blocking=True
        )
    assert {o.provider for o in pay.payments.desk.orders(HOUSEHOLD)} == {"wechat", "alipay"}
    assert any(c.get("content") == words["pay_hint"] for c in cards)
    # What the shown code pays, while it is shown: the newest order (Alipay's), its amount
    # and until when, in the household's words.
    [says] = [c for c in cards if c.get("card", {}).get("type") == "markdown"]
    assert says["conditions"] == shown_while["conditions"]
    await hass.async_block_till_done()
    state = hass.states.get(code["entity"])
    assert state is not None and state.attributes["provider"] == "alipay"
    text = Template(says["card"]["content"], hass).async_render(parse_result=False, strict=True)
    expires = dt_util.parse_datetime(state.attributes["expires_at"])
    assert expires is not None
    until = dt_util.as_local(expires)
    assert text == (
        f"Scan with Alipay to pay {state.attributes['amount']} CNY; "
        f"the code works until {until:%H:%M}."
    )


async def test_an_order_of_the_action_shows_when_the_provider_is_slow(pay: Pay) -> None:
    """The action's order shows once its code came, also seconds later, after a paid one."""
    hass = pay.hass
    image = _id(pay, "image", "payment_code")
    paid = await pay.order("10.00")
    await pay.wechat.scan(paid["code"])
    await _until(hass, lambda: hass.states.get(image).state == STATE_UNAVAILABLE)  # type: ignore[union-attr]
    ask = pay.payments._ask_code

    async def slow(order: Any) -> str:
        await asyncio.sleep(0.7)  # the household's newest coded order is the paid one till then
        return await ask(order)

    with patch.object(pay.payments, "_ask_code", slow):
        response = await pay.order("20.00", "alipay")
    await _until(hass, lambda: _attributes(hass, image).get("order_id") == response["order_id"])
