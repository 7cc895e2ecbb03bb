"""Statements of the providers: reading both formats, comparing with the ledger, resolving."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, date, datetime
from decimal import Decimal
import json
from pathlib import Path
import sqlite3
from zoneinfo import ZoneInfo

import pytest

from custom_components.prepaid_meter.engine.actor import Actor
from custom_components.prepaid_meter.engine.community import Community
from custom_components.prepaid_meter.engine.ledger import EntryKind, Ledger, SubAccount
from custom_components.prepaid_meter.engine.orders import (
    Credit,
    Duplicate,
    Order,
    PaymentDesk,
    Recorded,
    Reverse,
    Unmatched,
)
from custom_components.prepaid_meter.engine.payments import PaymentNotice
from custom_components.prepaid_meter.engine.policy import PolicyConfig
from custom_components.prepaid_meter.engine.reconcile import (
    Reconciler,
    StatementError,
    parse_alipay,
    parse_statement,
    parse_wechat,
)
from custom_components.prepaid_meter.engine.tariff import load_preset

SHANGHAI = ZoneInfo("Asia/Shanghai")
NOON = int(datetime(2026, 11, 30, 4, 0, tzinfo=UTC).timestamp())  # 12:00 in Shanghai
DAY = date(2026, 11, 30)
A, B = "b3-501", "b3-502"
OPS = Actor("operator", user_id="u-ops", name="Ops")
E = SubAccount.ELECTRICITY

WECHAT_HEADER = (
    "交易时间,公众账号ID,商户号,特约商户号,设备号,微信订单号,商户订单号,用户标识,交易类型,交易状态,"
    "付款银行,货币种类,应结订单金额,代金券金额,微信退款单号,商户退款单号,退款金额,充值券退款金额,"
    "退款类型,退款状态,商品名称,商户数据包,手续费,费率,订单金额,申请退款金额,费率备注"
)
WECHAT_SUMMARY = (
    "总交易单数,应结订单总金额,退款总金额,充值券退款总金额,手续费总金额,订单总金额,申请退款总金额"
)
ALIPAY_HEADER = (
    "支付宝交易号,商户订单号,业务类型,商品名称,创建时间,完成时间,门店编号,门店名称,操作员,终端号,"
    "对方账户,订单金额（元）,商家实收（元）,支付宝红包（元）,集分宝（元）,支付宝优惠（元）,"
    "商家优惠（元）,券核销金额（元）,券名称,商家红包消费金额（元）,卡消费金额（元）,"
    "退款批次号/请求号,服务费（元）,分润（元）,备注"
)


def wechat_line(
    when: str,
    txn: str,
    order: str,
    amount: str,
    state: str = "SUCCESS",
    refund_id: str = "0",
    refund: str = "0.00",
) -> str:
    fields = [
        when, "wx2421b1c4370ec43b", "1900000109", "0", "", txn, order, "oUpF8uMuAJO_M2pxb1Q9",
        "NATIVE", state, "OTHERS", "CNY", amount, "0.00", refund_id,
        "R" + order if state == "REFUND" else "0", refund, "0.00",
        "ORIGINAL" if state == "REFUND" else "", "SUCCESS" if state == "REFUND" else "",
        "电费 b3-501", "", "0.06000", "0.60%", amount, refund, "",
    ]  # fmt: skip
    return ",".join("`" + f for f in fields)


def wechat_bill(*lines: str, count: int | None = None, bom: bool = False) -> bytes:
    summary = f"`{len(lines) if count is None else count},`0.00,`0.00,`0.00,`0.00000,`0.00,`0.00"
    text = "\r\n".join([WECHAT_HEADER, *lines, WECHAT_SUMMARY, summary]) + "\r\n"
    return (b"\xef\xbb\xbf" if bom else b"") + text.encode("utf-8")


def alipay_line(txn: str, order: str, amount: str, refund_no: str = "") -> str:
    kind = "退款" if refund_no else "交易"
    fields = [
        f"{txn}\t", f"{order}\t", kind, "电费 b3-501", "2026-11-30 10:00:00", "2026-11-30 10:00:05",
        "", "", "", "", "buyer@example.com", amount, amount, "0.00", "0.00", "0.00", "0.00",
        "0.00", "", "0.00", "0.00", f"{refund_no}\t" if refund_no else "", "-0.06", "0.00", "",
    ]  # fmt: skip
    return ",".join(fields)


def alipay_bill(
    *lines: str, paid: int | None = None, refunds: int = 0, encoding: str = "gbk"
) -> bytes:
    count = sum(1 for line in lines if ",交易," in line) if paid is None else paid
    text = "\r\n".join(
        [
            "#支付宝业务明细查询",
            "#账号：[20881234567890120156]",
            "#起始日期：[2026年11月30日 00:00:00]   终止日期：[2026年12月01日 00:00:00]",
            "#-----------------------------------------业务明细列表----------------------------------------",
            ALIPAY_HEADER,
            *lines,
            "#-----------------------------------------业务明细列表结束------------------------------------",
            f"#交易合计：{count}笔，商家实收共0.00元，商家优惠共0.00元",
            f"#退款合计：{refunds}笔，商家实收退款共0.00元，商家优惠退款共0.00元",
            "#导出时间：[2026年12月01日 10:00:00]",
        ]
    )
    return (text + "\r\n").encode(encoding)


def _refused(key: str, provider: str, data: bytes) -> StatementError:
    with pytest.raises(StatementError) as caught:
        parse_statement(provider, data)
    assert caught.value.key == key, str(caught.value)
    return caught.value


# ---------------------------------------------------------------------------- reading


@pytest.mark.parametrize("bom", [False, True])
def test_a_wechat_bill_is_read_exactly(bom: bool) -> None:
    data = wechat_bill(
        wechat_line("2026-11-30 10:00:00", "4200000001", "PME1", "50.01"),
        wechat_line("2026-11-30 11:00:00", "4200000002", "PME2", "0.10"),
        wechat_line("2026-11-30 12:00:00", "4200000003", "PME3", "7.00", state="REVOKED"),
        wechat_line(
            "2026-11-30 13:00:00", "4200000001", "PME1", "50.01", "REFUND", "5030000001", "20.00"
        ),
        bom=bom,
    )
    statement = parse_wechat(data)
    assert statement.provider == "wechat" and statement.payments and statement.refunds
    assert [
        (r.kind, r.transaction_id, r.order_id, r.amount, r.refund_id) for r in statement.rows
    ] == [
        ("paid", "4200000001", "PME1", Decimal("50.01"), ""),
        ("paid", "4200000002", "PME2", Decimal("0.10"), ""),
        ("refund", "4200000001", "PME1", Decimal("20.00"), "5030000001"),
    ]  # the revoked trade moved no money that stays
    assert all(isinstance(r.amount, Decimal) for r in statement.rows)
    first = statement.rows[0].time
    assert first is not None and first.utcoffset() is not None
    assert first.astimezone(UTC) == datetime(2026, 11, 30, 2, 0, tzinfo=UTC)  # CST
    assert statement.day is None and statement.inferred_day() == DAY


def test_an_alipay_bill_in_gbk_is_read_with_its_comments() -> None:
    data = alipay_bill(
        alipay_line("2026113022001400001", "PME1", "30.00"),
        alipay_line("2026113022001400002", "PME2", "12.34"),
        alipay_line("2026113022001400001", "PME1", "-10.00", refund_no="RFPME11"),
        refunds=1,
    )
    with pytest.raises(UnicodeDecodeError):
        data.decode("utf-8")  # really GBK
    statement = parse_alipay(data)
    assert statement.day == DAY
    assert [
        (r.kind, r.transaction_id, r.order_id, r.amount, r.refund_id) for r in statement.rows
    ] == [
        ("paid", "2026113022001400001", "PME1", Decimal("30.00"), ""),
        ("paid", "2026113022001400002", "PME2", Decimal("12.34"), ""),
        ("refund", "2026113022001400001", "PME1", Decimal("10.00"), "RFPME11"),
    ]
    # The same file saved as UTF-8 (an operator's spreadsheet) reads the same.
    again = parse_alipay(
        alipay_bill(
            alipay_line("2026113022001400001", "PME1", "30.00"),
            alipay_line("2026113022001400002", "PME2", "12.34"),
            alipay_line("2026113022001400001", "PME1", "-10.00", refund_no="RFPME11"),
            refunds=1,
            encoding="utf-8-sig",
        )
    )
    assert again.rows == statement.rows


def test_broken_files_are_refused_with_one_reason() -> None:
    good = wechat_line("2026-11-30 10:00:00", "4200000001", "PME1", "50.00")
    _refused("statement_empty", "wechat", b"  \r\n")
    _refused("statement_encoding", "wechat", b"\x00\x01\x02\xff\xfe")
    _refused("statement_not_provider", "wechat", alipay_bill(alipay_line("1", "PME1", "1.00")))
    _refused("statement_not_provider", "alipay", wechat_bill(good))
    # Cut short: the summary is missing, or counts more lines than there are.
    whole = wechat_bill(good)
    _refused("statement_truncated", "wechat", whole[: whole.index("总交易单数".encode())])
    _refused("statement_truncated", "wechat", whole[: whole.index(b"NATIVE") - 30])
    _refused("statement_truncated", "wechat", whole[: whole.index("总交易单数".encode()) + 4])
    _refused("statement_truncated", "wechat", wechat_bill(good, count=2))
    _refused("statement_truncated", "alipay", alipay_bill(alipay_line("1", "PME1", "1.00"), paid=2))
    cut = alipay_bill(alipay_line("1", "PME1", "1.00")).split("#---".encode("gbk"))
    _refused("statement_truncated", "alipay", b"#---".join(cut[:2]))
    bad = _refused(
        "statement_bad_amount",
        "wechat",
        wechat_bill(wechat_line("2026-11-30 10:00:00", "4200000001", "PME1", "1.2.3")),
    )
    assert bad.placeholders == {"line": "2", "value": "1.2.3"}
    _refused("statement_bad_amount", "alipay", alipay_bill(alipay_line("1", "PME1", "0.001")))
    short = wechat_bill("`2026-11-30 10:00:00,`wx1,`1900000109")
    _refused("statement_bad_line", "wechat", short)
    _refused(
        "statement_bad_line", "wechat", wechat_bill(wechat_line("2026-11-30", "", "PME1", "1.00"))
    )
    _refused("invalid_provider", "paypal", wechat_bill(good))


# ---------------------------------------------------------------------------- the ledger


class Clock:
    def __init__(self, now: int) -> None:
        self.now = float(now)

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock(NOON)


@pytest.fixture
def ledger(tmp_path: Path) -> Iterator[Ledger]:
    with Ledger(tmp_path / "community.sqlite3") as opened:
        opened.ensure_household(A, "Building 3, 501", NOON - 86_400)
        opened.ensure_household(B, "Building 3, 502", NOON - 86_400)
        yield opened


@pytest.fixture
def community(ledger: Ledger, clock: Clock) -> Community:
    opened = Community(ledger, load_preset("flat"), PolicyConfig(), clock=clock)
    opened.load()
    return opened


@pytest.fixture
def desk(ledger: Ledger, clock: Clock) -> PaymentDesk:
    return PaymentDesk(ledger, clock, zone=SHANGHAI)


@pytest.fixture
def reconciler(ledger: Ledger, clock: Clock) -> Reconciler:
    return Reconciler(ledger, SHANGHAI, clock)


def _post(community: Community, desk: PaymentDesk, outcome: Credit | Reverse) -> bool:
    """Post as post_outcome does (the idempotent money calls), then confirm; return if new."""
    if isinstance(outcome, Credit) and outcome.purpose == "electricity":
        result = community.top_up(
            outcome.account_id, outcome.amount, outcome.key, outcome.provider, actor=OPS
        )
        community.apply_top_up(result)
    else:
        signed = outcome.amount if isinstance(outcome, Credit) else -outcome.amount
        result = community.post_money(
            outcome.account_id, outcome.sub, outcome.kind, signed, outcome.key, actor=OPS
        )
        community.apply_results(result)
    desk.confirm(outcome)
    return not result.results[0].duplicate


def _paid(order: Order, txn: str, amount: str | None = None) -> PaymentNotice:
    return PaymentNotice(
        provider=order.provider,
        kind="paid",
        transaction_id=txn,
        order_id=order.order_id,
        amount=order.amount if amount is None else Decimal(amount),
        time="2026-11-30T11:00:00+08:00",
    )


def _credit(community: Community, desk: PaymentDesk, order: Order, txn: str) -> None:
    outcome = desk.handle(_paid(order, txn))
    assert isinstance(outcome, Credit)
    assert _post(community, desk, outcome)


def _world(community: Community, desk: PaymentDesk) -> tuple[Order, Order, Order, Order, bytes]:
    """Three orders credited, one paid at the provider only; its statement disagrees thrice.

    - `ok` credited and listed: matched;
    - `lost` paid at the provider, its notification never arrived: missing in the ledger;
    - `extra` credited, but the statement lacks it: missing at the provider;
    - `short` credited 20.00, the statement says 25.00: an amount mismatch.
    """
    ok = desk.create_order(A, Decimal("10.00"))
    lost = desk.create_order(A, Decimal("30.00"))
    extra = desk.create_order(B, Decimal("40.00"))
    short = desk.create_order(B, Decimal("20.00"))
    _credit(community, desk, ok, "4200000001")
    _credit(community, desk, extra, "4200000003")
    _credit(community, desk, short, "4200000004")
    data = wechat_bill(
        wechat_line("2026-11-30 11:00:00", "4200000001", ok.order_id, "10.00"),
        wechat_line("2026-11-30 11:05:00", "4200000002", lost.order_id, "30.00"),
        wechat_line("2026-11-30 11:10:00", "4200000004", short.order_id, "25.00"),
    )
    return ok, lost, extra, short, data


def _invariant(ledger: Ledger) -> None:
    assert ledger.check_invariant() == []


def test_a_statement_finds_the_missing_the_extra_and_the_mismatched(
    community: Community, desk: PaymentDesk, reconciler: Reconciler, ledger: Ledger
) -> None:
    ok, lost, extra, _short, data = _world(community, desk)
    report = reconciler.import_statement("wechat", data, "wechat.csv", OPS)
    assert report["day"] == "2026-11-30" and report["lines"] == 3
    assert report["counts"] == {
        "matched": 1,
        "missing_in_ledger": 1,
        "missing_at_provider": 1,
        "amount_mismatch": 1,
    }
    assert [m["order_id"] for m in report["matched"]] == [ok.order_id]
    [missing] = report["missing_in_ledger"]
    assert (missing["order_id"], missing["household"]) == (lost.order_id, A)
    assert (missing["provider_amount"], missing["ledger_amount"]) == ("30.00", None)
    [at_provider] = report["missing_at_provider"]
    assert (at_provider["order_id"], at_provider["ledger_amount"]) == (extra.order_id, "40.00")
    assert at_provider["provider_amount"] is None and at_provider["household"] == B
    [mismatch] = report["amount_mismatch"]
    assert (mismatch["provider_amount"], mismatch["ledger_amount"]) == ("25.00", "20.00")
    assert report["open"] == 3
    # Importing the same file again keeps nothing twice.
    again = reconciler.import_statement("wechat", data, "wechat.csv", OPS)
    assert again["counts"] == report["counts"]
    assert len(ledger.recon_items()) == 3
    assert [i["item"] for i in again["missing_in_ledger"]] == [missing["item"]]
    _invariant(ledger)


def test_a_statement_on_another_day_does_not_see_the_credits_of_this_one(
    community: Community, desk: PaymentDesk, reconciler: Reconciler
) -> None:
    _world(community, desk)
    report = reconciler.import_statement(
        "wechat", wechat_bill(), "empty.csv", OPS, date(2026, 11, 29)
    )
    assert report["counts"]["missing_at_provider"] == 0
    report = reconciler.import_statement("wechat", wechat_bill(), "empty.csv", OPS, DAY)
    assert report["counts"]["missing_at_provider"] == 3


def test_resolutions_post_once_with_the_actor(
    community: Community, desk: PaymentDesk, reconciler: Reconciler, ledger: Ledger
) -> None:
    _ok, lost, _extra, _short, data = _world(community, desk)
    report = reconciler.import_statement("wechat", data, "wechat.csv", OPS)
    before_a, before_b = ledger.balance(A, E), ledger.balance(B, E)
    # Missing in the ledger: credit it as its notification would have been.
    missing = report["missing_in_ledger"][0]["item"]
    with pytest.raises(StatementError) as caught:
        reconciler.resolve(missing, "refund", OPS)
    assert caught.value.key == "statement_action_not_applicable"
    resolution = reconciler.resolve(missing, "credit", OPS)
    assert isinstance(resolution.outcome, Credit)
    assert resolution.outcome.key == "pay:wechat:4200000002"
    assert _post(community, desk, resolution.outcome)
    item = reconciler.settle(resolution)
    assert (item.state, item.action, item.resolved_by) == ("resolved", "credit", str(OPS))
    assert (item.amount, item.entry_key) == (Decimal("30.00"), "topup:pay:wechat:4200000002")
    assert ledger.balance(A, E) == before_a + Decimal("30.00")
    entry = ledger.entry_by_key("topup:pay:wechat:4200000002")
    assert entry is not None and str(OPS.user_id) in json.dumps(entry.meta)
    stored = desk.order(lost.order_id)
    assert stored is not None and stored.state == "paid"
    # The provider's notification arriving after all credits nothing more.
    late = desk.handle(_paid(lost, "4200000002"))
    assert isinstance(late, Duplicate)
    assert ledger.balance(A, E) == before_a + Decimal("30.00")
    # Missing at the provider: take the credit back (a refund entry).
    at_provider = report["missing_at_provider"][0]["item"]
    with pytest.raises(StatementError) as caught:
        reconciler.resolve(at_provider, "credit", OPS)
    assert caught.value.key == "statement_action_not_applicable"
    resolution = reconciler.resolve(at_provider, "refund", OPS)
    assert isinstance(resolution.outcome, Reverse)
    assert resolution.outcome.key == "reconcile:wechat:4200000003"
    assert _post(community, desk, resolution.outcome)
    assert not _post(community, desk, resolution.outcome)  # twice posts once
    item = reconciler.settle(resolution)
    assert (item.amount, item.entry_key) == (
        Decimal("-40.00"),
        "refund:reconcile:wechat:4200000003",
    )
    refund = ledger.entry_by_key("refund:reconcile:wechat:4200000003")
    assert refund is not None and refund.kind is EntryKind.REFUND
    assert ledger.balance(B, E) == before_b - Decimal("40.00")
    # The mismatch: credited 5.00 short. Dismissed (paid out of band, say): nothing posted.
    mismatch = report["amount_mismatch"][0]["item"]
    resolution = reconciler.resolve(mismatch, "dismiss", OPS)
    assert resolution.outcome is None
    item = reconciler.settle(resolution)
    assert (item.action, item.amount, item.resolved_by) == ("dismiss", None, str(OPS))
    assert ledger.balance(B, E) == before_b - Decimal("40.00")
    with pytest.raises(StatementError) as caught:
        reconciler.resolve(mismatch, "credit", OPS)
    assert caught.value.key == "statement_item_resolved"
    with pytest.raises(StatementError) as caught:
        reconciler.resolve(999, "dismiss", OPS)
    assert caught.value.key == "statement_item_unknown"
    assert reconciler.open_items() == []
    # Importing it again opens nothing resolved again, and finds the credit matched now.
    again = reconciler.import_statement("wechat", data, "wechat.csv", OPS)
    assert again["counts"]["matched"] == 2 and again["open"] == 0
    assert [i["state"] for i in again["amount_mismatch"]] == ["resolved"]
    assert not ledger.resolve_recon_item(mismatch, "credit", str(OPS), NOON)  # resolved stays
    with (
        sqlite3.connect(ledger.path, autocommit=True) as raw,
        pytest.raises(sqlite3.IntegrityError, match="stays resolved"),
    ):
        raw.execute("UPDATE recon_items SET action = 'credit' WHERE id = ?", (mismatch,))
    _invariant(ledger)


def test_a_mismatch_credited_short_is_credited_the_difference(
    community: Community, desk: PaymentDesk, reconciler: Reconciler, ledger: Ledger
) -> None:
    *_, data = _world(community, desk)
    report = reconciler.import_statement("wechat", data, "wechat.csv", OPS)
    before = ledger.balance(B, E)
    resolution = reconciler.resolve(report["amount_mismatch"][0]["item"], "credit", OPS)
    assert isinstance(resolution.outcome, Credit)
    assert (resolution.outcome.amount, resolution.outcome.key) == (
        Decimal("5.00"),
        "reconcile:wechat:4200000004",
    )
    _post(community, desk, resolution.outcome)
    reconciler.settle(resolution)
    assert ledger.balance(B, E) == before + Decimal("5.00")
    _invariant(ledger)


def test_a_late_webhook_before_resolving_closes_the_item_on_the_next_import(
    community: Community, desk: PaymentDesk, reconciler: Reconciler
) -> None:
    _ok, lost, *_, data = _world(community, desk)
    report = reconciler.import_statement("wechat", data, "wechat.csv", OPS)
    _credit(community, desk, lost, "4200000002")  # the notification arrives after all
    again = reconciler.import_statement("wechat", data, "wechat.csv", OPS)
    assert again["counts"]["missing_in_ledger"] == 0 and again["counts"]["matched"] == 2
    [item] = [
        i
        for i in reconciler.ledger.recon_items()
        if i.item_id == report["missing_in_ledger"][0]["item"]
    ]
    assert (item.state, item.action) == ("resolved", "matched")


def test_an_unmatched_payment_credited_by_reconciliation_to_another_household(
    community: Community, desk: PaymentDesk, reconciler: Reconciler, ledger: Ledger, clock: Clock
) -> None:
    order = desk.create_order(A, Decimal("15.00"))
    clock.now += 3600  # expired: its payment is unmatched
    late = PaymentNotice("wechat", "paid", "4200000009", order.order_id, Decimal("15.00"))
    assert isinstance(desk.handle(late), Unmatched)
    data = wechat_bill(wechat_line("2026-11-30 11:00:00", "4200000009", order.order_id, "15.00"))
    report = reconciler.import_statement("wechat", data, "wechat.csv", OPS)
    [item] = report["missing_in_ledger"]
    resolution = reconciler.resolve(item["item"], "credit", OPS, account_id=B)
    assert resolution.outcome is not None and resolution.outcome.account_id == B
    _post(community, desk, resolution.outcome)
    reconciler.settle(resolution)
    assert ledger.balance(B, E) == Decimal("15.00") and ledger.balance(A, E) == 0
    assert desk.unmatched() == []  # no longer waiting for the operator there either
    with pytest.raises(StatementError) as caught:
        reconciler.resolve(item["item"], "credit", OPS, account_id="nobody")
    assert caught.value.key == "statement_item_resolved"
    _invariant(ledger)


def test_a_refund_missing_in_the_ledger_is_reversed_once(
    community: Community, desk: PaymentDesk, reconciler: Reconciler, ledger: Ledger
) -> None:
    order = desk.create_order(A, Decimal("60.00"))
    _credit(community, desk, order, "4200000001")
    data = wechat_bill(
        wechat_line("2026-11-30 11:00:00", "4200000001", order.order_id, "60.00"),
        wechat_line(
            "2026-11-30 12:00:00",
            "4200000001",
            order.order_id,
            "60.00",
            "REFUND",
            "503001",
            "25.00",
        ),
    )
    report = reconciler.import_statement("wechat", data, "wechat.csv", OPS)
    [item] = report["missing_in_ledger"]
    assert (item["kind"], item["refund_id"], item["provider_amount"]) == (
        "refund",
        "503001",
        "25.00",
    )
    resolution = reconciler.resolve(item["item"], "refund", OPS)
    assert isinstance(resolution.outcome, Reverse)
    assert resolution.outcome.key == "pay:wechat-refund:503001"
    _post(community, desk, resolution.outcome)
    reconciler.settle(resolution)
    assert ledger.balance(A, E) == Decimal("35.00")
    late = PaymentNotice(
        provider="wechat",
        kind="refund",
        transaction_id="4200000001",
        order_id=order.order_id,
        amount=Decimal("25.00"),
        refund_id="503001",
    )
    assert isinstance(desk.handle(late), Duplicate)
    assert ledger.balance(A, E) == Decimal("35.00")
    assert reconciler.import_statement("wechat", data, "wechat.csv", OPS)["counts"]["matched"] == 2
    _invariant(ledger)


def test_an_alipay_refund_reversed_by_reconciliation_is_covered_for_its_notification(
    community: Community, desk: PaymentDesk, reconciler: Reconciler, ledger: Ledger
) -> None:
    order = desk.create_order(A, Decimal("30.00"), provider="alipay")
    _credit(community, desk, order, "2026113022001400001")
    data = alipay_bill(
        alipay_line("2026113022001400001", order.order_id, "30.00"),
        alipay_line("2026113022001400001", order.order_id, "-10.00", refund_no="RF1"),
        refunds=1,
    )
    report = reconciler.import_statement("alipay", data, "alipay.csv", OPS)
    assert report["counts"]["matched"] == 1
    [item] = report["missing_in_ledger"]
    resolution = reconciler.resolve(item["item"], "refund", OPS)
    assert resolution.outcome is not None
    _post(community, desk, resolution.outcome)
    reconciler.settle(resolution)
    assert ledger.balance(A, E) == Decimal("20.00")
    late = PaymentNotice(
        provider="alipay",
        kind="refund",
        transaction_id="2026113022001400001",
        order_id=order.order_id,
        amount=Decimal("10.00"),  # refund_fee: the trade's refunds so far
        refund_id="RF1",
        cumulative=True,
    )
    assert isinstance(desk.handle(late), Duplicate | Recorded)
    assert ledger.balance(A, E) == Decimal("20.00")
    _invariant(ledger)


def test_a_broken_statement_changes_nothing(
    community: Community, desk: PaymentDesk, reconciler: Reconciler, ledger: Ledger
) -> None:
    *_, data = _world(community, desk)
    with pytest.raises(StatementError):
        reconciler.import_statement("wechat", data[:-20], "cut.csv", OPS)
    with pytest.raises(StatementError) as caught:
        reconciler.import_statement("alipay", data, "wrong.csv", OPS)
    assert caught.value.key == "statement_not_provider"
    assert ledger.recon_items() == []


def test_a_payment_of_no_known_order_is_credited_to_the_household_named(
    community: Community, desk: PaymentDesk, reconciler: Reconciler, ledger: Ledger
) -> None:
    data = wechat_bill(wechat_line("2026-11-30 11:00:00", "4200000077", "SOMEONE-ELSES", "8.00"))
    report = reconciler.import_statement("wechat", data, "wechat.csv", OPS)
    [item] = report["missing_in_ledger"]
    assert item["household"] is None
    with pytest.raises(StatementError) as caught:
        reconciler.resolve(item["item"], "credit", OPS)
    assert caught.value.key == "statement_household_required"
    with pytest.raises(StatementError) as caught:
        reconciler.resolve(item["item"], "credit", OPS, account_id="nobody")
    assert caught.value.key == "unknown_household"
    assert ledger.recon_items(("open",))[0].item_id == item["item"]  # refused: still open
    resolution = reconciler.resolve(item["item"], "credit", OPS, account_id=B)
    assert resolution.outcome is not None
    assert _post(community, desk, resolution.outcome)
    reconciler.settle(resolution)
    assert ledger.balance(B, E) == Decimal("8.00")
    stored = ledger.pay_notice("wechat:paid:4200000077")
    assert stored is not None and (stored.state, stored.account_id) == ("done", B)
    _invariant(ledger)


def test_a_shorter_file_of_the_same_day_closes_only_what_it_matches(
    community: Community, desk: PaymentDesk, reconciler: Reconciler, ledger: Ledger
) -> None:
    """A re-export listing only the matched line is no proof: the payment missing in the
    ledger stays open, and no open item changes its class; a line matched now closes."""
    ok, lost, _extra, short, data = _world(community, desk)
    reconciler.import_statement("wechat", data, "wechat.csv", OPS)
    before = {item.item_key: (item.cls, item.state) for item in ledger.recon_items()}
    assert sorted(cls for cls, _ in before.values()) == [
        "amount_mismatch",
        "missing_at_provider",
        "missing_in_ledger",
    ]
    partial = wechat_bill(wechat_line("2026-11-30 11:00:00", "4200000001", ok.order_id, "10.00"))
    reconciler.import_statement("wechat", partial, "partial.csv", OPS)
    assert {i.item_key: (i.cls, i.state) for i in ledger.recon_items()} == before
    # The lost payment's notification arrives late; the full file again finds it matched.
    _credit(community, desk, lost, "4200000002")
    report = reconciler.import_statement("wechat", data, "wechat.csv", OPS)
    assert report["counts"]["matched"] == 2
    states = {i.order_id: (i.cls, i.state, i.action) for i in ledger.recon_items()}
    assert states[lost.order_id] == ("missing_in_ledger", "resolved", "matched")
    assert states[short.order_id] == ("amount_mismatch", "open", None)
    _invariant(ledger)


def test_a_day_named_that_the_file_contradicts_is_refused(
    community: Community, desk: PaymentDesk, reconciler: Reconciler, ledger: Ledger
) -> None:
    """Alipay's bill says its day (起始日期); another day named for it imports nothing."""
    _world(community, desk)
    data = alipay_bill(alipay_line("2026113022001", "PME-x", "10.00"))
    with pytest.raises(StatementError) as caught:
        reconciler.import_statement("alipay", data, "alipay.csv", OPS, date(2026, 11, 29))
    assert caught.value.key == "statement_day_differs"
    assert caught.value.placeholders == {"file_day": "2026-11-30", "day": "2026-11-29"}
    assert ledger.recon_items() == []


