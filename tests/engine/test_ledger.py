"""The money ledger: idempotency, atomic batches, the balance invariant, migrations, settlement."""

from __future__ import annotations

from collections.abc import Iterator
from decimal import Decimal
import json
from pathlib import Path
import sqlite3
import tempfile
import threading
from typing import Any

from hypothesis import given, settings, strategies as st
import pytest

from custom_components.prepaid_meter.engine import ledger as ledger_module
from custom_components.prepaid_meter.engine.ledger import (
    SCHEMA_VERSION,
    Cursor,
    EntryKind,
    Ledger,
    LedgerError,
    Posting,
    PostResult,
    SubAccount,
    SupplyChange,
    UsageDelta,
    UsageRow,
    UserLink,
)

E = SubAccount.ELECTRICITY
PF = SubAccount.PROPERTY_FEE
PK = SubAccount.PARKING_FEE
T0 = 1_767_225_600  # 2026-01-01 00:00 UTC


def _posting(
    key: str,
    kind: EntryKind,
    amount: str,
    *,
    account: str = "A1",
    sub: SubAccount = E,
    ts: int = T0,
    **meta: str | int,
) -> Posting:
    return Posting(key, account, sub, kind, Decimal(amount), ts, meta)


def _raw(path: Path) -> sqlite3.Connection:
    return sqlite3.connect(path, autocommit=True)


def _journal_count(path: Path) -> int:
    with _raw(path) as conn:
        return int(conn.execute("SELECT count(*) FROM journal").fetchone()[0])


def _snapshot(path: Path) -> dict[str, list[Any]]:
    """Every row of every table, to prove that a refused call wrote nothing."""
    with _raw(path) as conn:
        tables = [
            row[0] for row in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")
        ]
        return {
            table: sorted(conn.execute(f"SELECT * FROM {table}").fetchall()) for table in tables
        }


@pytest.fixture
def path(tmp_path: Path) -> Path:
    return tmp_path / "community.sqlite"


@pytest.fixture
def ledger(path: Path) -> Iterator[Ledger]:
    with Ledger(path) as opened:
        opened.ensure_household("A1", "Building 1, flat 101", T0)
        opened.ensure_household("A2", "Building 1, flat 102", T0)
        yield opened


# ---------------------------------------------------------------------------- the file


def test_file_settings_and_schema_version(ledger: Ledger, path: Path) -> None:
    with _raw(path) as conn:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION == 8
    own = ledger._conn
    assert own is not None
    assert own.execute("PRAGMA synchronous").fetchone()[0] == 2  # FULL
    assert own.execute("PRAGMA foreign_keys").fetchone()[0] == 1


def test_decimals_are_stored_as_exact_text(ledger: Ledger, path: Path) -> None:
    ledger.post(_posting("t1", EntryKind.TOP_UP, "100.10"))
    ledger.commit_batch(
        [_posting("c1", EntryKind.CHARGE, "-0.0012345")],
        [Cursor("M1", 7, T0 + 10, Decimal("1234.567"))],
        [UsageDelta("A1", "2026-01", 1, "flat", Decimal("0.003"), Decimal("0.0012345"))],
    )
    with _raw(path) as conn:
        rows = conn.execute(
            "SELECT typeof(amount), amount, typeof(balance_after), balance_after, typeof(ts) "
            "FROM journal ORDER BY id"
        ).fetchall()
        assert rows == [
            ("text", "100.10", "text", "100.10", "integer"),
            ("text", "-0.0012345", "text", "100.0987655", "integer"),
        ]
        assert conn.execute("SELECT typeof(last_energy), last_energy FROM meters").fetchone() == (
            "text",
            "1234.567",
        )
        assert conn.execute("SELECT typeof(kwh), kwh, amount FROM usage").fetchone() == (
            "text",
            "0.003",
            "0.0012345",
        )
    assert ledger.balance("A1", E) == Decimal("100.0987655")


def test_not_a_ledger_file_is_refused(tmp_path: Path) -> None:
    bogus = tmp_path / "bogus.sqlite"
    bogus.write_bytes(b"this is not a database at all, just some bytes" * 100)
    with pytest.raises(LedgerError, match="Cannot open the ledger file"):
        Ledger(bogus)
    with pytest.raises(LedgerError, match="Cannot open the ledger file"):
        Ledger(tmp_path / "missing-dir" / "x.sqlite")


def test_closed_ledger_refuses_calls(path: Path) -> None:
    ledger = Ledger(path)
    ledger.close()
    ledger.close()  # twice is harmless
    with pytest.raises(LedgerError, match="is closed"):
        ledger.households()
    with pytest.raises(LedgerError, match="is closed"):
        ledger.ensure_household("A1", "x", T0)


