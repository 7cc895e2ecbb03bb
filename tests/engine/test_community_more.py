"""More of the live community: discovery, the daily counter, refusals, batches, cycle closing."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from decimal import Decimal
import logging
from pathlib import Path
from typing import Any
from unittest.mock import patch

import pytest

from custom_components.prepaid_meter.engine.community import Community, CommunityError, Event
from custom_components.prepaid_meter.engine.ledger import EntryKind, Ledger, LedgerError, SubAccount
from custom_components.prepaid_meter.engine.policy import PolicyConfig
from custom_components.prepaid_meter.engine.tariff import load_preset
from tests.engine.test_community import NOON, Clock, R

M1 = "000000000001"
M2 = "000000000002"
A = "b3-u2-501"
B = "b3-u2-502"
# 2026-03-10 23:59:00 and 2026-03-11 00:01:00 in Shanghai (UTC+8).
BEFORE_MIDNIGHT = int(datetime(2026, 3, 10, 15, 59, tzinfo=UTC).timestamp())
AFTER_MIDNIGHT = BEFORE_MIDNIGHT + 120
# 2026-04-01 00:00 in Shanghai: the April cycle of the Beijing monthly tariff starts.
APRIL = int(datetime(2026, 3, 31, 16, 0, tzinfo=UTC).timestamp())


@pytest.fixture
def clock() -> Clock:
    return Clock(NOON)


@pytest.fixture
def ledger(tmp_path: Path) -> Iterator[Ledger]:
    with Ledger(tmp_path / "community.sqlite3") as opened:
        yield opened


def _community(ledger: Ledger, clock: Clock, **options: Any) -> Community:
    policy = options.pop("policy", {})
    community = Community(
        ledger,
        load_preset("beijing_monthly"),
        PolicyConfig.from_options(policy),
        clock=clock,
        **options,
    )
    community.load()
    return community


def _assign(
    community: Community, meter: str = M1, account: str = A, **extra: Any
) -> dict[str, Any]:
    info = community.assign_meter(meter, account, f"Household {account}", **extra)
    community.apply_assignment(meter, info)
    return info


def _top_up(community: Community, amount: str, txn: str, account: str = A) -> list[Event]:
    return community.apply_top_up(
        community.top_up(account, Decimal(amount), txn, "wechat", actor="test")
    )


def _flush(community: Community) -> list[Event]:
    return community.apply_results(community.commit(community.take_batch()))


def _kinds(events: list[Event]) -> list[str]:
    return [e.kind for e in events]


def _charges(ledger: Ledger, account: str = A) -> list[tuple[str, Decimal]]:
    return [
        (e.key, e.amount)
        for e in ledger.entries(account, SubAccount.ELECTRICITY, limit=1000)
        if e.kind is EntryKind.CHARGE
    ]


# ---------------------------------------------------------------------------- discovery


def _announce(community: Community, meter: str = M1) -> None:
    community.handle_announce(meter, model=None, firmware=None, rated_current_a=None)


def test_announce_discovers_a_new_meter_once(ledger: Ledger, clock: Clock) -> None:
    """The first announce is new and unassigned; later ones are not new; rated current kept."""
    community = _community(ledger, clock)
    events = community.handle_announce(M1, model="DDZY", firmware="1.0", rated_current_a=40.0)
    assert _kinds(events) == ["announce", "unassigned_meter"]
    assert events[0].data == {"new": True}
    meter = community.meters[M1]
    assert (meter.model, meter.firmware, meter.rated_current_a) == ("DDZY", "1.0", 40.0)
    again = community.handle_announce(M1, model="DDZY", firmware="1.1", rated_current_a=None)
    assert again[0].data == {"new": False}
    assert meter.firmware == "1.1"
    assert meter.rated_current_a == 40.0  # an announce without it keeps the known value
    _assign(community)
    assigned = community.handle_announce(M1, model="DDZY", firmware="1.1", rated_current_a=60.0)
    assert _kinds(assigned) == ["announce"]
    assert assigned[0].account_id == A


def test_announce_of_a_meter_reporting_the_other_state_reconciles(
    ledger: Ledger, clock: Clock
) -> None:
    """A meter that comes back reporting off while on is wanted is told again."""
    community = _community(ledger, clock)
    _assign(community)
    community.handle_reading(R(M1, 1, NOON - 60, Decimal(1), relay="off"))
    events = community.handle_announce(M1, model=None, firmware=None, rated_current_a=None)
    reconcile = [e for e in events if e.kind == "reconcile"]
    assert reconcile and reconcile[0].data == {"state": "on", "reason": "in_credit"}


def test_availability_tracks_online(ledger: Ledger, clock: Clock) -> None:
    """A last will marks the meter offline; an id never announced is only counted."""
    community = _community(ledger, clock)
    assert community.handle_availability(M1, False) == [Event("unknown_meter", M1)]
    assert M1 not in community.meters
    _announce(community)
    events = community.handle_availability(M1, False)
    assert events == [Event("availability", M1, None, {"online": False})]
    assert community.meters[M1].online is False
    _assign(community)
    events = community.handle_availability(M1, True)
    assert events == [Event("availability", M1, A, {"online": True})]
    assert community.meters[M1].online is True


def test_unassigned_meter_readings_are_not_billed_later(ledger: Ledger, clock: Clock) -> None:
    """Readings before the assignment say unassigned and set the baseline; no back-billing."""
    community = _community(ledger, clock)
    _announce(community)
    events = community.handle_reading(R(M1, 1, NOON - 300, Decimal(100)))
    assert "unassigned_meter" in _kinds(events)
    events = community.handle_reading(R(M1, 2, NOON - 240, Decimal(150)))
    assert "unassigned_meter" in _kinds(events)
    _assign(community)
    community.handle_reading(R(M1, 3, NOON - 180, Decimal(160)))
    assert community.households[A].electricity == Decimal("-4.883")  # 10 kWh, not 60
    _flush(community)
    assert ledger.balance(A, SubAccount.ELECTRICITY) == Decimal("-4.883")
    assert ledger.check_invariant() == []


# ---------------------------------------------------------------------------- bad readings


def test_bad_energy_and_unknown_relay_words(ledger: Ledger, clock: Clock) -> None:
    """Negative or non-finite energy is rejected; a relay word other than on/off is ignored."""
    community = _community(ledger, clock)
    _assign(community)
    community.handle_reading(R(M1, 1, NOON - 300, Decimal(10), relay="off"))
    for seq, energy in ((2, Decimal(-1)), (3, Decimal("-Infinity")), (4, Decimal("Infinity"))):
        events = community.handle_reading(R(M1, seq, NOON - 300 + seq, energy))
        assert _kinds(events) == ["rejected"]
        assert events[0].data == {"reason": "bad_energy"}
    community.handle_reading(R(M1, 5, NOON - 200, Decimal(10), relay="tripped"))
    meter = community.meters[M1]
    assert meter.rejected == {"bad_energy": 3}
    assert meter.reported_relay == "off"  # unchanged by the unknown word
    assert meter.energy_kwh == Decimal(10)


def test_nan_energy_is_rejected_as_bad_energy(
    ledger: Ledger, clock: Clock, caplog: pytest.LogCaptureFixture
) -> None:
    """A NaN register is a counted bad_energy rejection, not an error with a traceback."""
    community = _community(ledger, clock)
    _assign(community)
    events = community.handle_reading(R(M1, 1, NOON - 60, Decimal("NaN")))
    assert _kinds(events) == ["rejected"]
    assert community.meters[M1].rejected == {"bad_energy": 1}
    assert "could not be handled" not in caplog.text


def test_rejections_are_logged_once_per_kind(
    ledger: Ledger, clock: Clock, caplog: pytest.LogCaptureFixture
) -> None:
    """A meter sending the same bad reading again and again is logged once, counted always."""
    caplog.set_level(logging.WARNING)
    community = _community(ledger, clock)
    _announce(community)
    for _ in range(5):
        community.handle_reading(R(M1, 1, NOON + 3600, Decimal(1)))
    assert community.meters[M1].rejected == {"future_ts": 5}
    assert caplog.text.count("future_ts") == 1


def test_a_reading_that_breaks_the_handler_is_dropped(
    ledger: Ledger, clock: Clock, caplog: pytest.LogCaptureFixture
) -> None:
    """An unexpected error inside the handler is logged; nothing is raised to the caller."""
    community = _community(ledger, clock)
    _announce(community)
    broken = R(M1, 1, NOON - 60, None)  # type: ignore[arg-type]
    assert community.handle_reading(broken) == []
    assert "could not be handled" in caplog.text
    community.handle_reading(R(M1, 2, NOON - 30, Decimal(1)))
    assert community.meters[M1].energy_kwh == Decimal(1)


# ---------------------------------------------------------------------------- alarms


def test_arc_fault_cuts_for_safety_once(ledger: Ledger, clock: Clock) -> None:
    """An arc fault alarms and cuts; a second one while off alarms again but cuts nothing."""
    community = _community(ledger, clock)
    _assign(community)
    _top_up(community, "100", "t1")
    events = community.handle_reading(R(M1, 1, NOON - 120, Decimal(1), events=("arc_fault",)))
    assert [e.data["type"] for e in events if e.kind == "alarm"] == ["arc_fault"]
    cuts = [e for e in events if e.kind == "supply_cut"]
    assert [(c.data["reason"], c.data["actor"]) for c in cuts] == [("arc_fault", "system")]
    events = community.handle_reading(R(M1, 2, NOON - 60, Decimal(2), events=("arc_fault",)))
    assert "supply_cut" not in _kinds(events)
    assert "alarm" in _kinds(events)


def test_arc_fault_of_a_protected_household_is_deferred(ledger: Ledger, clock: Clock) -> None:
    """A protected household (e.g. medical equipment) is reported, not cut."""
    community = _community(ledger, clock)
    _assign(community, supply_protected=True)
    events = community.handle_reading(R(M1, 1, NOON - 60, Decimal(1), events=("arc_fault",)))
    deferred = [e for e in events if e.kind == "supply_cut_deferred"]
    assert [d.data for d in deferred] == [{"reason": "supply_protected", "cause": "arc_fault"}]
    assert community.meters[M1].desired_relay == "on"


def test_protective_cut_can_be_disabled(ledger: Ledger, clock: Clock) -> None:
    """With protective cuts off, an arc fault is only an alarm."""
    community = _community(ledger, clock, protective_cut=False)
    _assign(community)
    _top_up(community, "100", "t1")
    events = community.handle_reading(R(M1, 1, NOON - 60, Decimal(1), events=("arc_fault",)))
    assert "alarm" in _kinds(events)
    assert "supply_cut" not in _kinds(events)


def test_overcurrent_event_and_missing_current(ledger: Ledger, clock: Clock) -> None:
    """The meter's own overcurrent event alarms once; readings without currents skip checks."""
    community = _community(ledger, clock)
    _assign(community)
    _top_up(community, "100", "t1")
    no_current = {"current_a": None, "neutral_current_a": None}
    events = community.handle_reading(
        R(M1, 1, NOON - 120, Decimal(1), events=("overcurrent",), **no_current)
    )
    assert [e.data["type"] for e in events if e.kind == "alarm"] == ["overload"]
    events = community.handle_reading(
        R(M1, 2, NOON - 90, Decimal(2), events=("overcurrent",), **no_current)
    )
    assert "alarm" not in _kinds(events)  # the same episode
    events = community.handle_reading(
        R(M1, 3, NOON - 60, Decimal(3), current_a=None, neutral_current_a=None, power_w=None)
    )
    assert "alarm" not in _kinds(events)
    meter = community.meters[M1]
    assert meter.overload_alarm is True  # no current: nothing says the overload ended
    assert meter.last_active_ts == NOON - 90  # a reading without power changes nothing


