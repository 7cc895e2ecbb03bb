"""Days of use kept with the charges (ledger migration 4): the sums per household and local day
equal the journal's charges after commits, duplicates, midnight, a crash and the upgrade, and a
restart reads the sums, never the charges."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, date, datetime
from decimal import Decimal
import json
import os
from pathlib import Path
import random
import signal
import sqlite3
import subprocess
import sys
import time
from zoneinfo import ZoneInfo

import pytest

from custom_components.prepaid_meter.engine import ledger as ledger_module
from custom_components.prepaid_meter.engine.community import Community
from custom_components.prepaid_meter.engine.ledger import (
    SCHEMA_VERSION,
    Cursor,
    EntryKind,
    Ledger,
    LedgerError,
    Posting,
    SubAccount,
    UsageDelta,
    UseDay,
)
from custom_components.prepaid_meter.engine.policy import PolicyConfig
from custom_components.prepaid_meter.engine.tariff import load_preset
from tests.engine.test_community import M1, M2, NOON, A, B, Clock, R, _assign, _flush, _top_up

E = SubAccount.ELECTRICITY
SHANGHAI = ZoneInfo("Asia/Shanghai")
HOUR = 3600
DAY = 86_400
# 2026-03-10 23:59:00 in Shanghai (UTC+8): a minute before local midnight.
BEFORE_MIDNIGHT = int(datetime(2026, 3, 10, 15, 59, tzinfo=UTC).timestamp())
MIDNIGHT = BEFORE_MIDNIGHT + 60
MARCH = date(2026, 3, 1)


def _used_today(community: Community) -> object:
    today = community.use_today(community.meters[M2])
    assert today is not None
    assert today.kwh > 0
    return today


def _make(ledger: Ledger, clock: Clock, preset: str = "flat") -> Community:
    community = Community(ledger, load_preset(preset), PolicyConfig.from_options({}), clock=clock)
    community.load()
    return community


def _stored(path: Path) -> dict[tuple[str, str], tuple[Decimal, Decimal, int]]:
    """The usage_days table, read without the ledger."""
    with sqlite3.connect(path) as conn:
        return {
            (account, day): (Decimal(kwh), Decimal(cost), first_ts)
            for account, day, kwh, cost, first_ts in conn.execute(
                "SELECT account_id, day, kwh, cost, first_ts FROM usage_days"
            )
        }


def _from_journal(
    path: Path, zone: ZoneInfo = SHANGHAI
) -> dict[tuple[str, str], tuple[Decimal, Decimal, int]]:
    """The charges of the journal summed per (account, local day), independently of the ledger.

    Only for charges that carry their kWh (as the community writes them).
    """
    sums: dict[tuple[str, str], tuple[Decimal, Decimal, int]] = {}
    with sqlite3.connect(path) as conn:
        for ts, account, amount, meta in conn.execute(
            "SELECT ts, account_id, amount, meta FROM journal WHERE kind = 'charge'"
        ):
            day = datetime.fromtimestamp(ts, zone).date().isoformat()
            kwh = Decimal(json.loads(meta)["kwh"])
            old = sums.get((account, day), (Decimal(0), Decimal(0), ts))
            sums[account, day] = (old[0] + kwh, old[1] - Decimal(amount), min(old[2], ts))
    return sums


def _minutes(
    community: Community, clock: Clock, meter: str, start: int, minutes: int, kwh: str
) -> None:
    """A reading a minute from `start` on, each committed (as the integration does)."""
    energy = Decimal(1000) if community.meters[meter].energy_kwh is None else None
    for i in range(minutes):
        clock.now = start + 60 * i
        current = community.meters[meter].energy_kwh
        register = energy if current is None else current + Decimal(kwh)
        assert register is not None
        seq = (community.meters[meter].seq or 0) + 1
        community.handle_reading(R(meter, seq, start + 60 * i, register))
        _flush(community)


@pytest.fixture
def path(tmp_path: Path) -> Path:
    return tmp_path / "community.sqlite3"


@pytest.fixture
def ledger(path: Path) -> Iterator[Ledger]:
    with Ledger(path) as opened:
        yield opened


# ------------------------------------------------------------------------------ the sums


def test_the_sums_are_the_journals_after_commits(ledger: Ledger, path: Path) -> None:
    """Two households, a reading a minute for two hours and a half: one row a day each."""
    clock = Clock(NOON)
    community = _make(ledger, clock)
    _assign(community, M1, A)
    _assign(community, M2, B)
    _top_up(community, "100", "t1", A)
    _top_up(community, "100", "t2", B)
    _minutes(community, clock, M1, NOON, 150, "0.013")
    _minutes(community, clock, M2, NOON + 30, 90, "0.0271")
    assert ledger.day_zone() == ("Asia/Shanghai", MARCH)
    stored = _stored(path)
    assert stored == _from_journal(path)
    assert set(stored) == {(A, "2026-03-10"), (B, "2026-03-10")}
    assert stored[A, "2026-03-10"][0] == Decimal("0.013") * 149
    assert stored[A, "2026-03-10"][2] == NOON + 60  # the first charge
    assert ledger.check_invariant() == []
    assert ledger.use_days(date(2026, 3, 10)) == [
        UseDay(A, date(2026, 3, 10), *stored[A, "2026-03-10"]),
        UseDay(B, date(2026, 3, 10), *stored[B, "2026-03-10"]),
    ]
    assert ledger.use_days(date(2026, 3, 11)) == []


def test_a_duplicate_batch_adds_nothing(ledger: Ledger, path: Path) -> None:
    """The same charges again (a retried commit), alone or with new ones: counted once."""
    ledger.ensure_household("A1", "flat", NOON)
    ledger.set_day_zone(SHANGHAI, MARCH)

    def charge(ts: int, kwh: str, amount: str) -> Posting:
        return Posting(
            f"charge:M1:{ts}:{kwh}", "A1", E, EntryKind.CHARGE, -Decimal(amount), ts, {"kwh": kwh}
        )

    first = [charge(NOON, "1.5", "0.73245"), charge(NOON + 60, "0.25", "0.122075")]
    ledger.commit_batch(first, [Cursor("M1", 2, NOON + 60, Decimal(2))], [])
    once = _stored(path)
    assert once == {("A1", "2026-03-10"): (Decimal("1.75"), Decimal("0.854525"), NOON)}
    results = ledger.commit_batch(first, [], [])
    assert all(result.duplicate for result in results)
    assert _stored(path) == once
    # A batch that repeats one charge, repeats a new one within itself and adds one.
    later = charge(NOON + 120, "2", "0.9766")
    results = ledger.commit_batch([first[1], later, later], [], [])
    assert [result.duplicate for result in results] == [True, False, True]
    assert _stored(path) == {("A1", "2026-03-10"): (Decimal("3.75"), Decimal("1.831125"), NOON)}
    # A single post of a charge counts too, and a duplicate post does not.
    ledger.post(charge(NOON + 180, "1", "0.4883"))
    ledger.post(charge(NOON + 180, "1", "0.4883"))
    assert _stored(path)["A1", "2026-03-10"][:2] == (Decimal("4.75"), Decimal("2.319425"))
    assert _stored(path) == _from_journal(path)
    assert ledger.check_invariant() == []


def test_a_refused_batch_adds_nothing(ledger: Ledger, path: Path) -> None:
    """A batch refused (usage for an unknown account) leaves the sums as they were."""
    ledger.ensure_household("A1", "flat", NOON)
    ledger.set_day_zone(SHANGHAI, MARCH)
    good = Posting("charge:M1:1:1", "A1", E, EntryKind.CHARGE, Decimal("-1"), NOON, {"kwh": "2"})
    with pytest.raises(LedgerError, match="unknown account"):
        ledger.commit_batch(
            [good], [], [UsageDelta("nobody", "2026-03", 1, "flat", Decimal(1), Decimal(1))]
        )
    assert _stored(path) == {}
    with pytest.raises(LedgerError, match="kwh of charge"):
        ledger.post(
            Posting("charge:M1:2:1", "A1", E, EntryKind.CHARGE, Decimal("-1"), NOON, {"kwh": "x"})
        )
    assert _stored(path) == {}


def test_a_minute_across_midnight_is_summed_on_each_day(ledger: Ledger, path: Path) -> None:
    """Readings either side of local midnight in one commit: two charges, two days."""
    clock = Clock(BEFORE_MIDNIGHT - 60)
    community = _make(ledger, clock, "zhejiang_yearly")
    _assign(community)
    _top_up(community, "100", "t1")
    for seq, ts, register in (
        (1, BEFORE_MIDNIGHT - 60, 10),
        (2, BEFORE_MIDNIGHT, 12),
        (3, MIDNIGHT, 15),
        (4, MIDNIGHT + 30, 16),
    ):
        clock.now = ts
        community.handle_reading(R(M1, seq, ts, Decimal(register)))
    _flush(community)
    stored = _stored(path)
    assert stored == _from_journal(path)
    assert {day: kwh for (_, day), (kwh, _, _) in stored.items()} == {
        "2026-03-10": Decimal(2),
        "2026-03-11": Decimal(4),  # the reading at midnight is the new day's
    }
    assert stored[A, "2026-03-11"][2] == MIDNIGHT + 30  # the entry's time, its last reading
    today = community.use_today(community.meters[M1])
    assert today is not None
    assert (today.kwh, today.cost) == (Decimal(4), stored[A, "2026-03-11"][1])
    assert ledger.check_invariant() == []


def test_a_wrong_sum_is_found_by_the_invariant_check(ledger: Ledger, path: Path) -> None:
    """The check recomputes the sums from the journal: a tampered row is named."""
    clock = Clock(NOON)
    community = _make(ledger, clock)
    _assign(community)
    _top_up(community, "100", "t1")
    _minutes(community, clock, M1, NOON, 5, "1")
    with sqlite3.connect(path) as conn:
        conn.execute("UPDATE usage_days SET cost = '0.1'")
    problems = ledger.check_invariant()
    assert [(p.account_id, p.what, p.found) for p in problems] == [
        (A, "cost of 2026-03-10", Decimal("0.1"))
    ]


# ------------------------------------------------------------------------------ restarts


def test_a_restart_reads_the_sums_not_the_charges(path: Path) -> None:
    """Figures after a restart equal those before it; the journal's charges are not read."""
    clock = Clock(NOON - 9 * DAY)
    with Ledger(path) as ledger:
        community = _make(ledger, clock)
        _assign(community, M1, A)
        _assign(community, M2, B)
        _top_up(community, "500", "t1", A)
        _top_up(community, "500", "t2", B)
        for day in range(10):  # nine days back to today, across every midnight
            start = NOON - 9 * DAY + day * DAY - 13 * HOUR
            _minutes(community, clock, M1, start, 30, "0.37")
            community.tick()
            _minutes(community, clock, M2, start + 7 * HOUR, 20, "1.1")
            community.tick()
        clock.now = NOON + HOUR
        community.tick()

        def figures(c: Community) -> list[tuple[object, ...]]:
            return [
                (
                    c.daily_cost(c.meters[m]),
                    c.days_left(c.meters[m]),
                    c.use_today(c.meters[m]),
                    c.use_this_month(c.meters[m]),
                    c.households[a].days,
                    # (known_since itself is the first charge of the days kept: the live one
                    # may be older, from a day since forgotten; daily_cost is the same)
                )
                for m, a in ((M1, A), (M2, B))
            ]

        before = figures(community)
        assert before[0][1] is not None  # days left known
        assert before[1][2] == _used_today(community)  # M2 used some today
    with Ledger(path) as ledger:
        statements: list[str] = []
        conn = ledger._conn
        assert conn is not None
        conn.set_trace_callback(statements.append)
        again = _make(ledger, clock)
        conn.set_trace_callback(None)
        assert figures(again) == before
        assert not [sql for sql in statements if "charge" in sql], statements
        assert ledger.check_invariant() == []


