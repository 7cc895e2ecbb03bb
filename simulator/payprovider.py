"""A local payment provider: WeChat Pay API v3 and Alipay, as they talk, with keys of its own.

It plays the provider's side, written from the providers' documented formats (it does not use
the integration's `engine/payments.py`, so a mistake there is caught here, not mirrored):

- it generates the keys both sides need (RSA 2048: our WeChat Pay merchant key, WeChat Pay's
  platform key, our Alipay application key, Alipay's key; a random APIv3 key) and writes them
  as PEM files into a folder (`ProviderKeys`, `merchant.json` names the ids and files), reused
  when the folder has them;
- it accepts our signed order requests, `POST /v3/pay/transactions/native` and
  `alipay.trade.precreate` on `POST /gateway.do`, verifies our signature and answers, signed,
  with a `code_url` / `qr_code` that carries the order id;
- `pay(order_id)` (or `scan(code)`: what a phone scanning the QR code does) posts the signed
  payment notification to the order's notify URL; on demand it replays one, sends notices in
  another order, signs with a wrong key, sends a stale timestamp, a wrong amount, a tampered
  body, or a refund. A notification the receiver does not acknowledge is delivered again after
  each of `retry_delays`, as the providers do (they wait minutes; the default here, seconds).

`python -m simulator pay --provider wechat --notify-url URL` runs it; `--provider-url URL
--scan CODE` asks a running one to pay (see `main`). Control over HTTP: `POST /sim/scan`
`{"code" | "order_id", "variant", "times", "amount"}`, `POST /sim/refund` `{"order_id",
"amount"}`, `GET /sim/orders`, `GET /sim/keys`, `GET /sim/bill?day=YYYY-MM-DD` (the day's trade
bill file in the provider's format, see `statement`; `--bill DAY --out FILE` on the command line).
"""

from __future__ import annotations

import argparse
import asyncio
import base64
from collections.abc import Mapping, Sequence
import contextlib
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta, timezone
from decimal import Decimal
import json
import logging
from pathlib import Path
import re
import secrets
import signal
import sys
import time
from typing import Any, Final, Literal
from urllib.parse import parse_qsl, urlencode

from aiohttp import ClientSession, ClientTimeout, web
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

_LOGGER = logging.getLogger(__name__)

type ProviderName = Literal["wechat", "alipay"]
type Variant = Literal["ok", "bad_signature", "stale", "wrong_amount", "tampered"]
VARIANTS: Final[tuple[str, ...]] = ("ok", "bad_signature", "stale", "wrong_amount", "tampered")

CST: Final = timezone(timedelta(hours=8))
_CENT: Final = Decimal("0.01")
_YUAN: Final = re.compile(r"[0-9]{1,9}(\.[0-9]{1,2})?")
_WECHAT_ORDER_NO: Final = re.compile(r"[A-Za-z0-9_\-|*]{6,32}")
_ALIPAY_ORDER_NO: Final = re.compile(r"[A-Za-z0-9_]{1,64}")
_AUTH: Final = re.compile(r'(\w+)="([^"]*)"')
WECHAT_CODE_PREFIX: Final = "weixin://wxpay/bizpayurl?pr="
ALIPAY_CODE_PREFIX: Final = "https://qr.alipay.com/sim-"


def _sign(key: rsa.RSAPrivateKey, message: bytes) -> str:
    return base64.b64encode(key.sign(message, padding.PKCS1v15(), hashes.SHA256())).decode()


def _verifies(key: rsa.RSAPublicKey, message: bytes, signature: str) -> bool:
    try:
        key.verify(
            base64.b64decode(signature, validate=True), message, padding.PKCS1v15(), hashes.SHA256()
        )
    except (InvalidSignature, ValueError):
        return False
    return True


