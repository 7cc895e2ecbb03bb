"""What WeChat Pay and Alipay send and expect: signatures, encryption, fields. No I/O.

Two providers, each in both directions:

- **WeChat Pay API v3.** A notification is JSON whose `Wechatpay-Signature` header is the
  base64 SHA256withRSA (PKCS#1 v1.5) signature, by the platform key named in
  `Wechatpay-Serial`, of `f"{Wechatpay-Timestamp}\\n{Wechatpay-Nonce}\\n{body}\\n"`; a timestamp
  more than `MAX_SKEW_S` from now is refused (a replayed old message). Its `resource` is
  AEAD_AES_256_GCM with the merchant's APIv3 key, its `nonce` and `associated_data`. A
  payment is `event_type` TRANSACTION.SUCCESS (`trade_state` SUCCESS, `amount.total` in fen);
  a refund REFUND.SUCCESS (`refund_id`, `amount.refund` in fen). The Native order request
  (`POST /v3/pay/transactions/native`) is signed by the merchant key over
  `METHOD\\nPATH\\nTIMESTAMP\\nNONCE\\nBODY\\n` in an `Authorization` header; its answer (the
  `code_url` to show as a QR code) is signed like a notification.
- **Alipay (open platform, RSA2).** An asynchronous notification is a form whose `sign` is the
  base64 SHA256withRSA signature, by Alipay's key, of its other parameters without `sign` and
  `sign_type`, empty values left out, sorted by name and joined `k=v&k=v`. A payment is
  `trade_status` TRADE_SUCCESS or TRADE_FINISHED (`total_amount` in yuan); a refund carries
  `refund_fee`, the trade's *total* refunded so far, with `gmt_refund` and `out_biz_no`. The
  `alipay.trade.precreate` request is a form signed by the merchant key (every parameter but
  `sign`); its answer is signed over the exact JSON text of `alipay_trade_precreate_response`.

Whatever a remote party sends either becomes a `PaymentNotice` (money to credit or to reverse),
an `Ignored` (authentic, nothing to do: a trade still waiting or closed unpaid), or raises
`PaymentRejected` with one of `REJECT_KEYS` and one sentence; nothing else escapes. Keys are
loaded from PEM (or Alipay's bare base64) with `KeyProblem` when a file is missing or wrong.
No secret is ever put in a message, a repr or a log.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta, timezone
from decimal import Decimal
import json
import re
import secrets
from typing import Any, Final, Literal
from urllib.parse import parse_qsl, urlencode, urlsplit

from cryptography import x509
from cryptography.exceptions import InvalidSignature, InvalidTag, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

__all__ = [
    "ALIPAY_GATEWAY",
    "MAX_SKEW_S",
    "REJECT_KEYS",
    "WECHAT_API",
    "AlipayMerchant",
    "HttpRequest",
    "Ignored",
    "KeyProblem",
    "PaymentNotice",
    "PaymentRejected",
    "Provider",
    "WechatMerchant",
    "alipay_answer",
    "alipay_notification",
    "alipay_precreate_request",
    "alipay_precreate_response",
    "alipay_sign_content",
    "certificate_serial",
    "decrypt_wechat_resource",
    "fen_to_yuan",
    "load_apiv3_key",
    "load_private_key",
    "load_public_key",
    "parse_alipay_form",
    "sign_sha256_rsa",
    "verify_wechat_signature",
    "wechat_answer",
    "wechat_native_request",
    "wechat_native_response",
    "wechat_notification",
    "yuan_to_fen",
]

type Provider = Literal["wechat", "alipay"]

WECHAT_API: Final = "https://api.mch.weixin.qq.com"
WECHAT_NATIVE_PATH: Final = "/v3/pay/transactions/native"
ALIPAY_GATEWAY: Final = "https://openapi.alipay.com/gateway.do"
#: How far a WeChat Pay timestamp may be from now, either way (the provider's 5 minutes).
MAX_SKEW_S: Final = 300
#: The largest message accepted from a provider (theirs are a few kilobytes).
MAX_BODY: Final = 65_536
#: China Standard Time, the providers' clock for the times they write.
CST: Final = timezone(timedelta(hours=8))
_CENT: Final = Decimal("0.01")
_YUAN_TEXT: Final = re.compile(r"[0-9]{1,9}(\.[0-9]{1,2})?")
_MIN_RSA_BITS: Final = 2048
_AUTH_SCHEME: Final = "WECHATPAY2-SHA256-RSA2048"

#: Why a message from a provider was refused (the adapter translates and counts them).
REJECT_KEYS: Final = frozenset(
    {
        "bad_signature",  # the signature does not verify, or is missing
        "stale_timestamp",  # WeChat Pay's timestamp is more than 5 minutes off
        "unknown_serial",  # WeChat Pay names a platform key we do not have
        "undecryptable",  # the resource does not decrypt with our APIv3 key
        "unknown_merchant",  # a merchant or app id that is not ours
        "malformed",  # not the provider's format, or a field missing or wrong
        "wrong_currency",  # a currency other than CNY
        "amount_mismatch",  # the amount does not match the order (see orders.py)
        "provider_error",  # the provider refused our request (order creation)
    }
)


class PaymentRejected(Exception):
    """A provider's message refused: `key` (one of REJECT_KEYS) and one sentence."""

    def __init__(self, key: str, message: str) -> None:
        """Keep the key and the sentence (which never holds a secret)."""
        super().__init__(message)
        self.key = key
        self.message = message

    def __repr__(self) -> str:
        """Show the key and the sentence."""
        return f"PaymentRejected({self.key!r}, {self.message!r})"


