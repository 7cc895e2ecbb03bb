"""The live community: discovery, readings to charges, cuts and restores, alarms, money, cycles."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
import json
import logging
from pathlib import Path
from typing import Any
from unittest.mock import patch

import pytest

from custom_components.prepaid_meter.engine.actor import Actor
from custom_components.prepaid_meter.engine.community import Community, CommunityError, Event
from custom_components.prepaid_meter.engine.ledger import (
    EntryKind,
    Ledger,
    LedgerError,
    SubAccount,
    SupplyChange,
)
from custom_components.prepaid_meter.engine.policy import PolicyConfig
from custom_components.prepaid_meter.engine.safety import SafetyRules
from custom_components.prepaid_meter.engine.tariff import load_preset

# Tuesday 2026-03-10 12:00 in Shanghai: not friendly hours, not a weekend.
NOON = int(datetime(2026, 3, 10, 4, 0, tzinfo=UTC).timestamp())
# Tuesday 2026-03-10 20:00 in Shanghai: friendly hours.
EVENING = NOON + 8 * 3600
# 2026-03-10 23:59:00 and 2026-03-11 00:01:00 in Shanghai (UTC+8).
BEFORE_MIDNIGHT = int(datetime(2026, 3, 10, 15, 59, tzinfo=UTC).timestamp())
AFTER_MIDNIGHT = BEFORE_MIDNIGHT + 120
# 2026-04-01 00:00 in Shanghai: the April cycle of the Beijing monthly tariff starts.
APRIL = int(datetime(2026, 3, 31, 16, 0, tzinfo=UTC).timestamp())

M1 = "000000000001"
M2 = "000000000002"
A = "b3-u2-501"
B = "b3-u2-502"
OPS = Actor("operator", user_id="u-ops", name="Ops")
ALICE = Actor("resident", user_id="u-alice", name="Alice")


@dataclass(frozen=True)
class R:
    """A reading as the protocol delivers it."""

    meter_id: str
    seq: int | None
    ts: int
    energy_kwh: Decimal
    power_w: float | None = 500.0
    voltage_v: float | None = 230.0
    current_a: float | None = 2.0
    neutral_current_a: float | None = 2.0
    relay: str | None = "on"
    events: tuple[str, ...] = field(default_factory=tuple)


class Clock:
    """A settable clock."""

    def __init__(self, now: int) -> None:
        self.now = float(now)

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock(NOON)


@pytest.fixture
def ledger(tmp_path: Path) -> Iterator[Ledger]:
    with Ledger(tmp_path / "community.sqlite3") as opened:
        yield opened


def _community(
    ledger: Ledger, clock: Clock, *, policy: dict[str, Any] | None = None, **options: Any
) -> Community:
    """Return a loaded community on the Beijing monthly tariff.

    `policy` holds the policy options; other keywords go to `Community` itself.
    """
    community = Community(
        ledger,
        load_preset("beijing_monthly"),
        PolicyConfig.from_options(policy or {}),
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
        community.top_up(account, Decimal(amount), txn, "wechat", actor=OPS)
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


def _announce(community: Community, meter: str = M1) -> None:
    community.handle_announce(meter, model=None, firmware=None, rated_current_a=None)


# ---------------------------------------------------------------------------- readings and charges


def test_reading_charges_balance_and_survives_restart(ledger: Ledger, clock: Clock) -> None:
    """Two readings 10 kWh apart charge 10 x 0.4883; the charge is durable once committed."""
    community = _community(ledger, clock)
    _assign(community)
    _top_up(community, "100", "tx-1")
    community.handle_reading(R("000000000001", 1, NOON - 3600, Decimal("100.000")))
    community.handle_reading(R("000000000001", 2, NOON, Decimal("110.000")))
    household = community.households["b3-u2-501"]
    assert household.electricity == Decimal("100") - Decimal("4.883")
    _flush(community)
    assert ledger.balance("b3-u2-501", SubAccount.ELECTRICITY) == Decimal("95.117")
    assert household.electricity == Decimal("95.117")
    assert ledger.check_invariant() == []

    restarted = _community(ledger, clock)
    meter = restarted.meters["000000000001"]
    assert meter.billing.cycle == "2026-03"
    assert meter.billing.cycle_kwh == Decimal(10)
    # The same reading delivered again after the restart is a duplicate.
    restarted.handle_reading(R("000000000001", 2, NOON, Decimal("110.000")))
    assert restarted.meters["000000000001"].rejected == {"duplicate": 1}
    _flush(restarted)
    assert ledger.balance("b3-u2-501", SubAccount.ELECTRICITY) == Decimal("95.117")


def test_register_reset_is_a_new_baseline(ledger: Ledger, clock: Clock) -> None:
    """A register that goes down bills nothing and is reported."""
    community = _community(ledger, clock)
    _assign(community)
    community.handle_reading(R("000000000001", 1, NOON - 120, Decimal(500)))
    events = community.handle_reading(R("000000000001", 2, NOON - 60, Decimal(1)))
    assert "register_reset" in _kinds(events)
    community.handle_reading(R("000000000001", 3, NOON, Decimal(2)))
    assert community.households["b3-u2-501"].electricity == Decimal("-0.4883")


def test_seq_restart_with_clock_forward_is_accepted(ledger: Ledger, clock: Clock) -> None:
    """A meter that lost its counter (seq back, ts forward) keeps being billed."""
    community = _community(ledger, clock)
    _assign(community)
    community.handle_reading(R("000000000001", 900, NOON - 120, Decimal(10)))
    community.handle_reading(R("000000000001", 1, NOON - 60, Decimal(20)))
    assert community.households["b3-u2-501"].electricity == Decimal("-4.883")
    assert community.meters["000000000001"].rejected == {"seq_restart": 1}


# ---------------------------------------------------------------------------- discovery


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


def test_bad_readings_are_counted_and_change_nothing(ledger: Ledger, clock: Clock) -> None:
    """Future timestamps, older timestamps and repeated seqs bill nothing."""
    community = _community(ledger, clock)
    _assign(community)
    community.handle_reading(R("000000000001", 5, NOON - 60, Decimal(100)))
    community.handle_reading(R("000000000001", 6, NOON + 3600, Decimal(200)))
    community.handle_reading(R("000000000001", 7, NOON - 120, Decimal(200)))
    community.handle_reading(R("000000000001", 5, NOON - 60, Decimal(100)))
    meter = community.meters["000000000001"]
    assert meter.rejected == {"future_ts": 1, "old_ts": 1, "duplicate": 1}
    assert community.households["b3-u2-501"].electricity == 0


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
    # A register the gate refuses is counted, not an error.
    assert community.handle_reading(R(M1, 1, NOON - 90, None))[0].kind == "rejected"  # type: ignore[arg-type]
    # A current that is not a number passes the gate and breaks the safety watch.
    broken = R(M1, 1, NOON - 60, Decimal(0), current_a="x")  # type: ignore[arg-type]
    assert community.handle_reading(broken) == []
    assert "could not be handled" in caplog.text
    community.handle_reading(R(M1, 2, NOON - 30, Decimal(1)))
    assert community.meters[M1].energy_kwh == Decimal(1)


# ---------------------------------------------------------------------------- cuts and restores


def test_credit_exhausted_cuts_outside_friendly_hours(ledger: Ledger, clock: Clock) -> None:
    """Below minus the emergency credit the relay goes off, with its reason."""
    community = _community(ledger, clock, policy={"emergency_credit": "10"})
    _assign(community)
    _top_up(community, "10", "tx-1")
    community.handle_reading(R("000000000001", 1, NOON - 7200, Decimal(0)))
    events = community.handle_reading(R("000000000001", 2, NOON - 3600, Decimal(30)))
    assert "low_balance" in _kinds(events)
    assert "supply_cut" not in _kinds(events)  # 10 - 14.649 is within the emergency credit
    events = community.handle_reading(R("000000000001", 3, NOON, Decimal(50)))
    cut = [e for e in events if e.kind == "supply_cut"]
    assert cut and cut[0].data["reason"] == "credit_exhausted"
    assert community.meters["000000000001"].desired_relay == "off"
    assert "reconcile" in _kinds(events)  # the meter still reports on


def test_friendly_hours_defer_the_cut(ledger: Ledger, clock: Clock) -> None:
    """At 20:00 the household runs into debt instead; the cut comes when the window ends."""
    clock.now = EVENING
    community = _community(ledger, clock)
    _assign(community)
    community.handle_reading(R("000000000001", 1, EVENING - 60, Decimal(0)))
    events = community.handle_reading(R("000000000001", 2, EVENING, Decimal(100)))
    deferred = [e for e in events if e.kind == "supply_cut_deferred"]
    assert deferred and deferred[0].data["reason"] == "friendly_hours"
    assert community.meters["000000000001"].desired_relay == "on"
    clock.now = NOON + 86400  # Wednesday noon
    assert "supply_cut" in _kinds(community.tick())


def test_protected_household_is_never_cut(ledger: Ledger, clock: Clock) -> None:
    """A supply-protected household runs into debt and is reported."""
    community = _community(ledger, clock)
    info = community.assign_meter("000000000001", "b1-101", "Bldg 1 / 101", supply_protected=True)
    community.apply_assignment("000000000001", info)
    community.handle_reading(R("000000000001", 1, NOON - 60, Decimal(0)))
    events = community.handle_reading(R("000000000001", 2, NOON, Decimal(1000)))
    assert "supply_cut" not in _kinds(events)
    assert [e.data["reason"] for e in events if e.kind == "supply_cut_deferred"] == [
        "supply_protected"
    ]


def test_fee_arrears_never_cut(ledger: Ledger, clock: Clock) -> None:
    """A property fee far in arrears leaves the electricity supply alone."""
    community = _community(ledger, clock)
    _assign(community)
    _top_up(community, "50", "tx-1")
    result = community.post_money(
        "b3-u2-501",
        SubAccount.PROPERTY_FEE,
        EntryKind.FEE,
        Decimal("5000"),
        "fee-2026-03",
        actor=OPS,
    )
    community.apply_results(result)
    community.handle_reading(R("000000000001", 1, NOON - 60, Decimal(0)))
    events = community.handle_reading(R("000000000001", 2, NOON, Decimal(1)))
    assert "supply_cut" not in _kinds(events)
    assert community.households["b3-u2-501"].balances[SubAccount.PROPERTY_FEE] == Decimal(-5000)
    assert community.totals()["arrears"][SubAccount.PROPERTY_FEE] == 1


def test_restore_after_top_up(ledger: Ledger, clock: Clock) -> None:
    """Restore is refused while in debt, allowed after a top-up clears it; not automatic."""
    community = _community(ledger, clock)
    _assign(community)
    community.handle_reading(R("000000000001", 1, NOON - 60, Decimal(0)))
    community.handle_reading(R("000000000001", 2, NOON, Decimal(100)))
    assert community.meters["000000000001"].desired_relay == "off"
    with pytest.raises(CommunityError) as info:
        community.request_relay("000000000001", "on", actor=ALICE)
    assert info.value.key == "credit_exhausted_restore_refused"
    events = _top_up(community, "100", "tx-2")
    assert "supply_restored" not in _kinds(events)
    assert community.can_restore("000000000001")
    events = community.request_relay("000000000001", "on", actor=ALICE)
    restored = [e.data for e in events if e.kind == "supply_restored"]
    assert [(d["actor"], d["actor_kind"], d["actor_user_id"]) for d in restored] == [
        ("Alice", "resident", "u-alice")
    ]


def test_auto_restore_option(ledger: Ledger, clock: Clock) -> None:
    """With auto_restore a top-up that clears the debt restores the supply."""
    community = _community(ledger, clock, policy={"auto_restore": True})
    _assign(community)
    community.handle_reading(R("000000000001", 1, NOON - 60, Decimal(0)))
    community.handle_reading(R("000000000001", 2, NOON, Decimal(100)))
    assert "supply_restored" in _kinds(_top_up(community, "100", "tx-2"))


def test_operator_override(ledger: Ledger, clock: Clock) -> None:
    """Only an operator may restore supply with credit exhausted."""
    community = _community(ledger, clock)
    _assign(community)
    community.handle_reading(R("000000000001", 1, NOON - 60, Decimal(0)))
    community.handle_reading(R("000000000001", 2, NOON, Decimal(100)))
    with pytest.raises(CommunityError):
        community.request_relay("000000000001", "on", actor=ALICE, operator_override=True)
    events = community.request_relay("000000000001", "on", actor=OPS, operator_override=True)
    assert [e.data["reason"] for e in events if e.kind == "supply_restored"] == [
        "operator_override"
    ]


def test_restore_is_decided_by_the_actor_kind(ledger: Ledger, clock: Clock) -> None:
    """Below the reclose threshold only an operator's override restores; no name decides."""
    community = _community(ledger, clock)
    _assign(community)
    community.handle_reading(R(M1, 1, NOON - 60, Decimal(0)))
    community.handle_reading(R(M1, 2, NOON, Decimal(100)))
    assert community.meters[M1].desired_relay == "off"
    # A resident named like an operator, the system and the protective watch: all refused.
    for actor in (
        Actor("resident", user_id="u-x", name="operator"),
        Actor("resident", name="operator:admin"),
        Actor.SYSTEM,
        Actor.SAFETY,
    ):
        with pytest.raises(CommunityError, match="stays off"):
            community.request_relay(M1, "on", actor=actor, operator_override=True)
    with pytest.raises(CommunityError):  # an operator without the override: refused too
        community.request_relay(M1, "on", actor=OPS)
    events = community.request_relay(M1, "on", actor=Actor.AUTOMATION, operator_override=True)
    restored = next(e for e in events if e.kind == "supply_restored")
    assert (restored.data["reason"], restored.data["actor"], restored.data["actor_kind"]) == (
        "operator_override",
        "automation",
        "operator",
    )
    assert community.meters[M1].relay_actor == Actor.AUTOMATION


