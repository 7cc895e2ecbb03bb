"""Reconciliation: a payment provider's daily statement file against the ledger. No HA import.

Two formats, read as the providers document them:

- **WeChat Pay trade bill** (`GET /v3/bill/tradebill`, bill types ALL, SUCCESS or REFUND): CSV,
  one header line (交易时间,公众账号ID,商户号,...,微信订单号,商户订单号,...,交易状态,...,
  应结订单金额,...,微信退款单号,商户退款单号,退款金额,...,订单金额,申请退款金额,...), then a
  line per payment (交易状态 `SUCCESS`) or refund (`REFUND`), each field prefixed with a
  backtick, then the summary header (总交易单数,应结订单总金额,退款总金额,...) and its line.
  Amounts in yuan. A payment's amount is its 订单金额 (what the notification's `amount.total`
  said; 应结订单金额 in bills without that column), a refund's its 申请退款金额 (退款金额).
- **Alipay trade bill** (`alipay.data.dataservice.bill.downloadurl.query`, bill_type trade,
  the 业务明细 file): CSV in GBK with comment lines starting with `#` (the account, 起始日期,
  totals 交易合计/退款合计 and the end of the list), a header line (支付宝交易号,商户订单号,
  业务类型,商品名称,创建时间,完成时间,...,订单金额（元）,商家实收（元）,...,退款批次号/请求号,...)
  and a line per 交易 (a payment) or 退款 (a refund, its amounts negative). Fields may carry
  tabs and spaces around them.

Either is read as UTF-8 (with or without a byte order mark) or GB18030 (a superset of GBK);
whatever cannot be read raises `StatementError` with a translation key, and nothing is kept.
A file whose summary or totals count more lines than it holds is truncated, and refused.

`Reconciler.import_statement` compares a statement with what the ledger credited:

- **matched**: a payment (or refund) the provider lists that we credited (or reversed) for
  the same amount, found by the provider's transaction id (and refund id);
- **missing_in_ledger**: the provider lists a successful payment or refund we never credited
  or reversed (an unknown or expired order, a notification that never arrived...);
- **missing_at_provider**: we credited a payment (or reversed a refund) whose time falls in
  the statement's day, in the community's zone, and the statement lacks it;
- **amount_mismatch**: both have it, for different amounts.

Every discrepancy is kept in the ledger once (`recon_items`, keyed by provider, kind and the
provider's ids; importing the same file again adds none) until an operator resolves it:

- `credit` gives the household what the ledger lacks (a payment missing in the ledger, a
  refund reversed that the provider never made, a payment credited short);
- `refund` takes back what the ledger has too much of (a refund missing in the ledger, a
  payment the provider lacks, a payment credited over);
- `dismiss` posts nothing.

A credit of a payment missing in the ledger is the credit its notification would have been:
the notice is recorded as the payment desk records it (`<provider>:paid:<transaction id>`,
posted under `pay:<provider>:<transaction id>`), so a notification arriving later is a
`Duplicate` and credits nothing more; a refund missing in the ledger likewise (WeChat Pay's
refund id, Alipay's cumulative refund). Other corrections are posted under
`reconcile:<provider>:<transaction id>[:<refund id>]`. Each resolution carries the actor (in
the journal entry's meta and on the item) and its time. A later import of the same day
resolves open items it now finds matched (`matched`, by the importer).

Calls block (run them in an executor); `resolve` returns what to post, `settle` records it.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
import csv
from dataclasses import dataclass
from datetime import date, datetime, time as day_time, timedelta, tzinfo
from decimal import Decimal
import hashlib
import io
import json
import re
import threading
import time
from typing import Any, Final, Literal

from .actor import Actor
from .community import CommunityError
from .ledger import Ledger, LedgerError, PayNotice, ReconImport, ReconItem
from .orders import PURPOSES, Credit, Purpose, Reverse
from .payments import CST, Provider

__all__ = [
    "CLASSES",
    "MAX_STATEMENT_BYTES",
    "Reconciler",
    "Resolution",
    "Statement",
    "StatementError",
    "StatementRow",
    "parse_alipay",
    "parse_statement",
    "parse_wechat",
]

#: The classes a statement's lines and the ledger's credits fall into.
CLASSES: Final = ("matched", "missing_in_ledger", "missing_at_provider", "amount_mismatch")
#: The largest statement file read (a day of a community's payments is far less).
MAX_STATEMENT_BYTES: Final = 20 * 1024 * 1024
_CREDITED: Final = ("due", "done")
_YUAN: Final = re.compile(r"[+-]?[0-9]{1,12}(\.[0-9]{1,2})?")
_CN_DATE: Final = re.compile(r"([0-9]{4})年([0-9]{1,2})月([0-9]{1,2})日")
_COUNT: Final = re.compile(r"([0-9]+)\s*笔")
_ZERO: Final = Decimal(0)


class StatementError(CommunityError):
    """A statement that cannot be used, or a resolution refused: a translation key, a sentence."""


@dataclass(frozen=True, slots=True)
class StatementRow:
    """One payment or refund a statement lists (amount positive, in yuan)."""

    provider: Provider
    kind: Literal["paid", "refund"]
    transaction_id: str
    order_id: str
    amount: Decimal
    time: datetime | None
    refund_id: str = ""
    line: int = 0

    @property
    def item_key(self) -> str:
        """Return what identifies this payment or refund of the provider."""
        if self.kind == "paid":
            return f"{self.provider}:paid:{self.transaction_id}"
        return f"{self.provider}:refund:{self.transaction_id}:{self.refund_id}"

    def as_dict(self) -> dict[str, str]:
        """Return the row as plain JSON-able data."""
        return {
            "kind": self.kind,
            "transaction_id": self.transaction_id,
            "order_id": self.order_id,
            "refund_id": self.refund_id,
            "amount": str(self.amount),
            "time": "" if self.time is None else self.time.isoformat(),
            "line": str(self.line),
        }


@dataclass(frozen=True, slots=True)
class Statement:
    """A provider's statement as read: its day (if it says), its lines, what it covers."""

    provider: Provider
    day: date | None
    rows: tuple[StatementRow, ...]
    payments: bool = True  # lists the day's payments (not a refunds-only bill)
    refunds: bool = True  # lists the day's refunds (not a payments-only bill)

    def inferred_day(self) -> date | None:
        """Return the day it says, else the most common day (CST) of its payments' times."""
        if self.day is not None:
            return self.day
        days = Counter(
            r.time.astimezone(CST).date() for r in self.rows if r.time and r.kind == "paid"
        )
        if not days:
            days = Counter(r.time.astimezone(CST).date() for r in self.rows if r.time)
        return days.most_common(1)[0][0] if days else None