class KeyProblem(ValueError):
    """A key or certificate that cannot be used: `key` says which problem, for translation.

    Keys: `key_missing`, `key_unreadable`, `key_not_rsa`, `key_too_short`,
    `apiv3_key_invalid`, `key_pair_mismatch`.
    """

    def __init__(self, key: str, message: str) -> None:
        """Keep the key and the sentence (which never holds the key's content)."""
        super().__init__(message)
        self.key = key
        self.message = message


@dataclass(frozen=True, slots=True)
class PaymentNotice:
    """An authentic, verified payment or refund, as the provider reported it.

    `amount` is in yuan with two places. For a refund it is what this refund gave back, except
    when `cumulative` (Alipay's `refund_fee`): then it is the trade's total refunded so far.
    """

    provider: Provider
    kind: Literal["paid", "refund"]
    transaction_id: str  # WeChat Pay's transaction_id, Alipay's trade_no
    order_id: str  # our out_trade_no
    amount: Decimal
    refund_id: str | None = None  # WeChat Pay's refund_id, Alipay's out_biz_no
    merchant_id: str = ""  # WeChat Pay's mchid, Alipay's seller_id
    app_id: str = ""  # WeChat Pay's appid, Alipay's app_id
    currency: str = "CNY"
    cumulative: bool = False
    time: str = ""  # when it happened, as the provider wrote it
    notice_id: str = ""  # the notification's own id (WeChat Pay's id, Alipay's notify_id)

    @property
    def notice_key(self) -> str:
        """Return what identifies this event however often it is delivered."""
        if self.kind == "paid":
            return f"{self.provider}:paid:{self.transaction_id}"
        if self.cumulative:
            return f"{self.provider}:refund:{self.transaction_id}:{self.amount}"
        return f"{self.provider}:refund:{self.refund_id}"

    def as_dict(self) -> dict[str, str | bool]:
        """Return the notice as plain JSON-able data (it holds no secret)."""
        return {
            "provider": self.provider,
            "kind": self.kind,
            "transaction_id": self.transaction_id,
            "order_id": self.order_id,
            "amount": str(self.amount),
            "refund_id": self.refund_id or "",
            "merchant_id": self.merchant_id,
            "app_id": self.app_id,
            "currency": self.currency,
            "cumulative": self.cumulative,
            "time": self.time,
            "notice_id": self.notice_id,
        }


@dataclass(frozen=True, slots=True)
class Ignored:
    """An authentic message with nothing to credit or reverse (acknowledge it)."""

    provider: Provider
    order_id: str
    reason: str  # e.g. "trade_state NOTPAY", "trade_status WAIT_BUYER_PAY"