@pytest.mark.parametrize("auto_restore", [False, True])
def test_the_system_restores_only_with_automatic_restore(
    ledger: Ledger, clock: Clock, auto_restore: bool
) -> None:
    """The system's own request is an automatic one: the option decides, as after a top-up."""
    community = _community(ledger, clock, policy={"auto_restore": auto_restore})
    _assign(community)
    community.request_relay(M1, "off", actor=OPS)
    _top_up(community, "100", "t1")
    if not auto_restore:
        with pytest.raises(CommunityError):
            community.request_relay(M1, "on", actor=Actor.SYSTEM)
        return
    events = community.request_relay(M1, "on", actor=Actor.SYSTEM)
    assert community.meters[M1].relay_actor == Actor.SYSTEM
    assert [e.data["actor_kind"] for e in events if e.kind == "supply_restored"] == ["system"]


def test_the_actor_is_recorded_with_money_and_supply(ledger: Ledger, clock: Clock) -> None:
    """Journal entries and supply decisions keep who acted, in the actor's text form."""
    community = _community(ledger, clock)
    _assign(community)
    community.apply_top_up(community.top_up(A, Decimal(30), "t1", "cash", actor=OPS))
    community.apply_results(
        community.post_money(
            A,
            SubAccount.ELECTRICITY,
            EntryKind.ADJUSTMENT,
            Decimal(-5),
            "adj-1",
            actor=Actor.AUTOMATION,
            meta={"reason": "meter fault"},
        )
    )
    community.request_relay(M1, "off", actor=ALICE)
    _flush(community)
    community.handle_reading(R(M1, 1, NOON - 60, Decimal(0), events=("arc_fault",)))
    _flush(community)
    metas = {entry.key: dict(entry.meta) for entry in ledger.entries(A)}
    assert metas["topup:t1"]["actor"] == "operator|u-ops|Ops"
    assert metas["adjustment:adj-1"] == {
        "actor": "operator||automation",
        "transaction_id": "adj-1",
        "reason": "meter fault",
    }
    assert [(c.reason, c.actor) for c in ledger.supply_history(M1)] == [
        ("manual", "resident|u-alice|Alice")
    ]
    community.request_relay(M1, "on", actor=OPS)
    community.handle_reading(R(M1, 2, NOON, Decimal(0), events=("arc_fault",)))
    _flush(community)
    assert [(c.state, c.reason, c.actor) for c in ledger.supply_history(M1)] == [
        ("off", "manual", "resident|u-alice|Alice"),
        ("on", "restored", "operator|u-ops|Ops"),
        ("off", "arc_fault", "safety"),
    ]
    restarted = _community(ledger, clock)
    assert restarted.meters[M1].relay_actor == Actor.SAFETY