def test_reopening_keeps_everything(ledger: Ledger, path: Path) -> None:
    ledger.set_supply_protected("A2", True)
    ledger.assign_meter("M1", "A1")
    ledger.post(_posting("t1", EntryKind.TOP_UP, "50", channel="wechat", txn="w-1"))
    ledger.post(_posting("f1", EntryKind.FEE, "-120", sub=PF, reason="2026 property fee"))
    ledger.commit_batch(
        [_posting("c1", EntryKind.CHARGE, "-1.23456", meter="M1", seq=3)],
        [Cursor("M1", 3, T0 + 30, Decimal("10.5"))],
        [UsageDelta("A1", "2026-01", 1, "peak", Decimal("2"), Decimal("1.23456"))],
    )
    ledger.close_cycle("A1", "2026-01", Decimal("1.23"), '{"total": "1.23"}', T0 + 100)
    before = _snapshot(path)
    balances = ledger.balances("A1")
    entries = ledger.entries("A1")
    ledger.close()

    with Ledger(path) as again:
        assert _snapshot(path) == before
        assert again.balances("A1") == balances
        assert again.entries("A1") == entries
        assert again.cursor("M1") == Cursor("M1", 3, T0 + 30, Decimal("10.5"))
        assert again.meter_account("M1") == "A1"
        household = again.household("A2")
        assert household is not None
        assert household.supply_protected
        assert again.usage("A1", "2026-01") == [
            UsageRow("2026-01", 1, "peak", Decimal("2"), Decimal("1.23456"))
        ]
        assert again.statement("A1", "2026-01") == (Decimal("1.23"), '{"total": "1.23"}')
        assert again.check_invariant() == []


# ---------------------------------------------------------------------------- migrations


def test_newer_schema_is_refused(path: Path) -> None:
    Ledger(path).close()
    with _raw(path) as conn:
        conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    newer = f"schema version {SCHEMA_VERSION + 1}, newer than the {SCHEMA_VERSION}"
    with pytest.raises(LedgerError, match=newer):
        Ledger(path)