@dataclass(frozen=True, slots=True)
class HttpRequest:
    """A request to send as it is."""

    method: str
    url: str
    headers: Mapping[str, str]
    body: bytes


@dataclass(frozen=True, slots=True)
class WechatMerchant:
    """Our WeChat Pay merchant: ids, our key, the platform's keys and the APIv3 key."""

    mchid: str
    appid: str
    serial_no: str  # our merchant certificate's serial number
    private_key: rsa.RSAPrivateKey = field(repr=False)
    apiv3_key: bytes = field(repr=False)
    platform_keys: Mapping[str, rsa.RSAPublicKey] = field(repr=False)


@dataclass(frozen=True, slots=True)
class AlipayMerchant:
    """Our Alipay application: ids, our application key and Alipay's public key."""

    app_id: str
    seller_id: str  # the merchant's Alipay user id (2088...)
    private_key: rsa.RSAPrivateKey = field(repr=False)
    alipay_public_key: rsa.RSAPublicKey = field(repr=False)


# ---------------------------------------------------------------------------- money


def fen_to_yuan(fen: object) -> Decimal:
    """Return an integer amount of fen as exact yuan with two places."""
    if not isinstance(fen, int) or isinstance(fen, bool) or fen < 0:
        raise PaymentRejected("malformed", f"An amount in fen must be a whole number, not {fen!r}.")
    return Decimal(fen).scaleb(-2)


def yuan_to_fen(amount: Decimal) -> int:
    """Return a yuan amount (at most two places) as whole fen."""
    if not amount.is_finite() or amount != amount.quantize(_CENT):
        raise ValueError(f"{amount} yuan is not a whole number of fen.")
    return int(amount.scaleb(2))


def _yuan(text: object, what: str) -> Decimal:
    """Parse a provider's yuan text ("12.30") exactly; refuse anything else."""
    if not isinstance(text, str) or not _YUAN_TEXT.fullmatch(text):
        raise PaymentRejected("malformed", f"{what} {str(text)[:20]!r} is not an amount in yuan.")
    return Decimal(text).quantize(_CENT)


# ---------------------------------------------------------------------------- keys


def load_private_key(
    pem: bytes | None, what: str = "The merchant private key"
) -> rsa.RSAPrivateKey:
    """Load an RSA private key (PKCS#8 or PKCS#1 PEM) of at least 2048 bits."""
    if not pem or not pem.strip():
        raise KeyProblem("key_missing", f"{what} is missing or empty.")
    try:
        key = serialization.load_pem_private_key(pem, password=None)
    except (ValueError, TypeError, UnsupportedAlgorithm):
        raise KeyProblem(
            "key_unreadable", f"{what} is not an unencrypted PEM private key."
        ) from None
    if not isinstance(key, rsa.RSAPrivateKey):
        raise KeyProblem("key_not_rsa", f"{what} is not an RSA key.")
    if key.key_size < _MIN_RSA_BITS:
        raise KeyProblem("key_too_short", f"{what} has {key.key_size} bits, fewer than 2048.")
    return key


def load_public_key(data: bytes | None, what: str = "The public key") -> rsa.RSAPublicKey:
    """Load an RSA public key: a PEM public key, a PEM certificate, or bare base64 (Alipay's)."""
    if not data or not data.strip():
        raise KeyProblem("key_missing", f"{what} is missing or empty.")
    text = data.strip()
    try:
        if b"-----BEGIN CERTIFICATE-----" in text:
            key: object = x509.load_pem_x509_certificate(text).public_key()
        elif text.startswith(b"-----BEGIN"):
            key = serialization.load_pem_public_key(text)
        else:
            key = serialization.load_der_public_key(base64.b64decode(b"".join(text.split())))
    except (ValueError, TypeError, UnsupportedAlgorithm, binascii.Error):
        raise KeyProblem(
            "key_unreadable", f"{what} is not a PEM public key, certificate or base64 key."
        ) from None
    if not isinstance(key, rsa.RSAPublicKey):
        raise KeyProblem("key_not_rsa", f"{what} is not an RSA key.")
    if key.key_size < _MIN_RSA_BITS:
        raise KeyProblem("key_too_short", f"{what} has {key.key_size} bits, fewer than 2048.")
    return key