# ---------------------------------------------------------------------------- reading


def _decode(data: bytes) -> str:
    """Return the text of a statement: UTF-8 (a BOM allowed) or GB18030, else refuse."""
    if not isinstance(data, bytes | bytearray) or not data.strip():
        raise StatementError("statement_empty", "The statement file is empty.")
    if len(data) > MAX_STATEMENT_BYTES:
        raise StatementError(
            "statement_too_large",
            f"The statement file is larger than {MAX_STATEMENT_BYTES // 1_048_576} MB.",
            limit=str(MAX_STATEMENT_BYTES // 1_048_576),
        )
    for encoding in ("utf-8-sig", "gb18030"):
        try:
            text = bytes(data).decode(encoding)
        except UnicodeDecodeError as err:
            if encoding == "utf-8-sig" and err.reason == "unexpected end of data":
                raise StatementError(  # cut off in the middle of a character
                    "statement_truncated", "The statement file ends in the middle of a line."
                ) from err
            continue
        if "\x00" not in text:
            return text
    raise StatementError(
        "statement_encoding", "The statement file is neither UTF-8 nor GBK/GB18030 text."
    )


def _cell(value: str) -> str:
    """Return a field without the spaces, tabs and the leading backtick providers add."""
    value = value.strip().strip("\t").strip()
    if value.startswith("`"):
        value = value[1:].strip()
    if value.startswith('="') and value.endswith('"'):  # Excel's text form
        value = value[2:-1].strip()
    return value


def _column(name: str) -> str:
    """Return a header name without its unit and spaces: 订单金额（元） -> 订单金额."""
    name = _cell(name)
    for unit in ("（元）", "(元)"):
        name = name.replace(unit, "")
    return "".join(name.split())


def _yuan(text: str, what: str, line: int) -> Decimal:
    text = _cell(text).replace(",", "")
    if not _YUAN.fullmatch(text):
        raise StatementError(
            "statement_bad_amount",
            f"Line {line}: {what} {text[:40]!r} is not an amount in yuan.",
            line=str(line),
            value=text[:40],
        )
    return Decimal(text)


def _when(text: str) -> datetime | None:
    """Return a provider's local time (China Standard Time) as an aware datetime, or None."""
    text = _cell(text)
    if not text:
        return None
    try:
        moment = datetime.fromisoformat(text.replace("/", "-"))
    except ValueError:
        return None
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=CST)


