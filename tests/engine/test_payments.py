"""The providers' formats: vectors built here from their documented formats, not by payments.py.

Every message is made with `cryptography` directly (the provider's side: its key signs, the
APIv3 key encrypts), so a mistake in payments.py's message building cannot hide behind the
same mistake on the other side.
"""

from __future__ import annotations

import base64
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from decimal import Decimal
import json
from typing import Any
from urllib.parse import parse_qsl, quote, urlsplit

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.x509.oid import NameOID
from hypothesis import given, settings, strategies as st
import pytest

from custom_components.prepaid_meter.engine import payments
from custom_components.prepaid_meter.engine.payments import (
    REJECT_KEYS,
    AlipayMerchant,
    Ignored,
    KeyProblem,
    PaymentNotice,
    PaymentRejected,
    WechatMerchant,
)

NOW = 1_767_225_600  # 2026-01-01 00:00 UTC
MCHID = "1900000109"
APPID = "wxd930ea5d5a258f4f"
SERIAL = "5157F09EFDC096DE15EBE81A47057A7232F1B8E1"
APIV3 = b"0123456789abcdefABCDEF0123456789"
APP_ID = "2021000117600001"
SELLER = "2088102146225135"


def _key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


PLATFORM = _key()
MERCHANT = _key()
ALIPAY = _key()
APP = _key()
OTHER = _key()


def _sign(key: rsa.RSAPrivateKey, message: bytes) -> str:
    return base64.b64encode(key.sign(message, padding.PKCS1v15(), hashes.SHA256())).decode()


def _verify(key: rsa.RSAPublicKey, message: bytes, signature: str) -> None:
    key.verify(base64.b64decode(signature), message, padding.PKCS1v15(), hashes.SHA256())


def _wechat(**changes: Any) -> WechatMerchant:
    values: dict[str, Any] = {
        "mchid": MCHID,
        "appid": APPID,
        "serial_no": "3775B6A45ACD588826D15E583A95F5DD********",
        "private_key": MERCHANT,
        "apiv3_key": APIV3,
        "platform_keys": {SERIAL: PLATFORM.public_key()},
    }
    values.update(changes)
    return WechatMerchant(**values)


def _alipay() -> AlipayMerchant:
    return AlipayMerchant(APP_ID, SELLER, APP, ALIPAY.public_key())


def _transaction(**changes: Any) -> dict[str, Any]:
    data: dict[str, Any] = {
        "mchid": MCHID,
        "appid": APPID,
        "out_trade_no": "PME20260101A1B2C3D4E5F6",
        "transaction_id": "4200000001202601011234567890",
        "trade_type": "NATIVE",
        "trade_state": "SUCCESS",
        "trade_state_desc": "支付成功",
        "bank_type": "OTHERS",
        "attach": "",
        "success_time": "2026-01-01T08:00:00+08:00",
        "payer": {"openid": "oUpF8uMuAJO_M2pxb1Q9zNjWeS6o"},
        "amount": {"total": 1234, "payer_total": 1234, "currency": "CNY", "payer_currency": "CNY"},
    }
    data.update(changes)
    return data


def _notification(
    data: Mapping[str, Any] | bytes,
    *,
    event_type: str = "TRANSACTION.SUCCESS",
    ts: int = NOW,
    serial: str = SERIAL,
    signer: rsa.RSAPrivateKey = PLATFORM,
    apiv3: bytes = APIV3,
    nonce: str = "5K8264ILTKCH16CQ2502SI8ZNMTM67VS",
) -> tuple[dict[str, str], bytes]:
    """Return headers and body of a WeChat Pay v3 notification, made as WeChat Pay makes it."""
    plain = data if isinstance(data, bytes) else json.dumps(data, ensure_ascii=False).encode()
    associated = "transaction" if event_type.startswith("TRANSACTION") else "refund"
    gcm_nonce = "fdasflkja484"
    ciphertext = AESGCM(apiv3).encrypt(gcm_nonce.encode(), plain, associated.encode())
    body = json.dumps(
        {
            "id": "EV-2018022511223320873",
            "create_time": "2026-01-01T08:00:01+08:00",
            "resource_type": "encrypt-resource",
            "event_type": event_type,
            "summary": "支付成功",
            "resource": {
                "original_type": associated,
                "algorithm": "AEAD_AES_256_GCM",
                "ciphertext": base64.b64encode(ciphertext).decode(),
                "associated_data": associated,
                "nonce": gcm_nonce,
            },
        },
        ensure_ascii=False,
    ).encode()
    signature = _sign(signer, f"{ts}\n{nonce}\n".encode() + body + b"\n")
    headers = {
        "Wechatpay-Serial": serial,
        "Wechatpay-Timestamp": str(ts),
        "Wechatpay-Nonce": nonce,
        "Wechatpay-Signature": signature,
        "Wechatpay-Signature-Type": "WECHATPAY2-SHA256-RSA2048",
    }
    return headers, body


