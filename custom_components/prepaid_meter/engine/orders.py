"""Payment orders and what a provider's verified notice does with them, kept in the ledger.

`PaymentDesk` is the one place that decides what a payment or a refund means for a household:

- `create_order` makes an order for an amount, bound to a household and to what it pays
  (`electricity` credit by default, or the `property_fee` or `parking_fee` sub-account), within
  the limits per payment and per household and day, with an expiry (15 minutes by default).
  Its id (`PM` + E/P/K for the purpose + local date + 12 random hex digits) is what the
  provider's QR code carries back as `out_trade_no`.
- `handle(notice)` takes a `payments.PaymentNotice` (already verified) and returns one outcome:
  `Credit` (post it), `Reverse` (a refund: post it), `Duplicate` (delivered before: nothing to
  do), `Unmatched` (kept for the operator, never credited: an unknown, expired or closed
  order, another transaction for a paid order, an amount that is not the order's), `Recorded`
  (kept, nothing to post: a refund of a payment that was never credited, or one an earlier
  refund notice already covered) or `Retry` (a refund whose payment has not arrived yet:
  answer the provider with an error so that it delivers again later).

Exactly once, also across a crash: the notice is recorded, and its order marked paid, in one
ledger transaction, as *due*, before `handle` returns the `Credit`. The caller posts it with
the existing, idempotent money calls under `Credit.key` (`CommunityService.top_up(account_id,
amount, key, channel=provider, ...)` for electricity; `post_money(account_id, sub,
EntryKind.PAYMENT, amount, key, ...)` for a fee; `post_money(..., EntryKind.REFUND, -amount,
key, ...)` for a `Reverse`), then calls `confirm(outcome)`. A crash between the two leaves the
notice due: the provider's next delivery of it returns the same `Credit` again (unless the
journal already holds its entry), and `pending_credits()` at start lists every due outcome
whose journal entry is missing. Posting twice is harmless: the journal refuses a second
entry under the same key.

Refused messages (bad signatures and the like, see `payments.REJECT_KEYS`) are counted per
provider and key with `reject`; an amount mismatch is counted there too. One desk per ledger
file; its calls are serialised by a lock and block (run them in an executor).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, tzinfo
from decimal import Decimal
import json
import secrets
import threading
import time
from typing import TYPE_CHECKING, Final, Literal

from .actor import Actor
from .ledger import EntryKind, Ledger, LedgerError, PayNotice, PayOrder, SubAccount
from .payments import CST, PaymentNotice, Provider

if TYPE_CHECKING:
    from .community import LedgerResult
    from .service import CommunityService

__all__ = [
    "PURPOSES",
    "Credit",
    "Duplicate",
    "Order",
    "OrderRefused",
    "Outcome",
    "PaymentDesk",
    "Purpose",
    "Recorded",
    "Retry",
    "Reverse",
    "Unmatched",
    "post_outcome",
]

type Purpose = Literal["electricity", "property_fee", "parking_fee"]

PURPOSES: Final[dict[str, SubAccount]] = {
    "electricity": SubAccount.ELECTRICITY,
    "property_fee": SubAccount.PROPERTY_FEE,
    "parking_fee": SubAccount.PARKING_FEE,
}
_LETTER: Final = {"electricity": "E", "property_fee": "P", "parking_fee": "K"}
PROVIDERS: Final[frozenset[str]] = frozenset({"wechat", "alipay"})
_CENT: Final = Decimal("0.01")
_ZERO: Final = Decimal(0)
#: A provider's payment time may run this far ahead of our clock before ours is used.
_CLOCK_SLACK_S: Final = 300
_CREDITED: Final = ("due", "done")


class OrderRefused(Exception):
    """An order that cannot be made: a translation key, a sentence and its placeholders."""

    def __init__(self, key: str, message: str, **placeholders: str) -> None:
        """Keep the key, the sentence and the placeholders."""
        super().__init__(message)
        self.key = key
        self.message = message
        self.placeholders = placeholders


@dataclass(frozen=True, slots=True)
class Order:
    """An order a resident was asked to pay."""

    order_id: str
    account_id: str
    purpose: Purpose
    provider: Provider
    amount: Decimal
    created_at: int
    expires_at: int
    actor: str
    state: str  # open, paid or closed (see `status` for expiry)
    transaction_id: str | None = None
    paid_at: int | None = None
    code: str | None = None

    def status(self, now: float) -> str:
        """Return open, expired, paid or closed."""
        if self.state == "open" and now >= self.expires_at:
            return "expired"
        return self.state


@dataclass(frozen=True, slots=True)
class Credit:
    """Money a verified payment brings: post it under `key`, then `confirm` it."""

    account_id: str
    purpose: Purpose
    amount: Decimal
    key: str  # the transaction id to post under, e.g. pay:wechat:<transaction_id>
    order_id: str
    provider: Provider
    transaction_id: str
    notice_key: str

    @property
    def sub(self) -> SubAccount:
        """Return the sub-account credited."""
        return PURPOSES[self.purpose]

    @property
    def kind(self) -> EntryKind:
        """Return the journal entry kind: a top-up of electricity credit, or a fee payment."""
        return EntryKind.TOP_UP if self.purpose == "electricity" else EntryKind.PAYMENT

    @property
    def journal_key(self) -> str:
        """Return the journal key `top_up`/`post_money` give the entry (`<kind>:<key>`)."""
        return f"{'topup' if self.purpose == 'electricity' else 'payment'}:{self.key}"


@dataclass(frozen=True, slots=True)
class Reverse:
    """Money a refund takes back (`amount` is positive): post it as a refund, then `confirm`."""

    account_id: str
    purpose: Purpose
    amount: Decimal
    key: str  # e.g. pay:wechat-refund:<refund_id>
    order_id: str
    provider: Provider
    transaction_id: str
    notice_key: str

    @property
    def sub(self) -> SubAccount:
        """Return the sub-account the money leaves."""
        return PURPOSES[self.purpose]

    @property
    def kind(self) -> EntryKind:
        """Return the journal entry kind (a refund: its signed amount is `-amount`)."""
        return EntryKind.REFUND

    @property
    def journal_key(self) -> str:
        """Return the journal key `post_money` gives the entry."""
        return f"refund:{self.key}"


@dataclass(frozen=True, slots=True)
class Duplicate:
    """A notice delivered before: nothing to do (answer the provider with success)."""

    notice_key: str
    order_id: str
    state: str  # what became of it the first time


@dataclass(frozen=True, slots=True)
class Unmatched:
    """A valid payment or refund kept for the operator, never credited (answer success).

    Reasons: unknown_order, wrong_provider, order_closed, order_expired, order_already_paid,
    amount_mismatch, refund_unknown_payment, refund_exceeds_payment.
    """

    reason: str
    notice_key: str
    order_id: str
    amount: Decimal
    provider: Provider


@dataclass(frozen=True, slots=True)
class Recorded:
    """A notice recorded with nothing to post (answer success)."""

    reason: str  # refund_of_uncredited_payment, refund_covered
    notice_key: str
    order_id: str


@dataclass(frozen=True, slots=True)
class Retry:
    """Not yet: answer the provider with an error so that it delivers the notice again."""

    reason: str  # refund_before_payment
    notice_key: str
    order_id: str


type Outcome = Credit | Reverse | Duplicate | Unmatched | Recorded | Retry


def _order(stored: PayOrder) -> Order:
    purpose: Purpose = _purpose(stored.purpose.value)
    provider: Provider = "alipay" if stored.provider == "alipay" else "wechat"
    return Order(
        order_id=stored.order_id,
        account_id=stored.account_id,
        purpose=purpose,
        provider=provider,
        amount=stored.amount,
        created_at=stored.created_at,
        expires_at=stored.expires_at,
        actor=stored.actor,
        state=stored.state,
        transaction_id=stored.transaction_id,
        paid_at=stored.paid_at,
        code=stored.code,
    )


def _purpose(value: str) -> Purpose:
    if value == "property_fee":
        return "property_fee"
    if value == "parking_fee":
        return "parking_fee"
    return "electricity"


def _provider(value: str) -> Provider:
    return "alipay" if value == "alipay" else "wechat"


def _paid_at(notice: PaymentNotice, now: int) -> int:
    """Return when the provider says the money moved (our clock if it says nothing usable)."""
    try:
        moment = datetime.fromisoformat(notice.time.strip())
    except ValueError:
        return now
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=CST)  # the providers write China Standard Time
    seconds = int(moment.timestamp())
    return now if seconds > now + _CLOCK_SLACK_S or seconds <= 0 else seconds


class PaymentDesk:
    """Orders and the providers' notices of one community (see the module docstring)."""

    def __init__(
        self,
        ledger: Ledger,
        clock: Callable[[], float] = time.time,
        *,
        max_payment: Decimal = Decimal(2000),
        max_per_day: Decimal = Decimal(5000),
        order_ttl_s: int = 900,
        max_open_orders: int = 5,
        zone: tzinfo = UTC,
    ) -> None:
        """Work on `ledger`, with the limits per payment and per household and day."""
        for value, what in ((max_payment, "max_payment"), (max_per_day, "max_per_day")):
            if not isinstance(value, Decimal) or not value.is_finite() or value <= 0:
                raise ValueError(f"{what} must be a positive Decimal, not {value!r}")
        if order_ttl_s < 60:
            raise ValueError(f"order_ttl_s must be at least 60 seconds, not {order_ttl_s}")
        self.ledger = ledger
        self.clock = clock
        self.max_payment = max_payment
        self.max_per_day = max_per_day
        self.order_ttl_s = order_ttl_s
        self.max_open_orders = max_open_orders
        self.zone = zone
        self._lock = threading.RLock()

    # ------------------------------------------------------------------ orders

    def create_order(
        self,
        account_id: str,
        amount: Decimal,
        purpose: str = "electricity",
        provider: str = "wechat",
        actor: Actor | None = None,
    ) -> Order:
        """Make an order for a household (blocking, durable on return) or raise OrderRefused."""
        if purpose not in PURPOSES:
            raise OrderRefused("invalid_purpose", f"Unknown purpose {purpose!r}", purpose=purpose)
        if provider not in PROVIDERS:
            raise OrderRefused(
                "invalid_provider", f"Unknown payment provider {provider!r}", provider=provider
            )
        if (
            not isinstance(amount, Decimal)
            or not amount.is_finite()
            or amount <= 0
            or amount != amount.quantize(_CENT)
        ):
            raise OrderRefused(
                "invalid_amount",
                f"Amount {amount} must be positive with at most 2 decimals",
                amount=str(amount),
            )
        if amount > self.max_payment:
            raise OrderRefused(
                "amount_over_limit",
                f"{amount} is more than the {self.max_payment} one payment may be",
                amount=str(amount),
                limit=str(self.max_payment),
            )
        with self._lock:
            if self.ledger.household(account_id) is None:
                raise OrderRefused(
                    "unknown_household", f"Unknown household {account_id}", household=account_id
                )
            now = int(self.clock())
            today = datetime.fromtimestamp(now, self.zone)
            midnight = int(today.replace(hour=0, minute=0, second=0, microsecond=0).timestamp())
            recent = [_order(o) for o in self.ledger.pay_orders(account_id, since=midnight)]
            live = [o for o in recent if o.status(now) in ("open", "paid")]
            spent = sum((o.amount for o in live), _ZERO)
            if spent + amount > self.max_per_day:
                raise OrderRefused(
                    "daily_limit",
                    f"{account_id} has {spent} paid or being paid today; {amount} more would "
                    f"pass the daily limit of {self.max_per_day}",
                    household=account_id,
                    limit=str(self.max_per_day),
                    left=str(max(_ZERO, self.max_per_day - spent)),
                )
            if sum(1 for o in live if o.status(now) == "open") >= self.max_open_orders:
                raise OrderRefused(
                    "too_many_open_orders",
                    f"{account_id} has {self.max_open_orders} unpaid orders; wait for them "
                    "to expire",
                    household=account_id,
                )
            order_id = f"PM{_LETTER[purpose]}{today:%Y%m%d}{secrets.token_hex(6).upper()}"
            stored = PayOrder(
                order_id=order_id,
                account_id=account_id,
                purpose=PURPOSES[purpose],
                provider=provider,
                amount=amount,
                created_at=now,
                expires_at=now + self.order_ttl_s,
                actor=str(actor or Actor.SYSTEM),
            )
            self.ledger.add_order(stored)
            return _order(stored)

    def set_code(self, order_id: str, code: str) -> None:
        """Keep the payment code (the QR's content) the provider gave for an order."""
        self.ledger.set_order_code(order_id, code)

    def close_order(self, order_id: str) -> bool:
        """Close an open order: a later payment of it is unmatched. Return whether it was open."""
        with self._lock:
            return self.ledger.close_order(order_id)

    def order(self, order_id: str) -> Order | None:
        """Return one order, or None."""
        stored = self.ledger.pay_order(order_id)
        return None if stored is None else _order(stored)

    def orders(self, account_id: str | None = None, limit: int = 100) -> list[Order]:
        """Return a household's orders (or all), newest first."""
        return [_order(o) for o in self.ledger.pay_orders(account_id, limit=limit)]

    # ------------------------------------------------------------------ notices

    def handle(self, notice: PaymentNotice) -> Outcome:
        """Decide what a verified notice does (blocking; durable before it returns)."""
        with self._lock:
            now = int(self.clock())
            stored = self.ledger.pay_notice(notice.notice_key)
            if stored is not None and stored.state != "waiting":
                return self._again(stored)
            if notice.kind == "paid":
                return self._paid(notice, now)
            return self._refund(notice, now)

    def _again(self, stored: PayNotice) -> Outcome:
        """A notice delivered before: its outcome again if still due and not in the journal."""
        if stored.state == "due":
            outcome = self._due_outcome(stored)
            if outcome is not None:
                return outcome
        return Duplicate(stored.notice_key, stored.order_id, stored.state)

    def _due_outcome(self, stored: PayNotice) -> Credit | Reverse | None:
        """Return a due notice's outcome, or None (marking it done) if the journal has it."""
        if stored.account_id is None or stored.purpose is None or stored.credit_key is None:
            return None
        amount = stored.credit_amount if stored.credit_amount is not None else stored.amount
        kind = Credit if stored.kind == "paid" else Reverse
        outcome = kind(
            account_id=stored.account_id,
            purpose=_purpose(stored.purpose.value),
            amount=amount,
            key=stored.credit_key,
            order_id=stored.order_id,
            provider=_provider(stored.provider),
            transaction_id=stored.transaction_id,
            notice_key=stored.notice_key,
        )
        if self.ledger.entry_by_key(outcome.journal_key) is not None:
            self.ledger.settle_notice(stored.notice_key, ("due",), "done")
            return None
        return outcome

    def _record(
        self,
        notice: PaymentNotice,
        now: int,
        state: str,
        reason: str = "",
        *,
        order: Order | None = None,
        credit_key: str | None = None,
        credit_amount: Decimal | None = None,
        pays_order: bool = False,
    ) -> PayNotice:
        stored, _ = self.ledger.record_notice(
            PayNotice(
                notice_key=notice.notice_key,
                provider=notice.provider,
                kind=notice.kind,
                order_id=notice.order_id[:200],
                transaction_id=notice.transaction_id[:200],
                amount=notice.amount,
                received_at=now,
                state=state,
                reason=reason,
                account_id=None if order is None else order.account_id,
                purpose=None if order is None else PURPOSES[order.purpose],
                credit_key=credit_key,
                credit_amount=credit_amount,
                body=json.dumps(notice.as_dict(), ensure_ascii=False, sort_keys=True),
            ),
            pays_order=pays_order,
            replaces=frozenset({"waiting"}),
        )
        return stored

    def _unmatched(
        self, notice: PaymentNotice, now: int, reason: str, order: Order | None
    ) -> Unmatched:
        self._record(notice, now, "unmatched", reason, order=order)
        if reason == "amount_mismatch":
            self.ledger.count_reject(notice.provider, reason, now)
        return Unmatched(reason, notice.notice_key, notice.order_id, notice.amount, notice.provider)

    def _paid(self, notice: PaymentNotice, now: int) -> Outcome:
        stored = self.ledger.pay_order(notice.order_id)
        order = None if stored is None else _order(stored)
        if order is None:
            return self._unmatched(notice, now, "unknown_order", None)
        reason = ""
        if order.provider != notice.provider:
            reason = "wrong_provider"
        elif order.state == "closed":
            reason = "order_closed"
        elif order.state == "paid":
            reason = "order_already_paid"
        elif _paid_at(notice, now) >= order.expires_at:
            reason = "order_expired"
        elif notice.amount != order.amount:
            reason = "amount_mismatch"
        if reason:
            return self._unmatched(notice, now, reason, order)
        key = f"pay:{notice.provider}:{notice.transaction_id}"
        self._record(
            notice,
            now,
            "due",
            order=order,
            credit_key=key,
            credit_amount=notice.amount,
            pays_order=True,
        )
        return Credit(
            account_id=order.account_id,
            purpose=order.purpose,
            amount=notice.amount,
            key=key,
            order_id=order.order_id,
            provider=notice.provider,
            transaction_id=notice.transaction_id,
            notice_key=notice.notice_key,
        )

    def _refund(self, notice: PaymentNotice, now: int) -> Outcome:
        stored = self.ledger.pay_order(notice.order_id)
        order = None if stored is None else _order(stored)
        payment = self.ledger.pay_notice(f"{notice.provider}:paid:{notice.transaction_id}")
        if payment is None:
            if order is not None and order.state == "open":
                self._record(notice, now, "waiting", "refund_before_payment", order=order)
                return Retry("refund_before_payment", notice.notice_key, notice.order_id)
            reason = "unknown_order" if order is None else "refund_unknown_payment"
            return self._unmatched(notice, now, reason, order)
        if payment.state not in _CREDITED:
            # Nothing was credited (an unmatched payment the operator refunded): nothing to
            # take back; the payment is settled by its refund.
            self._record(notice, now, "done", "refund_of_uncredited_payment", order=order)
            self.ledger.settle_notice(
                payment.notice_key, ("unmatched",), "resolved", reason="refunded", ts=now
            )
            return Recorded("refund_of_uncredited_payment", notice.notice_key, notice.order_id)
        assert payment.account_id is not None and payment.purpose is not None
        paid = payment.credit_amount if payment.credit_amount is not None else payment.amount
        refunds = [
            n
            for n in self.ledger.pay_notices(_CREDITED, order_id=notice.order_id)
            if n.kind == "refund" and n.transaction_id == notice.transaction_id
        ]
        reversed_ = sum((n.credit_amount or _ZERO for n in refunds), _ZERO)
        if notice.cumulative:
            if notice.amount > paid:
                return self._unmatched(notice, now, "refund_exceeds_payment", order)
            amount = notice.amount - reversed_
        else:
            if reversed_ + notice.amount > paid:
                return self._unmatched(notice, now, "refund_exceeds_payment", order)
            amount = notice.amount
        credit_order = Order(
            order_id=payment.order_id,
            account_id=payment.account_id,
            purpose=_purpose(payment.purpose.value),
            provider=_provider(payment.provider),
            amount=paid,
            created_at=0,
            expires_at=0,
            actor="",
            state="paid",
        )
        if amount <= 0:
            self._record(notice, now, "done", "refund_covered", order=credit_order)
            return Recorded("refund_covered", notice.notice_key, notice.order_id)
        suffix = (
            f"{notice.transaction_id}:{notice.amount}" if notice.cumulative else notice.refund_id
        )
        key = f"pay:{notice.provider}-refund:{suffix}"
        self._record(notice, now, "due", order=credit_order, credit_key=key, credit_amount=amount)
        return Reverse(
            account_id=payment.account_id,
            purpose=credit_order.purpose,
            amount=amount,
            key=key,
            order_id=notice.order_id,
            provider=notice.provider,
            transaction_id=notice.transaction_id,
            notice_key=notice.notice_key,
        )

    def confirm(self, outcome: Credit | Reverse) -> None:
        """Mark a posted outcome done (posting it again would change nothing anyway)."""
        with self._lock:
            self.ledger.settle_notice(outcome.notice_key, ("due",), "done")

    def pending_credits(self) -> list[Credit | Reverse]:
        """Return the due outcomes not in the journal yet, oldest first (post them at start)."""
        with self._lock:
            found: list[Credit | Reverse] = []
            for stored in self.ledger.pay_notices(("due",)):
                outcome = self._due_outcome(stored)
                if outcome is not None:
                    found.append(outcome)
            return found

    def reject(self, provider: str, key: str) -> int:
        """Count a refused message (a `PaymentRejected` key); return how many so far."""
        return self.ledger.count_reject(provider, key, int(self.clock()))

    # ------------------------------------------------------------------ the operator's view

    def unmatched(self) -> list[PayNotice]:
        """Return the notices kept for the operator (unmatched, and refunds still waiting)."""
        return self.ledger.pay_notices(("unmatched", "waiting"))

    def resolve(
        self,
        notice_key: str,
        action: Literal["credit", "dismiss"],
        actor: Actor,
        *,
        account_id: str | None = None,
        purpose: str | None = None,
    ) -> Credit | None:
        """Settle an unmatched notice: dismiss it, or credit its payment to a household.

        `credit` (a payment only) returns the `Credit` to post, to the household and purpose of
        its order unless others are given; `dismiss` (e.g. refunded at the provider) returns
        None. Both are journaled with the actor; anything not unmatched is refused.
        """
        with self._lock:
            stored = self.ledger.pay_notice(notice_key)
            if stored is None or stored.state not in ("unmatched", "waiting"):
                raise OrderRefused(
                    "not_unmatched", f"No unmatched notice {notice_key}", notice=notice_key
                )
            now = int(self.clock())
            if action == "dismiss":
                self.ledger.settle_notice(
                    notice_key,
                    ("unmatched", "waiting"),
                    "dismissed",
                    reason=f"dismissed ({stored.reason})",
                    actor=str(actor),
                    ts=now,
                )
                return None
            if stored.kind != "paid":
                raise OrderRefused(
                    "not_a_payment", f"{notice_key} is a refund, not a payment", notice=notice_key
                )
            target = account_id or stored.account_id
            chosen = purpose or (stored.purpose.value if stored.purpose else "electricity")
            if target is None or self.ledger.household(target) is None:
                raise OrderRefused(
                    "unknown_household", f"Unknown household {target}", household=str(target)
                )
            if chosen not in PURPOSES:
                raise OrderRefused("invalid_purpose", f"Unknown purpose {chosen!r}", purpose=chosen)
            key = f"pay:{stored.provider}:{stored.transaction_id}"
            try:
                self.ledger.record_notice(
                    PayNotice(
                        notice_key=stored.notice_key,
                        provider=stored.provider,
                        kind=stored.kind,
                        order_id=stored.order_id,
                        transaction_id=stored.transaction_id,
                        amount=stored.amount,
                        received_at=stored.received_at,
                        state="due",
                        reason=f"credited by the operator ({stored.reason})",
                        account_id=target,
                        purpose=PURPOSES[chosen],
                        credit_key=key,
                        credit_amount=stored.amount,
                        body=stored.body,
                        resolved_by=str(actor),
                        resolved_at=now,
                    ),
                    replaces=frozenset({"unmatched"}),
                )
            except LedgerError as err:
                raise OrderRefused("ledger_error", str(err), error=str(err)) from err
            return Credit(
                account_id=target,
                purpose=_purpose(chosen),
                amount=stored.amount,
                key=key,
                order_id=stored.order_id,
                provider=_provider(stored.provider),
                transaction_id=stored.transaction_id,
                notice_key=stored.notice_key,
            )

    def stats(self) -> dict[str, dict[str, int]]:
        """Return counts for diagnostics: orders by status, notices by state, refusals by key."""
        now = self.clock()
        orders: dict[str, int] = {}
        for order in self.ledger.pay_orders(limit=1_000_000):
            status = _order(order).status(now)
            orders[status] = orders.get(status, 0) + 1
        notices: dict[str, int] = {}
        reasons: dict[str, int] = {}
        for stored in self.ledger.pay_notices(limit=1_000_000):
            notices[stored.state] = notices.get(stored.state, 0) + 1
            if stored.state in ("unmatched", "waiting"):
                reasons[stored.reason] = reasons.get(stored.reason, 0) + 1
        rejected = {f"{r.provider}:{r.key}": r.count for r in self.ledger.pay_rejects()}
        return {"orders": orders, "notices": notices, "unmatched": reasons, "rejected": rejected}


async def post_outcome(
    service: CommunityService,
    desk: PaymentDesk,
    outcome: Credit | Reverse,
    *,
    actor: Actor = Actor.SYSTEM,
) -> LedgerResult:
    """Post a Credit or a Reverse through the service's idempotent money calls, then confirm it.

    Electricity credit is a top-up (`channel` is the provider), a fee a payment on its
    sub-account, a refund a refund entry of `-amount`; each under the outcome's key, so doing
    this twice posts once.
    """
    if isinstance(outcome, Credit) and outcome.purpose == "electricity":
        result = await service.top_up(
            outcome.account_id, outcome.amount, outcome.key, outcome.provider, actor
        )
    else:
        signed = outcome.amount if isinstance(outcome, Credit) else -outcome.amount
        result = await service.post_money(
            outcome.account_id,
            outcome.sub,
            outcome.kind,
            signed,
            outcome.key,
            actor=actor,
            meta={"channel": outcome.provider, "order_id": outcome.order_id},
        )
    await asyncio.get_running_loop().run_in_executor(None, desk.confirm, outcome)
    return result