def test_a_further_migration_applies_in_order_and_keeps_data(
    path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with Ledger(path) as ledger:
        ledger.ensure_household("A1", "flat", T0)
        ledger.post(_posting("t1", EntryKind.TOP_UP, "10"))
    second = ("CREATE TABLE notes (id INTEGER PRIMARY KEY, body TEXT NOT NULL) STRICT",)
    monkeypatch.setattr(ledger_module, "_MIGRATIONS", (*ledger_module._MIGRATIONS, second))
    with Ledger(path) as ledger:
        assert ledger.balance("A1", E) == Decimal(10)
    with _raw(path) as conn:
        assert conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION + 1
        assert conn.execute("SELECT count(*) FROM notes").fetchone()[0] == 0
    # A fresh file gets them all, in order.
    fresh = path.with_name("fresh.sqlite")
    Ledger(fresh).close()
    with _raw(fresh) as conn:
        assert conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION + 1
    # This version of the code refuses the upgraded file.
    monkeypatch.undo()
    with pytest.raises(LedgerError, match="upgrade prepaid_meter"):
        Ledger(path)


def test_failed_migration_rolls_back_whole(path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    Ledger(path).close()
    broken = ("CREATE TABLE half (x TEXT)", "CREATE TABLE households (x TEXT)")
    monkeypatch.setattr(ledger_module, "_MIGRATIONS", (*ledger_module._MIGRATIONS, broken))
    with pytest.raises(LedgerError, match="already exists"):
        Ledger(path)
    with _raw(path) as conn:
        assert conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
        assert not conn.execute("SELECT 1 FROM sqlite_master WHERE name = 'half'").fetchone()


# ---------------------------------------------------------------------------- append-only


def test_journal_rows_cannot_be_updated_or_deleted(ledger: Ledger, path: Path) -> None:
    ledger.post(_posting("t1", EntryKind.TOP_UP, "10"))
    ledger.close_cycle("A1", "2026-01", Decimal(0), "{}", T0)
    with _raw(path) as conn:
        with pytest.raises(sqlite3.IntegrityError, match="append-only"):
            conn.execute("UPDATE journal SET amount = '1000' WHERE key = 't1'")
        with pytest.raises(sqlite3.IntegrityError, match="append-only"):
            conn.execute("DELETE FROM journal")
        with pytest.raises(sqlite3.IntegrityError, match="final"):
            conn.execute("UPDATE statements SET total = '0.01'")
        with pytest.raises(sqlite3.IntegrityError, match="final"):
            conn.execute("DELETE FROM statements")
    assert _journal_count(path) == 2
    assert ledger.balance("A1", E) == Decimal(10)


# ---------------------------------------------------------------------------- posting


def test_same_key_twice_credits_once_and_returns_first_result(ledger: Ledger, path: Path) -> None:
    first = ledger.post(_posting("wechat:42", EntryKind.TOP_UP, "100", channel="wechat"))
    assert first == PostResult(first.entry_id, "wechat:42", Decimal(100), duplicate=False)
    # A retry: later time, other meta, same money.
    again = ledger.post(_posting("wechat:42", EntryKind.TOP_UP, "100.00", ts=T0 + 60, retry=1))
    assert again == PostResult(first.entry_id, "wechat:42", Decimal(100), duplicate=True)
    assert ledger.balance("A1", E) == Decimal(100)
    assert _journal_count(path) == 1
    assert ledger.check_invariant() == []


@pytest.mark.parametrize(
    "changed",
    [
        _posting("k", EntryKind.TOP_UP, "100.01"),
        _posting("k", EntryKind.TOP_UP, "100", account="A2"),
        _posting("k", EntryKind.TOP_UP, "100", sub=PF),
        _posting("k", EntryKind.PAYMENT, "100"),
    ],
    ids=["amount", "account", "sub", "kind"],
)
def test_key_reused_with_other_content_is_refused(
    ledger: Ledger, path: Path, changed: Posting
) -> None:
    ledger.post(_posting("k", EntryKind.TOP_UP, "100"))
    before = _snapshot(path)
    with pytest.raises(LedgerError, match="reused with different content"):
        ledger.post(changed)
    with pytest.raises(LedgerError, match="reused with different content"):
        ledger.commit_batch([_posting("other", EntryKind.TOP_UP, "1"), changed], [], [])
    assert _snapshot(path) == before
    assert ledger.check_invariant() == []


@pytest.mark.parametrize(
    ("posting", "message"),
    [
        (Posting("k", "A1", E, EntryKind.TOP_UP, 10.5, T0), "must be a Decimal"),  # type: ignore[arg-type]
        (_posting("k", EntryKind.TOP_UP, "NaN"), "finite"),
        (_posting("k", EntryKind.TOP_UP, "Infinity"), "finite"),
        (_posting("k", EntryKind.TOP_UP, "1e13"), "out of range"),
        (_posting("k", EntryKind.TOP_UP, "0.00001"), "more than 4 decimal places"),
        (_posting("k", EntryKind.FEE, "-1.23456", sub=PF), "more than 4 decimal places"),
        (_posting("k", EntryKind.CHARGE, "-1e-29"), "more than 28 decimal places"),
        (_posting("k", EntryKind.TOP_UP, "0"), "must be > 0"),
        (_posting("k", EntryKind.TOP_UP, "-5"), "must be > 0"),
        (_posting("k", EntryKind.PAYMENT, "-5", sub=PF), "must be > 0"),
        (_posting("k", EntryKind.REFUND, "5"), "must be < 0"),
        (_posting("k", EntryKind.FEE, "5", sub=PF), "must be < 0"),
        (_posting("k", EntryKind.CHARGE, "0.01"), "must be <= 0"),
        (_posting("k", EntryKind.ADJUSTMENT, "0"), "must be != 0"),
        (_posting("k", EntryKind.CHARGE, "-1", sub=PF), "belongs on electricity"),
        (_posting("k", EntryKind.SETTLEMENT, "-1"), "only by close_cycle"),
        (_posting("settle:A1:2026", EntryKind.TOP_UP, "1"), "only by close_cycle"),
        (_posting("k", EntryKind.TOP_UP, "5", account="nobody"), "unknown account 'nobody'"),
        (_posting("", EntryKind.TOP_UP, "5"), "non-empty string"),
        (_posting("k", EntryKind.TOP_UP, "5", ts=-1), "UNIX seconds"),
        (Posting("k", "A1", E, EntryKind.TOP_UP, Decimal(5), True), "must be an integer"),
        (Posting("k", "A1", "cash", EntryKind.TOP_UP, Decimal(5), T0), "not one of"),  # type: ignore[arg-type]
        (Posting("k", "A1", E, "gift", Decimal(5), T0), "not one of"),  # type: ignore[arg-type]
        (Posting("k", "A1", E, EntryKind.TOP_UP, Decimal(5), T0, {"x": 1.5}), "strings and int"),  # type: ignore[dict-item]
        (Posting("k", "A1", E, EntryKind.TOP_UP, Decimal(5), T0, {"x": True}), "strings and int"),
    ],
)
def test_bad_postings_are_refused_and_write_nothing(
    ledger: Ledger, path: Path, posting: Posting, message: str
) -> None:
    ledger.post(_posting("before", EntryKind.TOP_UP, "1"))
    before = _snapshot(path)
    with pytest.raises(LedgerError, match=message):
        ledger.post(posting)
    with pytest.raises(LedgerError, match=message):
        ledger.commit_batch(
            [_posting("ok", EntryKind.CHARGE, "-0.5"), posting],
            [Cursor("M1", 1, T0, Decimal(1))],
            [UsageDelta("A1", "2026-01", 1, "flat", Decimal(1), Decimal("0.5"))],
        )
    assert _snapshot(path) == before
    assert ledger.check_invariant() == []


def test_every_kind_keeps_the_invariant(ledger: Ledger) -> None:
    """Each operation moves the right balance by the right amount, and the cache stays true."""
    expected = {(account, sub): Decimal(0) for account in ("A1", "A2") for sub in SubAccount}

    def check() -> None:
        assert ledger.check_invariant() == []
        for (account, sub), value in expected.items():
            assert ledger.balance(account, sub) == value, (account, sub)

    steps: list[Posting] = [
        _posting("top", EntryKind.TOP_UP, "200", channel="alipay", txn="2026010112345"),
        _posting("chg", EntryKind.CHARGE, "-0.5283", meter="M1", seq=1),
        _posting("fee", EntryKind.FEE, "-360", sub=PF, reason="2026 H1"),
        _posting("pay", EntryKind.PAYMENT, "360", sub=PF, channel="cash", actor="office"),
        _posting("park", EntryKind.FEE, "-150", sub=PK, account="A2"),
        _posting("adj+", EntryKind.ADJUSTMENT, "5.5", reason="meter fault", actor="admin"),
        _posting("adj-", EntryKind.ADJUSTMENT, "-0.25", reason="rounding", actor="admin"),
        _posting("ref", EntryKind.REFUND, "-20", reason="moving out", actor="admin"),
    ]
    for posting in steps:
        result = ledger.post(posting)
        expected[posting.account_id, posting.sub] += posting.amount
        assert result.balance_after == expected[posting.account_id, posting.sub]
        check()

    batch = [
        _posting("b1", EntryKind.CHARGE, "-1.0566", meter="M1", seq=2),
        _posting("b2", EntryKind.CHARGE, "-0.10566", account="A2", meter="M2", seq=1),
        _posting("b3", EntryKind.CHARGE, "-2.1", meter="M1", seq=3),
    ]
    results = ledger.commit_batch(
        batch,
        [Cursor("M1", 3, T0 + 20, Decimal("5")), Cursor("M2", 1, T0 + 20, Decimal("0.2"))],
        [
            UsageDelta("A1", "2026-01", 1, "flat", Decimal("6"), Decimal("3.1566")),
            UsageDelta("A2", "2026-01", 1, "flat", Decimal("0.2"), Decimal("0.10566")),
        ],
    )
    for posting, result in zip(batch, results, strict=True):
        expected[posting.account_id, posting.sub] += posting.amount
        assert not result.duplicate
    assert results[2].balance_after == expected["A1", E]
    check()

    settled = ledger.close_cycle("A1", "2026-01", Decimal("3.16"), "{}", T0 + 3600)
    expected["A1", E] += Decimal("3.1566") - Decimal("3.16")
    assert settled.balance_after == expected["A1", E]
    check()
    assert ledger.total_balance(E) == expected["A1", E] + expected["A2", E]
    assert ledger.count_in_arrears(PK) == 1


def test_refund_is_a_debit(ledger: Ledger) -> None:
    ledger.post(_posting("t", EntryKind.TOP_UP, "100"))
    result = ledger.post(_posting("r", EntryKind.REFUND, "-30", reason="moving out"))
    assert result.balance_after == Decimal(70)
    with pytest.raises(LedgerError, match="refund must be < 0"):
        ledger.post(_posting("r2", EntryKind.REFUND, "30"))


def test_fee_arrears_stay_on_their_sub_account(ledger: Ledger) -> None:
    ledger.post(_posting("t", EntryKind.TOP_UP, "80"))
    ledger.post(_posting("f", EntryKind.FEE, "-1200", sub=PF, reason="2026 property fee"))
    ledger.post(_posting("p", EntryKind.FEE, "-300", sub=PK, reason="2026 Q1 parking"))
    assert ledger.balances("A1") == {E: Decimal(80), PF: Decimal(-1200), PK: Decimal(-300)}
    assert ledger.count_in_arrears(PF) == 1
    assert ledger.count_in_arrears(PK) == 1
    assert ledger.count_in_arrears(E) == 0
    assert ledger.check_invariant() == []


def test_negative_zero_is_never_stored(ledger: Ledger, path: Path) -> None:
    ledger.post(_posting("c", EntryKind.CHARGE, "-0.000"))
    assert ledger.count_in_arrears(E) == 0
    with _raw(path) as conn:
        assert conn.execute("SELECT amount, balance_after FROM journal").fetchone() == (
            "0.000",
            "0.000",
        )


# ---------------------------------------------------------------------------- property test

_KIND_SIGN = {
    EntryKind.TOP_UP: 1,
    EntryKind.PAYMENT: 1,
    EntryKind.FEE: -1,
    EntryKind.REFUND: -1,
    EntryKind.CHARGE: -1,
    EntryKind.ADJUSTMENT: 0,
}


@st.composite
def _postings(draw: st.DrawFn) -> list[Posting]:
    """Distinct postings (unique keys) that the rules accept."""
    count = draw(st.integers(min_value=1, max_value=12))
    out: list[Posting] = []
    for n in range(count):
        kind = draw(st.sampled_from(list(_KIND_SIGN)))
        places = 7 if kind is EntryKind.CHARGE else 4
        magnitude = draw(
            st.decimals(
                min_value=Decimal(1).scaleb(-places),
                max_value=Decimal(5000),
                places=places,
                allow_nan=False,
                allow_infinity=False,
            )
        )
        sign = _KIND_SIGN[kind] or draw(st.sampled_from([1, -1]))
        sub = E if kind is EntryKind.CHARGE else draw(st.sampled_from(list(SubAccount)))
        account = draw(st.sampled_from(["A1", "A2", "A3"]))
        out.append(Posting(f"k{n}", account, sub, kind, magnitude * sign, T0 + n))
    return out


@settings(max_examples=120, deadline=None)
@given(
    distinct=_postings(),
    order=st.lists(st.integers(min_value=0, max_value=1000), min_size=1, max_size=30),
    chunks=st.lists(st.integers(min_value=1, max_value=5), min_size=1, max_size=30),
)
def test_repeats_change_nothing(
    distinct: list[Posting], order: list[int], chunks: list[int]
) -> None:
    """Any sequence with repeated keys, posted singly or in batches, equals the set once."""
    sequence = [distinct[i % len(distinct)] for i in order]
    first_seen = list(dict.fromkeys(sequence))
    with tempfile.TemporaryDirectory() as tmp:
        repeated = Ledger(Path(tmp) / "repeated.sqlite")
        once = Ledger(Path(tmp) / "once.sqlite")
        for ledger in (repeated, once):
            for account in ("A1", "A2", "A3"):
                ledger.ensure_household(account, account, T0)

        results: dict[str, PostResult] = {}
        position = 0
        for size in (*chunks, len(sequence)):
            chunk = sequence[position : position + size]
            position += size
            got = repeated.post(chunk[0]) if size == 1 and chunk else None
            batch = [got] if got else repeated.commit_batch(chunk, [], [])
            for posting, result in zip(chunk, batch, strict=True):
                first = results.setdefault(posting.key, result)
                assert result.duplicate == (first is not result)
                assert result.entry_id == first.entry_id
                assert result.balance_after == first.balance_after
        for posting in first_seen:
            once.post(posting)

        for account in ("A1", "A2", "A3"):
            want = {sub: Decimal(0) for sub in SubAccount}
            for posting in first_seen:
                if posting.account_id == account:
                    want[posting.sub] += posting.amount
            assert repeated.balances(account) == want
            assert once.balances(account) == want
        assert repeated.check_invariant() == []
        assert once.check_invariant() == []
        assert len(repeated.entries("A1", limit=1000)) == len(once.entries("A1", limit=1000))
        repeated.close()
        once.close()


# ---------------------------------------------------------------------------- batches


def test_commit_batch_writes_charges_cursors_and_usage(ledger: Ledger) -> None:
    ledger.assign_meter("M1", "A1")
    results = ledger.commit_batch(
        [
            _posting("M1:1", EntryKind.CHARGE, "-0.25", meter="M1", seq=1),
            _posting("M1:2", EntryKind.CHARGE, "-0.5", meter="M1", seq=2),
        ],
        [Cursor("M1", 2, T0 + 20, Decimal("101.5")), Cursor("M9", None, T0 + 20, Decimal(0))],
        [
            UsageDelta("A1", "2026-01", 1, "valley", Decimal("1"), Decimal("0.25")),
            UsageDelta("A1", "2026-01", 1, "peak", Decimal("0.5"), Decimal("0.25")),
            UsageDelta("A1", "2026-01", 1, "peak", Decimal("0.5"), Decimal("0.25")),
        ],
    )
    assert [r.balance_after for r in results] == [Decimal("-0.25"), Decimal("-0.75")]
    assert results[1].entry_id == results[0].entry_id + 1
    assert ledger.cursors() == {
        "M1": Cursor("M1", 2, T0 + 20, Decimal("101.5")),
        "M9": Cursor("M9", None, T0 + 20, Decimal(0)),
    }
    assert ledger.meter_account("M1") == "A1"  # the cursor does not unassign
    assert ledger.meter_account("M9") is None
    ledger.commit_batch(
        [], [], [UsageDelta("A1", "2026-01", 1, "peak", Decimal("0.25"), Decimal("0.125"))]
    )
    assert ledger.usage("A1", "2026-01") == [
        UsageRow("2026-01", 1, "peak", Decimal("1.25"), Decimal("0.625")),
        UsageRow("2026-01", 1, "valley", Decimal("1"), Decimal("0.25")),
    ]
    assert ledger.usage("A1", "2026-02") == []
    assert ledger.check_invariant() == []


def test_commit_batch_skips_keys_already_present(ledger: Ledger, path: Path) -> None:
    first = ledger.commit_batch([_posting("c1", EntryKind.CHARGE, "-1")], [], [])
    results = ledger.commit_batch(
        [
            _posting("c1", EntryKind.CHARGE, "-1"),
            _posting("c2", EntryKind.CHARGE, "-2"),
            _posting("c2", EntryKind.CHARGE, "-2"),
        ],
        [],
        [],
    )
    assert results[0] == PostResult(first[0].entry_id, "c1", Decimal(-1), duplicate=True)
    assert results[1] == PostResult(results[1].entry_id, "c2", Decimal(-3), duplicate=False)
    assert results[2] == PostResult(results[1].entry_id, "c2", Decimal(-3), duplicate=True)
    assert ledger.balance("A1", E) == Decimal(-3)
    assert _journal_count(path) == 2
    assert ledger.check_invariant() == []


@pytest.mark.parametrize(
    ("postings", "usage", "message"),
    [
        (
            [_posting("bad", EntryKind.CHARGE, "-1", account="ghost")],
            [],
            "unknown account 'ghost'",
        ),
        (
            [],
            [UsageDelta("ghost", "2026-01", 1, "flat", Decimal(1), Decimal(1))],
            "unknown account 'ghost'",
        ),
        ([_posting("c0", EntryKind.CHARGE, "-9")], [], "reused with different content"),
        ([], [UsageDelta("A1", "2026-01", 1, "flat", Decimal("NaN"), Decimal(1))], "finite"),
    ],
    ids=["posting-account", "usage-account", "key-reuse", "usage-nan"],
)
def test_commit_batch_is_atomic(
    ledger: Ledger,
    path: Path,
    postings: list[Posting],
    usage: list[UsageDelta],
    message: str,
) -> None:
    ledger.commit_batch(
        [_posting("c0", EntryKind.CHARGE, "-1")],
        [Cursor("M1", 1, T0, Decimal(1))],
        [UsageDelta("A1", "2026-01", 1, "flat", Decimal(1), Decimal(1))],
    )
    before = _snapshot(path)
    with pytest.raises(LedgerError, match=message):
        ledger.commit_batch(
            [
                _posting("c1", EntryKind.CHARGE, "-1"),
                _posting("c2", EntryKind.CHARGE, "-1", account="A2"),
                *postings,
                _posting("c3", EntryKind.CHARGE, "-1"),
            ],
            [Cursor("M1", 2, T0 + 10, Decimal(2)), Cursor("M2", 1, T0 + 10, Decimal(1))],
            [
                UsageDelta("A1", "2026-01", 1, "flat", Decimal(1), Decimal(1)),
                *usage,
                UsageDelta("A2", "2026-01", 1, "flat", Decimal(1), Decimal(1)),
            ],
        )
    assert _snapshot(path) == before
    assert ledger.cursor("M1") == Cursor("M1", 1, T0, Decimal(1))
    assert ledger.cursor("M2") is None
    assert ledger.usage("A2", "2026-01") == []
    assert ledger.check_invariant() == []


# ---------------------------------------------------------------------------- cycle close


def test_close_cycle_settles_to_the_cent_and_is_idempotent(ledger: Ledger, path: Path) -> None:
    ledger.post(_posting("t", EntryKind.TOP_UP, "100"))
    pieces = [Decimal("1.0566123"), Decimal("2.4001"), Decimal("0.0049999")]
    for seq, amount in enumerate(pieces, start=1):
        ledger.commit_batch(
            [_posting(f"M1:{seq}", EntryKind.CHARGE, str(-amount), meter="M1", seq=seq)],
            [Cursor("M1", seq, T0 + seq, Decimal(seq))],
            [UsageDelta("A1", "2026-01", 1, "flat", Decimal(1), amount)],
        )
    # Another account's cycle and another cycle of this account are left alone.
    ledger.commit_batch(
        [
            _posting("M2:1", EntryKind.CHARGE, "-9.99", account="A2"),
            _posting("feb:1", EntryKind.CHARGE, "-0.5"),
        ],
        [],
        [
            UsageDelta("A2", "2026-01", 1, "flat", Decimal(1), Decimal("9.99")),
            UsageDelta("A1", "2026-02", 1, "flat", Decimal(1), Decimal("0.5")),
        ],
    )
    statement = json.dumps({"cycle": "2026-01", "total": "3.46"})
    result = ledger.close_cycle("A1", "2026-01", Decimal("3.46"), statement, T0 + 3600)
    assert not result.duplicate
    settlement = ledger.entry_by_key("settle:A1:2026-01")
    assert settlement is not None
    assert settlement.kind is EntryKind.SETTLEMENT
    assert settlement.amount == sum(pieces) - Decimal("3.46")
    assert settlement.meta == {
        "cycle": "2026-01",
        "statement_total": "3.46",
        "charged": str(sum(pieces)),
    }
    # The money taken for the cycle (its charges and the settlement) equals the statement.
    january = [e for e in ledger.entries("A1", E) if e.key.startswith(("M1:", "settle:"))]
    assert len(january) == 4
    assert -sum((e.amount for e in january), Decimal(0)) == Decimal("3.46")
    assert ledger.balance("A1", E) == Decimal(100) - Decimal("3.46") - Decimal("0.5")
    assert ledger.balance("A2", E) == Decimal("-9.99")
    assert ledger.statement("A1", "2026-01") == (Decimal("3.46"), statement)
    assert ledger.statement("A1", "2026-02") is None
    assert ledger.check_invariant() == []

    count = _journal_count(path)
    again = ledger.close_cycle("A1", "2026-01", Decimal("3.460"), "{}", T0 + 7200)
    assert again == PostResult(result.entry_id, result.key, result.balance_after, duplicate=True)
    assert _journal_count(path) == count
    assert ledger.statement("A1", "2026-01") == (Decimal("3.46"), statement)
    with pytest.raises(LedgerError, match=r"already closed with total 3\.46"):
        ledger.close_cycle("A1", "2026-01", Decimal("3.47"), "{}", T0 + 7200)
    with pytest.raises(LedgerError, match="already closed"):
        ledger.commit_batch(
            [_posting("late", EntryKind.CHARGE, "-0.1")],
            [],
            [UsageDelta("A1", "2026-01", 1, "flat", Decimal("0.2"), Decimal("0.1"))],
        )
    assert _journal_count(path) == count
    assert ledger.check_invariant() == []


def test_close_cycle_with_nothing_charged_and_undercharge(ledger: Ledger) -> None:
    zero = ledger.close_cycle("A1", "2025", Decimal(0), "{}", T0)
    assert ledger.entry_by_key("settle:A1:2025") is not None
    assert zero.balance_after == 0
    ledger.commit_batch(
        [_posting("c", EntryKind.CHARGE, "-10.004")],
        [],
        [UsageDelta("A1", "2026", 1, "flat", Decimal(20), Decimal("10.004"))],
    )
    # The statement rounds up: the settlement takes the missing fraction of a cent.
    result = ledger.close_cycle("A1", "2026", Decimal("10.01"), "{}", T0)
    assert result.balance_after == Decimal("-10.01")
    assert ledger.count_in_arrears(E) == 1
    assert ledger.check_invariant() == []


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("ghost", "2026", Decimal(1), "{}"), "unknown account 'ghost'"),
        (("A1", "2026", Decimal("-1"), "{}"), "negative"),
        (("A1", "2026", Decimal("1.00001"), "{}"), "decimal places"),
        (("A1", "2026", Decimal(1), "{not json"), "not valid JSON"),
        (("A1", "", Decimal(1), "{}"), "non-empty string"),
    ],
)
def test_close_cycle_refusals_write_nothing(
    ledger: Ledger, path: Path, args: tuple[str, str, Decimal, str], message: str
) -> None:
    before = _snapshot(path)
    with pytest.raises(LedgerError, match=message):
        ledger.close_cycle(*args, T0)
    assert _snapshot(path) == before