@pytest.mark.parametrize(
    ("stored", "actor"),
    [
        ("operator:Ops", Actor("operator", name="Ops")),
        ("user:0123456789abcdef0123456789abcdef", Actor("resident", "0123456789abcdef" * 2)),
        ("auto", Actor.SYSTEM),
        ("resident|u-alice|Alice", ALICE),
    ],
)
def test_a_decision_of_an_earlier_version_loads_typed(
    ledger: Ledger, clock: Clock, stored: str, actor: Actor
) -> None:
    """A supply decision stored with an earlier version's actor string loads as an Actor."""
    _assign(_community(ledger, clock))
    ledger.record_supply(SupplyChange(M1, "off", "manual", stored, NOON))
    meter = _community(ledger, clock).meters[M1]
    assert (meter.desired_relay, meter.relay_actor) == ("off", actor)


# ---------------------------------------------------------------------------- supply requests


def test_request_relay_refusals_and_manual_cut(ledger: Ledger, clock: Clock) -> None:
    """Unknown meters are refused; off always works and names the actor."""
    community = _community(ledger, clock)
    with pytest.raises(CommunityError) as info:
        community.request_relay("nope", "off", actor=OPS)
    assert (info.value.key, info.value.placeholders) == ("unknown_meter", {"meter_id": "nope"})
    _assign(community)
    _top_up(community, "50", "t1")
    events = community.request_relay(M1, "off", actor=OPS)
    cut = next(e for e in events if e.kind == "supply_cut")
    assert cut.data == {
        "state": "off",
        "reason": "manual",
        "actor": "Ops",
        "actor_kind": "operator",
        "actor_user_id": "u-ops",
        "balance": "50",
        "household": f"Household {A}",
    }
    assert community.totals()["supplies_cut"] == 1
    # A manual cut is not undone by a top-up, even with automatic restore.
    assert community.restore_candidates(A) == []
    assert community.restore_candidates("nobody") == []
    # An unassigned meter has no credit: only an operator's override switches it on.
    community.handle_announce(M2, model=None, firmware=None, rated_current_a=None)
    community.request_relay(M2, "off", actor=OPS)
    with pytest.raises(CommunityError):
        community.request_relay(M2, "on", actor=ALICE)
    events = community.request_relay(M2, "on", actor=OPS, operator_override=True)
    assert [e.data["reason"] for e in events if e.kind == "supply_restored"] == [
        "operator_override"
    ]


def test_can_restore(ledger: Ledger, clock: Clock) -> None:
    """The restore button is offered only for a cut, assigned meter whose balance allows it."""
    community = _community(ledger, clock)
    assert community.can_restore("nope") is False
    community.handle_announce(M2, model=None, firmware=None, rated_current_a=None)
    community.request_relay(M2, "off", actor=OPS)
    assert community.can_restore(M2) is False  # unassigned
    _assign(community)
    assert community.can_restore(M1) is False  # on already
    community.request_relay(M1, "off", actor=OPS)
    assert community.can_restore(M1) is False  # no credit
    _top_up(community, "10", "t1")
    assert community.can_restore(M1) is True
    community.meters[M1].account_id = "vanished"
    assert community.can_restore(M1) is False


# ---------------------------------------------------------------------------- alarms


def _feed(community: Community, clock: Clock, readings: list[R]) -> list[Event]:
    """Hand readings to the community at their own time (the clock follows them)."""
    events: list[Event] = []
    for reading in readings:
        clock.now = max(clock.now, float(reading.ts))
        events += community.handle_reading(reading)
    return events


def _types(events: list[Event], kind: str = "alarm") -> list[str]:
    return [e.data["type"] for e in events if e.kind == kind]


def test_alarms(ledger: Ledger, clock: Clock) -> None:
    """Overload, suspected theft and tamper each raise one alarm per episode.

    Overload is a current at or above the rated current (60 A) for 120 s (SafetyRules'
    overload_factor and overload_s): 70 A for 60 s is not one, for 120 s it is.
    """
    community = Community(ledger, load_preset("flat"), PolicyConfig(), clock=clock)
    community.load()
    _assign(community)
    _top_up(community, "1000", "tx")
    t = NOON - 7200
    hot: dict[str, Any] = {"current_a": 70.0, "neutral_current_a": 70.0}
    events = _feed(community, clock, [R(M1, 1, t, Decimal(1), **hot)])
    events += _feed(community, clock, [R(M1, 2, t + 60, Decimal(2), **hot)])
    assert "alarm" not in _kinds(events)  # 60 s over: not yet
    events = _feed(community, clock, [R(M1, 3, t + 120, Decimal(3), **hot)])
    assert _types(events) == ["overload"]
    [alarm] = [e for e in events if e.kind == "alarm"]
    assert (alarm.data["household"], alarm.data["rated_current_a"]) == (f"Household {A}", 60.0)
    events = _feed(community, clock, [R(M1, 4, t + 180, Decimal(4), **hot)])
    assert "alarm" not in _kinds(events)  # the same episode
    gap: dict[str, Any] = {"current_a": 5.0, "neutral_current_a": 1.0}
    events = _feed(community, clock, [R(M1, 5, t + 240, Decimal(5), **gap)])
    assert "alarm" not in _kinds(events)  # a gap, not yet for a minute
    events = _feed(community, clock, [R(M1, 6, t + 300, Decimal(6), **gap)])
    assert _types(events) == ["theft_suspected"]
    events = _feed(community, clock, [R(M1, 7, t + 360, Decimal(7), events=("cover_open",))])
    assert _types(events) == ["tamper"]
    assert community.alarms(M1) == ["overload", "tamper", "theft_suspected"]
    # Quiet readings for the clearing time (clear_s): the overload ends; theft and tamper are
    # interference and end only after a quiet day (theft_clear_s), each once.
    events = _feed(
        community,
        clock,
        [R(M1, 8 + n, t + 420 + n * 60, Decimal(8 + n)) for n in range(20)],
    )
    assert _types(events, "alarm_cleared") == ["overload"]
    assert community.alarms(M1) == ["tamper", "theft_suspected"]
    start = t + 420 + 20 * 60
    events = _feed(
        community,
        clock,
        [R(M1, 28 + n, start + n * 600, Decimal(28 + n)) for n in range(6 * 24 + 1)],
    )
    assert sorted(_types(events, "alarm_cleared")) == ["tamper", "theft_suspected"]
    assert community.alarms(M1) == []


