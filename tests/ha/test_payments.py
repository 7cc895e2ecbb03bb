"""Payments in Home Assistant: a real local provider posting to the entry's webhook.

The community entry runs on the session's mosquitto with a test meter; its payment options
point at two local providers (simulator/payprovider.py: WeChat Pay and Alipay, each on a free
port, with keys they wrote into the configuration folder) and name Home Assistant's HTTP test
server as the public address, so a "scan" of an order's code posts a signed notification
through `/api/webhook/<id>` exactly as the providers would.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
import csv
from decimal import Decimal
import io
import json
from pathlib import Path
import shutil
import time
from typing import Any
from unittest.mock import patch

from homeassistant.config_entries import ConfigEntryState
from homeassistant.core import Context, HomeAssistant
from homeassistant.exceptions import ServiceValidationError, Unauthorized
from homeassistant.helpers import issue_registry as ir
from homeassistant.setup import async_setup_component
import pytest
from pytest_homeassistant_custom_component.common import MockConfigEntry, async_capture_events
from pytest_homeassistant_custom_component.typing import ClientSessionGenerator
import voluptuous as vol

from custom_components.prepaid_meter import payments as payments_module
from custom_components.prepaid_meter.const import DOMAIN
from custom_components.prepaid_meter.diagnostics import async_get_config_entry_diagnostics
from custom_components.prepaid_meter.engine.ledger import SubAccount
from custom_components.prepaid_meter.payment_actions import month_report
from custom_components.prepaid_meter.payments import (
    CONF_PAYMENTS,
    DATA_WEBHOOK_ID,
    EVENT_PAYMENT,
    REJECT_REPAIR_AFTER,
    CommunityPayments,
    PaymentSetupError,
    payments_of,
    validate_payment_options,
)
from simulator.payprovider import FILES, PayProvider, ProviderKeys
from tests.ha.conftest import METER_ID
from tests.ha.meter import TestMeter
from tests.ha.test_init import call, setup_household

HOUSEHOLD = "b3-501"
E, PF = SubAccount.ELECTRICITY, SubAccount.PROPERTY_FEE
KEYS = "paykeys"  # the key files' folder in the configuration folder


@pytest.fixture(scope="module")
def provider_keys(tmp_path_factory: pytest.TempPathFactory) -> ProviderKeys:
    """Keys both sides need, made once for the module (RSA generation takes a while)."""
    return ProviderKeys.load_or_create(tmp_path_factory.mktemp("paykeys"))


def payment_options(
    keys: ProviderKeys, wechat_url: str, alipay_url: str, public: str
) -> dict[str, Any]:
    """The payment settings as the options flow stores them, naming the files in `paykeys/`."""
    info = keys.merchant_info()
    return {
        "wechat": True,
        "wechat_mchid": info["wechat"]["mchid"],
        "wechat_appid": info["wechat"]["appid"],
        "wechat_serial_no": info["wechat"]["serial_no"],
        "wechat_private_key": f"{KEYS}/{FILES['wechat_merchant_key']}",
        "wechat_apiv3_key": f"{KEYS}/{FILES['wechat_apiv3_key']}",
        "wechat_platform_cert": f"{KEYS}/{FILES['wechat_platform_public']}",
        "wechat_platform_serial": info["wechat"]["platform_serial"],
        "wechat_url": wechat_url,
        "alipay": True,
        "alipay_app_id": info["alipay"]["app_id"],
        "alipay_seller_id": info["alipay"]["seller_id"],
        "alipay_private_key": f"{KEYS}/{FILES['alipay_app_private']}",
        "alipay_public_key": f"{KEYS}/{FILES['alipay_public']}",
        "alipay_url": alipay_url,
        "public_url": public,
        "max_payment": "1000.00",
        "max_per_day": "3000.00",
        "order_minutes": 15,
    }


class Pay:
    """The world of one test: the entry, its payments, both providers."""

    def __init__(
        self,
        hass: HomeAssistant,
        entry: MockConfigEntry,
        wechat: PayProvider,
        alipay: PayProvider,
    ) -> None:
        self.hass = hass
        self.entry = entry
        self.wechat = wechat
        self.alipay = alipay

    @property
    def payments(self) -> CommunityPayments:
        found = payments_of(self.hass, self.entry.entry_id)
        assert found is not None
        return found

    def provider(self, name: str) -> PayProvider:
        return self.wechat if name == "wechat" else self.alipay

    async def order(
        self, amount: str, provider: str = "wechat", context: Context | None = None, **data: Any
    ) -> dict[str, Any]:
        response: Any = await self.hass.services.async_call(
            DOMAIN,
            "create_payment_order",
            {
                **({} if "meter_id" in data else {"household": HOUSEHOLD}),
                "amount": amount,
                "provider": provider,
                **data,
            },
            blocking=True,
            return_response=True,
            context=context,
        )
        assert isinstance(response, dict)
        return response

    async def balance(self, sub: SubAccount = E) -> Decimal:
        ledger = self.entry.runtime_data.community.ledger
        return await self.hass.async_add_executor_job(ledger.balance, HOUSEHOLD, sub)

    async def stats(self) -> dict[str, Any]:
        return await self.payments.async_diagnostics()


@pytest.fixture
async def pay(
    hass: HomeAssistant,
    config_entry: MockConfigEntry,
    tmp_path: Path,
    provider_keys: ProviderKeys,
    hass_client_no_auth: ClientSessionGenerator,
    meter: TestMeter,
) -> AsyncIterator[Pay]:
    """A community with both providers on, its household assigned."""
    hass.config.config_dir = str(tmp_path)
    shutil.copytree(provider_keys.folder, tmp_path / KEYS)
    assert await async_setup_component(hass, "webhook", {})
    client = await hass_client_no_auth()
    public = str(client.make_url("/")).rstrip("/")
    wechat = PayProvider("wechat", provider_keys, retry_delays=(0.3, 0.6))
    alipay = PayProvider("alipay", provider_keys, retry_delays=(0.3, 0.6))
    await wechat.start()
    await alipay.start()
    options = payment_options(provider_keys, wechat.url, f"{alipay.url}/gateway.do", public)
    entry = MockConfigEntry(
        domain=DOMAIN,
        title=config_entry.title,
        unique_id=config_entry.unique_id,
        data=dict(config_entry.data),
        options={**config_entry.options, CONF_PAYMENTS: options},
    )
    entry.add_to_hass(hass)
    try:
        assert await hass.config_entries.async_setup(entry.entry_id)
        await hass.async_block_till_done()
        async with asyncio.timeout(10):
            await entry.runtime_data.transport.wait_connected()
        await setup_household(hass, entry, meter)
        yield Pay(hass, entry, wechat, alipay)
    finally:
        await wechat.stop()
        await alipay.stop()
        if entry.state.recoverable:
            await hass.config_entries.async_unload(entry.entry_id)
            await hass.async_block_till_done()


def _placeholders(found: Any) -> dict[str, str]:
    """Return an issue's or an error's placeholders (never None here)."""
    placeholders = found.translation_placeholders
    assert placeholders is not None
    return dict(placeholders)


# ---------------------------------------------------------------------------- paying


@pytest.mark.parametrize("provider", ["wechat", "alipay"])
async def test_an_order_paid_by_scanning_credits_once(pay: Pay, provider: str) -> None:
    """Order -> code and QR -> scan -> the balance rises once, however often it is told."""
    events = async_capture_events(pay.hass, EVENT_PAYMENT)
    order = await pay.order("50.00", provider)
    prefix = "weixin://wxpay/bizpayurl?pr=" if provider == "wechat" else "https://qr.alipay.com/"
    assert order["code"].startswith(prefix)
    assert order["household"] == HOUSEHOLD and order["amount"] == "50.00"
    assert order["expires_at"] > time.time() + 800
    assert order["qr_svg"].startswith("<svg")
    sim = pay.provider(provider)
    deliveries = await sim.scan(order["code"], times=3)  # delivered three times
    assert [d.acknowledged for d in deliveries] == [True, True, True]
    if provider == "wechat":
        assert {d.status for d in deliveries} == {204} and {d.answer for d in deliveries} == {b""}
    else:
        assert {d.answer for d in deliveries} == {b"success"}
    assert await pay.balance() == Decimal("50.00")
    again = await sim.replay(deliveries[0].notification)  # byte for byte, later
    assert again.acknowledged
    assert await pay.balance() == Decimal("50.00")
    await pay.hass.async_block_till_done()
    assert [e.data for e in events] == [
        {
            "community": pay.entry.runtime_data.community_id,
            "household": HOUSEHOLD,
            "amount": "50.00",
            "kind": "payment",
            "provider": provider,
            "order": order["order_id"],
            "purpose": "electricity",
            "transaction_id": sim.orders[order["order_id"]].transaction_id,
            "balance": "50.00",
        }
    ]
    stored = pay.payments.desk.order(order["order_id"])
    assert stored is not None and stored.state == "paid" and stored.code == order["code"]
    ledger = pay.entry.runtime_data.community.ledger
    assert await pay.hass.async_add_executor_job(ledger.check_invariant) == []


async def test_a_reordered_refund_waits_for_its_payment(pay: Pay) -> None:
    """A refund that arrives before its payment is refused, redelivered, then reversed."""
    order = await pay.order("40.00")
    payment = pay.wechat.payment(order["order_id"])
    refund = pay.wechat.refund_notice(order["order_id"], Decimal("15.00"))
    early = await pay.wechat.deliver(refund)
    assert not early.acknowledged and early.status == 400
    assert (await pay.wechat.deliver(payment)).acknowledged
    async with asyncio.timeout(10):
        await pay.wechat.drain()  # the provider delivers the refund again
    assert await pay.balance() == Decimal("25.00")
    assert (await pay.wechat.replay(refund)).acknowledged
    assert (await pay.wechat.replay(payment)).acknowledged
    assert await pay.balance() == Decimal("25.00")


async def test_a_refund_reverses_once(pay: Pay) -> None:
    """WeChat Pay refunds each reverse once; Alipay's cumulative refund_fee converges."""
    events = async_capture_events(pay.hass, EVENT_PAYMENT)
    wechat = await pay.order("60.00")
    await pay.wechat.scan(wechat["code"])
    first = await pay.wechat.refund(wechat["order_id"], Decimal("10.00"))
    assert first.acknowledged
    await pay.wechat.replay(first.notification)
    assert await pay.balance() == Decimal("50.00")
    alipay = await pay.order("30.00", "alipay")
    await pay.alipay.scan(alipay["code"])
    one = await pay.alipay.refund(alipay["order_id"], Decimal("5.00"))
    two = await pay.alipay.refund(alipay["order_id"], Decimal("5.00"))
    await pay.alipay.replay(one.notification)  # an older total, after a newer one
    await pay.alipay.replay(two.notification)
    assert await pay.balance() == Decimal("70.00")  # 50 + 30 - 10
    await pay.hass.async_block_till_done()
    kinds = [(e.data["kind"], e.data["amount"]) for e in events]
    assert kinds == [
        ("payment", "60.00"),
        ("refund", "10.00"),
        ("payment", "30.00"),
        ("refund", "5.00"),
        ("refund", "5.00"),
    ]


