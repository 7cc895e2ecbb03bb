"""The operators' monthly report: figures checked against the ledger, tiers, the CSV download.

`check_report` recomputes every figure of a report from the journal on its own (not with the
report's code) and is run on every report made in these tests and in test_move_out.py: per
household and sub-account the opening, the closing, each group of movements, the top-ups by
channel and the charges, each to the cent of the exact sums; the charges by tier and period
equal to the exact usage of the month and adding up to the charges exactly; the totals the
sums of the households; and the closing plus what came after equal the ledger's balances.
"""

from __future__ import annotations

from collections.abc import Iterator
import csv
from dataclasses import dataclass, field
from datetime import datetime
from decimal import ROUND_HALF_EVEN, Decimal
from http import HTTPStatus
import io
import logging
from pathlib import Path
import sqlite3
from typing import Any
from zoneinfo import ZoneInfo

from homeassistant.core import HomeAssistant
from homeassistant.exceptions import ServiceValidationError
import pytest
from pytest_homeassistant_custom_component.common import MockConfigEntry
from pytest_homeassistant_custom_component.typing import (
    ClientSessionGenerator,
    WebSocketGenerator,
)

from custom_components.prepaid_meter.const import DOMAIN
from custom_components.prepaid_meter.engine.actor import Actor
from custom_components.prepaid_meter.engine.community import Community, split_usage_period
from custom_components.prepaid_meter.engine.ledger import EntryKind, Ledger, SubAccount
from custom_components.prepaid_meter.engine.policy import PolicyConfig
from custom_components.prepaid_meter.engine.tariff import load_preset
from custom_components.prepaid_meter.payment_actions import (
    GROUPS,
    ReportInvariantError,
    month_report,
    report_csv,
)
from tests.engine.test_community import R
from tests.ha.conftest import METER_ID
from tests.ha.test_init import call

E, PF, PK = SubAccount.ELECTRICITY, SubAccount.PROPERTY_FEE, SubAccount.PARKING_FEE
OPS = Actor("operator", user_id="u-ops", name="Ops")
CENT = Decimal("0.01")
ZONE = ZoneInfo("Asia/Shanghai")


def _cent(value: Decimal) -> str:
    return str(value.quantize(CENT, rounding=ROUND_HALF_EVEN))