# ---------------------------------------------------------------------------- accounts, reads


def test_households_and_meters(ledger: Ledger) -> None:
    again = ledger.ensure_household("A1", "Building 1, flat 101 (renamed)", T0 + 999, True)
    assert again.label == "Building 1, flat 101 (renamed)"
    assert again.opened_at == T0  # kept
    assert not again.supply_protected  # kept: set_supply_protected changes it
    ledger.set_supply_protected("A1", True)
    assert [h.account_id for h in ledger.households()] == ["A1", "A2"]
    assert [h.supply_protected for h in ledger.households()] == [True, False]
    assert ledger.household("nobody") is None
    with pytest.raises(LedgerError, match="Unknown account 'nobody'"):
        ledger.set_supply_protected("nobody", True)
    with pytest.raises(LedgerError, match="Unknown account 'nobody'"):
        ledger.balance("nobody", E)
    with pytest.raises(LedgerError, match="unknown account 'nobody'"):
        ledger.assign_meter("M1", "nobody")
    ledger.assign_meter("M1", "A1")
    assert ledger.meter_account("M1") == "A1"
    assert ledger.cursor("M1") is None  # assigned but never billed
    ledger.assign_meter("M1", "A2")
    assert ledger.meters() == {"M1": "A2"}
    ledger.assign_meter("M1", None)
    assert ledger.meter_account("M1") is None
    assert ledger.meter_account("unknown") is None
    assert ledger.balances("A2") == {E: Decimal(0), PF: Decimal(0), PK: Decimal(0)}