async def test_a_fee_order_pays_the_fee(pay: Pay) -> None:
    """A property fee order pays the property fee, never the electricity credit."""
    await call(
        pay.hass,
        "charge_fee",
        household=HOUSEHOLD,
        sub_account="property_fee",
        amount="120.50",
        period="2026-11",
        transaction_id="fee-1",
    )
    order = await pay.order("120.50", "alipay", purpose="property_fee")
    assert order["order_id"].startswith("PMP")
    [delivery] = await pay.alipay.scan(order["code"])
    assert delivery.acknowledged
    assert await pay.balance(PF) == 0
    assert await pay.balance(E) == 0


# ---------------------------------------------------------------------------- refused


@pytest.mark.parametrize("provider", ["wechat", "alipay"])
async def test_bad_notifications_write_nothing_and_repeats_are_a_repair(
    pay: Pay, provider: str, caplog: pytest.LogCaptureFixture
) -> None:
    """Bad signatures, stale or tampered messages: refused, counted, a repair when repeated."""
    sim = pay.provider(provider)
    variants = ["bad_signature", "tampered"] + (["stale"] if provider == "wechat" else [])
    issue_id = f"payment_rejected_{pay.entry.entry_id}_{provider}_bad_signature"
    registry = ir.async_get(pay.hass)
    for variant in variants:
        order = await pay.order("10.00", provider)
        [delivery] = await sim.scan(order["code"], variant=variant)
        assert not delivery.acknowledged, variant
        if provider == "alipay":
            assert delivery.answer == b"fail"
        else:
            assert delivery.status == 400 and b"FAIL" in delivery.answer
        stored = pay.payments.desk.order(order["order_id"])
        assert stored is not None and stored.state == "open"
    assert await pay.balance() == 0
    stats = await pay.stats()
    assert stats["rejected"][f"{provider}:bad_signature"] == 2  # the tampered body too
    if provider == "wechat":
        assert stats["rejected"]["wechat:stale_timestamp"] == 1
    assert registry.async_get_issue(DOMAIN, issue_id) is None  # not yet: only twice
    order = await pay.order("10.00", provider)
    notice = sim.payment(order["order_id"], variant="bad_signature")
    for _ in range(REJECT_REPAIR_AFTER - 2):
        assert not (await sim.replay(notice)).acknowledged
    issue = registry.async_get_issue(DOMAIN, issue_id)
    assert issue is not None and issue.translation_key == "payment_rejected"
    assert _placeholders(issue)["count"] == str(REJECT_REPAIR_AFTER)
    assert await pay.balance() == 0
    apiv3 = pay.wechat.keys.apiv3_key.decode()
    assert apiv3 not in caplog.text
    # A wrong amount is authentic: acknowledged, kept unmatched, counted, not credited.
    order = await pay.order("10.00", provider)
    [delivery] = await sim.scan(order["code"], variant="wrong_amount")
    assert delivery.acknowledged
    assert await pay.balance() == 0
    assert (await pay.stats())["rejected"][f"{provider}:amount_mismatch"] == 1