def certificate_serial(pem: bytes) -> str:
    """Return a PEM certificate's serial number as WeChat Pay writes it (upper-case hex)."""
    try:
        return f"{x509.load_pem_x509_certificate(pem.strip()).serial_number:X}"
    except ValueError:
        raise KeyProblem("key_unreadable", "The certificate is not a PEM certificate.") from None


def load_apiv3_key(data: bytes | str | None) -> bytes:
    """Return the APIv3 key: exactly 32 printable ASCII characters (surrounding space ignored)."""
    if data is None:
        raise KeyProblem("key_missing", "The APIv3 key is missing.")
    raw = data.encode() if isinstance(data, str) else bytes(data)
    raw = raw.strip()
    if not raw:
        raise KeyProblem("key_missing", "The APIv3 key is missing or empty.")
    if len(raw) != 32 or not all(0x21 <= byte <= 0x7E for byte in raw):
        raise KeyProblem(
            "apiv3_key_invalid", "The APIv3 key must be exactly 32 letters and digits."
        )
    return raw


def check_key_pair(private_key: rsa.RSAPrivateKey, public_key: rsa.RSAPublicKey) -> None:
    """Refuse a private key that does not belong to a public key (or certificate)."""
    if private_key.public_key().public_numbers() != public_key.public_numbers():
        raise KeyProblem("key_pair_mismatch", "The private key does not match the public key.")


# ---------------------------------------------------------------------------- signatures


def sign_sha256_rsa(private_key: rsa.RSAPrivateKey, message: bytes) -> str:
    """Return the base64 SHA256withRSA (PKCS#1 v1.5) signature of `message`."""
    signature = private_key.sign(message, padding.PKCS1v15(), hashes.SHA256())
    return base64.b64encode(signature).decode("ascii")


def _verify(public_key: rsa.RSAPublicKey, message: bytes, signature: object, what: str) -> None:
    """Verify a base64 SHA256withRSA signature or raise bad_signature."""
    if not isinstance(signature, str) or not signature or len(signature) > 2048:
        raise PaymentRejected("bad_signature", f"{_cap(what)} carries no signature.")
    try:
        raw = base64.b64decode(signature, validate=True)
        public_key.verify(raw, message, padding.PKCS1v15(), hashes.SHA256())
    except (binascii.Error, ValueError, InvalidSignature):
        raise PaymentRejected(
            "bad_signature", f"The signature of {what} does not verify."
        ) from None


def _cap(text: str) -> str:
    return text[:1].upper() + text[1:]


def _lower(headers: Mapping[str, str]) -> dict[str, str]:
    return {str(name).lower(): str(value) for name, value in headers.items()}


def _nonce() -> str:
    return secrets.token_hex(16).upper()


# ---------------------------------------------------------------------------- WeChat Pay


def verify_wechat_signature(
    headers: Mapping[str, str],
    body: bytes,
    platform_keys: Mapping[str, rsa.RSAPublicKey],
    now: float,
    what: str = "the WeChat Pay message",
) -> None:
    """Verify a WeChat Pay v3 message (notification or answer) or raise PaymentRejected."""
    found = _lower(headers)
    serial = found.get("wechatpay-serial", "")
    timestamp = found.get("wechatpay-timestamp", "")
    nonce = found.get("wechatpay-nonce", "")
    signature = found.get("wechatpay-signature", "")
    if not (serial and timestamp and nonce and signature):
        raise PaymentRejected(
            "bad_signature", f"{_cap(what)} lacks the Wechatpay-* signature headers."
        )
    if not timestamp.isdigit() or len(timestamp) > 12:
        raise PaymentRejected(
            "malformed", f"{_cap(what)} has a timestamp that is not UNIX seconds."
        )
    if abs(now - int(timestamp)) > MAX_SKEW_S:
        raise PaymentRejected(
            "stale_timestamp",
            f"{_cap(what)} was signed at {timestamp}, more than {MAX_SKEW_S} s from now.",
        )
    key = platform_keys.get(serial)
    if key is None:
        raise PaymentRejected(
            "unknown_serial", f"{_cap(what)} is signed with platform key {serial[:64]!r}, not ours."
        )
    message = timestamp.encode() + b"\n" + nonce.encode() + b"\n" + body + b"\n"
    _verify(key, message, signature, what)


