"""Orders and notices: credits exactly once through the real ledger and community; refunds."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
import re
import sqlite3
import threading

import pytest

from custom_components.prepaid_meter.engine.actor import Actor
from custom_components.prepaid_meter.engine.community import Community
from custom_components.prepaid_meter.engine.ledger import EntryKind, Ledger, SubAccount
from custom_components.prepaid_meter.engine.orders import (
    Credit,
    Duplicate,
    Order,
    OrderRefused,
    PaymentDesk,
    Recorded,
    Retry,
    Reverse,
    Unmatched,
)
from custom_components.prepaid_meter.engine.payments import PaymentNotice
from custom_components.prepaid_meter.engine.policy import PolicyConfig
from custom_components.prepaid_meter.engine.tariff import load_preset

NOON = int(datetime(2026, 3, 10, 4, 0, tzinfo=UTC).timestamp())
A = "b3-u2-501"
B = "b3-u2-502"
OPS = Actor("operator", user_id="u-ops", name="Ops")
ALICE = Actor("resident", user_id="u-alice", name="Alice")
E, PF, PK = SubAccount.ELECTRICITY, SubAccount.PROPERTY_FEE, SubAccount.PARKING_FEE


class Clock:
    def __init__(self, now: int) -> None:
        self.now = float(now)

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock(NOON)


@pytest.fixture
def path(tmp_path: Path) -> Path:
    return tmp_path / "community.sqlite3"


@pytest.fixture
def ledger(path: Path) -> Iterator[Ledger]:
    with Ledger(path) as opened:
        opened.ensure_household(A, "Building 3, 501", NOON)
        opened.ensure_household(B, "Building 3, 502", NOON)
        yield opened


@pytest.fixture
def desk(ledger: Ledger, clock: Clock) -> PaymentDesk:
    return PaymentDesk(ledger, clock, max_payment=Decimal(500), max_per_day=Decimal(800))


def _community(ledger: Ledger, clock: Clock) -> Community:
    community = Community(ledger, load_preset("flat"), PolicyConfig(), clock=clock)
    community.load()
    return community


def _post(community: Community, desk: PaymentDesk, outcome: Credit | Reverse) -> bool:
    """Post as the adapter does (the idempotent money calls), then confirm; return if new."""
    if isinstance(outcome, Credit) and outcome.purpose == "electricity":
        result = community.top_up(
            outcome.account_id, outcome.amount, outcome.key, outcome.provider, actor=Actor.SYSTEM
        )
        community.apply_top_up(result)
    else:
        signed = outcome.amount if isinstance(outcome, Credit) else -outcome.amount
        result = community.post_money(
            outcome.account_id, outcome.sub, outcome.kind, signed, outcome.key, actor=Actor.SYSTEM
        )
        community.apply_results(result)
    desk.confirm(outcome)
    return not result.results[0].duplicate


def _paid(
    order: Order, *, txn: str = "4200000001", amount: str | None = None, time: str = ""
) -> PaymentNotice:
    return PaymentNotice(
        provider=order.provider,
        kind="paid",
        transaction_id=txn,
        order_id=order.order_id,
        amount=Decimal(amount) if amount is not None else order.amount,
        time=time,
    )


def _refund(
    order: Order, amount: str, refund_id: str, *, txn: str = "4200000001", cumulative: bool = False
) -> PaymentNotice:
    return PaymentNotice(
        provider=order.provider,
        kind="refund",
        transaction_id=txn,
        order_id=order.order_id,
        amount=Decimal(amount),
        refund_id=refund_id,
        cumulative=cumulative,
    )


def _refused(key: str, call: object, *args: object, **kwargs: object) -> None:
    assert callable(call)
    with pytest.raises(OrderRefused) as caught:
        call(*args, **kwargs)
    assert caught.value.key == key, caught.value.message


# ---------------------------------------------------------------------------- orders


def test_an_order_is_bound_to_household_and_purpose_and_kept(
    desk: PaymentDesk, path: Path, clock: Clock
) -> None:
    order = desk.create_order(A, Decimal("50.00"), actor=ALICE)
    assert re.fullmatch(r"PME20260310[0-9A-F]{12}", order.order_id)
    assert (order.account_id, order.purpose, order.provider, order.amount) == (
        A,
        "electricity",
        "wechat",
        Decimal("50.00"),
    )
    assert order.expires_at == NOON + 900 and order.status(clock()) == "open"
    assert Actor.parse(order.actor) == ALICE
    fee = desk.create_order(B, Decimal(120), "property_fee", "alipay", actor=OPS)
    assert fee.order_id.startswith("PMP") and fee.provider == "alipay"
    assert desk.create_order(B, Decimal(10), "parking_fee").order_id.startswith("PMK")
    assert order.status(NOON + 900) == "expired"
    with Ledger(path) as again:
        assert PaymentDesk(again, clock).order(order.order_id) == order
        assert [o.order_id for o in PaymentDesk(again, clock).orders(A)] == [order.order_id]


def test_bad_orders_are_refused_and_write_nothing(desk: PaymentDesk) -> None:
    for amount in (Decimal(0), Decimal(-1), Decimal("0.001"), Decimal("NaN"), Decimal("Infinity")):
        _refused("invalid_amount", desk.create_order, A, amount)
    _refused("invalid_amount", desk.create_order, A, 5)
    _refused("amount_over_limit", desk.create_order, A, Decimal("500.01"))
    _refused("invalid_purpose", desk.create_order, A, Decimal(1), "water")
    _refused("invalid_provider", desk.create_order, A, Decimal(1), "electricity", "paypal")
    _refused("unknown_household", desk.create_order, "nobody", Decimal(1))
    assert desk.orders() == []


def test_daily_limit_counts_paid_and_open_orders_not_expired_ones(
    desk: PaymentDesk, clock: Clock
) -> None:
    first = desk.create_order(A, Decimal(500))
    assert isinstance(desk.handle(_paid(first)), Credit)
    desk.create_order(A, Decimal(250))
    _refused("daily_limit", desk.create_order, A, Decimal("50.01"))
    desk.create_order(B, Decimal(500))  # another household has its own limit
    clock.now += 901  # the 250 expired unpaid: it no longer counts
    desk.create_order(A, Decimal(300))
    _refused("daily_limit", desk.create_order, A, Decimal("0.01"))
    clock.now = NOON + 86_400  # the next day (UTC midnight: the desk's zone)
    desk.create_order(A, Decimal(500))


def test_open_orders_are_capped(ledger: Ledger, clock: Clock) -> None:
    desk = PaymentDesk(ledger, clock, max_open_orders=2)
    desk.create_order(A, Decimal(1))
    desk.create_order(A, Decimal(1))
    _refused("too_many_open_orders", desk.create_order, A, Decimal(1))
    clock.now += 900
    desk.create_order(A, Decimal(1))


# ---------------------------------------------------------------------------- payments


def test_a_payment_credits_once_however_often_it_is_delivered(
    desk: PaymentDesk, ledger: Ledger, clock: Clock
) -> None:
    community = _community(ledger, clock)
    order = desk.create_order(A, Decimal("88.80"))
    outcome = desk.handle(_paid(order))
    assert outcome == Credit(
        account_id=A,
        purpose="electricity",
        amount=Decimal("88.80"),
        key="pay:wechat:4200000001",
        order_id=order.order_id,
        provider="wechat",
        transaction_id="4200000001",
        notice_key="wechat:paid:4200000001",
    )
    assert desk.order(order.order_id) == replace(
        order, state="paid", transaction_id="4200000001", paid_at=NOON
    )
    # Delivered again before it was posted: the same credit again, harmless to post.
    assert desk.handle(_paid(order)) == outcome
    assert _post(community, desk, outcome) is True
    assert _post(community, desk, outcome) is False
    for _ in range(3):
        assert desk.handle(_paid(order)) == Duplicate(
            "wechat:paid:4200000001", order.order_id, "done"
        )
    assert ledger.balance(A, E) == Decimal("88.80")
    assert community.households[A].electricity == Decimal("88.80")
    assert ledger.entry_by_key(outcome.journal_key) is not None
    assert ledger.check_invariant() == []


def test_a_crash_before_posting_credits_once_after_restart(
    path: Path, ledger: Ledger, clock: Clock
) -> None:
    desk = PaymentDesk(ledger, clock)
    posted = desk.create_order(A, Decimal(20))
    lost = desk.create_order(B, Decimal(30))
    first = desk.handle(_paid(posted, txn="T1"))
    second = desk.handle(_paid(lost, txn="T2"))
    assert isinstance(first, Credit) and isinstance(second, Credit)
    # The first was posted but not confirmed, the second not posted: then the crash.
    community = _community(ledger, clock)
    community.top_up(A, first.amount, first.key, "wechat", actor=Actor.SYSTEM)
    ledger.close()
    with Ledger(path) as reopened:
        desk = PaymentDesk(reopened, clock)
        community = _community(reopened, clock)
        assert desk.pending_credits() == [second]
        assert desk.handle(_paid(posted, txn="T1")) == Duplicate(
            "wechat:paid:T1", posted.order_id, "done"
        )
        assert desk.handle(_paid(lost, txn="T2")) == second  # the provider's redelivery
        assert _post(community, desk, second) is True
        assert desk.pending_credits() == []
        assert desk.handle(_paid(lost, txn="T2")) == Duplicate(
            "wechat:paid:T2", lost.order_id, "done"
        )
        assert (reopened.balance(A, E), reopened.balance(B, E)) == (Decimal(20), Decimal(30))
        assert reopened.check_invariant() == []


def test_concurrent_deliveries_credit_once(desk: PaymentDesk, ledger: Ledger, clock: Clock) -> None:
    community = _community(ledger, clock)
    order = desk.create_order(A, Decimal(10))
    lock = threading.Lock()
    outcomes: list[object] = []

    def deliver() -> None:
        outcome = desk.handle(_paid(order))
        if isinstance(outcome, Credit):
            with lock:  # the community is the event loop's: one at a time
                _post(community, desk, outcome)
        outcomes.append(outcome)

    threads = [threading.Thread(target=deliver) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(outcomes) == 8
    assert ledger.balance(A, E) == Decimal(10)
    assert len([e for e in ledger.entries(A) if e.kind is EntryKind.TOP_UP]) == 1


def test_a_fee_order_pays_the_fee_not_the_electricity(
    desk: PaymentDesk, ledger: Ledger, clock: Clock
) -> None:
    community = _community(ledger, clock)
    community.post_money(A, PF, EntryKind.FEE, Decimal(300), "pf-2026-03", actor=OPS)
    order = desk.create_order(A, Decimal(300), "property_fee", "alipay")
    outcome = desk.handle(_paid(order, txn="2026031022001"))
    assert isinstance(outcome, Credit)
    assert (outcome.purpose, outcome.sub, outcome.kind) == ("property_fee", PF, EntryKind.PAYMENT)
    assert outcome.journal_key == "payment:pay:alipay:2026031022001"
    assert _post(community, desk, outcome)
    assert ledger.balances(A) == {E: Decimal(0), PF: Decimal(0), PK: Decimal(0)}
    parking = desk.create_order(A, Decimal(60), "parking_fee")
    parked = desk.handle(_paid(parking, txn="P1"))
    assert isinstance(parked, Credit) and parked.sub is PK
    assert _post(community, desk, parked)
    assert ledger.balances(A) == {E: Decimal(0), PF: Decimal(0), PK: Decimal(60)}


def test_a_late_payment_of_an_expired_order_is_unmatched_not_lost(
    desk: PaymentDesk, ledger: Ledger, clock: Clock
) -> None:
    order = desk.create_order(A, Decimal(40))
    clock.now = NOON + 901
    outcome = desk.handle(_paid(order))
    assert outcome == Unmatched(
        "order_expired", "wechat:paid:4200000001", order.order_id, Decimal(40), "wechat"
    )
    assert ledger.balance(A, E) == 0
    assert [n.notice_key for n in desk.unmatched()] == ["wechat:paid:4200000001"]
    assert desk.handle(_paid(order)) == Duplicate(
        "wechat:paid:4200000001", order.order_id, "unmatched"
    )
    assert desk.order(order.order_id) == order  # still unpaid
    assert desk.stats()["unmatched"] == {"order_expired": 1}


def test_a_payment_made_in_time_but_delivered_late_credits(desk: PaymentDesk, clock: Clock) -> None:
    order = desk.create_order(A, Decimal(40))
    clock.now = NOON + 3_600  # the provider retried for an hour
    in_time = _paid(order, time="2026-03-10T12:14:00+08:00")  # 04:14 UTC, before 04:15
    assert isinstance(desk.handle(in_time), Credit)
    other = desk.create_order(A, Decimal(40))  # expires 05:15 UTC, 13:15 in Beijing
    clock.now = NOON + 5_400
    late = _paid(other, txn="T9", time="2026-03-10 13:20:00")  # Alipay's form: Beijing time
    assert isinstance(desk.handle(late), Unmatched)
    # A time in the future is not believed: our clock decides.
    third = desk.create_order(A, Decimal(40))
    clock.now = third.expires_at + 1
    future = _paid(third, txn="T10", time="2030-01-01T00:00:00+08:00")
    assert isinstance(desk.handle(future), Unmatched)


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        ({"amount": "40.01"}, "amount_mismatch"),
        ({"order_id": "PME20260310FFFFFFFFFFFF"}, "unknown_order"),
        ({"provider": "alipay"}, "wrong_provider"),
    ],
)
def test_payments_that_do_not_fit_their_order_are_unmatched(
    desk: PaymentDesk, ledger: Ledger, change: dict[str, str], reason: str
) -> None:
    order = desk.create_order(A, Decimal(40))
    notice = _paid(order)
    if "amount" in change:
        notice = replace(notice, amount=Decimal(change["amount"]))
    if "order_id" in change:
        notice = replace(notice, order_id=change["order_id"])
    if "provider" in change:
        notice = replace(notice, provider="alipay")
    outcome = desk.handle(notice)
    assert isinstance(outcome, Unmatched) and outcome.reason == reason
    assert ledger.balance(A, E) == 0
    assert desk.order(order.order_id) == order
    stats = desk.stats()
    assert stats["unmatched"] == {reason: 1}
    if reason == "amount_mismatch":
        assert stats["rejected"] == {"wechat:amount_mismatch": 1}


def test_closed_and_already_paid_orders(desk: PaymentDesk) -> None:
    order = desk.create_order(A, Decimal(40))
    assert desk.close_order(order.order_id) is True
    assert desk.close_order(order.order_id) is False
    outcome = desk.handle(_paid(order))
    assert isinstance(outcome, Unmatched) and outcome.reason == "order_closed"
    paid = desk.create_order(A, Decimal(40))
    assert isinstance(desk.handle(_paid(paid, txn="X1")), Credit)
    twice = desk.handle(_paid(paid, txn="X2"))  # a second, different payment of it
    assert isinstance(twice, Unmatched) and twice.reason == "order_already_paid"


def test_the_operator_credits_or_dismisses_unmatched_payments(
    desk: PaymentDesk, ledger: Ledger, clock: Clock
) -> None:
    community = _community(ledger, clock)
    order = desk.create_order(A, Decimal(40))
    clock.now += 1_000
    desk.handle(_paid(order, txn="LATE"))
    credit = desk.resolve("wechat:paid:LATE", "credit", OPS)
    assert credit is not None and (credit.account_id, credit.amount) == (A, Decimal(40))
    assert _post(community, desk, credit)
    assert ledger.balance(A, E) == Decimal(40)
    assert desk.unmatched() == []
    stored = ledger.pay_notice("wechat:paid:LATE")
    assert stored is not None and stored.state == "done" and stored.resolved_by == str(OPS)
    _refused("not_unmatched", desk.resolve, "wechat:paid:LATE", "dismiss", OPS)
    stray = desk.handle(replace(_paid(order, txn="STRAY"), order_id="nope"))
    assert isinstance(stray, Unmatched)
    assert desk.resolve("wechat:paid:STRAY", "dismiss", OPS) is None
    assert ledger.pay_notice("wechat:paid:STRAY").state == "dismissed"  # type: ignore[union-attr]
    assert ledger.balance(A, E) == Decimal(40)


# ---------------------------------------------------------------------------- refunds


def test_wechat_refunds_reverse_once_each(desk: PaymentDesk, ledger: Ledger, clock: Clock) -> None:
    community = _community(ledger, clock)
    order = desk.create_order(A, Decimal(100))
    credit = desk.handle(_paid(order))
    assert isinstance(credit, Credit) and _post(community, desk, credit)
    first = desk.handle(_refund(order, "30", "R1"))
    assert first == Reverse(
        account_id=A,
        purpose="electricity",
        amount=Decimal(30),
        key="pay:wechat-refund:R1",
        order_id=order.order_id,
        provider="wechat",
        transaction_id="4200000001",
        notice_key="wechat:refund:R1",
    )
    assert _post(community, desk, first)
    assert isinstance(desk.handle(_refund(order, "30", "R1")), Duplicate)
    second = desk.handle(_refund(order, "70", "R2"))
    assert isinstance(second, Reverse) and _post(community, desk, second)
    too_much = desk.handle(_refund(order, "0.01", "R3"))
    assert isinstance(too_much, Unmatched) and too_much.reason == "refund_exceeds_payment"
    assert ledger.balance(A, E) == 0
    kinds = [(e.kind, e.amount) for e in reversed(ledger.entries(A))]
    assert kinds == [
        (EntryKind.TOP_UP, Decimal(100)),
        (EntryKind.REFUND, Decimal(-30)),
        (EntryKind.REFUND, Decimal(-70)),
    ]


def test_alipay_cumulative_refunds_converge_in_any_order(
    desk: PaymentDesk, ledger: Ledger, clock: Clock
) -> None:
    community = _community(ledger, clock)
    order = desk.create_order(A, Decimal("12.30"), provider="alipay")
    credit = desk.handle(_paid(order, txn="AT1"))
    assert isinstance(credit, Credit) and _post(community, desk, credit)
    # Two refunds (5.00, then 7.30: 12.30 in all) whose notices arrive in reverse order.
    later = desk.handle(_refund(order, "12.30", "AT1", txn="AT1", cumulative=True))
    assert isinstance(later, Reverse) and later.amount == Decimal("12.30")
    assert _post(community, desk, later)
    earlier = desk.handle(_refund(order, "5.00", "RF-1", txn="AT1", cumulative=True))
    assert earlier == Recorded("refund_covered", "alipay:refund:AT1:5.00", order.order_id)
    assert isinstance(
        desk.handle(_refund(order, "12.30", "AT1", txn="AT1", cumulative=True)), Duplicate
    )
    assert ledger.balance(A, E) == 0
    # In order, each step reverses its difference.
    other = desk.create_order(B, Decimal(20), provider="alipay")
    assert _post(community, desk, desk.handle(_paid(other, txn="AT2")))  # type: ignore[arg-type]
    step = desk.handle(_refund(other, "5.00", "RF-2", txn="AT2", cumulative=True))
    assert isinstance(step, Reverse) and step.amount == 5 and _post(community, desk, step)
    rest = desk.handle(_refund(other, "20.00", "AT2", txn="AT2", cumulative=True))
    assert isinstance(rest, Reverse) and rest.amount == 15 and _post(community, desk, rest)
    assert ledger.balance(B, E) == 0
    assert ledger.check_invariant() == []


def test_a_refund_before_its_payment_is_retried_then_reversed(
    desk: PaymentDesk, ledger: Ledger, clock: Clock
) -> None:
    community = _community(ledger, clock)
    order = desk.create_order(A, Decimal(50))
    early = desk.handle(_refund(order, "50", "R1"))
    assert early == Retry("refund_before_payment", "wechat:refund:R1", order.order_id)
    assert [n.state for n in desk.unmatched()] == ["waiting"]
    credit = desk.handle(_paid(order))
    assert isinstance(credit, Credit) and _post(community, desk, credit)
    again = desk.handle(_refund(order, "50", "R1"))  # the provider's next delivery
    assert isinstance(again, Reverse) and _post(community, desk, again)
    assert desk.unmatched() == []
    assert ledger.balance(A, E) == 0


def test_a_refund_of_an_uncredited_payment_settles_it(desk: PaymentDesk, clock: Clock) -> None:
    order = desk.create_order(A, Decimal(50))
    clock.now += 1_000
    assert isinstance(desk.handle(_paid(order)), Unmatched)
    outcome = desk.handle(_refund(order, "50", "R1"))
    assert outcome == Recorded("refund_of_uncredited_payment", "wechat:refund:R1", order.order_id)
    assert desk.unmatched() == []
    unknown = desk.handle(replace(_refund(order, "1", "R9"), order_id="nope", transaction_id="T"))
    assert isinstance(unknown, Unmatched) and unknown.reason == "unknown_order"


def test_rejections_are_counted_across_restarts(path: Path, ledger: Ledger, clock: Clock) -> None:
    desk = PaymentDesk(ledger, clock)
    assert desk.reject("wechat", "bad_signature") == 1
    assert desk.reject("wechat", "bad_signature") == 2
    desk.reject("alipay", "unknown_merchant")
    ledger.close()
    with Ledger(path) as reopened:
        again = PaymentDesk(reopened, clock)
        assert again.reject("wechat", "bad_signature") == 3
        assert again.stats()["rejected"] == {
            "alipay:unknown_merchant": 1,
            "wechat:bad_signature": 3,
        }


def test_stats_count_orders_by_status(desk: PaymentDesk, clock: Clock) -> None:
    paid = desk.create_order(A, Decimal(1))
    desk.handle(_paid(paid))
    desk.create_order(A, Decimal(1))
    clock.now += 901
    desk.create_order(B, Decimal(1))
    stats = desk.stats()
    assert stats["orders"] == {"paid": 1, "expired": 1, "open": 1}
    assert stats["notices"] == {"due": 1}


# ---------------------------------------------------------------------------- the ledger's part


def test_a_schema_4_file_gains_the_payment_tables_and_keeps_its_money(
    path: Path, monkeypatch: pytest.MonkeyPatch, clock: Clock
) -> None:
    from custom_components.prepaid_meter.engine import ledger as ledger_module
    from custom_components.prepaid_meter.engine.ledger import Posting

    with monkeypatch.context() as patched:
        patched.setattr(ledger_module, "_MIGRATIONS", ledger_module._MIGRATIONS[:4])
        with Ledger(path) as old:
            old.ensure_household(A, "flat", NOON)
            old.post(Posting("topup:t1", A, E, EntryKind.TOP_UP, Decimal(7), NOON, {}))
    with Ledger(path) as upgraded:
        assert upgraded.balance(A, E) == Decimal(7)
        desk = PaymentDesk(upgraded, clock)
        order = desk.create_order(A, Decimal(3))
        assert isinstance(desk.handle(_paid(order)), Credit)
        assert upgraded.check_invariant() == []


def test_the_ledger_refuses_bad_payment_records(ledger: Ledger, desk: PaymentDesk) -> None:
    from custom_components.prepaid_meter.engine.ledger import LedgerError, PayNotice, PayOrder

    order = desk.create_order(A, Decimal(3))
    with pytest.raises(LedgerError, match="exists already"):
        ledger.add_order(
            PayOrder(order.order_id, A, E, "wechat", Decimal(3), NOON, NOON + 900, "system")
        )
    with pytest.raises(LedgerError, match="unknown account"):
        ledger.add_order(PayOrder("X1", "nobody", E, "wechat", Decimal(3), NOON, NOON, "system"))
    with pytest.raises(LedgerError, match="above zero"):
        ledger.add_order(PayOrder("X2", A, E, "wechat", Decimal(0), NOON, NOON, "system"))
    with pytest.raises(LedgerError, match="decimal places"):
        ledger.add_order(PayOrder("X3", A, E, "wechat", Decimal("0.001"), NOON, NOON, "system"))
    with pytest.raises(LedgerError, match="Unknown order"):
        ledger.set_order_code("nope", "weixin://x")
    with pytest.raises(LedgerError, match="Unknown order"):
        ledger.close_order("nope")
    good = PayNotice("k1", "wechat", "paid", order.order_id, "T", Decimal(3), NOON, "unmatched")
    for bad, message in (
        (replace(good, kind="other"), "kind"),
        (replace(good, state="lost"), "state"),
        (replace(good, amount=Decimal("0.00001")), "decimal places"),
        (replace(good, body="{"), "not JSON"),
        (replace(good, notice_key=""), "notice key"),
    ):
        with pytest.raises(LedgerError, match=message):
            ledger.record_notice(bad)
    # Paying an order that is not open writes nothing, not even the notice.
    desk.close_order(order.order_id)
    with pytest.raises(LedgerError, match="not open"):
        ledger.record_notice(replace(good, state="due"), pays_order=True)
    assert ledger.pay_notice("k1") is None
    assert ledger.record_notice(good) == (good, True)
    assert ledger.record_notice(replace(good, amount=Decimal(9))) == (good, False)
    with sqlite3.connect(ledger.path) as raw, pytest.raises(sqlite3.Error, match="kept"):
        raw.execute("DELETE FROM pay_notices")