def _notice_or_rejection(call: Any, *args: Any) -> None:
    """Run `call`: a notice, an Ignored, or PaymentRejected with a known key; nothing else."""
    key = None
    try:
        result = call(*args)
    except PaymentRejected as err:
        key = err.key
    else:
        assert isinstance(result, PaymentNotice | Ignored)
    assert key is None or key in REJECT_KEYS


def _rejected(key: str, call: Any, *args: Any, **kwargs: Any) -> PaymentRejected:
    assert key in REJECT_KEYS
    with pytest.raises(PaymentRejected) as caught:
        call(*args, **kwargs)
    assert caught.value.key == key, caught.value.message
    return caught.value


# ---------------------------------------------------------------------------- WeChat Pay


def test_wechat_payment_is_read_exactly() -> None:
    headers, body = _notification(_transaction())
    notice = payments.wechat_notification(_wechat(), headers, body, NOW + 299)
    assert notice == PaymentNotice(
        provider="wechat",
        kind="paid",
        transaction_id="4200000001202601011234567890",
        order_id="PME20260101A1B2C3D4E5F6",
        amount=Decimal("12.34"),
        merchant_id=MCHID,
        app_id=APPID,
        time="2026-01-01T08:00:00+08:00",
        notice_id="EV-2018022511223320873",
    )
    assert str(notice.amount) == "12.34"
    assert notice.notice_key == "wechat:paid:4200000001202601011234567890"


@pytest.mark.parametrize(
    ("fen", "yuan"), [(1, "0.01"), (10, "0.10"), (100, "1.00"), (9_999_999_999, "99999999.99")]
)
def test_fen_convert_to_yuan_exactly(fen: int, yuan: str) -> None:
    headers, body = _notification(_transaction(amount={"total": fen, "currency": "CNY"}))
    notice = payments.wechat_notification(_wechat(), headers, body, NOW)
    assert isinstance(notice, PaymentNotice)
    assert str(notice.amount) == yuan
    assert payments.yuan_to_fen(notice.amount) == fen


def test_headers_are_case_insensitive() -> None:
    headers, body = _notification(_transaction())
    lower = {name.lower(): value for name, value in headers.items()}
    assert isinstance(payments.wechat_notification(_wechat(), lower, body, NOW), PaymentNotice)


def test_wechat_refund_is_read() -> None:
    refund = {
        "mchid": MCHID,
        "out_trade_no": "PME20260101A1B2C3D4E5F6",
        "transaction_id": "4200000001202601011234567890",
        "out_refund_no": "R1",
        "refund_id": "50000000382019052709732678859",
        "refund_status": "SUCCESS",
        "success_time": "2026-01-02T10:00:00+08:00",
        "user_received_account": "招商银行信用卡0403",
        "amount": {"total": 1234, "refund": 500, "payer_total": 1234, "payer_refund": 500},
    }
    headers, body = _notification(refund, event_type="REFUND.SUCCESS")
    notice = payments.wechat_notification(_wechat(), headers, body, NOW)
    assert isinstance(notice, PaymentNotice)
    assert (notice.kind, notice.amount, notice.refund_id) == (
        "refund",
        Decimal("5.00"),
        "50000000382019052709732678859",
    )
    assert notice.notice_key == "wechat:refund:50000000382019052709732678859"
    headers, body = _notification(
        {**refund, "refund_status": "ABNORMAL"}, event_type="REFUND.ABNORMAL"
    )
    assert isinstance(payments.wechat_notification(_wechat(), headers, body, NOW), Ignored)
    headers, body = _notification(
        {**refund, "amount": {"total": 1234, "refund": 1235}}, event_type="REFUND.SUCCESS"
    )
    _rejected("malformed", payments.wechat_notification, _wechat(), headers, body, NOW)