def decrypt_wechat_resource(apiv3_key: bytes, resource: object) -> bytes:
    """Decrypt a notification's `resource` (AEAD_AES_256_GCM) or raise undecryptable."""
    if not isinstance(resource, Mapping):
        raise PaymentRejected("malformed", "The notification has no resource.")
    algorithm = resource.get("algorithm")
    ciphertext = resource.get("ciphertext")
    nonce = resource.get("nonce")
    associated = resource.get("associated_data", "")
    if algorithm != "AEAD_AES_256_GCM":
        raise PaymentRejected(
            "undecryptable", f"Unknown resource algorithm {str(algorithm)[:40]!r}."
        )
    if not (isinstance(ciphertext, str) and isinstance(nonce, str) and isinstance(associated, str)):
        raise PaymentRejected("malformed", "The resource lacks its ciphertext or nonce.")
    try:
        return AESGCM(apiv3_key).decrypt(
            nonce.encode(), base64.b64decode(ciphertext, validate=True), associated.encode()
        )
    except (InvalidTag, ValueError, binascii.Error):
        raise PaymentRejected(
            "undecryptable", "The resource does not decrypt with our APIv3 key."
        ) from None


def _json_object(raw: bytes, what: str) -> dict[str, Any]:
    if len(raw) > MAX_BODY:
        raise PaymentRejected("malformed", f"{what} is larger than {MAX_BODY} bytes.")
    try:
        value = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError):
        raise PaymentRejected("malformed", f"{what} is not JSON.") from None
    if not isinstance(value, dict):
        raise PaymentRejected("malformed", f"{what} is not a JSON object.")
    return value


def _field(data: Mapping[str, Any], name: str, what: str, limit: int = 64) -> str:
    value = data.get(name)
    if not isinstance(value, str) or not value or len(value) > limit:
        raise PaymentRejected("malformed", f"{what} lacks a valid {name}.")
    return value


def wechat_notification(
    merchant: WechatMerchant, headers: Mapping[str, str], body: bytes, now: float
) -> PaymentNotice | Ignored:
    """Verify, decrypt and read a WeChat Pay v3 notification (payment or refund)."""
    if len(body) > MAX_BODY:
        raise PaymentRejected("malformed", f"The notification is larger than {MAX_BODY} bytes.")
    verify_wechat_signature(headers, body, merchant.platform_keys, now, "the notification")
    envelope = _json_object(body, "The notification")
    event_type = envelope.get("event_type")
    data = _json_object(
        decrypt_wechat_resource(merchant.apiv3_key, envelope.get("resource")),
        "The notification's resource",
    )
    notice_id = str(envelope.get("id", ""))[:64]
    what = "The notification"
    if data.get("mchid") != merchant.mchid:
        raise PaymentRejected(
            "unknown_merchant", f"{what} is for merchant {str(data.get('mchid'))[:32]!r}."
        )
    order_id = _field(data, "out_trade_no", what)
    transaction_id = _field(data, "transaction_id", what)
    amount = data.get("amount")
    if not isinstance(amount, Mapping):
        raise PaymentRejected("malformed", f"{what} has no amount.")
    if isinstance(event_type, str) and event_type.startswith("REFUND."):
        if event_type != "REFUND.SUCCESS" or data.get("refund_status") != "SUCCESS":
            return Ignored("wechat", order_id, f"refund {str(data.get('refund_status'))[:20]}")
        refunded = fen_to_yuan(amount.get("refund"))
        if refunded <= 0 or refunded > fen_to_yuan(amount.get("total")):
            raise PaymentRejected(
                "malformed", f"{what} refunds {refunded}, not a part of its total."
            )
        return PaymentNotice(
            provider="wechat",
            kind="refund",
            transaction_id=transaction_id,
            order_id=order_id,
            amount=refunded,
            refund_id=_field(data, "refund_id", what),
            merchant_id=merchant.mchid,
            time=str(data.get("success_time", ""))[:40],
            notice_id=notice_id,
        )
    if data.get("appid") != merchant.appid:
        raise PaymentRejected(
            "unknown_merchant", f"{what} is for app {str(data.get('appid'))[:32]!r}."
        )
    state = data.get("trade_state")
    if event_type != "TRANSACTION.SUCCESS" or state != "SUCCESS":
        return Ignored("wechat", order_id, f"trade_state {str(state)[:20]}")
    currency = amount.get("currency", "CNY")
    if currency != "CNY":
        raise PaymentRejected("wrong_currency", f"{what} is in {str(currency)[:8]!r}, not CNY.")
    total = fen_to_yuan(amount.get("total"))
    if total <= 0:
        raise PaymentRejected("malformed", f"{what} pays nothing.")
    return PaymentNotice(
        provider="wechat",
        kind="paid",
        transaction_id=transaction_id,
        order_id=order_id,
        amount=total,
        merchant_id=merchant.mchid,
        app_id=merchant.appid,
        time=str(data.get("success_time", ""))[:40],
        notice_id=notice_id,
    )