def _new_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def _private_pem(key: rsa.RSAPrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def _public_pem(key: rsa.RSAPrivateKey) -> bytes:
    return key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def _load_private(path: Path) -> rsa.RSAPrivateKey:
    key = serialization.load_pem_private_key(path.read_bytes(), password=None)
    if not isinstance(key, rsa.RSAPrivateKey):
        raise ValueError(f"{path} is not an RSA private key")
    return key


def _digits(count: int) -> str:
    return "".join(secrets.choice("0123456789") for _ in range(count))


# ---------------------------------------------------------------------------- keys


#: The files `ProviderKeys` writes. Ours (the merchant's side) and the provider's own.
FILES: Final = {
    "wechat_merchant_key": "wechat_apiclient_key.pem",  # our merchant private key
    "wechat_platform_public": "wechatpay_platform_public.pem",  # WeChat Pay's public key
    "wechat_apiv3_key": "wechat_apiv3_key.txt",
    "alipay_app_private": "alipay_app_private_key.pem",  # our application private key
    "alipay_public": "alipay_public_key.pem",  # Alipay's public key
    "provider_wechat_platform": "provider_wechatpay_platform_key.pem",  # the simulator's own
    "provider_alipay": "provider_alipay_key.pem",  # the simulator's own
}


@dataclass(frozen=True)
class ProviderKeys:
    """Both sides' keys and ids, in a folder of PEM files (see FILES and merchant.json)."""

    folder: Path
    mchid: str
    appid: str
    merchant_serial: str
    platform_serial: str
    app_id: str
    seller_id: str
    merchant_key: rsa.RSAPrivateKey = field(repr=False)
    platform_key: rsa.RSAPrivateKey = field(repr=False)
    apiv3_key: bytes = field(repr=False)
    app_key: rsa.RSAPrivateKey = field(repr=False)
    alipay_key: rsa.RSAPrivateKey = field(repr=False)

    @classmethod
    def load_or_create(cls, folder: Path) -> ProviderKeys:
        """Read the keys in `folder`, or make and write them there (files mode 0600)."""
        folder.mkdir(parents=True, exist_ok=True)
        ids_file = folder / "merchant.json"
        if ids_file.exists() and all((folder / name).exists() for name in FILES.values()):
            ids = json.loads(ids_file.read_text())
            return cls(
                folder=folder,
                mchid=ids["wechat"]["mchid"],
                appid=ids["wechat"]["appid"],
                merchant_serial=ids["wechat"]["serial_no"],
                platform_serial=ids["wechat"]["platform_serial"],
                app_id=ids["alipay"]["app_id"],
                seller_id=ids["alipay"]["seller_id"],
                merchant_key=_load_private(folder / FILES["wechat_merchant_key"]),
                platform_key=_load_private(folder / FILES["provider_wechat_platform"]),
                apiv3_key=(folder / FILES["wechat_apiv3_key"]).read_bytes().strip(),
                app_key=_load_private(folder / FILES["alipay_app_private"]),
                alipay_key=_load_private(folder / FILES["provider_alipay"]),
            )
        keys = cls(
            folder=folder,
            mchid="19" + _digits(8),
            appid="wx" + secrets.token_hex(8),
            merchant_serial=secrets.token_hex(20).upper(),
            platform_serial=secrets.token_hex(20).upper(),
            app_id="2021" + _digits(12),
            seller_id="2088" + _digits(12),
            merchant_key=_new_key(),
            platform_key=_new_key(),
            apiv3_key=secrets.token_urlsafe(24)[:32].encode(),
            app_key=_new_key(),
            alipay_key=_new_key(),
        )
        keys._write()
        return keys

    def _write(self) -> None:
        contents = {
            "wechat_merchant_key": _private_pem(self.merchant_key),
            "wechat_platform_public": _public_pem(self.platform_key),
            "wechat_apiv3_key": self.apiv3_key + b"\n",
            "alipay_app_private": _private_pem(self.app_key),
            "alipay_public": _public_pem(self.alipay_key),
            "provider_wechat_platform": _private_pem(self.platform_key),
            "provider_alipay": _private_pem(self.alipay_key),
        }
        for what, data in contents.items():
            path = self.folder / FILES[what]
            path.touch(mode=0o600)
            path.write_bytes(data)
        (self.folder / "merchant.json").write_text(json.dumps(self.merchant_info(), indent=2))

    def merchant_info(self) -> dict[str, Any]:
        """Return what our side is configured with: ids and the names of its key files."""
        return {
            "wechat": {
                "mchid": self.mchid,
                "appid": self.appid,
                "serial_no": self.merchant_serial,
                "platform_serial": self.platform_serial,
                "private_key": FILES["wechat_merchant_key"],
                "platform_public_key": FILES["wechat_platform_public"],
                "apiv3_key": FILES["wechat_apiv3_key"],
            },
            "alipay": {
                "app_id": self.app_id,
                "seller_id": self.seller_id,
                "private_key": FILES["alipay_app_private"],
                "alipay_public_key": FILES["alipay_public"],
            },
        }

    def path(self, what: str) -> Path:
        """Return the path of one of FILES."""
        return self.folder / FILES[what]


# ---------------------------------------------------------------------------- state


@dataclass
class SimOrder:
    """An order as the provider knows it."""

    provider: ProviderName
    order_id: str
    amount: Decimal
    notify_url: str
    subject: str
    code: str
    transaction_id: str = ""
    paid: bool = False
    refunded: Decimal = Decimal(0)
    refunds: int = 0
    paid_at: float = 0.0  # when it was paid (the provider's clock)
    #: Each refund: the provider's refund id, our refund number, the amount, when.
    refund_log: list[tuple[str, str, Decimal, float]] = field(default_factory=list)


@dataclass(frozen=True)
class Notification:
    """A notification ready to post: what the provider sends, byte for byte."""

    provider: ProviderName
    kind: Literal["paid", "refund"]
    order_id: str
    url: str
    headers: Mapping[str, str]
    body: bytes


@dataclass(frozen=True)
class Delivery:
    """One delivery of a notification and the receiver's answer."""

    notification: Notification
    status: int  # 0: no answer (connection failed)
    answer: bytes
    attempt: int

    @property
    def acknowledged(self) -> bool:
        """Return whether the receiver took it, by the provider's rule."""
        if self.notification.provider == "wechat":
            return 200 <= self.status < 300
        return self.status == 200 and self.answer.strip() == b"success"

    def as_dict(self) -> dict[str, Any]:
        """Return it as JSON-able data."""
        return {
            "kind": self.notification.kind,
            "order_id": self.notification.order_id,
            "status": self.status,
            "answer": self.answer.decode("utf-8", "replace")[:500],
            "acknowledged": self.acknowledged,
            "attempt": self.attempt,
        }


class PayProviderError(Exception):
    """A request the simulator cannot do (unknown order, nothing to refund)."""


# ---------------------------------------------------------------------------- the provider


class PayProvider:
    """One provider (WeChat Pay or Alipay) on a local HTTP port."""

    def __init__(
        self,
        provider: ProviderName,
        keys: ProviderKeys,
        *,
        notify_url: str | None = None,
        host: str = "127.0.0.1",
        port: int = 0,
        retry_delays: Sequence[float] = (0.5, 1.0, 2.0),
        clock: Any = time.time,
    ) -> None:
        """Bind the keys; `start` listens. `notify_url` is used for orders that name none."""
        if provider not in ("wechat", "alipay"):
            raise ValueError(f"Unknown provider {provider!r}: wechat or alipay")
        self.provider: ProviderName = provider
        self.keys = keys
        self.notify_url = notify_url
        self.host = host
        self.port = port
        self.retry_delays = tuple(retry_delays)
        self.clock = clock
        self.orders: dict[str, SimOrder] = {}
        self.deliveries: list[Delivery] = []
        self.requests_refused: list[str] = []
        self._runner: web.AppRunner | None = None
        self._session: ClientSession | None = None
        self._retries: set[asyncio.Task[None]] = set()
        self._wrong_key = _new_key()

    # ------------------------------------------------------------------ life cycle

    @property
    def url(self) -> str:
        """Return the base URL (after `start`)."""
        return f"http://{self.host}:{self.port}"

    async def start(self) -> None:
        """Listen (port 0: any free port, then `port` says which)."""
        app = web.Application(client_max_size=65_536)
        app.router.add_post("/v3/pay/transactions/native", self._wechat_native)
        app.router.add_post("/gateway.do", self._alipay_gateway)
        app.router.add_post("/sim/scan", self._control_scan)
        app.router.add_post("/sim/refund", self._control_refund)
        app.router.add_get("/sim/orders", self._control_orders)
        app.router.add_get("/sim/keys", self._control_keys)
        app.router.add_get("/sim/bill", self._control_bill)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.host, self.port)
        await site.start()
        self.port = int(self._runner.addresses[0][1])  # port 0: the one bound
        self._session = ClientSession(timeout=ClientTimeout(total=10))

    async def stop(self) -> None:
        """Stop retrying, close the client and the server."""
        for task in list(self._retries):
            task.cancel()
        for task in list(self._retries):
            with contextlib.suppress(asyncio.CancelledError):
                await task
        if self._session is not None:
            await self._session.close()
            self._session = None
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def __aenter__(self) -> PayProvider:
        """Start."""
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        """Stop."""
        await self.stop()

    async def drain(self) -> None:
        """Wait until every pending redelivery has run (wrap it in `asyncio.timeout`)."""
        while self._retries:
            await asyncio.gather(*list(self._retries), return_exceptions=True)

    # ------------------------------------------------------------------ paying

    def order_for_code(self, code: str) -> SimOrder:
        """Return the order a QR code (code_url / qr_code) is for."""
        for order in self.orders.values():
            if order.code == code:
                return order
        raise PayProviderError(f"No order has the code {code[:80]!r}")

    def _order(self, order_id: str) -> SimOrder:
        order = self.orders.get(order_id)
        if order is None:
            raise PayProviderError(f"No order {order_id!r} was placed with {self.provider}")
        return order

    def payment(
        self, order_id: str, *, variant: Variant = "ok", amount: Decimal | None = None
    ) -> Notification:
        """Pay an order (once: its transaction id stays) and return the signed notification."""
        order = self._order(order_id)
        if not order.transaction_id:
            order.transaction_id = self._transaction_id()
        if not order.paid:
            order.paid_at = self.clock()
        order.paid = True
        paid = amount if amount is not None else order.amount
        if variant == "wrong_amount" and amount is None:
            paid = order.amount + _CENT
        if self.provider == "wechat":
            data = self._wechat_transaction(order, paid)
            return self._wechat_notification(order, "paid", data, "transaction", variant)
        form = self._alipay_trade(order, paid)
        form.update(
            {
                "trade_status": "TRADE_SUCCESS",
                "gmt_payment": self._cst(self.clock()),
                "receipt_amount": f"{paid}",
                "buyer_pay_amount": f"{paid}",
            }
        )
        return self._alipay_notification(order, "paid", form, variant)

    def refund_notice(self, order_id: str, amount: Decimal | None = None) -> Notification:
        """Refund part or all of what is left of a paid order; return the signed notification."""
        order = self._order(order_id)
        if not order.paid:
            raise PayProviderError(f"Order {order_id} is not paid: nothing to refund")
        left = order.amount - order.refunded
        amount = left if amount is None else amount
        if amount <= 0 or amount > left:
            raise PayProviderError(f"Cannot refund {amount} of order {order_id}: {left} is left")
        order.refunded += amount
        order.refunds += 1
        refund_id = "50" + _digits(27) if self.provider == "wechat" else ""
        out_no = (
            f"R{order.order_id}{order.refunds}"
            if self.provider == "wechat"
            else f"RF{order.order_id}{order.refunds}"
        )
        order.refund_log.append((refund_id or out_no, out_no, amount, self.clock()))
        if self.provider == "wechat":
            data = {
                "mchid": self.keys.mchid,
                "out_trade_no": order.order_id,
                "transaction_id": order.transaction_id,
                "out_refund_no": out_no,
                "refund_id": refund_id,
                "refund_status": "SUCCESS",
                "success_time": self._rfc3339(self.clock()),
                "user_received_account": "支付用户零钱",
                "amount": {
                    "total": int(order.amount * 100),
                    "refund": int(amount * 100),
                    "payer_total": int(order.amount * 100),
                    "payer_refund": int(amount * 100),
                },
            }
            return self._wechat_notification(order, "refund", data, "refund", "ok")
        form = self._alipay_trade(order, order.amount)
        full = order.refunded == order.amount
        form.update(
            {
                "trade_status": "TRADE_CLOSED" if full else "TRADE_SUCCESS",
                "refund_fee": f"{order.refunded}",  # the total refunded so far
                "gmt_refund": self._cst(self.clock()) + ".000",
                "out_biz_no": out_no,
            }
        )
        if full:
            form["gmt_close"] = self._cst(self.clock())
        return self._alipay_notification(order, "refund", form, "ok")

    async def pay(
        self,
        order_id: str,
        *,
        variant: Variant = "ok",
        times: int = 1,
        amount: Decimal | None = None,
    ) -> list[Delivery]:
        """Pay an order and post its notification `times` times (the same bytes each time)."""
        notification = self.payment(order_id, variant=variant, amount=amount)
        # Only an authentic notification is delivered again when not acknowledged (a
        # redelivery is signed anew, which would mend a deliberately broken one).
        authentic = variant in ("ok", "wrong_amount")
        return [
            await self.deliver(notification, retry=authentic and i == 0)
            for i in range(max(1, times))
        ]

    async def scan(self, code: str, **options: Any) -> list[Delivery]:
        """Pay the order a QR code is for (what scanning it and paying does)."""
        return await self.pay(self.order_for_code(code).order_id, **options)

    async def refund(self, order_id: str, amount: Decimal | None = None) -> Delivery:
        """Refund an order and post the refund notification."""
        return await self.deliver(self.refund_notice(order_id, amount))

    async def replay(self, notification: Notification) -> Delivery:
        """Post a notification again, byte for byte (no retries)."""
        return await self.deliver(notification, retry=False)

    async def deliver(self, notification: Notification, *, retry: bool = True) -> Delivery:
        """Post a notification; if not acknowledged, deliver it again later (`retry_delays`)."""
        delivery = await self._post(notification, 1)
        if retry and not delivery.acknowledged and self.retry_delays:
            task = asyncio.create_task(self._redeliver(notification))
            self._retries.add(task)
            task.add_done_callback(self._retries.discard)
        return delivery

    async def _redeliver(self, notification: Notification) -> None:
        for attempt, delay in enumerate(self.retry_delays, start=2):
            await asyncio.sleep(delay)
            if self.provider == "wechat":
                notification = self._resign_wechat(notification)
            if (await self._post(notification, attempt)).acknowledged:
                return

    async def _post(self, notification: Notification, attempt: int) -> Delivery:
        if self._session is None:
            raise PayProviderError("The provider is not started")
        try:
            async with self._session.post(
                notification.url, data=notification.body, headers=dict(notification.headers)
            ) as response:
                delivery = Delivery(notification, response.status, await response.read(), attempt)
        except (OSError, TimeoutError) as err:
            _LOGGER.warning("Notification to %s failed: %s", notification.url, err)
            delivery = Delivery(notification, 0, str(err).encode(), attempt)
        self.deliveries.append(delivery)
        return delivery

    # ------------------------------------------------------------------ the formats

    def _transaction_id(self) -> str:
        if self.provider == "wechat":
            return "4200" + _digits(24)
        return datetime.fromtimestamp(self.clock(), CST).strftime("%Y%m%d") + "22001" + _digits(15)

    @staticmethod
    def _rfc3339(ts: float) -> str:
        return datetime.fromtimestamp(ts, CST).isoformat(timespec="seconds")

    @staticmethod
    def _cst(ts: float) -> str:
        return datetime.fromtimestamp(ts, CST).strftime("%Y-%m-%d %H:%M:%S")

    def _wechat_transaction(self, order: SimOrder, paid: Decimal) -> dict[str, Any]:
        fen = int(paid * 100)
        return {
            "mchid": self.keys.mchid,
            "appid": self.keys.appid,
            "out_trade_no": order.order_id,
            "transaction_id": order.transaction_id,
            "trade_type": "NATIVE",
            "trade_state": "SUCCESS",
            "trade_state_desc": "支付成功",
            "bank_type": "OTHERS",
            "attach": "",
            "success_time": self._rfc3339(self.clock()),
            "payer": {"openid": "o" + secrets.token_urlsafe(20)},
            "amount": {
                "total": fen,
                "payer_total": fen,
                "currency": "CNY",
                "payer_currency": "CNY",
            },
        }

    def _wechat_notification(
        self,
        order: SimOrder,
        kind: Literal["paid", "refund"],
        data: Mapping[str, Any],
        original_type: str,
        variant: Variant,
    ) -> Notification:
        nonce = secrets.token_urlsafe(9)[:12]
        plain = json.dumps(data, ensure_ascii=False).encode()
        ciphertext = AESGCM(self.keys.apiv3_key).encrypt(
            nonce.encode(), plain, original_type.encode()
        )
        body = json.dumps(
            {
                "id": "EV-" + _digits(19),
                "create_time": self._rfc3339(self.clock()),
                "resource_type": "encrypt-resource",
                "event_type": "TRANSACTION.SUCCESS" if kind == "paid" else "REFUND.SUCCESS",
                "summary": "支付成功" if kind == "paid" else "退款成功",
                "resource": {
                    "original_type": original_type,
                    "algorithm": "AEAD_AES_256_GCM",
                    "ciphertext": base64.b64encode(ciphertext).decode(),
                    "associated_data": original_type,
                    "nonce": nonce,
                },
            },
            ensure_ascii=False,
        ).encode()
        timestamp = int(self.clock()) - (600 if variant == "stale" else 0)
        headers = self._wechat_headers(body, timestamp, variant)
        if variant == "tampered":
            body = body.replace(b'"encrypt-resource"', b'"encrypt-resourcE"')
        return Notification(
            "wechat",
            kind,
            order.order_id,
            order.notify_url,
            {**headers, "Content-Type": "application/json"},
            body,
        )

    def _wechat_headers(
        self, body: bytes, timestamp: int, variant: Variant = "ok"
    ) -> dict[str, str]:
        nonce = secrets.token_hex(16).upper()
        key = self._wrong_key if variant == "bad_signature" else self.keys.platform_key
        return {
            "Wechatpay-Serial": self.keys.platform_serial,
            "Wechatpay-Timestamp": str(timestamp),
            "Wechatpay-Nonce": nonce,
            "Wechatpay-Signature": _sign(key, f"{timestamp}\n{nonce}\n".encode() + body + b"\n"),
            "Wechatpay-Signature-Type": "WECHATPAY2-SHA256-RSA2048",
            "Request-ID": secrets.token_hex(16),
        }

    def _resign_wechat(self, notification: Notification) -> Notification:
        """WeChat Pay signs each delivery anew (a fresh timestamp and nonce)."""
        headers = {
            **notification.headers,
            **self._wechat_headers(notification.body, int(self.clock())),
        }
        return Notification(
            notification.provider,
            notification.kind,
            notification.order_id,
            notification.url,
            headers,
            notification.body,
        )

    def _alipay_trade(self, order: SimOrder, total: Decimal) -> dict[str, str]:
        now = self.clock()
        return {
            "notify_time": self._cst(now),
            "notify_type": "trade_status_sync",
            "notify_id": secrets.token_hex(16),
            "charset": "utf-8",
            "version": "1.0",
            "sign_type": "RSA2",
            "app_id": self.keys.app_id,
            "auth_app_id": self.keys.app_id,
            "seller_id": self.keys.seller_id,
            "trade_no": order.transaction_id,
            "out_trade_no": order.order_id,
            "buyer_id": "2088" + _digits(12),
            "buyer_logon_id": "sim***@example.com",
            "total_amount": f"{total}",
            "invoice_amount": f"{total}",
            "point_amount": "0.00",
            "subject": order.subject,
            "gmt_create": self._cst(now - 30),
            "fund_bill_list": json.dumps(
                [{"amount": f"{total}", "fundChannel": "ALIPAYACCOUNT"}], separators=(",", ":")
            ),
        }

    def _alipay_notification(
        self,
        order: SimOrder,
        kind: Literal["paid", "refund"],
        form: dict[str, str],
        variant: Variant,
    ) -> Notification:
        if variant == "stale":  # Alipay signs no freshness: an old notification is just old
            form["notify_time"] = self._cst(self.clock() - 86_400)
        content = "&".join(
            f"{k}={v}" for k, v in sorted(form.items()) if k not in ("sign", "sign_type") and v
        )
        key = self._wrong_key if variant == "bad_signature" else self.keys.alipay_key
        form["sign"] = _sign(key, content.encode())
        if variant == "tampered":
            form["total_amount"] = f"{Decimal(form['total_amount']) * 10:.2f}"
        return Notification(
            "alipay",
            kind,
            order.order_id,
            order.notify_url,
            {"Content-Type": "application/x-www-form-urlencoded; charset=utf-8"},
            urlencode(form).encode(),
        )

    # ------------------------------------------------------------------ our requests

    def _place(
        self, order_id: str, amount: Decimal, notify_url: str, subject: str
    ) -> SimOrder | str:
        """Keep an order (again: the same one); return it or why it is refused."""
        known = self.orders.get(order_id)
        if known is not None:
            if known.amount != amount or known.paid:
                return "out_trade_no is used by another order, or paid"
            return known
        prefix = WECHAT_CODE_PREFIX if self.provider == "wechat" else ALIPAY_CODE_PREFIX
        order = SimOrder(self.provider, order_id, amount, notify_url, subject, prefix + order_id)
        self.orders[order_id] = order
        return order

    def _wechat_error(self, status: int, code: str, message: str) -> web.Response:
        self.requests_refused.append(code)
        return self._wechat_signed(status, {"code": code, "message": message})

    def _wechat_signed(self, status: int, payload: Mapping[str, Any]) -> web.Response:
        body = json.dumps(payload, ensure_ascii=False).encode()
        headers = self._wechat_headers(body, int(self.clock()))
        return web.Response(
            status=status, body=body, headers=headers, content_type="application/json"
        )

    async def _wechat_native(self, request: web.Request) -> web.Response:
        if self.provider != "wechat":
            return web.Response(status=404)
        body = await request.read()
        fields = dict(_AUTH.findall(request.headers.get("Authorization", "")))
        scheme = request.headers.get("Authorization", "").split(" ", 1)[0]
        timestamp = fields.get("timestamp", "")
        message = (
            f"POST\n{request.path_qs}\n{timestamp}\n{fields.get('nonce_str', '')}\n".encode()
            + body
            + b"\n"
        )
        if (
            scheme != "WECHATPAY2-SHA256-RSA2048"
            or fields.get("mchid") != self.keys.mchid
            or fields.get("serial_no") != self.keys.merchant_serial
            or not timestamp.isdigit()
            or abs(int(timestamp) - self.clock()) > 300
            or not _verifies(
                self.keys.merchant_key.public_key(), message, fields.get("signature", "")
            )
        ):
            return self._wechat_error(401, "SIGN_ERROR", "签名错误")
        try:
            data = json.loads(body)
            total = data["amount"]["total"]
            order_id = data["out_trade_no"]
            valid = (
                isinstance(total, int)
                and not isinstance(total, bool)
                and total > 0
                and data["amount"].get("currency", "CNY") == "CNY"
                and isinstance(order_id, str)
                and _WECHAT_ORDER_NO.fullmatch(order_id) is not None
                and isinstance(data["description"], str)
                and isinstance(data["notify_url"], str)
                and data["notify_url"].startswith(("https://", "http://"))
            )
        except (ValueError, KeyError, TypeError):
            valid = False
        if not valid:
            return self._wechat_error(400, "PARAM_ERROR", "参数错误")
        if data.get("mchid") != self.keys.mchid or data.get("appid") != self.keys.appid:
            return self._wechat_error(400, "APPID_MCHID_NOT_MATCH", "appid和mch_id不匹配")
        placed = self._place(
            order_id, Decimal(total).scaleb(-2), data["notify_url"], data["description"]
        )
        if isinstance(placed, str):
            return self._wechat_error(400, "INVALID_REQUEST", placed)
        return self._wechat_signed(200, {"code_url": placed.code})

    def _alipay_answer(self, member: Mapping[str, Any]) -> web.Response:
        text = json.dumps(member, ensure_ascii=False, separators=(",", ":"))
        sign = _sign(self.keys.alipay_key, text.encode())
        body = '{"alipay_trade_precreate_response":' + text + ',"sign":"' + sign + '"}'
        return web.Response(body=body.encode(), content_type="application/json", charset="utf-8")

    def _alipay_error(self, code: str, msg: str, sub_code: str, sub_msg: str) -> web.Response:
        self.requests_refused.append(sub_code)
        return self._alipay_answer(
            {"code": code, "msg": msg, "sub_code": sub_code, "sub_msg": sub_msg}
        )

    async def _alipay_gateway(self, request: web.Request) -> web.Response:
        if self.provider != "alipay":
            return web.Response(status=404)
        try:
            pairs = parse_qsl((await request.read()).decode("utf-8"), keep_blank_values=True)
        except UnicodeDecodeError:
            return self._alipay_error(
                "40002", "Invalid Arguments", "isv.invalid-charset", "字符集错误"
            )
        form = dict(pairs)
        if form.get("method") != "alipay.trade.precreate":
            return self._alipay_error(
                "40002", "Invalid Arguments", "isv.invalid-method", "不存在的方法名"
            )
        if form.get("app_id") != self.keys.app_id:
            return self._alipay_error(
                "40002", "Invalid Arguments", "isv.invalid-app-id", "无效的AppID参数"
            )
        content = "&".join(f"{k}={v}" for k, v in sorted(form.items()) if k != "sign" and v)
        if form.get("sign_type") != "RSA2" or not _verifies(
            self.keys.app_key.public_key(), content.encode(), form.get("sign", "")
        ):
            return self._alipay_error(
                "40002", "Invalid Arguments", "isv.invalid-signature", "验签出错"
            )
        try:
            sent = datetime.strptime(form.get("timestamp", ""), "%Y-%m-%d %H:%M:%S").replace(
                tzinfo=CST
            )
            biz = json.loads(form.get("biz_content", ""))
            order_id, total, subject = biz["out_trade_no"], biz["total_amount"], biz["subject"]
            valid = (
                abs(sent.timestamp() - self.clock()) < 600
                and isinstance(order_id, str)
                and _ALIPAY_ORDER_NO.fullmatch(order_id) is not None
                and isinstance(total, str)
                and _YUAN.fullmatch(total) is not None
                and Decimal(total) > 0
                and isinstance(subject, str)
                and subject != ""
            )
        except (ValueError, KeyError, TypeError):
            valid = False
        if not valid:
            return self._alipay_error(
                "40002", "Invalid Arguments", "isv.invalid-parameter", "参数无效"
            )
        placed = self._place(
            order_id, Decimal(total), form.get("notify_url") or self.notify_url or "", subject
        )
        if isinstance(placed, str):
            return self._alipay_error("40004", "Business Failed", "ACQ.TRADE_HAS_SUCCESS", placed)
        return self._alipay_answer(
            {"code": "10000", "msg": "Success", "out_trade_no": order_id, "qr_code": placed.code}
        )

    # ------------------------------------------------------------------ statements

    def statement_rows(
        self,
        day: date,
        *,
        omit: Sequence[str] = (),
        amounts: Mapping[str, Decimal] | None = None,
    ) -> list[dict[str, Any]]:
        """Return the day's (China Standard Time) payments and refunds, as the bill lists them.

        `omit` leaves orders out, `amounts` lists an order's payment for another amount: what
        a reconciliation must find.
        """
        rows: list[dict[str, Any]] = []
        for order in self.orders.values():
            if order.order_id in omit or not order.paid:
                continue
            if datetime.fromtimestamp(order.paid_at, CST).date() == day:
                amount = (amounts or {}).get(order.order_id, order.amount)
                rows.append({"kind": "paid", "order": order, "amount": amount, "ts": order.paid_at})
            for refund_id, out_no, amount, ts in order.refund_log:
                if datetime.fromtimestamp(ts, CST).date() == day:
                    rows.append(
                        {
                            "kind": "refund",
                            "order": order,
                            "amount": amount,
                            "ts": ts,
                            "refund_id": refund_id,
                            "out_no": out_no,
                        }
                    )
        rows.sort(key=lambda row: row["ts"])
        return rows

    def statement(
        self,
        day: date,
        *,
        omit: Sequence[str] = (),
        amounts: Mapping[str, Decimal] | None = None,
    ) -> bytes:
        """Return the day's trade bill file as the provider gives it (see `statement_rows`).

        WeChat Pay: the v3 trade bill (ALL), UTF-8 CSV, every field after the header prefixed
        with a backtick, two summary lines at the end. Alipay: the 业务明细 CSV in GBK with its
        `#` comment lines (account, day, end of the list, totals).
        """
        rows = self.statement_rows(day, omit=omit, amounts=amounts)
        if self.provider == "wechat":
            return self._wechat_bill(rows)
        return self._alipay_bill(day, rows)

    def _wechat_bill(self, rows: Sequence[Mapping[str, Any]]) -> bytes:
        header = (
            "交易时间,公众账号ID,商户号,特约商户号,设备号,微信订单号,商户订单号,用户标识,交易类型,"
            "交易状态,付款银行,货币种类,应结订单金额,代金券金额,微信退款单号,商户退款单号,退款金额,"
            "充值券退款金额,退款类型,退款状态,商品名称,商户数据包,手续费,费率,订单金额,申请退款金额,"
            "费率备注"
        )
        lines = [header]
        paid_total = refund_total = fees = Decimal(0)
        for row in rows:
            order: SimOrder = row["order"]
            amount: Decimal = row["amount"]
            refund = row["kind"] == "refund"
            fee = (amount * Decimal("0.006")).quantize(_CENT)
            fees += -fee if refund else fee
            if refund:
                refund_total += amount
            else:
                paid_total += amount
            fields = [
                self._cst(row["ts"]),
                self.keys.appid,
                self.keys.mchid,
                "0",
                "",
                order.transaction_id,
                order.order_id,
                "o" + order.order_id[-12:],
                "NATIVE",
                "REFUND" if refund else "SUCCESS",
                "OTHERS",
                "CNY",
                f"{order.amount if refund else amount}",
                "0.00",
                row.get("refund_id", "0") if refund else "0",
                row.get("out_no", "0") if refund else "0",
                f"{amount}" if refund else "0.00",
                "0.00",
                "ORIGINAL" if refund else "",
                "SUCCESS" if refund else "",
                order.subject.replace(",", " "),
                "",
                f"{-fee if refund else fee}",
                "0.60%",
                f"{order.amount if refund else amount}",
                f"{amount}" if refund else "0.00",
                "",
            ]
            lines.append(",".join("`" + value for value in fields))
        lines.append(
            "总交易单数,应结订单总金额,退款总金额,充值券退款总金额,手续费总金额,订单总金额,申请退款总金额"
        )
        summary = [len(rows), paid_total, refund_total, "0.00", fees, paid_total, refund_total]
        lines.append(",".join(f"`{value}" for value in summary))
        return ("\r\n".join(lines) + "\r\n").encode("utf-8")

    def _alipay_bill(self, day: date, rows: Sequence[Mapping[str, Any]]) -> bytes:
        start = datetime.combine(day, datetime.min.time())
        lines = [
            "#支付宝业务明细查询",
            f"#账号：[{self.keys.seller_id}0156]",
            f"#起始日期：[{start:%Y年%m月%d日} 00:00:00]   "
            f"终止日期：[{start + timedelta(days=1):%Y年%m月%d日} 00:00:00]",
            "#-----------------------------------------业务明细列表----------------------------------------",
            "支付宝交易号,商户订单号,业务类型,商品名称,创建时间,完成时间,门店编号,门店名称,操作员,终端号,"
            "对方账户,订单金额（元）,商家实收（元）,支付宝红包（元）,集分宝（元）,支付宝优惠（元）,"
            "商家优惠（元）,券核销金额（元）,券名称,商家红包消费金额（元）,卡消费金额（元）,"
            "退款批次号/请求号,服务费（元）,分润（元）,备注",
        ]
        paid = refunded = Decimal(0)
        count = {"paid": 0, "refund": 0}
        for row in rows:
            order: SimOrder = row["order"]
            amount: Decimal = row["amount"]
            refund = row["kind"] == "refund"
            count[row["kind"]] += 1
            signed = -amount if refund else amount
            if refund:
                refunded += amount
            else:
                paid += amount
            fee = (amount * Decimal("0.006")).quantize(_CENT)
            fields = [
                f"{order.transaction_id}\t",
                f"{order.order_id}\t",
                "退款" if refund else "交易",
                order.subject.replace(",", " "),
                self._cst(row["ts"] - 30),
                self._cst(row["ts"]),
                "",
                "",
                "",
                "",
                "sim***@example.com",
                f"{signed}",
                f"{signed}",
                "0.00",
                "0.00",
                "0.00",
                "0.00",
                "0.00",
                "",
                "0.00",
                "0.00",
                f"{row.get('out_no', '')}\t" if refund else "",
                f"{fee if refund else -fee}",
                "0.00",
                "",
            ]
            lines.append(",".join(fields))
        lines += [
            "#-----------------------------------------业务明细列表结束------------------------------------",
            f"#交易合计：{count['paid']}笔，商家实收共{paid:.2f}元，商家优惠共0.00元",
            f"#退款合计：{count['refund']}笔，商家实收退款共{-refunded:.2f}元，商家优惠退款共0.00元",
            f"#导出时间：[{datetime.fromtimestamp(self.clock(), CST):%Y年%m月%d日 %H:%M:%S}]",
        ]
        return ("\r\n".join(lines) + "\r\n").encode("gbk")

    # ------------------------------------------------------------------ control

    async def _control_scan(self, request: web.Request) -> web.Response:
        try:
            data = await request.json()
            variant = data.get("variant", "ok")
            if variant not in VARIANTS:
                raise PayProviderError(f"Unknown variant {variant!r}: one of {', '.join(VARIANTS)}")
            order_id = data.get("order_id") or self.order_for_code(str(data.get("code"))).order_id
            amount = Decimal(str(data["amount"])) if data.get("amount") is not None else None
            deliveries = await self.pay(
                order_id, variant=variant, times=int(data.get("times", 1)), amount=amount
            )
        except (PayProviderError, ValueError, ArithmeticError) as err:
            return web.json_response({"error": str(err)}, status=400)
        return web.json_response([d.as_dict() for d in deliveries])

    async def _control_refund(self, request: web.Request) -> web.Response:
        try:
            data = await request.json()
            amount = Decimal(str(data["amount"])) if data.get("amount") is not None else None
            delivery = await self.refund(str(data["order_id"]), amount)
        except (PayProviderError, ValueError, ArithmeticError, KeyError) as err:
            return web.json_response({"error": str(err)}, status=400)
        return web.json_response(delivery.as_dict())

    async def _control_orders(self, _request: web.Request) -> web.Response:
        return web.json_response(
            [
                {
                    "order_id": o.order_id,
                    "amount": str(o.amount),
                    "code": o.code,
                    "paid": o.paid,
                    "transaction_id": o.transaction_id,
                    "refunded": str(o.refunded),
                }
                for o in self.orders.values()
            ]
        )

    async def _control_keys(self, _request: web.Request) -> web.Response:
        return web.json_response({"folder": str(self.keys.folder), **self.keys.merchant_info()})

    async def _control_bill(self, request: web.Request) -> web.Response:
        try:
            day = date.fromisoformat(request.query.get("day", ""))
            omit = [o for o in request.query.get("omit", "").split(",") if o]
        except ValueError as err:
            return web.json_response({"error": f"day: {err}"}, status=400)
        content_type = "text/csv"
        charset = "utf-8" if self.provider == "wechat" else "gbk"
        return web.Response(
            body=self.statement(day, omit=omit), content_type=content_type, charset=charset
        )