def test_quiet_home_starts_the_inactivity_clock(ledger: Ledger, clock: Clock) -> None:
    """The first reading, even at low power, starts the clock the inactivity alarm uses."""
    community = _community(ledger, clock, inactivity_hours=1)
    _assign(community)
    community.handle_reading(R(M1, 1, NOON - 7200, Decimal(1), power_w=50.0))
    assert community.meters[M1].last_active_ts == NOON - 7200
    events = community.handle_reading(R(M1, 2, NOON - 3000, Decimal(2), power_w=50.0))
    inactivity = [e for e in events if e.kind == "inactivity"]
    assert [e.data["hours"] for e in inactivity] == [1.2]
    events = community.handle_reading(R(M1, 3, NOON - 60, Decimal(3), power_w=1200.0))
    assert "inactivity" not in _kinds(events)
    assert community.meters[M1].inactive_alarm is False


# ---------------------------------------------------------------------------- the daily counter


def test_tick_resets_todays_top_ups_at_local_midnight(ledger: Ledger, clock: Clock) -> None:
    """Top-ups today count until local midnight (Asia/Shanghai), then start from zero."""
    clock.now = BEFORE_MIDNIGHT
    community = _community(ledger, clock)
    _assign(community)
    _top_up(community, "30", "t1")
    assert community.tick() == []
    assert community.top_ups_today == Decimal(30)
    clock.now = BEFORE_MIDNIGHT + 59
    community.tick()
    assert community.top_ups_today == Decimal(30)
    clock.now = AFTER_MIDNIGHT
    community.tick()
    assert community.top_ups_today == 0
    assert community.totals()["top_ups_today"] == 0
    # A restart recounts today's top-ups from the ledger.
    _top_up(community, "12", "t2")
    assert _community(ledger, clock).top_ups_today == Decimal(12)


