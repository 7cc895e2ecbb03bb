"""Reconciliation in Home Assistant: the local providers' statement files against the ledger.

The world is tests/ha/test_payments.py's (its fixtures are imported: the community entry with
both local providers posting to the webhook). Payments are made by "scanning" as there; the
provider then writes its trade bill for the day (simulator/payprovider.py `statement`) into
the configuration folder, and the operator imports it.
"""

from __future__ import annotations

import asyncio
from datetime import datetime
from decimal import Decimal
import json
from pathlib import Path
from typing import Any

from homeassistant.core import Context, HomeAssistant
from homeassistant.exceptions import ServiceValidationError, Unauthorized
from homeassistant.helpers import issue_registry as ir
import pytest
from pytest_homeassistant_custom_component.common import async_capture_events

from custom_components.prepaid_meter.const import DOMAIN
from custom_components.prepaid_meter.engine.ledger import Ledger, SubAccount
from custom_components.prepaid_meter.engine.payments import CST
from custom_components.prepaid_meter.payments import EVENT_PAYMENT
from custom_components.prepaid_meter.reconcile_actions import statement_issue_id
from tests.ha import test_payments
from tests.ha.test_payments import HOUSEHOLD, Pay

# test_payments' fixtures, by their names: a community with both local providers on.
provider_keys = test_payments.provider_keys
pay = test_payments.pay
_resident = test_payments._resident

E = SubAccount.ELECTRICITY


async def _admin(hass: HomeAssistant) -> Context:
    user = await hass.auth.async_create_user("Operator Ops", group_ids=["system-admin"])
    return Context(user_id=user.id)


async def _call(
    hass: HomeAssistant, service: str, context: Context | None = None, **data: Any
) -> dict[str, Any]:
    response: Any = await hass.services.async_call(
        DOMAIN, service, data, blocking=True, return_response=True, context=context
    )
    assert isinstance(response, dict)
    return response


def _write(hass: HomeAssistant, name: str, data: bytes) -> str:
    path = Path(hass.config.path(name))
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return name


def _ledger(pay: Pay) -> Ledger:
    ledger: Ledger = pay.entry.runtime_data.community.ledger
    return ledger


async def _invariant(pay: Pay) -> None:
    assert await pay.hass.async_add_executor_job(_ledger(pay).check_invariant) == []


def _statement_issues(hass: HomeAssistant) -> list[ir.IssueEntry]:
    return [
        issue
        for issue in ir.async_get(hass).issues.values()
        if issue.domain == DOMAIN and issue.translation_key == "statement_discrepancies"
    ]