def _lines(text: str) -> list[tuple[int, list[str]]]:
    """Return each non-empty line's number and fields."""
    found: list[tuple[int, list[str]]] = []
    try:
        for number, fields in enumerate(csv.reader(io.StringIO(text, newline="")), start=1):
            if any(_cell(f) for f in fields):
                found.append((number, fields))
    except csv.Error as err:
        raise StatementError(
            "statement_malformed", f"The statement is not CSV: {err}.", error=str(err)
        ) from err
    return found


def _pick(row: dict[str, str], *names: str) -> str:
    for name in names:
        if row.get(name):
            return row[name]
    return ""


def _need(header: dict[str, int], names: tuple[str, ...], provider: str) -> None:
    missing = [n for n in names if n not in header]
    if missing:
        raise StatementError(
            "statement_not_provider",
            f"This is not a {provider} trade bill: it lacks the column(s) {', '.join(missing)}.",
            provider=provider,
            columns=", ".join(missing),
        )


def _fields(header: dict[str, int], fields: list[str], line: int) -> dict[str, str]:
    if len(fields) < len(header):
        raise StatementError(
            "statement_bad_line",
            f"Line {line} has {len(fields)} fields where the header names {len(header)}.",
            line=str(line),
        )
    return {name: _cell(fields[index]) for name, index in header.items()}


def parse_wechat(data: bytes) -> Statement:
    """Read a WeChat Pay trade bill (ALL, SUCCESS or REFUND) or raise StatementError."""
    lines = _lines(_decode(data))
    start = next(
        (
            i
            for i, (_, f) in enumerate(lines)
            if {"交易时间", "微信订单号"} <= {_column(c) for c in f}
        ),
        None,
    )
    if start is None:
        raise StatementError(
            "statement_not_provider",
            "This is not a WeChat Pay trade bill: no header line (交易时间,...,微信订单号,...).",
            provider="wechat",
            columns="交易时间, 微信订单号",
        )
    header = {_column(c): i for i, c in enumerate(lines[start][1])}
    _need(header, ("交易时间", "微信订单号", "商户订单号", "交易状态"), "WeChat Pay")
    if not {"订单金额", "应结订单金额", "总金额"} & header.keys():
        _need(header, ("订单金额",), "WeChat Pay")
    rows: list[StatementRow] = []
    detail = 0
    declared: int | None = None
    index = start + 1
    while index < len(lines):
        number, fields = lines[index]
        first = _column(fields[0])
        if first.startswith("总交易单数"):
            if index + 1 >= len(lines):
                break
            if len(lines[index + 1][1]) < len(fields):
                break  # its summary cut off: refused as truncated below
            count = _cell(lines[index + 1][1][0])
            if not count.isdigit():
                raise StatementError(
                    "statement_bad_line",
                    f"Line {lines[index + 1][0]}: the summary's count {count[:20]!r} is no number.",
                    line=str(lines[index + 1][0]),
                )
            declared = int(count)
            break
        detail += 1
        if len(fields) < len(header) and index == len(lines) - 1:
            break  # cut off in its last line: refused as truncated below
        row = _fields(header, fields, number)
        state = row["交易状态"].upper()
        if state == "SUCCESS":
            amount = _yuan(
                _pick(row, "订单金额", "总金额", "应结订单金额") or "", "订单金额", number
            )
            rows.append(
                StatementRow(
                    provider="wechat",
                    kind="paid",
                    transaction_id=_required(row["微信订单号"], "微信订单号", number),
                    order_id=row["商户订单号"],
                    amount=abs(amount),
                    time=_when(row["交易时间"]),
                    line=number,
                )
            )
        elif state == "REFUND" and row.get("退款状态", "").strip().upper() in ("", "SUCCESS"):
            # Only a refund that went through (退款状态 SUCCESS); PROCESSING, CLOSED or
            # ABNORMAL ones gave nothing back to the payer.
            amount = _yuan(_pick(row, "申请退款金额", "退款金额") or "", "退款金额", number)
            rows.append(
                StatementRow(
                    provider="wechat",
                    kind="refund",
                    transaction_id=_required(row["微信订单号"], "微信订单号", number),
                    order_id=row["商户订单号"],
                    amount=abs(amount),
                    time=_when(_pick(row, "退款申请时间", "退款成功时间", "交易时间")),
                    refund_id=_required(row.get("微信退款单号", ""), "微信退款单号", number),
                    line=number,
                )
            )
        # REVOKED and other states moved no money that stays: nothing to credit.
        index += 1
    if declared is None or declared > detail:
        raise StatementError(
            "statement_truncated",
            "The statement ends before its summary lines say it should (总交易单数): "
            "it is incomplete; download it again.",
        )
    refunds = "微信退款单号" in header
    payments = "退款申请时间" not in header or any(r.kind == "paid" for r in rows)
    return Statement("wechat", None, tuple(rows), payments=payments, refunds=refunds)


