"""The ledger survives SIGKILL mid-stream: charges, cursors and usage commit together or not at all.

A child process writes batches in a loop (each batch advances every meter's cursor to the next
seq, with one charge per meter whose key holds that seq, and the matching usage). The parent
kills it at a random moment, reopens the file and checks that the cursor, the charges, the usage
and the balances agree exactly, then resumes from the cursor itself; and again, a few times.
"""

from __future__ import annotations

from decimal import Decimal
import os
from pathlib import Path
import random
import signal
import sqlite3
import subprocess
import sys
import time
from typing import Any

from custom_components.prepaid_meter.engine import ledger as ledger_module
from custom_components.prepaid_meter.engine.ledger import Ledger, SubAccount

METERS = 40
ROUNDS = 5
CHARGE = Decimal("-0.0123457")
KWH = Decimal("0.023")
TOP_UP_EVERY = 7
TOP_UP = Decimal("5")

# Shared by the child (run with `python -c`) and the parent (exec'd below), so both write the
# same batches. The child loads ledger.py by its path: nothing else of the package is imported.
BATCH_SOURCE = f"""
from decimal import Decimal

T0 = 1_767_225_600


def write_batch(mod, ledger, seq, meters):
    e = mod.SubAccount.ELECTRICITY
    postings = [
        mod.Posting(f"chg:M{{m}}:{{seq}}", f"A{{m}}", e, mod.EntryKind.CHARGE,
                    Decimal("{CHARGE}"), T0 + 10 * seq, {{"meter": f"M{{m}}", "seq": seq}})
        for m in range(meters)
    ]
    cursors = [mod.Cursor(f"M{{m}}", seq, T0 + 10 * seq, Decimal(seq)) for m in range(meters)]
    usage = [
        mod.UsageDelta(f"A{{m}}", "2026-01", 1 + m % 2, "flat", Decimal("{KWH}"),
                       -Decimal("{CHARGE}"))
        for m in range(meters)
    ]
    ledger.commit_batch(postings, cursors, usage)
    if seq % {TOP_UP_EVERY} == 0:  # a separate transaction between two batches
        ledger.post(mod.Posting(f"top:{{seq}}", "A0", e, mod.EntryKind.TOP_UP,
                                Decimal("{TOP_UP}"), T0 + 10 * seq))
"""

CHILD_SOURCE = (
    """
import importlib.util
import sys

spec = importlib.util.spec_from_file_location("ledger_child", sys.argv[1])
mod = importlib.util.module_from_spec(spec)
sys.modules["ledger_child"] = mod
spec.loader.exec_module(mod)
"""
    + BATCH_SOURCE
    + """
ledger = mod.Ledger(sys.argv[2])
meters = int(sys.argv[3])
cursor = ledger.cursor("M0")
seq = cursor.seq if cursor else 0
print("ready", seq, flush=True)
while True:
    seq += 1
    write_batch(mod, ledger, seq, meters)
"""
)


def _batch_writer() -> Any:
    namespace: dict[str, Any] = {}
    exec(BATCH_SOURCE, namespace)
    return namespace["write_batch"]


def _check(path: Path, kills: set[int]) -> int:
    """Check that the ledger agrees with itself; return the common cursor seq.

    `kills` holds the seqs at which a writer was killed before (its top-up may be missing).
    """
    with Ledger(path) as ledger:
        assert ledger.check_invariant() == []
        cursors = ledger.cursors()
        seqs = {cursor.seq for cursor in cursors.values()}
        assert len(cursors) in (0, METERS)
        assert len(seqs) <= 1  # every meter's cursor moved in the same transactions
        last = seqs.pop() if seqs else 0
        assert last is not None
        for m in range(METERS):
            cursor = cursors.get(f"M{m}")
            assert cursor is None or cursor.energy_kwh == Decimal(last)
        with sqlite3.connect(path) as conn:
            keys = [row[0] for row in conn.execute("SELECT key FROM journal")]
        charged: dict[str, set[int]] = {}
        top_ups: set[int] = set()
        for key in keys:
            kind, *rest = key.split(":")
            if kind == "chg":
                charged.setdefault(rest[0], set()).add(int(rest[1]))
            else:
                top_ups.add(int(rest[0]))
        want = set(range(1, last + 1))
        for m in range(METERS):
            # No charge missing for any seq up to the cursor, none beyond it.
            assert charged.get(f"M{m}", set()) == want, m
            usage = ledger.usage(f"A{m}", "2026-01")
            assert sum((row.kwh for row in usage), Decimal(0)) == KWH * last
            assert sum((row.amount for row in usage), Decimal(0)) == -CHARGE * last
            credit = TOP_UP * len(top_ups) if m == 0 else Decimal(0)
            assert ledger.balance(f"A{m}", SubAccount.ELECTRICITY) == CHARGE * last + credit
        # A top-up is its own transaction after its batch: it may be missing only where a
        # writer was killed between the two (or just now, after the last batch).
        due = {s for s in want if s % TOP_UP_EVERY == 0}
        assert top_ups <= due
        assert due - top_ups <= kills | {last}
        return last


def test_sigkill_mid_stream_loses_nothing_and_bills_nothing_twice(tmp_path: Path) -> None:
    path = tmp_path / "community.sqlite"
    with Ledger(path) as ledger:
        for m in range(METERS):
            ledger.ensure_household(f"A{m}", f"flat {m}", 1_767_225_600)
            ledger.assign_meter(f"M{m}", f"A{m}")
    write_batch = _batch_writer()
    rng = random.Random()
    ledger_py = ledger_module.__file__
    assert ledger_py is not None
    last = 0
    kills: set[int] = set()
    for _ in range(ROUNDS):
        child = subprocess.Popen(
            [sys.executable, "-c", CHILD_SOURCE, ledger_py, str(path), str(METERS)],
            stdout=subprocess.PIPE,
            text=True,
        )
        try:
            assert child.stdout is not None
            assert child.stdout.readline().split() == ["ready", str(last)]
            time.sleep(rng.uniform(0.05, 0.4))
            assert child.poll() is None, "the writer stopped by itself"
            os.kill(child.pid, signal.SIGKILL)
        finally:
            child.kill()
            child.wait()
            if child.stdout is not None:
                child.stdout.close()
        assert child.returncode == -signal.SIGKILL
        killed_at = _check(path, kills)
        kills.add(killed_at)
        assert killed_at > last, "the child wrote nothing before it was killed"
        # Resume from the cursor, as the integration does after a crash.
        with Ledger(path) as ledger:
            for seq in range(killed_at + 1, killed_at + 4):
                write_batch(ledger_module, ledger, seq, METERS)
        last = _check(path, kills)
        assert last == killed_at + 3
