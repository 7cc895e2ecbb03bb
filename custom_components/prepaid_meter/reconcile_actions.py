"""The reconciliation actions: a provider's daily statement against the ledger.

services.py registers them with the others (`RECONCILE_SERVICES`):

- `import_payment_statement` (operator): read a WeChat Pay or Alipay trade bill from a file in
  the configuration folder (nothing outside it is read), compare it with what the ledger
  credited (engine/reconcile.py) and answer with the counts and the lines of each class:
  matched, missing_in_ledger, missing_at_provider, amount_mismatch. Importing a file again
  keeps no discrepancy twice;
- `resolve_statement_item` (operator): settle one discrepancy: `credit` (the household gets
  what the ledger lacks), `refund` (a reversing entry for what it has too much of) or
  `dismiss` (nothing posted), journaled with the actor.

Open discrepancies are ONE repair per provider and statement day (`statement_discrepancies`,
persistent: kept across restarts), its count updated as items are resolved, removed when none
is left open. Each credit or refund posted fires `prepaid_meter_payment` (the payments'
event, with `reconciled: true`) for the logbook and automations.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from datetime import date
from decimal import Decimal
import logging
from pathlib import Path
import threading
from typing import Any, Final

from homeassistant.core import HomeAssistant, ServiceCall, ServiceResponse, SupportsResponse
from homeassistant.exceptions import ServiceValidationError
from homeassistant.helpers import config_validation as cv, issue_registry as ir
import voluptuous as vol

from .actions import ATTR_CONFIG_ENTRY_ID, ATTR_HOUSEHOLD, async_operator, call_runtime
from .const import DOMAIN
from .coordinator import PrepaidRuntime
from .engine.actor import Actor
from .engine.orders import Credit, PaymentDesk, post_outcome
from .engine.reconcile import MAX_STATEMENT_BYTES, Reconciler, StatementError
from .payments import EVENT_PAYMENT, _notice_issue_id, payments_of
from .texts import translated_error

_LOGGER = logging.getLogger(__package__)

__all__ = ["RECONCILE_SERVICES", "statement_issue_id"]

ATTR_PROVIDER: Final = "provider"
ATTR_PATH: Final = "path"
ATTR_DAY: Final = "day"
ATTR_ITEM: Final = "item"
ATTR_ACTION: Final = "action"
_CENT: Final = Decimal("0.01")
#: One lock per community: its imports and resolutions one at a time.
_LOCKS: dict[str, threading.RLock] = {}
#: Per community entry: one resolution at a time (see `_resolving`).
_RESOLVING: dict[str, asyncio.Lock] = {}

IMPORT_SCHEMA = vol.Schema(
    {
        vol.Optional(ATTR_CONFIG_ENTRY_ID): cv.string,
        vol.Required(ATTR_PROVIDER): vol.In(["wechat", "alipay"]),
        vol.Required(ATTR_PATH): vol.All(cv.string, vol.Length(min=1, max=500)),
        vol.Optional(ATTR_DAY): cv.date,
    }
)
RESOLVE_SCHEMA = vol.Schema(
    {
        vol.Optional(ATTR_CONFIG_ENTRY_ID): cv.string,
        vol.Required(ATTR_ITEM): vol.All(vol.Coerce(int), vol.Range(min=1)),
        vol.Required(ATTR_ACTION): vol.In(["credit", "refund", "dismiss"]),
        vol.Optional(ATTR_HOUSEHOLD): cv.string,
    }
)


def _reconciler(runtime: PrepaidRuntime) -> Reconciler:
    lock = _LOCKS.setdefault(runtime.entry.entry_id, threading.RLock())
    return Reconciler(runtime.community.ledger, runtime.community.tariff.tz, lock=lock)


def _refused(err: StatementError) -> ServiceValidationError:
    return translated_error(err.key, **err.placeholders)


def statement_issue_id(entry_id: str, provider: str, day: str) -> str:
    """Return the repair's id for a community's open discrepancies of one statement."""
    return f"statement_{entry_id}_{provider}_{day}"


def _read_statement(base: Path, name: str) -> bytes:
    """Read a file of the configuration folder (blocking); refuse anything outside it."""
    folder = base.resolve()
    path = (folder / name).resolve()
    if not path.is_relative_to(folder):
        raise translated_error("statement_path_outside", path=name[:200])
    if not path.is_file():
        raise translated_error("statement_file_missing", path=name[:200])
    if path.stat().st_size > MAX_STATEMENT_BYTES:
        raise translated_error("statement_too_large", limit=str(MAX_STATEMENT_BYTES // 1_048_576))
    try:
        return path.read_bytes()
    except OSError as err:
        raise translated_error(
            "statement_file_missing", path=f"{name[:200]} ({err.strerror})"
        ) from err


def _update_issue(
    hass: HomeAssistant, runtime: PrepaidRuntime, provider: str, day: str, count: int
) -> None:
    issue_id = statement_issue_id(runtime.entry.entry_id, provider, day)
    if count <= 0:
        ir.async_delete_issue(hass, DOMAIN, issue_id)
        return
    ir.async_create_issue(
        hass,
        DOMAIN,
        issue_id,
        is_fixable=False,
        is_persistent=True,
        severity=ir.IssueSeverity.WARNING,
        translation_key="statement_discrepancies",
        translation_placeholders={
            "community": runtime.community_name,
            "provider": provider,
            "day": day,
            "count": str(count),
        },
    )


async def _import_payment_statement(hass: HomeAssistant, call: ServiceCall) -> ServiceResponse:
    actor = await async_operator(hass, call)
    runtime = call_runtime(hass, call)
    provider: str = call.data[ATTR_PROVIDER]
    name: str = call.data[ATTR_PATH]
    day: date | None = call.data.get(ATTR_DAY)
    data = await hass.async_add_executor_job(_read_statement, Path(hass.config.config_dir), name)
    reconciler = _reconciler(runtime)
    try:
        report: dict[str, Any] = await hass.async_add_executor_job(
            reconciler.import_statement, provider, data, Path(name).name, actor, day
        )
    except StatementError as err:
        raise _refused(err) from err
    _update_issue(hass, runtime, provider, report["day"], report["open"])
    _LOGGER.info(
        "%s statement of %s for community %s imported by %s: %s; %d open (resolve with "
        "resolve_statement_item)",
        provider,
        report["day"],
        runtime.community_name,
        actor,
        ", ".join(f"{count} {cls}" for cls, count in report["counts"].items()),
        report["open"],
    )
    return {"community": runtime.community_id, **report}


def _resolving(runtime: PrepaidRuntime) -> asyncio.Lock:
    """Return the community's lock for resolutions: one at a time, from the check that the
    item is open to its record (two operators resolving one item would otherwise both pass
    the check, and the second's money would be posted with the first's record)."""
    return _RESOLVING.setdefault(runtime.entry.entry_id, asyncio.Lock())


async def _resolve_statement_item(hass: HomeAssistant, call: ServiceCall) -> ServiceResponse:
    actor = await async_operator(hass, call)
    runtime = call_runtime(hass, call)
    async with _resolving(runtime):
        return await _resolve(hass, call, runtime, actor)


async def _resolve(
    hass: HomeAssistant, call: ServiceCall, runtime: PrepaidRuntime, actor: Actor
) -> ServiceResponse:
    household = call.data.get(ATTR_HOUSEHOLD)
    if household is not None and household not in runtime.community.households:
        raise translated_error("unknown_household", household=str(household))
    reconciler = _reconciler(runtime)
    try:
        resolution = await hass.async_add_executor_job(
            lambda: reconciler.resolve(
                call.data[ATTR_ITEM], call.data[ATTR_ACTION], actor, account_id=household
            )
        )
    except StatementError as err:
        raise _refused(err) from err
    outcome = resolution.outcome
    if outcome is not None:
        payments = payments_of(hass, runtime.entry.entry_id)
        desk = payments.desk if payments is not None else PaymentDesk(runtime.community.ledger)
        result = await post_outcome(runtime.service, desk, outcome, actor=actor)
        posted = result.results[0] if result.results else None
        if posted is not None and not posted.duplicate:
            hass.bus.async_fire(
                EVENT_PAYMENT,
                {
                    "community": runtime.community_id,
                    "household": outcome.account_id,
                    "amount": str(outcome.amount.quantize(_CENT)),
                    "kind": "payment" if isinstance(outcome, Credit) else "refund",
                    "provider": outcome.provider,
                    "order": outcome.order_id,
                    "purpose": outcome.purpose,
                    "transaction_id": outcome.transaction_id,
                    "balance": str(posted.balance_after.quantize(_CENT)),
                    "reconciled": True,
                    "actor": str(actor),
                },
            )
    item = await hass.async_add_executor_job(reconciler.settle, resolution)
    left = await hass.async_add_executor_job(reconciler.open_items, item.provider, item.day)
    _update_issue(hass, runtime, item.provider, item.day, len(left))
    if outcome is not None and outcome.notice_key.startswith(f"{item.provider}:"):
        # The payment's own "unmatched" repair (payments.py), if it had one, is settled too.
        ir.async_delete_issue(
            hass, DOMAIN, _notice_issue_id(runtime.entry.entry_id, outcome.notice_key)
        )
    return {
        "item": item.item_id,
        "class": item.cls,
        "action": item.action,
        "household": None if outcome is None else outcome.account_id,
        "amount": None if item.amount is None else str(item.amount.quantize(_CENT)),
        "entry_key": item.entry_key,
        "resolved_by": item.resolved_by,
    }


RECONCILE_SERVICES: dict[
    str,
    tuple[
        vol.Schema,
        Callable[[HomeAssistant, ServiceCall], Awaitable[ServiceResponse]],
        SupportsResponse,
    ],
] = {
    "import_payment_statement": (
        IMPORT_SCHEMA,
        _import_payment_statement,
        SupportsResponse.ONLY,
    ),
    "resolve_statement_item": (
        RESOLVE_SCHEMA,
        _resolve_statement_item,
        SupportsResponse.OPTIONAL,
    ),
}