def test_top_up_just_after_midnight_counts_for_the_new_day(ledger: Ledger, clock: Clock) -> None:
    """A top-up at 00:01, before the minute tick, is part of the new day's total."""
    clock.now = BEFORE_MIDNIGHT
    community = _community(ledger, clock)
    _assign(community)
    _top_up(community, "30", "t1")
    clock.now = AFTER_MIDNIGHT
    _top_up(community, "20", "t2")
    community.tick()
    assert community.top_ups_today == Decimal(20)


# ---------------------------------------------------------------------------- supply requests


def test_request_relay_refusals_and_manual_cut(ledger: Ledger, clock: Clock) -> None:
    """Unknown meters are refused; off always works and names the actor."""
    community = _community(ledger, clock)
    with pytest.raises(CommunityError) as info:
        community.request_relay("nope", "off", actor="operator:x")
    assert (info.value.key, info.value.placeholders) == ("unknown_meter", {"meter_id": "nope"})
    _assign(community)
    _top_up(community, "50", "t1")
    events = community.request_relay(M1, "off", actor="operator:ops")
    cut = next(e for e in events if e.kind == "supply_cut")
    assert cut.data == {
        "state": "off",
        "reason": "manual",
        "actor": "operator:ops",
        "balance": "50",
        "household": f"Household {A}",
    }
    assert community.totals()["supplies_cut"] == 1
    # A manual cut is not undone by a top-up, even with automatic restore.
    assert community.restore_candidates(A) == []
    assert community.restore_candidates("nobody") == []
    # An unassigned meter has no credit: only an operator's override switches it on.
    community.handle_announce(M2, model=None, firmware=None, rated_current_a=None)
    community.request_relay(M2, "off", actor="operator:ops")
    with pytest.raises(CommunityError):
        community.request_relay(M2, "on", actor="resident")
    events = community.request_relay(M2, "on", actor="operator:ops", operator_override=True)
    assert [e.data["reason"] for e in events if e.kind == "supply_restored"] == [
        "operator_override"
    ]


