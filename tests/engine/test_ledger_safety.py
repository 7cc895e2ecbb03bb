"""The ledger's safety tables (migration 6): settings and acknowledgements are append-only
journals with the actor; the watch's state is one row, replaced."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
import sqlite3

import pytest

from custom_components.prepaid_meter.engine.ledger import (
    Ledger,
    LedgerError,
    SafetyAck,
    SafetySetting,
)

T0 = 1_775_000_000
OPS = "operator|u-ops|Ops"


@pytest.fixture
def ledger(tmp_path: Path) -> Iterator[Ledger]:
    with Ledger(tmp_path / "l.sqlite3") as opened:
        opened.ensure_household("A1", "Flat 1", T0)
        yield opened


def test_settings_newest_wins_and_a_repeat_writes_nothing(ledger: Ledger) -> None:
    care = SafetySetting("household", "A1", {"care": True}, OPS, T0)
    assert ledger.record_safety_setting(care) is True
    assert ledger.record_safety_setting(care) is False
    area = SafetySetting("area", "b3", {"master": "m0", "members": ["m1"]}, OPS, T0 + 1)
    assert ledger.record_safety_setting(area) is True
    assert ledger.safety_settings("household") == {"A1": {"care": True}}
    assert ledger.safety_settings("area") == {"b3": {"master": "m0", "members": ["m1"]}}
    ledger.record_safety_setting(SafetySetting("area", "b3", {}, OPS, T0 + 2))
    assert ledger.safety_settings("area") == {}  # cleared
    assert [(h.subject, h.key, h.ts) for h in ledger.safety_history()] == [
        ("household", "A1", T0),
        ("area", "b3", T0 + 1),
        ("area", "b3", T0 + 2),
    ]


@pytest.mark.parametrize(
    ("setting", "words"),
    [
        (SafetySetting("household", "nobody", {"care": True}, OPS, T0), "Unknown account"),
        (SafetySetting("person", "A1", {}, OPS, T0), "Unknown safety setting subject"),
        (SafetySetting("household", "A1", {"x": object()}, OPS, T0), "not JSON data"),
        (SafetySetting("household", "A1", {"care": True}, "", T0), "actor"),
        (SafetySetting("household", "A1", {"care": True}, OPS, -1), "UNIX seconds"),
    ],
)
def test_bad_settings_are_refused_and_write_nothing(
    ledger: Ledger, setting: SafetySetting, words: str
) -> None:
    with pytest.raises(LedgerError, match=words):
        ledger.record_safety_setting(setting)
    assert ledger.safety_history() == []


def test_acknowledgements_and_state(ledger: Ledger, tmp_path: Path) -> None:
    ack = SafetyAck("m1", "A1", "tamper", T0, OPS, T0 + 60)
    ledger.record_safety_ack(ack)
    ledger.record_safety_ack(SafetyAck("m0", None, "line_loss", T0, OPS, T0 + 90))
    assert ledger.safety_acks("m1") == [ack]
    assert len(ledger.safety_acks()) == 2
    assert ledger.safety_state() is None
    ledger.save_safety_state('{"version": 1}', T0)
    ledger.save_safety_state('{"version": 1, "meters": {}}', T0 + 1)
    assert ledger.safety_state() == '{"version": 1, "meters": {}}'
    ledger.record_safety_setting(SafetySetting("household", "A1", {"vacant": True}, OPS, T0))
    with sqlite3.connect(tmp_path / "l.sqlite3") as conn:
        for sql in ("UPDATE safety_acks SET actor = 'x'", "DELETE FROM safety_settings"):
            with pytest.raises(sqlite3.IntegrityError, match="append-only"):
                conn.execute(sql)