def test_unpaid_trade_state_is_ignored_not_credited() -> None:
    headers, body = _notification(_transaction(trade_state="NOTPAY"))
    result = payments.wechat_notification(_wechat(), headers, body, NOW)
    assert result == Ignored("wechat", "PME20260101A1B2C3D4E5F6", "trade_state NOTPAY")


def test_bad_signature_tampered_body() -> None:
    headers, body = _notification(_transaction())
    tampered = body.replace(b'"summary"', b'"summarY"')
    assert tampered != body
    _rejected("bad_signature", payments.wechat_notification, _wechat(), headers, tampered, NOW)


def test_bad_signature_other_key_missing_or_garbage() -> None:
    headers, body = _notification(_transaction(), signer=OTHER)
    _rejected("bad_signature", payments.wechat_notification, _wechat(), headers, body, NOW)
    headers, body = _notification(_transaction())
    for broken in ("", "not base64 !!", base64.b64encode(b"x" * 256).decode()):
        changed = {**headers, "Wechatpay-Signature": broken}
        _rejected("bad_signature", payments.wechat_notification, _wechat(), changed, body, NOW)
    # WeChat Pay's probe signatures ("WECHATPAY/SIGNTEST/...") do not verify either.
    probe = {
        **headers,
        "Wechatpay-Signature": "WECHATPAY/SIGNTEST/" + headers["Wechatpay-Signature"],
    }
    _rejected("bad_signature", payments.wechat_notification, _wechat(), probe, body, NOW)


@pytest.mark.parametrize("offset", [301, -301, 86_400])
def test_stale_timestamp(offset: int) -> None:
    headers, body = _notification(_transaction(), ts=NOW - offset)
    _rejected("stale_timestamp", payments.wechat_notification, _wechat(), headers, body, NOW)


def test_unknown_serial() -> None:
    headers, body = _notification(_transaction(), serial="PUB_KEY_ID_0000000000000000000000")
    _rejected("unknown_serial", payments.wechat_notification, _wechat(), headers, body, NOW)
    # A second platform key (a certificate rotation) is used by its serial.
    merchant = _wechat(platform_keys={SERIAL: PLATFORM.public_key(), "NEW": OTHER.public_key()})
    headers, body = _notification(_transaction(), serial="NEW", signer=OTHER)
    assert isinstance(payments.wechat_notification(merchant, headers, body, NOW), PaymentNotice)


def test_undecryptable() -> None:
    headers, body = _notification(_transaction(), apiv3=b"X" * 32)
    _rejected("undecryptable", payments.wechat_notification, _wechat(), headers, body, NOW)
    envelope = json.loads(_notification(_transaction())[1])
    envelope["resource"]["algorithm"] = "AEAD_AES_128_GCM"
    body = json.dumps(envelope).encode()
    headers = _resigned(body)
    _rejected("undecryptable", payments.wechat_notification, _wechat(), headers, body, NOW)


def _resigned(body: bytes, ts: int = NOW) -> dict[str, str]:
    nonce = "N"
    return {
        "Wechatpay-Serial": SERIAL,
        "Wechatpay-Timestamp": str(ts),
        "Wechatpay-Nonce": nonce,
        "Wechatpay-Signature": _sign(PLATFORM, f"{ts}\n{nonce}\n".encode() + body + b"\n"),
    }


@pytest.mark.parametrize("field", ["mchid", "appid"])
def test_unknown_merchant(field: str) -> None:
    headers, body = _notification(_transaction(**{field: "someone else"}))
    _rejected("unknown_merchant", payments.wechat_notification, _wechat(), headers, body, NOW)


