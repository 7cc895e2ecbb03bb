"""End to end in a real Home Assistant: a cut household tops up by scanning its QR code.

Issue 13's evidence: order -> QR -> signed notification through `/api/webhook/<id>` ->
balance and account topic within 2 s -> a cut supply restorable. The community runs on the
session's mosquitto with a test meter (tests/ha/meter.py), both local providers
(simulator/payprovider.py) stand in for WeChat Pay and Alipay, and the household's resident
uses the controls on their meter's device: the top-up amount, "Pay by WeChat" and the
payment code image (payment_panel.py); an order made with the `create_payment_order` action
shows on the same image.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
import contextlib
from decimal import Decimal
import json
import time
from typing import Any

import aiomqtt
from homeassistant.core import Context, HomeAssistant
from homeassistant.setup import async_setup_component
import pytest
from pytest_homeassistant_custom_component.typing import ClientSessionGenerator

from custom_components.prepaid_meter.const import DOMAIN
from custom_components.prepaid_meter.payments import qr_svg
from simulator.payprovider import PayProvider
from tests.broker import Mosquitto
from tests.ha import test_payments
from tests.ha.conftest import METER_ID
from tests.ha.meter import TestMeter
from tests.ha.test_init import call
from tests.ha.test_payments import HOUSEHOLD, Pay

# test_payments' fixtures, by their names: a community with both local providers on.
provider_keys = test_payments.provider_keys
pay = test_payments.pay


@pytest.fixture(autouse=True)
async def views_first(hass: HomeAssistant) -> None:
    """Set up what registers HTTP views before the `pay` fixture starts the test client.

    A running aiohttp test server's router takes no new view; in Home Assistant the image
    component and this integration are set up before its server starts (or it allows them).
    """
    assert await async_setup_component(hass, "image", {})
    assert await async_setup_component(hass, DOMAIN, {})


#: How long a credit may take to show in Home Assistant and on the account topic.
CREDIT_WITHIN_S = 2.0


def _entity(pay: Pay, domain: str, key: str) -> str:
    registry_id = pay.hass.data["entity_registry"].async_get_entity_id(
        domain, DOMAIN, pay.entry.runtime_data.meter_unique_id(METER_ID, key)
    )
    assert registry_id is not None, key
    return str(registry_id)


class AccountTopic:
    """The household's retained account topic, read by a real MQTT client."""

    def __init__(self, client: aiomqtt.Client, topic: str) -> None:
        self.client = client
        self.topic = topic
        self.payloads: list[dict[str, Any]] = []
        self.arrived = asyncio.Event()

    async def listen(self) -> None:
        async for message in self.client.messages:
            self.payloads.append(json.loads(bytes(message.payload)))
            self.arrived.set()

    def balance(self) -> str | None:
        return str(self.payloads[-1]["balance"]) if self.payloads else None


@contextlib.asynccontextmanager
async def account_topic(mosquitto: Mosquitto, community_id: str) -> AsyncIterator[AccountTopic]:
    """Subscribe to the household meter's account topic (PROTOCOL.md, `account`)."""
    topic = f"prepaid/{community_id}/{METER_ID}/account"
    async with aiomqtt.Client(mosquitto.host, mosquitto.port) as client:
        reader = AccountTopic(client, topic)
        await client.subscribe(topic, qos=1)
        task = asyncio.create_task(reader.listen())
        try:
            yield reader
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task


async def _until(hass: HomeAssistant, predicate: Callable[[], bool], limit: float = 10) -> None:
    async with asyncio.timeout(limit):
        while True:  # polled often: the latency is measured with it
            if predicate():
                return
            await asyncio.sleep(0.005)


async def _cut_for_exhausted_credit(pay: Pay, meter: TestMeter) -> None:
    """Readings use more than the (empty) credit: the meter is told to switch off."""
    hass, supply = pay.hass, _entity(pay, "switch", "supply")
    now = int(time.time())
    await meter.reading(now - 120, "100.000")
    await meter.reading(now - 60, "200.000")  # 100 kWh at 0.4883
    await meter.wait_for(
        lambda: any(c.get("op") == "relay" and c["state"] == "off" for c in meter.commands)
    )
    await meter.reading(now, "200.000")
    await _until(hass, lambda: _state(hass, supply) == "off")


def _state(hass: HomeAssistant, entity_id: str) -> str | None:
    found = hass.states.get(entity_id)
    return None if found is None else found.state


async def _image(client: Any, entity_id: str) -> tuple[str, bytes]:
    response = await client.get(f"/api/image_proxy/{entity_id}")
    assert response.status == 200
    return response.headers["Content-Type"], await response.read()