async def test_junk_posted_to_the_webhook_is_refused(
    pay: Pay, hass_client_no_auth: ClientSessionGenerator
) -> None:
    """Whatever arrives gets the provider's "no" and changes nothing."""
    client = await hass_client_no_auth()
    path = f"/api/webhook/{pay.entry.data[DATA_WEBHOOK_ID]}"
    for body, headers in (
        (b"\xff\xfe not a form", {"Content-Type": "application/x-www-form-urlencoded"}),
        (b"a=1&a=2", {}),
        (b"{", {"Wechatpay-Serial": "X", "Wechatpay-Timestamp": "1"}),
        (b"x" * 70_000, {"Content-Type": "application/json"}),
    ):
        response = await client.post(path, data=body, headers=headers)
        assert response.status in (200, 400)
        text = await response.text()
        assert text in ("fail", "") or "FAIL" in text
    assert await pay.balance() == 0
    # GET is not a provider's method.
    assert (await client.get(path)).status == 405


# ---------------------------------------------------------------------------- unmatched


async def test_a_late_payment_is_unmatched_until_resolved(pay: Pay) -> None:
    """An expired order's payment: kept, a repair naming it; credited once when resolved."""
    desk = pay.payments.desk
    with patch.object(desk, "clock", lambda: time.time() - 3600):
        order = await pay.order("25.00")  # made an hour ago: expired 45 minutes ago
    [delivery] = await pay.wechat.scan(order["code"])
    assert delivery.acknowledged  # authentic: the provider is told it arrived
    assert await pay.balance() == 0
    [kept] = desk.unmatched()
    assert (kept.reason, kept.order_id) == ("order_expired", order["order_id"])
    assert kept.amount == Decimal("25.00")
    registry = ir.async_get(pay.hass)
    issues = [
        i
        for i in registry.issues.values()
        if i.domain == DOMAIN and i.translation_key == "payment_unmatched"
    ]
    assert len(issues) == 1
    assert _placeholders(issues[0])["notice"] == kept.notice_key
    assert _placeholders(issues[0])["amount"] == "25.00"
    # A resident may not resolve it.
    resident = await _resident(pay.hass)
    with pytest.raises(Unauthorized):
        await pay.hass.services.async_call(
            DOMAIN,
            "resolve_unmatched_payment",
            {"notice": kept.notice_key, "action": "credit"},
            blocking=True,
            context=Context(user_id=resident.id),
        )
    done: Any = await pay.hass.services.async_call(
        DOMAIN,
        "resolve_unmatched_payment",
        {"notice": kept.notice_key, "action": "credit"},
        blocking=True,
        return_response=True,
    )
    assert done == {
        "notice": kept.notice_key,
        "action": "credit",
        "household": HOUSEHOLD,
        "purpose": "electricity",
        "amount": "25.00",
    }
    assert await pay.balance() == Decimal("25.00")
    assert registry.async_get_issue(DOMAIN, issues[0].issue_id) is None
    with pytest.raises(ServiceValidationError) as caught:
        await call(pay.hass, "resolve_unmatched_payment", notice=kept.notice_key, action="credit")
    assert caught.value.translation_key == "payment_not_unmatched"
    assert (await pay.wechat.replay(delivery.notification)).acknowledged
    assert await pay.balance() == Decimal("25.00")