def test_another_zone_rebuilds_the_days(path: Path) -> None:
    """A tariff moved to another zone: the sums are made again in its local days."""
    with Ledger(path) as ledger:
        ledger.ensure_household("A1", "flat", NOON)
        ledger.set_day_zone(SHANGHAI, MARCH)
        ts = BEFORE_MIDNIGHT + 30  # 23:59:30 in Shanghai, 16:59:30 in Paris
        ledger.post(
            Posting("charge:M1:1:1", "A1", E, EntryKind.CHARGE, Decimal("-1"), ts, {"kwh": "2"})
        )
        assert set(_stored(path)) == {("A1", "2026-03-10")}
        assert not ledger.set_day_zone(SHANGHAI, MARCH)
        ledger.post(
            Posting(
                "charge:M1:2:3", "A1", E, EntryKind.CHARGE, Decimal("-1"), MIDNIGHT, {"kwh": "1"}
            )
        )
        assert set(_stored(path)) == {("A1", "2026-03-10"), ("A1", "2026-03-11")}
        assert ledger.set_day_zone(ZoneInfo("Europe/Paris"), MARCH)
        assert ledger.day_zone() == ("Europe/Paris", MARCH)
        assert _stored(path) == {("A1", "2026-03-10"): (Decimal(3), Decimal(2), ts)}
        assert ledger.check_invariant() == []