def test_can_restore(ledger: Ledger, clock: Clock) -> None:
    """The restore button is offered only for a cut, assigned meter whose balance allows it."""
    community = _community(ledger, clock)
    assert community.can_restore("nope") is False
    community.handle_announce(M2, model=None, firmware=None, rated_current_a=None)
    community.request_relay(M2, "off", actor="operator:ops")
    assert community.can_restore(M2) is False  # unassigned
    _assign(community)
    assert community.can_restore(M1) is False  # on already
    community.request_relay(M1, "off", actor="operator:ops")
    assert community.can_restore(M1) is False  # no credit
    _top_up(community, "10", "t1")
    assert community.can_restore(M1) is True
    community.meters[M1].account_id = "vanished"
    assert community.can_restore(M1) is False


# ---------------------------------------------------------------------------- money


def test_post_money_errors(ledger: Ledger, clock: Clock) -> None:
    """Every refused money movement names its reason and writes nothing."""
    community = _community(ledger, clock)
    _assign(community)
    cases: list[tuple[EntryKind, SubAccount, str, str, str]] = [
        (EntryKind.ADJUSTMENT, SubAccount.ELECTRICITY, "0", "a1", "invalid_amount"),
        (EntryKind.ADJUSTMENT, SubAccount.ELECTRICITY, "-100001", "a2", "invalid_amount"),
        (EntryKind.FEE, SubAccount.PROPERTY_FEE, "-5", "f1", "invalid_amount"),
        (EntryKind.PAYMENT, SubAccount.PROPERTY_FEE, "0.001", "p1", "invalid_amount"),
        (EntryKind.ADJUSTMENT, SubAccount.ELECTRICITY, "5", "   ", "invalid_transaction"),
    ]
    for kind, sub, amount, txn, key in cases:
        with pytest.raises(CommunityError) as info:
            community.post_money(A, sub, kind, Decimal(amount), txn, actor="op")
        assert info.value.key == key, (kind, amount)
    with pytest.raises(CommunityError) as info:
        community.post_money(
            "nobody", SubAccount.PROPERTY_FEE, EntryKind.FEE, Decimal(5), "f2", actor="op"
        )
    assert info.value.key == "unknown_household"
    with pytest.raises(CommunityError) as info:
        community.top_up(A, Decimal(5), " ", "cash", actor="op")
    assert info.value.key == "invalid_transaction"
    assert ledger.entries(A) == []
    result = community.post_money(
        A, SubAccount.PROPERTY_FEE, EntryKind.FEE, Decimal(5), "f3", actor="op", meta=None
    )
    assert result.results[0].balance_after == Decimal(-5)
    with pytest.raises(CommunityError) as info:
        community.post_money(
            A, SubAccount.PROPERTY_FEE, EntryKind.FEE, Decimal(6), "f3", actor="op"
        )
    assert info.value.key == "duplicate_transaction_conflict"
    with (
        patch.object(ledger, "post", side_effect=LedgerError("The disk is full.")),
        pytest.raises(CommunityError) as info,
    ):
        community.post_money(
            A, SubAccount.PROPERTY_FEE, EntryKind.FEE, Decimal(5), "f4", actor="op"
        )
    assert (info.value.key, info.value.placeholders) == (
        "ledger_error",
        {"error": "The disk is full."},
    )
    assert ledger.check_invariant() == []