def test_protective_cut_on_sustained_severe_overload(ledger: Ledger, clock: Clock) -> None:
    """1.5 x the rated current: an alarm after 120 s, a protective cut after 300 s (1.45 x
    rated for cut_s: IEC 60898-1's conventional tripping current), once."""
    community = _community(ledger, clock)
    _assign(community)
    _top_up(community, "1000", "tx")
    readings = [
        R(M1, n + 1, NOON - 600 + n * 60, Decimal(n + 1), current_a=90.0, neutral_current_a=90.0)
        for n in range(7)
    ]
    events = _feed(community, clock, readings[:5])  # 0 .. 240 s
    assert _types(events) == ["overload"]
    assert "supply_cut" not in _kinds(events)
    events = _feed(community, clock, readings[5:])  # 300 s, 360 s
    cuts = [e for e in events if e.kind == "supply_cut"]
    assert [(c.data["reason"], c.data["actor_kind"]) for c in cuts] == [("overload", "safety")]
    assert community.meters[M1].relay_actor == Actor.SAFETY


def test_an_overload_just_under_the_cut_level_alarms_without_a_cut(
    ledger: Ledger, clock: Clock
) -> None:
    """1.3 x rated for ten minutes: an overload alarm, no cut (1.45 x, or 1.13 x for an hour)."""
    community = _community(ledger, clock)
    _assign(community)
    _top_up(community, "1000", "tx")
    readings = [
        R(M1, n + 1, NOON - 700 + n * 60, Decimal(n + 1), current_a=78.0, neutral_current_a=78.0)
        for n in range(11)
    ]
    events = _feed(community, clock, readings)
    assert _types(events) == ["overload"]
    assert "supply_cut" not in _kinds(events)


def test_overcurrent_event_with_normal_current_alarms_once(ledger: Ledger, clock: Clock) -> None:
    """A meter repeating its overcurrent event while its current reads normal: one alarm,
    once the report has lasted the overload duration (120 s)."""
    community = _community(ledger, clock)
    _assign(community)
    events = _feed(
        community,
        clock,
        [R(M1, n, NOON - 200 + n * 10, Decimal(n), events=("overcurrent",)) for n in range(1, 12)],
    )
    assert "alarm" not in _kinds(events)  # 100 s
    events = _feed(
        community,
        clock,
        [R(M1, n, NOON - 200 + n * 10, Decimal(n), events=("overcurrent",)) for n in range(12, 17)],
    )
    assert _types(events) == ["overload"]


def test_arc_fault_cuts_for_safety_once(ledger: Ledger, clock: Clock) -> None:
    """An arc fault alarms and cuts; a second one while off is the same episode: nothing."""
    community = _community(ledger, clock)
    _assign(community)
    _top_up(community, "100", "t1")
    events = community.handle_reading(R(M1, 1, NOON - 120, Decimal(1), events=("arc_fault",)))
    assert [e.data["type"] for e in events if e.kind == "alarm"] == ["arc_fault"]
    cuts = [e for e in events if e.kind == "supply_cut"]
    assert [(c.data["reason"], c.data["actor_kind"]) for c in cuts] == [("arc_fault", "safety")]
    assert community.meters[M1].relay_actor == Actor.SAFETY
    events = community.handle_reading(R(M1, 2, NOON - 60, Decimal(2), events=("arc_fault",)))
    assert "supply_cut" not in _kinds(events)
    assert "alarm" not in _kinds(events)


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
    """The meter's own overcurrent event alarms once; a reading without currents neither
    opens nor ends anything."""
    community = _community(ledger, clock)
    _assign(community)
    _top_up(community, "100", "t1")
    no_current = {"current_a": None, "neutral_current_a": None}
    events = community.handle_reading(
        R(M1, 1, NOON - 400, Decimal(1), events=("overcurrent",), **no_current)
    )
    assert "alarm" not in _kinds(events)
    events = community.handle_reading(
        R(M1, 2, NOON - 250, Decimal(2), events=("overcurrent",), **no_current)
    )
    assert _types(events) == ["overload"]
    events = community.handle_reading(
        R(M1, 3, NOON - 60, Decimal(3), current_a=None, neutral_current_a=None, power_w=None)
    )
    assert "alarm" not in _kinds(events)
    assert "alarm_cleared" not in _kinds(events)
    assert community.alarms(M1) == ["overload"]


def test_the_safety_rules_come_from_the_community(ledger: Ledger, clock: Clock) -> None:
    """A community's own rules: with overload_s 60, a minute over is an overload."""
    community = _community(ledger, clock, safety_rules=SafetyRules(overload_s=60))
    _assign(community)
    hot: dict[str, Any] = {"current_a": 70.0, "neutral_current_a": 70.0}
    events = _feed(
        community, clock, [R(M1, n, NOON - 300 + n * 60, Decimal(n), **hot) for n in (1, 2)]
    )
    assert _types(events) == ["overload"]


# ---------------------------------------------------------------------------- care and offline

DAY_S = 86_400


def _home_power(t: int) -> float:
    """A lived day: a base of 80 W; lights and cooking mornings and evenings (UTC hours)."""
    hour = (t % DAY_S) // 3600
    power = 80.0
    if hour in (7, 8, 18, 19, 20, 21):
        power += 250.0
    if hour in (7, 19) and (t % 3600) < 900:
        power += 2_000.0
    return power


def _lived(start: int, days: float, stop: int | None = None, seq: int = 1) -> list[R]:
    """A household's readings every 5 minutes; after `stop` only the fridge (80 W)."""
    energy = 1000.0
    out = []
    for n in range(int(days * DAY_S / 300)):
        t = start + n * 300
        watts = _home_power(t) if stop is None or t < stop else 80.0
        energy += watts * 300 / 3.6e6
        amps = watts / 220
        out.append(R(M1, seq + n, t, Decimal(f"{energy:.4f}"), watts, 220.0, amps, amps, "on"))
    return out


def _care(
    community: Community, account: str = A, actor: Actor = OPS, **changes: Any
) -> list[Event]:
    setting = community.household_safety(account, actor=actor, **changes)
    community.record_safety_setting(setting)
    return community.apply_safety_setting(setting)


def _live_care(ledger: Ledger, clock: Clock, **flags: Any) -> tuple[Community, list[Event], int]:
    """A household lives four days as usual, then its person stops (their meter reads on)."""
    start = NOON - NOON % DAY_S - 10 * DAY_S
    clock.now = start
    community = _community(ledger, clock)
    _assign(community)
    _top_up(community, "1000", "tx")
    if flags:
        _care(community, **flags)
    stop = start + 4 * DAY_S + 21 * 3600 + 600  # after the evening's last activity
    events: list[Event] = []
    for reading in _lived(start, 6, stop):
        clock.now = reading.ts
        events += community.handle_reading(reading)
        events += community.safety_tick(reading.ts)
    return community, events, stop


def test_care_alarm_for_an_opted_in_household_then_its_end(ledger: Ledger, clock: Clock) -> None:
    """The person stops: one inactivity alarm within 12 h of their last activity, with the
    hours and the household; their next kettle ends it (`alarm_cleared`)."""
    community, events, stop = _live_care(ledger, clock, care=True)
    [alarm] = [e for e in events if e.kind == "inactivity"]
    assert alarm.data["household"] == f"Household {A}"
    assert alarm.data["started"] <= stop
    assert alarm.data["hours"] >= SafetyRules().care_hours
    assert alarm.data["started"] + alarm.data["hours"] * 3600 - stop <= 12 * 3600
    assert _types(events) == []  # nothing else
    assert community.alarms(M1) == ["inactivity"]
    last = community.meters[M1]
    assert last.ts is not None and last.energy_kwh is not None
    clock.now = last.ts + 300
    events = community.handle_reading(
        R(M1, (last.seq or 0) + 1, last.ts + 300, last.energy_kwh + Decimal("0.2"), 2400.0)
    )
    assert [(e.data["type"], e.data["household"]) for e in events if e.kind == "alarm_cleared"] == [
        ("inactivity", f"Household {A}")
    ]


