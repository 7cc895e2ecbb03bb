"""The payment actions: orders with a QR code, unmatched payments, move-out, monthly report.

services.py registers them with the others (`PAYMENT_SERVICES`):

- `create_payment_order` (a resident for their own household, an operator for any): an order
  for an amount and a purpose, the provider's payment code, its expiry and the code as an SVG
  QR image to show (the resident scans it with WeChat or Alipay);
- `resolve_unmatched_payment` (operator): credit an unmatched payment to a household (its
  order's unless another is named) or dismiss it (refunded at the provider, say);
- `move_out` (operator): settle a household: its meter unassigned (so that a new household,
  starting at zero with its own tiers, can be assigned to it), its charges committed, its
  open cycles closed (the final statement, settled to the cent), the final balances, the fee
  arrears listed (never taken from the electricity credit), and the electricity credit left
  refunded (`credit: refund`, the default: one REFUND entry) or carried to the next tenant
  (`credit: carry`, `next_household`: an existing household, or a new one created with
  `next_label`; an ADJUSTMENT out of this household and one into the next, in one
  transaction). The entries' key is `move_out:<household>:<cycle>`, their meta the actor and
  the reason: a repeated call settles nothing twice (for the household, it answers with the
  settlement made). Bad input is refused before anything is changed;
- `payment_report` (operator): a month's money per household (opening, top-ups by channel,
  charges, fees, payments, refunds, adjustments, closing) with totals, as response data and as
  a CSV file in `prepaid_meter_reports/` of the configuration folder.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Iterable
import csv
from datetime import datetime, timedelta
import decimal
from decimal import Decimal
import io
import logging
from pathlib import Path
import re
from typing import Any, Final
from zoneinfo import ZoneInfo

from homeassistant.components.http.auth import async_sign_path
from homeassistant.core import HomeAssistant, ServiceCall, ServiceResponse, SupportsResponse
from homeassistant.exceptions import HomeAssistantError
from homeassistant.helpers import config_validation as cv
import voluptuous as vol

from .actions import (
    ATTR_CONFIG_ENTRY_ID,
    ATTR_HOUSEHOLD,
    ATTR_METER_ID,
    account_of,
    async_operator,
    call_runtime,
)
from .const import DOMAIN
from .coordinator import PrepaidRuntime, async_actor
from .engine.actor import Actor
from .engine.community import MOVE_OUT_CREDIT, MoveOut, split_usage_period
from .engine.ledger import EntryKind, Ledger, MonthUsage, SubAccount
from .payments import CommunityPayments, payments_of
from .texts import translated_error

_LOGGER = logging.getLogger(__package__)

__all__ = [
    "PAYMENT_SERVICES",
    "REPORT_FOLDER",
    "ReportInvariantError",
    "async_month_report",
    "month_report",
    "report_csv",
    "report_url",
]

ATTR_AMOUNT: Final = "amount"
ATTR_PURPOSE: Final = "purpose"
ATTR_PROVIDER: Final = "provider"
ATTR_NOTICE: Final = "notice"
ATTR_ACTION: Final = "action"
ATTR_MONTH: Final = "month"
ATTR_CREDIT: Final = "credit"
ATTR_NEXT_HOUSEHOLD: Final = "next_household"
ATTR_NEXT_LABEL: Final = "next_label"
ATTR_REASON: Final = "reason"
REPORT_FOLDER: Final = "prepaid_meter_reports"
PURPOSES: Final = ["electricity", "property_fee", "parking_fee"]
PROVIDERS: Final = ["wechat", "alipay"]
_CENT: Final = Decimal("0.01")
_ZERO: Final = Decimal(0)
_MONTH_RE: Final = re.compile(r"^\d{4}-(0[1-9]|1[0-2])$")
_SUBS: Final = tuple(SubAccount)


def _amount(value: Any) -> Decimal:
    """Read an amount exactly (strings and ints as written, floats through their repr)."""
    if isinstance(value, bool):
        raise vol.Invalid("amount")
    try:
        amount = Decimal(str(value).strip())
    except ArithmeticError:
        raise vol.Invalid("amount") from None
    if not amount.is_finite() or amount <= 0 or amount != amount.quantize(_CENT):
        raise vol.Invalid("amount")
    return amount


_ENTRY: dict[vol.Marker, Any] = {vol.Optional(ATTR_CONFIG_ENTRY_ID): cv.string}
_TARGET: dict[vol.Marker, Any] = {
    vol.Exclusive(ATTR_HOUSEHOLD, "target"): cv.string,
    vol.Exclusive(ATTR_METER_ID, "target"): cv.string,
}
ORDER_SCHEMA = vol.Schema(
    {
        **_ENTRY,
        **_TARGET,
        vol.Required(ATTR_AMOUNT): _amount,
        vol.Optional(ATTR_PURPOSE, default="electricity"): vol.In(PURPOSES),
        vol.Optional(ATTR_PROVIDER, default="wechat"): vol.In(PROVIDERS),
    }
)
RESOLVE_SCHEMA = vol.Schema(
    {
        **_ENTRY,
        vol.Required(ATTR_NOTICE): vol.All(cv.string, vol.Length(min=1, max=300)),
        vol.Required(ATTR_ACTION): vol.In(["credit", "dismiss"]),
        vol.Optional(ATTR_HOUSEHOLD): cv.string,
        vol.Optional(ATTR_PURPOSE): vol.In(PURPOSES),
    }
)
MOVE_OUT_SCHEMA = vol.Schema(
    {
        **_ENTRY,
        **_TARGET,
        vol.Optional(ATTR_CREDIT, default="refund"): vol.In(MOVE_OUT_CREDIT),
        vol.Optional(ATTR_NEXT_HOUSEHOLD): vol.All(cv.string, vol.Length(min=1, max=200)),
        vol.Optional(ATTR_NEXT_LABEL): vol.All(cv.string, vol.Length(min=1, max=200)),
        vol.Optional(ATTR_REASON, default=""): vol.All(cv.string, vol.Length(max=300)),
    }
)
REPORT_SCHEMA = vol.Schema({**_ENTRY, vol.Required(ATTR_MONTH): vol.Match(_MONTH_RE)})


def _payments(hass: HomeAssistant, runtime: PrepaidRuntime) -> CommunityPayments:
    payments = payments_of(hass, runtime.entry.entry_id)
    if payments is None:
        raise translated_error("payments_not_configured", community=runtime.community_name)
    return payments


# ---------------------------------------------------------------------------- orders


async def _create_payment_order(hass: HomeAssistant, call: ServiceCall) -> ServiceResponse:
    actor = await async_actor(hass, call.context)
    runtime = call_runtime(hass, call)
    if call.data.get(ATTR_HOUSEHOLD) is not None:
        # Who asks comes first: a resident learns nothing of a household not theirs.
        runtime.community.authorize(actor, "statement", account_id=call.data[ATTR_HOUSEHOLD])
    elif call.data.get(ATTR_METER_ID) in runtime.community.meters:
        runtime.community.authorize(actor, "statement", meter_id=call.data[ATTR_METER_ID])
    account_id = account_of(runtime, call)
    runtime.community.authorize(actor, "statement", account_id=account_id)
    payments = _payments(hass, runtime)
    order: dict[str, Any] = await payments.async_create_order(
        account_id,
        call.data[ATTR_AMOUNT],
        call.data[ATTR_PURPOSE],
        call.data[ATTR_PROVIDER],
        actor,
    )
    return order


async def _resolve_unmatched_payment(hass: HomeAssistant, call: ServiceCall) -> ServiceResponse:
    actor = await async_operator(hass, call)
    runtime = call_runtime(hass, call)
    household = call.data.get(ATTR_HOUSEHOLD)
    if household is not None and household not in runtime.community.households:
        raise translated_error("unknown_household", household=str(household))
    result: dict[str, Any] = await _payments(hass, runtime).async_resolve(
        call.data[ATTR_NOTICE],
        call.data[ATTR_ACTION],
        actor,
        account_id=household,
        purpose=call.data.get(ATTR_PURPOSE),
    )
    return result


# ---------------------------------------------------------------------------- move-out


def _money(amount: Decimal) -> str:
    return str(amount.quantize(_CENT))


def _move_lock(hass: HomeAssistant, entry_id: str) -> asyncio.Lock:
    """One move-out at a time per community: a double click waits for the first one."""
    locks: dict[str, asyncio.Lock] = hass.data.setdefault(f"{DOMAIN}_move_out_locks", {})
    return locks.setdefault(entry_id, asyncio.Lock())


def _credit_of(settled: MoveOut) -> dict[str, Any]:
    return {
        "action": settled.credit,
        "amount": _money(settled.amount),
        "next_household": settled.next_account if settled.credit == "carry" else None,
        "move_key": settled.move_key,
        "already_settled": settled.duplicate,
    }


async def _move_out(hass: HomeAssistant, call: ServiceCall) -> ServiceResponse:
    actor = await async_operator(hass, call)
    runtime = call_runtime(hass, call)
    async with _move_lock(hass, runtime.entry.entry_id):
        return await _settle(hass, call, runtime, actor)


async def _settle(
    hass: HomeAssistant, call: ServiceCall, runtime: PrepaidRuntime, actor: Actor
) -> dict[str, Any]:
    account_id = account_of(runtime, call)
    community = runtime.community
    service = runtime.service
    credit: str = call.data[ATTR_CREDIT]
    next_account: str | None = call.data.get(ATTR_NEXT_HOUSEHOLD)
    next_label: str | None = call.data.get(ATTR_NEXT_LABEL)
    reason: str = call.data[ATTR_REASON]
    ledger = community.ledger
    meters = sorted(m.meter_id for m in community.meters.values() if m.account_id == account_id)
    if not meters:
        # Moved out already (a repeated call): the settlement made, nothing done again.
        key = f"move_out:{account_id}:{community.cycle_at(int(community.clock()))}"
        for found_key in (key, f"{key}:out"):
            entry = await hass.async_add_executor_job(ledger.entry_by_key, found_key)
            if entry is not None:
                balances = await hass.async_add_executor_job(ledger.balances, account_id)
                return {
                    "household": account_id,
                    "meters": [],
                    "balances_after": {sub.value: _money(v) for sub, v in balances.items()},
                    "credit": {
                        "action": "refund" if found_key == key else "carry",
                        "amount": _money(-entry.amount),
                        "next_household": entry.meta.get("to"),
                        "move_key": key,
                        "already_settled": True,
                    },
                }
        # A move-out interrupted after its meters were unassigned (an error, a restart)
        # is finished now: its cycles are still open or its credit is still there.
        balances_now = await hass.async_add_executor_job(ledger.balances, account_id)
        open_cycles = await hass.async_add_executor_job(ledger.open_cycles, account_id)
        if balances_now[SubAccount.ELECTRICITY] <= 0 and not open_cycles:
            raise translated_error("household_has_no_meter", household=account_id)
        _LOGGER.warning(
            "Household %s has no meter but %s open cycles and %s of credit: settling its "
            "move-out now",
            account_id,
            len(open_cycles),
            balances_now[SubAccount.ELECTRICITY],
        )
    # Bad input is refused here, before anything is changed.
    await runtime.async_call(service.check_move_out, account_id, credit, next_account, next_label)
    # Charges up to each meter's last reading first: the final figures include them.
    await runtime.async_call(service.flush, raise_errors=True)
    cycle = next(
        (community.meters[m].billing.cycle for m in meters if community.meters[m].billing.cycle),
        None,
    )
    for meter_id in meters:
        await runtime.async_call(service.unassign, meter_id, actor=actor)
    # The household's own Home Assistant loses its broker access with the meter (issue 12).
    from .services import async_revoke_given_access  # noqa: PLC0415 - services imports us

    access: dict[str, bool | None] = {}
    for meter_id in meters:
        try:
            access[meter_id] = await async_revoke_given_access(hass, runtime, meter_id)
        except HomeAssistantError as err:  # moved out regardless; the operator is told
            _LOGGER.warning("Broker access of meter %s not revoked: %s", meter_id, err)
            access[meter_id] = False
    # The final statements (open cycles closed), then the credit refunded or carried.
    settled = await runtime.async_call(
        service.settle_move_out,
        account_id,
        credit,
        actor=actor,
        next_account=next_account,
        next_label=next_label,
        reason=reason,
    )
    statement: dict[str, Any] | None = None
    if cycle is not None:
        statement = await runtime.async_call(service.statement, account_id, cycle)
    after: dict[SubAccount, Decimal] = await hass.async_add_executor_job(
        ledger.balances, account_id
    )
    balances = dict(after)
    balances[SubAccount.ELECTRICITY] += settled.amount  # as they were before the credit went
    electricity = balances[SubAccount.ELECTRICITY]
    arrears = {sub.value: _money(-value) for sub, value in balances.items() if value < 0}
    return {
        "household": account_id,
        "label": community.households[account_id].label
        if account_id in community.households
        else account_id,
        "meters": meters,
        "balances": {sub.value: _money(value) for sub, value in balances.items()},
        "refund_due": _money(settled.amount if credit == "refund" else _ZERO),
        "credit": _credit_of(settled),
        "balances_after": {sub.value: _money(value) for sub, value in after.items()},
        "arrears": arrears,
        "arrears_total": _money(sum((-v for v in balances.values() if v < 0), _ZERO)),
        "electricity_arrears": _money(max(-electricity, _ZERO)),
        "cycle": cycle,
        "closed_cycles": list(settled.closed),
        "statement": statement,
        # per meter: True revoked, False could not be (see the log), None none was handed out
        "broker_access_revoked": access,
    }


# ---------------------------------------------------------------------------- the report


class ReportInvariantError(Exception):
    """A report whose figures disagree with the ledger: refused, never handed out."""

    def __init__(self, month: str, problems: list[str]) -> None:
        """Keep what disagreed (each problem one line)."""
        super().__init__(f"The report of {month} disagrees with the ledger: {problems[0]}")
        self.month = month
        self.problems = problems


#: The report's groups of entries other than top-ups and charges, per sub-account.
GROUPS: Final = ("fees", "payments", "refunds", "adjustments", "carried", "settlements")
_GROUP_OF: Final = {
    EntryKind.FEE: "fees",
    EntryKind.PAYMENT: "payments",
    EntryKind.REFUND: "refunds",
    EntryKind.ADJUSTMENT: "adjustments",
    EntryKind.SETTLEMENT: "settlements",
}
_KWH: Final = Decimal("0.001")


def _month_bounds(month: str, zone: ZoneInfo) -> tuple[int, int]:
    year, number = (int(part) for part in month.split("-"))
    start = datetime(year, number, 1, tzinfo=zone)
    end = datetime(year + number // 12, number % 12 + 1, 1, tzinfo=zone)
    return int(start.timestamp()), int(end.timestamp())


def _empty() -> dict[str, Decimal]:
    return {sub.value: _ZERO for sub in _SUBS}


def _tier_name(tier: int, period: str) -> str:
    return f"t{tier}_{period}"


def month_report(ledger: Ledger, month: str, zone: ZoneInfo) -> dict[str, Any]:
    """Return a month's money per household and in total (blocking: reads the ledger).

    Per household: the opening and closing balance of each sub-account, top-ups by channel,
    the electricity charges (in total and by tier and period), fees, payments, refunds,
    adjustments, credit carried at a move-out and cycle settlements by sub-account. Amounts
    are decimal strings to the cent (kWh to the Wh); the sums behind them are exact.

    Charges by tier and period come from the ledger's usage per local month (`usage_months`,
    written in the same transaction as the charges and keyed by the month of the charge
    entry), so they add up to the month's charges whatever the billing cycle (yearly tiers
    too); charges written before that table existed are `charges_unsplit`.

    Checked before it is returned (ReportInvariantError otherwise): every household's cached
    balances equal its journal's last balances; for every household and sub-account, the
    opening plus the report's movements equals the closing (every entry counted once); the
    usage by tier never exceeds the charges; and the closings plus what came after equal the
    ledger's balances in total, exactly.
    """
    with decimal.localcontext(prec=80):  # sums of charges' 28 places stay exact
        return _month_report(ledger, month, zone)


def _month_report(ledger: Ledger, month: str, zone: ZoneInfo) -> dict[str, Any]:
    start, end = _month_bounds(month, zone)
    usage: dict[str, list[MonthUsage]] = {}
    for used in ledger.month_usage(month):
        usage.setdefault(used.account_id, []).append(used)
    problems: list[str] = []
    rows: list[dict[str, Any]] = []
    channels: set[str] = set()
    tier_names: dict[str, tuple[int, str]] = {}
    after_month = _empty()
    for household in ledger.households():
        account = household.account_id
        now = ledger.balances(account)
        for sub in _SUBS:
            newest = ledger.entries(account, sub, limit=1)
            journal = newest[0].balance_after if newest else _ZERO
            if journal != now[sub]:
                problems.append(f"{account}/{sub}: balance {now[sub]}, journal {journal}")
        later = _empty()
        moved = _empty()
        top_ups: dict[str, Decimal] = {}
        charges = _ZERO
        figures: dict[str, dict[str, Decimal]] = {group: _empty() for group in GROUPS}
        for entry in ledger.entries(account, since=start, limit=10_000_000):
            name = entry.sub.value
            if entry.ts >= end:
                later[name] += entry.amount
                continue
            moved[name] += entry.amount
            if entry.kind is EntryKind.TOP_UP and entry.sub is SubAccount.ELECTRICITY:
                channel = str(entry.meta.get("channel", "")) or "other"
                channels.add(channel)
                top_ups[channel] = top_ups.get(channel, _ZERO) + entry.amount
            elif entry.kind is EntryKind.TOP_UP:  # paid into a fee account
                figures["payments"][name] += entry.amount
            elif entry.kind is EntryKind.CHARGE:
                charges += entry.amount
            elif entry.kind is EntryKind.ADJUSTMENT and entry.meta.get("credit") == "carry":
                figures["carried"][name] += entry.amount
            else:
                figures[_GROUP_OF[entry.kind]][name] += entry.amount
        closing = {sub.value: now[sub] - later[sub.value] for sub in _SUBS}
        opening = {sub: closing[sub] - moved[sub] for sub in closing}
        for name, value in opening.items():
            reported = sum((figures[group][name] for group in GROUPS), _ZERO)
            if name == SubAccount.ELECTRICITY.value:
                reported += sum(top_ups.values(), _ZERO) + charges
            if value + reported != closing[name]:
                problems.append(
                    f"{account}/{name}: opening {value} + movements {reported} "
                    f"!= closing {closing[name]}"
                )
            after_month[name] += closing[name] + later[name]
        by_tier: dict[tuple[int, str], tuple[Decimal, Decimal, list[str]]] = {}
        for used in usage.get(account, []):
            period, price = split_usage_period(used.period)
            kwh, amount, prices = by_tier.get((used.tier, period), (_ZERO, _ZERO, []))
            by_tier[used.tier, period] = (
                kwh + used.kwh,
                amount + used.amount,
                [*prices, str(price)],
            )
            tier_names[_tier_name(used.tier, period)] = (used.tier, period)
        split = sum((amount for _, amount, _ in by_tier.values()), _ZERO)
        unsplit = -charges - split
        if unsplit < 0:
            problems.append(f"{account}: charges by tier {split} exceed the charges {-charges}")
        rows.append(
            {
                "household": account,
                "label": household.label,
                "opening": opening,
                "top_ups": top_ups,
                "charges": charges,
                "charges_by_tier": {
                    _tier_name(tier, period): {
                        "tier": tier,
                        "period": period,
                        "prices": prices,
                        "kwh": str(kwh.quantize(_KWH)),
                        "amount": -amount,
                    }
                    for (tier, period), (kwh, amount, prices) in sorted(by_tier.items())
                },
                "charges_unsplit": -unsplit,
                **figures,
                "closing": closing,
            }
        )
    totals: dict[str, Any] = {
        "opening": _empty(),
        "top_ups": dict.fromkeys(sorted(channels), _ZERO),
        "charges": _ZERO,
        "charges_unsplit": _ZERO,
        **{group: _empty() for group in GROUPS},
        "closing": _empty(),
    }
    tier_totals: dict[str, tuple[Decimal, Decimal]] = {}
    for row in rows:
        for name, value in row.items():
            if name in ("household", "label"):
                continue
            if name == "charges_by_tier":
                for key, line in value.items():
                    kwh, amount = tier_totals.get(key, (_ZERO, _ZERO))
                    tier_totals[key] = (kwh + Decimal(line["kwh"]), amount + line["amount"])
            elif isinstance(value, Decimal):
                totals[name] += value
            else:
                for key, amount in value.items():
                    totals[name][key] = totals[name].get(key, _ZERO) + amount
    totals["charges_by_tier"] = {
        key: {"kwh": str(kwh), "amount": amount}
        for key, (kwh, amount) in sorted(tier_totals.items())
    }
    for sub in _SUBS:
        in_ledger = ledger.total_balance(sub)
        if after_month[sub.value] != in_ledger:
            problems.append(f"total {sub}: households {after_month[sub.value]}, ledger {in_ledger}")
    if problems:
        raise ReportInvariantError(month, problems)
    return {
        "month": month,
        "timezone": str(zone),
        "channels": sorted(channels),
        "tiers": sorted(tier_names, key=lambda name: tier_names[name]),
        "households": [_as_text(row) for row in rows],
        "totals": _as_text(totals),
    }


def _as_text(value: Any) -> Any:
    if isinstance(value, Decimal):
        return _money(value)
    if isinstance(value, dict):
        return {key: _as_text(item) for key, item in value.items()}
    return value


def _columns(
    channels: Iterable[str], tiers: Iterable[str]
) -> list[tuple[str, Callable[[dict[str, Any]], str]]]:
    def pick(*path: str) -> Callable[[dict[str, Any]], str]:
        def read(row: dict[str, Any]) -> str:
            value: Any = row
            for name in path:
                value = value.get(name, "0.00") if isinstance(value, dict) else "0.00"
            return str(value)

        return read

    columns: list[tuple[str, Callable[[dict[str, Any]], str]]] = [
        ("household", pick("household")),
        ("label", pick("label")),
    ]
    for sub in _SUBS:
        columns.append((f"opening_{sub.value}", pick("opening", sub.value)))
    for channel in channels:
        columns.append((f"top_up_{channel}", pick("top_ups", channel)))
    columns.append(("charges", pick("charges")))
    for tier in tiers:
        columns.append((f"charges_{tier}_kwh", pick("charges_by_tier", tier, "kwh")))
        columns.append((f"charges_{tier}", pick("charges_by_tier", tier, "amount")))
    columns.append(("charges_unsplit", pick("charges_unsplit")))
    for group in GROUPS:
        for sub in _SUBS:
            columns.append((f"{group}_{sub.value}", pick(group, sub.value)))
    for sub in _SUBS:
        columns.append((f"closing_{sub.value}", pick("closing", sub.value)))
    return columns


def report_csv(report: dict[str, Any]) -> str:
    """Return the report as CSV: a row per household, then the totals."""
    columns = _columns(report["channels"], report.get("tiers", ()))
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow([name for name, _ in columns])
    for row in report["households"]:
        writer.writerow([read(row) for _, read in columns])
    totals = {"household": "TOTAL", "label": "", **report["totals"]}
    writer.writerow([read(totals) for _, read in columns])
    return buffer.getvalue()


def _write_report(folder: Path, name: str, text: str) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    path.write_text(text, encoding="utf-8")
    return path


#: How long the signed download link in `payment_report`'s response works.
LINK_VALID: Final = timedelta(hours=1)


def report_url(entry_id: str, month: str) -> str:
    """Return where the report's CSV is downloaded (an administrator's, see report_view.py)."""
    return f"/api/{DOMAIN}/report/{entry_id}/{month}.csv"


async def async_month_report(
    hass: HomeAssistant, runtime: PrepaidRuntime, month: str
) -> dict[str, Any]:
    """Commit pending charges, then make the month's report; a broken one is refused.

    A month that is no month of the ledger, or a report that disagrees with the ledger (see
    `month_report`; logged as an error), is one translated error.
    """
    zone = runtime.community.tariff.tz
    if not _MONTH_RE.match(month) or not 2000 <= int(month[:4]) <= datetime.now(zone).year + 1:
        raise translated_error("invalid_month", month=month)
    await runtime.async_call(runtime.service.flush, raise_errors=True)
    ledger = runtime.community.ledger
    try:
        report: dict[str, Any] = await hass.async_add_executor_job(
            month_report, ledger, month, zone
        )
    except ReportInvariantError as err:
        _LOGGER.error("%s; every problem: %s", err, "; ".join(err.problems))
        raise translated_error(
            "report_invariant_broken", month=month, problem=err.problems[0]
        ) from err
    return report


async def _payment_report(hass: HomeAssistant, call: ServiceCall) -> ServiceResponse:
    await async_operator(hass, call)
    runtime = call_runtime(hass, call)
    month = call.data[ATTR_MONTH]
    report = await async_month_report(hass, runtime, month)
    path = await hass.async_add_executor_job(
        _write_report,
        Path(hass.config.path(REPORT_FOLDER)),
        f"{runtime.community_id}_{month}.csv",
        report_csv(report),
    )
    download = report_url(runtime.entry.entry_id, month)
    return {
        **report,
        "community": runtime.community_id,
        "path": str(path),
        "download": download,
        # A browser sends no token when it follows a link: the link is signed (for an hour)
        # with the caller's own login (the frontend's websocket or the REST call's token), so
        # it downloads as them; from an automation it is Home Assistant's content user, which
        # the view refuses (not an administrator).
        "download_link": async_sign_path(hass, download, LINK_VALID),
    }


PAYMENT_SERVICES: dict[
    str,
    tuple[
        vol.Schema,
        Callable[[HomeAssistant, ServiceCall], Awaitable[ServiceResponse]],
        SupportsResponse,
    ],
] = {
    "create_payment_order": (ORDER_SCHEMA, _create_payment_order, SupportsResponse.ONLY),
    "resolve_unmatched_payment": (
        RESOLVE_SCHEMA,
        _resolve_unmatched_payment,
        SupportsResponse.OPTIONAL,
    ),
    "move_out": (MOVE_OUT_SCHEMA, _move_out, SupportsResponse.ONLY),
    "payment_report": (REPORT_SCHEMA, _payment_report, SupportsResponse.ONLY),
}