def test_no_zone_no_sums_until_one_is_set(ledger: Ledger, path: Path) -> None:
    """A file no community has loaded sums nothing; the first zone sums what is there."""
    ledger.ensure_household("A1", "flat", NOON)
    ledger.post(
        Posting("charge:M1:1:1", "A1", E, EntryKind.CHARGE, Decimal("-1"), NOON, {"kwh": "2"})
    )
    assert ledger.day_zone() is None
    assert _stored(path) == {}
    assert ledger.check_invariant() == []
    with pytest.raises(LedgerError, match="set_day_zone"):
        ledger.use_days(date(2026, 3, 1))
    assert ledger.set_day_zone(SHANGHAI, MARCH)
    assert _stored(path) == {("A1", "2026-03-10"): (Decimal(2), Decimal(1), NOON)}


def test_only_the_days_shown_are_summed(ledger: Ledger, path: Path) -> None:
    """Days before the first day kept are left out (a start sums only what it shows);
    asking for an earlier first day sums them then."""
    ledger.ensure_household("A1", "flat", NOON)
    for n, ts in enumerate((NOON - 20 * DAY, NOON)):
        ledger.post(
            Posting(f"charge:M1:{n}:1", "A1", E, EntryKind.CHARGE, Decimal("-1"), ts, {"kwh": "2"})
        )
    assert ledger.set_day_zone(SHANGHAI, MARCH)
    assert set(_stored(path)) == {("A1", "2026-03-10")}
    late = NOON - 19 * DAY  # a charge of a day not kept, arriving now
    ledger.post(
        Posting("charge:M1:9:1", "A1", E, EntryKind.CHARGE, Decimal("-1"), late, {"kwh": "2"})
    )
    assert set(_stored(path)) == {("A1", "2026-03-10")}
    assert ledger.check_invariant() == []
    with pytest.raises(LedgerError, match="kept from 2026-03-01"):
        ledger.use_days(date(2026, 2, 1))
    assert not ledger.set_day_zone(SHANGHAI, date(2026, 3, 5))  # later: nothing to do
    assert ledger.set_day_zone(SHANGHAI, date(2026, 2, 1))
    assert set(_stored(path)) == {
        ("A1", "2026-02-18"),
        ("A1", "2026-02-19"),
        ("A1", "2026-03-10"),
    }
    assert ledger.check_invariant() == []