async def test_a_statement_with_one_missing_one_extra_one_mismatched(pay: Pay) -> None:
    """Import, report by class, a repair; credit, refund and dismiss, each with the actor."""
    hass = pay.hass
    ok = await pay.order("10.00")
    lost = await pay.order("30.00")
    extra = await pay.order("40.00")
    short = await pay.order("20.00")
    for order in (ok, extra, short):
        [delivery] = await pay.wechat.scan(order["code"])
        assert delivery.acknowledged
    # Paid at the provider, but its notification never reached us (kept to deliver later).
    late = pay.wechat.payment(lost["order_id"])
    assert await pay.balance() == Decimal("70.00")
    day = datetime.now(CST).date()
    bill = pay.wechat.statement(
        day, omit=[extra["order_id"]], amounts={short["order_id"]: Decimal("25.00")}
    )
    assert bill.startswith("交易时间,".encode()) and b"`SUCCESS" in bill
    name = _write(hass, "statements/wechat.csv", bill)

    # A resident may neither import nor resolve.
    resident = await _resident(hass, HOUSEHOLD)
    with pytest.raises(Unauthorized):
        await _call(
            hass,
            "import_payment_statement",
            Context(user_id=resident.id),
            provider="wechat",
            path=name,
        )
    assert await hass.async_add_executor_job(_ledger(pay).recon_items) == []

    admin = await _admin(hass)
    report = await _call(hass, "import_payment_statement", admin, provider="wechat", path=name)
    assert report["day"] == day.isoformat()
    assert report["counts"] == {
        "matched": 1,
        "missing_in_ledger": 1,
        "missing_at_provider": 1,
        "amount_mismatch": 1,
    }
    assert [m["order_id"] for m in report["matched"]] == [ok["order_id"]]
    [missing] = report["missing_in_ledger"]
    [at_provider] = report["missing_at_provider"]
    [mismatch] = report["amount_mismatch"]
    assert (missing["order_id"], missing["provider_amount"], missing["ledger_amount"]) == (
        lost["order_id"],
        "30.00",
        None,
    )
    assert missing["transaction_id"] == pay.wechat.orders[lost["order_id"]].transaction_id
    assert (at_provider["order_id"], at_provider["ledger_amount"]) == (extra["order_id"], "40.00")
    assert (mismatch["provider_amount"], mismatch["ledger_amount"]) == ("25.00", "20.00")
    [issue] = _statement_issues(hass)
    assert issue.issue_id == statement_issue_id(pay.entry.entry_id, "wechat", day.isoformat())
    assert issue.translation_placeholders is not None
    assert issue.translation_placeholders["count"] == "3"
    assert issue.is_persistent

    assert (await pay.payments.async_diagnostics())["reconciliation"] == {
        "open": {"missing_in_ledger": 1, "missing_at_provider": 1, "amount_mismatch": 1}
    }

    # The same file again: no item twice, the same ids.
    again = await _call(hass, "import_payment_statement", admin, provider="wechat", path=name)
    assert again["counts"] == report["counts"]
    assert [i["item"] for i in again["missing_in_ledger"]] == [missing["item"]]
    assert len(await hass.async_add_executor_job(_ledger(pay).recon_items)) == 3

    with pytest.raises(Unauthorized):
        await _call(
            hass,
            "resolve_statement_item",
            Context(user_id=resident.id),
            item=missing["item"],
            action="credit",
        )
    events = async_capture_events(hass, EVENT_PAYMENT)
    # Missing in the ledger: credited as its notification would have been.
    done = await _call(hass, "resolve_statement_item", admin, item=missing["item"], action="credit")
    assert (done["action"], done["household"], done["amount"]) == ("credit", HOUSEHOLD, "30.00")
    assert done["entry_key"] == f"topup:pay:wechat:{missing['transaction_id']}"
    assert str(admin.user_id) in str(done["resolved_by"])
    assert await pay.balance() == Decimal("100.00")
    entry = await hass.async_add_executor_job(_ledger(pay).entry_by_key, done["entry_key"])
    assert entry is not None and str(admin.user_id) in json.dumps(entry.meta)
    # Its notification arriving now is acknowledged and credits nothing more.
    assert (await pay.wechat.deliver(late, retry=False)).acknowledged
    assert await pay.balance() == Decimal("100.00")
    with pytest.raises(ServiceValidationError) as caught:
        await _call(hass, "resolve_statement_item", admin, item=missing["item"], action="credit")
    assert caught.value.translation_key == "statement_item_resolved"

    # Missing at the provider: taken back by a refund entry; credit does not fit it.
    with pytest.raises(ServiceValidationError) as caught:
        await _call(
            hass, "resolve_statement_item", admin, item=at_provider["item"], action="credit"
        )
    assert caught.value.translation_key == "statement_action_not_applicable"
    done = await _call(
        hass, "resolve_statement_item", admin, item=at_provider["item"], action="refund"
    )
    assert (done["amount"], done["entry_key"]) == (
        "-40.00",
        f"refund:reconcile:wechat:{at_provider['transaction_id']}",
    )
    assert await pay.balance() == Decimal("60.00")
    assert _statement_issues(hass)[0].translation_placeholders == {
        **(issue.translation_placeholders or {}),
        "count": "1",
    }

    # The mismatch dismissed: nothing posted, the repair gone.
    done = await _call(
        hass, "resolve_statement_item", admin, item=mismatch["item"], action="dismiss"
    )
    assert (done["action"], done["amount"], done["entry_key"]) == ("dismiss", None, None)
    assert await pay.balance() == Decimal("60.00")
    assert _statement_issues(hass) == []
    await hass.async_block_till_done()
    assert [(e.data["kind"], e.data["amount"], e.data["reconciled"]) for e in events] == [
        ("payment", "30.00", True),
        ("refund", "40.00", True),
    ]
    items = await hass.async_add_executor_job(_ledger(pay).recon_items)
    assert {(i.action, i.resolved_by) for i in items} == {
        ("credit", done["resolved_by"]),
        ("refund", done["resolved_by"]),
        ("dismiss", done["resolved_by"]),
    }
    # Imported once more: nothing opens again, the late credit is matched.
    third = await _call(hass, "import_payment_statement", admin, provider="wechat", path=name)
    assert third["open"] == 0 and third["counts"]["matched"] == 2
    assert _statement_issues(hass) == []
    diagnostics = await pay.payments.async_diagnostics()
    assert diagnostics["reconciliation"] == {
        "resolved": {"missing_in_ledger": 1, "missing_at_provider": 1, "amount_mismatch": 1}
    }
    await _invariant(pay)