def test_a_wechat_refund_that_did_not_go_through_is_not_a_refund() -> None:
    """Only a refund whose 退款状态 is SUCCESS gave money back; PROCESSING, CLOSED and
    ABNORMAL ones are left out."""
    lines = [
        wechat_line("2026-11-30 12:00:00", f"42000000{n}", f"PME-{n}", "10.00", "REFUND",
                    f"5030000{n}", "10.00").replace("`SUCCESS,`电费", f"`{status},`电费")
        for n, status in enumerate(("SUCCESS", "PROCESSING", "CLOSED", "ABNORMAL"))
    ]  # fmt: skip
    statement = parse_statement("wechat", wechat_bill(*lines))
    assert [(r.kind, r.order_id) for r in statement.rows] == [("refund", "PME-0")]


def test_an_alipay_partial_refund_is_what_went_back() -> None:
    """A refund line whose 订单金额 is its order's 50.00 and 商家实收 -20.00: 20.00 went back;
    a line without 商家实收 falls back to 订单金额."""
    partial = alipay_line("2026113022002", "PME-y", "50.00", refund_no="RF-1").replace(
        ",50.00,50.00,", ",50.00,-20.00,"
    )
    whole = alipay_line("2026113022003", "PME-z", "30.00", refund_no="RF-2").replace(
        ",30.00,30.00,", ",30.00,,"
    )
    statement = parse_statement("alipay", alipay_bill(partial, whole, paid=0, refunds=2))
    assert [(r.kind, r.order_id, r.amount) for r in statement.rows] == [
        ("refund", "PME-y", Decimal("20.00")),
        ("refund", "PME-z", Decimal("30.00")),
    ]