@pytest.mark.parametrize("flags", [{}, {"care": True, "vacant": True}])
def test_no_care_alarm_without_the_opt_in_or_for_a_vacant_flat(
    ledger: Ledger, clock: Clock, flags: dict[str, Any]
) -> None:
    """Care is about a person: never without their opt-in, never for a flat marked vacant."""
    _, events, _stop = _live_care(ledger, clock, **flags)
    assert "inactivity" not in _kinds(events)
    assert "alarm" not in _kinds(events)


def test_marking_a_household_vacant_ends_its_open_care_alarm(ledger: Ledger, clock: Clock) -> None:
    community, events, _stop = _live_care(ledger, clock, care=True)
    assert "inactivity" in _kinds(events)
    events = _care(community, vacant=True)
    assert [(e.kind, e.data["type"]) for e in events] == [("alarm_cleared", "inactivity")]


def test_a_silent_meter_is_offline_once_until_it_reads_again(ledger: Ledger, clock: Clock) -> None:
    community = _community(ledger, clock)
    _assign(community)
    community.handle_reading(R(M1, 1, NOON - 60, Decimal(1)))
    assert community.safety_tick(NOON + 3000) == []
    events = community.safety_tick(NOON + 3600)
    assert [(e.kind, e.data["type"], e.data["last_seen"]) for e in events] == [
        ("alarm", "offline", NOON)
    ]
    assert community.safety_tick(NOON + 7200) == []  # one episode
    clock.now = NOON + 7200
    events = community.handle_reading(R(M1, 2, NOON + 7200, Decimal(1)))
    assert _types(events, "alarm_cleared") == ["offline"]


# ---------------------------------------------------------------------------- operators' settings


def test_household_safety_settings_are_journaled_and_come_back(
    ledger: Ledger, clock: Clock
) -> None:
    """Care, vacant and rule overrides: journaled with the actor, loaded at the next start;
    a bad rule is one clear error and writes nothing."""
    community = _community(ledger, clock)
    _assign(community)
    with pytest.raises(CommunityError) as err:
        community.household_safety(A, rules={"overload_s": -1}, actor=OPS)
    assert err.value.key == "invalid_safety_rule"
    with pytest.raises(CommunityError) as err:
        community.household_safety(B, care=True, actor=OPS)
    assert err.value.key == "unknown_household"
    assert ledger.safety_history() == []
    _care(community, care=True, rules={"overload_s": 30})
    _care(community, care=True, rules={"overload_s": 30})  # the same: nothing written
    _care(community, vacant=True)
    history = ledger.safety_history("household")
    assert [(h.key, dict(h.body), h.actor) for h in history] == [
        (A, {"care": True, "vacant": False, "rules": {"overload_s": 30}}, str(OPS)),
        (A, {"care": True, "vacant": True, "rules": {"overload_s": 30}}, str(OPS)),
    ]
    again = _community(ledger, clock)
    household = again.households[A]
    assert (household.care, household.vacant, household.safety_rules) == (
        True,
        True,
        {"overload_s": 30},
    )
    assert again.safety.rules_for(A).overload_s == 30
    assert again.safety.household(A).vacant is True


def test_only_an_operator_sets_safety_and_acknowledges(ledger: Ledger, clock: Clock) -> None:
    community = _community(ledger, clock, enforce_permissions=True)
    _assign(community)
    community.apply_link(A, "u-alice", linked=True)
    with pytest.raises(CommunityError) as err:
        community.household_safety(A, care=True, actor=ALICE)
    assert err.value.key == "not_authorized"
    community.handle_reading(R(M1, 1, NOON - 60, Decimal(1), events=("cover_open",)))
    with pytest.raises(CommunityError) as err:
        community.acknowledgement(M1, "tamper", actor=ALICE)
    assert err.value.key in ("not_authorized", "not_your_meter")
    with pytest.raises(CommunityError) as err:
        community.master_meter("b3", M2, [M1], actor=ALICE)
    assert err.value.key == "not_authorized"


def test_acknowledge_an_open_alarm(ledger: Ledger, clock: Clock) -> None:
    """An operator acknowledges an open episode: journaled with who and when; the episode
    stays open until it clears; nothing open is `no_open_alarm`."""
    community = _community(ledger, clock)
    _assign(community)
    with pytest.raises(CommunityError) as err:
        community.acknowledgement(M1, "tamper", actor=OPS)
    assert (err.value.key, err.value.placeholders) == (
        "no_open_alarm",
        {"meter_id": M1, "kind": "tamper"},
    )
    with pytest.raises(CommunityError) as err:
        community.acknowledgement(M1, "no_such_kind", actor=OPS)
    assert err.value.key == "no_open_alarm"
    community.handle_reading(R(M1, 1, NOON - 60, Decimal(1), events=("cover_open",)))
    ack = community.acknowledgement(M1, "tamper", actor=OPS)
    community.record_acknowledgement(ack)
    [event] = community.apply_acknowledgement(ack)
    assert event.kind == "alarm_acknowledged"
    assert event.data["type"] == "tamper"
    assert event.data["started"] == NOON - 60
    assert event.data["household"] == f"Household {A}"
    assert event.data["actor_kind"] == "operator"
    assert event.data["at"] == NOON
    assert [
        (a.meter_id, a.account_id, a.kind, a.started, a.actor) for a in ledger.safety_acks()
    ] == [(M1, A, "tamper", NOON - 60, str(OPS))]
    assert community.safety.alarms(M1)["tamper"].acknowledged_by == str(OPS)
    assert community.alarms(M1) == ["tamper"]


def test_the_watch_state_survives_a_restart(
    ledger: Ledger, clock: Clock, caplog: pytest.LogCaptureFixture
) -> None:
    """Open episodes come back with the kept state; an unusable state is logged and the
    watch starts afresh."""
    community = _community(ledger, clock)
    _assign(community)
    community.handle_reading(R(M1, 1, NOON - 60, Decimal(1), events=("cover_open",)))
    ledger.save_safety_state(community.safety_state(), NOON)
    again = _community(ledger, clock)
    assert again.alarms(M1) == ["tamper"]
    # The same sign again is the same episode: no second alarm.
    events = again.handle_reading(R(M1, 2, NOON, Decimal(1), events=("cover_open",)))
    assert "alarm" not in _kinds(events)
    ledger.save_safety_state('{"version": 99}', NOON)
    with caplog.at_level(logging.WARNING):
        fresh = _community(ledger, clock)
    assert fresh.alarms(M1) == []
    assert "starts afresh" in caplog.text


def test_a_master_meter_belongs_to_no_household(ledger: Ledger, clock: Clock) -> None:
    """A master meter of an area: no unassigned-meter repair, cannot be assigned, kept in
    the ledger; a bad area is `invalid_area` and changes nothing."""
    community = _community(ledger, clock)
    _assign(community)
    _assign(community, M2, B)
    m3 = "000000000003"
    _announce(community, m3)
    with pytest.raises(CommunityError) as err:
        community.master_meter("b3", M1, [M2], actor=OPS)
    assert err.value.key == "invalid_area"  # M1 belongs to a household
    with pytest.raises(CommunityError) as err:
        community.master_meter("b3", m3, [m3, M1], actor=OPS)
    assert err.value.key == "invalid_area"
    with pytest.raises(CommunityError) as err:
        community.master_meter("b3", m3, [], actor=OPS)
    assert err.value.key == "invalid_area"
    with pytest.raises(CommunityError) as err:
        community.master_meter("b3", m3, ["000000000009"], actor=OPS)
    assert err.value.key == "unknown_meter"
    assert ledger.safety_history() == []
    setting = community.master_meter("b3", m3, [M1, M2], actor=OPS)
    community.record_safety_setting(setting)
    community.apply_safety_setting(setting)
    assert community.is_master(m3)
    events = community.handle_reading(R(m3, 1, NOON - 60, Decimal(5)))
    assert "unassigned_meter" not in _kinds(events)
    with pytest.raises(CommunityError) as err:
        community.assign_meter(m3, "b3-u2-503", "Household 503", actor=OPS)
    assert err.value.key == "meter_is_master"
    m4 = "000000000004"
    _announce(community, m4)
    with pytest.raises(CommunityError) as err:
        community.master_meter("b4", m4, [M1], actor=OPS)
    assert err.value.key == "invalid_area"  # M1 is in area b3
    again = _community(ledger, clock)
    assert again.areas == {"b3": (m3, frozenset({M1, M2}))}
    assert again.safety.loss_rate("b3") is None  # nothing measured yet
    removal = again.master_meter("b3", None, actor=OPS)
    again.record_safety_setting(removal)
    again.apply_safety_setting(removal)
    assert again.areas == {}
    assert _community(ledger, clock).areas == {}