def test_entries_filters_and_aggregates(ledger: Ledger) -> None:
    ledger.post(_posting("t1", EntryKind.TOP_UP, "10", ts=T0, channel="wechat", txn="x1"))
    ledger.post(_posting("t2", EntryKind.TOP_UP, "20", ts=T0 + 86400, account="A2"))
    ledger.post(_posting("t3", EntryKind.TOP_UP, "5", sub=PF, ts=T0 + 86400))
    ledger.post(_posting("c1", EntryKind.CHARGE, "-1", ts=T0 + 86500))
    newest = ledger.entries("A1")
    assert [e.key for e in newest] == ["c1", "t3", "t1"]
    assert [e.key for e in ledger.entries("A1", sub=E)] == ["c1", "t1"]
    assert [e.key for e in ledger.entries("A1", since=T0 + 1)] == ["c1", "t3"]
    assert [e.key for e in ledger.entries("A1", limit=1)] == ["c1"]
    entry = ledger.entry_by_key("t1")
    assert entry is not None
    assert entry.meta == {"channel": "wechat", "txn": "x1"}
    assert (entry.account_id, entry.sub, entry.kind) == ("A1", E, EntryKind.TOP_UP)
    assert (entry.amount, entry.balance_after, entry.ts) == (Decimal(10), Decimal(10), T0)
    assert ledger.entry_by_key("nope") is None
    assert ledger.sum_kind_since(EntryKind.TOP_UP, T0) == Decimal(35)
    assert ledger.sum_kind_since(EntryKind.TOP_UP, T0 + 86400) == Decimal(25)
    assert ledger.sum_kind_since(EntryKind.TOP_UP, T0, sub=E) == Decimal(30)
    assert ledger.sum_kind_since(EntryKind.CHARGE, T0) == Decimal(-1)
    assert ledger.sum_kind_since(EntryKind.REFUND, T0) == Decimal(0)
    assert ledger.total_balance(E) == Decimal(29)
    assert ledger.total_balance(PF) == Decimal(5)
    assert ledger.count_in_arrears(E) == 0
    with pytest.raises(LedgerError, match="not one of"):
        ledger.total_balance("cash")  # type: ignore[arg-type]