def wechat_answer(ok: bool, message: str = "") -> tuple[int, bytes]:
    """Return what to answer a WeChat Pay notification: 204 without body, or an error JSON."""
    if ok:
        return 204, b""
    body = {"code": "FAIL", "message": message or "failed"}
    return 400, json.dumps(body, ensure_ascii=False).encode()


def wechat_authorization(
    merchant: WechatMerchant, method: str, url_path: str, body: bytes, timestamp: int, nonce: str
) -> str:
    """Return the `Authorization` header of a request to WeChat Pay API v3."""
    message = f"{method}\n{url_path}\n{timestamp}\n{nonce}\n".encode() + body + b"\n"
    signature = sign_sha256_rsa(merchant.private_key, message)
    return (
        f'{_AUTH_SCHEME} mchid="{merchant.mchid}",nonce_str="{nonce}",'
        f'signature="{signature}",timestamp="{timestamp}",serial_no="{merchant.serial_no}"'
    )


def wechat_native_request(
    merchant: WechatMerchant,
    *,
    order_id: str,
    amount: Decimal,
    description: str,
    notify_url: str,
    expires_at: int,
    now: float,
    base_url: str = WECHAT_API,
    nonce: str | None = None,
) -> HttpRequest:
    """Return the signed `POST /v3/pay/transactions/native` for an order (its QR code)."""
    payload = {
        "appid": merchant.appid,
        "mchid": merchant.mchid,
        "description": description[:40],
        "out_trade_no": order_id,
        "time_expire": datetime.fromtimestamp(expires_at, CST).isoformat(timespec="seconds"),
        "notify_url": notify_url,
        "amount": {"total": yuan_to_fen(amount), "currency": "CNY"},
    }
    body = json.dumps(payload, ensure_ascii=False, separators=(",", ":")).encode()
    url = base_url.rstrip("/") + WECHAT_NATIVE_PATH
    parts = urlsplit(url)
    path = parts.path + (f"?{parts.query}" if parts.query else "")
    authorization = wechat_authorization(merchant, "POST", path, body, int(now), nonce or _nonce())
    return HttpRequest(
        "POST",
        url,
        {
            "Authorization": authorization,
            "Accept": "application/json",
            "Content-Type": "application/json",
            "User-Agent": "prepaid_meter",
        },
        body,
    )


def wechat_native_response(
    merchant: WechatMerchant, status: int, headers: Mapping[str, str], body: bytes, now: float
) -> str:
    """Verify WeChat Pay's answer to a Native order and return its `code_url`."""
    if not 200 <= status < 300:
        try:
            error = _json_object(body, "WeChat Pay's error")
        except PaymentRejected:
            error = {}
        raise PaymentRejected(
            "provider_error",
            f"WeChat Pay refused the order ({status}): {str(error.get('code', ''))[:40]} "
            f"{str(error.get('message', ''))[:200]}".strip(),
        )
    verify_wechat_signature(headers, body, merchant.platform_keys, now, "WeChat Pay's answer")
    code_url = _json_object(body, "WeChat Pay's answer").get("code_url")
    if not isinstance(code_url, str) or not code_url.startswith("weixin://") or len(code_url) > 512:
        raise PaymentRejected("malformed", "WeChat Pay's answer has no weixin:// code_url.")
    return code_url