@pytest.mark.parametrize(
    "data",
    [
        b"not json",
        b"[1, 2]",
        json.dumps(_transaction(amount={"total": "1234", "currency": "CNY"})).encode(),
        json.dumps(_transaction(amount={"total": True, "currency": "CNY"})).encode(),
        json.dumps(_transaction(amount={"total": -5, "currency": "CNY"})).encode(),
        json.dumps(_transaction(amount={"total": 0, "currency": "CNY"})).encode(),
        json.dumps(_transaction(out_trade_no="")).encode(),
        json.dumps(_transaction(transaction_id=None)).encode(),
        json.dumps(_transaction(amount=None)).encode(),
    ],
)
def test_malformed_resource(data: bytes) -> None:
    headers, body = _notification(data)
    _rejected("malformed", payments.wechat_notification, _wechat(), headers, body, NOW)


def test_malformed_envelope_and_timestamp() -> None:
    body = b'{"resource": "none"}'
    _rejected("malformed", payments.wechat_notification, _wechat(), _resigned(body), body, NOW)
    headers = {**_resigned(body), "Wechatpay-Timestamp": "12.5"}
    _rejected("malformed", payments.wechat_notification, _wechat(), headers, body, NOW)
    big = b" " * (payments.MAX_BODY + 1)
    _rejected("malformed", payments.wechat_notification, _wechat(), _resigned(big), big, NOW)


def test_wrong_currency() -> None:
    headers, body = _notification(_transaction(amount={"total": 100, "currency": "USD"}))
    _rejected("wrong_currency", payments.wechat_notification, _wechat(), headers, body, NOW)


@settings(max_examples=60, deadline=None)
@given(body=st.binary(max_size=300), headers=st.dictionaries(st.text(max_size=20), st.text()))
def test_anything_wechat_sends_is_a_notice_or_one_rejection(
    body: bytes, headers: dict[str, str]
) -> None:
    for sent in (headers, {**_resigned(body), **headers}, _resigned(body)):
        _notice_or_rejection(payments.wechat_notification, _wechat(), sent, body, NOW)


def _authorization(header: str) -> dict[str, str]:
    scheme, _, rest = header.partition(" ")
    assert scheme == "WECHATPAY2-SHA256-RSA2048"
    fields = {}
    for part in rest.split(","):
        name, _, value = part.partition("=")
        assert value.startswith('"') and value.endswith('"')
        fields[name] = value[1:-1]
    return fields


def test_native_order_request_is_signed_as_the_v3_api_requires() -> None:
    merchant = _wechat()
    request = payments.wechat_native_request(
        merchant,
        order_id="PME20260101A1B2C3D4E5F6",
        amount=Decimal("50.00"),
        description="电费充值 Building 1-101",
        notify_url="https://ha.example.com/api/webhook/abc",
        expires_at=NOW + 900,
        now=NOW,
    )
    assert request.method == "POST"
    assert request.url == "https://api.mch.weixin.qq.com/v3/pay/transactions/native"
    fields = _authorization(request.headers["Authorization"])
    assert fields["mchid"] == MCHID and fields["timestamp"] == str(NOW)
    assert fields["serial_no"] == merchant.serial_no
    message = (
        f"POST\n/v3/pay/transactions/native\n{NOW}\n{fields['nonce_str']}\n".encode()
        + request.body
        + b"\n"
    )
    _verify(MERCHANT.public_key(), message, fields["signature"])
    body = json.loads(request.body)
    assert body == {
        "appid": APPID,
        "mchid": MCHID,
        "description": "电费充值 Building 1-101",
        "out_trade_no": "PME20260101A1B2C3D4E5F6",
        "time_expire": "2026-01-01T08:15:00+08:00",
        "notify_url": "https://ha.example.com/api/webhook/abc",
        "amount": {"total": 5000, "currency": "CNY"},
    }
    with pytest.raises(ValueError, match="fen"):
        payments.wechat_native_request(
            merchant,
            order_id="X",
            amount=Decimal("0.001"),
            description="x",
            notify_url="https://x",
            expires_at=NOW,
            now=NOW,
        )