def test_the_loss_rate_of_an_area(ledger: Ledger, clock: Clock) -> None:
    """The master meter measures 10 % more than its households: the area's loss rate."""
    start = NOON - NOON % 3600 - 8 * 3600
    clock.now = start
    community = _community(ledger, clock)
    _assign(community)
    _assign(community, M2, B)
    m3 = "000000000003"
    _announce(community, m3)
    setting = community.master_meter("b3", m3, [M1, M2], actor=OPS)
    community.record_safety_setting(setting)
    community.apply_safety_setting(setting)
    for n in range(8 * 12):
        t = start + n * 300
        clock.now = t
        kwh = Decimal(n) / 10  # 1.2 kWh an hour each
        for meter_id, register in ((M1, kwh), (M2, kwh), (m3, kwh * 2 * Decimal("1.1"))):
            community.handle_reading(R(meter_id, n + 1, t, Decimal(100) + register))
        community.safety_tick(t)
    rate = community.safety.loss_rate("b3")
    assert rate is not None and rate == pytest.approx(0.1 / 1.1, abs=0.01)


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


# ---------------------------------------------------------------------------- money


def test_top_up_is_idempotent(ledger: Ledger, clock: Clock) -> None:
    """The same transaction id twice credits once."""
    community = _community(ledger, clock)
    _assign(community)
    _top_up(community, "30", "wx-123")
    _top_up(community, "30", "wx-123")
    assert community.households["b3-u2-501"].electricity == Decimal(30)
    assert community.top_ups_today == Decimal(30)
    with pytest.raises(CommunityError) as info:
        community.top_up("b3-u2-501", Decimal("31"), "wx-123", "wechat", actor=OPS)
    assert info.value.key == "duplicate_transaction_conflict"
    for bad in ("0", "-5", "0.001", "1000000"):
        with pytest.raises(CommunityError) as info:
            community.top_up("b3-u2-501", Decimal(bad), "wx-9", "wechat", actor=OPS)
        assert info.value.key == "invalid_amount"
    with pytest.raises(CommunityError) as info:
        community.top_up("nobody", Decimal(1), "wx-10", "wechat", actor=OPS)
    assert info.value.key == "unknown_household"
    assert ledger.check_invariant() == []


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
            community.post_money(A, sub, kind, Decimal(amount), txn, actor=OPS)
        assert info.value.key == key, (kind, amount)
    with pytest.raises(CommunityError) as info:
        community.post_money(
            "nobody", SubAccount.PROPERTY_FEE, EntryKind.FEE, Decimal(5), "f2", actor=OPS
        )
    assert info.value.key == "unknown_household"
    with pytest.raises(CommunityError) as info:
        community.top_up(A, Decimal(5), " ", "cash", actor=OPS)
    assert info.value.key == "invalid_transaction"
    assert ledger.entries(A) == []
    result = community.post_money(
        A, SubAccount.PROPERTY_FEE, EntryKind.FEE, Decimal(5), "f3", actor=OPS, meta=None
    )
    assert result.results[0].balance_after == Decimal(-5)
    with pytest.raises(CommunityError) as info:
        community.post_money(A, SubAccount.PROPERTY_FEE, EntryKind.FEE, Decimal(6), "f3", actor=OPS)
    assert info.value.key == "duplicate_transaction_conflict"
    with (
        patch.object(ledger, "post", side_effect=LedgerError("The disk is full.")),
        pytest.raises(CommunityError) as info,
    ):
        community.post_money(A, SubAccount.PROPERTY_FEE, EntryKind.FEE, Decimal(5), "f4", actor=OPS)
    assert (info.value.key, info.value.placeholders) == (
        "ledger_error",
        {"error": "The disk is full."},
    )
    assert ledger.check_invariant() == []


def test_top_up_for_a_household_not_in_memory(ledger: Ledger, clock: Clock) -> None:
    """A top-up written for a household the live state does not hold changes no live state."""
    community = _community(ledger, clock)
    ledger.ensure_household(B, "elsewhere", NOON)
    result = community.top_up(B, Decimal(10), "t-b", "cash", actor=OPS)
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


def test_readings_between_commits_make_one_charge_entry(ledger: Ledger, clock: Clock) -> None:
    """Six readings in one commit window: one entry, keyed by the last reading's ts and register."""
    community = _community(ledger, clock)
    _assign(community)
    for seq in range(1, 8):
        community.handle_reading(R("000000000001", seq, NOON - 70 + seq * 10, Decimal(100 + seq)))
    _flush(community)
    charges = [
        e for e in ledger.entries("b3-u2-501", SubAccount.ELECTRICITY) if e.kind == EntryKind.CHARGE
    ]
    assert [(e.key, e.amount) for e in charges] == [
        (f"charge:000000000001:{NOON}:107", Decimal("-2.9298"))
    ]
    assert charges[0].meta["last_seq"] == 7
    assert charges[0].meta["first_seq"] == 2
    cursor = ledger.cursor("000000000001")
    assert cursor is not None
    assert cursor.seq == 7


def test_a_meter_that_restarts_its_counter_reuses_no_charge_key(
    ledger: Ledger, clock: Clock
) -> None:
    """After a reboot the meter counts seq from 1 again: its charges are new entries.

    Keyed by seq, they would repeat committed keys with other amounts and the ledger would
    refuse every later batch of the community (or, with equal amounts, drop them).
    """
    community = _community(ledger, clock)
    _assign(community)
    for seq in (1, 2, 3):
        community.handle_reading(R(M1, seq, NOON - 600 + seq * 60, Decimal(100 + seq)))
    _flush(community)
    for seq in (1, 2, 3):  # rebooted: seq from 1, clock and register moving on
        community.handle_reading(R(M1, seq, NOON - 300 + seq * 60, Decimal(103 + seq)))
    _flush(community)
    assert len(_charges(ledger, A)) == 2
    assert ledger.balance(A, SubAccount.ELECTRICITY) == -5 * Decimal("0.4883")
    assert community.meters[M1].rejected == {"seq_restart": 1}
    assert ledger.check_invariant() == []


def test_failed_commit_keeps_the_batch(ledger: Ledger, clock: Clock) -> None:
    """A commit that fails is put back and written with the next batch, nothing lost."""
    community = _community(ledger, clock)
    _assign(community)
    community.handle_reading(R("000000000001", 1, NOON - 60, Decimal(100)))
    community.handle_reading(R("000000000001", 2, NOON - 50, Decimal(101)))
    batch = community.take_batch()
    community.restore_batch(batch)  # as the coordinator does when commit raises
    community.handle_reading(R("000000000001", 3, NOON - 40, Decimal(102)))
    _flush(community)
    assert ledger.balance("b3-u2-501", SubAccount.ELECTRICITY) == Decimal("-0.9766")
    assert community.households["b3-u2-501"].electricity == Decimal("-0.9766")
    assert ledger.check_invariant() == []


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
    assert _charges(ledger, A) == [(f"charge:{M1}:{NOON - 240}:110", Decimal("-4.883"))]
    assert _charges(ledger, B) == [(f"charge:{M1}:{NOON - 120}:120", Decimal("-4.883"))]
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
    assert _charges(ledger, A) == [(f"charge:{M1}:{NOON - 280}:102", Decimal("-0.9766"))]
    entry = ledger.entry_by_key(f"charge:{M1}:{NOON - 280}:102")
    assert entry is not None and entry.meta["first_seq"] == 2

    community.handle_reading(R(M1, 4, NOON - 270, Decimal(103)))
    failed = community.take_batch()
    ledger.assign_meter(M1, None)
    _assign(community, account=B)
    community.handle_reading(R(M1, 5, NOON - 260, Decimal(104)))
    community.restore_batch(failed)  # another household: kept apart
    _flush(community)
    assert _charges(ledger, A)[0] == (f"charge:{M1}:{NOON - 270}:103", Decimal("-0.4883"))
    assert _charges(ledger, B) == [(f"charge:{M1}:{NOON - 260}:104", Decimal("-0.4883"))]
    assert community.households[A].electricity == ledger.balance(A, SubAccount.ELECTRICITY)
    assert community.households[B].electricity == ledger.balance(B, SubAccount.ELECTRICITY)
    assert ledger.check_invariant() == []