async def _pay_and_measure(
    pay: Pay, provider: PayProvider, code: str, topic: AccountTopic, expected: Decimal
) -> float:
    """Scan the code; return the seconds until the sensor AND the account topic show it."""
    text = f"{expected:.2f}"
    balance = _entity(pay, "sensor", "balance")
    started = time.monotonic()
    [delivery] = await provider.scan(code)
    assert delivery.acknowledged
    await _until(
        pay.hass,
        lambda: _state(pay.hass, balance) == text and topic.balance() == text,
        limit=10,
    )
    return time.monotonic() - started


async def test_a_cut_household_pays_by_qr_and_restores_its_supply(
    pay: Pay,
    meter: TestMeter,
    mosquitto: Mosquitto,
    community_id: str,
    hass_client: ClientSessionGenerator,
) -> None:
    """Cut -> order by button and by action -> QR image -> scan -> credit in < 2 s -> restore."""
    hass = pay.hass
    resident = await test_payments._resident(hass, HOUSEHOLD)
    as_resident = Context(user_id=resident.id)
    client = await hass_client()
    image = _entity(pay, "image", "payment_code")
    balance, supply = _entity(pay, "sensor", "balance"), _entity(pay, "switch", "supply")
    await _cut_for_exhausted_credit(pay, meter)
    debt = Decimal(str(_state(hass, balance)))
    assert debt < 0
    assert _state(hass, image) == "unavailable"  # nothing to pay yet

    async with account_topic(mosquitto, community_id) as topic:
        # 1. The resident picks 100 and presses "Pay by WeChat": the image shows its QR code.
        await hass.services.async_call(
            "select",
            "select_option",
            {"entity_id": _entity(pay, "select", "payment_amount"), "option": "100"},
            blocking=True,
            context=as_resident,
        )
        await hass.services.async_call(
            "button",
            "press",
            {"entity_id": _entity(pay, "button", "pay_wechat")},
            blocking=True,
            context=as_resident,
        )
        await _until(hass, lambda: _state(hass, image) not in (None, "unavailable"))
        shown = hass.states.get(image)
        assert shown is not None
        order = pay.payments.desk.order(shown.attributes["order_id"])
        assert order is not None and order.code is not None
        assert (order.account_id, order.amount, order.provider) == (
            HOUSEHOLD,
            Decimal(100),
            "wechat",
        )
        assert order.code.startswith("weixin://wxpay/bizpayurl?pr=")
        content_type, body = await _image(client, image)
        assert content_type == "image/svg+xml"
        assert body.decode() == qr_svg(order.code)  # the QR of this order's code

        # 2. Scanned and paid: the balance and the account topic within 2 s.
        first = await _pay_and_measure(pay, pay.wechat, order.code, topic, debt + 100)
        await _until(hass, lambda: _state(hass, image) == "unavailable")  # paid: gone

        # 3. The action orders too (Alipay, 20): the same image shows it; paid the same way.
        response = await pay.order("20.00", "alipay", context=as_resident)
        await _until(
            hass,
            lambda: (
                (state := hass.states.get(image)) is not None
                and state.attributes.get("order_id") == response["order_id"]
            ),
        )
        _, body = await _image(client, image)
        assert body.decode() == response["qr_svg"] == qr_svg(response["code"])
        second = await _pay_and_measure(pay, pay.alipay, response["code"], topic, debt + 120)

    print(f"credit latency: button/WeChat {first:.3f} s, action/Alipay {second:.3f} s")
    assert first < CREDIT_WITHIN_S, first
    assert second < CREDIT_WITHIN_S, second
    assert await pay.balance() == debt + 120

    # 4. The supply is restorable: the resident's own restore button switches the meter on.
    assert _state(hass, supply) == "off"  # never on by itself
    await hass.services.async_call(
        "button",
        "press",
        {"entity_id": _entity(pay, "button", "restore_supply")},
        blocking=True,
        context=as_resident,
    )
    await meter.wait_for(
        lambda: any(c.get("op") == "relay" and c["state"] == "on" for c in meter.commands)
    )
    await meter.wait_for(lambda: meter.relay == "on")
    await _until(hass, lambda: _state(hass, supply) == "on")


@pytest.mark.parametrize("provider", ["wechat", "alipay"])
async def test_the_action_s_restore_after_a_payment(
    pay: Pay, meter: TestMeter, provider: str
) -> None:
    """The cut supply is restorable with the action too, once the payment cleared the debt."""
    hass = pay.hass
    await _cut_for_exhausted_credit(pay, meter)
    response = await pay.order("100.00", provider)
    [delivery] = await pay.provider(provider).scan(response["code"])
    assert delivery.acknowledged
    await call(hass, "restore_supply", meter_id=METER_ID)
    await meter.wait_for(lambda: meter.relay == "on")