def test_native_answer_is_verified_before_its_code_url_is_used() -> None:
    body = b'{"code_url":"weixin://wxpay/bizpayurl?pr=p4lpSuKzz"}'
    assert (
        payments.wechat_native_response(_wechat(), 200, _resigned(body), body, NOW)
        == "weixin://wxpay/bizpayurl?pr=p4lpSuKzz"
    )
    forged = b'{"code_url":"weixin://wxpay/bizpayurl?pr=evil0000"}'
    _rejected(
        "bad_signature",
        payments.wechat_native_response,
        _wechat(),
        200,
        _resigned(body),
        forged,
        NOW,
    )
    _rejected(
        "stale_timestamp",
        payments.wechat_native_response,
        _wechat(),
        200,
        _resigned(body, NOW - 600),
        body,
        NOW,
    )
    error = _rejected(
        "provider_error",
        payments.wechat_native_response,
        _wechat(),
        400,
        {},
        b'{"code":"PARAM_ERROR","message":"out_trade_no too long"}',
        NOW,
    )
    assert "PARAM_ERROR" in error.message
    gateway = _rejected(
        "provider_error",
        payments.wechat_native_response,
        _wechat(),
        502,
        {},
        b"<html>Bad Gateway</html>",
        NOW,
    )
    assert "502" in gateway.message
    other = b'{"code_url":"https://evil.example"}'
    _rejected(
        "malformed", payments.wechat_native_response, _wechat(), 200, _resigned(other), other, NOW
    )


def test_answers() -> None:
    assert payments.wechat_answer(True) == (204, b"")
    status, body = payments.wechat_answer(False, "验签失败")
    assert status >= 400 and json.loads(body) == {"code": "FAIL", "message": "验签失败"}
    assert payments.alipay_answer(True) == (200, b"success")
    assert payments.alipay_answer(False) == (200, b"fail")


# ---------------------------------------------------------------------------- Alipay


def _alipay_form(signer: rsa.RSAPrivateKey = ALIPAY, /, **changes: str) -> dict[str, str]:
    form = {
        "gmt_create": "2026-01-01 08:00:00",
        "charset": "utf-8",
        "seller_email": "merchant@example.com",
        "subject": "电费充值",
        "buyer_id": "2088102122524333",
        "invoice_amount": "12.30",
        "notify_id": "2026010100222080000056541444333",
        "fund_bill_list": '[{"amount":"12.30","fundChannel":"ALIPAYACCOUNT"}]',
        "notify_type": "trade_status_sync",
        "trade_status": "TRADE_SUCCESS",
        "receipt_amount": "12.30",
        "app_id": APP_ID,
        "buyer_pay_amount": "12.30",
        "seller_id": SELLER,
        "gmt_payment": "2026-01-01 08:00:05",
        "notify_time": "2026-01-01 08:00:06",
        "passback_params": "",
        "version": "1.0",
        "out_trade_no": "PME20260101A1B2C3D4E5F6",
        "total_amount": "12.30",
        "trade_no": "2026010122001424330500000001",
        "auth_app_id": APP_ID,
        "buyer_logon_id": "abc***@example.com",
        "point_amount": "0.00",
        "sign_type": "RSA2",
    }
    form.update(changes)
    content = "&".join(
        f"{k}={v}" for k, v in sorted(form.items()) if k not in ("sign", "sign_type") and v
    )
    form["sign"] = _sign(signer, content.encode())
    return form


def test_alipay_payment_is_read_exactly() -> None:
    notice = payments.alipay_notification(_alipay(), _alipay_form())
    assert notice == PaymentNotice(
        provider="alipay",
        kind="paid",
        transaction_id="2026010122001424330500000001",
        order_id="PME20260101A1B2C3D4E5F6",
        amount=Decimal("12.30"),
        merchant_id=SELLER,
        app_id=APP_ID,
        time="2026-01-01 08:00:05",
        notice_id="2026010100222080000056541444333",
    )
    finished = payments.alipay_notification(_alipay(), _alipay_form(trade_status="TRADE_FINISHED"))
    assert isinstance(finished, PaymentNotice)
    assert finished.notice_key == notice.notice_key  # the same trade: credited once


@pytest.mark.parametrize(("text", "yuan"), [("0.01", "0.01"), ("7", "7.00"), ("12.3", "12.30")])
def test_yuan_text_is_exact(text: str, yuan: str) -> None:
    notice = payments.alipay_notification(_alipay(), _alipay_form(total_amount=text))
    assert isinstance(notice, PaymentNotice)
    assert str(notice.amount) == yuan