# ---------------------------------------------------------------------------- Alipay


def alipay_sign_content(params: Mapping[str, str], *, exclude: tuple[str, ...]) -> bytes:
    """Return the text Alipay signs: `k=v` sorted by name, `&`-joined, empty values left out."""
    pairs = sorted((k, v) for k, v in params.items() if k not in exclude and v != "")
    return "&".join(f"{k}={v}" for k, v in pairs).encode()


def parse_alipay_form(body: bytes) -> dict[str, str]:
    """Read a form-encoded Alipay notification (its `charset`, default UTF-8)."""
    if len(body) > MAX_BODY:
        raise PaymentRejected("malformed", f"The notification is larger than {MAX_BODY} bytes.")
    text = body.decode("latin-1")
    try:
        charset = dict(parse_qsl(text, encoding="latin-1")).get("charset", "utf-8").lower()
        if charset not in ("utf-8", "utf8", "gbk", "gb2312", "gb18030"):
            raise PaymentRejected("malformed", f"Unknown charset {charset[:20]!r}.")
        pairs = parse_qsl(text, keep_blank_values=True, encoding=charset, errors="strict")
    except (UnicodeDecodeError, ValueError) as err:
        if isinstance(err, PaymentRejected):
            raise
        raise PaymentRejected("malformed", "The notification is not a form.") from None
    form: dict[str, str] = {}
    for name, value in pairs:
        if name in form:
            raise PaymentRejected("malformed", f"The notification repeats {name[:40]!r}.")
        form[name] = value
    return form


def alipay_notification(
    merchant: AlipayMerchant, form: Mapping[str, str]
) -> PaymentNotice | Ignored:
    """Verify and read an Alipay asynchronous notification (payment or refund)."""
    if form.get("sign_type", "RSA2") != "RSA2":
        raise PaymentRejected("bad_signature", "The notification is not signed with RSA2.")
    _verify(
        merchant.alipay_public_key,
        alipay_sign_content(form, exclude=("sign", "sign_type")),
        form.get("sign"),
        "the notification",
    )
    what = "The notification"
    if form.get("app_id") != merchant.app_id:
        raise PaymentRejected(
            "unknown_merchant", f"{what} is for app {form.get('app_id', '')[:32]!r}."
        )
    if form.get("seller_id") != merchant.seller_id:
        raise PaymentRejected(
            "unknown_merchant", f"{what} is for seller {form.get('seller_id', '')[:32]!r}."
        )
    order_id = _field(form, "out_trade_no", what)
    trade_no = _field(form, "trade_no", what)
    status = form.get("trade_status", "")
    total = _yuan(form.get("total_amount"), "total_amount")
    refund_fee = form.get("refund_fee", "")
    notice = PaymentNotice(
        provider="alipay",
        kind="paid",
        transaction_id=trade_no,
        order_id=order_id,
        amount=total,
        merchant_id=merchant.seller_id,
        app_id=merchant.app_id,
        time=form.get("gmt_payment", "")[:40],
        notice_id=form.get("notify_id", "")[:64],
    )
    if refund_fee:
        refunded = _yuan(refund_fee, "refund_fee")
        if refunded <= 0 or refunded > total:
            raise PaymentRejected("malformed", f"{what} refunds {refunded}, not a part of {total}.")
        return replace(
            notice,
            kind="refund",
            amount=refunded,
            refund_id=form.get("out_biz_no", "")[:64] or trade_no,
            cumulative=True,
            time=form.get("gmt_refund", "")[:40],
        )
    if status not in ("TRADE_SUCCESS", "TRADE_FINISHED"):
        return Ignored("alipay", order_id, f"trade_status {status[:20]}")
    if total <= 0:
        raise PaymentRejected("malformed", f"{what} pays nothing.")
    return notice


def alipay_answer(ok: bool) -> tuple[int, bytes]:
    """Return what to answer an Alipay notification: `success`, or `fail` to have it resent."""
    return 200, b"success" if ok else b"fail"