def test_top_up_for_a_household_not_in_memory(ledger: Ledger, clock: Clock) -> None:
    """A top-up written for a household the live state does not hold changes no live state."""
    community = _community(ledger, clock)
    ledger.ensure_household(B, "elsewhere", NOON)
    result = community.top_up(B, Decimal(10), "t-b", "cash", actor="op")
    events = community.apply_top_up(result)
    assert "account" not in _kinds(events)
    assert B not in community.households
    assert community.top_ups_today == Decimal(10)


def test_duplicate_top_up_does_not_count_twice_today(ledger: Ledger, clock: Clock) -> None:
    """The same transaction delivered twice adds once to today's total."""
    community = _community(ledger, clock)
    _assign(community)
    _top_up(community, "25", "same")
    _top_up(community, "25", "same")
    assert community.top_ups_today == Decimal(25)


def test_assign_to_a_household_that_has_a_meter(ledger: Ledger, clock: Clock) -> None:
    """One meter per household: a second is refused; the same meter again is fine."""
    community = _community(ledger, clock)
    _assign(community)
    with pytest.raises(CommunityError) as info:
        community.assign_meter(M2, A, "Household")
    assert (info.value.key, info.value.placeholders) == (
        "household_has_meter",
        {"household": A, "meter_id": M1},
    )
    assert ledger.meter_account(M2) is None
    info_again = _assign(community, supply_protected=True)
    assert info_again["supply_protected"] is True
    assert community.households[A].supply_protected is True
    # Assigning again with a new label keeps the household and updates nothing else.
    community.apply_assignment(M1, {**info_again, "label": "Renamed"})
    assert community.households[A].label == "Renamed"


def test_statement_for_an_unknown_household(ledger: Ledger, clock: Clock) -> None:
    """A statement needs a household the ledger knows."""
    community = _community(ledger, clock)
    with pytest.raises(CommunityError) as info:
        community.statement("nobody", "2026-03")
    assert (info.value.key, info.value.placeholders) == (
        "unknown_household",
        {"household": "nobody"},
    )
    _assign(community)
    empty = community.statement(A, "2026-03")
    assert empty["closed"] is False
    assert empty["currency"] == "CNY"
    assert Decimal(empty["total"]) == 0


# ---------------------------------------------------------------------------- batches