# ---------------------------------------------------------------------------- command line


def build_parser() -> argparse.ArgumentParser:
    """Return the `python -m simulator pay` command line."""
    parser = argparse.ArgumentParser(
        prog="python -m simulator pay",
        description="A local WeChat Pay / Alipay for tests and the demo, or a client of one.",
    )
    parser.add_argument("--provider", choices=("wechat", "alipay"), default="wechat")
    parser.add_argument("--notify-url", help="where notifications go for orders naming none")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8580)
    parser.add_argument("--keys", type=Path, default=Path(".paysim"), help="folder of PEM files")
    parser.add_argument("--duration", type=float, help="seconds to run (default: until Ctrl-C)")
    parser.add_argument("--retry-delays", default="0.5,1,2", help="seconds between redeliveries")
    control = parser.add_argument_group("drive a running provider")
    control.add_argument("--provider-url", help="a running provider, e.g. http://127.0.0.1:8580")
    control.add_argument("--scan", metavar="CODE", help="pay the order of this QR code")
    control.add_argument("--order", metavar="ORDER_ID", help="pay this order")
    control.add_argument("--variant", choices=VARIANTS, default="ok")
    control.add_argument("--times", type=int, default=1, help="deliver the notification N times")
    control.add_argument("--amount", help="pay (or refund) this amount instead")
    control.add_argument("--refund", metavar="ORDER_ID", help="refund this order")
    control.add_argument(
        "--bill", metavar="YYYY-MM-DD", help="fetch that day's trade bill (statement) file"
    )
    control.add_argument("--out", type=Path, help="write the bill here (default: stdout)")
    return parser