async def test_an_alipay_statement_in_gbk_matches_what_was_paid(pay: Pay) -> None:
    """Alipay's bill (GBK, comment lines): a paid and partly refunded order all matched."""
    hass = pay.hass
    order = await pay.order("12.00", "alipay")
    await pay.alipay.scan(order["code"])
    await pay.alipay.refund(order["order_id"], Decimal("2.00"))
    assert await pay.balance() == Decimal("10.00")
    bill = pay.alipay.statement(datetime.now(CST).date())
    assert bill.startswith("#支付宝业务明细查询".encode("gbk"))
    name = _write(hass, "alipay_bill.csv", bill)
    report = await _call(hass, "import_payment_statement", provider="alipay", path=name)
    assert report["counts"] == {
        "matched": 2,
        "missing_in_ledger": 0,
        "missing_at_provider": 0,
        "amount_mismatch": 0,
    }
    assert sorted(m["kind"] for m in report["matched"]) == ["paid", "refund"]
    assert _statement_issues(hass) == []
    await _invariant(pay)


async def test_bad_files_and_paths_are_refused_and_change_nothing(pay: Pay, tmp_path: Path) -> None:
    """Outside the configuration folder, missing, cut short or the other provider's: refused."""
    hass = pay.hass
    outside = tmp_path.parent / "elsewhere.csv"
    outside.write_bytes(pay.wechat.statement(datetime.now(CST).date()))
    cases = {
        str(outside): "statement_path_outside",
        "../elsewhere.csv": "statement_path_outside",
        "nothing_here.csv": "statement_file_missing",
    }
    order = await pay.order("10.00")
    await pay.wechat.scan(order["code"])
    bill = pay.wechat.statement(datetime.now(CST).date())
    cases[_write(hass, "cut.csv", bill[: bill.index("总交易单数".encode())])] = (
        "statement_truncated"
    )
    cases[_write(hass, "alipay_as_wechat.csv", pay.alipay.statement(datetime.now(CST).date()))] = (
        "statement_not_provider"
    )
    for path, key in cases.items():
        with pytest.raises(ServiceValidationError) as caught:
            await _call(hass, "import_payment_statement", provider="wechat", path=path)
        assert caught.value.translation_key == key, path
    assert await hass.async_add_executor_job(_ledger(pay).recon_items) == []
    assert _statement_issues(hass) == []
    with pytest.raises(ServiceValidationError) as caught:
        await _call(hass, "resolve_statement_item", item=12345, action="dismiss")
    assert caught.value.translation_key == "statement_item_unknown"


async def test_two_operators_resolving_one_item_at_once_resolve_it_once(pay: Pay) -> None:
    """A credit and a dismiss of the same missing payment at the same moment: one wins, the
    other is told it is resolved; the money and the record agree."""
    hass = pay.hass
    lost = await pay.order("30.00")
    pay.wechat.payment(lost["order_id"])  # paid at the provider, never notified
    bill = pay.wechat.statement(datetime.now(CST).date())
    name = _write(hass, "statements/race.csv", bill)
    admin = await _admin(hass)
    report = await _call(hass, "import_payment_statement", admin, provider="wechat", path=name)
    [missing] = report["missing_in_ledger"]
    results = await asyncio.gather(
        _call(hass, "resolve_statement_item", admin, item=missing["item"], action="credit"),
        _call(hass, "resolve_statement_item", admin, item=missing["item"], action="dismiss"),
        return_exceptions=True,
    )
    done = [r for r in results if isinstance(r, dict)]
    refused = [r for r in results if isinstance(r, ServiceValidationError)]
    assert len(done) == 1 and len(refused) == 1, results
    assert refused[0].translation_key == "statement_item_resolved"
    [item] = await hass.async_add_executor_job(_ledger(pay).recon_items)
    assert item.action == done[0]["action"]
    credited = Decimal("30.00") if item.action == "credit" else Decimal("0.00")
    assert await pay.balance() == credited
    assert (item.entry_key is not None) == (item.action == "credit")
    await _invariant(pay)