async def test_an_unmatched_payment_dismissed_credits_nothing(pay: Pay) -> None:
    """Dismissed (refunded at the provider, say): nothing credited, the repair gone."""
    order = await pay.order("12.00", "alipay")
    [delivery] = await pay.alipay.scan(order["code"], variant="wrong_amount")
    assert delivery.acknowledged
    [kept] = pay.payments.desk.unmatched()
    assert kept.reason == "amount_mismatch"
    await call(pay.hass, "resolve_unmatched_payment", notice=kept.notice_key, action="dismiss")
    assert pay.payments.desk.unmatched() == []
    assert await pay.balance() == 0
    assert not [
        i
        for i in ir.async_get(pay.hass).issues.values()
        if i.domain == DOMAIN and i.translation_key == "payment_unmatched"
    ]


# ---------------------------------------------------------------------------- crash window


async def test_a_restart_in_the_crash_window_credits_once(pay: Pay) -> None:
    """Recorded as due, not posted (a crash): the next start posts it, once."""
    order = await pay.order("33.30", "alipay")

    async def crash(*_args: Any, **_kwargs: Any) -> None:
        raise RuntimeError("power cut")

    with patch.object(payments_module, "post_outcome", crash):
        [delivery] = await pay.alipay.scan(order["code"])
    assert delivery.answer == b"fail"  # the provider will deliver it again
    assert await pay.balance() == 0
    assert len(pay.payments.desk.pending_credits()) == 1
    with patch.object(payments_module, "post_outcome", crash):  # failing again at the start
        assert await pay.hass.config_entries.async_reload(pay.entry.entry_id)
    assert pay.entry.state is ConfigEntryState.LOADED  # the community runs regardless
    assert await pay.balance() == 0
    assert len(pay.payments.desk.pending_credits()) == 1
    assert await pay.hass.config_entries.async_reload(pay.entry.entry_id)
    await pay.hass.async_block_till_done()
    async with asyncio.timeout(10):
        await pay.entry.runtime_data.transport.wait_connected()
    assert await pay.balance() == Decimal("33.30")
    assert pay.payments.desk.pending_credits() == []
    async with asyncio.timeout(10):
        await pay.alipay.drain()  # the provider's redeliveries: acknowledged, nothing more
    assert (await pay.alipay.replay(delivery.notification)).answer == b"success"
    assert await pay.balance() == Decimal("33.30")