def _bounds(month: str, zone: ZoneInfo) -> tuple[int, int]:
    year, number = (int(part) for part in month.split("-"))
    start = datetime(year, number, 1, tzinfo=zone)
    end = datetime(year + number // 12, number % 12 + 1, 1, tzinfo=zone)
    return int(start.timestamp()), int(end.timestamp())


def _group(kind: EntryKind, sub: SubAccount, meta: Any) -> str:
    """The report's group of an entry, as the README describes it."""
    if kind is EntryKind.TOP_UP:
        return "top_ups" if sub is E else "payments"
    if kind is EntryKind.ADJUSTMENT and meta.get("credit") == "carry":
        return "carried"
    return {
        EntryKind.CHARGE: "charges",
        EntryKind.FEE: "fees",
        EntryKind.PAYMENT: "payments",
        EntryKind.REFUND: "refunds",
        EntryKind.ADJUSTMENT: "adjustments",
        EntryKind.SETTLEMENT: "settlements",
    }[kind]


def check_report(ledger: Ledger, report: dict[str, Any], zone: ZoneInfo) -> None:
    """Assert every figure of a report against the journal, recomputed here (blocking)."""
    month = report["month"]
    start, end = _bounds(month, zone)
    rows = {row["household"]: row for row in report["households"]}
    assert list(rows) == sorted(h.account_id for h in ledger.households())
    usage: dict[str, dict[str, tuple[Decimal, Decimal]]] = {}
    for used in ledger.month_usage(month):
        period, _price = split_usage_period(used.period)
        slots = usage.setdefault(used.account_id, {})
        kwh, amount = slots.get(f"t{used.tier}_{period}", (Decimal(0), Decimal(0)))
        slots[f"t{used.tier}_{period}"] = (kwh + used.kwh, amount + used.amount)
    sums: dict[str, dict[str, Decimal]] = {}

    def add(name: str, key: str, value: Decimal) -> None:
        sums.setdefault(name, {})
        sums[name][key] = sums[name].get(key, Decimal(0)) + value

    for account, row in rows.items():
        balances = ledger.balances(account)
        entries = ledger.entries(account, limit=10**9)
        groups: dict[tuple[str, str], Decimal] = {}
        channels: dict[str, Decimal] = {}
        charges = Decimal(0)
        for sub in SubAccount:
            mine = [e for e in entries if e.sub is sub]
            before = sum((e.amount for e in mine if e.ts < start), Decimal(0))
            after = sum((e.amount for e in mine if e.ts >= end), Decimal(0))
            within = sum((e.amount for e in mine if start <= e.ts < end), Decimal(0))
            # The journal itself: what was before, within and after is the balance.
            assert before + within + after == balances[sub]
            assert row["opening"][sub.value] == _cent(before), (account, sub)
            assert row["closing"][sub.value] == _cent(before + within), (account, sub)
            add("opening", sub.value, before)
            add("closing", sub.value, before + within)
            add("ledger", sub.value, balances[sub])
            add("after", sub.value, after)
        for entry in entries:
            if not start <= entry.ts < end:
                continue
            group = _group(entry.kind, entry.sub, entry.meta)
            if group == "top_ups":
                channel = str(entry.meta.get("channel", "")) or "other"
                channels[channel] = channels.get(channel, Decimal(0)) + entry.amount
            elif group == "charges":
                charges += entry.amount
            else:
                groups[group, entry.sub.value] = (
                    groups.get((group, entry.sub.value), Decimal(0)) + entry.amount
                )
        for group in GROUPS:
            for sub in SubAccount:
                value = groups.get((group, sub.value), Decimal(0))
                assert row[group][sub.value] == _cent(value), (account, group, sub)
                add(group, sub.value, value)
        assert row["top_ups"] == {channel: _cent(v) for channel, v in channels.items()}
        for channel, value in channels.items():
            add("top_ups", channel, value)
        assert row["charges"] == _cent(charges)
        add("charges", "", charges)
        # Charges by tier and period: the month's usage, adding up to its charges exactly.
        slots = usage.get(account, {})
        assert set(row["charges_by_tier"]) == set(slots)
        for name, (kwh, amount) in slots.items():
            line = row["charges_by_tier"][name]
            assert line["amount"] == _cent(-amount) and line["kwh"] == str(
                kwh.quantize(Decimal("0.001"))
            )
        split = sum((amount for _, amount in slots.values()), Decimal(0))
        assert row["charges_unsplit"] == _cent(charges + split)
        add("unsplit", "", charges + split)
    totals = report["totals"]
    for name in ("opening", "closing", *GROUPS):
        for sub in SubAccount:
            assert totals[name][sub.value] == _cent(sums.get(name, {}).get(sub.value, Decimal(0)))
    assert totals["top_ups"] == {k: _cent(v) for k, v in sorted(sums.get("top_ups", {}).items())}
    assert totals["charges"] == _cent(sums.get("charges", {}).get("", Decimal(0)))
    # The totals are the ledger's balances, less what came after the month.
    for sub in SubAccount:
        closing = sums.get("closing", {}).get(sub.value, Decimal(0))
        after = sums.get("after", {}).get(sub.value, Decimal(0))
        assert closing + after == ledger.total_balance(sub)
        assert totals["closing"][sub.value] == _cent(ledger.total_balance(sub) - after)
    # The CSV has the same figures: a row per household and the totals.
    table = list(csv.DictReader(io.StringIO(report_csv(report))))
    assert [r["household"] for r in table] == [*rows, "TOTAL"]
    for line, row in zip(table, [*rows.values(), totals], strict=True):
        assert line["charges"] == row["charges"]
        for sub in SubAccount:
            assert line[f"closing_{sub.value}"] == row["closing"][sub.value]
        for tier in report["tiers"]:
            assert line[f"charges_{tier}"] == row["charges_by_tier"].get(tier, {}).get(
                "amount", "0.00"
            )


async def assert_report_invariant(
    hass: HomeAssistant, ledger: Ledger, report: dict[str, Any]
) -> None:
    """Check a report made in a test against its ledger (see check_report)."""
    await hass.async_add_executor_job(check_report, ledger, report, ZoneInfo(report["timezone"]))


# ---------------------------------------------------------------------------- several months


@dataclass
class Clock:
    """A settable clock."""

    now: float

    def __call__(self) -> float:
        return self.now


@dataclass
class World:
    """A community on Shanghai's yearly tiers with peak and valley, two meters."""

    community: Community
    clock: Clock
    seq: dict[str, int] = field(default_factory=dict)

    def reading(self, meter_id: str, ts: int, kwh: str) -> None:
        self.clock.now = ts + 1
        self.seq[meter_id] = self.seq.get(meter_id, 0) + 1
        self.community.handle_reading(R(meter_id, self.seq[meter_id], ts, Decimal(kwh)))

    def flush(self) -> None:
        self.community.apply_results(self.community.commit(self.community.take_batch()))

    def at(self, ts: int) -> None:
        self.clock.now = ts


def local(month: int, day: int, hour: int, minute: int = 0) -> int:
    return int(datetime(2026, month, day, hour, minute, tzinfo=ZONE).timestamp())


@pytest.fixture
def world(tmp_path: Path) -> Iterator[World]:
    clock = Clock(local(1, 1, 8))
    with Ledger(tmp_path / "report.sqlite3") as ledger:
        community = Community(
            ledger,
            load_preset("shanghai_yearly_tou"),
            PolicyConfig.from_options({"timezone": "Asia/Shanghai"}),
            clock=clock,
        )
        community.load()
        yield World(community, clock)


def _scenario(world: World) -> None:
    """Three months: top-ups, charges over peak and valley and into tier 2, a batch across
    the end of January, fees and payments, a refund, a move-out carrying and one refunding."""
    c = world.community
    for meter, account in (("m1", "a-101"), ("m2", "b-102")):
        c.apply_assignment(meter, c.assign_meter(meter, account, f"Flat {account}"))
    for account, amount, txn, channel in (
        ("a-101", "3000", "a1", "wechat"),
        ("b-102", "500", "b1", "alipay"),
    ):
        c.apply_top_up(c.top_up(account, Decimal(amount), txn, channel, actor=OPS))
    world.reading("m1", local(1, 10, 8), "0")
    world.reading("m2", local(1, 10, 8), "0")
    world.reading("m1", local(1, 10, 20), "1000.5")  # peak
    world.reading("m2", local(1, 10, 20), "40.25")
    world.reading("m1", local(1, 10, 23), "1100.75")  # 20:00-23:00: peak and valley
    world.reading("m2", local(1, 10, 23), "52")
    world.flush()
    world.at(local(1, 20, 9))
    c.post_money("a-101", PF, EntryKind.FEE, Decimal("120.5"), "pf-a-jan", actor=OPS)
    c.post_money("b-102", PK, EntryKind.FEE, Decimal("80"), "pk-b-jan", actor=OPS)
    world.at(local(1, 25, 9))
    c.post_money("a-101", PF, EntryKind.PAYMENT, Decimal("100"), "pf-a-paid", actor=OPS)
    # One batch across the end of January: two charges, one in each month.
    world.reading("m1", local(1, 31, 23, 50), "2000")
    world.reading("m1", local(2, 1, 0, 10), "2100.125")
    world.flush()
    world.reading("m1", local(2, 15, 12), "4000")  # past 3,120 kWh: tier 2
    world.reading("m2", local(2, 15, 12), "150")
    world.flush()
    world.at(local(2, 16, 9))
    c.post_money("b-102", E, EntryKind.REFUND, Decimal("-10"), "refund-b", actor=OPS)
    c.post_money("a-101", E, EntryKind.ADJUSTMENT, Decimal("5.5"), "adj-a", actor=OPS)
    world.reading("m1", local(2, 28, 23), "4100")
    world.flush()
    # March: b-102 moves out carrying its credit to a new household, a-101 refunded.
    world.reading("m2", local(3, 3, 10), "160")
    world.flush()
    world.at(local(3, 5, 10))
    c.unassign_meter("m2", actor=OPS)
    c.apply_unassignment("m2")
    carried = c.settle_move_out(
        "b-102", "carry", actor=OPS, next_account="c-103", next_label="Flat c-103"
    )
    c.apply_results(carried.result)
    assert carried.amount > 0 and carried.closed == ("2026",)
    world.at(local(3, 20, 10))
    c.unassign_meter("m1", actor=OPS)
    c.apply_unassignment("m1")
    refunded = c.settle_move_out("a-101", "refund", actor=OPS, reason="sold")
    assert refunded.amount > 0


def test_reports_of_several_months_equal_the_ledger(world: World) -> None:
    """Every month's report against the journal; January and February split by tier exactly."""
    _scenario(world)
    ledger = world.community.ledger
    reports = {
        month: month_report(ledger, month, ZONE)
        for month in ("2025-12", "2026-01", "2026-02", "2026-03", "2026-04")
    }
    for report in reports.values():
        check_report(ledger, report, ZONE)
    assert ledger.check_invariant() == []
    jan, feb, mar = reports["2026-01"], reports["2026-02"], reports["2026-03"]
    a_jan = jan["households"][0]
    assert a_jan["household"] == "a-101"
    # Peak and valley on tier 1 in January; the yearly cycle's tier 2 only in February.
    assert set(a_jan["charges_by_tier"]) == {"t1_peak", "t1_valley"}
    assert a_jan["charges_by_tier"]["t1_peak"]["prices"] == ["0.617"]
    assert "t2_peak" in feb["households"][0]["charges_by_tier"]
    assert feb["tiers"][-1].startswith("t2_")
    for report in reports.values():
        for row in report["households"]:
            assert row["charges_unsplit"] == "0.00"
    # The energy of the batch across midnight is in the month of its charge entry.
    jan_kwh = sum(Decimal(line["kwh"]) for line in a_jan["charges_by_tier"].values())
    assert jan_kwh == Decimal("2000.000")
    assert a_jan["top_ups"] == {"wechat": "3000.00"}
    assert jan["totals"]["top_ups"] == {"alipay": "500.00", "wechat": "3000.00"}
    assert a_jan["fees"]["property_fee"] == "-120.50"
    assert a_jan["payments"]["property_fee"] == "100.00"
    rows = {row["household"]: row for row in mar["households"]}
    assert rows["c-103"]["carried"]["electricity"] == rows["c-103"]["closing"]["electricity"]
    assert Decimal(rows["b-102"]["carried"]["electricity"]) < 0
    assert rows["b-102"]["closing"]["electricity"] == "0.00"
    assert rows["a-101"]["closing"]["electricity"] == "0.00"
    assert Decimal(rows["a-101"]["refunds"]["electricity"]) < 0
    assert mar["totals"]["carried"]["electricity"] == "0.00"
    # Opening of a month is the closing of the one before.
    for before, after in (("2026-01", "2026-02"), ("2026-02", "2026-03")):
        for old, new in zip(
            reports[before]["households"], reports[after]["households"], strict=False
        ):
            if old["household"] == new["household"]:
                assert old["closing"] == new["opening"]


def test_a_report_that_disagrees_with_the_ledger_is_refused(world: World) -> None:
    """A cached balance that is not its journal's: no report, the problem named."""
    _scenario(world)
    ledger = world.community.ledger
    with sqlite3.connect(ledger.path) as conn:
        conn.execute(
            "UPDATE balances SET balance = '1' WHERE account_id = 'c-103' AND sub = 'electricity'"
        )
    with pytest.raises(ReportInvariantError) as err:
        month_report(ledger, "2026-03", ZONE)
    assert "c-103/electricity" in err.value.problems[0]


# ---------------------------------------------------------------------------- in Home Assistant


async def test_report_action_and_download(
    hass: HomeAssistant,
    init_integration: MockConfigEntry,
    hass_client: ClientSessionGenerator,
    hass_client_no_auth: ClientSessionGenerator,
    hass_read_only_access_token: str,
) -> None:
    """The action names the download; administrators get the CSV, others 403, no login 401."""
    entry = init_integration
    runtime = entry.runtime_data
    ledger = runtime.community.ledger
    await runtime.service.assign(METER_ID, "b3-501", "Household 3-501")
    await call(hass, "top_up", household="b3-501", amount="20", transaction_id="c1", channel="cash")
    month = datetime.now(runtime.community.tariff.tz).strftime("%Y-%m")
    report: Any = await hass.services.async_call(
        DOMAIN, "payment_report", {"month": month}, blocking=True, return_response=True
    )
    await assert_report_invariant(hass, ledger, report)
    url = f"/api/prepaid_meter/report/{entry.entry_id}/{month}.csv"
    assert report["download"] == url
    client = await hass_client()
    response = await client.get(url)
    assert response.status == HTTPStatus.OK
    assert response.headers["Content-Type"].startswith("text/csv")
    assert response.headers["Content-Disposition"] == (
        f'attachment; filename="{runtime.community_id}_{month}.csv"'
    )
    text = await response.text()
    assert text == report_csv(report)
    rows = list(csv.DictReader(io.StringIO(text)))
    assert rows[0]["top_up_cash"] == "20.00" and rows[-1]["household"] == "TOTAL"
    for path, status in (
        (f"/api/prepaid_meter/report/nope/{month}.csv", HTTPStatus.NOT_FOUND),
        (f"/api/prepaid_meter/report/{entry.entry_id}/2026-13.csv", HTTPStatus.NOT_FOUND),
        (f"/api/prepaid_meter/report/{entry.entry_id}/1999-01.csv", HTTPStatus.NOT_FOUND),
    ):
        assert (await client.get(path)).status == status, path
    reader = await hass_client(hass_read_only_access_token)
    assert (await reader.get(url)).status == HTTPStatus.FORBIDDEN
    anonymous = await hass_client_no_auth()
    assert (await anonymous.get(url)).status == HTTPStatus.UNAUTHORIZED


async def test_the_signed_link_downloads_as_the_caller(
    hass: HomeAssistant,
    init_integration: MockConfigEntry,
    hass_ws_client: WebSocketGenerator,
    hass_client_no_auth: ClientSessionGenerator,
) -> None:
    """From the frontend (its websocket) the response's link downloads without a token, as
    the administrator who asked; signed for someone else (Home Assistant's content user, an
    automation's), the same view refuses it; tampered with, it is no login at all."""
    entry = init_integration
    month = datetime.now(entry.runtime_data.community.tariff.tz).strftime("%Y-%m")
    websocket = await hass_ws_client(hass)
    await websocket.send_json_auto_id(
        {
            "type": "call_service",
            "domain": DOMAIN,
            "service": "payment_report",
            "service_data": {"month": month},
            "return_response": True,
        }
    )
    answer = await websocket.receive_json()
    assert answer["success"], answer
    report = answer["result"]["response"]
    link = report["download_link"]
    assert link.startswith(report["download"] + "?authSig=")
    browser = await hass_client_no_auth()
    response = await browser.get(link)
    assert response.status == HTTPStatus.OK
    assert await response.text() == report_csv(report)
    assert (await browser.get(link[:-2])).status == HTTPStatus.UNAUTHORIZED
    # Called by an automation there is no caller's login: the content user's is no admin's.
    by_automation: Any = await hass.services.async_call(
        DOMAIN, "payment_report", {"month": month}, blocking=True, return_response=True
    )
    assert (await browser.get(by_automation["download_link"])).status == HTTPStatus.FORBIDDEN


async def test_a_broken_report_is_one_error_and_logged(
    hass: HomeAssistant,
    init_integration: MockConfigEntry,
    hass_client: ClientSessionGenerator,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The action refuses with a translated error, the view answers 500, the log says why."""
    entry = init_integration
    runtime = entry.runtime_data
    await runtime.service.assign(METER_ID, "b3-501", "Household 3-501")
    await call(hass, "top_up", household="b3-501", amount="20", transaction_id="c1")
    ledger = runtime.community.ledger

    def corrupt() -> None:
        with sqlite3.connect(ledger.path) as conn:
            conn.execute("UPDATE balances SET balance = '21' WHERE sub = 'electricity'")

    await hass.async_add_executor_job(corrupt)
    month = datetime.now(runtime.community.tariff.tz).strftime("%Y-%m")
    with caplog.at_level(logging.ERROR), pytest.raises(ServiceValidationError) as err:
        await hass.services.async_call(
            DOMAIN, "payment_report", {"month": month}, blocking=True, return_response=True
        )
    assert err.value.translation_key == "report_invariant_broken"
    placeholders = err.value.translation_placeholders or {}
    assert "b3-501/electricity" in placeholders["problem"]
    assert any("disagrees with the ledger" in r.getMessage() for r in caplog.records)
    client = await hass_client()
    url = f"/api/prepaid_meter/report/{entry.entry_id}/{month}.csv"
    assert (await client.get(url)).status == HTTPStatus.INTERNAL_SERVER_ERROR