def _required(value: str, what: str, line: int) -> str:
    if not value or len(value) > 64:
        raise StatementError(
            "statement_bad_line", f"Line {line}: {what} is missing.", line=str(line)
        )
    return value


def parse_alipay(data: bytes) -> Statement:
    """Read an Alipay trade bill (业务明细) or raise StatementError."""
    lines = _lines(_decode(data))
    day: date | None = None
    totals: dict[str, int] = {}
    ended = False
    header: dict[str, int] | None = None
    rows: list[StatementRow] = []
    for index, (number, fields) in enumerate(lines):
        text = ",".join(fields).strip()
        if text.startswith("#"):
            if "起始日期" in text and (found := _CN_DATE.search(text)) is not None:
                try:
                    day = date(*(int(part) for part in found.groups()))
                except ValueError:
                    day = None
            for label, counted in (("交易合计", "paid"), ("退款合计", "refund")):
                if label in text and (count := _COUNT.search(text)) is not None:
                    totals[counted] = int(count.group(1))
            if "结束" in text:
                ended = True
            continue
        if header is None:
            names = [_column(c) for c in fields]
            if "支付宝交易号" in names and "业务类型" in names:
                header = {name: i for i, name in enumerate(names)}
                _need(header, ("支付宝交易号", "商户订单号", "业务类型", "订单金额"), "Alipay")
            continue
        if len(fields) < len(header) and index == len(lines) - 1:
            ended = False  # cut off in its last line
            totals = {}
            break
        row = _fields(header, fields, number)
        business = row["业务类型"]
        if business not in ("交易", "退款"):
            continue
        kind: Literal["paid", "refund"] = "paid" if business == "交易" else "refund"
        amount = abs(_yuan(row["订单金额"], "订单金额", number))
        refund_id = ""
        if kind == "refund":
            refund_id = _required(row.get("退款批次号/请求号", ""), "退款批次号/请求号", number)
            # A refund line's 订单金额 may be its order's whole amount; what went back is
            # 商家实收 (negative) where the file has it: a partial refund is not a mismatch.
            received = row.get("商家实收", "").strip()
            if received and (back := abs(_yuan(received, "商家实收", number))):
                amount = back
        rows.append(
            StatementRow(
                provider="alipay",
                kind=kind,
                transaction_id=_required(row["支付宝交易号"], "支付宝交易号", number),
                order_id=row["商户订单号"],
                amount=amount,
                time=_when(_pick(row, "完成时间", "创建时间")),
                refund_id=refund_id,
                line=number,
            )
        )
    if header is None:
        raise StatementError(
            "statement_not_provider",
            "This is not an Alipay trade bill: no header line (支付宝交易号,商户订单号,...).",
            provider="Alipay",
            columns="支付宝交易号, 商户订单号, 业务类型",
        )
    listed: Counter[str] = Counter(r.kind for r in rows)
    if not (ended or totals) or any(totals[k] > listed[k] for k in totals):
        raise StatementError(
            "statement_truncated",
            "The statement ends before its totals say it should (交易合计/退款合计): "
            "it is incomplete; download it again.",
        )
    return Statement("alipay", day, tuple(rows))


def parse_statement(provider: str, data: bytes) -> Statement:
    """Read a statement of `provider` (wechat or alipay) or raise StatementError."""
    if provider == "wechat":
        return parse_wechat(data)
    if provider == "alipay":
        return parse_alipay(data)
    raise StatementError(
        "invalid_provider", f"Unknown payment provider {provider!r}", provider=str(provider)
    )