def test_meter_moved_to_another_household_within_one_batch(ledger: Ledger, clock: Clock) -> None:
    """Each household pays for what was used while the meter was theirs, in one commit."""
    community = _community(ledger, clock)
    _assign(community)
    community.handle_reading(R(M1, 1, NOON - 300, Decimal(100)))
    community.handle_reading(R(M1, 2, NOON - 240, Decimal(110)))
    ledger.assign_meter(M1, None)
    _assign(community, account=B)
    community.handle_reading(R(M1, 3, NOON - 180, Decimal(111)))
    community.handle_reading(R(M1, 4, NOON - 120, Decimal(120)))
    _flush(community)
    assert _charges(ledger, A) == [(f"charge:{M1}:2", Decimal("-4.883"))]
    assert _charges(ledger, B) == [(f"charge:{M1}:4", Decimal("-4.883"))]
    assert community.households[A].electricity == Decimal("-4.883")
    assert community.households[B].electricity == Decimal("-4.883")
    assert ledger.check_invariant() == []


def test_failed_batch_merges_with_the_next(ledger: Ledger, clock: Clock) -> None:
    """A batch put back after a failed commit joins later charges of the same or a new owner."""
    community = _community(ledger, clock)
    _assign(community)
    community.handle_reading(R(M1, 1, NOON - 300, Decimal(100)))
    community.handle_reading(R(M1, 2, NOON - 290, Decimal(101)))
    failed = community.take_batch()
    community.handle_reading(R(M1, 3, NOON - 280, Decimal(102)))
    community.restore_batch(failed)  # same household: one entry from seq 2 to seq 3
    _flush(community)
    assert _charges(ledger, A) == [(f"charge:{M1}:3", Decimal("-0.9766"))]
    entry = ledger.entry_by_key(f"charge:{M1}:3")
    assert entry is not None and entry.meta["first_seq"] == 2

    community.handle_reading(R(M1, 4, NOON - 270, Decimal(103)))
    failed = community.take_batch()
    ledger.assign_meter(M1, None)
    _assign(community, account=B)
    community.handle_reading(R(M1, 5, NOON - 260, Decimal(104)))
    community.restore_batch(failed)  # another household: kept apart
    _flush(community)
    assert _charges(ledger, A)[0] == (f"charge:{M1}:4", Decimal("-0.4883"))
    assert _charges(ledger, B) == [(f"charge:{M1}:5", Decimal("-0.4883"))]
    assert community.households[A].electricity == ledger.balance(A, SubAccount.ELECTRICITY)
    assert community.households[B].electricity == ledger.balance(B, SubAccount.ELECTRICITY)
    assert ledger.check_invariant() == []


def test_stale_ledger_results_do_not_roll_balances_back(ledger: Ledger, clock: Clock) -> None:
    """A result older than what the live state has seen is not applied again."""
    community = _community(ledger, clock)
    _assign(community)
    old = community.top_up(A, Decimal(10), "t1", "cash", actor="op")
    newer = community.top_up(A, Decimal(5), "t2", "cash", actor="op")
    community.apply_top_up(newer)
    community.apply_top_up(old)
    assert community.households[A].electricity == Decimal(15)


# ---------------------------------------------------------------------------- cycles


def test_cycle_without_usage_closes_without_statement(ledger: Ledger, clock: Clock) -> None:
    """A month in which nothing was used has no statement to settle when it ends."""
    clock.now = APRIL + 3600
    community = _community(ledger, clock)
    _assign(community)
    community.handle_reading(R(M1, 1, APRIL - 7200, Decimal(100)))
    _flush(community)
    restarted = _community(ledger, clock)
    assert restarted.meters[M1].billing.cycle == "2026-03"
    restarted.handle_reading(R(M1, 2, APRIL + 600, Decimal(100)))
    events = _flush(restarted)
    assert "cycle_closed" not in _kinds(events)
    assert ledger.statement(A, "2026-03") is None
    assert restarted.meters[M1].billing.cycle == "2026-04"
    assert ledger.check_invariant() == []