# ---------------------------------------------------------------------------- orders


async def _resident(hass: HomeAssistant, household: str | None = None) -> Any:
    if not [u for u in await hass.auth.async_get_users() if not u.system_generated]:
        await hass.auth.async_create_user("Owner", group_ids=["system-admin"])
    user = await hass.auth.async_create_user("resident", group_ids=["system-users"])
    if household is not None:
        await call(hass, "link_user", household=household, user_id=user.id)
    return user


async def test_orders_follow_who_asks_and_the_limits(pay: Pay) -> None:
    """A resident orders for their own household only; limits refuse with words."""
    stranger = await _resident(pay.hass)
    with pytest.raises(ServiceValidationError) as caught:
        await pay.order("10.00", context=Context(user_id=stranger.id))
    assert caught.value.translation_key == "not_your_household"
    linked = await _resident(pay.hass, HOUSEHOLD)
    order = await pay.order("10.00", context=Context(user_id=linked.id), meter_id=METER_ID)
    assert order["household"] == HOUSEHOLD
    with pytest.raises(ServiceValidationError) as caught:
        await pay.order("1000.01")
    assert caught.value.translation_key == "payment_amount_over_limit"
    assert _placeholders(caught.value)["limit"] == "1000.00"
    with pytest.raises((vol.Invalid, ServiceValidationError)):
        await pay.order("0.001")  # not a whole number of fen: the schema refuses it
    await pay.order("1000.00")
    await pay.order("1000.00", "alipay")
    with pytest.raises(ServiceValidationError) as caught:
        await pay.order("990.01")
    assert caught.value.translation_key == "payment_daily_limit"
    assert await pay.balance() == 0


async def test_an_order_the_provider_refuses_is_closed(pay: Pay) -> None:
    """The provider says no (here: a mismatched app id): a clear error, the order closed."""
    entry = pay.entry
    options = dict(entry.options[CONF_PAYMENTS])
    options["wechat_appid"] = "wx0000000000000000"
    pay.hass.config_entries.async_update_entry(
        entry, options={**entry.options, CONF_PAYMENTS: options}
    )
    await pay.hass.async_block_till_done()
    async with asyncio.timeout(10):
        await entry.runtime_data.transport.wait_connected()
    with pytest.raises(ServiceValidationError) as caught:
        await pay.order("10.00")
    assert caught.value.translation_key == "payment_provider_error"
    assert "APPID_MCHID_NOT_MATCH" in _placeholders(caught.value)["error"]
    [closed] = pay.payments.desk.orders(HOUSEHOLD)
    assert closed.state == "closed"
    await pay.alipay.stop()  # nobody answers
    with pytest.raises(ServiceValidationError) as caught:
        await pay.order("10.00", "alipay")
    assert caught.value.translation_key == "payment_provider_unreachable"