# ---------------------------------------------------------------------------- comparing


@dataclass(frozen=True, slots=True)
class _Finding:
    cls: str
    item_key: str
    kind: Literal["paid", "refund"]
    transaction_id: str
    order_id: str
    refund_id: str
    provider_amount: Decimal | None
    ledger_amount: Decimal | None
    account_id: str | None
    purpose: str | None
    detail: dict[str, str]


@dataclass(frozen=True, slots=True)
class Resolution:
    """A resolution decided: post `outcome` (if any, with `post_outcome`), then `settle`."""

    item: ReconItem
    action: Literal["credit", "refund", "dismiss"]
    outcome: Credit | Reverse | None
    actor: str


def _delta(item: ReconItem) -> Decimal:
    """Return what the household's balance lacks by the statement (negative: has too much)."""
    provider = item.provider_amount or _ZERO
    ledger = item.ledger_amount or _ZERO
    return provider - ledger if item.kind == "paid" else ledger - provider


def _notice_time(notice: PayNotice) -> int:
    """Return when the provider says a credited notice's money moved (else when received)."""
    try:
        said = str(json.loads(notice.body).get("time", ""))
    except (ValueError, AttributeError):
        said = ""
    moment = _when(said)
    return notice.received_at if moment is None else int(moment.timestamp())


def _refund_id(notice: PayNotice) -> str:
    try:
        return str(json.loads(notice.body).get("refund_id", "") or "")
    except (ValueError, AttributeError):
        return ""


def _purpose(value: str | None) -> Purpose:
    if value == "property_fee":
        return "property_fee"
    if value == "parking_fee":
        return "parking_fee"
    return "electricity"


def _provider(value: str) -> Provider:
    return "alipay" if value == "alipay" else "wechat"


def _item_view(item: ReconItem) -> dict[str, Any]:
    return {
        "item": item.item_id,
        "kind": item.kind,
        "transaction_id": item.transaction_id,
        "order_id": item.order_id,
        "refund_id": item.refund_id,
        "provider_amount": None if item.provider_amount is None else str(item.provider_amount),
        "ledger_amount": None if item.ledger_amount is None else str(item.ledger_amount),
        "household": item.account_id,
        "state": item.state,
        "action": item.action,
    }