# ------------------------------------------------------------------------------ the upgrade


def test_a_file_of_the_third_schema_gains_its_days_of_use(
    path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A ledger with charges written before migration 4: summed once at the first load.

    Charges carrying their kWh and charges of earlier versions (kWh from their registers),
    over two local days; the figures are those the journal gives.
    """
    monkeypatch.setattr(ledger_module, "_MIGRATIONS", ledger_module._MIGRATIONS[:3])
    # The code of schema 3 summed no days.
    monkeypatch.setattr(Ledger, "_add_days", lambda *_: None)
    clock = Clock(MIDNIGHT + 2 * HOUR)
    with Ledger(path) as ledger:
        ledger.ensure_household(A, "flat", NOON)
        ledger.assign_meter(M1, A)
        ledger.post(Posting("topup:t1", A, E, EntryKind.TOP_UP, Decimal(100), NOON, {}))
        rows = (  # (ts, register, amount, kwh in the meta or None)
            (BEFORE_MIDNIGHT - 120, "10", "1.0", None),
            (BEFORE_MIDNIGHT - 60, "12.5", "1.2", None),
            (BEFORE_MIDNIGHT, "13", "0.25", "0.5"),
            (MIDNIGHT, "14", "0.5", "1"),
            (MIDNIGHT + 60, "16", "0.9766", "2"),
        )
        for ts, register, amount, kwh in rows:
            meta: dict[str, str | int] = {"meter_id": M1, "first_seq": 1, "last_seq": 1}
            if kwh is not None:
                meta["kwh"] = kwh
            ledger.commit_batch(
                [
                    Posting(
                        f"charge:{M1}:{ts}:{register}",
                        A,
                        E,
                        EntryKind.CHARGE,
                        -Decimal(amount),
                        ts,
                        meta,
                    )
                ],
                [Cursor(M1, 1, ts, Decimal(register))],
                [],
            )
    monkeypatch.undo()
    with Ledger(path) as ledger:
        with sqlite3.connect(path) as conn:
            assert conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
        assert ledger.day_zone() is None
        assert _stored(path) == {}
        community = _make(ledger, clock)
        assert ledger.day_zone() == ("Asia/Shanghai", MARCH)
        assert _stored(path) == {
            (A, "2026-03-10"): (Decimal("3.0"), Decimal("2.45"), BEFORE_MIDNIGHT - 120),
            (A, "2026-03-11"): (Decimal(3), Decimal("1.4766"), MIDNIGHT),
        }
        meter = community.meters[M1]
        today, month = community.use_today(meter), community.use_this_month(meter)
        assert today is not None
        assert month is not None
        assert (today.kwh, today.cost) == (Decimal(3), Decimal("1.4766"))
        assert (month.kwh, month.cost) == (Decimal("6.0"), Decimal("3.9266"))
        assert community.households[A].known_since == BEFORE_MIDNIGHT - 120
        assert ledger.check_invariant() == []
    with Ledger(path) as ledger:
        assert not ledger.set_day_zone(SHANGHAI, MARCH)  # summed once


# ------------------------------------------------------------------------------ a crash

CHILD = """
import importlib.util
import sys
from datetime import date
from decimal import Decimal
from zoneinfo import ZoneInfo

spec = importlib.util.spec_from_file_location("ledger_child", sys.argv[1])
mod = importlib.util.module_from_spec(spec)
sys.modules["ledger_child"] = mod
spec.loader.exec_module(mod)
ledger = mod.Ledger(sys.argv[2])
ledger.set_day_zone(ZoneInfo("Asia/Shanghai"), date(2026, 3, 1))
meters, start = int(sys.argv[3]), int(sys.argv[4])
cursor = ledger.cursor("M0")
seq = cursor.seq if cursor else 0
print("ready", seq, flush=True)
e = mod.SubAccount.ELECTRICITY
while True:
    seq += 1
    ts = start + 7 * seq  # ten minutes of this cross local midnight every ~86 batches
    postings = [
        mod.Posting(f"charge:M{m}:{ts}:{seq}", f"A{m}", e, mod.EntryKind.CHARGE,
                    Decimal("-0.0123457"), ts, {"kwh": "0.023"})
        for m in range(meters)
    ]
    # every batch also repeats the previous one's charges: duplicates add nothing
    postings += [
        mod.Posting(f"charge:M{m}:{ts - 7}:{seq - 1}", f"A{m}", e, mod.EntryKind.CHARGE,
                    Decimal("-0.0123457"), ts - 7, {"kwh": "0.023"})
        for m in range(meters) if seq > 1
    ]
    cursors = [mod.Cursor(f"M{m}", seq, ts, Decimal(seq)) for m in range(meters)]
    ledger.commit_batch(postings, cursors, [])
"""


def test_sigkill_between_batches_keeps_the_sums_with_the_journal(path: Path) -> None:
    """Killed at random moments (around local midnight): the sums equal the journal's."""
    meters = 20
    start = BEFORE_MIDNIGHT - 300
    with Ledger(path) as ledger:
        for m in range(meters):
            ledger.ensure_household(f"A{m}", f"flat {m}", NOON)
            ledger.assign_meter(f"M{m}", f"A{m}")
    ledger_py = ledger_module.__file__
    assert ledger_py is not None
    rng = random.Random()
    last = 0
    for _ in range(3):
        child = subprocess.Popen(
            [sys.executable, "-c", CHILD, ledger_py, str(path), str(meters), str(start)],
            stdout=subprocess.PIPE,
            text=True,
        )
        try:
            assert child.stdout is not None
            assert child.stdout.readline().split() == ["ready", str(last)]
            time.sleep(rng.uniform(0.05, 0.3))
            assert child.poll() is None, "the writer stopped by itself"
            os.kill(child.pid, signal.SIGKILL)
        finally:
            child.kill()
            child.wait()
            if child.stdout is not None:
                child.stdout.close()
        with Ledger(path) as ledger:
            assert ledger.check_invariant() == []
            cursor = ledger.cursor("M0")
            assert cursor is not None
            assert cursor.seq is not None
            assert cursor.seq > last
            last = cursor.seq
        stored = _stored(path)
        assert stored == _from_journal(path)
        total = sum((kwh for (account, _), (kwh, _, _) in stored.items() if account == "A0"))
        assert total == Decimal("0.023") * last  # one charge per batch, none twice