def test_invariant_reports_a_tampered_cache(ledger: Ledger, path: Path) -> None:
    """check_invariant finds a cached balance that disagrees with the journal."""
    ledger.post(_posting("t", EntryKind.TOP_UP, "10"))
    with _raw(path) as conn:
        conn.execute("UPDATE balances SET balance = '11' WHERE account_id = 'A1' AND sub = ?", (E,))
    problems = ledger.check_invariant()
    assert len(problems) == 1
    assert (problems[0].account_id, problems[0].sub) == ("A1", "electricity")
    assert (problems[0].expected, problems[0].found) == (Decimal(10), Decimal(11))
    assert "cached balance is 11, the journal says 10" in str(problems[0])


def test_calls_from_many_threads(ledger: Ledger) -> None:
    """The executor may call from any thread; concurrent calls are serialised, none lost."""
    errors: list[BaseException] = []

    def work(worker: int) -> None:
        try:
            for n in range(40):
                ledger.post(_posting(f"w{worker}:{n}", EntryKind.TOP_UP, "1.5"))
                ledger.commit_batch(
                    [_posting(f"c{worker}:{n}", EntryKind.CHARGE, "-0.5", account="A2")], [], []
                )
                ledger.balance("A1", E)
        except BaseException as err:
            errors.append(err)

    threads = [threading.Thread(target=work, args=(w,)) for w in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert ledger.balance("A1", E) == Decimal("240.0")
    assert ledger.balance("A2", E) == Decimal("-80.0")
    assert ledger.check_invariant() == []


# ---------------------------------------------------------------------------- supply decisions


def test_a_file_of_the_first_schema_gains_supply_decisions(
    path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A ledger written before migration 2 upgrades in place and keeps its money."""
    monkeypatch.setattr(ledger_module, "_MIGRATIONS", ledger_module._MIGRATIONS[:1])
    with Ledger(path) as ledger:
        ledger.ensure_household("A1", "flat", T0)
        ledger.post(_posting("t1", EntryKind.TOP_UP, "10"))
    monkeypatch.undo()
    with Ledger(path) as ledger:
        assert ledger.balance("A1", E) == Decimal(10)
        assert ledger.supply_states() == {}
        ledger.record_supply(SupplyChange("M1", "off", "manual", "operator:u1", T0))
        assert ledger.supply_states()["M1"].state == "off"


def test_supply_decisions_are_kept_newest_last_and_written_with_the_batch(
    ledger: Ledger, path: Path
) -> None:
    """A batch's supply decisions commit with its charges; the newest per meter wins."""
    ledger.post(_posting("t1", EntryKind.TOP_UP, "1"))
    cut = SupplyChange("M1", "off", "credit_exhausted", "system", T0 + 10)
    ledger.commit_batch(
        [_posting("c1", EntryKind.CHARGE, "-2")],
        [Cursor("M1", 7, T0 + 10, Decimal("10"))],
        [],
        [cut],
    )
    assert ledger.supply_states() == {"M1": cut}
    restored = SupplyChange("M1", "on", "restored", "operator:u1", T0 + 20)
    ledger.record_supply(restored)
    assert ledger.supply_states() == {"M1": restored}
    assert ledger.supply_history("M1") == [cut, restored]
    with _raw(path) as conn, pytest.raises(sqlite3.DatabaseError, match="append-only"):
        conn.execute("DELETE FROM supply_changes")


def test_a_refused_batch_writes_no_supply_decision(ledger: Ledger) -> None:
    """Nothing of a refused batch is written: not its supply decisions either."""
    with pytest.raises(LedgerError):
        ledger.commit_batch(
            [_posting("c1", EntryKind.CHARGE, "-2", account="nobody")],
            [],
            [],
            [SupplyChange("M1", "off", "credit_exhausted", "system", T0)],
        )
    assert ledger.supply_states() == {}
    with pytest.raises(LedgerError, match="on or off"):
        ledger.record_supply(SupplyChange("M1", "half", "x", "system", T0))


# ---------------------------------------------------------------------------- users and households


def test_a_file_of_the_second_schema_gains_user_links(
    path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A ledger written before migration 3 upgrades in place: money and decisions kept."""
    monkeypatch.setattr(ledger_module, "_MIGRATIONS", ledger_module._MIGRATIONS[:2])
    with Ledger(path) as ledger:
        ledger.ensure_household("A1", "flat", T0)
        ledger.post(_posting("t1", EntryKind.TOP_UP, "10"))
        ledger.record_supply(SupplyChange("M1", "off", "manual", "operator", T0))
    monkeypatch.undo()
    with Ledger(path) as ledger:
        assert ledger.balance("A1", E) == Decimal(10)
        assert ledger.supply_states()["M1"].state == "off"
        assert ledger.user_links() == {}
        assert ledger.record_link(UserLink("A1", "u-alice", True, "operator|u-ops|Ops", T0))
        assert ledger.user_links() == {"A1": frozenset({"u-alice"})}


def test_user_links_are_a_journal_and_idempotent(ledger: Ledger, path: Path) -> None:
    """Linking twice writes once; unlinking what is not linked writes nothing; newest wins."""
    ops = "operator|u-ops|Ops"
    assert ledger.record_link(UserLink("A1", "u-alice", True, ops, T0))
    assert not ledger.record_link(UserLink("A1", "u-alice", True, ops, T0 + 1))
    assert ledger.record_link(UserLink("A1", "u-bob", True, ops, T0 + 2))
    assert ledger.record_link(UserLink("A2", "u-bob", True, ops, T0 + 3))
    assert not ledger.record_link(UserLink("A2", "u-carol", False, ops, T0 + 4))
    assert ledger.user_links() == {
        "A1": frozenset({"u-alice", "u-bob"}),
        "A2": frozenset({"u-bob"}),
    }
    assert ledger.record_link(UserLink("A1", "u-bob", False, "operator||automation", T0 + 5))
    assert ledger.user_links() == {"A1": frozenset({"u-alice"}), "A2": frozenset({"u-bob"})}
    assert ledger.link_history("A1") == [
        UserLink("A1", "u-alice", True, ops, T0),
        UserLink("A1", "u-bob", True, ops, T0 + 2),
        UserLink("A1", "u-bob", False, "operator||automation", T0 + 5),
    ]
    assert len(ledger.link_history()) == 4
    with _raw(path) as conn, pytest.raises(sqlite3.DatabaseError, match="append-only"):
        conn.execute("DELETE FROM user_links")
    with _raw(path) as conn, pytest.raises(sqlite3.DatabaseError, match="append-only"):
        conn.execute("UPDATE user_links SET linked = 0")


def test_a_link_to_an_unknown_household_or_without_a_user_is_refused(
    ledger: Ledger, path: Path
) -> None:
    """Nothing is written for an unknown account, an empty user id or actor, a bad time."""
    before = _snapshot(path)
    for change, match in (
        (UserLink("nobody", "u-alice", True, "operator", T0), "unknown account"),
        (UserLink("A1", "", True, "operator", T0), "user id"),
        (UserLink("A1", "u-alice", True, "", T0), "actor"),
        (UserLink("A1", "u-alice", True, "operator", -1), "UNIX seconds"),
    ):
        with pytest.raises(LedgerError, match=match):
            ledger.record_link(change)
    assert _snapshot(path) == before