class Reconciler:
    """A community's statements against its ledger (see the module docstring)."""

    def __init__(
        self,
        ledger: Ledger,
        zone: tzinfo,
        clock: Callable[[], float] = time.time,
        lock: threading.RLock | None = None,
    ) -> None:
        """Work on `ledger` (`zone`: the community's; a statement's day is China's, see
        `window`)."""
        self.ledger = ledger
        self.zone = zone
        self.clock = clock
        self._lock = lock if lock is not None else threading.RLock()

    def window(self, day: date) -> tuple[int, int]:
        """Return the statement day's bounds (UNIX seconds, end excluded).

        In China Standard Time, whatever the community's zone: the providers cut their bills'
        days there, so a credit near midnight elsewhere is compared with the bill it is in.
        """
        start = datetime.combine(day, day_time(0), CST)
        end = datetime.combine(day + timedelta(days=1), day_time(0), CST)
        return int(start.timestamp()), int(end.timestamp())

    def _account(self, provider: str, row: StatementRow) -> tuple[str | None, str | None]:
        """Return the household and purpose a provider's payment was meant for, if known."""
        order = self.ledger.pay_order(row.order_id) if row.order_id else None
        if order is not None:
            return order.account_id, order.purpose.value
        stored = self.ledger.pay_notice(f"{provider}:paid:{row.transaction_id}")
        if stored is not None and stored.account_id is not None:
            return stored.account_id, None if stored.purpose is None else stored.purpose.value
        return None, None

    def compare(self, statement: Statement, day: date) -> list[_Finding]:
        """Return every line's class and every credit of the day the statement lacks."""
        provider = statement.provider
        credited = [
            n
            for n in self.ledger.pay_notices(_CREDITED, limit=10_000_000)
            if n.provider == provider
        ]
        paid = {n.transaction_id: n for n in credited if n.kind == "paid"}
        refunds = {(n.transaction_id, _refund_id(n)): n for n in credited if n.kind == "refund"}
        findings: list[_Finding] = []
        listed: set[str] = set()
        for row in statement.rows:
            if row.item_key in listed:
                continue  # the same line twice in one file is one payment
            listed.add(row.item_key)
            notice = (
                paid.get(row.transaction_id)
                if row.kind == "paid"
                else refunds.get((row.transaction_id, row.refund_id))
            )
            ours = None
            if notice is not None:
                ours = notice.credit_amount if notice.credit_amount is not None else notice.amount
            if notice is None:
                cls = "missing_in_ledger"
                account, purpose = self._account(provider, row)
            else:
                cls = "matched" if ours == row.amount else "amount_mismatch"
                account = notice.account_id
                purpose = None if notice.purpose is None else notice.purpose.value
            findings.append(
                _Finding(
                    cls=cls,
                    item_key=row.item_key,
                    kind=row.kind,
                    transaction_id=row.transaction_id,
                    order_id=row.order_id,
                    refund_id=row.refund_id,
                    provider_amount=row.amount,
                    ledger_amount=ours,
                    account_id=account,
                    purpose=purpose,
                    detail=row.as_dict(),
                )
            )
        start, end = self.window(day)
        for notice in credited:
            if not start <= _notice_time(notice) < end:
                continue
            if notice.kind == "paid":
                if not statement.payments:
                    continue
                key = f"{provider}:paid:{notice.transaction_id}"
                refund_id = ""
            else:
                if not statement.refunds:
                    continue
                refund_id = _refund_id(notice)
                key = f"{provider}:refund:{notice.transaction_id}:{refund_id}"
            if key in listed:
                continue
            listed.add(key)
            amount = notice.credit_amount if notice.credit_amount is not None else notice.amount
            findings.append(
                _Finding(
                    cls="missing_at_provider",
                    item_key=key,
                    kind="paid" if notice.kind == "paid" else "refund",
                    transaction_id=notice.transaction_id,
                    order_id=notice.order_id,
                    refund_id=refund_id,
                    provider_amount=None,
                    ledger_amount=amount,
                    account_id=notice.account_id,
                    purpose=None if notice.purpose is None else notice.purpose.value,
                    detail={"notice": notice.notice_key, "credit_key": notice.credit_key or ""},
                )
            )
        return findings

    # ------------------------------------------------------------------ importing

    def import_statement(
        self,
        provider: str,
        data: bytes,
        name: str,
        actor: Actor,
        day: date | None = None,
    ) -> dict[str, Any]:
        """Read a statement, compare it, keep its discrepancies; return the report.

        Raise StatementError (nothing kept) for a file that cannot be read or has no day.
        """
        statement = parse_statement(provider, data)
        if day is not None and statement.day is not None and day != statement.day:
            raise StatementError(
                "statement_day_differs",
                f"The file is the statement of {statement.day}, not of {day}.",
                file_day=statement.day.isoformat(),
                day=day.isoformat(),
            )
        day = day or statement.inferred_day()
        if day is None:
            raise StatementError(
                "statement_day_unknown",
                "The statement names no day and lists nothing to tell it by; give the day.",
            )
        with self._lock:
            findings = self.compare(statement, day)
            counts = {cls: sum(1 for f in findings if f.cls == cls) for cls in CLASSES}
            now = int(self.clock())
            items = [
                ReconItem(
                    item_key=f.item_key,
                    provider=provider,
                    day=day.isoformat(),
                    kind=f.kind,
                    cls=f.cls,
                    transaction_id=f.transaction_id,
                    order_id=f.order_id,
                    refund_id=f.refund_id,
                    provider_amount=f.provider_amount,
                    ledger_amount=f.ledger_amount,
                    account_id=f.account_id,
                    purpose=f.purpose,
                    detail=json.dumps(f.detail, ensure_ascii=False, sort_keys=True),
                )
                for f in findings
                if f.cls != "matched"
            ]
            try:
                import_id, stored = self.ledger.record_statement(
                    ReconImport(
                        provider=provider,
                        day=day.isoformat(),
                        digest=hashlib.sha256(data).hexdigest(),
                        name=name,
                        summary=json.dumps(
                            {**counts, "lines": len(statement.rows)}, sort_keys=True
                        ),
                        actor=str(actor),
                        ts=now,
                    ),
                    items,
                    matched=[f.item_key for f in findings if f.cls == "matched"],
                )
            except LedgerError as err:
                raise StatementError("ledger_error", str(err), error=str(err)) from err
        found = {item.item_key for item in items}
        report: dict[str, Any] = {
            "provider": provider,
            "day": day.isoformat(),
            "import_id": import_id,
            "lines": len(statement.rows),
            "counts": counts,
            "matched": [
                {
                    "kind": f.kind,
                    "transaction_id": f.transaction_id,
                    "order_id": f.order_id,
                    "refund_id": f.refund_id,
                    "amount": str(f.provider_amount),
                    "household": f.account_id,
                }
                for f in findings
                if f.cls == "matched"
            ],
        }
        for cls in CLASSES[1:]:
            report[cls] = [
                _item_view(item) for item in stored if item.item_key in found and item.cls == cls
            ]
        report["open"] = sum(1 for item in stored if item.state == "open")
        return report

    # ------------------------------------------------------------------ resolving

    def open_items(self, provider: str | None = None, day: str | None = None) -> list[ReconItem]:
        """Return the discrepancies no one resolved yet, oldest first."""
        return self.ledger.recon_items(("open",), provider=provider, day=day)

    def resolve(
        self,
        item_id: int,
        action: Literal["credit", "refund", "dismiss"],
        actor: Actor,
        *,
        account_id: str | None = None,
    ) -> Resolution:
        """Decide an open item's resolution; a dismissal is recorded at once.

        For `credit` and `refund` return the Credit or Reverse to post (with `post_outcome`),
        then call `settle`. Raise StatementError for an unknown or resolved item, an action
        that does not fit it, or an unknown household.
        """
        with self._lock:
            item = self.ledger.recon_item(item_id)
            if item is None:
                raise StatementError(
                    "statement_item_unknown", f"No statement item {item_id}", item=str(item_id)
                )
            if item.state != "open":
                raise StatementError(
                    "statement_item_resolved",
                    f"Statement item {item_id} is resolved already ({item.action})",
                    item=str(item_id),
                    action=str(item.action),
                )
            if action == "dismiss":
                self.ledger.resolve_recon_item(item_id, "dismiss", str(actor), int(self.clock()))
                return Resolution(item, "dismiss", None, str(actor))
            delta = _delta(item)
            if (action == "credit" and delta <= 0) or (action == "refund" and delta >= 0):
                raise StatementError(
                    "statement_action_not_applicable",
                    f"Statement item {item_id} cannot be resolved by {action}: the ledger "
                    f"{'lacks' if delta > 0 else 'has'} {abs(delta)} by the statement",
                    item=str(item_id),
                    action=action,
                    amount=str(abs(delta)),
                )
            target = account_id or item.account_id
            if target is None:
                raise StatementError(
                    "statement_household_required",
                    f"Statement item {item_id} is of no known order: name the household",
                    item=str(item_id),
                )
            if self.ledger.household(target) is None:
                raise StatementError(
                    "unknown_household", f"Unknown household {target}", household=str(target)
                )
            purpose = _purpose(item.purpose)
            if item.cls == "missing_in_ledger":
                outcome = (
                    self._credit_payment(item, target, purpose, actor)
                    if item.kind == "paid"
                    else self._reverse_refund(item, target, purpose, actor)
                )
            else:
                key = f"reconcile:{item.provider}:{item.transaction_id}"
                if item.kind == "refund":
                    key += f":{item.refund_id}"
                kind = Credit if action == "credit" else Reverse
                outcome = kind(
                    account_id=target,
                    purpose=purpose,
                    amount=abs(delta),
                    key=key,
                    order_id=item.order_id,
                    provider=_provider(item.provider),
                    transaction_id=item.transaction_id,
                    notice_key=f"reconcile:{item.item_key}",  # no notice: confirm moves none
                )
            return Resolution(item, action, outcome, str(actor))

    def _record(self, item: ReconItem, notice: PayNotice, pays_order: bool) -> PayNotice:
        try:
            stored, _ = self.ledger.record_notice(
                notice,
                pays_order=pays_order,
                replaces=frozenset({"unmatched", "waiting", "dismissed"}),
            )
        except LedgerError as err:
            raise StatementError("ledger_error", str(err), error=str(err)) from err
        if stored.state not in _CREDITED or stored.credit_key != notice.credit_key:
            raise StatementError(
                "statement_item_resolved",
                f"Statement item {item.item_id}'s notice is {stored.state} already",
                item=str(item.item_id),
                action=stored.state,
            )
        return stored

    def _credit_payment(
        self, item: ReconItem, target: str, purpose: Purpose, actor: Actor
    ) -> Credit:
        """Credit a payment as its notification would have: a late one is then a Duplicate."""
        assert item.provider_amount is not None
        provider = _provider(item.provider)
        key = f"pay:{provider}:{item.transaction_id}"
        order = self.ledger.pay_order(item.order_id) if item.order_id else None
        detail = json.loads(item.detail)
        now = int(self.clock())
        stored = self._record(
            item,
            PayNotice(
                notice_key=f"{provider}:paid:{item.transaction_id}",
                provider=provider,
                kind="paid",
                order_id=item.order_id or "-",
                transaction_id=item.transaction_id,
                amount=item.provider_amount,
                received_at=now,
                state="due",
                reason=f"credited by reconciliation (statement of {item.day})",
                account_id=target,
                purpose=PURPOSES[purpose],
                credit_key=key,
                credit_amount=item.provider_amount,
                body=json.dumps(
                    {"source": "statement", "time": detail.get("time", ""), "refund_id": ""},
                    sort_keys=True,
                ),
                resolved_by=str(actor),
                resolved_at=now,
            ),
            pays_order=order is not None
            and order.state == "open"
            and order.account_id == target
            and order.provider == provider,
        )
        return Credit(
            account_id=stored.account_id or target,
            purpose=_purpose(None if stored.purpose is None else stored.purpose.value),
            amount=stored.credit_amount or item.provider_amount,
            key=key,
            order_id=stored.order_id,
            provider=provider,
            transaction_id=item.transaction_id,
            notice_key=stored.notice_key,
        )

    def _reverse_refund(
        self, item: ReconItem, target: str, purpose: Purpose, actor: Actor
    ) -> Reverse:
        """Reverse a refund as its notification would have: a late one then reverses nothing."""
        assert item.provider_amount is not None
        provider = _provider(item.provider)
        amount = item.provider_amount
        if provider == "wechat":
            notice_key = f"wechat:refund:{item.refund_id}"
            key = f"pay:wechat-refund:{item.refund_id}"
        else:
            # Alipay reports the trade's refunds so far (refund_fee): this one included.
            before = sum(
                (
                    n.credit_amount or _ZERO
                    for n in self.ledger.pay_notices(_CREDITED, order_id=item.order_id or "-")
                    if n.kind == "refund" and n.transaction_id == item.transaction_id
                ),
                _ZERO,
            )
            cumulative = before + amount
            notice_key = f"alipay:refund:{item.transaction_id}:{cumulative}"
            key = f"pay:alipay-refund:{item.transaction_id}:{cumulative}"
        detail = json.loads(item.detail)
        now = int(self.clock())
        stored = self._record(
            item,
            PayNotice(
                notice_key=notice_key,
                provider=provider,
                kind="refund",
                order_id=item.order_id or "-",
                transaction_id=item.transaction_id,
                amount=amount,
                received_at=now,
                state="due",
                reason=f"reversed by reconciliation (statement of {item.day})",
                account_id=target,
                purpose=PURPOSES[purpose],
                credit_key=key,
                credit_amount=amount,
                body=json.dumps(
                    {
                        "source": "statement",
                        "time": detail.get("time", ""),
                        "refund_id": item.refund_id,
                    },
                    sort_keys=True,
                ),
                resolved_by=str(actor),
                resolved_at=now,
            ),
            pays_order=False,
        )
        return Reverse(
            account_id=stored.account_id or target,
            purpose=_purpose(None if stored.purpose is None else stored.purpose.value),
            amount=stored.credit_amount or amount,
            key=key,
            order_id=stored.order_id,
            provider=provider,
            transaction_id=item.transaction_id,
            notice_key=stored.notice_key,
        )

    def settle(self, resolution: Resolution) -> ReconItem:
        """Record a posted resolution on its item (who, when, amount, journal key)."""
        outcome = resolution.outcome
        with self._lock:
            if outcome is not None:
                signed = outcome.amount if isinstance(outcome, Credit) else -outcome.amount
                self.ledger.resolve_recon_item(
                    resolution.item.item_id,
                    resolution.action,
                    resolution.actor,
                    int(self.clock()),
                    amount=signed,
                    entry_key=outcome.journal_key,
                )
            item = self.ledger.recon_item(resolution.item.item_id)
            assert item is not None
            return item