async def _serve(args: argparse.Namespace) -> None:
    keys = ProviderKeys.load_or_create(args.keys)
    delays = tuple(float(d) for d in args.retry_delays.split(",") if d.strip())
    provider = PayProvider(
        args.provider,
        keys,
        notify_url=args.notify_url,
        host=args.host,
        port=args.port,
        retry_delays=delays,
    )
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(sig, stop.set)
    async with provider:
        print(
            json.dumps({"provider": args.provider, "url": provider.url, "keys": str(keys.folder)}),
            flush=True,
        )
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), args.duration)


async def _bill(args: argparse.Namespace) -> bytes:
    async with (
        ClientSession(timeout=ClientTimeout(total=60)) as session,
        session.get(
            args.provider_url.rstrip("/") + "/sim/bill", params={"day": args.bill}
        ) as response,
    ):
        body = await response.read()
        if response.status != 200:
            raise PayProviderError(body.decode("utf-8", "replace")[:300])
        return body


async def _drive(args: argparse.Namespace) -> Any:
    async with ClientSession(timeout=ClientTimeout(total=60)) as session:
        if args.refund:
            path, payload = "/sim/refund", {"order_id": args.refund, "amount": args.amount}
        else:
            payload = {
                "code": args.scan,
                "order_id": args.order,
                "variant": args.variant,
                "times": args.times,
                "amount": args.amount,
            }
            path = "/sim/scan"
        async with session.post(args.provider_url.rstrip("/") + path, json=payload) as response:
            result = await response.json()
            if response.status != 200:
                raise PayProviderError(result.get("error", f"HTTP {response.status}"))
            return result


def main(argv: Sequence[str] | None = None) -> int:
    """Run a provider, or drive a running one; return the exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    driving = args.scan or args.order or args.refund
    if (driving or args.bill) and not args.provider_url:
        parser.error("--scan, --order, --refund and --bill need --provider-url")
    if args.provider_url and not (driving or args.bill):
        parser.error("--provider-url needs --scan, --order, --refund or --bill")
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    try:
        if args.bill:
            bill = asyncio.run(_bill(args))
            if args.out is not None:
                args.out.write_bytes(bill)
            else:
                sys.stdout.buffer.write(bill)
        elif driving:
            print(json.dumps(asyncio.run(_drive(args)), ensure_ascii=False, indent=2))
        else:
            asyncio.run(_serve(args))
    except (PayProviderError, OSError) as err:
        print(f"simulator pay: {err}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    return 0