# ---------------------------------------------------------------------------- keys


async def test_a_missing_key_file_is_a_repair_and_that_provider_is_off(pay: Pay) -> None:
    """At setup a key that cannot be used leaves its provider off with a repair."""
    entry = pay.entry
    await pay.hass.async_add_executor_job(
        Path(pay.hass.config.path(KEYS, FILES["alipay_public"])).unlink
    )
    assert await pay.hass.config_entries.async_reload(entry.entry_id)
    await pay.hass.async_block_till_done()
    issue = ir.async_get(pay.hass).async_get_issue(DOMAIN, f"payment_keys_{entry.entry_id}_alipay")
    assert issue is not None and issue.translation_key == "payment_keys"
    assert _placeholders(issue)["setting"] == "alipay_public_key"
    with pytest.raises(ServiceValidationError) as caught:
        await pay.order("10.00", "alipay")
    assert caught.value.translation_key == "payment_provider_off"
    order = await pay.order("10.00", "wechat")  # the other still works
    await pay.wechat.scan(order["code"])
    assert await pay.balance() == Decimal("10.00")


def test_validate_payment_options_names_the_bad_setting(
    tmp_path: Path, provider_keys: ProviderKeys
) -> None:
    """Saving the form: a missing file, a wrong key, a bad APIv3 key, each named."""
    shutil.copytree(provider_keys.folder, tmp_path / KEYS)
    good = payment_options(provider_keys, "", "", "https://ha.example.com")

    def resolve(name: str) -> str:
        return str(tmp_path / name)

    stored = validate_payment_options(resolve, good)
    assert stored["max_payment"] == "1000.00" and stored["order_minutes"] == 15
    cases = {
        "missing": ({"alipay_public_key": f"{KEYS}/nope.pem"}, "alipay_public_key", "key_missing"),
        "public as private": (
            {"wechat_private_key": f"{KEYS}/{FILES['wechat_platform_public']}"},
            "wechat_private_key",
            "key_unreadable",
        ),
        "apiv3": (
            {"wechat_apiv3_key": f"{KEYS}/merchant.json"},
            "wechat_apiv3_key",
            "apiv3_key_invalid",
        ),
        "serial": (
            {"wechat_platform_serial": ""},
            "wechat_platform_serial",
            "platform_serial_missing",
        ),
        "id": ({"alipay_seller_id": " "}, "alipay_seller_id", "payment_id_missing"),
        "limit": ({"max_per_day": "10"}, "max_per_day", "daily_below_payment"),
        "url": ({"wechat_url": "ftp://x"}, "wechat_url", "invalid_url"),
    }
    for name, (change, field, key) in cases.items():
        with pytest.raises(PaymentSetupError) as caught:
            validate_payment_options(resolve, {**good, **change})
        assert (caught.value.field, caught.value.key) == (field, key), name
    # A provider that is off needs nothing.
    assert validate_payment_options(resolve, {"wechat": False, "alipay": False}) == {
        "wechat": False,
        "alipay": False,
    }


# ---------------------------------------------------------------------------- move-out, report


async def test_move_out_settles_and_frees_the_meter(pay: Pay, meter: TestMeter) -> None:
    """Final balances, refund due, fee arrears; the meter takes a new household."""
    hass = pay.hass
    order = await pay.order("80.00")
    await pay.wechat.scan(order["code"])
    await call(
        hass,
        "charge_fee",
        household=HOUSEHOLD,
        sub_account="parking_fee",
        amount="30",
        period="2026-11",
        transaction_id="park-1",
    )
    settled: Any = await hass.services.async_call(
        DOMAIN, "move_out", {"household": HOUSEHOLD}, blocking=True, return_response=True
    )
    assert settled is not None
    assert settled["household"] == HOUSEHOLD and settled["meters"] == [METER_ID]
    assert settled["balances"] == {
        "electricity": "80.00",
        "property_fee": "0.00",
        "parking_fee": "-30.00",
    }
    assert settled["refund_due"] == "80.00"
    assert settled["arrears"] == {"parking_fee": "30.00"}
    assert settled["broker_access_revoked"] == {METER_ID: None}  # none was handed out
    runtime = pay.entry.runtime_data
    assert runtime.community.meters[METER_ID].account_id is None
    await call(hass, "assign_meter", meter_id=METER_ID, household="b3-502", label="New tenant")
    assert runtime.community.meters[METER_ID].account_id == "b3-502"
    ledger = runtime.community.ledger
    assert await hass.async_add_executor_job(ledger.balance, "b3-502", E) == 0