def test_cycle_closing_is_reported(ledger: Ledger, clock: Clock) -> None:
    """Crossing into April settles March and says so, with March's statement total."""
    clock.now = APRIL + 3600
    community = _community(ledger, clock)
    _assign(community)
    community.handle_reading(R(M1, 1, APRIL - 7200, Decimal(100)))
    community.handle_reading(R(M1, 2, APRIL - 3600, Decimal(110)))
    community.handle_reading(R(M1, 3, APRIL + 600, Decimal(110)))
    events = _flush(community)
    closed = [e for e in events if e.kind == "cycle_closed"]
    assert [(e.account_id, e.data) for e in closed] == [(A, {"cycle": "2026-03", "total": "4.88"})]
    statement = community.statement(A, "2026-03")
    assert statement["closed"] is True
    assert community.meters[M1].cycle_started_ts == APRIL + 600


def _fail_close_once(ledger: Ledger) -> Any:
    real = ledger.close_cycle
    calls: list[int] = []

    def close_cycle(*args: Any, **kwargs: Any) -> Any:
        calls.append(1)
        if len(calls) == 1:
            raise LedgerError("database is locked")
        return real(*args, **kwargs)

    return patch.object(ledger, "close_cycle", side_effect=close_cycle)


def test_failed_cycle_close_is_logged(
    ledger: Ledger, clock: Clock, caplog: pytest.LogCaptureFixture
) -> None:
    """A cycle that cannot be settled is logged; the charges themselves are committed."""
    clock.now = APRIL + 3600
    community = _community(ledger, clock)
    _assign(community)
    community.handle_reading(R(M1, 1, APRIL - 7200, Decimal(100)))
    community.handle_reading(R(M1, 2, APRIL - 3600, Decimal(110)))
    community.handle_reading(R(M1, 3, APRIL + 600, Decimal(111)))
    with _fail_close_once(ledger):
        events = _flush(community)
    assert "cycle_closed" not in _kinds(events)
    assert "could not be settled" in caplog.text
    assert ledger.cursor(M1) is not None
    assert ledger.balance(A, SubAccount.ELECTRICITY) == Decimal("-5.3713")
    assert ledger.check_invariant() == []


def test_failed_cycle_close_is_retried(ledger: Ledger, clock: Clock) -> None:
    """After a failed settlement the next commit settles the cycle."""
    clock.now = APRIL + 3600
    community = _community(ledger, clock)
    _assign(community)
    community.handle_reading(R(M1, 1, APRIL - 7200, Decimal(100)))
    community.handle_reading(R(M1, 2, APRIL - 3600, Decimal(110)))
    community.handle_reading(R(M1, 3, APRIL + 600, Decimal(111)))
    with _fail_close_once(ledger):
        _flush(community)
        community.handle_reading(R(M1, 4, APRIL + 1200, Decimal(112)))
        _flush(community)
        _flush(community)
    assert ledger.statement(A, "2026-03") is not None


# ---------------------------------------------------------------------------- what entities show


def test_entity_views_of_an_unassigned_meter(ledger: Ledger, clock: Clock) -> None:
    """An unassigned meter has no balance, no days left and no account payload."""
    community = _community(ledger, clock)
    _announce(community)
    community.handle_reading(R(M1, 1, NOON - 60, Decimal(1)))
    meter = community.meters[M1]
    assert community.balance(meter) is None
    assert community.days_left(meter) is None
    assert community.account_payload(meter) is None
    assert meter.cursor() is not None
    community.handle_announce(M2, model=None, firmware=None, rated_current_a=None)
    assert community.meters[M2].cursor() is None  # no reading yet


def test_days_left_and_account_payload(ledger: Ledger, clock: Clock) -> None:
    """Days left follow this cycle's spending rate; the account payload shows the household."""
    community = _community(ledger, clock)
    _assign(community)
    _top_up(community, "100", "t1")
    community.handle_reading(R(M1, 1, NOON - 7200, Decimal(100)))
    community.handle_reading(R(M1, 2, NOON - 7000, Decimal(101)))
    meter = community.meters[M1]
    assert community.days_left(meter) is None  # under an hour of history
    community.handle_reading(R(M1, 3, NOON, Decimal(110)))
    # 10 kWh (4.883) in 2 hours: 58.596 a day; 95.117 / 58.596 = 1.62 -> 1.6
    assert community.days_left(meter) == Decimal("1.6")
    payload = community.account_payload(meter)
    assert payload is not None
    assert payload["balance"] == "95.12"
    assert payload["low"] is False
    assert payload["cycle"] == "2026-03"
    assert payload["cycle_kwh"] == "10.000"
    assert payload["price"] == "0.4883"
    assert payload["updated"] == NOON