def test_alipay_waiting_and_closed_trades_are_ignored() -> None:
    for status in ("WAIT_BUYER_PAY", "TRADE_CLOSED"):
        result = payments.alipay_notification(_alipay(), _alipay_form(trade_status=status))
        assert isinstance(result, Ignored)


def test_alipay_refund_carries_the_total_refunded() -> None:
    form = _alipay_form(refund_fee="5.00", gmt_refund="2026-01-02 10:00:00.123", out_biz_no="RF-1")
    notice = payments.alipay_notification(_alipay(), form)
    assert isinstance(notice, PaymentNotice)
    assert (notice.kind, notice.amount, notice.refund_id, notice.cumulative) == (
        "refund",
        Decimal("5.00"),
        "RF-1",
        True,
    )
    full = payments.alipay_notification(
        _alipay(),
        _alipay_form(trade_status="TRADE_CLOSED", refund_fee="12.30", gmt_close="x"),
    )
    assert isinstance(full, PaymentNotice) and full.kind == "refund"
    assert full.notice_key != notice.notice_key
    _rejected(
        "malformed", payments.alipay_notification, _alipay(), _alipay_form(refund_fee="12.31")
    )


def test_alipay_bad_signature() -> None:
    form = _alipay_form()
    tampered = {**form, "total_amount": "1230.00"}
    _rejected("bad_signature", payments.alipay_notification, _alipay(), tampered)
    _rejected("bad_signature", payments.alipay_notification, _alipay(), _alipay_form(OTHER))
    for sign in ("", "%%%", base64.b64encode(b"0" * 256).decode()):
        _rejected("bad_signature", payments.alipay_notification, _alipay(), {**form, "sign": sign})
    unsigned = {k: v for k, v in form.items() if k != "sign"}
    _rejected("bad_signature", payments.alipay_notification, _alipay(), unsigned)
    _rejected(
        "bad_signature", payments.alipay_notification, _alipay(), {**form, "sign_type": "RSA"}
    )
    # An empty value is not signed: adding one changes nothing, a non-empty one breaks it.
    assert isinstance(payments.alipay_notification(_alipay(), {**form, "body": ""}), PaymentNotice)
    _rejected("bad_signature", payments.alipay_notification, _alipay(), {**form, "body": "x"})


@pytest.mark.parametrize("field", ["app_id", "seller_id"])
def test_alipay_unknown_merchant(field: str) -> None:
    form = _alipay_form(**{field: "2088000000000000"})
    _rejected("unknown_merchant", payments.alipay_notification, _alipay(), form)


@pytest.mark.parametrize(
    "changes",
    [
        {"total_amount": "12.345"},
        {"total_amount": "1e2"},
        {"total_amount": "-1.00"},
        {"total_amount": "NaN"},
        {"total_amount": "\uff11\uff12"},  # full-width digits
        {"total_amount": "0.00"},
        {"out_trade_no": ""},
        {"trade_no": ""},
    ],
)
def test_alipay_malformed(changes: dict[str, str]) -> None:
    _rejected("malformed", payments.alipay_notification, _alipay(), _alipay_form(**changes))


def test_alipay_form_is_read_in_its_charset() -> None:
    form = _alipay_form()
    body = "&".join(f"{k}={quote(v, safe='')}" for k, v in form.items()).encode()
    assert payments.parse_alipay_form(body) == form
    gbk = _alipay_form(charset="gbk")
    body = "&".join(f"{k}={quote(v, safe='', encoding='gbk')}" for k, v in gbk.items()).encode()
    parsed = payments.parse_alipay_form(body)
    assert parsed["subject"] == "电费充值"
    assert isinstance(payments.alipay_notification(_alipay(), parsed), PaymentNotice)
    _rejected("malformed", payments.parse_alipay_form, b"a=1&a=2")
    _rejected("malformed", payments.parse_alipay_form, b"subject=%FF%FE&charset=utf-8")
    _rejected("malformed", payments.parse_alipay_form, b"charset=ebcdic")