async def test_payment_report_totals_equal_the_ledger(pay: Pay) -> None:
    """The month's report: per household and in total, to the cent; a CSV beside it."""
    hass = pay.hass
    runtime = pay.entry.runtime_data
    await call(
        hass, "top_up", household=HOUSEHOLD, amount="20", transaction_id="cash-1", channel="cash"
    )
    order = await pay.order("50.00", "alipay")
    await pay.alipay.scan(order["code"])
    await call(
        hass,
        "charge_fee",
        household=HOUSEHOLD,
        sub_account="property_fee",
        amount="99.99",
        period="2026-11",
        transaction_id="fee-9",
    )
    await call(
        hass,
        "pay_fee",
        household=HOUSEHOLD,
        sub_account="property_fee",
        amount="49.99",
        period="2026-11",
        transaction_id="fee-9-paid",
    )
    from datetime import datetime

    month = datetime.now(runtime.community.tariff.tz).strftime("%Y-%m")
    report: Any = await hass.services.async_call(
        DOMAIN, "payment_report", {"month": month}, blocking=True, return_response=True
    )
    assert report is not None
    [row] = report["households"]
    assert row["household"] == HOUSEHOLD
    assert row["top_ups"] == {"alipay": "50.00", "cash": "20.00"}
    assert row["fees"]["property_fee"] == "-99.99"
    assert row["payments"]["property_fee"] == "49.99"
    assert row["closing"] == {
        "electricity": "70.00",
        "property_fee": "-50.00",
        "parking_fee": "0.00",
    }
    ledger = runtime.community.ledger
    for sub in SubAccount:
        total = await hass.async_add_executor_job(ledger.total_balance, sub)
        assert Decimal(report["totals"]["closing"][sub.value]) == total
        moved = sum(
            (
                Decimal(report["totals"][group][sub.value])
                for group in ("fees", "payments", "refunds", "adjustments", "settlements")
            ),
            Decimal(0),
        )
        if sub is E:
            moved += sum((Decimal(v) for v in report["totals"]["top_ups"].values()), Decimal(0))
            moved += Decimal(report["totals"]["charges"])
        opening = Decimal(report["totals"]["opening"][sub.value])
        assert opening + moved == Decimal(report["totals"]["closing"][sub.value])
    path = Path(report["path"])
    assert path.parent == Path(hass.config.path("prepaid_meter_reports"))
    text = await hass.async_add_executor_job(path.read_text)
    rows = list(csv.DictReader(io.StringIO(text)))
    assert [r["household"] for r in rows] == [HOUSEHOLD, "TOTAL"]
    assert rows[0]["top_up_alipay"] == "50.00" and rows[1]["closing_electricity"] == "70.00"
    # An earlier month: nothing moved, the opening is the closing.
    earlier = await hass.async_add_executor_job(
        month_report, ledger, "2020-01", runtime.community.tariff.tz
    )
    assert earlier["households"][0]["closing"]["electricity"] == "0.00"
    with pytest.raises((vol.Invalid, ServiceValidationError)):
        await call(hass, "payment_report", month="2026-13")


# ---------------------------------------------------------------------------- options flow


def _form(options: dict[str, Any]) -> dict[str, Any]:
    """Shape flat payment settings like the options form (its two sections)."""
    wechat = {k: v for k, v in options.items() if k.startswith("wechat_")}
    alipay = {k: v for k, v in options.items() if k.startswith("alipay_")}
    rest = {
        k: float(v) if k.startswith("max_") else v
        for k, v in options.items()
        if k not in wechat and k not in alipay
    }
    return {**rest, "wechat_settings": wechat, "alipay_settings": alipay}