def test_stale_ledger_results_do_not_roll_balances_back(ledger: Ledger, clock: Clock) -> None:
    """A result older than what the live state has seen is not applied again."""
    community = _community(ledger, clock)
    _assign(community)
    old = community.top_up(A, Decimal(10), "t1", "cash", actor=OPS)
    newer = community.top_up(A, Decimal(5), "t2", "cash", actor=OPS)
    community.apply_top_up(newer)
    community.apply_top_up(old)
    assert community.households[A].electricity == Decimal(15)


# ---------------------------------------------------------------------------- cycles


def test_cycle_close_settles_to_statement(ledger: Ledger, clock: Clock) -> None:
    """The money taken for March equals March's statement to the cent."""
    clock.now = NOON + 40 * 86400
    community = _community(ledger, clock)
    _assign(community)
    _top_up(community, "500", "tx-1")
    start = int(datetime(2026, 2, 28, 16, 0, tzinfo=UTC).timestamp())  # 1 March 00:00 local
    energy = Decimal(0)
    for hour in range(31 * 24 + 5):  # hourly readings through March into April
        seq = hour + 1
        energy += Decimal("0.4031")
        community.handle_reading(R("000000000001", seq, start + hour * 3600, energy))
        if hour % 50 == 0:
            _flush(community)
    _flush(community)
    stored = ledger.statement("b3-u2-501", "2026-03")
    assert stored is not None
    total, _body = stored
    march = [
        e
        for e in ledger.entries("b3-u2-501", SubAccount.ELECTRICITY, limit=10_000)
        if e.kind in (EntryKind.CHARGE, EntryKind.SETTLEMENT)
    ]
    assert march
    statement = community.statement("b3-u2-501", "2026-03")
    assert statement["closed"] is True
    assert Decimal(statement["total"]) == total
    # Charges for March plus the settlement == the statement total.
    usage = ledger.usage("b3-u2-501", "2026-03")
    charged = sum((u.amount for u in usage), Decimal(0))
    settle = ledger.entry_by_key("settle:b3-u2-501:2026-03")
    assert settle is not None
    assert charged - settle.amount == total
    assert ledger.check_invariant() == []


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
    """Two hours of use tell no days left (a day is needed); the payload shows the household."""
    community = _community(ledger, clock)
    _assign(community)
    _top_up(community, "100", "t1")
    community.handle_reading(R(M1, 1, NOON - 7200, Decimal(100)))
    community.handle_reading(R(M1, 2, NOON - 7000, Decimal(101)))
    meter = community.meters[M1]
    assert community.days_left(meter) is None
    community.handle_reading(R(M1, 3, NOON, Decimal(110)))
    # 10 kWh (4.883) in 2 hours would have been 58.596 a day: under a day, unknown
    assert community.days_left(meter) is None
    raw = community.account_payload(meter)
    assert raw is not None
    payload = json.loads(raw)
    assert payload["balance"] == "95.12"
    assert payload["low"] is False
    assert payload["cycle"] == "2026-03"
    assert payload["cycle_kwh"] == "10.000"
    assert payload["price"] == "0.4883"
    assert payload["updated"] == NOON


# ------------------------------------------------------- defects found from outside (issue 8)


def test_energy_of_a_reading_in_the_same_second_is_billed(ledger: Ledger, clock: Clock) -> None:
    """A reading with the next seq but the same ts second still bills its energy.

    Three readings of +10 kWh, the second in the same second as the first: 20 kWh billed
    (it was 10: the second reading moved the position past its energy without a charge).
    """
    community = _community(ledger, clock)
    _assign(community)
    _top_up(community, "50", "tx-1")
    community.handle_reading(R("000000000001", 1, NOON - 600, Decimal("100.000")))
    community.handle_reading(R("000000000001", 2, NOON - 600, Decimal("110.000")))
    community.handle_reading(R("000000000001", 3, NOON - 300, Decimal("120.000")))
    meter = community.meters["000000000001"]
    assert meter.rejected == {}
    assert meter.billing.cycle_kwh == Decimal(20)
    assert community.households["b3-u2-501"].electricity == Decimal(50) - 2 * Decimal("4.883")
    _flush(community)
    assert ledger.balance("b3-u2-501", SubAccount.ELECTRICITY) == Decimal("40.234")


def test_an_unassigned_meter_reporting_off_is_left_off(ledger: Ledger, clock: Clock) -> None:
    """Nobody pays for an unassigned meter: no command switches it on (flat empty or in works)."""
    community = _community(ledger, clock)
    events = community.handle_announce(
        "000000000001", model=None, firmware=None, rated_current_a=None
    )
    events += community.handle_reading(R("000000000001", 1, NOON - 60, Decimal(5), relay="off"))
    assert "reconcile" not in _kinds(events)
    assert "relay" not in _kinds(events)


def test_a_safety_cut_of_an_unassigned_meter_is_kept(ledger: Ledger, clock: Clock) -> None:
    """An arc fault cuts an unassigned meter too; reported on again, it is told off again."""
    community = _community(ledger, clock)
    community.handle_announce(M1, model=None, firmware=None, rated_current_a=None)
    events = community.handle_reading(R(M1, 1, NOON - 120, Decimal(5), events=("arc_fault",)))
    assert [e.data["actor_kind"] for e in events if e.kind == "supply_cut"] == ["safety"]
    events = community.handle_reading(R(M1, 2, NOON - 60, Decimal(5), relay="on"))
    assert [e.data for e in events if e.kind == "reconcile"] == [
        {"state": "off", "reason": "arc_fault"}
    ]


def test_telemetry_of_a_meter_never_announced_creates_no_meter(
    ledger: Ledger, clock: Clock
) -> None:
    """Readings and availability of unknown ids are counted, not taken as meters."""
    community = _community(ledger, clock)
    events: list[Event] = []
    for n in range(5):
        events += community.handle_reading(R(f"fake{n}", 1, NOON - 60, Decimal(1)))
    events += community.handle_availability("fake9", True)
    assert community.meters == {}
    assert community.unknown_meters == {f"fake{n}": 1 for n in range(5)} | {"fake9": 1}
    assert _kinds(events) == ["unknown_meter"] * 6
    # Announced, it becomes a meter; its next reading is taken.
    community.handle_announce("fake0", model=None, firmware=None, rated_current_a=None)
    community.handle_reading(R("fake0", 2, NOON - 30, Decimal(2)))
    assert community.meters["fake0"].seq == 2
    assert "fake0" not in community.unknown_meters


def test_discovery_stops_at_the_community_limit(ledger: Ledger, clock: Clock) -> None:
    """Announces beyond the meter limit are refused and counted (a flood cannot fill it)."""
    community = _community(ledger, clock)
    community.meter_limit = 3
    for n in range(5):
        community.handle_announce(f"m{n}", model=None, firmware=None, rated_current_a=None)
    assert sorted(community.meters) == ["m0", "m1", "m2"]
    assert community.unknown_meters == {"m3": 1, "m4": 1}


