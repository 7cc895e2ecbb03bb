"""Round trips over HTTP: the local provider and a small receiver built as the adapter will be.

The receiver is an aiohttp app that verifies what the provider posts with engine/payments.py,
decides with `PaymentDesk` on a real SQLite ledger, and posts credits through a real
`CommunityService` (not started: no broker is needed to post money) with `post_outcome`. Our
orders are signed requests the provider verifies; its notifications are signed with the keys
it wrote into a folder, which the receiver loads as the integration will load its key files.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
import contextlib
from dataclasses import dataclass
from decimal import Decimal
import json
from pathlib import Path
import sys
import time
from typing import Any

from aiohttp import ClientSession, web
import pytest

from custom_components.prepaid_meter.engine import payments
from custom_components.prepaid_meter.engine.community import Community
from custom_components.prepaid_meter.engine.ledger import Ledger, SubAccount
from custom_components.prepaid_meter.engine.orders import (
    Credit,
    Order,
    PaymentDesk,
    Retry,
    Reverse,
    Unmatched,
    post_outcome,
)
from custom_components.prepaid_meter.engine.payments import (
    AlipayMerchant,
    PaymentNotice,
    PaymentRejected,
    WechatMerchant,
)
from custom_components.prepaid_meter.engine.policy import PolicyConfig
from custom_components.prepaid_meter.engine.profiles import make_profile
from custom_components.prepaid_meter.engine.service import CommunityService
from custom_components.prepaid_meter.engine.tariff import load_preset
from custom_components.prepaid_meter.engine.transport import TransportConfig
from simulator.payprovider import PayProvider, ProviderKeys

ROOT = Path(__file__).resolve().parents[2]
A = "b1-101"
B = "b1-102"
E, PF = SubAccount.ELECTRICITY, SubAccount.PROPERTY_FEE


class Clock:
    """Real time, moved by `offset` (the desk's clock only: signatures use real time)."""

    def __init__(self) -> None:
        self.offset = 0.0

    def __call__(self) -> float:
        return time.time() + self.offset


class Listener:
    def events(self, events: Any) -> None:
        pass

    def meter_changed(self, meter_id: str) -> None:
        pass

    def meter_discovered(self, meter_id: str) -> None:
        pass

    def connection(self, connected: bool, reason: str) -> None:
        pass


def wechat_merchant(keys: ProviderKeys) -> WechatMerchant:
    """Our WeChat Pay settings, from the files the provider wrote (as the options name them)."""
    info = json.loads((keys.folder / "merchant.json").read_text())["wechat"]
    return WechatMerchant(
        mchid=info["mchid"],
        appid=info["appid"],
        serial_no=info["serial_no"],
        private_key=payments.load_private_key((keys.folder / info["private_key"]).read_bytes()),
        apiv3_key=payments.load_apiv3_key((keys.folder / info["apiv3_key"]).read_bytes()),
        platform_keys={
            info["platform_serial"]: payments.load_public_key(
                (keys.folder / info["platform_public_key"]).read_bytes()
            )
        },
    )


def alipay_merchant(keys: ProviderKeys) -> AlipayMerchant:
    info = json.loads((keys.folder / "merchant.json").read_text())["alipay"]
    return AlipayMerchant(
        app_id=info["app_id"],
        seller_id=info["seller_id"],
        private_key=payments.load_private_key((keys.folder / info["private_key"]).read_bytes()),
        alipay_public_key=payments.load_public_key(
            (keys.folder / info["alipay_public_key"]).read_bytes()
        ),
    )


class Receiver:
    """Our side: the webhook, the desk, the community, one ledger file."""

    def __init__(self, path: Path, keys: ProviderKeys, clock: Clock) -> None:
        self.clock = clock
        self.ledger = Ledger(path)
        self.ledger.ensure_household(A, "Building 1, 101", 0)
        self.ledger.ensure_household(B, "Building 1, 102", 0)
        self.desk = PaymentDesk(self.ledger, clock, max_payment=Decimal(1000))
        community = Community(self.ledger, load_preset("flat"), PolicyConfig())
        community.load()
        self.service = CommunityService(
            community,
            make_profile("native", community="paytest"),
            TransportConfig(host="127.0.0.1", port=1, client_id="paytest"),
            prefix="prepaid",
            community_id="paytest",
            currency="CNY",
            listener=Listener(),
        )
        self.wechat = wechat_merchant(keys)
        self.alipay = alipay_merchant(keys)
        self.outcomes: list[object] = []
        self.rejected: list[str] = []
        self.url = ""
        self._runner: web.AppRunner | None = None

    async def start(self, port: int = 0) -> None:
        app = web.Application()
        app.router.add_post("/notify/wechat", self._wechat)
        app.router.add_post("/notify/alipay", self._alipay)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", port)
        await site.start()
        self.url = f"http://127.0.0.1:{self._runner.addresses[0][1]}"
        # At start, what a crash left due is posted first.
        for outcome in await self._blocking(self.desk.pending_credits):
            await post_outcome(self.service, self.desk, outcome)

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
        self.ledger.close()

    async def _blocking(self, func: Callable[..., Any], *args: Any) -> Any:
        return await asyncio.get_running_loop().run_in_executor(None, func, *args)

    async def _handle(self, provider: str, read: Callable[[], Any]) -> bool:
        """Verify, decide, post; return whether to acknowledge."""
        try:
            notice = read()
        except PaymentRejected as err:
            self.rejected.append(err.key)
            await self._blocking(self.desk.reject, provider, err.key)
            return False
        if not isinstance(notice, PaymentNotice):
            return True  # Ignored: authentic, nothing to do
        outcome = await self._blocking(self.desk.handle, notice)
        self.outcomes.append(outcome)
        if isinstance(outcome, Credit | Reverse):
            await post_outcome(self.service, self.desk, outcome)
        return not isinstance(outcome, Retry)

    async def _wechat(self, request: web.Request) -> web.Response:
        body = await request.read()
        ok = await self._handle(
            "wechat",
            lambda: payments.wechat_notification(self.wechat, request.headers, body, time.time()),
        )
        status, answer = payments.wechat_answer(ok, "" if ok else "refused")
        return web.Response(status=status, body=answer or None)

    async def _alipay(self, request: web.Request) -> web.Response:
        body = await request.read()
        ok = await self._handle(
            "alipay",
            lambda: payments.alipay_notification(self.alipay, payments.parse_alipay_form(body)),
        )
        status, answer = payments.alipay_answer(ok)
        return web.Response(status=status, body=answer)

    # ------------------------------------------------------------------ ordering

    async def order(
        self,
        provider: PayProvider,
        account_id: str,
        amount: str,
        purpose: str = "electricity",
        merchant: WechatMerchant | AlipayMerchant | None = None,
    ) -> tuple[Order, str]:
        """Make an order and ask the provider for its code, as the integration will."""
        order = await self._blocking(
            self.desk.create_order, account_id, Decimal(amount), purpose, provider.provider
        )
        notify = f"{self.url}/notify/{provider.provider}"
        async with ClientSession() as session:
            if provider.provider == "wechat":
                wechat = merchant if isinstance(merchant, WechatMerchant) else self.wechat
                request = payments.wechat_native_request(
                    wechat,
                    order_id=order.order_id,
                    amount=order.amount,
                    description=f"电费 {account_id}",
                    notify_url=notify,
                    expires_at=order.expires_at,
                    now=time.time(),
                    base_url=provider.url,
                )
                async with session.post(
                    request.url, data=request.body, headers=dict(request.headers)
                ) as response:
                    code = payments.wechat_native_response(
                        self.wechat,
                        response.status,
                        response.headers,
                        await response.read(),
                        time.time(),
                    )
            else:
                alipay = merchant if isinstance(merchant, AlipayMerchant) else self.alipay
                request = payments.alipay_precreate_request(
                    alipay,
                    order_id=order.order_id,
                    amount=order.amount,
                    subject=f"物业费 {account_id}",
                    notify_url=notify,
                    now=time.time(),
                    gateway=provider.url + "/gateway.do",
                )
                async with session.post(
                    request.url, data=request.body, headers=dict(request.headers)
                ) as response:
                    code = payments.alipay_precreate_response(
                        self.alipay, order.order_id, await response.read()
                    )
        await self._blocking(self.desk.set_code, order.order_id, code)
        return order, code

    def balance(self, account_id: str, sub: SubAccount = E) -> Decimal:
        return self.ledger.balance(account_id, sub)


@dataclass
class World:
    keys: ProviderKeys
    path: Path
    clock: Clock
    wechat: PayProvider
    alipay: PayProvider
    receiver: Receiver

    async def restart(self) -> Receiver:
        """Stop our side and start it again from the same ledger file."""
        port = int(self.receiver.url.rsplit(":", 1)[1])
        await self.receiver.stop()
        self.receiver = Receiver(self.path, self.keys, self.clock)
        await self.receiver.start(port)  # the notify URL the orders named
        return self.receiver


@pytest.fixture(scope="module")
def keys(tmp_path_factory: pytest.TempPathFactory) -> ProviderKeys:
    return ProviderKeys.load_or_create(tmp_path_factory.mktemp("paykeys"))


@pytest.fixture
async def world(tmp_path: Path, keys: ProviderKeys, socket_enabled: None) -> AsyncIterator[World]:
    clock = Clock()
    path = tmp_path / "community.sqlite3"
    receiver = Receiver(path, keys, clock)
    await receiver.start()
    wechat = PayProvider("wechat", keys, retry_delays=(0.2, 0.4))
    alipay = PayProvider("alipay", keys, retry_delays=(0.2, 0.4))
    await wechat.start()
    await alipay.start()
    found = World(keys, path, clock, wechat, alipay, receiver)
    try:
        yield found
    finally:
        await wechat.stop()
        await alipay.stop()
        await found.receiver.stop()


async def test_wechat_payment_credits_once_also_after_a_restart(world: World) -> None:
    receiver = world.receiver
    order, code = await receiver.order(world.wechat, A, "50.00")
    assert code.startswith("weixin://wxpay/bizpayurl?pr=")
    deliveries = await world.wechat.scan(code, times=3)  # delivered three times
    assert [d.status for d in deliveries] == [204, 204, 204]
    assert receiver.balance(A) == Decimal("50.00")
    assert sum(isinstance(o, Credit) for o in receiver.outcomes) == 1
    receiver = await world.restart()
    again = await world.wechat.replay(deliveries[0].notification)
    assert again.acknowledged
    assert receiver.balance(A) == Decimal("50.00")
    assert receiver.ledger.check_invariant() == []
    paid = receiver.desk.order(order.order_id)
    assert paid is not None and paid.state == "paid" and paid.code == code
    # A refund of part of it.
    refund = await world.wechat.refund(order.order_id, Decimal("20.00"))
    assert refund.acknowledged
    assert receiver.balance(A) == Decimal("30.00")
    await world.wechat.replay(refund.notification)
    assert receiver.balance(A) == Decimal("30.00")


async def test_alipay_fee_payment_pays_the_fee(world: World) -> None:
    receiver = world.receiver
    order, code = await receiver.order(world.alipay, B, "120.50", "property_fee")
    assert code.startswith("https://qr.alipay.com/")
    deliveries = await world.alipay.scan(code, times=2)
    assert all(d.answer == b"success" for d in deliveries)
    assert receiver.balance(B, PF) == Decimal("120.50")
    assert receiver.balance(B, E) == 0
    # Two refunds; the provider reports the total refunded so far each time.
    first = await world.alipay.refund(order.order_id, Decimal("20.50"))
    second = await world.alipay.refund(order.order_id)
    assert first.acknowledged and second.acknowledged
    await world.alipay.replay(first.notification)
    assert receiver.balance(B, PF) == 0
    assert receiver.ledger.check_invariant() == []


@pytest.mark.parametrize("provider", ["wechat", "alipay"])
async def test_bad_notifications_write_nothing(world: World, provider: str) -> None:
    receiver = world.receiver
    sim = world.wechat if provider == "wechat" else world.alipay
    variants = ["bad_signature", "tampered"] + (["stale"] if provider == "wechat" else [])
    for variant in variants:
        order, code = await receiver.order(sim, A, "10.00")
        [delivery] = await sim.scan(code, variant=variant)
        assert not delivery.acknowledged, variant
        assert receiver.desk.order(order.order_id).state == "open"  # type: ignore[union-attr]
    assert receiver.balance(A) == 0
    wanted = {"bad_signature", "stale_timestamp"} if provider == "wechat" else {"bad_signature"}
    assert wanted <= set(receiver.rejected)
    rejected = receiver.desk.stats()["rejected"]
    assert rejected[f"{provider}:bad_signature"] >= 2  # the tampered body too
    # A wrong amount is authentic: acknowledged, kept unmatched, not credited.
    order, code = await receiver.order(sim, A, "10.00")
    [delivery] = await sim.scan(code, variant="wrong_amount")
    assert delivery.acknowledged
    assert receiver.balance(A) == 0
    [kept] = [n for n in receiver.desk.unmatched() if n.order_id == order.order_id]
    assert (kept.reason, kept.amount) == ("amount_mismatch", Decimal("10.01"))
    assert receiver.desk.stats()["rejected"][f"{provider}:amount_mismatch"] == 1


async def test_a_late_payment_of_an_expired_order_is_unmatched(world: World) -> None:
    receiver = world.receiver
    world.clock.offset = -1_000  # the order was made 1,000 s ago: expired 100 s ago
    order, code = await receiver.order(world.wechat, A, "25.00")
    world.clock.offset = 0
    [delivery] = await world.wechat.scan(code)
    assert delivery.acknowledged
    assert receiver.balance(A) == 0
    assert [type(o) for o in receiver.outcomes] == [Unmatched]
    assert [n.order_id for n in receiver.desk.unmatched()] == [order.order_id]


async def test_a_refund_sent_before_its_payment_is_redelivered_and_reversed(
    world: World,
) -> None:
    receiver = world.receiver
    order, _ = await receiver.order(world.wechat, A, "40.00")
    payment = world.wechat.payment(order.order_id)
    refund = world.wechat.refund_notice(order.order_id, Decimal("15.00"))
    early = await world.wechat.deliver(refund)  # reordered: the refund first
    assert not early.acknowledged
    assert isinstance(receiver.outcomes[-1], Retry)
    assert (await world.wechat.deliver(payment)).acknowledged
    async with asyncio.timeout(10):
        await world.wechat.drain()  # the provider delivers the refund again
    assert receiver.balance(A) == Decimal("25.00")
    assert [type(o) for o in receiver.outcomes] == [Retry, Credit, Reverse]


async def test_the_provider_refuses_a_request_we_did_not_sign(
    world: World, keys: ProviderKeys
) -> None:
    receiver = world.receiver
    other = payments.load_private_key(
        (keys.folder / "provider_alipay_key.pem").read_bytes()  # any other RSA key
    )
    wechat = wechat_merchant(keys)
    forged_wechat = WechatMerchant(
        wechat.mchid, wechat.appid, wechat.serial_no, other, wechat.apiv3_key, wechat.platform_keys
    )
    with pytest.raises(PaymentRejected) as caught:
        await receiver.order(world.wechat, A, "1.00", merchant=forged_wechat)
    assert caught.value.key == "provider_error" and "SIGN_ERROR" in caught.value.message
    alipay = alipay_merchant(keys)
    forged_alipay = AlipayMerchant(alipay.app_id, alipay.seller_id, other, alipay.alipay_public_key)
    with pytest.raises(PaymentRejected) as caught:
        await receiver.order(world.alipay, A, "1.00", merchant=forged_alipay)
    assert caught.value.key == "provider_error" and "invalid-signature" in caught.value.message
    assert world.wechat.requests_refused == ["SIGN_ERROR"]
    assert world.alipay.orders == {}


async def test_keys_are_reused_from_their_folder(keys: ProviderKeys) -> None:
    again = ProviderKeys.load_or_create(keys.folder)
    assert again.merchant_info() == keys.merchant_info()
    assert again.apiv3_key == keys.apiv3_key
    assert str(keys.apiv3_key) not in repr(keys)


async def test_the_command_line_serves_and_pays(world: World, tmp_path: Path) -> None:
    """`python -m simulator pay` serves; `--provider-url --scan` pays the order of a code."""
    receiver = world.receiver
    server = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "simulator",
        "pay",
        "--provider",
        "wechat",
        "--port",
        "0",
        "--keys",
        str(world.keys.folder),
        "--notify-url",
        f"{receiver.url}/notify/wechat",
        cwd=ROOT,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        assert server.stdout is not None
        async with asyncio.timeout(30):
            started = json.loads(await server.stdout.readline())
        provider = PayProvider("wechat", world.keys)
        provider.port = int(started["url"].rsplit(":", 1)[1])
        order, code = await receiver.order(provider, A, "8.80")
        client = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "simulator",
            "pay",
            "--provider-url",
            started["url"],
            "--scan",
            code,
            "--times",
            "2",
            cwd=ROOT,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        async with asyncio.timeout(30):
            out, err = await client.communicate()
        assert client.returncode == 0, err
        deliveries = json.loads(out)
        assert [d["acknowledged"] for d in deliveries] == [True, True]
        assert receiver.balance(A) == Decimal("8.80")
        # A bad request is one clear line and status 1.
        bad = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "simulator",
            "pay",
            "--provider-url",
            started["url"],
            "--order",
            "NOSUCHORDER",
            cwd=ROOT,
            stderr=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
        )
        async with asyncio.timeout(30):
            _, err = await bad.communicate()
        assert bad.returncode == 1 and b"NOSUCHORDER" in err
    finally:
        with contextlib.suppress(ProcessLookupError):
            server.terminate()
        async with asyncio.timeout(20):
            await server.wait()
    assert order.order_id