async def test_options_flow_checks_the_keys_before_saving(
    hass: HomeAssistant,
    config_entry: MockConfigEntry,
    tmp_path: Path,
    provider_keys: ProviderKeys,
) -> None:
    """The Payments step: the address to give the providers, key errors, then saved."""
    hass.config.config_dir = str(tmp_path)
    await hass.async_add_executor_job(shutil.copytree, provider_keys.folder, tmp_path / KEYS)
    assert await async_setup_component(hass, "webhook", {})
    config_entry.add_to_hass(hass)  # not set up: the step needs no running community
    flow = await hass.config_entries.options.async_init(config_entry.entry_id)
    assert "payments" in flow["menu_options"]
    form = await hass.config_entries.options.async_configure(
        flow["flow_id"], {"next_step_id": "payments"}
    )
    assert form["step_id"] == "payments" and form["errors"] == {}
    shown = _placeholders_of(form)["url"]
    assert "/api/webhook/" in shown  # Home Assistant's own address: no public one set yet
    good = payment_options(
        provider_keys,
        "http://127.0.0.1:1",
        "http://127.0.0.1:1/gateway.do",
        "https://ha.example.com",
    )
    for change, key, setting in (
        ({"alipay_public_key": f"{KEYS}/missing.pem"}, "key_missing", "alipay_public_key"),
        (
            {"wechat_private_key": f"{KEYS}/{FILES['wechat_platform_public']}"},
            "key_unreadable",
            "wechat_private_key",
        ),
        (
            {"wechat_apiv3_key": f"{KEYS}/{FILES['alipay_public']}"},
            "apiv3_key_invalid",
            "wechat_apiv3_key",
        ),
    ):
        form = await hass.config_entries.options.async_configure(
            flow["flow_id"], _form({**good, **change})
        )
        assert form["type"] == "form" and form["errors"] == {"base": key}
        assert _placeholders_of(form)["setting"] == setting
        assert DATA_WEBHOOK_ID not in config_entry.data  # nothing saved
    done = await hass.config_entries.options.async_configure(flow["flow_id"], _form(good))
    assert done["type"] == "create_entry"
    stored = config_entry.options[CONF_PAYMENTS]
    assert stored["wechat_mchid"] == good["wechat_mchid"]
    assert stored["max_payment"] == "1000.00" and stored["order_minutes"] == 15
    webhook_id = config_entry.data[DATA_WEBHOOK_ID]
    assert shown.endswith(f"/api/webhook/{webhook_id}")  # the address shown is the one kept
    assert config_entry.options["friendly_start"] == "00:00"  # the policy is untouched
    # Shown again: the stored settings, the public address with the same webhook.
    flow = await hass.config_entries.options.async_init(config_entry.entry_id)
    form = await hass.config_entries.options.async_configure(
        flow["flow_id"], {"next_step_id": "payments"}
    )
    assert _placeholders_of(form)["url"] == f"https://ha.example.com/api/webhook/{webhook_id}"


def _placeholders_of(result: Any) -> dict[str, str]:
    placeholders = result["description_placeholders"]
    assert placeholders is not None
    return dict(placeholders)


async def test_diagnostics_count_payments_without_secrets(pay: Pay) -> None:
    """Diagnostics: orders, notices and refusals counted; no key, no webhook id."""
    order = await pay.order("15.00")
    await pay.wechat.scan(order["code"])
    other = await pay.order("15.00")
    await pay.wechat.scan(other["code"], variant="bad_signature")
    found = await async_get_config_entry_diagnostics(pay.hass, pay.entry)
    payments = found["payments"]
    assert payments["providers"] == {"wechat": True, "alipay": True}
    assert payments["orders"] == {"paid": 1, "open": 1}
    assert payments["notices"] == {"done": 1}
    assert payments["rejected"] == {"wechat:bad_signature": 1}
    assert payments["refused_since_start"] == {"wechat:bad_signature": 1}
    assert found["entry"]["data"][DATA_WEBHOOK_ID] == "**REDACTED**"
    text = json.dumps(found, default=str)
    assert pay.entry.data[DATA_WEBHOOK_ID] not in text
    assert pay.wechat.keys.apiv3_key.decode() not in text
    assert "PRIVATE KEY" not in text


async def test_reports_and_move_out_are_an_operator_s(pay: Pay) -> None:
    """A resident, even of the household, may neither report nor move anyone out."""
    resident = await _resident(pay.hass, HOUSEHOLD)
    for service, data in (
        ("payment_report", {"month": "2026-11"}),
        ("move_out", {"household": HOUSEHOLD}),
    ):
        with pytest.raises(Unauthorized):
            await pay.hass.services.async_call(
                DOMAIN,
                service,
                data,
                blocking=True,
                return_response=True,
                context=Context(user_id=resident.id),
            )
    assert pay.entry.runtime_data.community.meters[METER_ID].account_id == HOUSEHOLD