def test_a_family_without_announce_is_introduced_by_its_birth_message(
    ledger: Ledger, clock: Clock
) -> None:
    """Tasmota and Shelly have no announce: their first "online" introduces the device."""
    community = _community(ledger, clock, birth_announces=True)
    assert _kinds(community.handle_availability("plug-1", False)) == ["unknown_meter"]
    events = community.handle_availability("plug-1", True)
    assert _kinds(events)[:2] == ["announce", "unassigned_meter"]
    assert community.meters["plug-1"].online is True


# ------------------------------------------------------------- the supply as a ledger fact


def test_the_wanted_supply_comes_back_from_the_ledger(ledger: Ledger, clock: Clock) -> None:
    """A cut is written with the charges that caused it; a restart wants the meter off."""
    community = _community(ledger, clock, policy={"emergency_credit": "0"})
    _assign(community)
    community.handle_reading(R("000000000001", 1, NOON - 120, Decimal(0)))
    community.handle_reading(R("000000000001", 2, NOON - 60, Decimal(10)))
    assert community.meters["000000000001"].desired_relay == "off"
    # Not committed yet: a crash now loses the cut with the charges that caused it, and the
    # next reading (billed again from the cursor) decides it again.
    assert ledger.supply_states() == {}
    _flush(community)
    change = ledger.supply_states()["000000000001"]
    assert (change.state, change.reason, change.actor) == ("off", "credit_exhausted", "system")
    assert ledger.balance("b3-u2-501", SubAccount.ELECTRICITY) < 0

    restarted = _community(ledger, clock, policy={"emergency_credit": "0"})
    meter = restarted.meters["000000000001"]
    assert (meter.desired_relay, meter.relay_reason, meter.relay_actor) == (
        "off",
        "credit_exhausted",
        Actor.SYSTEM,
    )


def test_a_failed_commit_keeps_the_supply_decision_for_the_next(
    ledger: Ledger, clock: Clock
) -> None:
    """A batch put back after a failed commit still carries its decision, oldest first."""
    community = _community(ledger, clock)
    _assign(community)
    community.request_relay("000000000001", "off", actor=OPS)
    batch = community.take_batch()
    community.restore_batch(batch)  # as after a failed commit
    community.request_relay("000000000001", "on", actor=OPS, operator_override=True)
    _flush(community)
    history = ledger.supply_history("000000000001")
    assert [(c.state, Actor.parse(c.actor)) for c in history] == [("off", OPS), ("on", OPS)]
    assert ledger.supply_states()["000000000001"].state == "on"


# ------------------------------------------------- a household's own requests (issue 12)


def _answer(community: Community, meter: str = M1) -> dict[str, Any]:
    raw = community.account_payload(community.meters[meter])
    assert raw is not None
    answer: dict[str, Any] = json.loads(raw)["request"]
    return answer


def test_a_household_request_restores_after_a_credit_cut_once_paid(
    ledger: Ledger, clock: Clock
) -> None:
    """Refused while in debt, granted once paid; the same id is answered again, not acted on."""
    community = _community(ledger, clock)
    _assign(community)
    community.handle_reading(R(M1, 1, NOON - 60, Decimal(0)))
    community.handle_reading(R(M1, 2, NOON, Decimal(100)))
    assert community.meters[M1].desired_relay == "off"
    events = community.household_request(M1, "r-1", NOON)
    assert _kinds(events) == ["account"]
    assert _answer(community) == {
        "id": "r-1",
        "ok": False,
        "reason": "credit_exhausted_restore_refused",
    }
    _top_up(community, "100", "tx-2")
    events = community.household_request(M1, "r-2", NOON + 1)
    assert "supply_restored" in _kinds(events)
    restored = next(e for e in events if e.kind == "supply_restored")
    assert restored.data["actor_kind"] == "resident"
    assert _answer(community) == {"id": "r-2", "ok": True}
    community.request_relay(M1, "off", actor=OPS)  # the operator cuts after that
    assert _kinds(community.household_request(M1, "r-2", NOON + 2)) == ["account"]  # a repeat
    assert community.meters[M1].desired_relay == "off"
    assert _answer(community) == {"id": "r-2", "ok": True}  # its first answer


def test_a_household_request_never_lifts_an_operator_or_safety_cut(
    ledger: Ledger, clock: Clock
) -> None:
    community = _community(ledger, clock)
    _assign(community)
    _top_up(community, "100", "tx-1")
    community.request_relay(M1, "off", actor=OPS)
    community.household_request(M1, "r-1", NOON)
    assert community.meters[M1].desired_relay == "off"
    assert _answer(community)["reason"] == "restore_needs_operator"


def test_household_requests_are_rate_limited_and_unassigned_meters_ignored(
    ledger: Ledger, clock: Clock
) -> None:
    community = _community(ledger, clock)
    _assign(community)
    _top_up(community, "100", "tx-1")
    for n in range(3):
        community.household_request(M1, f"r-{n}", NOON + n)
        assert _answer(community) == {"id": f"r-{n}", "ok": True}  # on already: granted
    community.household_request(M1, "r-3", NOON + 5)
    assert _answer(community) == {"id": "r-3", "ok": False, "reason": "rate_limited"}
    community.household_request(M1, "r-4", NOON + 61)  # a minute after the first
    assert _answer(community) == {"id": "r-4", "ok": True}
    _announce(community, "000000000002")
    assert community.household_request("000000000002", "r-1", NOON) == []


def test_unassign_keeps_the_money_and_the_supply_and_frees_the_meter(
    ledger: Ledger, clock: Clock
) -> None:
    community = _community(ledger, clock, enforce_permissions=True)
    _assign(community)
    _top_up(community, "100", "tx-1")
    with pytest.raises(CommunityError, match="operator"):
        community.unassign_meter(M1, actor=Actor("resident", user_id="u-x"))
    assert community.unassign_meter(M1, actor=OPS) == A
    events = community.apply_unassignment(M1)
    assert [(e.kind, e.account_id) for e in events] == [("unassigned_meter", A)]
    meter = community.meters[M1]
    assert meter.account_id is None and meter.desired_relay == "on"
    assert community.account_payload(meter) is None
    assert ledger.meters()[M1] is None
    assert ledger.balances(A)[SubAccount.ELECTRICITY] == Decimal(100)
    with pytest.raises(CommunityError) as info:
        community.unassign_meter(M1, actor=OPS)
    assert info.value.key == "meter_not_assigned"
    _assign(community, M1, "B")  # a new household moves in
    assert community.meters[M1].account_id == "B"


def test_credit_carried_at_move_out_restores_the_next_household(
    ledger: Ledger, clock: Clock
) -> None:
    """Carried credit is money in, like a top-up: the receiving household's meter, cut for
    exhausted credit, is restored when the policy restores after top-ups (auto_restore)."""
    community = _community(ledger, clock, policy={"auto_restore": True})
    _assign(community)  # A moves out with 50.00 of credit
    _top_up(community, "50", "tx-a")
    _assign(community, M2, B)  # B's supply is cut: 100 kWh on no credit
    community.handle_reading(R(M2, 1, NOON - 60, Decimal(0)))
    community.handle_reading(R(M2, 2, NOON, Decimal(100)))
    _flush(community)
    assert community.meters[M2].desired_relay == "off"
    owed = -community.households[B].electricity
    community.unassign_meter(M1, actor=OPS)
    community.apply_unassignment(M1)
    settled = community.settle_move_out(A, "carry", actor=OPS, next_account=B)
    events = community.apply_top_up(settled.result)
    assert "supply_restored" in _kinds(events)
    assert community.meters[M2].desired_relay == "on"
    assert community.households[B].electricity == Decimal("50") - owed
    assert community.households[A].electricity == 0
