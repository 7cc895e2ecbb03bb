"""The payment actions: orders with a QR code, unmatched payments, move-out, monthly report.

services.py registers them with the others (`PAYMENT_SERVICES`):

- `create_payment_order` (a resident for their own household, an operator for any): an order
  for an amount and a purpose, the provider's payment code, its expiry and the code as an SVG
  QR image to show (the resident scans it with WeChat or Alipay);
- `resolve_unmatched_payment` (operator): credit an unmatched payment to a household (its
  order's unless another is named) or dismiss it (refunded at the provider, say);
- `move_out` (operator): settle a household: pending charges committed, the final balances,
  the current cycle's statement, the refund due or the arrears, and its meter unassigned so
  that a new household can be assigned to it;
- `payment_report` (operator): a month's money per household (opening, top-ups by channel,
  charges, fees, payments, refunds, adjustments, closing) with totals, as response data and as
  a CSV file in `prepaid_meter_reports/` of the configuration folder.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable
import csv
from datetime import datetime
from decimal import Decimal
import io
import logging
from pathlib import Path
import re
from typing import Any, Final
from zoneinfo import ZoneInfo

from homeassistant.config_entries import ConfigEntryState
from homeassistant.core import HomeAssistant, ServiceCall, ServiceResponse, SupportsResponse
from homeassistant.exceptions import HomeAssistantError, Unauthorized
from homeassistant.helpers import config_validation as cv
import voluptuous as vol

from .const import DOMAIN
from .coordinator import PrepaidConfigEntry, PrepaidRuntime, async_actor
from .engine.actor import Actor
from .engine.ledger import EntryKind, Ledger, SubAccount
from .household_entry import is_household
from .payments import CommunityPayments, payments_of
from .texts import translated_error

_LOGGER = logging.getLogger(__package__)

__all__ = [
    "PAYMENT_SERVICES",
    "REPORT_FOLDER",
    "month_report",
    "report_csv",
]

ATTR_CONFIG_ENTRY_ID: Final = "config_entry_id"
ATTR_HOUSEHOLD: Final = "household"
ATTR_METER_ID: Final = "meter_id"
ATTR_AMOUNT: Final = "amount"
ATTR_PURPOSE: Final = "purpose"
ATTR_PROVIDER: Final = "provider"
ATTR_NOTICE: Final = "notice"
ATTR_ACTION: Final = "action"
ATTR_MONTH: Final = "month"
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
MOVE_OUT_SCHEMA = vol.Schema({**_ENTRY, **_TARGET})
REPORT_SCHEMA = vol.Schema({**_ENTRY, vol.Required(ATTR_MONTH): vol.Match(_MONTH_RE)})


def _runtime(hass: HomeAssistant, call: ServiceCall) -> PrepaidRuntime:
    """Return the community runtime named by config_entry_id, or the only one loaded."""
    entry_id = call.data.get(ATTR_CONFIG_ENTRY_ID)
    entries: list[PrepaidConfigEntry] = [
        e
        for e in hass.config_entries.async_entries(DOMAIN)
        if e.state is ConfigEntryState.LOADED and not is_household(e)
    ]
    if entry_id is not None:
        entries = [e for e in entries if e.entry_id == entry_id]
    if len(entries) != 1:
        raise translated_error("entry_not_loaded", entry=str(entry_id or ""))
    return entries[0].runtime_data


async def _operator(hass: HomeAssistant, call: ServiceCall) -> Actor:
    actor = await async_actor(hass, call.context)
    if not actor.is_operator:
        raise Unauthorized(context=call.context)
    return actor


def _account_of(runtime: PrepaidRuntime, call: ServiceCall) -> str:
    household = call.data.get(ATTR_HOUSEHOLD)
    if household is not None:
        if household not in runtime.community.households:
            raise translated_error("unknown_household", household=str(household))
        return str(household)
    meter_id = call.data.get(ATTR_METER_ID)
    if meter_id is None:
        raise translated_error("household_or_meter_required")
    meter = runtime.community.meters.get(meter_id)
    if meter is None:
        raise translated_error("unknown_meter", meter_id=str(meter_id)[:80])
    if meter.account_id is None:
        raise translated_error("meter_unassigned", meter_id=str(meter_id))
    return meter.account_id


def _payments(hass: HomeAssistant, runtime: PrepaidRuntime) -> CommunityPayments:
    payments = payments_of(hass, runtime.entry.entry_id)
    if payments is None:
        raise translated_error("payments_not_configured", community=runtime.community_name)
    return payments


# ---------------------------------------------------------------------------- orders


async def _create_payment_order(hass: HomeAssistant, call: ServiceCall) -> ServiceResponse:
    actor = await async_actor(hass, call.context)
    runtime = _runtime(hass, call)
    if call.data.get(ATTR_HOUSEHOLD) is not None:
        # Who asks comes first: a resident learns nothing of a household not theirs.
        runtime.community.authorize(actor, "statement", account_id=call.data[ATTR_HOUSEHOLD])
    elif call.data.get(ATTR_METER_ID) in runtime.community.meters:
        runtime.community.authorize(actor, "statement", meter_id=call.data[ATTR_METER_ID])
    account_id = _account_of(runtime, call)
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
    actor = await _operator(hass, call)
    runtime = _runtime(hass, call)
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


async def _move_out(hass: HomeAssistant, call: ServiceCall) -> ServiceResponse:
    actor = await _operator(hass, call)
    runtime = _runtime(hass, call)
    account_id = _account_of(runtime, call)
    community = runtime.community
    meters = sorted(m.meter_id for m in community.meters.values() if m.account_id == account_id)
    # Charges up to each meter's last reading first: the final figures include them.
    await runtime.async_call(runtime.service.flush, raise_errors=True)
    cycle = next(
        (community.meters[m].billing.cycle for m in meters if community.meters[m].billing.cycle),
        None,
    )
    statement: dict[str, Any] | None = None
    if cycle is not None:
        statement = await runtime.async_call(runtime.service.statement, account_id, cycle)
    ledger = community.ledger
    balances: dict[SubAccount, Decimal] = await hass.async_add_executor_job(
        ledger.balances, account_id
    )
    for meter_id in meters:
        await runtime.async_call(runtime.service.unassign, meter_id, actor=actor)
    # The household's own Home Assistant loses its broker access with the meter (issue 12).
    from .services import async_revoke_given_access  # noqa: PLC0415 - services imports us

    access: dict[str, bool | None] = {}
    for meter_id in meters:
        try:
            access[meter_id] = await async_revoke_given_access(hass, runtime, meter_id)
        except HomeAssistantError as err:  # moved out regardless; the operator is told
            _LOGGER.warning("Broker access of meter %s not revoked: %s", meter_id, err)
            access[meter_id] = False
    electricity = balances[SubAccount.ELECTRICITY]
    arrears = {sub.value: _money(-value) for sub, value in balances.items() if value < 0}
    settled: dict[str, Any] = {
        "household": account_id,
        "label": community.households[account_id].label
        if account_id in community.households
        else account_id,
        "meters": meters,
        "balances": {sub.value: _money(value) for sub, value in balances.items()},
        "refund_due": _money(max(electricity, _ZERO)),
        "arrears": arrears,
        "arrears_total": _money(sum((-v for v in balances.values() if v < 0), _ZERO)),
        "cycle": cycle,
        "statement": statement,
        # per meter: True revoked, False could not be (see the log), None none was handed out
        "broker_access_revoked": access,
    }
    return settled


# ---------------------------------------------------------------------------- the report


def _month_bounds(month: str, zone: ZoneInfo) -> tuple[int, int]:
    year, number = (int(part) for part in month.split("-"))
    start = datetime(year, number, 1, tzinfo=zone)
    end = datetime(year + number // 12, number % 12 + 1, 1, tzinfo=zone)
    return int(start.timestamp()), int(end.timestamp())


def _empty() -> dict[str, Decimal]:
    return {sub.value: _ZERO for sub in _SUBS}


def month_report(ledger: Ledger, month: str, zone: ZoneInfo) -> dict[str, Any]:
    """Return a month's money per household and in total (blocking: reads the ledger).

    For each household and sub-account: `opening + sum(movements) == closing`, where closing
    is the balance at the month's end (today's balance less what came after). Amounts are
    exact decimal strings.
    """
    start, end = _month_bounds(month, zone)
    rows: list[dict[str, Any]] = []
    channels: set[str] = set()
    for household in ledger.households():
        now = ledger.balances(household.account_id)
        opening = {sub.value: now[sub] for sub in _SUBS}
        closing = dict(opening)
        top_ups: dict[str, Decimal] = {}
        charges = _ZERO
        figures: dict[str, dict[str, Decimal]] = {
            "fees": _empty(),
            "payments": _empty(),
            "refunds": _empty(),
            "adjustments": _empty(),
            "settlements": _empty(),
        }
        for entry in ledger.entries(household.account_id, since=start, limit=10_000_000):
            sub = entry.sub.value
            if entry.ts >= end:
                closing[sub] -= entry.amount
                opening[sub] -= entry.amount
                continue
            opening[sub] -= entry.amount
            if entry.kind is EntryKind.TOP_UP:
                channel = str(entry.meta.get("channel", "")) or "other"
                channels.add(channel)
                top_ups[channel] = top_ups.get(channel, _ZERO) + entry.amount
            elif entry.kind is EntryKind.CHARGE:
                charges += entry.amount
            else:
                group = {
                    EntryKind.FEE: "fees",
                    EntryKind.PAYMENT: "payments",
                    EntryKind.REFUND: "refunds",
                    EntryKind.ADJUSTMENT: "adjustments",
                    EntryKind.SETTLEMENT: "settlements",
                }[entry.kind]
                figures[group][sub] += entry.amount
        rows.append(
            {
                "household": household.account_id,
                "label": household.label,
                "opening": opening,
                "top_ups": top_ups,
                "charges": charges,
                **figures,
                "closing": closing,
            }
        )
    totals: dict[str, Any] = {
        "opening": _empty(),
        "top_ups": dict.fromkeys(sorted(channels), _ZERO),
        "charges": _ZERO,
        "fees": _empty(),
        "payments": _empty(),
        "refunds": _empty(),
        "adjustments": _empty(),
        "settlements": _empty(),
        "closing": _empty(),
    }
    for row in rows:
        for name, value in row.items():
            if name in ("household", "label"):
                continue
            if isinstance(value, Decimal):
                totals[name] += value
            else:
                for key, amount in value.items():
                    totals[name][key] = totals[name].get(key, _ZERO) + amount
    return {
        "month": month,
        "channels": sorted(channels),
        "households": [_as_text(row) for row in rows],
        "totals": _as_text(totals),
    }


def _as_text(value: Any) -> Any:
    if isinstance(value, Decimal):
        return _money(value)
    if isinstance(value, dict):
        return {key: _as_text(item) for key, item in value.items()}
    return value


def _columns(channels: Iterable[str]) -> list[tuple[str, Callable[[dict[str, Any]], str]]]:
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
    for group in ("fees", "payments", "refunds", "adjustments", "settlements"):
        for sub in _SUBS:
            columns.append((f"{group}_{sub.value}", pick(group, sub.value)))
    for sub in _SUBS:
        columns.append((f"closing_{sub.value}", pick("closing", sub.value)))
    return columns


def report_csv(report: dict[str, Any]) -> str:
    """Return the report as CSV: a row per household, then the totals."""
    columns = _columns(report["channels"])
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


async def _payment_report(hass: HomeAssistant, call: ServiceCall) -> ServiceResponse:
    await _operator(hass, call)
    runtime = _runtime(hass, call)
    month = call.data[ATTR_MONTH]
    zone = runtime.community.tariff.tz
    if not 2000 <= int(month[:4]) <= datetime.now(zone).year + 1:
        raise translated_error("invalid_month", month=month)
    await runtime.async_call(runtime.service.flush, raise_errors=True)
    ledger = runtime.community.ledger
    report = await hass.async_add_executor_job(month_report, ledger, month, zone)
    path = await hass.async_add_executor_job(
        _write_report,
        Path(hass.config.path(REPORT_FOLDER)),
        f"{runtime.community_id}_{month}.csv",
        report_csv(report),
    )
    return {**report, "community": runtime.community_id, "path": str(path)}


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