@settings(max_examples=60, deadline=None)
@given(form=st.dictionaries(st.sampled_from(list(_alipay_form())), st.text(max_size=30)))
def test_anything_alipay_sends_is_a_notice_or_one_rejection(form: dict[str, str]) -> None:
    for sent in (form, {**_alipay_form(), **form}):
        _notice_or_rejection(payments.alipay_notification, _alipay(), sent)


def test_precreate_request_is_signed_over_every_parameter_but_sign() -> None:
    request = payments.alipay_precreate_request(
        _alipay(),
        order_id="PME20260101A1B2C3D4E5F6",
        amount=Decimal("30"),
        subject="电费充值 1-101",
        notify_url="https://ha.example.com/api/webhook/abc",
        now=NOW,
    )
    assert request.url == "https://openapi.alipay.com/gateway.do"
    form = dict(parse_qsl(request.body.decode()))
    assert form["method"] == "alipay.trade.precreate"
    assert form["timestamp"] == "2026-01-01 08:00:00"
    assert (form["charset"], form["sign_type"], form["version"], form["app_id"]) == (
        "utf-8",
        "RSA2",
        "1.0",
        APP_ID,
    )
    biz = json.loads(form["biz_content"])
    assert (biz["out_trade_no"], biz["total_amount"], biz["subject"]) == (
        "PME20260101A1B2C3D4E5F6",
        "30.00",
        "电费充值 1-101",
    )
    content = "&".join(f"{k}={v}" for k, v in sorted(form.items()) if k != "sign" and v)
    _verify(APP.public_key(), content.encode(), form["sign"])


def _precreate_answer(member: str, signer: rsa.RSAPrivateKey | None = ALIPAY) -> bytes:
    sign = "" if signer is None else f', "sign" : "{_sign(signer, member.encode())}"'
    return ('{ "alipay_trade_precreate_response" :' + member + sign + " }").encode()


def test_precreate_answer_is_verified_over_its_exact_text() -> None:
    member = (
        '{"code":"10000", "msg":"Success","out_trade_no":"PME20260101A1B2C3D4E5F6",'
        '"qr_code":"https:\\/\\/qr.alipay.com\\/bax08431ehalbs2e1p0q6091"}'
    )
    qr = payments.alipay_precreate_response(
        _alipay(), "PME20260101A1B2C3D4E5F6", _precreate_answer(member)
    )
    assert qr == "https://qr.alipay.com/bax08431ehalbs2e1p0q6091"
    # The same JSON written otherwise is not what Alipay signed.
    signed = _sign(ALIPAY, member.encode())
    respaced = json.dumps(
        {"alipay_trade_precreate_response": json.loads(member), "sign": signed}
    ).encode()
    _rejected(
        "bad_signature",
        payments.alipay_precreate_response,
        _alipay(),
        "PME20260101A1B2C3D4E5F6",
        respaced,
    )
    _rejected(
        "bad_signature",
        payments.alipay_precreate_response,
        _alipay(),
        "PME20260101A1B2C3D4E5F6",
        _precreate_answer(member, OTHER),
    )
    _rejected(
        "malformed",
        payments.alipay_precreate_response,
        _alipay(),
        "PMEOTHER",
        _precreate_answer(member),
    )
    refused = (
        '{"code":"40004","msg":"Business Failed","sub_code":"ACQ.TOTAL_FEE_EXCEED",'
        '"sub_msg":"订单金额超过限额"}'
    )
    error = _rejected(
        "provider_error",
        payments.alipay_precreate_response,
        _alipay(),
        "X",
        _precreate_answer(refused, None),
    )
    assert "ACQ.TOTAL_FEE_EXCEED" in error.message
    for junk in (b"", b"[]", b'{"a":1} x', b'{"alipay_trade_precreate_response":1}'):
        _rejected("malformed", payments.alipay_precreate_response, _alipay(), "X", junk)


# ---------------------------------------------------------------------------- keys


def _pem_private(key: Any) -> bytes:
    return bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )


def _pem_public(key: Any) -> bytes:
    if hasattr(key, "public_key"):
        key = key.public_key()
    return bytes(
        key.public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )


def _certificate(key: rsa.RSAPrivateKey, serial: int) -> bytes:
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "Tenpay.com Root CA")])
    start = datetime(2026, 1, 1, tzinfo=UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(serial)
        .not_valid_before(start)
        .not_valid_after(start + timedelta(days=365))
        .sign(key, hashes.SHA256())
    )
    return certificate.public_bytes(serialization.Encoding.PEM)