def alipay_precreate_request(
    merchant: AlipayMerchant,
    *,
    order_id: str,
    amount: Decimal,
    subject: str,
    notify_url: str,
    now: float,
    timeout_minutes: int = 15,
    gateway: str = ALIPAY_GATEWAY,
) -> HttpRequest:
    """Return the signed `alipay.trade.precreate` form for an order (its QR code)."""
    biz = {
        "out_trade_no": order_id,
        "total_amount": f"{amount.quantize(_CENT)}",
        "subject": subject[:128],
        "timeout_express": f"{max(1, timeout_minutes)}m",
    }
    yuan_to_fen(amount)  # refuses a fraction of a fen
    params = {
        "app_id": merchant.app_id,
        "method": "alipay.trade.precreate",
        "format": "JSON",
        "charset": "utf-8",
        "sign_type": "RSA2",
        "timestamp": datetime.fromtimestamp(now, CST).strftime("%Y-%m-%d %H:%M:%S"),
        "version": "1.0",
        "notify_url": notify_url,
        "biz_content": json.dumps(biz, ensure_ascii=False, separators=(",", ":")),
    }
    params["sign"] = sign_sha256_rsa(
        merchant.private_key, alipay_sign_content(params, exclude=("sign",))
    )
    return HttpRequest(
        "POST",
        gateway,
        {"Content-Type": "application/x-www-form-urlencoded;charset=utf-8"},
        urlencode(params).encode(),
    )


def _top_level_members(text: str) -> dict[str, tuple[Any, str]]:
    """Return each top-level member of a JSON object: its value and its exact text."""
    decoder = json.JSONDecoder()
    members: dict[str, tuple[Any, str]] = {}
    i = 0

    def skip(at: int) -> int:
        while at < len(text) and text[at] in " \t\r\n":
            at += 1
        return at

    i = skip(i)
    if i >= len(text) or text[i] != "{":
        raise ValueError("not an object")
    i = skip(i + 1)
    if i < len(text) and text[i] == "}":
        return members
    while True:
        name, i = decoder.raw_decode(text, i)
        if not isinstance(name, str):
            raise ValueError("a member name is not a string")
        i = skip(i)
        if i >= len(text) or text[i] != ":":
            raise ValueError("no colon")
        i = skip(i + 1)
        start = i
        value, i = decoder.raw_decode(text, i)
        if name in members:
            raise ValueError("a repeated member")
        members[name] = (value, text[start:i])
        i = skip(i)
        if i < len(text) and text[i] == ",":
            i = skip(i + 1)
            continue
        if i < len(text) and text[i] == "}" and not text[i + 1 :].strip():
            return members
        raise ValueError("junk after a member")


def alipay_precreate_response(merchant: AlipayMerchant, order_id: str, body: bytes) -> str:
    """Verify Alipay's answer to `alipay.trade.precreate` and return its `qr_code`."""
    if len(body) > MAX_BODY:
        raise PaymentRejected("malformed", "Alipay's answer is too large.")
    try:
        members = _top_level_members(body.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError):
        raise PaymentRejected("malformed", "Alipay's answer is not a JSON object.") from None
    found = members.get("alipay_trade_precreate_response")
    if found is None or not isinstance(found[0], dict):
        raise PaymentRejected(
            "malformed", "Alipay's answer has no alipay_trade_precreate_response."
        )
    answer, exact = found
    sign = members.get("sign", (None, ""))[0]
    if answer.get("code") != "10000":
        if sign is not None:
            _verify(merchant.alipay_public_key, exact.encode(), sign, "Alipay's answer")
        raise PaymentRejected(
            "provider_error",
            f"Alipay refused the order: {str(answer.get('code'))[:10]} "
            f"{str(answer.get('sub_code', ''))[:60]} "
            f"{str(answer.get('sub_msg', ''))[:200]}".strip(),
        )
    _verify(merchant.alipay_public_key, exact.encode(), sign, "Alipay's answer")
    if answer.get("out_trade_no") != order_id:
        raise PaymentRejected("malformed", "Alipay's answer is for another order.")
    qr_code = answer.get("qr_code")
    if not isinstance(qr_code, str) or not qr_code.startswith("http") or len(qr_code) > 512:
        raise PaymentRejected("malformed", "Alipay's answer has no qr_code.")
    return qr_code