def test_keys_load_from_their_usual_forms() -> None:
    assert payments.load_private_key(_pem_private(MERCHANT)).private_numbers() == (
        MERCHANT.private_numbers()
    )
    pkcs1 = MERCHANT.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.TraditionalOpenSSL,
        serialization.NoEncryption(),
    )
    assert payments.load_private_key(pkcs1).key_size == 2048
    want = PLATFORM.public_key().public_numbers()
    assert payments.load_public_key(_pem_public(PLATFORM)).public_numbers() == want
    certificate = _certificate(PLATFORM, 0x5157F09EFDC096DE15EBE81A47057A7232F1B8E1)
    assert payments.load_public_key(certificate).public_numbers() == want
    assert payments.certificate_serial(certificate) == SERIAL
    bare = b"".join(_pem_public(ALIPAY).splitlines()[1:-1])  # Alipay's console shows this
    assert payments.load_public_key(bare).public_numbers() == ALIPAY.public_key().public_numbers()
    assert payments.load_apiv3_key(" " + APIV3.decode() + "\n") == APIV3
    payments.check_key_pair(MERCHANT, MERCHANT.public_key())


@pytest.mark.parametrize(
    ("call", "data", "key"),
    [
        (payments.load_private_key, None, "key_missing"),
        (payments.load_private_key, b"  \n", "key_missing"),
        (payments.load_private_key, b"-----BEGIN PRIVATE KEY-----\nxx\n", "key_unreadable"),
        (payments.load_private_key, _pem_public(MERCHANT), "key_unreadable"),
        (payments.load_public_key, None, "key_missing"),
        (payments.load_public_key, b"@@not base64@@", "key_unreadable"),
        (payments.load_public_key, _pem_private(MERCHANT), "key_unreadable"),
        (payments.load_apiv3_key, None, "key_missing"),
        (payments.load_apiv3_key, "short", "apiv3_key_invalid"),
        (payments.load_apiv3_key, "0123456789abcdef 123456789abcdef", "apiv3_key_invalid"),
    ],
)
def test_wrong_keys_say_what_is_wrong(call: Any, data: Any, key: str) -> None:
    with pytest.raises(KeyProblem) as caught:
        call(data)
    assert caught.value.key == key
    assert isinstance(caught.value, ValueError)


def test_keys_that_are_not_rsa_2048_are_refused() -> None:
    curve = ec.generate_private_key(ec.SECP256R1())
    with pytest.raises(KeyProblem) as caught:
        payments.load_private_key(_pem_private(curve))
    assert caught.value.key == "key_not_rsa"
    with pytest.raises(KeyProblem) as caught:
        payments.load_public_key(_pem_public(curve.public_key()))
    assert caught.value.key == "key_not_rsa"
    small = rsa.generate_private_key(public_exponent=65537, key_size=1024)
    with pytest.raises(KeyProblem) as caught:
        payments.load_private_key(_pem_private(small))
    assert caught.value.key == "key_too_short"
    with pytest.raises(KeyProblem) as caught:
        payments.check_key_pair(MERCHANT, OTHER.public_key())
    assert caught.value.key == "key_pair_mismatch"


def test_no_secret_in_a_repr_or_a_message() -> None:
    merchant = _wechat()
    text = repr(merchant) + repr(_alipay())
    assert APIV3.decode() not in text and "private_key" not in text and "apiv3" not in text
    pem = _pem_private(MERCHANT)
    broken = pem[:200] + b"!" + pem[201:]
    with pytest.raises(KeyProblem) as caught:
        payments.load_private_key(broken)
    assert pem[40:80].decode() not in str(caught.value)
    headers, body = _notification(_transaction(), apiv3=b"Y" * 32)
    error = _rejected("undecryptable", payments.wechat_notification, merchant, headers, body, NOW)
    assert APIV3.decode() not in error.message


def test_every_reject_key_is_documented_snake_case() -> None:
    for key in REJECT_KEYS:
        assert key == key.lower() and " " not in key
    assert urlsplit(payments.WECHAT_API).scheme == "https"
